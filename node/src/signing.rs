//! Message-signing keys: hybrid Ed25519 + ML-DSA-65 on aws-lc-rs (the one crypto
//! provider), with domain separation. Owns key loading, key ids and the
//! sign/verify primitives; it must never sign or verify bytes without a domain
//! context, so a signature over one kind of object cannot be replayed as another.
//!
//! A hybrid signature verifies only when both halves verify: forging one needs
//! breaking Ed25519 *and* ML-DSA-65 (FIPS 204). Both halves sign
//! `HYBRID_LABEL || context || bytes`, so neither half is a valid signature of
//! the earlier Ed25519-only format, nor of anything signed with one algorithm.
//!
//! Wire forms (fixed lengths, so splitting is unambiguous):
//! - public key = Ed25519 (32 bytes) || ML-DSA-65 (1,952 bytes)
//! - signature  = Ed25519 (64 bytes) || ML-DSA-65 (3,309 bytes)

use aws_lc_rs::signature::{
    ED25519, Ed25519KeyPair, KeyPair, ML_DSA_65, ML_DSA_65_SIGNING, PqdsaKeyPair, UnparsedPublicKey,
};
use thiserror::Error;

/// Domain-separation context for message envelopes.
pub const MESSAGE_CONTEXT: &[u8] = b"bluewire/v1/message\0";

/// Domain-separation context for a batch of message envelopes signed at once (over
/// [`crate::merkle::statement`]).
pub const BATCH_CONTEXT: &[u8] = b"bluewire/v1/message-batch\0";

/// Prefixed to everything either half of a hybrid signature signs.
const HYBRID_LABEL: &[u8] = b"bluewire/hybrid/ed25519+ml-dsa-65\0";

pub const ED25519_PUBLIC_LEN: usize = 32;
pub const ML_DSA_65_PUBLIC_LEN: usize = 1952;
pub const ED25519_SIGNATURE_LEN: usize = 64;
pub const ML_DSA_65_SIGNATURE_LEN: usize = 3309;
/// Length of a hybrid public key.
pub const PUBLIC_KEY_LEN: usize = ED25519_PUBLIC_LEN + ML_DSA_65_PUBLIC_LEN;
/// Length of a hybrid signature.
pub const SIGNATURE_LEN: usize = ED25519_SIGNATURE_LEN + ML_DSA_65_SIGNATURE_LEN;

#[derive(Debug, Error)]
pub enum SigningError {
    #[error("signing key is not a valid {0} PKCS#8 key: {1}")]
    BadKey(&'static str, String),
    #[error("signing key file: {0}")]
    Pem(String),
}

/// A node's message-signing key pair (both halves) with its CA-certified key id.
pub struct SigningKey {
    ed: Ed25519KeyPair,
    pq: PqdsaKeyPair,
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
    /// From the two PKCS#8 DER keys; the key id is derived as the PKI derives it.
    pub fn from_pkcs8(org: &str, ed25519: &[u8], ml_dsa: &[u8]) -> Result<Self, SigningError> {
        let ed = Ed25519KeyPair::from_pkcs8(ed25519)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(ed25519))
            .map_err(|e| SigningError::BadKey("Ed25519", e.to_string()))?;
        let pq = PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, ml_dsa)
            .map_err(|e| SigningError::BadKey("ML-DSA-65", e.to_string()))?;
        Ok(Self::from_pairs(org, ed, pq))
    }

    fn from_pairs(org: &str, ed: Ed25519KeyPair, pq: PqdsaKeyPair) -> Self {
        let public = public_key_of(&ed, &pq);
        Self {
            key_id: crate::pki::key_id_for(org, &public),
            ed,
            pq,
        }
    }

    /// Load a `signing.key` file: two PEM "PRIVATE KEY" blocks, Ed25519 then ML-DSA-65.
    pub fn from_pkcs8_pem(org: &str, pem: &str) -> Result<Self, SigningError> {
        let blocks = pem_private_keys(pem)?;
        match blocks.as_slice() {
            [ed, pq] => Self::from_pkcs8(org, ed, pq),
            [_] => Err(SigningError::Pem(
                "holds one key; a signing key is a hybrid pair (Ed25519 then ML-DSA-65). It was \
                 issued before Bluewire signed with ML-DSA: have the federation CA issue the \
                 organisation again (`bluewire pki issue`)"
                    .into(),
            )),
            other => Err(SigningError::Pem(format!(
                "holds {} \"PRIVATE KEY\" blocks; expected two (Ed25519 then ML-DSA-65)",
                other.len()
            ))),
        }
    }

    /// A fresh key pair (tests, benchmarks).
    pub fn generate(org: &str) -> Result<Self, SigningError> {
        let (ed, pq) = generate_pkcs8()?;
        Self::from_pkcs8(org, &ed, &pq)
    }

    /// A key pair derived from seeds (fuzzing fixtures: the same key in every run).
    pub fn from_seeds(
        org: &str,
        ed25519_seed: &[u8; 32],
        ml_dsa_seed: &[u8; 32],
    ) -> Result<Self, SigningError> {
        let ed = Ed25519KeyPair::from_seed_unchecked(ed25519_seed)
            .map_err(|e| SigningError::BadKey("Ed25519", e.to_string()))?;
        let pq = PqdsaKeyPair::from_seed(&ML_DSA_65_SIGNING, ml_dsa_seed)
            .map_err(|e| SigningError::BadKey("ML-DSA-65", e.to_string()))?;
        Ok(Self::from_pairs(org, ed, pq))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The hybrid public key ([`PUBLIC_KEY_LEN`] bytes).
    pub fn public_key(&self) -> Vec<u8> {
        public_key_of(&self.ed, &self.pq)
    }

    /// Sign `context || bytes` with both halves ([`SIGNATURE_LEN`] bytes).
    pub fn sign(&self, context: &[u8], bytes: &[u8]) -> Vec<u8> {
        let buf = signed_bytes(context, bytes);
        let mut sig = Vec::with_capacity(SIGNATURE_LEN);
        sig.extend_from_slice(self.ed.sign(&buf).as_ref());
        sig.resize(SIGNATURE_LEN, 0);
        // Cannot fail: the buffer has the algorithm's signature length and the
        // key was validated when it was loaded.
        let n = self
            .pq
            .sign(&buf, &mut sig[ED25519_SIGNATURE_LEN..])
            .expect("ML-DSA-65 signing with a validated key into a buffer of the right size");
        debug_assert_eq!(n, ML_DSA_65_SIGNATURE_LEN);
        sig
    }
}

/// A fresh hybrid key pair as PKCS#8 DER documents (Ed25519, ML-DSA-65).
pub fn generate_pkcs8() -> Result<(Vec<u8>, Vec<u8>), SigningError> {
    let ed = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|e| SigningError::BadKey("Ed25519", e.to_string()))?;
    let pq = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING)
        .and_then(|k| k.to_pkcs8v1())
        .map_err(|e| SigningError::BadKey("ML-DSA-65", e.to_string()))?;
    Ok((ed.as_ref().to_vec(), pq.as_ref().to_vec()))
}

fn public_key_of(ed: &Ed25519KeyPair, pq: &PqdsaKeyPair) -> Vec<u8> {
    let mut public = Vec::with_capacity(PUBLIC_KEY_LEN);
    public.extend_from_slice(ed.public_key().as_ref());
    public.extend_from_slice(pq.public_key().as_ref());
    public
}

fn signed_bytes(context: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HYBRID_LABEL.len() + context.len() + bytes.len());
    buf.extend_from_slice(HYBRID_LABEL);
    buf.extend_from_slice(context);
    buf.extend_from_slice(bytes);
    buf
}

/// Verify a hybrid signature over `context || bytes`: true only when the key
/// and signature have their exact lengths and both halves verify.
pub fn verify(public_key: &[u8], context: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    if public_key.len() != PUBLIC_KEY_LEN || signature.len() != SIGNATURE_LEN {
        return false;
    }
    let (ed_pk, pq_pk) = public_key.split_at(ED25519_PUBLIC_LEN);
    let (ed_sig, pq_sig) = signature.split_at(ED25519_SIGNATURE_LEN);
    let buf = signed_bytes(context, bytes);
    UnparsedPublicKey::new(&ED25519, ed_pk)
        .verify(&buf, ed_sig)
        .is_ok()
        && UnparsedPublicKey::new(&ML_DSA_65, pq_pk)
            .verify(&buf, pq_sig)
            .is_ok()
}

fn pem_private_keys(pem: &str) -> Result<Vec<Vec<u8>>, SigningError> {
    let mut rd = pem.as_bytes();
    let mut keys = Vec::new();
    for item in rustls_pemfile::read_all(&mut rd) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(k)) => keys.push(k.secret_pkcs8_der().to_vec()),
            Ok(_) => continue,
            Err(e) => return Err(SigningError::Pem(e.to_string())),
        }
    }
    if keys.is_empty() {
        return Err(SigningError::Pem(
            "no \"PRIVATE KEY\" (PKCS#8) block found".to_string(),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let sig = k.sign(MESSAGE_CONTEXT, b"hello");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert_eq!(k.public_key().len(), PUBLIC_KEY_LEN);
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

    /// Both halves are required: a signature with either half broken, cut off
    /// or swapped for another key's half does not verify.
    #[test]
    fn both_halves_must_verify() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let other = SigningKey::generate("csirt-be").unwrap();
        let pk = k.public_key();
        let sig = k.sign(MESSAGE_CONTEXT, b"m");
        for i in [
            0,
            ED25519_SIGNATURE_LEN - 1,
            ED25519_SIGNATURE_LEN,
            SIGNATURE_LEN - 1,
        ] {
            let mut bad = sig.clone();
            bad[i] ^= 1;
            assert!(
                !verify(&pk, MESSAGE_CONTEXT, b"m", &bad),
                "flipped byte {i}"
            );
        }
        assert!(!verify(
            &pk,
            MESSAGE_CONTEXT,
            b"m",
            &sig[..ED25519_SIGNATURE_LEN]
        ));
        assert!(!verify(
            &pk[..ED25519_PUBLIC_LEN],
            MESSAGE_CONTEXT,
            b"m",
            &sig[..ED25519_SIGNATURE_LEN]
        ));
        let theirs = other.sign(MESSAGE_CONTEXT, b"m");
        let mixed_ed = [
            &theirs[..ED25519_SIGNATURE_LEN],
            &sig[ED25519_SIGNATURE_LEN..],
        ]
        .concat();
        let mixed_pq = [
            &sig[..ED25519_SIGNATURE_LEN],
            &theirs[ED25519_SIGNATURE_LEN..],
        ]
        .concat();
        assert!(!verify(&pk, MESSAGE_CONTEXT, b"m", &mixed_ed));
        assert!(!verify(&pk, MESSAGE_CONTEXT, b"m", &mixed_pq));
        // A half of ours is not an Ed25519-only signature of the earlier format.
        let ed_only =
            aws_lc_rs::signature::UnparsedPublicKey::new(&ED25519, &pk[..ED25519_PUBLIC_LEN])
                .verify(
                    &[MESSAGE_CONTEXT, b"m"].concat(),
                    &sig[..ED25519_SIGNATURE_LEN],
                );
        assert!(ed_only.is_err());
    }

    #[test]
    fn key_file_round_trip_and_old_single_key_files_are_explained() {
        let (ed, pq) = generate_pkcs8().unwrap();
        let pem = |der: &[u8]| crate::pki::pem_encode("PRIVATE KEY", der);
        let both = format!("{}{}", pem(&ed), pem(&pq));
        let k = SigningKey::from_pkcs8_pem("csirt-be", &both).unwrap();
        assert_eq!(
            k.key_id(),
            SigningKey::from_pkcs8("csirt-be", &ed, &pq)
                .unwrap()
                .key_id()
        );
        let err = SigningKey::from_pkcs8_pem("csirt-be", &pem(&ed))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pki issue"), "{err}");
        let err = SigningKey::from_pkcs8_pem("csirt-be", &format!("{}{}", pem(&pq), pem(&ed)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Ed25519"), "{err}");
        assert!(SigningKey::from_pkcs8_pem("csirt-be", "nothing").is_err());
    }

    #[test]
    fn seeded_keys_are_stable() {
        let a = SigningKey::from_seeds("org-a", &[1; 32], &[2; 32]).unwrap();
        let b = SigningKey::from_seeds("org-a", &[1; 32], &[2; 32]).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let c = SigningKey::from_seeds("org-a", &[1; 32], &[3; 32]).unwrap();
        assert_ne!(a.key_id(), c.key_id());
    }
}
