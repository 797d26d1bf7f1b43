//! `bluewire pki …`: the federation root CA, organisation bundles, user
//! certificates and the revocation list, as files in directories.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bluewire_node::pki::{self, FederationCa, Function, Level, OrgProfile, OrgRequest, UserRole};
use bluewire_node::provision;
use clap::Subcommand;

use crate::Output;

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the federation root CA (ca.crt, ca.key, ca-ml-dsa.key, issued.json, crl.pem) in --out.
    InitFederation {
        #[arg(long)]
        out: PathBuf,
        /// Common name of the root.
        #[arg(long, default_value = "Bluewire federation root CA")]
        name: String,
    },
    /// Issue an organisation's node certificate, signing key and organisation CA.
    Issue {
        /// Directory of the federation root CA.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        org: String,
        /// Member state (two letters) or EU for an EU body.
        #[arg(long)]
        country: String,
        /// csirt, liaison, eu-body, ministry, military, sectoral…
        #[arg(long = "type")]
        org_type: String,
        /// Comma-separated: technical, operational, political.
        #[arg(long, value_delimiter = ',', required = true)]
        levels: Vec<Level>,
        #[arg(long, value_delimiter = ',')]
        sectors: Vec<String>,
        /// e.g. "EU RESTRICTED" (repeatable).
        #[arg(long)]
        accreditation: Vec<String>,
        /// Comma-separated blueprint functions the organisation holds: csirts-network,
        /// cyclone, presidency, council-secretariat, commission, eeas, cyber-commanders,
        /// reserve-authority, isac.
        #[arg(long, value_delimiter = ',')]
        functions: Vec<Function>,
        /// The node's endpoint, https://HOST:PORT.
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a member's client certificate with the organisation CA.
    IssueUser {
        /// The organisation directory written by `pki issue` (org-ca.crt, org-ca.key, node.crt, ca.crt).
        #[arg(long)]
        org_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role, default_value = "analyst")]
        role: UserRole,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke an organisation (node and organisation CA) or a serial; rewrites crl.pem.
    Revoke {
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        org: Vec<String>,
        #[arg(long)]
        serial: Vec<String>,
        /// The keys were (or may have been) compromised from this time (RFC 3339 or unix
        /// milliseconds): receivers mark what they signed since as suspect, and refuse it.
        /// May be given again for a certificate already revoked.
        #[arg(long, value_name = "TIME")]
        compromised_since: Option<String>,
    },
    /// Rotate an organisation's node keys: a new node certificate with fresh TLS, signing
    /// and encryption keys (same CA-asserted profile, same organisation CA and users). The
    /// current node files move to ORG_DIR/retired/SERIAL/ (the node keeps opening what was
    /// encrypted to the old key); the old certificate stays valid for --overlap, then
    /// retires: `pki crl` lists it from then on, and its keys sign nothing new.
    Rotate {
        #[arg(long)]
        ca: PathBuf,
        /// The organisation directory written by `pki issue` (node.crt, node.key, signing.key,
        /// encryption.key).
        #[arg(long)]
        org_dir: PathBuf,
        /// How long the old certificate stays valid beside the new one: 7d, 12h, 30m, 0m.
        #[arg(long, default_value = "7d")]
        overlap: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Sign crl.pem again: every revocation, and every rotated certificate whose overlap has
    /// ended. Run it when an overlap ends, and at least weekly (the CRL's next update).
    Crl {
        #[arg(long)]
        ca: PathBuf,
    },
    /// List what the CA issued, with revocation state.
    List {
        #[arg(long)]
        ca: PathBuf,
    },
    /// Show the CA-asserted profile in a certificate file.
    Show { cert: PathBuf },
}

fn parse_role(s: &str) -> Result<UserRole, String> {
    s.parse::<UserRole>().map_err(|e| e.to_string())
}

fn load_ca(dir: &Path) -> anyhow::Result<FederationCa> {
    FederationCa::load(dir).with_context(|| {
        format!(
            "cannot load the federation CA from {} (create one with `bluewire pki init-federation --out DIR`)",
            dir.display()
        )
    })
}

pub fn run(cmd: PkiCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::InitFederation { out: dir, name } => {
            if dir.join("ca.key").exists() {
                bail!(
                    "{} already holds a CA key; refusing to overwrite it",
                    dir.display()
                );
            }
            let ca = FederationCa::generate(&name)?;
            ca.save(&dir)?;
            report(
                out,
                &format!("federation root CA written to {}", dir.display()),
                serde_json::json!({"dir": dir}),
            );
        }
        PkiCommand::Issue {
            ca,
            org,
            country,
            org_type,
            levels,
            sectors,
            accreditation,
            functions,
            endpoint,
            out: dir,
            days,
        } => {
            let fed = load_ca(&ca)?;
            let bundle = fed.issue_org(&OrgRequest {
                profile: OrgProfile {
                    org: org.clone(),
                    country,
                    org_type,
                    levels,
                    sectors,
                    accreditations: accreditation,
                    endpoint,
                    signing_keys: vec![],
                    encryption_keys: vec![],
                    functions: functions.iter().map(|f| f.to_string()).collect(),
                },
                validity_days: days,
            })?;
            bundle.save(&dir)?;
            fed.save(&ca)?;
            report(
                out,
                &format!(
                    "issued {org}: node.crt, node.key, signing.key ({}), encryption.key ({}), org-ca.crt, org-ca.key, ca.crt in {}",
                    bundle.node.signing_key.key_id,
                    bundle.node.encryption_key.key_id,
                    dir.display()
                ),
                serde_json::json!({"org": org, "dir": dir, "signing_key_id": bundle.node.signing_key.key_id,
                                   "encryption_key_id": bundle.node.encryption_key.key_id}),
            );
        }
        PkiCommand::IssueUser {
            org_dir,
            name,
            role,
            out: dir,
            days,
        } => {
            let read = |f: &str| {
                std::fs::read_to_string(org_dir.join(f))
                    .with_context(|| format!("cannot read {}", org_dir.join(f).display()))
            };
            let bundle = pki::issue_user(
                &read("org-ca.crt")?,
                &read("org-ca.key")?,
                &name,
                role,
                days,
            )?;
            let ca_pem = read("ca.crt")?;
            bundle.save(&dir, &ca_pem)?;
            // A client config pointing at the organisation's node.
            let endpoint = pki::load_certs_pem(&read("node.crt")?)
                .ok()
                .and_then(|c| c.into_iter().next())
                .and_then(|c| pki::cert_profile(&c).ok().flatten())
                .and_then(|p| match p {
                    pki::CertProfile::Node(p) => Some(p.endpoint),
                    _ => None,
                });
            if let Some(ep) = &endpoint {
                std::fs::write(dir.join("client.toml"), provision::client_toml(ep))?;
            }
            report(
                out,
                &format!(
                    "issued user {name} ({role}): user.crt, user.key, ca.crt{} in {}",
                    if endpoint.is_some() {
                        ", client.toml"
                    } else {
                        ""
                    },
                    dir.display()
                ),
                serde_json::json!({"user": name, "role": role.as_str(), "dir": dir}),
            );
        }
        PkiCommand::Revoke {
            ca,
            org,
            serial,
            compromised_since,
        } => {
            let compromised_since = compromised_since
                .as_deref()
                .map(crate::audit_cmd::parse_time)
                .transpose()?
                .map(|ms| ms.div_euclid(1000));
            if org.is_empty() && serial.is_empty() {
                bail!("name what to revoke: --org ORG or --serial HEX (repeatable)");
            }
            let mut fed = load_ca(&ca)?;
            let mut serials = serial;
            for o in &org {
                let s = fed.serials_of_org(o);
                if s.is_empty() {
                    bail!("the CA in {} never issued anything to {o:?}", ca.display());
                }
                serials.extend(s);
            }
            let crl = fed.revoke_compromised(&serials, compromised_since)?;
            fed.save(&ca)?;
            std::fs::write(ca.join("crl.pem"), crl)?;
            report(
                out,
                &format!(
                    "revoked {} certificate(s){}; {} rewritten — nodes pick it up within crl_poll_secs",
                    serials.len(),
                    compromised_since
                        .map(|t| format!(
                            ", keys compromised since {}: what they signed since is suspect",
                            crate::output::ts(t.saturating_mul(1000))
                        ))
                        .unwrap_or_default(),
                    ca.join("crl.pem").display()
                ),
                serde_json::json!({
                    "revoked": serials,
                    "crl": ca.join("crl.pem"),
                    "compromised_since_ms": compromised_since.map(|t| t.saturating_mul(1000)),
                }),
            );
        }
        PkiCommand::Rotate {
            ca,
            org_dir,
            overlap,
            days,
        } => {
            let overlap_ms = crate::token_cmd::parse_duration(&overlap)
                .map_err(|e| anyhow::anyhow!("--overlap: {e}"))?;
            let cert_path = org_dir.join("node.crt");
            let pem = std::fs::read_to_string(&cert_path).with_context(|| {
                format!(
                    "cannot read {} (give the organisation directory `pki issue` wrote)",
                    cert_path.display()
                )
            })?;
            let current = pki::load_certs_pem(&pem)?
                .into_iter()
                .next()
                .with_context(|| format!("no certificate in {}", cert_path.display()))?;
            let old = pki::serial_hex(&current)?;
            let mut fed = load_ca(&ca)?;
            // A rotation the CA recorded whose files were not all installed: finish it.
            if let Some(next) = fed.superseded_by(&old)
                && pki::staging_dir(&org_dir, &next).exists()
            {
                let retired = pki::install_staged(&org_dir, &next, &old)?;
                report(
                    out,
                    &format!(
                        "finished the rotation to node certificate {next} begun earlier: installed in {}, the old certificate and encryption key in {}. Restart the node",
                        org_dir.display(),
                        retired.display()
                    ),
                    serde_json::json!({"serial": next, "old_serial": old, "retired_dir": retired, "finished": true}),
                );
                return Ok(());
            }
            let next = fed.rotate_node(&current, days, overlap_ms / 1000)?;
            // Staged first, recorded by the CA, then installed: an interruption leaves
            // either nothing done or a rotation `pki rotate` finishes when run again.
            let staging = next.stage(&org_dir)?;
            if let Err(e) = fed.save(&ca) {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e)
                    .context("recording the rotation in the CA directory; nothing was changed");
            }
            let retired = pki::install_staged(&org_dir, &next.serial, &old).with_context(|| {
                format!(
                    "installing the new files in {}: the CA recorded the rotation; run the same `pki rotate` again to finish",
                    org_dir.display()
                )
            })?;
            let retires = fed
                .issued()
                .into_iter()
                .find(|c| c.serial == old)
                .and_then(|c| c.retires_at)
                .unwrap_or_default();
            report(
                out,
                &format!(
                    "rotated: node certificate {} with signing key {} and encryption key {} in {}; \
                     the old files are in {}. Restart the node to use them. The old certificate {old} \
                     stays valid until {}; then run `bluewire pki crl --ca {}` and copy crl.pem to the nodes",
                    next.serial,
                    next.signing_key.key_id,
                    next.encryption_key.key_id,
                    org_dir.display(),
                    retired.display(),
                    crate::output::ts(retires.saturating_mul(1000)),
                    ca.display()
                ),
                serde_json::json!({
                    "serial": next.serial, "old_serial": old,
                    "signing_key_id": next.signing_key.key_id,
                    "encryption_key_id": next.encryption_key.key_id,
                    "retired_dir": retired, "old_retires_at_ms": retires.saturating_mul(1000),
                }),
            );
        }
        PkiCommand::Crl { ca } => {
            let mut fed = load_ca(&ca)?;
            let crl = fed.refresh_crl()?;
            fed.save(&ca)?;
            let listed = bluewire_node::pki::crl_serials(&crl, fed.cert_der())?;
            report(
                out,
                &format!(
                    "{} rewritten: {} certificate(s) listed — nodes pick it up within crl_poll_secs",
                    ca.join("crl.pem").display(),
                    listed.len()
                ),
                serde_json::json!({"crl": ca.join("crl.pem"), "listed": listed}),
            );
        }
        PkiCommand::List { ca } => {
            let fed = load_ca(&ca)?;
            let issued = fed.issued();
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&issued)?);
            } else {
                let rows = issued
                    .iter()
                    .map(|i| {
                        vec![
                            i.serial.clone(),
                            i.org.clone(),
                            format!("{:?}", i.kind),
                            i.not_after.to_string(),
                            i.revoked_at
                                .map(|r| crate::output::ts(r.saturating_mul(1000)))
                                .unwrap_or_else(|| "-".into()),
                            i.compromised_since
                                .map(|r| crate::output::ts(r.saturating_mul(1000)))
                                .unwrap_or_else(|| "-".into()),
                            match (&i.superseded_by, i.retires_at) {
                                (Some(next), Some(at)) => format!(
                                    "by {next}, retires {}",
                                    crate::output::ts(at.saturating_mul(1000))
                                ),
                                _ => "-".into(),
                            },
                        ]
                    })
                    .collect::<Vec<_>>();
                crate::output::table(
                    &[
                        "SERIAL",
                        "ORG",
                        "KIND",
                        "NOT AFTER",
                        "REVOKED",
                        "COMPROMISED SINCE",
                        "SUPERSEDED",
                    ],
                    &rows,
                );
            }
        }
        PkiCommand::Show { cert } => {
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("cannot read {}", cert.display()))?;
            let certs = pki::load_certs_pem(&pem)?;
            let first = certs.first().context("no certificate in file")?;
            let profile = pki::cert_profile(first)?;
            let serial = pki::serial_hex(first)?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"serial": serial, "profile": profile})
                )?
            );
        }
    }
    Ok(())
}

fn report(out: Output, text: &str, json: serde_json::Value) {
    match out {
        Output::Table => println!("{text}"),
        Output::Json => println!("{json}"),
    }
}
