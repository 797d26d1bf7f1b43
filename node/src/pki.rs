//! Federation PKI: the federation root CA, organisation bundles (node TLS
//! identity, message-signing key, organisation CA), member certificates, the
//! CA-asserted profile extension, CRLs, and deciding *who* a verified TLS peer
//! is.
//!
//! This module owns certificate issuance, the on-disk layout of CA and bundle
//! directories, and the mapping "verified certificate chain → [`PeerIdentity`]".
//! It must never take an organisation's attributes from anything the peer says
//! about itself: only from the profile extension inside a certificate whose
//! signature chains to the federation root. It must never overwrite an existing
//! CA key, and never write private keys readable by other users.
//!
//! Chain *validation* (validity period, key usages, EKUs, path building) is the
//! job of rustls/webpki; [`identity_from_chain`] runs after that and re-checks
//! the signatures it relies on, so a misconfigured verifier cannot turn an
//! organisation CA into a node or one organisation into another.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use aws_lc_rs::signature::{self as lc_sig, Ed25519KeyPair, KeyPair as _};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// OID of the Bluewire profile extension (non-critical).
///
/// `1.3.6.1.4.1.59999` is a *private enterprise arc used as a placeholder*
/// (not registered to Bluewire); `.7.1` = Bluewire / certificate profile v1.
/// The extnValue is a DER UTF8String holding the JSON of a [`CertProfile`].
/// Replace with a registered PEN before any production federation.
pub const PROFILE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 1];

/// Validity of a federation root certificate.
const ROOT_VALIDITY_DAYS: i64 = 3650;
/// Longest validity accepted for organisation and user certificates.
const MAX_VALIDITY_DAYS: u32 = 3650;
/// Issued certificates start slightly in the past to tolerate clock skew.
const BACKDATE: Duration = Duration::minutes(5);
/// A CRL promises the next one within this period.
const CRL_NEXT_UPDATE: Duration = Duration::days(7);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("{path}: {source} (check that the path exists and is readable/writable by this user)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} already exists; refusing to overwrite a CA key. Use an empty directory, or move the old key away if you really mean to replace the federation root"
    )]
    AlreadyExists(PathBuf),
    #[error("PEM: {0}")]
    Pem(String),
    #[error(
        "certificate could not be parsed: {0} (is it a DER/PEM X.509 certificate issued by the federation CA?)"
    )]
    Cert(String),
    #[error("profile extension: {0}")]
    Profile(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("peer identity rejected: {0}")]
    Identity(String),
    #[error("CRL: {0}")]
    Crl(String),
    #[error(
        "CA state {path}: {msg} (restore issued.json from backup or re-create the CA directory)"
    )]
    Index { path: PathBuf, msg: String },
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Generate(format!("{what}: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Profile types
// ---------------------------------------------------------------------------

/// The levels of the federation an organisation takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Technical,
    Operational,
    Political,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Technical, Level::Operational, Level::Political];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Technical => "technical",
            Level::Operational => "operational",
            Level::Political => "political",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                PkiError::Invalid(format!(
                    "unknown level {s:?}; expected one of: technical, operational, political"
                ))
            })
    }
}

/// A message-signing public key certified by the federation CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedKey {
    pub key_id: String,
    /// Ed25519 raw 32-byte public key, lowercase hex.
    pub public_key_hex: String,
}

/// What the federation CA asserts about an organisation. Carried inside node
/// and org-CA certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgProfile {
    /// Organisation id, e.g. `csirt-be`: lowercase `[a-z0-9-]`, 2..=64 chars.
    pub org: String,
    /// Two uppercase letters: an ISO country code or `EU`.
    pub country: String,
    /// `csirt`, `liaison`, `eu-body`, `ministry`, `military`, `sectoral`, or another lowercase word.
    pub org_type: String,
    pub levels: Vec<Level>,
    #[serde(default)]
    pub sectors: Vec<String>,
    /// e.g. `EU RESTRICTED`.
    #[serde(default)]
    pub accreditations: Vec<String>,
    /// `https://host:port` of the node.
    pub endpoint: String,
    #[serde(default)]
    pub signing_keys: Vec<CertifiedKey>,
}

impl OrgProfile {
    /// Check every field; the error says which one is wrong and what is expected.
    pub fn validate(&self) -> Result<(), PkiError> {
        validate_org(&self.org)?;
        let c = &self.country;
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(PkiError::Invalid(format!(
                "country {c:?} for organisation {:?} must be two uppercase letters (e.g. \"BE\", or \"EU\" for EU bodies)",
                self.org
            )));
        }
        let t = &self.org_type;
        let t_ok = !t.is_empty()
            && t.len() <= 32
            && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            && !t.starts_with('-')
            && !t.ends_with('-');
        if !t_ok {
            return Err(PkiError::Invalid(format!(
                "organisation type {t:?} must be one lowercase word such as csirt, liaison, eu-body, ministry, military or sectoral"
            )));
        }
        if self.levels.is_empty() {
            return Err(PkiError::Invalid(format!(
                "organisation {:?} must take part in at least one level (technical, operational, political)",
                self.org
            )));
        }
        for (what, list) in [
            ("sector", &self.sectors),
            ("accreditation", &self.accreditations),
        ] {
            for s in list.iter() {
                check_label(what, s)?;
            }
        }
        endpoint_host(&self.endpoint)?;
        for k in &self.signing_keys {
            let raw = hex::decode(&k.public_key_hex).map_err(|_| {
                PkiError::Invalid(format!(
                    "signing key {:?}: public_key_hex is not hex",
                    k.key_id
                ))
            })?;
            if raw.len() != 32 {
                return Err(PkiError::Invalid(format!(
                    "signing key {:?}: an Ed25519 public key is 32 bytes, got {}",
                    k.key_id,
                    raw.len()
                )));
            }
            if k.key_id != key_id_for(&self.org, &raw) {
                return Err(PkiError::Invalid(format!(
                    "signing key id {:?} does not match its public key (expected {:?})",
                    k.key_id,
                    key_id_for(&self.org, &raw)
                )));
            }
        }
        Ok(())
    }
}

/// Role of a member (user) certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserRole {
    Analyst,
    Operator,
    SocTool,
}

impl UserRole {
    pub const ALL: [UserRole; 3] = [UserRole::Analyst, UserRole::Operator, UserRole::SocTool];

    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Analyst => "analyst",
            UserRole::Operator => "operator",
            UserRole::SocTool => "soc-tool",
        }
    }
}

impl fmt::Display for UserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UserRole {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                PkiError::Invalid(format!(
                    "unknown user role {s:?}; expected one of: analyst, operator, soc-tool"
                ))
            })
    }
}

/// The profile extension's payload (JSON, wrapped in a DER UTF8String as the extnValue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CertProfile {
    Node(OrgProfile),
    OrgCa(OrgProfile),
    User {
        org: String,
        name: String,
        role: UserRole,
    },
}

/// Who is on the other end of a verified TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// `serial` = lowercase hex of the leaf's serial.
    Node { profile: OrgProfile, serial: String },
    User {
        org: String,
        name: String,
        role: UserRole,
        serial: String,
        org_ca_serial: String,
    },
}

impl PeerIdentity {
    /// The organisation this peer speaks for.
    pub fn org(&self) -> &str {
        match self {
            PeerIdentity::Node { profile, .. } => &profile.org,
            PeerIdentity::User { org, .. } => org,
        }
    }
}

// ---------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------

/// Organisation ids: lowercase `[a-z0-9-]`, 2..=64 chars, no leading/trailing `-`.
pub fn validate_org(org: &str) -> Result<(), PkiError> {
    let ok_chars = org
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(2..=64).contains(&org.len()) || !ok_chars || org.starts_with('-') || org.ends_with('-') {
        return Err(PkiError::Invalid(format!(
            "organisation id {org:?} is not valid: use 2 to 64 characters from lowercase a-z, digits 0-9 and '-', not starting or ending with '-' (e.g. \"csirt-be\")"
        )));
    }
    Ok(())
}

fn check_label(what: &str, s: &str) -> Result<(), PkiError> {
    if s.trim().is_empty() || s.len() > 128 || s.chars().any(char::is_control) || s.trim() != s {
        return Err(PkiError::Invalid(format!(
            "{what} {s:?} must be 1 to 128 printable characters without leading/trailing spaces"
        )));
    }
    Ok(())
}

/// The host part of an `https://host[:port][/…]` endpoint.
fn endpoint_host(endpoint: &str) -> Result<String, PkiError> {
    let bad = |why: &str| {
        PkiError::Invalid(format!(
            "endpoint {endpoint:?} {why}; expected https://HOST:PORT, e.g. https://127.0.0.1:7443 or https://node.csirt.example:7443"
        ))
    };
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (h, _) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        h
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.parse::<IpAddr>().is_err()
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad(
            "has a host that is neither an IP address nor a DNS name",
        ));
    }
    Ok(host.to_ascii_lowercase())
}

fn validate_user_name(name: &str) -> Result<(), PkiError> {
    check_label("user name", name)
}

fn validity(days: u32) -> Result<Duration, PkiError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(PkiError::Invalid(format!(
            "validity of {days} days is out of range; choose 1 to {MAX_VALIDITY_DAYS} days"
        )));
    }
    Ok(Duration::days(i64::from(days)))
}

// ---------------------------------------------------------------------------
// Small encoding helpers
// ---------------------------------------------------------------------------

/// `"<org>/"` + first 16 hex chars of SHA-256(public key).
pub fn key_id_for(org: &str, public_key: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key);
    let h = hex::encode(d.as_ref());
    format!("{org}/{}", &h[..16])
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    if b[0] == 0 {
        b[0] = 0x01; // keep a fixed 16-byte length
    }
    SerialNumber::from_slice(&b)
}

/// Canonical serial text: lowercase hex of the magnitude, no leading zero bytes.
fn serial_text(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    if start == raw.len() {
        "00".to_string()
    } else {
        hex::encode(&raw[start..])
    }
}

fn normalize_serial(s: &str) -> Result<String, PkiError> {
    let t = s
        .trim()
        .trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase();
    let raw = hex::decode(if t.len() % 2 == 1 { format!("0{t}") } else { t })
        .map_err(|_| PkiError::Invalid(format!("serial {s:?} is not hexadecimal")))?;
    Ok(serial_text(&raw))
}

fn der_utf8string(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = vec![0x0c];
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

fn parse_der_utf8string(der: &[u8]) -> Result<&str, PkiError> {
    let bad =
        |why: &str| PkiError::Profile(format!("extension value is not a DER UTF8String ({why})"));
    let (&tag, rest) = der.split_first().ok_or_else(|| bad("empty"))?;
    if tag != 0x0c {
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
    std::str::from_utf8(body).map_err(|_| bad("invalid UTF-8"))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
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

fn fmt_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// ---------------------------------------------------------------------------
// PEM / DER parsing
// ---------------------------------------------------------------------------

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

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Cert(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::Cert(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    load_certs_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Pem("no certificate".into()))
}

/// Lowercase hex of a DER certificate's serial number.
pub fn serial_hex(der: &[u8]) -> Result<String, PkiError> {
    Ok(serial_text(parse_cert(der)?.raw_serial()))
}

fn is_profile_oid(oid: &x509_parser::der_parser::oid::Oid<'_>) -> bool {
    oid.iter()
        .is_some_and(|it| it.eq(PROFILE_OID.iter().copied()))
}

fn profile_of(cert: &X509Certificate<'_>) -> Result<Option<CertProfile>, PkiError> {
    let mut found = cert.iter_extensions().filter(|e| is_profile_oid(&e.oid));
    let Some(ext) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(PkiError::Profile(
            "certificate carries the profile extension more than once".into(),
        ));
    }
    let json = parse_der_utf8string(ext.value)?;
    let p: CertProfile = serde_json::from_str(json)
        .map_err(|e| PkiError::Profile(format!("JSON payload is not a valid profile: {e}")))?;
    Ok(Some(p))
}

/// Parse the CA-asserted profile from a DER certificate (None if the extension is absent).
pub fn cert_profile(der: &[u8]) -> Result<Option<CertProfile>, PkiError> {
    profile_of(&parse_cert(der)?)
}

fn profile_extension(p: &CertProfile) -> Result<rcgen::CustomExtension, PkiError> {
    let json = serde_json::to_string(p)
        .map_err(|e| PkiError::Profile(format!("cannot encode profile: {e}")))?;
    let mut ext = rcgen::CustomExtension::from_oid_content(PROFILE_OID, der_utf8string(&json));
    ext.set_criticality(false); // webpki rejects unknown critical extensions
    Ok(ext)
}

// ---------------------------------------------------------------------------
// Signature verification (aws-lc-rs; x509-parser 0.17 only verifies with ring)
// ---------------------------------------------------------------------------

fn verify_signed(
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

/// `child` names `issuer` as its issuer and carries a valid signature by it.
fn check_issued_by(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    what: &str,
) -> Result<(), PkiError> {
    if child.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(PkiError::Identity(format!(
            "{what}: issuer \"{}\" is not \"{}\"",
            child.issuer(),
            issuer.subject()
        )));
    }
    verify_signed(
        issuer.public_key(),
        &child.signature_algorithm,
        &child.signature_value.data,
        child.tbs_certificate.as_ref(),
    )
    .map_err(|e| PkiError::Identity(format!("{what}: {e}")))
}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/// Decide the identity of a peer whose chain rustls ALREADY verified against
/// the federation root (`chain[0]` = leaf, rest = intermediates presented by
/// the peer). Exact copies of the root in the presented chain are ignored.
///
/// - Node profile, no intermediate, issued (and signed) by the root → `Node`.
/// - User profile, exactly one intermediate with an OrgCa profile of the same
///   organisation that is signed by the root and signed the leaf → `User`.
/// - Anything else (an org CA vouching for a node, org mismatch, a CA
///   certificate as leaf, foreign root, …) → [`PkiError::Identity`].
pub fn identity_from_chain(
    chain: &[CertificateDer<'_>],
    root_der: &[u8],
) -> Result<PeerIdentity, PkiError> {
    let root = parse_cert(root_der)
        .map_err(|e| PkiError::Identity(format!("federation root certificate: {e}")))?;
    let (leaf_der, rest) = chain
        .split_first()
        .ok_or_else(|| PkiError::Identity("peer presented no certificate".into()))?;
    let intermediates: Vec<&CertificateDer<'_>> =
        rest.iter().filter(|c| c.as_ref() != root_der).collect();
    let leaf = parse_cert(leaf_der).map_err(|e| PkiError::Identity(format!("leaf: {e}")))?;
    if leaf.is_ca() {
        return Err(PkiError::Identity(
            "leaf certificate is a CA certificate; a CA cannot be a TLS peer".into(),
        ));
    }
    let serial = serial_text(leaf.raw_serial());
    let profile = profile_of(&leaf)
        .map_err(|e| PkiError::Identity(format!("leaf: {e}")))?
        .ok_or_else(|| {
            PkiError::Identity(
                "leaf certificate has no Bluewire profile extension; it was not issued by this federation's tooling".into(),
            )
        })?;
    match profile {
        CertProfile::Node(profile) => {
            if !intermediates.is_empty() {
                return Err(PkiError::Identity(format!(
                    "node certificate for {:?} was presented with an intermediate; node certificates must be issued directly by the federation root (an organisation CA can never vouch for a node)",
                    profile.org
                )));
            }
            check_issued_by(&leaf, &root, "node certificate")?;
            profile
                .validate()
                .map_err(|e| PkiError::Identity(format!("node profile: {e}")))?;
            Ok(PeerIdentity::Node { profile, serial })
        }
        CertProfile::User { org, name, role } => {
            let [ca_der] = intermediates.as_slice() else {
                return Err(PkiError::Identity(format!(
                    "user certificate for {name:?} must be presented with exactly one organisation CA certificate, got {}",
                    intermediates.len()
                )));
            };
            let ca = parse_cert(ca_der)
                .map_err(|e| PkiError::Identity(format!("organisation CA: {e}")))?;
            let ca_profile =
                profile_of(&ca).map_err(|e| PkiError::Identity(format!("organisation CA: {e}")))?;
            let Some(CertProfile::OrgCa(ca_org)) = ca_profile else {
                return Err(PkiError::Identity(
                    "the intermediate certificate is not an organisation CA of this federation"
                        .into(),
                ));
            };
            if !ca.is_ca() {
                return Err(PkiError::Identity(
                    "the organisation CA certificate lacks CA basic constraints".into(),
                ));
            }
            if ca_org.org != org {
                return Err(PkiError::Identity(format!(
                    "user certificate claims organisation {org:?} but was issued by the CA of {:?}",
                    ca_org.org
                )));
            }
            check_issued_by(&ca, &root, "organisation CA")?;
            check_issued_by(&leaf, &ca, "user certificate")?;
            validate_org(&org).map_err(|e| PkiError::Identity(e.to_string()))?;
            Ok(PeerIdentity::User {
                org,
                name,
                role,
                serial,
                org_ca_serial: serial_text(ca.raw_serial()),
            })
        }
        CertProfile::OrgCa(p) => Err(PkiError::Identity(format!(
            "peer presented the organisation CA certificate of {:?} as its own; use a node or user certificate",
            p.org
        ))),
    }
}

// ---------------------------------------------------------------------------
// CRL
// ---------------------------------------------------------------------------

/// A parsed, signature-checked CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlInfo {
    /// Revoked serials, lowercase hex (same form as [`serial_hex`]).
    pub serials: Vec<String>,
    pub crl_number: Option<String>,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// Parse a CA-signed CRL PEM, verify issuer and signature against the root.
pub fn parse_crl(crl_pem: &str, root_der: &[u8]) -> Result<CrlInfo, PkiError> {
    let der = rustls_pemfile::crls(&mut crl_pem.as_bytes())
        .next()
        .ok_or_else(|| {
            PkiError::Crl(
                "no \"BEGIN X509 CRL\" block found; pass crl.pem from the federation CA directory"
                    .into(),
            )
        })?
        .map_err(|e| PkiError::Crl(format!("malformed CRL PEM: {e}")))?;
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| PkiError::Crl(format!("cannot parse CRL: {e}")))?;
    let root = parse_cert(root_der)?;
    if crl.issuer().as_raw() != root.subject().as_raw() {
        return Err(PkiError::Crl(format!(
            "CRL issued by \"{}\", not by the federation root \"{}\"; fetch the CRL from your own federation CA",
            crl.issuer(),
            root.subject()
        )));
    }
    verify_signed(
        root.public_key(),
        &crl.signature_algorithm,
        &crl.signature_value.data,
        crl.tbs_cert_list.as_ref(),
    )
    .map_err(|e| {
        PkiError::Crl(format!(
            "{e}; the CRL was not signed by the federation root"
        ))
    })?;
    Ok(CrlInfo {
        serials: crl
            .iter_revoked_certificates()
            .map(|r| serial_text(r.raw_serial()))
            .collect(),
        crl_number: crl.crl_number().map(|n| n.to_str_radix(16)),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
    })
}

/// CRL: parse a CA-signed CRL PEM, verify its signature against the root, and
/// return the revoked serials (lowercase hex).
pub fn crl_serials(crl_pem: &str, root_der: &[u8]) -> Result<Vec<String>, PkiError> {
    Ok(parse_crl(crl_pem, root_der)?.serials)
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Write via a temp file + rename; `mode` applies on Unix (0600 for keys).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let res = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

fn read_file(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_err(path))
}

fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

// ---------------------------------------------------------------------------
// Federation CA
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuedKind {
    Node,
    OrgCa,
}

/// One row of `issued.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub serial: String,
    pub org: String,
    pub kind: IssuedKind,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Unix seconds of revocation, if revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CaIndex {
    #[serde(default)]
    issued: Vec<IssuedCert>,
    #[serde(default)]
    crl_number: u64,
}

/// Federation root CA. Files in a directory: `ca.crt`, `ca.key` (0600),
/// `issued.json` (index of issued certs and revocations), `crl.pem`.
pub struct FederationCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    index: Mutex<CaIndex>,
    crl_pem: String,
}

impl fmt::Debug for FederationCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederationCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CA_INDEX: &str = "issued.json";
const CA_CRL: &str = "crl.pem";

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn base_params(not_after: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = OffsetDateTime::now_utc() - BACKDATE;
    p.not_after = not_after;
    p.serial_number = Some(random_serial());
    p.distinguished_name = DistinguishedName::new();
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

fn not_after_of(cert: &X509Certificate<'_>) -> OffsetDateTime {
    cert.validity().not_after.to_datetime()
}

impl FederationCa {
    /// A new root: ECDSA P-256, CN = `name`, valid 10 years, path length 1.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        check_label("federation CA name", name)?;
        let key = KeyPair::generate().map_err(gen_err("root key"))?;
        let mut params =
            base_params(OffsetDateTime::now_utc() + Duration::days(ROOT_VALIDITY_DAYS));
        params.use_authority_key_identifier_extension = false;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Bluewire federation");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = ca_key_usages();
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("root certificate"))?;
        let mut ca = FederationCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
            index: Mutex::new(CaIndex::default()),
            crl_pem: String::new(),
        };
        ca.crl_pem = ca.make_crl()?;
        Ok(ca)
    }

    /// Write `ca.crt`, `ca.key` (0600), `issued.json`, `crl.pem`. Refuses to
    /// replace an existing *different* `ca.key`; saving the same CA again
    /// (after issuing or revoking) just updates the index and CRL.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        ensure_dir(dir)?;
        let key_path = dir.join(CA_KEY);
        let key_pem = self.key.serialize_pem();
        match fs::read_to_string(&key_path) {
            Ok(existing) if existing == key_pem => {}
            Ok(_) => return Err(PkiError::AlreadyExists(key_path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_file(&key_path, key_pem.as_bytes(), 0o600)?;
            }
            Err(e) => return Err(io_err(&key_path)(e)),
        }
        write_file(&dir.join(CA_CRT), self.cert_pem.as_bytes(), 0o644)?;
        let json = {
            let idx = self.lock_index();
            serde_json::to_string_pretty(&*idx).map_err(|e| PkiError::Index {
                path: dir.join(CA_INDEX),
                msg: e.to_string(),
            })?
        };
        write_file(&dir.join(CA_INDEX), json.as_bytes(), 0o644)?;
        write_file(&dir.join(CA_CRL), self.crl_pem.as_bytes(), 0o644)
    }

    /// Load a CA directory written by [`FederationCa::save`].
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_pem = read_file(&dir.join(CA_CRT))?;
        let key_pem = read_file(&dir.join(CA_KEY))?;
        let cert_der = first_cert_der(&cert_pem)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            PkiError::Pem(format!(
                "{}: not a usable CA key: {e}",
                dir.join(CA_KEY).display()
            ))
        })?;
        {
            let cert = parse_cert(&cert_der)?;
            if cert.public_key().subject_public_key.data.as_ref()
                != rcgen::PublicKeyData::der_bytes(&key)
            {
                return Err(PkiError::Invalid(format!(
                    "{} does not belong to {}; the CA directory is mixed up",
                    dir.join(CA_KEY).display(),
                    dir.join(CA_CRT).display()
                )));
            }
            if !cert.is_ca() {
                return Err(PkiError::Cert(format!(
                    "{} is not a CA certificate",
                    dir.join(CA_CRT).display()
                )));
            }
        }
        let index_path = dir.join(CA_INDEX);
        let index: CaIndex = match fs::read_to_string(&index_path) {
            Ok(s) => serde_json::from_str(&s).map_err(|e| PkiError::Index {
                path: index_path.clone(),
                msg: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CaIndex::default(),
            Err(e) => return Err(io_err(&index_path)(e)),
        };
        let mut ca = FederationCa {
            cert_pem,
            cert_der,
            key,
            index: Mutex::new(index),
            crl_pem: String::new(),
        };
        ca.crl_pem = match fs::read_to_string(dir.join(CA_CRL)) {
            Ok(s) => s,
            Err(_) => ca.make_crl()?,
        };
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The current CRL (PEM); an empty CRL until something is revoked.
    pub fn crl_pem(&self) -> &str {
        &self.crl_pem
    }

    /// A copy of the issued-certificate index.
    pub fn issued(&self) -> Vec<IssuedCert> {
        self.lock_index().issued.clone()
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, CaIndex> {
        // The index is plain data; a panic elsewhere cannot leave it half-updated.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(gen_err("root issuer"))
    }

    fn root_not_after(&self) -> Result<OffsetDateTime, PkiError> {
        Ok(not_after_of(&parse_cert(&self.cert_der)?))
    }

    /// Issue an organisation's node TLS certificate, message-signing key and
    /// organisation CA. `req.profile.signing_keys` is replaced by the fresh key.
    pub fn issue_org(&self, req: &OrgRequest) -> Result<OrgBundle, PkiError> {
        let mut profile = req.profile.clone();
        profile.signing_keys.clear();
        profile.validate()?;
        let not_after =
            (OffsetDateTime::now_utc() + validity(req.validity_days)?).min(self.root_not_after()?);
        let issuer = self.issuer()?;

        // Message-signing key.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| PkiError::Generate(format!("Ed25519 signing key: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| PkiError::Generate(format!("Ed25519 signing key: {e}")))?;
        let public = pair.public_key().as_ref();
        let signing_key = CertifiedKey {
            key_id: key_id_for(&profile.org, public),
            public_key_hex: hex::encode(public),
        };

        // Organisation CA.
        let org_ca_key = KeyPair::generate().map_err(gen_err("organisation CA key"))?;
        let mut ca_params = base_params(not_after);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("{} organisation CA", profile.org),
        );
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, profile.org.as_str());
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = ca_key_usages();
        ca_params
            .custom_extensions
            .push(profile_extension(&CertProfile::OrgCa(profile.clone()))?);
        let org_ca = ca_params
            .signed_by(&org_ca_key, &issuer)
            .map_err(gen_err("organisation CA certificate"))?;

        // Node TLS certificate.
        let mut node_profile = profile.clone();
        node_profile.signing_keys = vec![signing_key.clone()];
        let host = endpoint_host(&profile.endpoint)?;
        let node_key = KeyPair::generate().map_err(gen_err("node key"))?;
        let mut node_params = base_params(not_after);
        node_params
            .distinguished_name
            .push(DnType::CommonName, profile.org.as_str());
        node_params
            .distinguished_name
            .push(DnType::OrganizationName, profile.org.as_str());
        let mut sans = vec![host.clone()];
        if host != "localhost" {
            sans.push("localhost".into());
        }
        for s in sans {
            node_params
                .subject_alt_names
                .push(match s.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => {
                        SanType::DnsName(s.clone().try_into().map_err(|e| {
                            PkiError::Invalid(format!("host {s:?} as DNS name: {e}"))
                        })?)
                    }
                });
        }
        node_params.is_ca = IsCa::ExplicitNoCa;
        node_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        node_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        node_params
            .custom_extensions
            .push(profile_extension(&CertProfile::Node(node_profile))?);
        let node = node_params
            .signed_by(&node_key, &issuer)
            .map_err(gen_err("node certificate"))?;

        {
            let mut idx = self.lock_index();
            for (der, kind) in [
                (node.der(), IssuedKind::Node),
                (org_ca.der(), IssuedKind::OrgCa),
            ] {
                idx.issued.push(IssuedCert {
                    serial: serial_hex(der)?,
                    org: profile.org.clone(),
                    kind,
                    not_after: fmt_time(not_after),
                    revoked_at: None,
                });
            }
        }

        Ok(OrgBundle {
            node_cert_pem: node.pem(),
            node_key_pem: node_key.serialize_pem(),
            signing_key_pkcs8_pem: pem_encode("PRIVATE KEY", pkcs8.as_ref()),
            signing_key,
            org_ca_cert_pem: org_ca.pem(),
            org_ca_key_pem: org_ca_key.serialize_pem(),
            ca_cert_pem: self.cert_pem.clone(),
        })
    }

    /// Revoke certificates by serial (hex). Cumulative: the returned CRL lists
    /// everything ever revoked. Persist with [`FederationCa::save`].
    pub fn revoke(&mut self, serials: &[String]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        {
            let idx = self.index.get_mut().unwrap_or_else(|p| p.into_inner());
            let wanted = serials
                .iter()
                .map(|s| normalize_serial(s))
                .collect::<Result<Vec<_>, _>>()?;
            for s in &wanted {
                if !idx.issued.iter().any(|c| &c.serial == s) {
                    return Err(PkiError::Invalid(format!(
                        "serial {s} was not issued by this federation CA; list an organisation's serials with serials_of_org / issued.json"
                    )));
                }
            }
            for c in idx.issued.iter_mut() {
                if wanted.contains(&c.serial) && c.revoked_at.is_none() {
                    c.revoked_at = Some(now);
                }
            }
        }
        self.crl_pem = self.make_crl()?;
        Ok(self.crl_pem.clone())
    }

    /// Serials of the node and org-CA certificates issued to `org` (revoking
    /// them revokes the organisation and all its users).
    pub fn serials_of_org(&self, org: &str) -> Vec<String> {
        self.lock_index()
            .issued
            .iter()
            .filter(|c| c.org == org)
            .map(|c| c.serial.clone())
            .collect()
    }

    /// Sign a CRL of every revoked serial with the next CRL number.
    fn make_crl(&self) -> Result<String, PkiError> {
        let (revoked, number) = {
            let mut idx = self.lock_index();
            idx.crl_number += 1;
            let revoked = idx
                .issued
                .iter()
                .filter_map(|c| Some((hex::decode(&c.serial).ok()?, c.revoked_at?)))
                .map(|(raw, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&raw),
                    revocation_time: OffsetDateTime::from_unix_timestamp(at)
                        .unwrap_or_else(|_| OffsetDateTime::now_utc()),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect::<Vec<_>>();
            (revoked, idx.crl_number)
        };
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_NEXT_UPDATE,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer()?)
            .map_err(gen_err("CRL"))?
            .pem()
            .map_err(gen_err("CRL PEM"))
    }
}

/// A request to certify an organisation.
#[derive(Clone, Debug)]
pub struct OrgRequest {
    /// `signing_keys` is ignored: a fresh signing key is generated.
    pub profile: OrgProfile,
    pub validity_days: u32,
}

/// Everything an organisation needs to run a node and certify its members.
#[derive(Clone)]
pub struct OrgBundle {
    /// TLS leaf: serverAuth+clientAuth, SAN = endpoint host + `localhost`, Node profile.
    pub node_cert_pem: String,
    pub node_key_pem: String,
    /// Ed25519 PKCS#8, PEM `PRIVATE KEY`.
    pub signing_key_pkcs8_pem: String,
    pub signing_key: CertifiedKey,
    /// Intermediate CA (pathlen 0) with the OrgCa profile.
    pub org_ca_cert_pem: String,
    pub org_ca_key_pem: String,
    /// The federation root, for convenience.
    pub ca_cert_pem: String,
}

impl fmt::Debug for OrgBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgBundle")
            .field("signing_key", &self.signing_key)
            .finish_non_exhaustive()
    }
}

impl OrgBundle {
    /// Writes node.crt node.key signing.key org-ca.crt org-ca.key ca.crt; keys 0600.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        ensure_dir(dir)?;
        for (name, data, mode) in [
            ("node.crt", &self.node_cert_pem, 0o644),
            ("node.key", &self.node_key_pem, 0o600),
            ("signing.key", &self.signing_key_pkcs8_pem, 0o600),
            ("org-ca.crt", &self.org_ca_cert_pem, 0o644),
            ("org-ca.key", &self.org_ca_key_pem, 0o600),
            ("ca.crt", &self.ca_cert_pem, 0o644),
        ] {
            write_file(&dir.join(name), data.as_bytes(), mode)?;
        }
        Ok(())
    }
}

/// A member's client certificate chain (leaf + org CA) and key.
#[derive(Clone)]
pub struct UserBundle {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for UserBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserBundle").finish_non_exhaustive()
    }
}

impl UserBundle {
    /// Writes user.crt user.key (0600) ca.crt.
    pub fn save(&self, dir: &Path, ca_cert_pem: &str) -> Result<(), PkiError> {
        ensure_dir(dir)?;
        write_file(&dir.join("user.crt"), self.cert_chain_pem.as_bytes(), 0o644)?;
        write_file(&dir.join("user.key"), self.key_pem.as_bytes(), 0o600)?;
        write_file(&dir.join("ca.crt"), ca_cert_pem.as_bytes(), 0o644)
    }
}

/// Issue a user (member) client certificate with the org CA. The cert PEM is
/// the leaf followed by the org-CA cert (chain). Validity is capped at the org
/// CA's.
pub fn issue_user(
    org_ca_cert_pem: &str,
    org_ca_key_pem: &str,
    name: &str,
    role: UserRole,
    validity_days: u32,
) -> Result<UserBundle, PkiError> {
    validate_user_name(name)?;
    let span = validity(validity_days)?;
    let ca_der = first_cert_der(org_ca_cert_pem)?;
    let ca_key = KeyPair::from_pem(org_ca_key_pem)
        .map_err(|e| PkiError::Pem(format!("organisation CA key: {e}")))?;
    let (org, ca_not_after) = {
        let ca = parse_cert(&ca_der)?;
        let Some(CertProfile::OrgCa(p)) = profile_of(&ca)? else {
            return Err(PkiError::Invalid(
                "the given CA certificate is not an organisation CA (no OrgCa profile); pass org-ca.crt from the organisation bundle".into(),
            ));
        };
        if ca.public_key().subject_public_key.data.as_ref()
            != rcgen::PublicKeyData::der_bytes(&ca_key)
        {
            return Err(PkiError::Invalid(
                "org-ca.key does not belong to org-ca.crt; pass the pair from the same bundle"
                    .into(),
            ));
        }
        (p.org, not_after_of(&ca))
    };
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(gen_err("org CA issuer"))?;
    let key = KeyPair::generate().map_err(gen_err("user key"))?;
    let mut params = base_params((OffsetDateTime::now_utc() + span).min(ca_not_after));
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, org.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
        .custom_extensions
        .push(profile_extension(&CertProfile::User {
            org,
            name: name.to_string(),
            role,
        })?);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_err("user certificate"))?;
    Ok(UserBundle {
        cert_chain_pem: format!("{}{}", cert.pem(), pem_encode("CERTIFICATE", &ca_der)),
        key_pem: key.serialize_pem(),
    })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateRevocationListDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use std::sync::Arc;

    fn profile(org: &str) -> OrgProfile {
        OrgProfile {
            org: org.into(),
            country: "BE".into(),
            org_type: "csirt".into(),
            levels: vec![Level::Technical, Level::Operational],
            sectors: vec!["energy".into()],
            accreditations: vec!["EU RESTRICTED".into()],
            endpoint: "https://127.0.0.1:7443".into(),
            signing_keys: vec![],
        }
    }

    fn req(org: &str) -> OrgRequest {
        OrgRequest {
            profile: profile(org),
            validity_days: 365,
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        load_certs_pem(pem).unwrap().remove(0)
    }

    #[test]
    fn enums_parse_and_display() {
        for l in Level::ALL {
            assert_eq!(l.to_string().parse::<Level>().unwrap(), l);
        }
        for r in UserRole::ALL {
            assert_eq!(r.to_string().parse::<UserRole>().unwrap(), r);
        }
        assert_eq!("soc-tool".parse::<UserRole>().unwrap(), UserRole::SocTool);
        assert!("boss".parse::<UserRole>().is_err());
        assert_eq!(
            serde_json::to_string(&UserRole::SocTool).unwrap(),
            "\"soc-tool\""
        );
        assert_eq!(
            serde_json::to_string(&Level::Political).unwrap(),
            "\"political\""
        );
    }

    #[test]
    fn key_id_format() {
        let id = key_id_for("csirt-be", &[1u8; 32]);
        assert!(id.starts_with("csirt-be/"));
        assert_eq!(id.len(), "csirt-be/".len() + 16);
    }

    #[test]
    fn der_utf8string_round_trip() {
        for n in [0usize, 5, 127, 128, 300, 70_000] {
            let s = "x".repeat(n);
            assert_eq!(parse_der_utf8string(&der_utf8string(&s)).unwrap(), s);
        }
        assert!(parse_der_utf8string(&[0x04, 0x00]).is_err());
        assert!(parse_der_utf8string(&[0x0c, 0x05, b'a']).is_err());
    }

    #[test]
    fn pem_encode_matches_rustls_pemfile() {
        for n in [0usize, 1, 2, 3, 47, 48, 49, 100] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let pem = pem_encode("PRIVATE KEY", &data);
            let item = rustls_pemfile::read_one(&mut pem.as_bytes())
                .unwrap()
                .unwrap();
            match item {
                rustls_pemfile::Item::Pkcs8Key(k) => assert_eq!(k.secret_pkcs8_der(), &data[..]),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn profile_extension_round_trip_and_identities() {
        let ca = FederationCa::generate("Test Federation Root").unwrap();
        let bundle = ca.issue_org(&req("csirt-be")).unwrap();
        let root = der(ca.cert_pem());

        // Profile extension round trip.
        let node = der(&bundle.node_cert_pem);
        let Some(CertProfile::Node(p)) = cert_profile(&node).unwrap() else {
            panic!("node profile missing");
        };
        let mut expected = profile("csirt-be");
        expected.signing_keys = vec![bundle.signing_key.clone()];
        assert_eq!(p, expected);
        let Some(CertProfile::OrgCa(p)) = cert_profile(&der(&bundle.org_ca_cert_pem)).unwrap()
        else {
            panic!("org-ca profile missing");
        };
        assert_eq!(p, profile("csirt-be"));
        assert_eq!(cert_profile(&root).unwrap(), None);

        // Signing key matches.
        let sk = crate::pki::load_key_pem(&bundle.signing_key_pkcs8_pem).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(sk.secret_der()).unwrap();
        assert_eq!(
            hex::encode(pair.public_key().as_ref()),
            bundle.signing_key.public_key_hex
        );

        // Node identity.
        let id = identity_from_chain(std::slice::from_ref(&node), &root).unwrap();
        assert_eq!(
            id,
            PeerIdentity::Node {
                profile: expected.clone(),
                serial: serial_hex(&node).unwrap()
            }
        );
        // A copy of the root in the presented chain is tolerated.
        assert!(identity_from_chain(&[node.clone(), root.clone()], &root).is_ok());

        // User identity.
        let user = issue_user(
            &bundle.org_ca_cert_pem,
            &bundle.org_ca_key_pem,
            "Alice Analyst",
            UserRole::Analyst,
            30,
        )
        .unwrap();
        let chain = load_certs_pem(&user.cert_chain_pem).unwrap();
        assert_eq!(chain.len(), 2);
        let id = identity_from_chain(&chain, &root).unwrap();
        assert_eq!(
            id,
            PeerIdentity::User {
                org: "csirt-be".into(),
                name: "Alice Analyst".into(),
                role: UserRole::Analyst,
                serial: serial_hex(&chain[0]).unwrap(),
                org_ca_serial: serial_hex(&chain[1]).unwrap(),
            }
        );
        assert_eq!(id.org(), "csirt-be");
        // User leaf without its org CA → rejected.
        assert!(identity_from_chain(&chain[..1], &root).is_err());
        // Org CA as leaf → rejected.
        assert!(identity_from_chain(&chain[1..], &root).is_err());

        // Serials are 16 bytes and recorded in the index.
        let serials = ca.serials_of_org("csirt-be");
        assert_eq!(serials.len(), 2);
        assert!(serials.contains(&serial_hex(&node).unwrap()));
        assert!(serials.contains(&serial_hex(&chain[1]).unwrap()));
        assert!(serials.iter().all(|s| s.len() == 32));
    }

    /// Sign an arbitrary leaf with an org CA, bypassing issue_user's checks.
    fn forge_with_org_ca(bundle: &OrgBundle, p: CertProfile) -> Vec<CertificateDer<'static>> {
        let ca_der = der(&bundle.org_ca_cert_pem);
        let ca_key = KeyPair::from_pem(&bundle.org_ca_key_pem).unwrap();
        let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = base_params(OffsetDateTime::now_utc() + Duration::days(1));
        params.distinguished_name.push(DnType::CommonName, "forged");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params
            .custom_extensions
            .push(profile_extension(&p).unwrap());
        let cert = params.signed_by(&key, &issuer).unwrap();
        vec![cert.der().clone(), ca_der]
    }

    #[test]
    fn user_claiming_other_org_is_rejected() {
        let ca = FederationCa::generate("Root").unwrap();
        let a = ca.issue_org(&req("org-a")).unwrap();
        let root = der(ca.cert_pem());
        let chain = forge_with_org_ca(
            &a,
            CertProfile::User {
                org: "org-b".into(),
                name: "mallory".into(),
                role: UserRole::Operator,
            },
        );
        let err = identity_from_chain(&chain, &root).unwrap_err().to_string();
        assert!(err.contains("org-b") && err.contains("org-a"), "{err}");
    }

    #[test]
    fn org_ca_cannot_vouch_for_node() {
        let ca = FederationCa::generate("Root").unwrap();
        let a = ca.issue_org(&req("org-a")).unwrap();
        let root = der(ca.cert_pem());
        let chain = forge_with_org_ca(&a, CertProfile::Node(profile("org-a")));
        assert!(matches!(
            identity_from_chain(&chain, &root),
            Err(PkiError::Identity(_))
        ));
        // Even presented alone (no intermediate), the issuer is not the root.
        assert!(matches!(
            identity_from_chain(&chain[..1], &root),
            Err(PkiError::Identity(_))
        ));
    }

    #[test]
    fn other_federation_root_is_rejected() {
        let ours = FederationCa::generate("Root").unwrap();
        // Same CN, so the issuer DN matches: only the signature check can catch it.
        let theirs = FederationCa::generate("Root").unwrap();
        let root = der(ours.cert_pem());
        let b = theirs.issue_org(&req("csirt-be")).unwrap();
        let node = der(&b.node_cert_pem);
        let err = identity_from_chain(&[node], &root).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");
        let user = issue_user(
            &b.org_ca_cert_pem,
            &b.org_ca_key_pem,
            "eve",
            UserRole::Analyst,
            5,
        )
        .unwrap();
        let chain = load_certs_pem(&user.cert_chain_pem).unwrap();
        assert!(identity_from_chain(&chain, &root).is_err());
    }

    #[test]
    fn crl_round_trip_and_foreign_crl() {
        let mut ca = FederationCa::generate("Root").unwrap();
        let root = der(ca.cert_pem());
        assert!(crl_serials(ca.crl_pem(), &root).unwrap().is_empty());
        ca.issue_org(&req("org-a")).unwrap();
        ca.issue_org(&req("org-b")).unwrap();
        let a = ca.serials_of_org("org-a");
        let crl = ca.revoke(&a).unwrap();
        let mut got = crl_serials(&crl, &root).unwrap();
        got.sort();
        let mut want = a.clone();
        want.sort();
        assert_eq!(got, want);
        // Cumulative.
        let b = ca.serials_of_org("org-b");
        let crl2 = ca.revoke(&b[..1]).unwrap();
        let info = parse_crl(&crl2, &root).unwrap();
        assert_eq!(info.serials.len(), 3);
        assert_eq!(info.crl_number.as_deref(), Some("3"));
        // Unknown serial.
        assert!(ca.revoke(&["abcdef".into()]).is_err());
        // CRL from another CA (same DN) is rejected by signature.
        let other = FederationCa::generate("Root").unwrap();
        let err = crl_serials(other.crl_pem(), &root).unwrap_err().to_string();
        assert!(err.contains("not signed by the federation root"), "{err}");
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = FederationCa::generate("Root").unwrap();
        ca.issue_org(&req("org-a")).unwrap();
        let s = ca.serials_of_org("org-a");
        ca.revoke(&s[..1]).unwrap();
        ca.save(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        // Saving the same CA again is fine; a different CA is refused.
        ca.save(dir.path()).unwrap();
        let other = FederationCa::generate("Root").unwrap();
        assert!(matches!(
            other.save(dir.path()),
            Err(PkiError::AlreadyExists(_))
        ));

        let mut loaded = FederationCa::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(loaded.serials_of_org("org-a"), s);
        let root = der(loaded.cert_pem());
        assert_eq!(
            crl_serials(loaded.crl_pem(), &root).unwrap(),
            vec![s[0].clone()]
        );
        // The loaded CA issues certificates that chain to the same root.
        let b = loaded.issue_org(&req("org-b")).unwrap();
        let node = der(&b.node_cert_pem);
        assert!(identity_from_chain(&[node], &root).is_ok());
        let crl = loaded.revoke(&s[1..]).unwrap();
        assert_eq!(crl_serials(&crl, &root).unwrap().len(), 2);
        loaded.save(dir.path()).unwrap();
        assert_eq!(
            FederationCa::load(dir.path())
                .unwrap()
                .serials_of_org("org-b")
                .len(),
            2
        );

        // Bundles.
        let bdir = dir.path().join("org-b");
        b.save(&bdir).unwrap();
        for f in [
            "node.crt",
            "node.key",
            "signing.key",
            "org-ca.crt",
            "org-ca.key",
            "ca.crt",
        ] {
            assert!(bdir.join(f).exists(), "{f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["node.key", "signing.key", "org-ca.key"] {
                let m = fs::metadata(bdir.join(f)).unwrap().permissions().mode();
                assert_eq!(m & 0o777, 0o600, "{f}");
            }
        }
        load_key_pem(&fs::read_to_string(bdir.join("node.key")).unwrap()).unwrap();
        let u = issue_user(
            &fs::read_to_string(bdir.join("org-ca.crt")).unwrap(),
            &fs::read_to_string(bdir.join("org-ca.key")).unwrap(),
            "bob",
            UserRole::SocTool,
            10,
        )
        .unwrap();
        let udir = dir.path().join("bob");
        u.save(&udir, loaded.cert_pem()).unwrap();
        assert_eq!(
            load_certs_pem(&fs::read_to_string(udir.join("user.crt")).unwrap())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn bad_input_rejected_with_clear_message() {
        for bad in [
            "",
            "a",
            "CSIRT-BE",
            "csirt_be",
            "-csirt",
            "csirt-",
            "csirt be",
            &"a".repeat(65),
        ] {
            let err = validate_org(bad).unwrap_err().to_string();
            assert!(err.contains("lowercase"), "{bad:?}: {err}");
        }
        validate_org("csirt-be").unwrap();
        let ca = FederationCa::generate("Root").unwrap();
        let mut r = req("Bad Org");
        assert!(
            ca.issue_org(&r)
                .unwrap_err()
                .to_string()
                .contains("organisation id")
        );
        r = req("ok-org");
        r.profile.country = "be".into();
        assert!(
            ca.issue_org(&r)
                .unwrap_err()
                .to_string()
                .contains("country")
        );
        r = req("ok-org");
        r.profile.endpoint = "http://x:1".into();
        assert!(
            ca.issue_org(&r)
                .unwrap_err()
                .to_string()
                .contains("https://")
        );
        r = req("ok-org");
        r.validity_days = 0;
        assert!(ca.issue_org(&r).is_err());
        r = req("ok-org");
        r.profile.levels.clear();
        assert!(ca.issue_org(&r).is_err());
        assert!(ca.serials_of_org("ok-org").is_empty());
        let b = ca.issue_org(&req("ok-org")).unwrap();
        assert!(
            issue_user(
                &b.org_ca_cert_pem,
                &b.org_ca_key_pem,
                "",
                UserRole::Analyst,
                1
            )
            .is_err()
        );
        // The root is not an org CA.
        assert!(issue_user(&b.ca_cert_pem, &b.org_ca_key_pem, "x", UserRole::Analyst, 1).is_err());
        // Mismatched key.
        assert!(
            issue_user(
                &b.org_ca_cert_pem,
                &b.node_key_pem,
                "x",
                UserRole::Analyst,
                1
            )
            .is_err()
        );
    }

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("https://127.0.0.1:7443").unwrap(),
            "127.0.0.1"
        );
        assert_eq!(endpoint_host("https://[::1]:7443/").unwrap(), "::1");
        assert_eq!(
            endpoint_host("https://Node.Example:1").unwrap(),
            "node.example"
        );
        assert!(endpoint_host("https://:1").is_err());
        assert!(endpoint_host("https://a b:1").is_err());
    }

    #[test]
    fn rustls_accepts_user_chain_and_node_cert() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut ca = FederationCa::generate("Root").unwrap();
        let bundle = ca.issue_org(&req("csirt-be")).unwrap();
        let root = der(ca.cert_pem());
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let roots = Arc::new(roots);
        let now = UnixTime::now();

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .unwrap();
        let node = der(&bundle.node_cert_pem);
        client_verifier.verify_client_cert(&node, &[], now).unwrap();
        let user = issue_user(
            &bundle.org_ca_cert_pem,
            &bundle.org_ca_key_pem,
            "a",
            UserRole::Analyst,
            3,
        )
        .unwrap();
        let chain = load_certs_pem(&user.cert_chain_pem).unwrap();
        client_verifier
            .verify_client_cert(&chain[0], &chain[1..], now)
            .unwrap();

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .unwrap();
        for name in ["127.0.0.1", "localhost"] {
            let sn = ServerName::try_from(name).unwrap();
            server_verifier
                .verify_server_cert(&node, &[], &sn, &[], now)
                .unwrap();
        }
        // A user certificate is not a server certificate.
        let sn = ServerName::try_from("localhost").unwrap();
        assert!(
            server_verifier
                .verify_server_cert(&chain[0], &chain[1..], &sn, &[], now)
                .is_err()
        );

        // Revoking the organisation (node + org CA) through the CRL makes
        // rustls reject both the node and its users.
        let crl_pem = ca.revoke(&ca.serials_of_org("csirt-be")).unwrap();
        let crl: CertificateRevocationListDer<'static> =
            rustls_pemfile::crls(&mut crl_pem.as_bytes())
                .next()
                .unwrap()
                .unwrap();
        let revoking = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .with_crls(vec![crl])
            .allow_unknown_revocation_status()
            .build()
            .unwrap();
        assert!(revoking.verify_client_cert(&node, &[], now).is_err());
        assert!(
            revoking
                .verify_client_cert(&chain[0], &chain[1..], now)
                .is_err()
        );
    }
}
