//! The standard test policy shared by the integration and end-to-end tests: four virtual
//! keys, tier aliases, a fallback route and a passthrough route to the fake upstream.

use sha2::{Digest, Sha256};

/// The provider key the fake upstream expects (the proxy reads it from `TEST_PROVIDER_KEY`).
pub const PROVIDER_KEY: &str = "sk-ant-upstream-SECRET-0123456789";
/// Environment variable the policy names for the provider credential.
pub const PROVIDER_KEY_ENV: &str = "TEST_PROVIDER_KEY";
/// Key `alice` (team platform, every model).
pub const KEY_ALICE: &str = "tg_alice_SECRET_virtual_key_0001";
/// Key `haiku-only` (team interns, which denies opus; allows gw-haiku and claude-haiku-*).
pub const KEY_HAIKU: &str = "tg_haiku_SECRET_virtual_key_0002";
/// Key `off` (disabled).
pub const KEY_OFF: &str = "tg_off_SECRET_virtual_key_0003";
/// Key `old` (expired).
pub const KEY_OLD: &str = "tg_old_SECRET_virtual_key_0004";

/// Lower-case hex SHA-256 of a key, as the policy stores it.
pub fn sha256_hex(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The standard policy routing to `upstream`; `with_alice: false` revokes alice's key.
pub fn standard_policy(upstream: &str, with_alice: bool) -> String {
    let h = sha256_hex;
    let alice = if with_alice {
        format!(
            "  - {{id: alice, sha256: {}, user: alice@acme.example, team: platform}}\n",
            h(KEY_ALICE)
        )
    } else {
        String::new()
    };
    format!(
        r#"version: 1
organization: {{name: acme}}
teams: [{{id: platform}}, {{id: interns, models: {{deny: ["*opus*"]}}}}]
keys:
{alice}  - {{id: haiku-only, sha256: {haiku}, team: interns, models: {{allow: [gw-haiku, "claude-haiku-*"]}}}}
  - {{id: off, sha256: {off}, enabled: false}}
  - {{id: old, sha256: {old}, expires_at: "2020-01-01T00:00:00Z"}}
providers:
  - {{id: fake, kind: anthropic, endpoint: "{upstream}", credential: {{env: {PROVIDER_KEY_ENV}}}, timeouts: {{stream_idle_ms: 5000}}}}
  - {{id: dead, kind: anthropic, endpoint: "http://127.0.0.1:9", credential: {{env: {PROVIDER_KEY_ENV}}}}}
routes:
  - {{match: gw-opus, targets: [{{provider: fake, model: claude-opus-4-8}}]}}
  - {{match: gw-haiku, targets: [{{provider: fake, model: claude-haiku-4-5}}]}}
  - {{match: gw-fallback, targets: [{{provider: dead, model: claude-sonnet-4-5}}, {{provider: fake, model: claude-sonnet-4-5}}]}}
  - {{match: "claude-*", targets: [{{provider: fake}}]}}
"#,
        haiku = h(KEY_HAIKU),
        off = h(KEY_OFF),
        old = h(KEY_OLD),
    )
}

/// Replaces a file by rename, as editors and Kubernetes do.
pub fn write_atomically(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}
