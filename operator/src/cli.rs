//! The command-line flags that shape the compiled policy, shared by the operator and
//! `tollgate-operator compile`, so an offline compile judges resources as the operator would.

use clap::{Args, ValueEnum};

use crate::compile::{Settings, ShardLimits, SidecarMode, TeamlessKeys};

/// Flags that shape the policy document.
#[derive(Debug, Clone, Args)]
pub struct SettingsArgs {
    /// Name of the main policy ConfigMap; key shards are NAME-keys-NN.
    #[arg(long, default_value = "tollgate-policy")]
    pub policy_name: String,
    /// The organization name (enables organization-scoped budgets).
    #[arg(long, env = "TOLLGATE_ORGANIZATION")]
    pub organization: Option<String>,
    /// Where the proxy container mounts the credentials Secret (files DIR/SECRET_KEY).
    #[arg(long, default_value = "/var/run/tollgate/credentials")]
    pub credentials_dir: String,
    /// At most this many key shard ConfigMaps (the proxy's projected volume lists as many).
    #[arg(long, default_value_t = 16)]
    pub max_key_shards: usize,
    /// What sidecars in agent namespaces get: `gateway` (default), a policy that sends every
    /// request to the gateway with the client's own key and no credential of any kind; or
    /// `direct`, the full policy and a copy of the credentials it references (only for
    /// namespaces whose pod creators you would trust with the provider keys).
    #[arg(long, value_enum, default_value = "gateway")]
    pub sidecar_mode: SidecarModeArg,
    /// The gateway's base URL as sidecars reach it, e.g.
    /// `http://tollgate-gateway.tollgate-system.svc:8080` (required in gateway mode).
    #[arg(long, env = "TOLLGATE_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// Where VirtualKeys without a team are compiled: `deny` (default: a key without a team
    /// escapes every team limit, so every key must name a team that admits its namespace),
    /// `allow` (every namespace), or a namespace label selector in kubectl syntax, e.g.
    /// `tollgate.dev/sandbox=true`.
    #[arg(long, env = "TOLLGATE_TEAMLESS_KEYS", default_value = "deny", value_parser = parse_teamless)]
    pub teamless_keys: TeamlessKeys,
}

fn parse_teamless(s: &str) -> Result<TeamlessKeys, String> {
    s.parse()
}

/// `--sidecar-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarModeArg {
    /// Sidecars forward to the gateway and hold no credential.
    Gateway,
    /// Sidecars hold the full policy and the credentials.
    Direct,
}

impl SettingsArgs {
    /// The compile settings. Gateway mode needs `--gateway-url`, unless `placeholder_url` is
    /// given to stand in for it (an offline compile only checks that the sidecar policy is
    /// valid; the URL appears nowhere else).
    pub fn settings(&self, placeholder_url: Option<&str>) -> anyhow::Result<Settings> {
        Ok(Settings {
            organization: self.organization.clone(),
            audit_capture: None,
            credentials_dir: self.credentials_dir.clone(),
            policy_name: self.policy_name.clone(),
            limits: ShardLimits {
                max_shards: self.max_key_shards,
                ..ShardLimits::default()
            },
            sidecar: self.sidecar_mode(placeholder_url)?,
            teamless_keys: self.teamless_keys.clone(),
        })
    }

    fn sidecar_mode(&self, placeholder_url: Option<&str>) -> anyhow::Result<SidecarMode> {
        let url = self.gateway_url.as_deref().or(placeholder_url);
        match (self.sidecar_mode, url) {
            (SidecarModeArg::Direct, _) => Ok(SidecarMode::Direct),
            (SidecarModeArg::Gateway, Some(url))
                if url.starts_with("http://") || url.starts_with("https://") =>
            {
                Ok(SidecarMode::Gateway { url: url.to_owned() })
            }
            (SidecarModeArg::Gateway, Some(url)) => {
                anyhow::bail!("--gateway-url {url:?} is not an http(s) URL")
            }
            (SidecarModeArg::Gateway, None) => anyhow::bail!(
                "--sidecar-mode gateway needs --gateway-url (the gateway Service's URL), or choose --sidecar-mode direct"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: SettingsArgs,
    }

    fn parse(args: &[&str]) -> Result<SettingsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.settings)
    }

    #[test]
    fn teamless_keys_default_to_deny_and_take_a_selector() {
        let s = parse(&["--sidecar-mode", "direct"]).unwrap();
        assert_eq!(s.settings(None).unwrap().teamless_keys, TeamlessKeys::Deny);
        let s = parse(&["--teamless-keys", "env in (dev,sandbox)"]).unwrap();
        assert!(matches!(s.teamless_keys, TeamlessKeys::Selector(_)));
        assert!(parse(&["--teamless-keys", "env in"]).is_err());
    }

    #[test]
    fn gateway_mode_needs_a_url_unless_a_placeholder_stands_in() {
        let s = parse(&[]).unwrap();
        assert!(s.settings(None).is_err());
        let placeholder = "http://tollgate-gateway.invalid:8080";
        assert_eq!(
            s.settings(Some(placeholder)).unwrap().sidecar,
            SidecarMode::Gateway {
                url: placeholder.into()
            }
        );
        let s = parse(&["--gateway-url", "ftp://x"]).unwrap();
        assert!(s.settings(Some(placeholder)).is_err());
    }
}
