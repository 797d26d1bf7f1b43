//! Post-quantum certification of node profiles. The X.509 signatures of the
//! federation (ECDSA P-256, as every TLS stack verifies) would fall to a
//! quantum adversary, and with them the hybrid message-signing keys a node
//! certificate certifies. So the root also holds an ML-DSA-65 key: its public
//! half is in the root certificate (an extension, [`ROOT_PQ_KEY_OID`]), and
//! every node certificate carries the root's ML-DSA-65 signature over its
//! profile extension, TLS public key, serial and expiry ([`PQ_CERTIFICATION_OID`]).
//! [`check`] requires it; a profile whose keys only the classical signature
//! vouches for is refused.
//!
//! Owns the two extensions and the signed bytes; it must never accept a
//! certification that does not cover the exact profile bytes and key in the
//! certificate being verified.

use aws_lc_rs::signature::{ML_DSA_65, PqdsaKeyPair, UnparsedPublicKey};
use x509_parser::certificate::X509Certificate;

use super::PkiError;
use super::der::{der_octet_string, parse_der_octet_string, serial_text};

/// Extension of the root certificate: the root's ML-DSA-65 public key (a DER OCTET STRING).
pub const ROOT_PQ_KEY_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 2];
/// Extension of a node certificate: the root's ML-DSA-65 signature (a DER OCTET STRING)
/// over the profile extension's value, the certificate's public key, serial and expiry.
pub const PQ_CERTIFICATION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 3];

const CONTEXT: &[u8] = b"bluewire/v1/pq-certification\0";

fn extension(oid: &[u64], bytes: &[u8]) -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(oid, der_octet_string(bytes));
    ext.set_criticality(false); // webpki rejects unknown critical extensions
    ext
}

/// The root certificate's extension carrying `key`'s public half.
pub(super) fn root_key_extension(key: &PqdsaKeyPair) -> rcgen::CustomExtension {
    use aws_lc_rs::signature::KeyPair as _;
    extension(ROOT_PQ_KEY_OID, key.public_key().as_ref())
}

/// What the root's ML-DSA-65 certification of one node certificate covers: the profile
/// extension's value, the certificate's public key, its serial (so a revoked certificate
/// cannot come back under a new serial) and its expiry (nor live longer).
pub(super) struct Certified<'a> {
    pub profile_ext_value: &'a [u8],
    pub spki_der: &'a [u8],
    /// Canonical serial text ([`super::der::serial_text`]).
    pub serial: &'a str,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// `CONTEXT || not_after || len(serial) || serial || len(profile) || profile || spki` (lengths
/// and times as big-endian u32/i64): the lengths make the split unambiguous.
fn signed_bytes(c: &Certified<'_>) -> Vec<u8> {
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes();
    [
        CONTEXT,
        &c.not_after.to_be_bytes(),
        &len(c.serial.as_bytes()),
        c.serial.as_bytes(),
        &len(c.profile_ext_value),
        c.profile_ext_value,
        c.spki_der,
    ]
    .concat()
}

/// The node certificate's extension: the root's ML-DSA-65 signature over [`Certified`].
pub(super) fn certification_extension(
    root_key: &PqdsaKeyPair,
    certified: &Certified<'_>,
) -> Result<rcgen::CustomExtension, PkiError> {
    let mut sig = vec![0u8; crate::signing::ML_DSA_65_SIGNATURE_LEN];
    root_key
        .sign(&signed_bytes(certified), &mut sig)
        .map_err(|e| PkiError::Generate(format!("ML-DSA-65 certification: {e}")))?;
    Ok(extension(PQ_CERTIFICATION_OID, &sig))
}

fn has_oid(oid: &x509_parser::der_parser::oid::Oid<'_>, want: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(want.iter().copied()))
}

/// The value of the single extension `oid` in `cert` (None if absent).
fn extension_value<'a>(
    cert: &'a X509Certificate<'_>,
    oid: &[u64],
    what: &str,
) -> Result<Option<&'a [u8]>, PkiError> {
    let mut found = cert.iter_extensions().filter(|e| has_oid(&e.oid, oid));
    let Some(ext) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(PkiError::Identity(format!(
            "certificate carries the {what} extension more than once"
        )));
    }
    Ok(Some(ext.value))
}

fn octets(value: &[u8], what: &str) -> Result<Vec<u8>, PkiError> {
    parse_der_octet_string(value)
        .map(<[u8]>::to_vec)
        .map_err(|e| PkiError::Identity(format!("{what}: {e}")))
}

/// The root's ML-DSA-65 public key, from its certificate.
pub(super) fn root_key(root: &X509Certificate<'_>) -> Result<Vec<u8>, PkiError> {
    let value = extension_value(root, ROOT_PQ_KEY_OID, "root ML-DSA-65 key")?.ok_or_else(|| {
        PkiError::Identity(
            "the federation root certificate has no ML-DSA-65 key: it was made before Bluewire \
             certified signing keys post-quantum; create a new federation CA and issue the \
             organisations again"
                .into(),
        )
    })?;
    let key = octets(value, "root ML-DSA-65 key")?;
    if key.len() != crate::signing::ML_DSA_65_PUBLIC_LEN {
        return Err(PkiError::Identity(format!(
            "root ML-DSA-65 key is {} bytes, expected {}",
            key.len(),
            crate::signing::ML_DSA_65_PUBLIC_LEN
        )));
    }
    Ok(key)
}

/// Require `leaf`'s post-quantum certification by `root`: present, and a valid ML-DSA-65
/// signature of the root's key over this certificate's profile extension, public key,
/// serial and expiry.
pub(super) fn check(
    leaf: &X509Certificate<'_>,
    root: &X509Certificate<'_>,
    profile_oid: &[u64],
) -> Result<(), PkiError> {
    let root_key = root_key(root)?;
    let profile = extension_value(leaf, profile_oid, "profile")?
        .ok_or_else(|| PkiError::Identity("certificate has no profile extension".into()))?;
    let sig = extension_value(leaf, PQ_CERTIFICATION_OID, "post-quantum certification")?
        .ok_or_else(|| {
            PkiError::Identity(
                "node certificate has no post-quantum (ML-DSA-65) certification by the root: \
                 it was issued before Bluewire certified signing keys post-quantum, or not by \
                 this federation's CA; have the CA issue the organisation again"
                    .into(),
            )
        })?;
    let sig = octets(sig, "post-quantum certification")?;
    let certified = Certified {
        profile_ext_value: profile,
        spki_der: leaf.public_key().raw,
        serial: &serial_text(leaf.raw_serial()),
        not_after: leaf.validity().not_after.timestamp(),
    };
    UnparsedPublicKey::new(&ML_DSA_65, &root_key)
        .verify(&signed_bytes(&certified), &sig)
        .map_err(|_| {
            PkiError::Identity(
                "the root's ML-DSA-65 certification does not verify over this certificate's \
                 profile, key, serial and expiry: the certificate was altered or certified by \
                 another root"
                    .into(),
            )
        })
}
