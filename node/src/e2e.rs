//! End-to-end encryption to named recipient organisations with a hybrid
//! post-quantum KEM (X25519 + ML-KEM-768, on aws-lc-rs), HPKE-style: the
//! content is encrypted once under a fresh content key (AES-256-GCM), and the
//! content key is wrapped for each recipient under a key derived from both
//! shared secrets. Breaking one recipient's wrap needs breaking X25519 *and*
//! ML-KEM-768.
//!
//! Per recipient: `ss_x = X25519(ephemeral, recipient)`, `(ct, ss_k) =
//! ML-KEM-768.Encaps(recipient)`, and the wrapping key is
//! `HKDF-SHA256(salt = LABEL, ikm = ss_k || ss_x, info = LABEL || ct || eph_pk ||
//! recipient_pk || key_id || context)` — the combiner binds both ciphertexts and
//! the recipient's whole public key, as X-Wing does. A wrapping key is used for
//! one wrap only, so its nonce is fixed.
//!
//! Owns recipient keys (generation, the key file), [`seal`] and [`open`]; it must
//! never return plaintext whose tag did not verify, and never let a stanza made
//! for one context or recipient open under another.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::encoding::{AsBigEndian as _, Curve25519SeedBin};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_768};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use bluewire_proto::v1 as pb;
use thiserror::Error;

const LABEL: &[u8] = b"bluewire/v1/e2e/x25519+ml-kem-768\0";
pub const X25519_PUBLIC_LEN: usize = 32;
pub const ML_KEM_768_PUBLIC_LEN: usize = 1184;
const ML_KEM_768_SECRET_LEN: usize = 2400;
const ML_KEM_768_CIPHERTEXT_LEN: usize = 1088;
/// A hybrid encryption public key: X25519 || ML-KEM-768 encapsulation key.
pub const PUBLIC_KEY_LEN: usize = X25519_PUBLIC_LEN + ML_KEM_768_PUBLIC_LEN;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// PEM label of an encryption key file.
pub const PEM_LABEL: &str = "BLUEWIRE HYBRID KEM PRIVATE KEY";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum E2eError {
    #[error("encryption key file: {0}")]
    KeyFile(String),
    #[error("recipient key {key_id:?} is not a hybrid X25519 + ML-KEM-768 public key: {why}")]
    BadRecipient { key_id: String, why: String },
    #[error("the message is not encrypted to this organisation's key {0:?}")]
    NotARecipient(String),
    #[error("the message does not decrypt: it was altered, or made for another context or key")]
    Undecryptable,
    #[error("no recipients: an encrypted message needs at least one")]
    NoRecipients,
    #[error("encryption failed: {0}")]
    Crypto(&'static str),
}

/// An organisation's private decryption key pair with its CA-certified key id.
pub struct RecipientKey {
    x25519: PrivateKey,
    kem: DecapsulationKey,
    /// X25519 || ML-KEM-768 public key ([`PUBLIC_KEY_LEN`] bytes).
    public: Vec<u8>,
    key_id: String,
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl RecipientKey {
    /// A fresh key pair for `org`.
    pub fn generate(org: &str) -> Result<Self, E2eError> {
        let x25519 = PrivateKey::generate(&X25519).map_err(|_| E2eError::Crypto("X25519 key"))?;
        let kem = DecapsulationKey::generate(&ML_KEM_768)
            .map_err(|_| E2eError::Crypto("ML-KEM-768 key"))?;
        let ek = kem
            .encapsulation_key()
            .and_then(|ek| ek.key_bytes().map(|b| b.as_ref().to_vec()))
            .map_err(|_| E2eError::Crypto("ML-KEM-768 public key"))?;
        Self::from_parts(org, x25519, kem, &ek)
    }

    /// `kem_public` is the encapsulation key of `kem` (aws-lc cannot derive it from an
    /// imported decapsulation key, so the key file carries it, and loading checks it).
    fn from_parts(
        org: &str,
        x25519: PrivateKey,
        kem: DecapsulationKey,
        kem_public: &[u8],
    ) -> Result<Self, E2eError> {
        let x = x25519
            .compute_public_key()
            .map_err(|_| E2eError::Crypto("X25519 public key"))?;
        let public = [x.as_ref(), kem_public].concat();
        Ok(Self {
            key_id: crate::pki::key_id_for(org, &public),
            x25519,
            kem,
            public,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key ([`PUBLIC_KEY_LEN`] bytes) the CA certifies.
    pub fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }

    /// The key file: one PEM block ([`PEM_LABEL`]) of the X25519 secret (32 bytes), the
    /// ML-KEM-768 decapsulation key (2,400 bytes) and its encapsulation key (1,184 bytes).
    pub fn to_pem(&self) -> Result<String, E2eError> {
        let x: Curve25519SeedBin<'_> = self
            .x25519
            .as_be_bytes()
            .map_err(|_| E2eError::Crypto("X25519 key export"))?;
        let k = self
            .kem
            .key_bytes()
            .map_err(|_| E2eError::Crypto("ML-KEM-768 key export"))?;
        Ok(crate::pki::pem_encode(
            PEM_LABEL,
            &[x.as_ref(), k.as_ref(), &self.public[X25519_PUBLIC_LEN..]].concat(),
        ))
    }

    /// Read a key file written by [`RecipientKey::to_pem`].
    pub fn from_pem(org: &str, pem: &str) -> Result<Self, E2eError> {
        let bad = |why: &str| E2eError::KeyFile(why.to_string());
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let end = format!("-----END {PEM_LABEL}-----");
        let body = pem
            .split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .map(|(body, _)| body)
            .ok_or_else(|| bad(&format!("no \"{PEM_LABEL}\" block found")))?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let raw = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("the PEM block is not base64"))?
        };
        const LEN: usize = X25519_PUBLIC_LEN + ML_KEM_768_SECRET_LEN + ML_KEM_768_PUBLIC_LEN;
        if raw.len() != LEN {
            return Err(bad(&format!(
                "the key is {} bytes; an X25519 + ML-KEM-768 key file holds {LEN}",
                raw.len()
            )));
        }
        let (x, rest) = raw.split_at(X25519_PUBLIC_LEN);
        let (k, ek) = rest.split_at(ML_KEM_768_SECRET_LEN);
        let x25519 =
            PrivateKey::from_private_key(&X25519, x).map_err(|_| bad("unusable X25519 key"))?;
        let kem =
            DecapsulationKey::new(&ML_KEM_768, k).map_err(|_| bad("unusable ML-KEM-768 key"))?;
        // The two ML-KEM halves must belong together: encapsulate to one, decapsulate with
        // the other.
        let (ct, ss) = EncapsulationKey::new(&ML_KEM_768, ek)
            .ok()
            .and_then(|e| e.encapsulate().ok())
            .ok_or_else(|| bad("unusable ML-KEM-768 public key"))?;
        let back = kem
            .decapsulate(ct)
            .map_err(|_| bad("unusable ML-KEM-768 key"))?;
        if back.as_ref() != ss.as_ref() {
            return Err(bad(
                "the ML-KEM-768 public key does not belong to the private key",
            ));
        }
        Self::from_parts(org, x25519, kem, ek)
    }
}

/// The content key's commitment: AES-GCM does not commit to its key, so without this an
/// origin could wrap two content keys that open one ciphertext to two different plaintexts
/// for two recipients. Every recipient checks it before decrypting.
fn key_commitment(cek: &[u8]) -> Result<[u8; 32], E2eError> {
    struct Len32;
    impl aws_lc_rs::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = [0u8; 32];
    Salt::new(HKDF_SHA256, LABEL)
        .extract(cek)
        .expand(&[COMMIT_INFO], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| E2eError::Crypto("key commitment"))?;
    Ok(out)
}

const COMMIT_INFO: &[u8] = b"bluewire/v1/e2e/key-commitment\0";

/// The wrapping key for one stanza (see the module documentation).
fn wrapping_key(
    ss_kem: &[u8],
    ss_x: &[u8],
    kem_ct: &[u8],
    eph_pk: &[u8],
    recipient_pk: &[u8],
    key_id: &str,
    context: &[u8],
) -> Result<LessSafeKey, E2eError> {
    let prk = Salt::new(HKDF_SHA256, LABEL).extract(&[ss_kem, ss_x].concat());
    let info = [
        LABEL,
        kem_ct,
        eph_pk,
        recipient_pk,
        key_id.as_bytes(),
        context,
    ];
    let mut key = [0u8; KEY_LEN];
    prk.expand(&info, &AES_256_GCM)
        .and_then(|okm| okm.fill(&mut key))
        .map_err(|_| E2eError::Crypto("HKDF"))?;
    let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| E2eError::Crypto("AES key"))?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypt `plaintext` to every `(key id, hybrid public key)` in `recipients`; `context`
/// (domain separation) and `aad` (e.g. the routing metadata) are authenticated, not
/// encrypted: [`open`] needs the same.
pub fn seal(
    recipients: &[(&str, &[u8])],
    context: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<pb::Sealed, E2eError> {
    if recipients.is_empty() {
        return Err(E2eError::NoRecipients);
    }
    let rng = SystemRandom::new();
    let mut cek = [0u8; KEY_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut cek)
        .and_then(|()| rng.fill(&mut nonce))
        .map_err(|_| E2eError::Crypto("random"))?;
    let mut stanzas = Vec::with_capacity(recipients.len());
    for (key_id, public) in recipients {
        let bad = |why: &str| E2eError::BadRecipient {
            key_id: (*key_id).to_string(),
            why: why.to_string(),
        };
        if public.len() != PUBLIC_KEY_LEN {
            return Err(bad(&format!(
                "{} bytes, expected {PUBLIC_KEY_LEN}",
                public.len()
            )));
        }
        let (x_pk, k_pk) = public.split_at(X25519_PUBLIC_LEN);
        let ek = EncapsulationKey::new(&ML_KEM_768, k_pk).map_err(|_| bad("ML-KEM-768 half"))?;
        let (kem_ct, ss_kem) = ek.encapsulate().map_err(|_| bad("ML-KEM-768 half"))?;
        let eph = PrivateKey::generate(&X25519).map_err(|_| E2eError::Crypto("X25519"))?;
        let eph_pk = eph
            .compute_public_key()
            .map_err(|_| E2eError::Crypto("X25519"))?;
        let ss_x = agreement::agree(
            &eph,
            UnparsedPublicKey::new(&X25519, x_pk),
            bad("X25519 half"),
            |s| Ok(s.to_vec()),
        )?;
        let kek = wrapping_key(
            ss_kem.as_ref(),
            &ss_x,
            kem_ct.as_ref(),
            eph_pk.as_ref(),
            public,
            key_id,
            context,
        )?;
        let mut wrapped = cek.to_vec();
        kek.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(key_id.as_bytes()),
            &mut wrapped,
        )
        .map_err(|_| E2eError::Crypto("wrap"))?;
        stanzas.push(pb::SealedStanza {
            key_id: (*key_id).to_string(),
            x25519_ephemeral: eph_pk.as_ref().to_vec(),
            kem_ciphertext: kem_ct.as_ref().to_vec(),
            wrapped_key: wrapped,
        });
    }
    let content_key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &cek).map_err(|_| E2eError::Crypto("AES key"))?,
    );
    let mut ciphertext = plaintext.to_vec();
    content_key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from([context, aad].concat()),
            &mut ciphertext,
        )
        .map_err(|_| E2eError::Crypto("encrypt"))?;
    Ok(pb::Sealed {
        nonce: nonce.to_vec(),
        ciphertext,
        stanzas,
        key_commitment: key_commitment(&cek)?.to_vec(),
    })
}

/// The key ids `sealed` is encrypted to (routing metadata anyone may read).
pub fn recipients(sealed: &pb::Sealed) -> Vec<&str> {
    sealed.stanzas.iter().map(|s| s.key_id.as_str()).collect()
}

/// Decrypt `sealed` with `key`, under the `context` and `aad` it was sealed with.
pub fn open(
    key: &RecipientKey,
    context: &[u8],
    aad: &[u8],
    sealed: &pb::Sealed,
) -> Result<Vec<u8>, E2eError> {
    let stanza = sealed
        .stanzas
        .iter()
        .find(|s| s.key_id == key.key_id)
        .ok_or_else(|| E2eError::NotARecipient(key.key_id.clone()))?;
    if stanza.x25519_ephemeral.len() != X25519_PUBLIC_LEN
        || stanza.kem_ciphertext.len() != ML_KEM_768_CIPHERTEXT_LEN
        || stanza.wrapped_key.len() != KEY_LEN + TAG_LEN
        || sealed.nonce.len() != NONCE_LEN
        || sealed.ciphertext.len() < TAG_LEN
    {
        return Err(E2eError::Undecryptable);
    }
    let ss_kem = key
        .kem
        .decapsulate(Ciphertext::from(stanza.kem_ciphertext.as_slice()))
        .map_err(|_| E2eError::Undecryptable)?;
    let ss_x = agreement::agree(
        &key.x25519,
        UnparsedPublicKey::new(&X25519, &stanza.x25519_ephemeral),
        E2eError::Undecryptable,
        |s| Ok(s.to_vec()),
    )?;
    let kek = wrapping_key(
        ss_kem.as_ref(),
        &ss_x,
        &stanza.kem_ciphertext,
        &stanza.x25519_ephemeral,
        &key.public,
        &key.key_id,
        context,
    )?;
    let mut cek = stanza.wrapped_key.clone();
    let cek = kek
        .open_in_place(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(key.key_id.as_bytes()),
            &mut cek,
        )
        .map_err(|_| E2eError::Undecryptable)?;
    aws_lc_rs::constant_time::verify_slices_are_equal(
        &key_commitment(cek)?,
        &sealed.key_commitment,
    )
    .map_err(|_| E2eError::Undecryptable)?;
    let content_key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, cek).map_err(|_| E2eError::Undecryptable)?);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed.nonce);
    let mut buf = sealed.ciphertext.clone();
    let plain = content_key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from([context, aad].concat()),
            &mut buf,
        )
        .map_err(|_| E2eError::Undecryptable)?;
    Ok(plain.to_vec())
}

/// Domain separation of a message body encrypted end to end.
pub const BODY_CONTEXT: &[u8] = b"bluewire/v1/sealed-body\0";
/// At most this many recipient keys on one sealed body.
pub const MAX_STANZAS: usize = 64;

/// A sealed body is bound to its message: (origin, id). Ciphertext lifted into another
/// organisation's message (which it could sign) does not open there.
fn body_aad(c: &pb::Content) -> Vec<u8> {
    [c.origin_org.as_bytes(), b"\0", c.id.as_bytes()].concat()
}

/// Replace `c`'s body with its encryption to `recipients` ((key id, hybrid public key));
/// the plaintext is an encoded Content holding only the body.
pub fn seal_body(c: &mut pb::Content, recipients: &[(&str, &[u8])]) -> Result<(), E2eError> {
    use prost::Message as _;
    let plain = pb::Content {
        body: c.body.take(),
        ..Default::default()
    }
    .encode_to_vec();
    let sealed = seal(recipients, BODY_CONTEXT, &body_aad(c), &plain)?;
    c.body = Some(pb::content::Body::Sealed(sealed));
    Ok(())
}

/// `c` with its sealed body decrypted by `key`; `None` when the body is not sealed. The
/// decrypted body is whatever the origin encrypted: validate the result as a whole.
pub fn open_body(key: &RecipientKey, c: &pb::Content) -> Option<Result<pb::Content, E2eError>> {
    use prost::Message as _;
    let Some(pb::content::Body::Sealed(sealed)) = &c.body else {
        return None;
    };
    Some(
        open(key, BODY_CONTEXT, &body_aad(c), sealed).and_then(|plain| {
            let inner =
                pb::Content::decode(plain.as_slice()).map_err(|_| E2eError::Undecryptable)?;
            match inner.body {
                Some(pb::content::Body::Sealed(_)) | None => Err(E2eError::Undecryptable),
                body => Ok(pb::Content { body, ..c.clone() }),
            }
        }),
    )
}

/// The key among `keys` (this organisation's: the current one first, then those retired by
/// `pki rotate`) that `sealed` has a stanza for; else the first. None: no key at all.
pub fn key_for<'a>(keys: &'a [RecipientKey], sealed: &pb::Sealed) -> Option<&'a RecipientKey> {
    keys.iter()
        .find(|k| sealed.stanzas.iter().any(|s| s.key_id == k.key_id))
        .or_else(|| keys.first())
}

/// [`open_body`] with whichever of `keys` the body was encrypted to (see [`key_for`]).
/// None: not sealed, or no key at all.
pub fn open_body_with(
    keys: &[RecipientKey],
    c: &pb::Content,
) -> Option<Result<pb::Content, E2eError>> {
    let Some(pb::content::Body::Sealed(sealed)) = &c.body else {
        return None;
    };
    open_body(key_for(keys, sealed)?, c)
}

/// What every node checks of a sealed body without opening it: named recipients, each
/// with a stanza; stanzas only for them and the origin; sizes. Pure.
pub fn check_sealed(c: &pb::Content, sealed: &pb::Sealed) -> Result<(), String> {
    if c.recipients.is_empty() {
        return Err("an encrypted body needs named recipients".into());
    }
    if sealed.stanzas.is_empty() || sealed.stanzas.len() > MAX_STANZAS {
        return Err(format!(
            "an encrypted body has {} recipient keys; 1 to {MAX_STANZAS} are allowed",
            sealed.stanzas.len()
        ));
    }
    if sealed.nonce.len() != NONCE_LEN
        || sealed.ciphertext.len() < TAG_LEN
        || sealed.key_commitment.len() != 32
    {
        return Err(
            "an encrypted body with a malformed nonce, ciphertext or key commitment".into(),
        );
    }
    let org_of = |key_id: &str| key_id.rsplit_once('/').map(|(o, _)| o.to_string());
    for s in &sealed.stanzas {
        match org_of(&s.key_id) {
            Some(o) if o == c.origin_org || c.recipients.contains(&o) => {}
            _ => {
                return Err(format!(
                    "an encrypted body carries key {:?}, which belongs to no named recipient",
                    s.key_id
                ));
            }
        }
    }
    for r in &c.recipients {
        if !sealed
            .stanzas
            .iter()
            .any(|s| org_of(&s.key_id).as_deref() == Some(r.as_str()))
        {
            return Err(format!(
                "recipient {r} is named but the body is not encrypted to it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &[u8] = b"bluewire/v1/test\0";

    /// `f` with `keys` as (key id, public key) pairs.
    fn with_publics<T>(keys: &[&RecipientKey], f: impl FnOnce(&[(&str, &[u8])]) -> T) -> T {
        let publics: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| (k.key_id().to_string(), k.public_key()))
            .collect();
        let r: Vec<(&str, &[u8])> = publics
            .iter()
            .map(|(id, pk)| (id.as_str(), pk.as_slice()))
            .collect();
        f(&r)
    }

    fn sealed_to(keys: &[&RecipientKey], aad: &[u8], msg: &[u8]) -> pb::Sealed {
        with_publics(keys, |r| seal(r, CTX, aad, msg).unwrap())
    }

    #[test]
    fn every_named_recipient_opens_and_nobody_else() {
        let (a, b, c) = (
            RecipientKey::generate("org-a").unwrap(),
            RecipientKey::generate("org-b").unwrap(),
            RecipientKey::generate("org-c").unwrap(),
        );
        let s = sealed_to(&[&a, &b], b"route", b"RED: the attacker's infrastructure");
        assert_eq!(recipients(&s), vec![a.key_id(), b.key_id()]);
        for k in [&a, &b] {
            assert_eq!(
                open(k, CTX, b"route", &s).unwrap(),
                b"RED: the attacker's infrastructure"
            );
        }
        assert_eq!(
            open(&c, CTX, b"route", &s),
            Err(E2eError::NotARecipient(c.key_id().to_string()))
        );
        assert!(!s.ciphertext.windows(3).any(|w| w == b"RED"));
        assert_eq!(public_len(&a), PUBLIC_KEY_LEN);
    }

    fn public_len(k: &RecipientKey) -> usize {
        k.public_key().len()
    }

    /// Anything altered — context, metadata, ciphertext, nonce, a stanza's halves, or a
    /// stanza relabelled for another recipient — does not decrypt.
    #[test]
    fn tampering_or_another_context_does_not_decrypt() {
        let (a, b) = (
            RecipientKey::generate("org-a").unwrap(),
            RecipientKey::generate("org-b").unwrap(),
        );
        let s = sealed_to(&[&a, &b], b"route", b"secret");
        assert_eq!(
            open(&a, b"bluewire/v1/other\0", b"route", &s),
            Err(E2eError::Undecryptable)
        );
        assert_eq!(
            open(&a, CTX, b"other route", &s),
            Err(E2eError::Undecryptable)
        );
        let flips: [fn(&mut pb::Sealed); 5] = [
            |s| s.ciphertext[0] ^= 1,
            |s| s.nonce[0] ^= 1,
            |s| s.stanzas[0].x25519_ephemeral[0] ^= 1,
            |s| s.stanzas[0].kem_ciphertext[0] ^= 1,
            |s| s.stanzas[0].wrapped_key[0] ^= 1,
        ];
        for (i, flip) in flips.iter().enumerate() {
            let mut t = s.clone();
            flip(&mut t);
            assert_eq!(
                open(&a, CTX, b"route", &t),
                Err(E2eError::Undecryptable),
                "{i}"
            );
        }
        // b's stanza relabelled as a's: a cannot open it.
        let mut t = s.clone();
        t.stanzas[1].key_id = a.key_id().to_string();
        t.stanzas.remove(0);
        assert_eq!(open(&a, CTX, b"route", &t), Err(E2eError::Undecryptable));
        // Truncated or oversized fields are refused, never indexed past.
        let mut t = s.clone();
        t.stanzas[0].kem_ciphertext.pop();
        assert_eq!(open(&a, CTX, b"route", &t), Err(E2eError::Undecryptable));
        let mut t = s;
        t.ciphertext.truncate(3);
        assert_eq!(open(&a, CTX, b"route", &t), Err(E2eError::Undecryptable));
    }

    #[test]
    fn key_file_round_trip_and_bad_files() {
        let a = RecipientKey::generate("org-a").unwrap();
        let pem = a.to_pem().unwrap();
        let back = RecipientKey::from_pem("org-a", &pem).unwrap();
        assert_eq!(back.key_id(), a.key_id());
        let s = sealed_to(&[&a], b"", b"x");
        assert_eq!(open(&back, CTX, b"", &s).unwrap(), b"x");
        for bad in [
            "",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(matches!(
                RecipientKey::from_pem("org-a", bad),
                Err(E2eError::KeyFile(_))
            ));
        }
        let short = crate::pki::pem_encode(PEM_LABEL, &[0u8; 40]);
        let e = RecipientKey::from_pem("org-a", &short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3616"), "{e}");
        // A public half that is not the private key's.
        let other = RecipientKey::generate("org-a").unwrap();
        let raw = |k: &RecipientKey| {
            let pem = k.to_pem().unwrap();
            let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        };
        let mut mixed = raw(&a);
        let n = mixed.len();
        mixed[n - ML_KEM_768_PUBLIC_LEN..]
            .copy_from_slice(&raw(&other)[n - ML_KEM_768_PUBLIC_LEN..]);
        let e = RecipientKey::from_pem("org-a", &crate::pki::pem_encode(PEM_LABEL, &mixed))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn bad_recipient_keys_and_no_recipients_are_refused() {
        assert_eq!(seal(&[], CTX, b"", b"x"), Err(E2eError::NoRecipients));
        let e = seal(&[("org-a/1", &[0u8; 10][..])], CTX, b"", b"x").unwrap_err();
        assert!(matches!(e, E2eError::BadRecipient { .. }), "{e}");
    }

    fn message(origin: &str, to: &[&str]) -> pb::Content {
        pb::Content {
            id: "0190d9a8-0000-7000-8000-000000000001".into(),
            origin_org: origin.into(),
            kind: pb::Kind::FreeText as i32,
            recipients: to.iter().map(|s| s.to_string()).collect(),
            body: Some(pb::content::Body::FreeText(pb::FreeText {
                title: "RED: the attacker's infrastructure".into(),
                body: "10.0.0.1".into(),
            })),
            ..Default::default()
        }
    }

    fn seal_to(c: &mut pb::Content, keys: &[&RecipientKey]) {
        with_publics(keys, |r| seal_body(c, r).unwrap());
    }

    #[test]
    fn a_sealed_body_opens_for_its_recipients_and_only_in_its_own_message() {
        let (a, b, c) = (
            RecipientKey::generate("org-a").unwrap(),
            RecipientKey::generate("org-b").unwrap(),
            RecipientKey::generate("org-c").unwrap(),
        );
        let plain = message("org-a", &["org-b"]);
        let mut sealed = plain.clone();
        seal_to(&mut sealed, &[&a, &b]);
        let Some(pb::content::Body::Sealed(s)) = &sealed.body else {
            panic!("not sealed")
        };
        assert!(!s.ciphertext.windows(3).any(|w| w == b"RED"));
        assert_eq!(check_sealed(&sealed, s), Ok(()));
        for k in [&a, &b] {
            assert_eq!(open_body(k, &sealed), Some(Ok(plain.clone())));
        }
        assert!(matches!(
            open_body(&c, &sealed),
            Some(Err(E2eError::NotARecipient(_)))
        ));
        // Lifted into another message (another id, or another origin that signs it): no.
        for lifted in [
            pb::Content {
                id: "0190d9a8-0000-7000-8000-000000000002".into(),
                ..sealed.clone()
            },
            pb::Content {
                origin_org: "org-c".into(),
                ..sealed.clone()
            },
        ] {
            assert_eq!(open_body(&b, &lifted), Some(Err(E2eError::Undecryptable)));
        }
        // Not sealed: nothing to open.
        assert_eq!(open_body(&b, &plain), None);
    }

    #[test]
    fn a_sealed_body_names_exactly_its_recipients() {
        let (a, b, c) = (
            RecipientKey::generate("org-a").unwrap(),
            RecipientKey::generate("org-b").unwrap(),
            RecipientKey::generate("org-c").unwrap(),
        );
        let check = |to: &[&str], keys: &[&RecipientKey]| {
            let mut m = message("org-a", to);
            seal_to(&mut m, keys);
            let Some(pb::content::Body::Sealed(s)) = &m.body else {
                panic!("not sealed")
            };
            check_sealed(&m, s)
        };
        assert_eq!(check(&["org-b"], &[&b]), Ok(()));
        assert_eq!(check(&["org-b", "org-c"], &[&a, &b, &c]), Ok(()));
        let e = check(&[], &[&b]).unwrap_err();
        assert!(e.contains("named recipients"), "{e}");
        let e = check(&["org-b"], &[&b, &c]).unwrap_err();
        assert!(e.contains("belongs to no named recipient"), "{e}");
        let e = check(&["org-b", "org-c"], &[&b]).unwrap_err();
        assert!(e.contains("org-c is named"), "{e}");
        let many: Vec<RecipientKey> = (0..=MAX_STANZAS)
            .map(|_| RecipientKey::generate("org-b").unwrap())
            .collect();
        let e = check(&["org-b"], &many.iter().collect::<Vec<_>>()).unwrap_err();
        assert!(e.contains("1 to 64"), "{e}");
        let mut m = message("org-a", &["org-b"]);
        seal_to(&mut m, &[&b]);
        let Some(pb::content::Body::Sealed(s)) = &mut m.body else {
            panic!("not sealed")
        };
        s.nonce.pop();
        let s = s.clone();
        assert!(check_sealed(&m, &s).unwrap_err().contains("malformed"));
    }

    #[test]
    fn the_content_key_commitment_is_checked_before_decrypting() {
        let (a, b) = (
            RecipientKey::generate("org-a").unwrap(),
            RecipientKey::generate("org-b").unwrap(),
        );
        let s = sealed_to(&[&a, &b], b"route", b"one plaintext for everyone");
        assert_eq!(s.key_commitment.len(), 32);
        // A stanza wrapping another content key than the one committed to does not open,
        // even where its wrap is sound (the origin cannot give recipients different keys).
        let other = sealed_to(&[&a, &b], b"route", b"one plaintext for everyone");
        let mut mixed = s.clone();
        mixed.stanzas[1] = other.stanzas[1].clone();
        mixed.key_commitment = other.key_commitment.clone();
        assert_eq!(
            open(&a, CTX, b"route", &mixed),
            Err(E2eError::Undecryptable)
        );
        let mut forged = s.clone();
        forged.key_commitment[0] ^= 1;
        for k in [&a, &b] {
            assert_eq!(
                open(k, CTX, b"route", &forged),
                Err(E2eError::Undecryptable)
            );
        }
        forged.key_commitment.clear();
        assert_eq!(
            open(&a, CTX, b"route", &forged),
            Err(E2eError::Undecryptable)
        );
    }
}
