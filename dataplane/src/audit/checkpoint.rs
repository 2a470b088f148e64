//! Signed checkpoints: HMAC-SHA256 or Ed25519 over the chain head (see the
//! [module docs](super)).

use ring::hmac;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AuditError;
use crate::policy::CredentialReader;
use crate::policy::document::{CheckpointAlgorithm, CredentialSource};
use crate::policy::snapshot::read_credential;

/// What a checkpoint signs.
pub fn message(chain_id: &str, covers_seq: u64, covers_hash_hex: &str) -> String {
    format!("tollgate-audit-checkpoint/v1\n{chain_id}\n{covers_seq}\n{covers_hash_hex}")
}

/// The `alg` name of an algorithm in checkpoint bodies.
pub fn alg_name(alg: CheckpointAlgorithm) -> &'static str {
    match alg {
        CheckpointAlgorithm::HmacSha256 => "hmac-sha256",
        CheckpointAlgorithm::Ed25519 => "ed25519",
    }
}

fn short_id(domain: &[u8], bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(bytes);
    hex::encode(&h.finalize()[..8])
}

fn ed25519_seed(text: &str) -> Result<[u8; 32], AuditError> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .map_err(|_| AuditError::Key("an ed25519 key file holds the 32-byte seed as 64 hex digits".into()))?;
    Ok(seed)
}

/// Signs checkpoints.
pub enum Signer {
    /// HMAC-SHA256 with a shared secret.
    Hmac {
        /// The key.
        key: hmac::Key,
        /// Public identifier of the key.
        key_id: String,
    },
    /// Ed25519.
    Ed25519 {
        /// The key pair.
        pair: Box<Ed25519KeyPair>,
        /// Public identifier of the key (from the public key).
        key_id: String,
    },
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.key_id())
    }
}

impl Signer {
    /// A signer from key material: the HMAC secret, or the Ed25519 seed in hex.
    pub fn from_secret(alg: CheckpointAlgorithm, secret: &str) -> Result<Signer, AuditError> {
        match alg {
            CheckpointAlgorithm::HmacSha256 => {
                let secret = secret.trim().as_bytes();
                if secret.len() < 16 {
                    return Err(AuditError::Key("an HMAC key needs at least 16 bytes".into()));
                }
                Ok(Signer::Hmac {
                    key: hmac::Key::new(hmac::HMAC_SHA256, secret),
                    key_id: short_id(b"tollgate-audit-hmac-key-id", secret),
                })
            }
            CheckpointAlgorithm::Ed25519 => {
                let seed = ed25519_seed(secret)?;
                let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                    .map_err(|_| AuditError::Key("invalid ed25519 seed".into()))?;
                let key_id = short_id(b"", pair.public_key().as_ref());
                Ok(Signer::Ed25519 {
                    pair: Box::new(pair),
                    key_id,
                })
            }
        }
    }

    /// Reads the key from where the policy says (a mounted Secret or a variable).
    pub fn load(
        alg: CheckpointAlgorithm,
        src: &CredentialSource,
        creds: &dyn CredentialReader,
    ) -> Result<Signer, AuditError> {
        let secret = read_credential(Some(src), creds).map_err(AuditError::Key)?;
        Self::from_secret(alg, secret.expose())
    }

    /// The key's public identifier.
    pub fn key_id(&self) -> &str {
        match self {
            Signer::Hmac { key_id, .. } | Signer::Ed25519 { key_id, .. } => key_id,
        }
    }

    /// The Ed25519 public key in hex, if this is an Ed25519 signer.
    pub fn public_key_hex(&self) -> Option<String> {
        match self {
            Signer::Ed25519 { pair, .. } => Some(hex::encode(pair.public_key().as_ref())),
            Signer::Hmac { .. } => None,
        }
    }

    /// The body of a checkpoint covering record `covers_seq` with hash `covers_hash`.
    pub fn checkpoint_body(&self, chain_id: &str, covers_seq: u64, covers_hash: &[u8; 32]) -> Value {
        let covers_hash = hex::encode(covers_hash);
        let msg = message(chain_id, covers_seq, &covers_hash);
        let (alg, sig) = match self {
            Signer::Hmac { key, .. } => ("hmac-sha256", hex::encode(hmac::sign(key, msg.as_bytes()))),
            Signer::Ed25519 { pair, .. } => ("ed25519", hex::encode(pair.sign(msg.as_bytes()))),
        };
        json!({
            "alg": alg,
            "key_id": self.key_id(),
            "covers_seq": covers_seq,
            "covers_hash": covers_hash,
            "sig": sig,
        })
    }
}

/// The body of an unsigned checkpoint (no key configured): it still reveals accidental
/// truncation, not deliberate tampering.
pub fn unsigned_body(covers_seq: u64, covers_hash: &[u8; 32]) -> Value {
    json!({"alg": "none", "covers_seq": covers_seq, "covers_hash": hex::encode(covers_hash)})
}

/// Checks checkpoint signatures.
pub enum Verifier {
    /// HMAC-SHA256 with the shared secret.
    Hmac(hmac::Key),
    /// Ed25519 with the public key.
    Ed25519(Vec<u8>),
}

impl Verifier {
    /// A verifier from key material: the HMAC secret or Ed25519 seed (as [`Signer`] reads it).
    pub fn from_secret(alg: CheckpointAlgorithm, secret: &str) -> Result<Verifier, AuditError> {
        Ok(match Signer::from_secret(alg, secret)? {
            Signer::Hmac { key, .. } => Verifier::Hmac(key),
            Signer::Ed25519 { pair, .. } => Verifier::Ed25519(pair.public_key().as_ref().to_vec()),
        })
    }

    /// An Ed25519 verifier from a public key in hex.
    pub fn ed25519_public(hex_key: &str) -> Result<Verifier, AuditError> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(hex_key.trim(), &mut k)
            .map_err(|_| AuditError::Key("an ed25519 public key is 64 hex digits".into()))?;
        Ok(Verifier::Ed25519(k.to_vec()))
    }

    /// Checks a checkpoint body's signature.
    pub fn verify(&self, chain_id: &str, body: &Value) -> Result<(), String> {
        let covers_seq = body["covers_seq"]
            .as_u64()
            .ok_or("checkpoint without covers_seq")?;
        let covers_hash = body["covers_hash"]
            .as_str()
            .ok_or("checkpoint without covers_hash")?;
        let sig = hex::decode(body["sig"].as_str().ok_or("checkpoint is not signed")?)
            .map_err(|_| "checkpoint signature is not hex")?;
        let msg = message(chain_id, covers_seq, covers_hash);
        let ok = match (self, body["alg"].as_str()) {
            (Verifier::Hmac(key), Some("hmac-sha256")) => hmac::verify(key, msg.as_bytes(), &sig).is_ok(),
            (Verifier::Ed25519(pk), Some("ed25519")) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, pk)
                    .verify(msg.as_bytes(), &sig)
                    .is_ok()
            }
            (_, alg) => {
                return Err(format!(
                    "checkpoint algorithm {alg:?} does not match the key given"
                ));
            }
        };
        if ok {
            Ok(())
        } else {
            Err("bad checkpoint signature".into())
        }
    }
}

/// A new key for `alg`: the HMAC secret or Ed25519 seed (hex) to store in a Secret.
pub fn generate_secret(_alg: CheckpointAlgorithm) -> Result<String, AuditError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| AuditError::Key("the system random generator failed".into()))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_sign_and_verify() {
        for alg in [CheckpointAlgorithm::HmacSha256, CheckpointAlgorithm::Ed25519] {
            let secret = generate_secret(alg).unwrap();
            let s = Signer::from_secret(alg, &secret).unwrap();
            let body = s.checkpoint_body("chain", 7, &[3; 32]);
            let v = Verifier::from_secret(alg, &secret).unwrap();
            v.verify("chain", &body).unwrap();
            assert!(v.verify("other-chain", &body).is_err());
            let mut forged = body.clone();
            forged["covers_seq"] = 8.into();
            assert!(v.verify("chain", &forged).is_err());
            let other = Verifier::from_secret(alg, &generate_secret(alg).unwrap()).unwrap();
            assert!(other.verify("chain", &body).is_err());
        }
        let s = Signer::from_secret(CheckpointAlgorithm::Ed25519, &"11".repeat(32)).unwrap();
        let v = Verifier::ed25519_public(&s.public_key_hex().unwrap()).unwrap();
        v.verify("c", &s.checkpoint_body("c", 1, &[0; 32])).unwrap();
    }
}
