//! Low-level certificate encoding for the PKI: PEM and DER parsing, the DER UTF8String the
//! profile extension is wrapped in, PEM encoding, serial-number text, and checking an
//! X.509 signature with aws-lc-rs (x509-parser 0.17 only verifies with ring).
//!
//! Owns: the byte-level formats, nothing about what they mean.
//!
//! It must never: decide whether a certificate is trusted or whom it names (that is
//! `profile`), accept trailing bytes after a certificate, or panic on malformed input (every
//! parse failure is a [`PkiError`]).

use aws_lc_rs::signature as lc_sig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::PkiError;

/// Canonical serial text: lowercase hex of the magnitude, no leading zero bytes.
pub(super) fn serial_text(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    if start == raw.len() {
        "00".to_string()
    } else {
        hex::encode(&raw[start..])
    }
}

pub(super) fn normalize_serial(s: &str) -> Result<String, PkiError> {
    let t = s
        .trim()
        .trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase();
    let raw = hex::decode(if t.len() % 2 == 1 { format!("0{t}") } else { t })
        .map_err(|_| PkiError::Invalid(format!("serial {s:?} is not hexadecimal")))?;
    Ok(serial_text(&raw))
}

pub(super) fn der_utf8string(s: &str) -> Vec<u8> {
    der_tlv(0x0c, s.as_bytes())
}

/// A DER OCTET STRING holding `bytes`.
pub(super) fn der_octet_string(bytes: &[u8]) -> Vec<u8> {
    der_tlv(0x04, bytes)
}

fn der_tlv(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = bytes.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(bytes);
    out
}

pub(super) fn parse_der_utf8string(der: &[u8]) -> Result<&str, PkiError> {
    let body = parse_der_tlv(0x0c, "UTF8String", der)?;
    std::str::from_utf8(body).map_err(|_| {
        PkiError::Profile("extension value is not a DER UTF8String (invalid UTF-8)".into())
    })
}

pub(super) fn parse_der_octet_string(der: &[u8]) -> Result<&[u8], PkiError> {
    parse_der_tlv(0x04, "OCTET STRING", der)
}

/// The contents of a single DER element with `tag` that is all of `der` (definite length).
fn parse_der_tlv<'a>(tag: u8, what: &str, der: &'a [u8]) -> Result<&'a [u8], PkiError> {
    let bad = |why: &str| PkiError::Profile(format!("extension value is not a DER {what} ({why})"));
    let (&t, rest) = der.split_first().ok_or_else(|| bad("empty"))?;
    if t != tag {
        return Err(bad("wrong tag"));
    }
    let (&l0, rest) = rest.split_first().ok_or_else(|| bad("missing length"))?;
    let (len, body) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad("bad length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if body.len() != len {
        return Err(bad("length mismatch"));
    }
    Ok(body)
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = match chunk.len() {
            3 => (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]),
            2 => (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8),
            _ => u32::from(chunk[0]) << 16,
        };
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// All `CERTIFICATE` blocks in a PEM string (at least one).
pub fn load_certs_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(format!("malformed certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Pem(
            "no \"BEGIN CERTIFICATE\" block found; pass a PEM certificate file (e.g. node.crt, ca.crt)"
                .into(),
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM string.
pub fn load_key_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| PkiError::Pem(format!("malformed private key PEM: {e}")))?
        .ok_or_else(|| {
            PkiError::Pem(
                "no private key block found; pass a PEM \"PRIVATE KEY\" file (e.g. node.key)"
                    .into(),
            )
        })
}

pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Cert(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::Cert(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

pub(super) fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    load_certs_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Pem("no certificate".into()))
}

/// A DER certificate's validity as unix milliseconds: (notBefore, notAfter).
pub fn validity_ms(der: &[u8]) -> Result<(i64, i64), PkiError> {
    let v = parse_cert(der)?.validity().clone();
    let ms = |t: x509_parser::time::ASN1Time| t.timestamp().saturating_mul(1000);
    Ok((ms(v.not_before), ms(v.not_after)))
}

/// Lowercase hex of a DER certificate's serial number.
pub fn serial_hex(der: &[u8]) -> Result<String, PkiError> {
    Ok(serial_text(parse_cert(der)?.raw_serial()))
}

pub(super) fn verify_signed(
    signer: &SubjectPublicKeyInfo<'_>,
    alg: &AlgorithmIdentifier<'_>,
    signature: &[u8],
    tbs: &[u8],
) -> Result<(), PkiError> {
    use x509_parser::oid_registry as o;
    let sig_oid = &alg.algorithm;
    let curve = || {
        signer
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
    };
    let p256 = || curve().is_some_and(|c| c == o::OID_EC_P256);
    let p384 = || curve().is_some_and(|c| c == o::OID_NIST_EC_P384);
    let v: &'static dyn lc_sig::VerificationAlgorithm = if *sig_oid == o::OID_SIG_ECDSA_WITH_SHA256
    {
        if p256() {
            &lc_sig::ECDSA_P256_SHA256_ASN1
        } else if p384() {
            &lc_sig::ECDSA_P384_SHA256_ASN1
        } else {
            return Err(PkiError::Signature("unsupported EC curve".into()));
        }
    } else if *sig_oid == o::OID_SIG_ECDSA_WITH_SHA384 {
        if p256() {
            &lc_sig::ECDSA_P256_SHA384_ASN1
        } else if p384() {
            &lc_sig::ECDSA_P384_SHA384_ASN1
        } else {
            return Err(PkiError::Signature("unsupported EC curve".into()));
        }
    } else if *sig_oid == o::OID_SIG_ED25519 {
        &lc_sig::ED25519
    } else if *sig_oid == o::OID_PKCS1_SHA256WITHRSA {
        &lc_sig::RSA_PKCS1_2048_8192_SHA256
    } else if *sig_oid == o::OID_PKCS1_SHA384WITHRSA {
        &lc_sig::RSA_PKCS1_2048_8192_SHA384
    } else if *sig_oid == o::OID_PKCS1_SHA512WITHRSA {
        &lc_sig::RSA_PKCS1_2048_8192_SHA512
    } else {
        return Err(PkiError::Signature(format!(
            "unsupported signature algorithm {sig_oid}"
        )));
    };
    lc_sig::UnparsedPublicKey::new(v, &signer.subject_public_key.data)
        .verify(tbs, signature)
        .map_err(|_| PkiError::Signature("signature does not verify with the issuer's key".into()))
}
