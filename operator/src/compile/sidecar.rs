//! The policy the sidecars in agent namespaces get in gateway mode: enough for their fast local
//! checks (an unknown, disabled or expired key, a model outside the allowlist, a built-in tool
//! the key may not use), and nothing that needs a secret or shared state. Every model and MCP
//! request goes to the gateway with the client's own virtual key, where the key is checked
//! again and budgets, rate limits, provider and MCP credentials and the audit trail live. A
//! sidecar's checks are defence in depth only: a stale or tampered sidecar policy can refuse
//! more than the gateway, never let through what the gateway refuses.

use tollgate_dataplane::policy::document::{self as doc, PolicyDocument};

/// The provider id the gateway has in a sidecar's policy.
pub const GATEWAY_PROVIDER: &str = "tollgate-gateway";

/// The sidecar's document (without keys) derived from the gateway's full document.
pub fn document(full: &PolicyDocument, gateway_url: &str) -> PolicyDocument {
    PolicyDocument {
        version: full.version,
        organization: None,
        teams: full.teams.iter().map(team).collect(),
        keys: Vec::new(),
        budgets: Vec::new(),
        providers: vec![gateway_provider(full, gateway_url)],
        // The gateway's own route patterns, so unknown models and `/v1/models` answer as the
        // gateway would; the requested name is kept (the gateway rewrites it).
        routes: full
            .routes
            .iter()
            .map(|r| doc::Route {
                match_: r.match_.clone(),
                targets: vec![doc::RouteTarget {
                    provider: GATEWAY_PROVIDER.to_owned(),
                    model: None,
                    ..Default::default()
                }],
            })
            .collect(),
        prices: full.prices.clone(),
        mcp_servers: Vec::new(),
        mcp_gateway: Some(GATEWAY_PROVIDER.to_owned()),
        audit: None,
        limits: None,
    }
}

/// A key as a sidecar sees it: identity, state and allowlists; no rate limits or MCP grants
/// (the gateway enforces those) and no capture setting (the gateway audits).
pub fn key(k: &doc::VirtualKey) -> doc::VirtualKey {
    doc::VirtualKey {
        rate_limits: None,
        mcp: Vec::new(),
        capture: None,
        ..k.clone()
    }
}

fn team(t: &doc::Team) -> doc::Team {
    doc::Team {
        rate_limits: None,
        mcp: Vec::new(),
        ..t.clone()
    }
}

/// The gateway as the sidecar's only provider: no credential (the client's virtual key is
/// forwarded), and timeouts no shorter than the longest the gateway itself allows upstream, so
/// the sidecar never gives up before the gateway does.
fn gateway_provider(full: &PolicyDocument, gateway_url: &str) -> doc::Provider {
    let mut timeouts = doc::Timeouts::default();
    for p in &full.providers {
        timeouts.response_headers_ms = timeouts.response_headers_ms.max(p.timeouts.response_headers_ms);
        timeouts.stream_idle_ms = timeouts.stream_idle_ms.max(p.timeouts.stream_idle_ms);
    }
    doc::Provider {
        id: GATEWAY_PROVIDER.to_owned(),
        kind: doc::ProviderKind::Tollgate,
        endpoint: gateway_url.trim_end_matches('/').to_owned(),
        region: None,
        project: None,
        credential: None,
        timeouts,
        ..Default::default()
    }
}
