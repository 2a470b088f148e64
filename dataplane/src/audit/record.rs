//! One audit record: its fields, hash and line encoding (see the [module docs](super)).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{AuditError, canonical};

/// Record format version.
pub const RECORD_VERSION: u64 = 1;

/// The `prev_hash` of the first record of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// A parsed record, with the JSON it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Sequence number in the chain.
    pub seq: u64,
    /// Stable event id.
    pub id: String,
    /// RFC 3339 time of the event.
    pub time: String,
    /// Record kind (`model_request`, `denial`, `policy_reload`, `budget_threshold`, `checkpoint`).
    pub kind: String,
    /// Hash of the previous record.
    pub prev_hash: [u8; 32],
    /// Hash stored in the record.
    pub hash: [u8; 32],
    /// The whole record as JSON.
    pub value: Value,
}

/// The stable event id of record `seq` of chain `chain_id`.
pub fn event_id(chain_id: &str, seq: u64) -> String {
    format!("tga_{chain_id}_{seq}")
}

/// `SHA-256(prev || canonical(record without "hash"))`.
pub fn chain_hash(prev: &[u8; 32], without_hash: &Value) -> Result<[u8; 32], AuditError> {
    let bytes = canonical::encode(without_hash)?;
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&bytes);
    Ok(h.finalize().into())
}

/// Builds and hashes a record; returns its spool line (canonical JSON and `\n`) and hash.
///
/// The top-level members are written directly in their canonical (sorted) order, so the body
/// is encoded once; a unit test checks the result against the generic encoder.
pub fn seal(
    chain_id: &str,
    seq: u64,
    time: &str,
    kind: &str,
    body: &Value,
    prev: &[u8; 32],
) -> Result<(Vec<u8>, [u8; 32]), AuditError> {
    let mut body_bytes = Vec::with_capacity(512);
    canonical::encode_into(body, &mut body_bytes)?;
    let mut tail = Vec::with_capacity(256);
    let s = |v: &str| Value::String(v.to_owned());
    tail.extend_from_slice(b",\"id\":");
    canonical::encode_into(&s(&event_id(chain_id, seq)), &mut tail)?;
    tail.extend_from_slice(b",\"kind\":");
    canonical::encode_into(&s(kind), &mut tail)?;
    tail.extend_from_slice(b",\"prev_hash\":\"");
    tail.extend_from_slice(hex::encode(prev).as_bytes());
    tail.extend_from_slice(format!("\",\"seq\":{seq},\"time\":").as_bytes());
    canonical::encode_into(&s(time), &mut tail)?;
    tail.extend_from_slice(format!(",\"v\":{RECORD_VERSION}}}").as_bytes());
    let mut h = Sha256::new();
    h.update(prev);
    h.update(b"{\"body\":");
    h.update(&body_bytes);
    h.update(&tail);
    let hash: [u8; 32] = h.finalize().into();
    let mut line = Vec::with_capacity(body_bytes.len() + tail.len() + 96);
    line.extend_from_slice(b"{\"body\":");
    line.extend_from_slice(&body_bytes);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hex::encode(hash).as_bytes());
    line.push(b'"');
    line.extend_from_slice(&tail);
    line.push(b'\n');
    Ok((line, hash))
}

fn hash_field(m: &Map<String, Value>, name: &str) -> Result<[u8; 32], AuditError> {
    let s = m
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AuditError::Malformed(format!("missing {name}")))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| AuditError::Malformed(format!("bad {name}")))?;
    Ok(out)
}

impl Record {
    /// Parses one spool line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Record, AuditError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| AuditError::Malformed(format!("not JSON: {e}")))?;
        let m = value
            .as_object()
            .ok_or_else(|| AuditError::Malformed("not an object".into()))?;
        let str_field = |name: &str| {
            m.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| AuditError::Malformed(format!("missing {name}")))
        };
        let seq = m
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| AuditError::Malformed("missing seq".into()))?;
        Ok(Record {
            seq,
            id: str_field("id")?,
            time: str_field("time")?,
            kind: str_field("kind")?,
            prev_hash: hash_field(m, "prev_hash")?,
            hash: hash_field(m, "hash")?,
            value,
        })
    }

    /// The hash this record's content gives when chained after `prev`.
    pub fn recompute(&self, prev: &[u8; 32]) -> Result<[u8; 32], AuditError> {
        let mut v = self.value.clone();
        if let Value::Object(m) = &mut v {
            m.remove("hash");
        }
        chain_hash(prev, &v)
    }

    /// The record's body.
    pub fn body(&self) -> &Value {
        &self.value["body"]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sealed_records_parse_and_rehash() {
        let body = json!({"why": "x\"\n", "n": [1, -2], "z": {"b": 1, "a": null}});
        let (line, hash) = seal("c0ffee", 1, "2026-01-01T00:00:00Z", "denial", &body, &GENESIS).unwrap();
        assert!(line.ends_with(b"\n"));
        let r = Record::parse(&line[..line.len() - 1]).unwrap();
        assert_eq!(r.seq, 1);
        assert_eq!(r.id, "tga_c0ffee_1");
        assert_eq!(r.hash, hash);
        assert_eq!(r.recompute(&GENESIS).unwrap(), hash);
        // The direct assembly agrees with the generic encoder, with and without the hash.
        let mut without = r.value.clone();
        without.as_object_mut().unwrap().remove("hash");
        assert_eq!(chain_hash(&GENESIS, &without).unwrap(), hash);
        // The line is canonical: re-encoding it gives the same bytes.
        assert_eq!(canonical::encode(&r.value).unwrap(), &line[..line.len() - 1]);
        // A different predecessor gives a different hash.
        assert_ne!(r.recompute(&[1; 32]).unwrap(), hash);
    }
}
