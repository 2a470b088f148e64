//! The admin listener's `/admin/*` API (every budget and its owner) is for the pod itself
//! unless told otherwise: `--admin-api loopback` (the default) answers it only to loopback
//! peers, `all` to anyone who reaches the port (the chart's gateway, behind its
//! NetworkPolicy), `off` to nobody. `/metrics` and the probes answer everyone.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use bytes::Bytes;
use tollgate_tests::harness::{Proxy, send};
use tollgate_tests::policy::standard_policy;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

/// An address of this host other than loopback (the one outbound traffic would use).
fn outside_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9")
        .or_else(|_| s.connect("10.255.255.1:9"))
        .ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn start(dir: &tempfile::TempDir, extra: &[&str]) -> Proxy {
    let file = dir.path().join("policy.yaml");
    let policy = format!(
        "{}budgets:\n  - {{id: org-monthly, scope: {{kind: organization, name: acme}}, limit_micro_usd: 1000, period: monthly}}\n",
        standard_policy("http://127.0.0.1:9", true)
    );
    std::fs::write(&file, policy).unwrap();
    let mut args = vec!["--admin-listen", "0.0.0.0:0"];
    args.extend_from_slice(extra);
    Proxy::start_with_args(&bin(), &file, &[], &args).unwrap()
}

async fn status(ip: IpAddr, port: u16, path: &str) -> u16 {
    send(
        "GET",
        &format!("http://{}{path}", SocketAddr::new(ip, port)),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap()
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_loopback_only_unless_told_otherwise() {
    let Some(outside) = outside_address() else {
        eprintln!("SKIPPED: this host has no address besides loopback");
        return;
    };
    let loopback: IpAddr = [127, 0, 0, 1].into();
    let dir = tempfile::tempdir().unwrap();

    let p = start(&dir, &[]);
    let port = p.admin.port();
    assert_eq!(
        status(loopback, port, "/admin/spend").await,
        200,
        "the pod itself"
    );
    assert_eq!(status(outside, port, "/admin/spend").await, 403, "anyone else");
    assert_eq!(status(outside, port, "/admin/anything").await, 403);
    for open in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(status(outside, port, open).await, 200, "{open}");
    }
    let r = send(
        "GET",
        &format!("http://{}/admin/spend", SocketAddr::new(outside, port)),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("org-monthly"), "{body}");
    assert!(body.contains("--admin-api"), "says how to open it: {body}");
    drop(p);

    let p = start(&dir, &["--admin-api", "all"]);
    assert_eq!(status(outside, p.admin.port(), "/admin/spend").await, 200);
    drop(p);

    let p = start(&dir, &["--admin-api", "off"]);
    let port = p.admin.port();
    assert_eq!(status(loopback, port, "/admin/spend").await, 404);
    assert_eq!(status(outside, port, "/metrics").await, 200);
}
