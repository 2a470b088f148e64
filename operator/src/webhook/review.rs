//! AdmissionReview (admission.k8s.io/v1) in and out, on raw JSON: the pod inside is passed
//! to [`crate::inject::review`] untouched.

use base64::Engine;
use serde_json::{Value, json};

use crate::inject::{Injector, Mode, Outcome, review};

/// Why a request body is not an AdmissionReview the webhook can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// JSON, but not an admission.k8s.io/v1 AdmissionReview with a request.
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    Shape(&'static str),
}

/// The kind of answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted with the sidecar patch.
    Injected,
    /// Admitted unchanged.
    Skipped,
    /// Refused.
    Denied,
}

impl Verdict {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Injected => "injected",
            Verdict::Skipped => "skipped",
            Verdict::Denied => "denied",
        }
    }
}

/// What was decided, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The kind of answer.
    pub verdict: Verdict,
    /// Why (skip reason or denial message); empty when injected.
    pub reason: String,
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name, or its generateName prefix.
    pub pod: String,
    /// The AdmissionReview response document.
    pub response: Value,
}

/// Answers one AdmissionReview body.
pub fn answer(injector: &Injector, mode: Mode, body: &[u8]) -> Result<Answered, ReviewError> {
    let review_doc: Value = serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    if review_doc["apiVersion"] != "admission.k8s.io/v1" || review_doc["kind"] != "AdmissionReview" {
        return Err(ReviewError::Shape("apiVersion/kind"));
    }
    let request = review_doc
        .get("request")
        .ok_or(ReviewError::Shape("no request"))?;
    let uid = request["uid"]
        .as_str()
        .ok_or(ReviewError::Shape("no request.uid"))?;
    let namespace = request["namespace"].as_str().unwrap_or_default().to_owned();
    let pod = request
        .get("object")
        .ok_or(ReviewError::Shape("no request.object"))?;
    let name = pod
        .pointer("/metadata/name")
        .or_else(|| pod.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    let is_pod_create = request.pointer("/kind/kind") == Some(&json!("Pod"))
        && request.pointer("/resource/resource") == Some(&json!("pods"))
        && request.get("subResource").is_none_or(Value::is_null)
        && request["operation"] == "CREATE";
    let outcome = if is_pod_create {
        review(injector, mode, pod)
    } else {
        Outcome::Skip("not a pod creation")
    };
    let mut response = json!({"uid": uid, "allowed": true});
    let (verdict, reason) = match outcome {
        Outcome::Inject(patch) => {
            let bytes = serde_json::to_vec(&patch).map_err(|e| ReviewError::Json(e.to_string()))?;
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            (Verdict::Injected, String::new())
        }
        Outcome::Skip(why) => (Verdict::Skipped, why.to_owned()),
        Outcome::Deny(message) => {
            response["allowed"] = json!(false);
            response["status"] = json!({"code": 403, "reason": "Forbidden", "message": message});
            (Verdict::Denied, message)
        }
    };
    Ok(Answered {
        verdict,
        reason,
        namespace,
        pod: name,
        response: json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }),
    })
}
