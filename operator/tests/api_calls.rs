//! The exact API calls, asserted with kube-rs' tower-test pattern: method, URI (with the
//! field manager and force for server-side apply) and body.

use std::collections::BTreeMap;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::{Client, api::ObjectMeta};
use serde_json::{Value, json};
use tollgate_operator::compile::{Kind, PolicyConfigMap, Readiness, StatusUpdate};
use tollgate_operator::crd::{VirtualKey, VirtualKeySpec};
use tollgate_operator::reconcile::apply::{self, SecretCreated};
use tower_test::mock::{self, Handle};

type Verifier = Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, Verifier) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

/// Answers the next request after checking its method and URI; returns its JSON body.
async fn expect(handle: &mut Verifier, method: Method, uri: &str, status: u16, reply: Value) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method);
    assert_eq!(req.uri().to_string(), uri);
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if method == Method::PATCH {
        assert_eq!(content_type.as_deref(), Some("application/apply-patch+yaml"));
    }
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    body
}

#[tokio::test]
async fn the_policy_configmap_is_server_side_applied_with_the_field_manager() {
    let (client, mut handle) = mock_client();
    let cm = PolicyConfigMap {
        name: "tollgate-policy-keys-00".into(),
        file: "keys-00.json".into(),
        content: "{\"version\":1}\n".into(),
    };
    let desired = apply::desired_config_map(&cm, "tollgate-system", "tollgate-policy");
    let call = tokio::spawn(async move { apply::apply_config_map(&client, &desired).await });
    let body = expect(
        &mut handle,
        Method::PATCH,
        "/api/v1/namespaces/tollgate-system/configmaps/tollgate-policy-keys-00?&force=true&fieldManager=tollgate-operator",
        200,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tollgate-policy-keys-00"}}),
    )
    .await;
    assert_eq!(
        body,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "tollgate-policy-keys-00",
                "namespace": "tollgate-system",
                "labels": {"app.kubernetes.io/managed-by": "tollgate-operator", "tollgate.dev/policy": "tollgate-policy"}
            },
            "data": {"keys-00.json": "{\"version\":1}\n"}
        })
    );
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn status_is_applied_to_the_status_subresource_only() {
    let (client, mut handle) = mock_client();
    let update = StatusUpdate {
        kind: Kind::VirtualKey,
        namespace: Some("team-a".into()),
        name: "alice".into(),
        status: json!({"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "False", "reason": "TeamNotFound", "message": "m", "lastTransitionTime": "2026-11-15T12:00:00Z"}]}),
        changed: true,
        previous_ready: None,
        readiness: Readiness::fail("TeamNotFound", "m"),
    };
    let expected_status = update.status.clone();
    let call = tokio::spawn(async move { apply::apply_status(&client, &update).await });
    let body = expect(
        &mut handle,
        Method::PATCH,
        "/apis/tollgate.dev/v1alpha1/namespaces/team-a/virtualkeys/alice/status?&force=true&fieldManager=tollgate-operator",
        200,
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey", "metadata": {"name": "alice"}}),
    )
    .await;
    assert_eq!(
        body,
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey", "status": expected_status})
    );
    call.await.unwrap().unwrap();

    // Cluster-scoped kinds; a resource deleted meanwhile (404) is not an error.
    let (client, mut handle) = mock_client();
    let update = StatusUpdate {
        kind: Kind::Budget,
        namespace: None,
        name: "gone".into(),
        status: json!({}),
        changed: true,
        previous_ready: None,
        readiness: Readiness::ok("Compiled", ""),
    };
    let call = tokio::spawn(async move { apply::apply_status(&client, &update).await });
    expect(
        &mut handle,
        Method::PATCH,
        "/apis/tollgate.dev/v1alpha1/budgets/gone/status?&force=true&fieldManager=tollgate-operator",
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "gone"}),
    )
    .await;
    call.await.unwrap().unwrap();
}

fn alice() -> VirtualKey {
    VirtualKey {
        metadata: ObjectMeta {
            name: Some("alice".into()),
            namespace: Some("team-a".into()),
            uid: Some("uid-alice".into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/instance".into(),
                "argo-app".into(),
            )])),
            ..Default::default()
        },
        spec: VirtualKeySpec::default(),
        status: None,
    }
}

#[tokio::test]
async fn a_generated_key_secret_is_created_owned_and_never_overwritten() {
    let (client, mut handle) = mock_client();
    let c = client.clone();
    let call = tokio::spawn(async move { apply::create_key_secret(&c, &alice()).await });
    let body = expect(
        &mut handle,
        Method::POST,
        "/api/v1/namespaces/team-a/secrets?&fieldManager=tollgate-operator",
        201,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tollgate-vk-alice"}}),
    )
    .await;
    let SecretCreated::Created(sha) = call.await.unwrap().unwrap() else {
        panic!("not created")
    };
    assert_eq!(body["metadata"]["name"], "tollgate-vk-alice");
    assert_eq!(
        body["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "tollgate-operator", "tollgate.dev/virtual-key": "alice"})
    );
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey", "name": "alice", "uid": "uid-alice", "controller": true, "blockOwnerDeletion": true}])
    );
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(body.clone()).unwrap();
    let key = String::from_utf8(secret.data.unwrap()["key"].0.clone()).unwrap();
    assert!(key.starts_with("tg_") && key.len() == 67);
    assert_eq!(tollgate_operator::secrets::key_sha256(&key), sha);

    // An existing Secret is left alone (409), never replaced.
    let call = tokio::spawn(async move { apply::create_key_secret(&client, &alice()).await });
    expect(&mut handle, Method::POST, "/api/v1/namespaces/team-a/secrets?&fieldManager=tollgate-operator", 409, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "AlreadyExists", "message": "exists"})).await;
    assert_eq!(call.await.unwrap().unwrap(), SecretCreated::AlreadyExists);
}

#[tokio::test]
async fn a_stale_shard_is_deleted_and_an_absent_one_is_fine() {
    let (client, mut handle) = mock_client();
    let call = tokio::spawn(async move {
        apply::delete_config_map(&client, "tollgate-system", "tollgate-policy-keys-03").await
    });
    expect(&mut handle, Method::DELETE, "/api/v1/namespaces/tollgate-system/configmaps/tollgate-policy-keys-03?", 404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "gone"})).await;
    call.await.unwrap().unwrap();
}
