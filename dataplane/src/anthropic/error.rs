//! Anthropic error JSON: `{"type":"error","error":{"type":..,"message":..},"request_id":..}`.

use bytes::Bytes;

use crate::denial::Denial;

/// Serialises an Anthropic error body.
pub fn error_body(error_type: &str, message: &str, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": error_type, "message": message },
        "request_id": request_id,
    });
    Bytes::from(body.to_string())
}

/// The body for a gateway refusal.
pub fn denial_body(denial: &Denial, request_id: &str) -> Bytes {
    error_body(denial.error_type(), &denial.message(), request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_anthropic() {
        let b = denial_body(&Denial::UnknownKey, "req_1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid virtual key")
        );
        assert_eq!(v["request_id"], "req_1");
    }
}
