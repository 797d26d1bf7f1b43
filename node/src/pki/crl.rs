//! Certificate revocation lists as a node reads them: parse a CRL, check that the federation
//! root issued and signed it, and list the revoked serials.
//!
//! Owns: [`CrlInfo`], [`parse_crl`] and [`crl_serials`]. (Signing a CRL is the CA's job, in
//! `ca`.)
//!
//! It must never return serials from a CRL whose issuer and signature did not check out
//! against the federation root.

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::PkiError;
use super::der::{parse_cert, serial_text, verify_signed};

/// A parsed, signature-checked CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlInfo {
    /// Revoked serials, lowercase hex (same form as [`serial_hex`](super::serial_hex)).
    pub serials: Vec<String>,
    /// Per revoked serial: from when (unix ms) its keys are no longer trusted — the entry's
    /// invalidity date (a stated compromise) when earlier than its revocation date, else the
    /// revocation date.
    pub distrusted_since: Vec<(String, i64)>,
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
        distrusted_since: crl
            .iter_revoked_certificates()
            .map(|r| {
                // A compromise stated later than the revocation never narrows it.
                let revoked = r.revocation_date.timestamp();
                let since = r
                    .invalidity_date()
                    .map_or(revoked, |(_, t)| t.timestamp().min(revoked))
                    .saturating_mul(1000);
                (serial_text(r.raw_serial()), since)
            })
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
