//! What a certificate asserts about its holder, and who a verified TLS peer is.
//!
//! Owns: the profile types ([`OrgProfile`], [`Level`], [`UserRole`], [`CertProfile`],
//! [`PeerIdentity`]) and their validation, the one organisation-id rule ([`check_org_id`],
//! [`is_valid_id`]), the one user-name rule ([`check_user_name`]), message-signing key ids,
//! the profile extension (JSON in a DER UTF8String under [`PROFILE_OID`]) read from and
//! written into certificates, and [`identity_from_chain`].
//!
//! It must never take an organisation's attributes from anything but the profile extension
//! of a certificate whose signature it has checked against the federation root (or, for a
//! member, against its organisation's CA signed by that root); never accept an organisation
//! CA vouching for a node, or a member certificate of one organisation issued by another's
//! CA; never issue or store anything (that is `ca`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;

use super::PkiError;
use super::der::{der_utf8string, parse_cert, parse_der_utf8string, serial_text, verify_signed};

/// OID of the Bluewire profile extension (non-critical).
///
/// `1.3.6.1.4.1.59999` is a *private enterprise arc used as a placeholder*
/// (not registered to Bluewire); `.7.1` = Bluewire / certificate profile v1.
/// The extnValue is a DER UTF8String holding the JSON of a [`CertProfile`].
/// Replace with a registered PEN before any production federation.
pub const PROFILE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 1];

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

/// The member of `all` named `s` (trimmed, any case), or an error listing the names.
fn one_of<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    s: &str,
) -> Result<T, PkiError> {
    let want = s.trim().to_ascii_lowercase();
    all.iter()
        .copied()
        .find(|x| name(*x) == want)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|x| name(*x)).collect();
            PkiError::Invalid(format!(
                "unknown {what} {s:?}; expected one of: {}",
                names.join(", ")
            ))
        })
}

impl FromStr for Level {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        one_of(&Level::ALL, Level::as_str, "level", s)
    }
}

/// A function an organisation holds in the EU cybersecurity crisis-management blueprint,
/// asserted by the federation CA in its certificate. The authority to send a crisis-workflow
/// message comes only from here, never from a field the sender writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    /// A national CSIRT (or CERT-EU) in the CSIRTs network: detects, escalates, advises.
    CsirtsNetwork,
    /// A member of EU-CyCLONe: assesses whether an incident is large-scale.
    Cyclone,
    /// The Council Presidency: activates and deactivates the crisis response (IPCR).
    Presidency,
    /// The General Secretariat of the Council: may switch on information-sharing mode.
    CouncilSecretariat,
    /// The European Commission.
    Commission,
    /// The High Representative / EEAS.
    Eeas,
    /// The Conference of EU Cyber Commanders.
    CyberCommanders,
    /// Runs the EU Cybersecurity Reserve (e.g. ENISA): receives assistance requests.
    ReserveAuthority,
    /// A sectoral information sharing and analysis centre.
    Isac,
}

impl Function {
    pub const ALL: [Function; 9] = [
        Function::CsirtsNetwork,
        Function::Cyclone,
        Function::Presidency,
        Function::CouncilSecretariat,
        Function::Commission,
        Function::Eeas,
        Function::CyberCommanders,
        Function::ReserveAuthority,
        Function::Isac,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Function::CsirtsNetwork => "csirts-network",
            Function::Cyclone => "cyclone",
            Function::Presidency => "presidency",
            Function::CouncilSecretariat => "council-secretariat",
            Function::Commission => "commission",
            Function::Eeas => "eeas",
            Function::CyberCommanders => "cyber-commanders",
            Function::ReserveAuthority => "reserve-authority",
            Function::Isac => "isac",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Function {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        one_of(&Function::ALL, Function::as_str, "blueprint function", s)
    }
}

/// A hybrid message-signing public key certified by the federation CA: both
/// halves are in the certificate the CA signed, and the key id binds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedKey {
    /// `"<org>/"` + the first 16 hex digits of SHA-256(Ed25519 key || ML-DSA-65 key).
    pub key_id: String,
    /// Ed25519 raw 32-byte public key, lowercase hex.
    pub public_key_hex: String,
    /// ML-DSA-65 raw 1,952-byte public key, lowercase hex. Empty in certificates issued
    /// before hybrid signatures; such a certificate does not validate.
    #[serde(default)]
    pub ml_dsa_public_key_hex: String,
}

impl CertifiedKey {
    /// Certify a hybrid public key (as [`crate::signing::SigningKey::public_key`] gives it).
    pub fn new(org: &str, hybrid_public_key: &[u8]) -> Self {
        let (key_id, ed, pq) =
            certify_halves(org, hybrid_public_key, crate::signing::ED25519_PUBLIC_LEN);
        Self {
            key_id,
            public_key_hex: ed,
            ml_dsa_public_key_hex: pq,
        }
    }

    /// The hybrid public key [`crate::signing::verify`] takes, after checking both
    /// halves' lengths and that the key id is derived from them for `org`.
    pub fn public_key(&self, org: &str) -> Result<Vec<u8>, PkiError> {
        if self.ml_dsa_public_key_hex.is_empty() {
            return Err(PkiError::Invalid(format!(
                "signing key {:?}: has no ML-DSA-65 half; the certificate was issued before \
                 Bluewire signed with hybrid Ed25519 + ML-DSA-65 keys — have the CA issue it again",
                self.key_id
            )));
        }
        hybrid_key(
            org,
            "signing key",
            &self.key_id,
            Half {
                field: "public_key_hex",
                hex: &self.public_key_hex,
                alg: "an Ed25519",
                len: crate::signing::ED25519_PUBLIC_LEN,
            },
            Half {
                field: "ml_dsa_public_key_hex",
                hex: &self.ml_dsa_public_key_hex,
                alg: "an ML-DSA-65",
                len: crate::signing::ML_DSA_65_PUBLIC_LEN,
            },
        )
    }
}

/// One half of a certified hybrid public key, as a profile carries it.
struct Half<'a> {
    field: &'a str,
    hex: &'a str,
    /// e.g. "an Ed25519", for the error.
    alg: &'a str,
    len: usize,
}

/// `(key id, first half hex, second half hex)` of a hybrid public key whose first half is
/// `first_len` bytes.
fn certify_halves(org: &str, public: &[u8], first_len: usize) -> (String, String, String) {
    let (a, b) = public.split_at(public.len().min(first_len));
    (key_id_for(org, public), hex::encode(a), hex::encode(b))
}

/// The hybrid public key `first || second`, after checking both halves decode, have their
/// lengths, and that `key_id` is derived from them for `org`.
fn hybrid_key(
    org: &str,
    what: &str,
    key_id: &str,
    first: Half<'_>,
    second: Half<'_>,
) -> Result<Vec<u8>, PkiError> {
    let bad = |why: String| PkiError::Invalid(format!("{what} {key_id:?}: {why}"));
    let decode =
        |h: &Half<'_>| hex::decode(h.hex).map_err(|_| bad(format!("{} is not hex", h.field)));
    let (a, b) = (decode(&first)?, decode(&second)?);
    if a.len() != first.len || b.len() != second.len {
        return Err(bad(format!(
            "{} public key is {} bytes and {} one {}, got {} and {}",
            first.alg,
            first.len,
            second.alg,
            second.len,
            a.len(),
            b.len()
        )));
    }
    let public = [a, b].concat();
    let expected = key_id_for(org, &public);
    if key_id != expected {
        return Err(bad(format!(
            "key id does not match its public key (expected {expected:?})"
        )));
    }
    Ok(public)
}

/// A hybrid encryption public key (X25519 + ML-KEM-768) certified by the federation CA:
/// what senders encrypt to end to end for this organisation ([`crate::e2e`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedEncryptionKey {
    /// `"<org>/"` + the first 16 hex digits of SHA-256(X25519 key || ML-KEM-768 key).
    pub key_id: String,
    /// X25519 raw 32-byte public key, lowercase hex.
    pub x25519_public_key_hex: String,
    /// ML-KEM-768 1,184-byte encapsulation key, lowercase hex.
    pub ml_kem_768_public_key_hex: String,
}

impl CertifiedEncryptionKey {
    /// Certify a hybrid public key (as [`crate::e2e::RecipientKey::public_key`] gives it).
    pub fn new(org: &str, public_key: &[u8]) -> Self {
        let (key_id, x, k) = certify_halves(org, public_key, crate::e2e::X25519_PUBLIC_LEN);
        Self {
            key_id,
            x25519_public_key_hex: x,
            ml_kem_768_public_key_hex: k,
        }
    }

    /// The public key [`crate::e2e::seal`] takes, after checking both halves' lengths and
    /// that the key id is derived from them for `org`.
    pub fn public_key(&self, org: &str) -> Result<Vec<u8>, PkiError> {
        hybrid_key(
            org,
            "encryption key",
            &self.key_id,
            Half {
                field: "x25519_public_key_hex",
                hex: &self.x25519_public_key_hex,
                alg: "an X25519",
                len: crate::e2e::X25519_PUBLIC_LEN,
            },
            Half {
                field: "ml_kem_768_public_key_hex",
                hex: &self.ml_kem_768_public_key_hex,
                alg: "an ML-KEM-768",
                len: crate::e2e::ML_KEM_768_PUBLIC_LEN,
            },
        )
    }
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
    /// Keys senders encrypt to for this organisation (end-to-end encryption). Absent from
    /// certificates issued before Bluewire certified them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_keys: Vec<CertifiedEncryptionKey>,
    /// Blueprint functions the organisation holds ([`Function`] names). Kept as written, so
    /// a certificate from a newer CA naming a function this node does not know still
    /// verifies; such a function grants nothing here ([`OrgProfile::holds`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
}

impl OrgProfile {
    /// Does the CA assert that this organisation holds `f`?
    pub fn holds(&self, f: Function) -> bool {
        self.functions.iter().any(|x| x == f.as_str())
    }

    /// The functions this node knows, in their canonical order.
    pub fn known_functions(&self) -> Vec<Function> {
        Function::ALL
            .into_iter()
            .filter(|f| self.holds(*f))
            .collect()
    }

    /// Check every field; the error says which one is wrong and what is expected.
    pub fn validate(&self) -> Result<(), PkiError> {
        check_org_id(&self.org)?;
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
            ("function", &self.functions),
        ] {
            for s in list.iter() {
                check_label(what, s)?;
            }
        }
        endpoint_host(&self.endpoint)?;
        for k in &self.signing_keys {
            k.public_key(&self.org)?;
        }
        for k in &self.encryption_keys {
            k.public_key(&self.org)?;
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
        one_of(&UserRole::ALL, UserRole::as_str, "user role", s)
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

/// Whether `id` is well formed under the federation's one identifier rule: 2 to 64
/// characters from lowercase `a-z`, digits `0-9` and `-`, not starting or ending with `-`.
/// Organisation ids follow it (see [`check_org_id`]), and so do cluster names (the part of
/// a cluster id after its convener's organisation id).
pub fn is_valid_id(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// The one check of an organisation id, used for certificates, node configuration and
/// anything else that names an organisation: see [`is_valid_id`] for the rule.
pub fn check_org_id(org: &str) -> Result<(), PkiError> {
    if !is_valid_id(org) {
        return Err(PkiError::Invalid(format!(
            "organisation id {org:?} is not valid: use 2 to 64 characters from lowercase a-z, digits 0-9 and '-', not starting or ending with '-' (e.g. \"csirt-be\")"
        )));
    }
    Ok(())
}

/// The one check of a member (user) name: in user certificates and anything else that names
/// a user of an organisation (e.g. API tokens). 1 to 128 printable characters without
/// leading or trailing spaces.
pub fn check_user_name(name: &str) -> Result<(), PkiError> {
    check_label("user name", name)
}

pub(super) fn check_label(what: &str, s: &str) -> Result<(), PkiError> {
    if s.trim().is_empty() || s.len() > 128 || s.chars().any(char::is_control) || s.trim() != s {
        return Err(PkiError::Invalid(format!(
            "{what} {s:?} must be 1 to 128 printable characters without leading/trailing spaces"
        )));
    }
    Ok(())
}

/// The host part of an `https://host[:port][/…]` endpoint.
pub(super) fn endpoint_host(endpoint: &str) -> Result<String, PkiError> {
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

/// `"<org>/"` + first 16 hex chars of SHA-256(public key).
pub fn key_id_for(org: &str, public_key: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key);
    let h = hex::encode(d.as_ref());
    format!("{org}/{}", &h[..16])
}

fn is_profile_oid(oid: &x509_parser::der_parser::oid::Oid<'_>) -> bool {
    oid.iter()
        .is_some_and(|it| it.eq(PROFILE_OID.iter().copied()))
}

pub(super) fn profile_of(cert: &X509Certificate<'_>) -> Result<Option<CertProfile>, PkiError> {
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

pub(super) fn profile_extension(p: &CertProfile) -> Result<rcgen::CustomExtension, PkiError> {
    let json = serde_json::to_string(p)
        .map_err(|e| PkiError::Profile(format!("cannot encode profile: {e}")))?;
    let mut ext = rcgen::CustomExtension::from_oid_content(PROFILE_OID, der_utf8string(&json));
    ext.set_criticality(false); // webpki rejects unknown critical extensions
    Ok(ext)
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
            super::pq::check(&leaf, &root, PROFILE_OID)?;
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
            check_org_id(&org).map_err(|e| PkiError::Identity(e.to_string()))?;
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
