//! The injection webhook end to end over TLS: a real AdmissionReview (as kube-apiserver sends
//! it) posted over HTTPS to the rustls endpoint, the client trusting only the CA the operator
//! generated; then the certificate swapped under a running server; then the self-managed
//! certificate round's API calls (Secret created, caBundle patched) with tower-test.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube::client::Body;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tollgate_operator::inject::{InjectionConfig, Injector};
use tollgate_operator::metrics::Metrics;
use tollgate_operator::webhook::certs::{self, Lifetimes, Plan, Stored};
use tollgate_operator::webhook::tls::{SwappableCert, certified_key};
use tollgate_operator::webhook::{SelfManaged, Webhook, certificates, serve};
use tower_test::mock;

mod support;
use support::tls::{admission_review, post};

fn issue(names: &[&str], base: &Stored) -> Stored {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let plan = if base.data.is_empty() {
        Plan::NewCa
    } else {
        Plan::Reissue
    };
    certs::execute(plan, base, jiff::Timestamp::now(), &names, Lifetimes::default()).unwrap()
}

fn load(cert: &SwappableCert, s: &Stored) {
    cert.store(
        certified_key(
            s.data[certs::TLS_CERT].as_bytes(),
            s.data[certs::TLS_KEY].as_bytes(),
        )
        .unwrap(),
    );
}

struct Running {
    addr: std::net::SocketAddr,
    cert: Arc<SwappableCert>,
    metrics: Arc<Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(stored: &Stored) -> Running {
    start_with(stored, "image: ghcr.io/tollgate-dev/tollgate-proxy:0.1.0").await
}

/// Starts the webhook with this injection config file's text.
async fn start_with(stored: &Stored, config: &str) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = Arc::new(SwappableCert::default());
    load(&cert, stored);
    let metrics = Arc::new(Metrics::new());
    let injector = Injector {
        config: InjectionConfig::parse(config).unwrap(),
        policy_name: "tollgate-policy".into(),
        max_key_shards: 4,
        credentials_secret: "tollgate-credentials".into(),
        credentials_dir: "/var/run/tollgate/credentials".into(),
        direct: true,
    };
    let hook = Webhook {
        injector: Arc::new(injector),
        cert: cert.clone(),
        metrics: metrics.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, hook, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        cert,
        metrics,
        _stop: tx,
    }
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "claude", "namespace": "dev-tools",
                     "annotations": {"tollgate.dev/virtual-key-secret": "tollgate-vk-alice"}},
        "spec": {"containers": [{"name": "claude", "image": "node:20-slim", "command": ["sleep", "infinity"]}]}
    })
}

#[tokio::test]
async fn a_real_admission_review_over_tls_gets_the_sidecar_patch() {
    let stored = issue(&["tollgate-webhook.tollgate-system.svc"], &Stored::default());
    let server = start(&stored).await;
    let ca = certs::ca_bundle(&stored);

    let (status, review) = post(
        server.addr,
        &ca,
        "/mutate/enabled",
        admission_review("705ab4f5-6393-11e8-b7cc-42010a800002", pod()),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = &review["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
    let mut patched = pod();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(patched["spec"]["initContainers"][0]["name"], "tollgate-proxy");
    assert_eq!(patched["spec"]["initContainers"][0]["restartPolicy"], "Always");
    let env = patched["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "ANTHROPIC_BASE_URL" && e["value"] == "http://127.0.0.1:16080/anthropic")
    );
    assert!(env.iter().any(|e| e["name"] == "ANTHROPIC_AUTH_TOKEN"
        && e["valueFrom"]["secretKeyRef"]["name"] == "tollgate-vk-alice"));

    // Opt-in path: the same pod without the opt-in annotation is admitted unchanged.
    let (_, review) = post(server.addr, &ca, "/mutate/opt-in", admission_review("u2", pod()))
        .await
        .unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());

    // A pod that cannot be governed is refused with a message kubectl shows.
    let mut clash = pod();
    clash["spec"]["containers"][0]["ports"] = json!([{"containerPort": 16080}]);
    let (_, review) = post(server.addr, &ca, "/mutate/enabled", admission_review("u3", clash))
        .await
        .unwrap();
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["code"], 403);
    assert!(
        review["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("tollgate.dev/proxy-port")
    );

    // Garbage and wrong paths get HTTP errors (the API server then applies failurePolicy).
    let (status, _) = post(server.addr, &ca, "/mutate/enabled", b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(server.addr, &ca, "/mutate/other", admission_review("u4", pod()))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        server.addr,
        &ca,
        "/mutate/enabled",
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let metrics = server.metrics.encode();
    for want in [
        r#"tollgate_operator_admissions_total{result="injected"} 1"#,
        r#"tollgate_operator_admissions_total{result="skipped"} 1"#,
        r#"tollgate_operator_admissions_total{result="denied"} 1"#,
        r#"tollgate_operator_admissions_total{result="invalid"} 2"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}

/// The JSON Patch of an admitted AdmissionReview response, if it carries one.
fn patch_of(review: &Value) -> Option<json_patch::Patch> {
    let encoded = review["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[tokio::test]
async fn a_reinvocation_completes_containers_added_later_and_is_otherwise_a_no_op() {
    let stored = issue(&["tollgate-webhook.tollgate-system.svc"], &Stored::default());
    let server = start(&stored).await;
    let ca = certs::ca_bundle(&stored);
    let (_, first) = post(server.addr, &ca, "/mutate/enabled", admission_review("r1", pod()))
        .await
        .unwrap();
    let mut injected = pod();
    json_patch::patch(&mut injected, &patch_of(&first).expect("first patch")).unwrap();

    // reinvocationPolicy IfNeeded: the API server sends our own result back.
    let (_, again) = post(
        server.addr,
        &ca,
        "/mutate/enabled",
        admission_review("r2", injected.clone()),
    )
    .await
    .unwrap();
    assert_eq!(again["response"]["allowed"], true);
    assert!(again["response"].get("patch").is_none(), "{again}");

    // A later webhook added a container: only it gets the environment.
    let mut later = injected.clone();
    later["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "added-later", "image": "node:20-slim"}));
    let (_, review) = post(
        server.addr,
        &ca,
        "/mutate/enabled",
        admission_review("r3", later.clone()),
    )
    .await
    .unwrap();
    assert_eq!(review["response"]["allowed"], true);
    let patch = patch_of(&review).expect("an env patch");
    assert!(
        patch
            .0
            .iter()
            .all(|op| op.path().to_string().starts_with("/spec/containers/1/env")),
        "{patch:?}"
    );
    json_patch::patch(&mut later, &patch).unwrap();
    let env = later["spec"]["containers"][1]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "ANTHROPIC_BASE_URL" && e["value"] == "http://127.0.0.1:16080/anthropic")
    );
    let init = later["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1, "still one sidecar");
}

#[tokio::test]
async fn a_plain_sidecar_refuses_a_job_pod_with_the_reason_and_the_way_out() {
    let stored = issue(&["tollgate-webhook.tollgate-system.svc"], &Stored::default());
    let server = start_with(
        &stored,
        "image: ghcr.io/tollgate-dev/tollgate-proxy:0.1.0\nnativeSidecar: false",
    )
    .await;
    let ca = certs::ca_bundle(&stored);
    let mut job = pod();
    job["spec"]["restartPolicy"] = json!("OnFailure");
    let (status, review) = post(server.addr, &ca, "/mutate/enabled", admission_review("j1", job))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let response = &review["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    for want in [
        "restartPolicy OnFailure",
        "never exits",
        "Kubernetes 1.29+",
        "tollgate.dev/inject",
    ] {
        assert!(message.contains(want), "'{want}' not in: {message}");
    }
    // A long-running pod still gets the plain sidecar.
    let (_, review) = post(server.addr, &ca, "/mutate/enabled", admission_review("j2", pod()))
        .await
        .unwrap();
    let mut patched = pod();
    json_patch::patch(&mut patched, &patch_of(&review).expect("patch")).unwrap();
    assert_eq!(patched["spec"]["containers"][1]["name"], "tollgate-proxy");
}

#[tokio::test]
async fn clients_refuse_an_untrusted_certificate_and_a_swapped_one_is_served_at_once() {
    let stored = issue(&["tollgate-webhook.tollgate-system.svc"], &Stored::default());
    let server = start(&stored).await;
    let other_ca = issue(&["tollgate-webhook.tollgate-system.svc"], &Stored::default());
    let err = post(
        server.addr,
        &certs::ca_bundle(&other_ca),
        "/mutate/enabled",
        admission_review("u", pod()),
    )
    .await
    .expect_err("a client trusting another CA must fail the handshake");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A certificate for the wrong name is refused too.
    let wrong_name = issue(&["elsewhere.example"], &stored);
    load(&server.cert, &wrong_name);
    assert!(
        post(
            server.addr,
            &certs::ca_bundle(&stored),
            "/mutate/enabled",
            admission_review("u", pod())
        )
        .await
        .is_err()
    );

    // Renewal (same CA, new certificate) is picked up by the next connection.
    let renewed = issue(&["tollgate-webhook.tollgate-system.svc"], &stored);
    assert_ne!(renewed.data[certs::TLS_CERT], stored.data[certs::TLS_CERT]);
    load(&server.cert, &renewed);
    let (status, _) = post(
        server.addr,
        &certs::ca_bundle(&stored),
        "/mutate/enabled",
        admission_review("u", pod()),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Starts one self-managed certificate round against a tower-test mock API server; the test
/// answers its requests through the handle.
fn self_managed_round_on_mock() -> (
    Handle,
    Arc<SwappableCert>,
    tokio::task::JoinHandle<Result<bool, certificates::CertRoundError>>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let cfg = SelfManaged {
        namespace: "tollgate-system".into(),
        secret: "tollgate-webhook-tls".into(),
        configuration: "tollgate-sidecar-injector".into(),
        service: "tollgate-webhook".into(),
        lifetimes: Lifetimes::default(),
    };
    let cert = Arc::new(SwappableCert::default());
    let c2 = cert.clone();
    let round = tokio::spawn(async move {
        certificates::self_managed_round(&client, &cfg, &c2, jiff::Timestamp::now()).await
    });
    (handle, cert, round)
}

async fn next(
    handle: &mut Handle,
    method: Method,
    uri: &str,
    status: u16,
    reply: Value,
) -> (Option<String>, Value) {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "{}", req.uri());
    assert_eq!(req.uri().to_string(), uri);
    let ct = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (ct, body)
}

#[tokio::test]
async fn self_managed_mode_creates_the_secret_and_patches_the_ca_bundle() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mut handle, cert, round) = self_managed_round_on_mock();

    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
    next(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/tollgate-system/secrets/tollgate-webhook-tls",
        404,
        not_found,
    )
    .await;
    let (req, send) = handle.next_request().await.expect("create");
    assert_eq!(req.method(), Method::POST);
    assert_eq!(
        req.uri().to_string(),
        "/api/v1/namespaces/tollgate-system/secrets?"
    );
    let secret: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tollgate-operator"
    );
    let dns = secret["metadata"]["annotations"][certs::CERT_DNS_NAMES]
        .as_str()
        .unwrap();
    assert!(dns.starts_with("tollgate-webhook.tollgate-system.svc,"), "{dns}");
    let b64 = |k: &str| secret["data"][k].as_str().unwrap().to_owned();
    let ca_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64("ca.crt"))
            .unwrap(),
    )
    .unwrap();
    send.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(serde_json::to_vec(&secret).unwrap()))
            .unwrap(),
    );

    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "tollgate-sidecar-injector", "resourceVersion": "41"},
        "webhooks": [
            {"name": "inject.tollgate.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "tollgate-webhook", "namespace": "tollgate-system", "path": "/mutate/enabled"}}},
            {"name": "inject-opt-in.tollgate.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "clientConfig": {"service": {"name": "tollgate-webhook", "namespace": "tollgate-system", "path": "/mutate/opt-in"}}}
        ]
    });
    next(
        &mut handle,
        Method::GET,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tollgate-sidecar-injector",
        200,
        config.clone(),
    )
    .await;
    let (ct, patch) = next(
        &mut handle,
        Method::PATCH,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tollgate-sidecar-injector?",
        200,
        config,
    )
    .await;
    assert_eq!(ct.as_deref(), Some("application/json-patch+json"));
    let want_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.trim_end().to_owned() + "\n");
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": want_bundle},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": want_bundle}
        ])
    );
    assert!(round.await.unwrap().unwrap(), "first round loads a certificate");
    assert!(cert.is_loaded());
}

#[test]
fn ca_bundle_patch_is_empty_when_every_webhook_already_trusts_the_ca() {
    let config = json!({"metadata": {"resourceVersion": "7"},
        "webhooks": [{"clientConfig": {"caBundle": "QUJD"}}, {"clientConfig": {"caBundle": "QUJD"}}]});
    assert_eq!(certificates::ca_bundle_patch(&config, "QUJD"), None);
    let patch = certificates::ca_bundle_patch(&config, "REVG").unwrap();
    assert_eq!(patch.as_array().unwrap().len(), 3);
}

/// A measurement, not a check: `cargo test -p tollgate-operator --release --test webhook --
/// --ignored --nocapture admission_latency`. Reviews of a Claude Code pod over one kept-alive
/// TLS connection (as kube-apiserver reuses its connections), and over a new TLS connection each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn admission_latency() {
    let stored = issue(&["tollgate-webhook.tollgate-system.svc"], &Stored::default());
    let server = start(&stored).await;
    let ca = certs::ca_bundle(&stored);
    let body = admission_review("u", pod());

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("tollgate-webhook.tollgate-system.svc").unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector.connect(name.clone(), tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let percentiles = |mut v: Vec<std::time::Duration>| {
        v.sort();
        let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        format!("p50 {:?}  p99 {:?}  max {:?}", at(0.5), at(0.99), v[v.len() - 1])
    };
    let n = 2000;
    let mut kept = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let req = Request::post("/mutate/enabled")
            .header("host", "tollgate-webhook.tollgate-system.svc")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        kept.push(t.elapsed());
        assert!(bytes.len() > 100);
    }
    let mut fresh = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = std::time::Instant::now();
        post(server.addr, &ca, "/mutate/enabled", body.clone())
            .await
            .unwrap();
        fresh.push(t.elapsed());
    }
    println!(
        "admission review, {} byte request, kept-alive TLS ({n}): {}",
        body.len(),
        percentiles(kept)
    );
    println!(
        "admission review, new TLS connection each (200): {}",
        percentiles(fresh)
    );
}

/// Two replicas renew at once: the loser's replace gets 409 Conflict, re-reads the Secret and
/// serves what the winner wrote (and leaves the caBundle to the winner).
#[tokio::test]
async fn a_replica_that_loses_the_renewal_race_serves_the_winners_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let names = certs::service_dns_names("tollgate-webhook", "tollgate-system");
    let long_ago = jiff::Timestamp::now() - certs::days(340);
    let old = certs::execute(
        Plan::NewCa,
        &Stored::default(),
        long_ago,
        &names,
        Lifetimes::default(),
    )
    .unwrap();
    let winner = certs::execute(
        Plan::Reissue,
        &old,
        jiff::Timestamp::now(),
        &names,
        Lifetimes::default(),
    )
    .unwrap();
    let as_secret = |s: &Stored, rv: &str| {
        let data: serde_json::Map<String, Value> = s
            .data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "tollgate-webhook-tls", "namespace": "tollgate-system",
                            "resourceVersion": rv, "annotations": s.annotations},
               "data": data})
    };
    let (mut handle, cert, round) = self_managed_round_on_mock();
    let path = "/api/v1/namespaces/tollgate-system/secrets/tollgate-webhook-tls";
    next(&mut handle, Method::GET, path, 200, as_secret(&old, "10")).await;
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                          "message": "the object has been modified"});
    let (_, replaced) = next(&mut handle, Method::PUT, &format!("{path}?"), 409, conflict).await;
    assert_eq!(
        replaced["metadata"]["resourceVersion"], "10",
        "the replace is conditional"
    );
    assert_ne!(
        replaced["data"]["tls.crt"],
        as_secret(&old, "10")["data"]["tls.crt"],
        "it tried a new certificate"
    );
    next(&mut handle, Method::GET, path, 200, as_secret(&winner, "11")).await;
    assert!(round.await.unwrap().unwrap());
    assert!(cert.is_loaded());
    // No further calls: the winner owns the caBundle update.
    let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(
        matches!(more, Err(_) | Ok(None)),
        "unexpected API call after losing the race"
    );
}
