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
//!
//! # Layout
//!
//! This file is the module's public face: every public item is re-exported here (other
//! modules name `crate::pki::X`, never a submodule), plus [`PkiError`] and these docs.
//! - `profile`: what a certificate asserts: [`OrgProfile`], [`Level`], [`UserRole`],
//!   [`CertProfile`], the profile extension's encoding, the one organisation-id rule
//!   ([`check_org_id`]), the user-name rule ([`check_user_name`]) and
//!   [`identity_from_chain`] (verified chain → [`PeerIdentity`]);
//! - `der`: low-level PEM/DER parsing and encoding, serial numbers and signature checks;
//! - `crl`: reading and verifying a revocation list ([`parse_crl`]);
//! - `pq`: the root's post-quantum (ML-DSA-65) certification of node profiles;
//! - `ca`: the federation CA ([`FederationCa`]: issuing organisations, revoking, its
//!   directory on disk) and issuing member certificates ([`issue_user`]).
//!
//! This file must never hold issuance, parsing or identity logic itself.

mod ca;
mod crl;
mod der;
mod pq;
mod profile;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use ca::{
    FederationCa, IssuedCert, IssuedKind, MAX_OVERLAP_SECS, NODE_FILES, NodeBundle, OrgBundle,
    OrgRequest, RETIRED_DIR, UserBundle, install_staged, issue_user, staging_dir,
};
pub use crl::{CrlInfo, crl_serials, parse_crl};
pub use der::{load_certs_pem, load_key_pem, pem_encode, serial_hex, validity_ms};
pub use pq::{PQ_CERTIFICATION_OID, ROOT_PQ_KEY_OID};
/// The former name of [`check_org_id`], kept so existing callers still build.
pub use profile::check_org_id as validate_org;
pub use profile::{
    CertProfile, CertifiedEncryptionKey, CertifiedKey, Function, Level, OrgProfile, PROFILE_OID,
    PeerIdentity, UserRole, cert_profile, check_org_id, check_user_name, identity_from_chain,
    is_valid_id, key_id_for,
};

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

#[cfg(test)]
mod tests;
