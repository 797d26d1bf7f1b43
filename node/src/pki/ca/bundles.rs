//! What the federation CA issues, as files: an organisation's bundle (node TLS identity,
//! message-signing and encryption keys, organisation CA), a member's bundle, the node files
//! of an organisation directory and their rotation (staged, then installed with the old ones
//! kept under `retired/`).
//!
//! It must never write a private key readable by other users, or overwrite what a rotation
//! keeps.

use super::*;

/// A request to certify an organisation.
#[derive(Clone, Debug)]
pub struct OrgRequest {
    /// `signing_keys` and `encryption_keys` are ignored: fresh keys are generated.
    pub profile: OrgProfile,
    pub validity_days: u32,
}

/// A node certificate and its keys (what `pki rotate` replaces).
#[derive(Clone)]
pub struct NodeBundle {
    pub serial: String,
    /// TLS leaf: serverAuth+clientAuth, SAN = endpoint host + `localhost`, Node profile.
    pub cert_pem: String,
    pub key_pem: String,
    /// Two PEM `PRIVATE KEY` blocks (PKCS#8): Ed25519, then ML-DSA-65.
    pub signing_key_pkcs8_pem: String,
    pub signing_key: CertifiedKey,
    /// X25519 + ML-KEM-768 decryption key ([`crate::e2e::RecipientKey::to_pem`]).
    pub encryption_key_pem: String,
    pub encryption_key: CertifiedEncryptionKey,
}

impl fmt::Debug for NodeBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBundle")
            .field("serial", &self.serial)
            .field("signing_key", &self.signing_key)
            .field("encryption_key", &self.encryption_key)
            .finish_non_exhaustive()
    }
}

/// The files of a node bundle in an organisation directory.
pub const NODE_FILES: [&str; 4] = ["node.crt", "node.key", "signing.key", "encryption.key"];

/// Where `pki rotate` keeps an organisation directory's earlier node files:
/// `retired/SERIAL/` (the node loads the encryption keys found there, so what was
/// encrypted to them still opens).
pub const RETIRED_DIR: &str = "retired";

/// Where a rotated node bundle waits in the organisation directory `dir` until the CA has
/// recorded the rotation: `.rotate-SERIAL/`.
pub fn staging_dir(dir: &Path, serial: &str) -> PathBuf {
    dir.join(format!(".rotate-{serial}"))
}

/// Install the node bundle staged for certificate `new_serial` in the organisation directory
/// `dir`: the current `node.crt` and `encryption.key` are kept in `retired/OLD_SERIAL/` (the
/// node goes on opening what was encrypted to the old key; the old private TLS and signing
/// keys are replaced, not kept), then the staged files take their place, `node.crt` last.
/// Safe to run again after an interruption: what is kept is never overwritten, and a
/// directory whose `node.crt` is already the new one is left as it is.
pub fn install_staged(dir: &Path, new_serial: &str, old_serial: &str) -> Result<PathBuf, PkiError> {
    let staging = staging_dir(dir, new_serial);
    let retired = dir.join(RETIRED_DIR).join(old_serial);
    let current = dir.join(NODE_FILES[0]);
    let installed = fs::read_to_string(&current)
        .ok()
        .and_then(|pem| super::super::load_certs_pem(&pem).ok())
        .and_then(|c| c.first().and_then(|c| serial_hex(c).ok()))
        .is_some_and(|s| s == new_serial);
    if !installed {
        if !staging.join(NODE_FILES[0]).exists() {
            return Err(PkiError::Invalid(format!(
                "nothing staged in {} for certificate {new_serial}: run `pki rotate` again",
                staging.display()
            )));
        }
        ensure_dir(&retired)?;
        for name in [NODE_FILES[0], NODE_FILES[3]] {
            let (from, to) = (dir.join(name), retired.join(name));
            if from.exists() && !to.exists() {
                let data = fs::read(&from).map_err(io_err(&from))?;
                write_file(
                    &to,
                    &data,
                    if name == NODE_FILES[0] { 0o644 } else { 0o600 },
                )?;
            }
        }
        // node.crt last: until it is replaced, a run again starts over from here.
        for name in [NODE_FILES[1], NODE_FILES[2], NODE_FILES[3], NODE_FILES[0]] {
            let from = staging.join(name);
            if from.exists() {
                fs::rename(&from, dir.join(name)).map_err(io_err(&from))?;
            }
        }
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(retired)
}

impl NodeBundle {
    /// Write this (rotated) bundle to its staging directory in the organisation directory
    /// `dir` (see [`install_staged`]).
    pub fn stage(&self, dir: &Path) -> Result<PathBuf, PkiError> {
        let staging = staging_dir(dir, &self.serial);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        self.save(&staging)?;
        Ok(staging)
    }

    /// Writes node.crt node.key signing.key encryption.key; keys 0600.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        ensure_dir(dir)?;
        for (name, data, mode) in [
            (NODE_FILES[0], &self.cert_pem, 0o644),
            (NODE_FILES[1], &self.key_pem, 0o600),
            (NODE_FILES[2], &self.signing_key_pkcs8_pem, 0o600),
            (NODE_FILES[3], &self.encryption_key_pem, 0o600),
        ] {
            write_file(&dir.join(name), data.as_bytes(), mode)?;
        }
        Ok(())
    }
}

/// Everything an organisation needs to run a node and certify its members.
#[derive(Clone)]
pub struct OrgBundle {
    pub node: NodeBundle,
    /// Intermediate CA (pathlen 0) with the OrgCa profile.
    pub org_ca_cert_pem: String,
    pub org_ca_key_pem: String,
    /// The federation root, for convenience.
    pub ca_cert_pem: String,
}

impl fmt::Debug for OrgBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgBundle")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl OrgBundle {
    /// Writes node.crt node.key signing.key encryption.key org-ca.crt org-ca.key ca.crt;
    /// keys 0600.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        self.node.save(dir)?;
        for (name, data, mode) in [
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
    check_user_name(name)?;
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
