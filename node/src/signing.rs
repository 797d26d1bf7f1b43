//! Message-signing keys: Ed25519 on aws-lc-rs (the one crypto provider), with
//! domain separation. Owns key loading, key ids and the sign/verify
//! primitives; it must never sign or verify bytes without a domain context,
//! so a signature over one kind of object cannot be replayed as another.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use thiserror::Error;

/// Domain-separation context for message envelopes.
pub const MESSAGE_CONTEXT: &[u8] = b"bluewire/v1/message\0";

#[derive(Debug, Error)]
pub enum SigningError {
    #[error("signing key is not a valid Ed25519 PKCS#8 key: {0}")]
    BadKey(String),
    #[error("signing key file: {0}")]
    Pem(String),
}

/// A node's message-signing key with its CA-certified key id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load from PKCS#8 DER; the key id is derived as the PKI derives it.
    pub fn from_pkcs8(org: &str, der: &[u8]) -> Result<Self, SigningError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|e| SigningError::BadKey(e.to_string()))?;
        let key_id = crate::pki::key_id_for(org, pair.public_key().as_ref());
        Ok(Self { pair, key_id })
    }

    /// Load from a PEM "PRIVATE KEY" block.
    pub fn from_pkcs8_pem(org: &str, pem: &str) -> Result<Self, SigningError> {
        let der = pem_private_key(pem)?;
        Self::from_pkcs8(org, &der)
    }

    /// A fresh key (tests, benchmarks).
    pub fn generate(org: &str) -> Result<Self, SigningError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|e| SigningError::BadKey(e.to_string()))?;
        Self::from_pkcs8(org, doc.as_ref())
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Sign `context || bytes`.
    pub fn sign(&self, context: &[u8], bytes: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(context.len() + bytes.len());
        buf.extend_from_slice(context);
        buf.extend_from_slice(bytes);
        self.pair.sign(&buf).as_ref().to_vec()
    }
}

/// Verify an Ed25519 signature over `context || bytes`.
pub fn verify(public_key: &[u8], context: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    let mut buf = Vec::with_capacity(context.len() + bytes.len());
    buf.extend_from_slice(context);
    buf.extend_from_slice(bytes);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&buf, signature)
        .is_ok()
}

fn pem_private_key(pem: &str) -> Result<Vec<u8>, SigningError> {
    let mut rd = pem.as_bytes();
    for item in rustls_pemfile::read_all(&mut rd) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(k)) => return Ok(k.secret_pkcs8_der().to_vec()),
            Ok(_) => continue,
            Err(e) => return Err(SigningError::Pem(e.to_string())),
        }
    }
    Err(SigningError::Pem(
        "no \"PRIVATE KEY\" (PKCS#8) block found".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let sig = k.sign(MESSAGE_CONTEXT, b"hello");
        assert!(verify(&k.public_key(), MESSAGE_CONTEXT, b"hello", &sig));
        assert!(!verify(&k.public_key(), MESSAGE_CONTEXT, b"hellO", &sig));
        assert!(!verify(
            &k.public_key(),
            b"bluewire/v1/other\0",
            b"hello",
            &sig
        ));
        assert!(k.key_id().starts_with("csirt-be/"));
    }
}
