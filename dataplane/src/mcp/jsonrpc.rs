//! JSON-RPC 2.0 as MCP uses it: the standard error codes and response envelopes.

use serde_json::{Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid parameters; MCP also uses it for an unknown tool.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error (here: an upstream MCP server failed).
pub const INTERNAL_ERROR: i64 = -32603;
/// Server-defined: the gateway refused the caller (authentication, authorization, session).
pub const GATEWAY_REFUSED: i64 = -32001;

/// A successful response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response; `id` is `null` when the request's id is unknown.
pub fn error(id: &Value, code: i64, message: impl Into<String>, data: Option<Value>) -> Value {
    let mut err = json!({"code": code, "message": message.into()});
    if let Some(d) = data {
        err["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": err})
}

/// A notification (no id).
pub fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method})
}

/// What a client sent, classified.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A request: has a method and an id.
    Request {
        /// The request id (string or number), echoed in the response.
        id: Value,
        /// Method name.
        method: String,
        /// Parameters (`null` when absent).
        params: Value,
    },
    /// A notification: a method without an id.
    Notification {
        /// Method name.
        method: String,
    },
    /// A response to a server-initiated request.
    Response,
}

/// Classifies a parsed JSON value; the error is a JSON-RPC error response to send back.
pub fn classify(v: Value) -> Result<Message, Value> {
    let Value::Object(mut obj) = v else {
        let msg = if v.is_array() {
            "JSON-RPC batches are not supported (removed in MCP 2025-06-18)"
        } else {
            "a JSON-RPC message must be an object"
        };
        return Err(error(&Value::Null, INVALID_REQUEST, msg, None));
    };
    let id = obj.remove("id");
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) if id.is_string() || id.is_number() => {
            let params = obj.remove("params").unwrap_or(Value::Null);
            Ok(Message::Request { id, method, params })
        }
        (Some(Value::String(method)), None) => Ok(Message::Notification { method }),
        (None, Some(_)) if obj.contains_key("result") || obj.contains_key("error") => Ok(Message::Response),
        (_, id) => Err(error(
            &id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "not a JSON-RPC request, notification or response",
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})),
            Ok(Message::Request {
                id: json!(1),
                method: "tools/list".into(),
                params: Value::Null
            })
        );
        assert_eq!(
            classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Ok(Message::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            classify(json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Ok(Message::Response)
        );
        let batch = classify(json!([{"jsonrpc":"2.0","id":1,"method":"ping"}])).unwrap_err();
        assert_eq!(batch["error"]["code"], INVALID_REQUEST);
        assert!(classify(json!({"id": {}, "method": "x"})).is_err());
    }
}
