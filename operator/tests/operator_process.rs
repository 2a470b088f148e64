//! The real `tollgate-operator` binary, as the chart runs it (webhook on, self-managed
//! certificates), against the stand-in API server through a kubeconfig: it creates the CA and
//! serving certificate Secret, patches the MutatingWebhookConfiguration's caBundle, turns ready,
//! answers an AdmissionReview over TLS that only that CA can verify, stops on SIGTERM, and on
//! restart serves the same CA (no new CA, no caBundle churn).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tollgate_tests::harness::send;

use support::tls::{admission_review, post};
use support::{ApiServer, eventually};

const NS: &str = "tollgate-system";
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

struct Operator {
    child: Child,
    health: String,
    webhook: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(dir: &Path, kubeconfig: &Path, run: u32) -> Operator {
        let (health_port, webhook_port) = (free_port(), free_port());
        let log = dir.join(format!("operator-{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate-operator"))
            .args([
                "--no-leader-election",
                "--policy-namespace",
                NS,
                "--log-format",
                "json",
            ])
            .args(["--listen", &format!("127.0.0.1:{health_port}")])
            .args([
                "--gateway-url",
                "http://tollgate-gateway.tollgate-system.svc:8080",
            ])
            .args(["--webhook-listen", &format!("127.0.0.1:{webhook_port}")])
            .arg("--injection-config")
            .arg(dir.join("injection.yaml"))
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("TOLLGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tollgate-operator");
        Operator {
            child,
            health: format!("http://127.0.0.1:{health_port}"),
            webhook: format!("127.0.0.1:{webhook_port}").parse().unwrap(),
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status within 10 s.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!(
            "the operator did not stop within 10 s of SIGTERM:\n{}",
            self.logs()
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn webhook_configuration() -> MutatingWebhookConfiguration {
    let hook = |name: &str, path: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"name": "tollgate-webhook", "namespace": NS, "path": path, "port": 443}}})
    };
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "tollgate-sidecar-injector"},
        "webhooks": [hook("inject.tollgate.dev", "/mutate/enabled"), hook("inject-opt-in.tollgate.dev", "/mutate/opt-in")]
    }))
    .unwrap()
}

fn ca_of(secret: &Secret) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()["ca.crt"].0.clone()).unwrap()
}

async fn ready(op: &Operator) -> Value {
    let url = format!("{}/readyz", op.health);
    eventually("the operator ready", WAIT, || async {
        let r = send("GET", &url, &[], bytes::Bytes::new()).await.ok()?;
        (r.status == 200).then(|| serde_json::from_slice::<Value>(&r.body).unwrap())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_bootstraps_its_webhook_certificate_and_injects_over_tls() {
    let server = ApiServer::start();
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: kmock, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: operator, user: {{token: stand-in}}}}]\n\
             contexts: [{{name: kmock, context: {{cluster: kmock, user: operator, namespace: {NS}}}}}]\n\
             current-context: kmock\n",
            server.url
        ),
    )
    .unwrap();
    // As the chart renders it.
    std::fs::write(
        dir.path().join("injection.yaml"),
        "image: ghcr.io/tollgate-dev/tollgate-proxy:0.1.0\nresources: {limits: {memory: 128Mi}}\n",
    )
    .unwrap();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .create(&PostParams::default(), &webhook_configuration())
        .await
        .unwrap();

    let op = Operator::start(dir.path(), &kubeconfig, 1);
    let readiness = ready(&op).await;
    assert_eq!(readiness["webhook_certificate"], true, "{readiness}");

    // The Secret it made, and the caBundle it patched into both webhooks.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets.get("tollgate-webhook-tls").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = ca_of(&secret);
    let want = base64::engine::general_purpose::STANDARD.encode(ca.trim_end().to_owned() + "\n");
    eventually("caBundle patched", WAIT, || async {
        let c = serde_json::to_value(configs.get("tollgate-sidecar-injector").await.unwrap()).unwrap();
        let bundles: Vec<&str> = c["webhooks"]
            .as_array()?
            .iter()
            .filter_map(|w| w["clientConfig"]["caBundle"].as_str())
            .collect();
        (bundles == [want.as_str(), want.as_str()]).then_some(())
    })
    .await;

    // kube-apiserver's view: trust exactly that CA, connect to the Service name, send a review.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "claude", "namespace": "dev-tools"},
        "spec": {"containers": [{"name": "claude", "image": "node:20-slim"}]}});
    let (status, review) = post(
        op.webhook,
        &ca,
        "/mutate/enabled",
        admission_review("rev-1", pod.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.logs()));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["uid"], "rev-1");
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(review["response"]["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(
        patched["spec"]["initContainers"][0]["image"],
        "ghcr.io/tollgate-dev/tollgate-proxy:0.1.0"
    );
    assert_eq!(
        patched["spec"]["initContainers"][0]["resources"]["limits"]["memory"],
        "128Mi"
    );

    let metrics = send("GET", &format!("{}/metrics", op.health), &[], bytes::Bytes::new())
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(r#"tollgate_operator_admissions_total{result="injected"} 1"#),
        "{metrics}"
    );
    let logs = op.logs();
    assert!(!logs.contains("PRIVATE KEY"), "a key reached the logs");
    assert!(op.terminate().success(), "exit status after SIGTERM");

    // A restart reuses the stored CA and certificate.
    let op = Operator::start(dir.path(), &kubeconfig, 2);
    ready(&op).await;
    let again = secrets.get("tollgate-webhook-tls").await.unwrap();
    assert_eq!(ca_of(&again), ca);
    assert_eq!(
        again.data.as_ref().unwrap()["tls.crt"],
        secret.data.as_ref().unwrap()["tls.crt"],
        "certificate reissued needlessly"
    );
    let (status, _) = post(op.webhook, &ca, "/mutate/enabled", admission_review("rev-2", pod))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(op.terminate().success());
}
