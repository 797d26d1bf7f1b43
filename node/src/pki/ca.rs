//! The federation CA and everything it issues: the root certificate and key, organisation
//! bundles (node TLS identity, message-signing key, organisation CA), member certificates
//! signed by an organisation CA, revocation and the CRL, and the on-disk layout of CA and
//! bundle directories (the bundles themselves, and rotating a node's files, in `bundles`).
//!
//! Owns: [`FederationCa`] (generate, save, load, issue, revoke), [`OrgRequest`],
//! [`OrgBundle`], [`UserBundle`], [`issue_user`], the issued-certificate index
//! (`issued.json`) and writing files atomically with private modes.
//!
//! It must never overwrite an existing CA key, write a private key readable by other users,
//! issue a certificate for a profile that does not validate, or issue past the validity of
//! the certificate that signs it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;

use aws_lc_rs::signature::{KeyPair as _, ML_DSA_65_SIGNING, PqdsaKeyPair};

use super::der::{
    first_cert_der, load_key_pem, normalize_serial, parse_cert, pem_encode, serial_hex, serial_text,
};
use super::pq;
use super::profile::{
    CertProfile, CertifiedEncryptionKey, CertifiedKey, OrgProfile, UserRole, check_label,
    check_user_name, endpoint_host, profile_extension, profile_of,
};
use super::{PkiError, gen_err, io_err};

mod bundles;

pub use bundles::{
    NODE_FILES, NodeBundle, OrgBundle, OrgRequest, RETIRED_DIR, UserBundle, install_staged,
    issue_user, staging_dir,
};

/// Validity of a federation root certificate.
const ROOT_VALIDITY_DAYS: i64 = 3650;
/// Longest validity accepted for organisation and user certificates.
const MAX_VALIDITY_DAYS: u32 = 3650;
/// Issued certificates start slightly in the past to tolerate clock skew.
const BACKDATE: Duration = Duration::minutes(5);
/// A CRL promises the next one within this period.
const CRL_NEXT_UPDATE: Duration = Duration::days(7);
/// Longest overlap a rotation may give the old certificate (seconds).
pub const MAX_OVERLAP_SECS: i64 = 90 * 86_400;

fn validity(days: u32) -> Result<Duration, PkiError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(PkiError::Invalid(format!(
            "validity of {days} days is out of range; choose 1 to {MAX_VALIDITY_DAYS} days"
        )));
    }
    Ok(Duration::days(i64::from(days)))
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    if b[0] == 0 {
        b[0] = 0x01; // keep a fixed 16-byte length
    }
    SerialNumber::from_slice(&b)
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
    /// Unix seconds from which its keys are known or suspected compromised (the CRL entry's
    /// invalidity date, reason keyCompromise): what they signed since is suspect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromised_since: Option<i64>,
    /// The node certificate that replaced this one (`pki rotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Unix seconds at which a superseded certificate retires (the end of the rotation's
    /// overlap): from then on the CRL lists it (reason superseded) and its keys sign
    /// nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CaIndex {
    #[serde(default)]
    issued: Vec<IssuedCert>,
    #[serde(default)]
    crl_number: u64,
}

/// Federation root CA. Files in a directory: `ca.crt`, `ca.key` (0600),
/// `ca-ml-dsa.key` (0600, the root's post-quantum certification key),
/// `issued.json` (index of issued certs and revocations), `crl.pem`.
pub struct FederationCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    /// ML-DSA-65: certifies node profiles post-quantum ([`super::pq`]).
    pq: PqdsaKeyPair,
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
const CA_PQ_KEY: &str = "ca-ml-dsa.key";
const CA_INDEX: &str = "issued.json";
const CA_CRL: &str = "crl.pem";

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

pub(super) fn base_params(not_after: OffsetDateTime) -> CertificateParams {
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
    /// A new root: ECDSA P-256, CN = `name`, valid 10 years, path length 1, with an
    /// ML-DSA-65 key for post-quantum certification whose public half the certificate carries.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        check_label("federation CA name", name)?;
        let key = KeyPair::generate().map_err(gen_err("root key"))?;
        let pq = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING)
            .map_err(|e| PkiError::Generate(format!("root ML-DSA-65 key: {e}")))?;
        let mut params =
            base_params(OffsetDateTime::now_utc() + Duration::days(ROOT_VALIDITY_DAYS));
        params.use_authority_key_identifier_extension = false;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Bluewire federation");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = ca_key_usages();
        params.custom_extensions.push(pq::root_key_extension(&pq));
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("root certificate"))?;
        let mut ca = FederationCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
            pq,
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
        let pq_pem = pem_encode(
            "PRIVATE KEY",
            self.pq
                .to_pkcs8v1()
                .map_err(|e| PkiError::Generate(format!("root ML-DSA-65 key: {e}")))?
                .as_ref(),
        );
        for (name, key_pem) in [(CA_KEY, self.key.serialize_pem()), (CA_PQ_KEY, pq_pem)] {
            let key_path = dir.join(name);
            match fs::read_to_string(&key_path) {
                Ok(existing) if existing == key_pem => {}
                Ok(_) => return Err(PkiError::AlreadyExists(key_path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
                }
                Err(e) => return Err(io_err(&key_path)(e)),
            }
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
        let pq_path = dir.join(CA_PQ_KEY);
        let pq_pem = match fs::read_to_string(&pq_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PkiError::Invalid(format!(
                    "{} is missing: this CA was made before Bluewire certified signing keys \
                     post-quantum (ML-DSA-65); create a new federation CA \
                     (`bluewire pki init-federation`) and issue the organisations again",
                    pq_path.display()
                )));
            }
            Err(e) => return Err(io_err(&pq_path)(e)),
        };
        let pq = load_key_pem(&pq_pem)
            .map_err(|e| e.to_string())
            .and_then(|der| {
                PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, der.secret_der())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                PkiError::Pem(format!(
                    "{}: not a usable ML-DSA-65 key: {e}",
                    pq_path.display()
                ))
            })?;
        {
            let cert = parse_cert(&cert_der)?;
            let ecdsa_belongs = cert.public_key().subject_public_key.data.as_ref()
                == rcgen::PublicKeyData::der_bytes(&key);
            let pq_belongs = pq::root_key(&cert)? == pq.public_key().as_ref();
            for (key_path, belongs) in [(dir.join(CA_KEY), ecdsa_belongs), (pq_path, pq_belongs)] {
                if !belongs {
                    return Err(PkiError::Invalid(format!(
                        "{} does not belong to {}; the CA directory is mixed up",
                        key_path.display(),
                        dir.join(CA_CRT).display()
                    )));
                }
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
            pq,
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
        profile.encryption_keys.clear();
        profile.validate()?;
        // This CA only asserts functions it knows, each once, in canonical order.
        let mut functions = Vec::new();
        for f in &profile.functions {
            let f: super::Function = f.parse()?;
            if !functions.contains(&f) {
                functions.push(f);
            }
        }
        functions.sort();
        profile.functions = functions.iter().map(|f| f.as_str().to_string()).collect();
        let not_after =
            (OffsetDateTime::now_utc() + validity(req.validity_days)?).min(self.root_not_after()?);
        let issuer = self.issuer()?;

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
        let node = self.issue_node(&profile, not_after, None)?;
        self.lock_index().issued.push(IssuedCert {
            serial: serial_hex(org_ca.der())?,
            org: profile.org.clone(),
            kind: IssuedKind::OrgCa,
            not_after: fmt_time(not_after),
            revoked_at: None,
            compromised_since: None,
            superseded_by: None,
            retires_at: None,
        });
        Ok(OrgBundle {
            node,
            org_ca_cert_pem: org_ca.pem(),
            org_ca_key_pem: org_ca_key.serialize_pem(),
            ca_cert_pem: self.cert_pem.clone(),
        })
    }

    /// A node certificate for `profile` (its keys ignored) with fresh TLS, signing and
    /// encryption keys, valid until `not_after`, recorded in the index.
    /// A node certificate for `profile`; with `after` (a predecessor's notBefore), valid
    /// from strictly later, so that "newer" is never ambiguous between the two.
    fn issue_node(
        &self,
        profile: &OrgProfile,
        not_after: OffsetDateTime,
        after: Option<OffsetDateTime>,
    ) -> Result<NodeBundle, PkiError> {
        let issuer = self.issuer()?;
        // Message-signing key: a hybrid Ed25519 + ML-DSA-65 pair, both halves certified.
        let (ed_pkcs8, pq_pkcs8) = crate::signing::generate_pkcs8()
            .map_err(|e| PkiError::Generate(format!("signing key: {e}")))?;
        let pair = crate::signing::SigningKey::from_pkcs8(&profile.org, &ed_pkcs8, &pq_pkcs8)
            .map_err(|e| PkiError::Generate(format!("signing key: {e}")))?;
        let signing_key = CertifiedKey::new(&profile.org, &pair.public_key());
        // End-to-end encryption key: X25519 + ML-KEM-768, certified beside the signing key.
        let encryption = crate::e2e::RecipientKey::generate(&profile.org)
            .map_err(|e| PkiError::Generate(format!("encryption key: {e}")))?;
        let encryption_key = CertifiedEncryptionKey::new(&profile.org, &encryption.public_key());
        let encryption_key_pem = encryption
            .to_pem()
            .map_err(|e| PkiError::Generate(format!("encryption key: {e}")))?;

        let mut node_profile = profile.clone();
        node_profile.signing_keys = vec![signing_key.clone()];
        node_profile.encryption_keys = vec![encryption_key.clone()];
        let host = endpoint_host(&profile.endpoint)?;
        let node_key = KeyPair::generate().map_err(gen_err("node key"))?;
        let mut node_params = base_params(not_after);
        if let Some(after) = after {
            node_params.not_before = node_params.not_before.max(after + Duration::seconds(1));
        }
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
        let profile_ext = profile_extension(&CertProfile::Node(node_profile))?;
        let serial = node_params
            .serial_number
            .as_ref()
            .map(|s| serial_text(s.as_ref()))
            .ok_or_else(|| PkiError::Generate("node certificate has no serial".into()))?;
        let certification = pq::certification_extension(
            &self.pq,
            &pq::Certified {
                profile_ext_value: profile_ext.content(),
                spki_der: &rcgen::PublicKeyData::subject_public_key_info(&node_key),
                serial: &serial,
                not_after: node_params.not_after.unix_timestamp(),
            },
        )?;
        node_params.custom_extensions.push(profile_ext);
        node_params.custom_extensions.push(certification);
        let node = node_params
            .signed_by(&node_key, &issuer)
            .map_err(gen_err("node certificate"))?;
        let serial = serial_hex(node.der())?;
        self.lock_index().issued.push(IssuedCert {
            serial: serial.clone(),
            org: profile.org.clone(),
            kind: IssuedKind::Node,
            not_after: fmt_time(not_after),
            revoked_at: None,
            compromised_since: None,
            superseded_by: None,
            retires_at: None,
        });
        Ok(NodeBundle {
            serial,
            cert_pem: node.pem(),
            key_pem: node_key.serialize_pem(),
            signing_key_pkcs8_pem: format!(
                "{}{}",
                pem_encode("PRIVATE KEY", &ed_pkcs8),
                pem_encode("PRIVATE KEY", &pq_pkcs8)
            ),
            signing_key,
            encryption_key_pem,
            encryption_key,
        })
    }

    /// Rotate a node's keys: a new node certificate for the organisation of `current` (a
    /// node certificate this CA issued, not revoked or superseded), with the same
    /// CA-asserted profile, fresh TLS, signing and encryption keys, valid `validity_days`.
    /// `current` retires `overlap_secs` from now: until then both certificates are valid
    /// (what is queued or in flight, signed with the old keys, still verifies), from then
    /// on the CRL lists it (reason superseded) and its keys sign nothing new — what they
    /// signed before stays verifiable. Persist with [`FederationCa::save`].
    pub fn rotate_node(
        &mut self,
        current: &[u8],
        validity_days: u32,
        overlap_secs: i64,
    ) -> Result<NodeBundle, PkiError> {
        if !(0..=MAX_OVERLAP_SECS).contains(&overlap_secs) {
            return Err(PkiError::Invalid(format!(
                "an overlap of {overlap_secs} s: give 0 to {} days",
                MAX_OVERLAP_SECS / 86_400
            )));
        }
        // The profile is taken from a certificate this root signed and certified (never
        // from whatever a file claims), and must be the very node certificate the index has
        // for that organisation.
        let chain = [CertificateDer::from(current.to_vec())];
        let profile = match super::identity_from_chain(&chain, self.cert_der()) {
            Ok(super::PeerIdentity::Node { profile, .. }) => profile,
            Ok(_) => {
                return Err(PkiError::Invalid(
                    "not a node certificate: give the organisation's node.crt".into(),
                ));
            }
            Err(e) => {
                return Err(PkiError::Invalid(format!(
                    "not a node certificate of this federation CA ({e}): give the organisation's node.crt as issued"
                )));
            }
        };
        let old = serial_hex(current)?;
        {
            let idx = self.lock_index();
            let Some(row) = idx
                .issued
                .iter()
                .find(|c| c.serial == old && c.kind == IssuedKind::Node && c.org == profile.org)
            else {
                return Err(PkiError::Invalid(format!(
                    "node certificate {old} of {} was not issued by this federation CA",
                    profile.org
                )));
            };
            if row.revoked_at.is_some() {
                return Err(PkiError::Invalid(format!(
                    "node certificate {old} of {} is revoked: issue the organisation again (pki issue)",
                    profile.org
                )));
            }
            if let Some(next) = &row.superseded_by {
                return Err(PkiError::Invalid(format!(
                    "node certificate {old} of {} was already rotated to {next}: rotate that one",
                    profile.org
                )));
            }
        }
        let not_after =
            (OffsetDateTime::now_utc() + validity(validity_days)?).min(self.root_not_after()?);
        let old_not_before = super::der::parse_cert(current)?
            .validity()
            .not_before
            .to_datetime();
        let next = self.issue_node(&profile, not_after, Some(old_not_before))?;
        let retires = OffsetDateTime::now_utc().unix_timestamp() + overlap_secs;
        for c in self.lock_index().issued.iter_mut() {
            if c.serial == old {
                c.superseded_by = Some(next.serial.clone());
                c.retires_at = Some(retires);
            }
        }
        self.crl_pem = self.make_crl()?;
        Ok(next)
    }

    /// The certificate that replaced node certificate `serial` in a rotation, if any.
    pub fn superseded_by(&self, serial: &str) -> Option<String> {
        self.lock_index()
            .issued
            .iter()
            .find(|c| c.serial == serial)
            .and_then(|c| c.superseded_by.clone())
    }

    /// Sign the CRL again: every revocation, and every superseded certificate whose overlap
    /// has ended. Run it when an overlap ends (and before the CRL's next update, 7 days);
    /// persist with [`FederationCa::save`].
    pub fn refresh_crl(&mut self) -> Result<String, PkiError> {
        self.crl_pem = self.make_crl()?;
        Ok(self.crl_pem.clone())
    }

    /// Revoke certificates by serial (hex). Cumulative: the returned CRL lists
    /// everything ever revoked. Persist with [`FederationCa::save`].
    pub fn revoke(&mut self, serials: &[String]) -> Result<String, PkiError> {
        self.revoke_compromised(serials, None)
    }

    /// [`revoke`](Self::revoke), stating that the keys were compromised from
    /// `compromised_since` (unix seconds, not later than now): receivers mark what those keys
    /// signed since then as suspect. May be stated again for a certificate already revoked.
    pub fn revoke_compromised(
        &mut self,
        serials: &[String],
        compromised_since: Option<i64>,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if compromised_since.is_some_and(|t| t > now) {
            return Err(PkiError::Invalid(
                "a compromise time in the future: give when the key was (or may have been) compromised, at the latest now".into(),
            ));
        }
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
                if wanted.contains(&c.serial) {
                    c.revoked_at = c.revoked_at.or(Some(now));
                    c.compromised_since = compromised_since.or(c.compromised_since);
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
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let revoked = idx
                .issued
                .iter()
                .filter_map(|c| {
                    let (at, reason) = crl_entry(c, now)?;
                    Some((
                        hex::decode(&c.serial).ok()?,
                        at,
                        reason,
                        c.compromised_since,
                    ))
                })
                .map(|(raw, at, reason, compromised)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&raw),
                    revocation_time: OffsetDateTime::from_unix_timestamp(at)
                        .unwrap_or_else(|_| OffsetDateTime::now_utc()),
                    reason_code: reason,
                    invalidity_date: compromised
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
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

/// Whether `c` is on a CRL signed at `now` (unix seconds), with its revocation time and
/// reason: revoked (reason keyCompromise when a compromise time is stated), or superseded
/// by a rotation whose overlap has ended (reason superseded, from its retirement; an
/// earlier revocation wins).
pub(super) fn crl_entry(
    c: &IssuedCert,
    now: i64,
) -> Option<(i64, Option<rcgen::RevocationReason>)> {
    match (c.revoked_at, c.retires_at) {
        (Some(at), _) => Some((
            at,
            c.compromised_since
                .map(|_| rcgen::RevocationReason::KeyCompromise),
        )),
        (None, Some(at)) if at <= now => Some((at, Some(rcgen::RevocationReason::Superseded))),
        _ => None,
    }
}
