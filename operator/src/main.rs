//! `tollgate-operator`: watches Tollgate's custom resources and writes the policy
//! ConfigMaps tollgate-proxy loads. One replica leads (a Lease); the others stand by.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kube_lease_manager::LeaseManagerBuilder;
use signals::shutdown_signal;
use tollgate_operator::compile::{Settings, ShardLimits};
use tollgate_operator::metrics::Metrics;
use tollgate_operator::reconcile::{Config, Reconciler};
use tollgate_operator::server::{self, Health};
use tollgate_operator::spend::{HttpSpendSource, SpendSource};
use tracing::{error, info, warn};

/// Compiles VirtualKey, Team, Budget, ModelProvider, ModelRoute, McpServer and AuditSink
/// resources into the policy ConfigMaps tollgate-proxy reads.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Namespace the policy ConfigMaps are written to (where the proxies run).
    #[arg(long, env = "TOLLGATE_POLICY_NAMESPACE", default_value = "tollgate-system")]
    policy_namespace: String,
    /// Name of the main policy ConfigMap; key shards are NAME-keys-NN.
    #[arg(long, default_value = "tollgate-policy")]
    policy_name: String,
    /// The organization name (enables organization-scoped budgets).
    #[arg(long, env = "TOLLGATE_ORGANIZATION")]
    organization: Option<String>,
    /// Where the proxy container mounts credential Secrets (DIR/SECRET/KEY).
    #[arg(long, default_value = "/var/run/tollgate/credentials")]
    credentials_dir: String,
    /// At most this many key shard ConfigMaps (the proxy's projected volume lists as many).
    #[arg(long, default_value_t = 16)]
    max_key_shards: usize,
    /// Proxy admin base URLs to read budget spend from (`GET URL/admin/spend`); repeatable.
    #[arg(long = "spend-url", env = "TOLLGATE_SPEND_URLS", value_delimiter = ',')]
    spend_urls: Vec<String>,
    /// Seconds between spend reads.
    #[arg(long, default_value_t = 30)]
    spend_interval_secs: u64,
    /// Seconds between full reconciliations even without changes.
    #[arg(long, default_value_t = 300)]
    resync_secs: u64,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: String,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
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
        settings: Settings {
            organization: args.organization.clone(),
            audit_capture: None,
            credentials_dir: args.credentials_dir.clone(),
            policy_name: args.policy_name.clone(),
            limits: ShardLimits {
                max_shards: args.max_key_shards,
                ..ShardLimits::default()
            },
        },
        policy_namespace: args.policy_namespace.clone(),
        resync: Duration::from_secs(args.resync_secs),
        spend_interval: Duration::from_secs(args.spend_interval_secs),
        instance: args.identity.clone(),
        ..Config::default()
    };
    let reconciler = Reconciler::new(client.clone(), config, metrics.clone(), spend);
    let leader = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        leader: leader.clone(),
        reconciled: reconciler.reconciled.clone(),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stop_on_signal = stop_tx.clone();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let http = tokio::spawn(server::serve(listener, health, stopped(stop_rx.clone())));
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
    result
}
