//! `tollgate-operator`: watches Tollgate's custom resources and writes the policy
//! ConfigMaps tollgate-proxy loads. One replica leads (a Lease); the others stand by.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_lease_manager::LeaseManagerBuilder;
use signals::shutdown_signal;
use tollgate_dataplane::server::listen;
use tollgate_operator::cli::{SettingsArgs, SidecarModeArg};
use tollgate_operator::inject::{InjectionConfig, Injector};
use tollgate_operator::metrics::Metrics;
use tollgate_operator::reconcile::{Config, Reconciler};
use tollgate_operator::server::{self, Health};
use tollgate_operator::spend::{HttpSpendSource, SpendSource};
use tollgate_operator::webhook::{self, CertSource, SelfManaged, Webhook, tls::SwappableCert};
use tracing::{error, info, warn};

/// Compiles VirtualKey, Team, Budget, ModelProvider, ModelRoute, McpServer and AuditSink
/// resources into the policy ConfigMaps tollgate-proxy reads.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Namespace the policy ConfigMaps are written to (where the proxies run).
    #[arg(long, env = "TOLLGATE_POLICY_NAMESPACE", default_value = "tollgate-system")]
    policy_namespace: String,
    /// What shapes the policy (shared with `compile`).
    #[command(flatten)]
    settings: SettingsArgs,
    /// Proxy admin base URLs to read budget spend from (`GET URL/admin/spend`); repeatable.
    #[arg(long = "spend-url", env = "TOLLGATE_SPEND_URLS", value_delimiter = ',')]
    spend_urls: Vec<String>,
    /// Seconds between spend reads.
    #[arg(long, default_value_t = 30)]
    spend_interval_secs: u64,
    /// Seconds between full reconciliations even without changes.
    #[arg(long, default_value_t = 300)]
    resync_secs: u64,
    /// Address of /healthz, /readyz and /metrics; `[::]:PORT` is every address of both
    /// IPv4 and IPv6 (the kubelet probes the pod IP, whichever family it is).
    #[arg(long, default_value = "[::]:8080")]
    listen: std::net::SocketAddr,
    /// Run without leader election (a single replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease (defaults to the policy namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "tollgate-operator")]
    identity: String,
    /// Log format: json or text.
    #[arg(long, default_value = "json")]
    log_format: String,
    /// Address of the sidecar injection webhook (HTTPS), e.g. `[::]:9443` (both IPv4 and
    /// IPv6); unset: no webhook.
    #[arg(long, env = "TOLLGATE_WEBHOOK_LISTEN")]
    webhook_listen: Option<std::net::SocketAddr>,
    /// Where the webhook certificate comes from: `self-managed` (a CA and certificate the
    /// operator keeps in --webhook-secret, with caBundle patched) or `files` (tls.crt and
    /// tls.key in --webhook-cert-dir, e.g. from cert-manager).
    #[arg(long, default_value = "self-managed", value_parser = ["self-managed", "files"])]
    webhook_certs: String,
    /// Directory with tls.crt and tls.key (files mode).
    #[arg(long, default_value = "/var/run/tollgate/webhook-tls")]
    webhook_cert_dir: std::path::PathBuf,
    /// Secret (in the policy namespace) holding the self-managed CA and certificate.
    #[arg(long, default_value = "tollgate-webhook-tls")]
    webhook_secret: String,
    /// MutatingWebhookConfiguration whose caBundle the operator keeps current (self-managed).
    #[arg(long, default_value = "tollgate-sidecar-injector")]
    webhook_configuration: String,
    /// The webhook Service, in the policy namespace (its DNS names go into the certificate).
    #[arg(long, default_value = "tollgate-webhook")]
    webhook_service: String,
    /// The sidecar injection settings (YAML; the Helm chart renders it).
    #[arg(long, default_value = "/etc/tollgate/injection/config.yaml")]
    injection_config: std::path::PathBuf,
    /// Namespace label that enables injection (`enabled` or `opt-in`); the operator mirrors
    /// the policy ConfigMaps and the credentials Secret into those namespaces. Empty: none.
    #[arg(long, default_value = "tollgate.dev/inject")]
    inject_namespace_label: String,
    /// Name of the credentials Secret the operator assembles from the Secret keys the policy
    /// references (in the policy namespace and every injection namespace).
    #[arg(long, default_value = "tollgate-credentials")]
    credentials_secret: String,
    /// Extra `SECRET/KEY` of the policy namespace copied into the credentials Secret (e.g. the
    /// Redis ledger URL); repeatable.
    #[arg(long = "mirror-secret", value_delimiter = ',')]
    mirror_secrets: Vec<String>,
    /// The cluster's name in budget notifications (`cluster` in webhook payloads).
    #[arg(long, env = "TOLLGATE_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// A webhook every budget notifies when it crosses a threshold (besides its own
    /// `spec.notify`); signed with --notify-webhook-secret.
    #[arg(long, requires = "notify_webhook_secret")]
    notify_webhook_url: Option<String>,
    /// `SECRET/KEY` (policy namespace, labelled tollgate.dev/credential=true) holding the HMAC
    /// key of --notify-webhook-url.
    #[arg(long, requires = "notify_webhook_url")]
    notify_webhook_secret: Option<String>,
    /// `SECRET/KEY` (policy namespace, labelled tollgate.dev/credential=true) holding a Slack
    /// incoming-webhook URL every budget notifies.
    #[arg(long)]
    notify_slack_secret: Option<String>,
    /// Check an injection config file and exit (0: valid).
    #[arg(long, value_name = "FILE")]
    check_injection_config: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Compile manifests into the policy without a cluster: print the policy document the
    /// operator would write and every resource's readiness (for CI: --strict).
    Compile(Box<tollgate_operator::offline::CompileArgs>),
}

mod signals {
    /// Completes on SIGTERM or Ctrl-C.
    pub async fn shutdown_signal() {
        #[cfg(unix)]
        {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

fn read_injection_config(path: &std::path::Path) -> anyhow::Result<InjectionConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    InjectionConfig::parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Starts the webhook (TLS endpoint and certificate upkeep) when --webhook-listen is set.
async fn start_webhook(
    args: &Args,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
    cert: Arc<SwappableCert>,
    stopped: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let Some(addr) = args.webhook_listen else {
        return Ok(Vec::new());
    };
    let injector = Injector {
        config: read_injection_config(&args.injection_config)?,
        policy_name: args.settings.policy_name.clone(),
        max_key_shards: args.settings.max_key_shards,
        credentials_secret: args.credentials_secret.clone(),
        credentials_dir: args.settings.credentials_dir.clone(),
        direct: args.settings.sidecar_mode == SidecarModeArg::Direct,
    };
    let source = if args.webhook_certs == "files" {
        CertSource::Files(args.webhook_cert_dir.clone())
    } else {
        CertSource::SelfManaged(SelfManaged {
            namespace: args.policy_namespace.clone(),
            secret: args.webhook_secret.clone(),
            configuration: args.webhook_configuration.clone(),
            service: args.webhook_service.clone(),
            lifetimes: Default::default(),
        })
    };
    let upkeep = tokio::spawn(webhook::certificates::run(
        Some(client.clone()),
        source,
        cert.clone(),
        metrics.clone(),
        Duration::from_secs(600),
        stopped(),
    ));
    let listener = listen::bind(addr)
        .await
        .with_context(|| format!("binding the webhook on {addr}"))?;
    let hook = Webhook {
        injector: Arc::new(injector),
        cert,
        metrics: metrics.clone(),
    };
    Ok(vec![
        upkeep,
        tokio::spawn(webhook::serve(listener, hook, stopped())),
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(Command::Compile(compile)) = &args.command {
        return Ok(tollgate_operator::offline::run(compile));
    }
    init_tracing(&args.log_format);
    if let Some(path) = &args.check_injection_config {
        let config = read_injection_config(path)?;
        println!(
            "{}: valid (image {}, port {})",
            path.display(),
            config.image,
            config.port
        );
        return Ok(ExitCode::SUCCESS);
    }
    run(args).await.map(|()| ExitCode::SUCCESS)
}

/// The chart-wide notification targets from the --notify-* flags.
fn notify_defaults(args: &Args) -> anyhow::Result<Vec<tollgate_operator::crd::NotifyTarget>> {
    use tollgate_operator::crd::{CredentialRef, NotifyTarget, SecretKeyRef, SlackTarget, WebhookTarget};
    let secret = |flag: &str, s: &str| -> anyhow::Result<CredentialRef> {
        let (name, key) = tollgate_operator::credentials::parse_secret_key(s)
            .with_context(|| format!("{flag} {s}: expected SECRET/KEY"))?;
        Ok(CredentialRef {
            secret_key_ref: Some(SecretKeyRef { name, key }),
            env: None,
        })
    };
    let mut out = Vec::new();
    if let (Some(url), Some(s)) = (&args.notify_webhook_url, &args.notify_webhook_secret) {
        anyhow::ensure!(
            url.starts_with("https://") || url.starts_with("http://"),
            "--notify-webhook-url {url}: an http:// or https:// URL"
        );
        out.push(NotifyTarget {
            webhook: Some(WebhookTarget {
                url: url.clone(),
                secret: secret("--notify-webhook-secret", s)?,
            }),
            slack: None,
        });
    }
    if let Some(s) = &args.notify_slack_secret {
        out.push(NotifyTarget {
            webhook: None,
            slack: Some(SlackTarget {
                webhook_url: secret("--notify-slack-secret", s)?,
            }),
        });
    }
    Ok(out)
}

/// Runs the operator until SIGTERM (or a lost leader lease).
async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::new());
    let spend: Option<Arc<dyn SpendSource>> = if args.spend_urls.is_empty() {
        None
    } else {
        Some(Arc::new(HttpSpendSource::new(
            &args.spend_urls,
            Duration::from_secs(5),
        )?))
    };
    let config = Config {
        settings: args.settings.settings(None)?,
        policy_namespace: args.policy_namespace.clone(),
        resync: Duration::from_secs(args.resync_secs),
        spend_interval: Duration::from_secs(args.spend_interval_secs),
        instance: args.identity.clone(),
        inject_namespace_label: args.inject_namespace_label.clone(),
        credentials_secret: args.credentials_secret.clone(),
        extra_credentials: args
            .mirror_secrets
            .iter()
            .map(|s| {
                tollgate_operator::credentials::parse_secret_key(s)
                    .with_context(|| format!("--mirror-secret {s}: expected SECRET/KEY"))
            })
            .collect::<anyhow::Result<_>>()?,
        cluster_name: args.cluster_name.clone(),
        notify_defaults: notify_defaults(&args)?,
        ..Config::default()
    };
    let reconciler = Reconciler::new(client.clone(), config, metrics.clone(), spend);
    let leader = Arc::new(AtomicBool::new(false));
    let webhook_cert = args
        .webhook_listen
        .as_ref()
        .map(|_| Arc::new(SwappableCert::default()));
    let health = Health {
        metrics: metrics.clone(),
        leader: leader.clone(),
        reconciled: reconciler.reconciled.clone(),
        webhook_cert: webhook_cert.clone(),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stop_on_signal = stop_tx.clone();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let listener = listen::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let http = tokio::spawn(server::serve(listener, health, stopped(stop_rx.clone())));
    let webhook_rx = stop_rx.clone();
    let webhook_tasks = start_webhook(
        &args,
        &client,
        &metrics,
        webhook_cert.unwrap_or_default(),
        move || Box::pin(stopped(webhook_rx.clone())),
    )
    .await?;
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_on_signal.send(true);
    });

    let result = if args.no_leader_election {
        leader.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        reconciler
            .run(stopped(stop_rx.clone()))
            .await
            .map_err(anyhow::Error::from)
    } else {
        let ns = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| args.policy_namespace.clone());
        let manager = LeaseManagerBuilder::new(client.clone(), "tollgate-operator-leader")
            .with_namespace(ns)
            .with_identity(args.identity.clone())
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .context("setting up leader election")?;
        let (mut is_leader, lease_task) = manager.watch().await;
        info!(identity = %args.identity, "waiting for the leader lease");
        let mut stop = stop_rx.clone();
        let acquired = tokio::select! {
            r = is_leader.wait_for(|l| *l) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        };
        let result = if acquired {
            info!("leading");
            leader.store(true, Ordering::Relaxed);
            metrics.leader.set(1);
            let mut lost = is_leader.clone();
            tokio::select! {
                r = reconciler.run(stopped(stop_rx.clone())) => r.map_err(anyhow::Error::from),
                _ = lost.wait_for(|l| !*l) => {
                    // Another replica may already be writing: stop at once; Kubernetes restarts us.
                    error!("lost the leader lease");
                    Err(anyhow::anyhow!("lost the leader lease"))
                }
            }
        } else {
            Ok(())
        };
        leader.store(false, Ordering::Relaxed);
        metrics.leader.set(0);
        // Dropping the receiver makes the lease task release the lease for a fast handover.
        drop(is_leader);
        match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
            Ok(Ok(Ok(_))) => info!("released the leader lease"),
            _ => warn!("could not release the leader lease; it expires on its own"),
        }
        result
    };
    signal.abort();
    let _ = stop_tx.send(true);
    let _ = http.await;
    for t in webhook_tasks {
        let _ = t.await;
    }
    result
}
