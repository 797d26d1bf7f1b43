//! Provisioning a whole federation on one machine, for `bluewire demo`,
//! `bluewire bench` and the integration-test harness: a federation root CA,
//! and for each planned organisation its bundle, its `operator` and
//! `analyst` users (each with a `client.toml`) and a validated `node.toml`.
//!
//! Owns the layout of such a directory (`federation-ca/` and one directory
//! per organisation) and the edits applied to the `node.toml` template.
//! Never binds ports or picks endpoints (callers plan the addresses, so a
//! test harness can hold its listeners), never starts a node, never
//! overwrites an existing federation, and never writes outside the given
//! directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{self, ConfigError, NodeConfig, PeerConfig};
use crate::pki::{
    self, FederationCa, Function, Level, OrgBundle, OrgProfile, OrgRequest, PkiError, UserRole,
};

/// Directory of the federation CA, below the federation's directory.
pub const CA_DIR: &str = "federation-ca";

/// The users every organisation gets, in `ORG/users/NAME`.
pub const USERS: [(&str, UserRole); 2] = [
    ("operator", UserRole::Operator),
    ("analyst", UserRole::Analyst),
];

/// Validity of every certificate issued (days).
const VALIDITY_DAYS: u32 = 30;

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("{} already holds a federation ({} exists)", .dir.display(), .ca_key.display())]
    Exists { dir: PathBuf, ca_key: PathBuf },
    #[error("organisation {0} is planned twice")]
    Duplicate(String),
    #[error("an organisation cannot be called {CA_DIR:?}: that is the federation CA's directory")]
    ReservedName,
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the node.toml template no longer contains {0:?}")]
    TemplateChanged(String),
    #[error("the node.toml template has no [{0}] section")]
    NoSection(String),
}

/// An organisation to provision.
#[derive(Clone, Debug)]
pub struct OrgPlan {
    pub org: String,
    pub country: String,
    pub org_type: String,
    pub levels: Vec<Level>,
    /// Blueprint functions the CA asserts for it.
    pub functions: Vec<Function>,
    /// Where its node listens; its endpoint is `https://LISTEN`.
    pub listen: SocketAddr,
    /// Write every other organisation of the plan as a static `[[peers]]`
    /// entry; without, the node only knows peers it learns at run time.
    pub static_peers: bool,
}

/// One edit of the `node.toml` template, applied in order to every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigEdit {
    /// Replace the first occurrence of `from`, which must be there.
    Replace { from: String, to: String },
    /// `key = value` (value as TOML) in `[section]`: replaces the key's
    /// line (comment included) or adds it at the top of the section.
    Set {
        section: String,
        key: String,
        value: String,
    },
}

impl ConfigEdit {
    pub fn replace(from: impl Into<String>, to: impl Into<String>) -> Self {
        ConfigEdit::Replace {
            from: from.into(),
            to: to.into(),
        }
    }

    pub fn set(section: &str, key: &str, value: impl ToString) -> Self {
        ConfigEdit::Set {
            section: section.into(),
            key: key.into(),
            value: value.to_string(),
        }
    }

    fn apply(&self, text: &str) -> Result<String, ProvisionError> {
        match self {
            ConfigEdit::Replace { from, to } => {
                if !text.contains(from.as_str()) {
                    return Err(ProvisionError::TemplateChanged(from.clone()));
                }
                Ok(text.replacen(from.as_str(), to, 1))
            }
            ConfigEdit::Set {
                section,
                key,
                value,
            } => set_key(text, section, key, value),
        }
    }
}

/// How [`federation`] builds every organisation.
#[derive(Clone, Debug)]
pub struct FederationOptions {
    /// Common name of the federation root CA.
    pub ca_name: String,
    /// Edits of every `node.toml`, after the CRL is enabled.
    pub config_edits: Vec<ConfigEdit>,
}

/// What was written for one organisation.
#[derive(Clone, Debug)]
pub struct ProvisionedOrg {
    pub org: String,
    pub listen: SocketAddr,
    /// `https://LISTEN`, as certified in its node certificate.
    pub endpoint: String,
    /// `DIR/ORG`: node.crt node.key signing.key encryption.key org-ca.* ca.crt node.toml users/
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub bundle: OrgBundle,
}

impl ProvisionedOrg {
    /// `DIR/ORG/users/USER`: user.crt user.key ca.crt client.toml.
    pub fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(user)
    }
}

/// A provisioned federation.
#[derive(Clone, Debug)]
pub struct ProvisionedFederation {
    /// `DIR/federation-ca`: ca.crt ca.key issued.json crl.pem.
    pub ca_dir: PathBuf,
    /// In plan order.
    pub orgs: Vec<ProvisionedOrg>,
}

/// Create the federation CA and every planned organisation under `dir`:
/// `DIR/federation-ca/` and `DIR/ORG/` with its users and `node.toml`
/// (the template with the federation's CRL enabled, then `options`' edits),
/// each config checked by [`NodeConfig::parse`] before it is written.
pub fn federation(
    dir: &Path,
    plans: &[OrgPlan],
    options: &FederationOptions,
) -> Result<ProvisionedFederation, ProvisionError> {
    let ca_dir = dir.join(CA_DIR);
    let ca_key = ca_dir.join("ca.key");
    if ca_key.exists() {
        return Err(ProvisionError::Exists {
            dir: dir.to_path_buf(),
            ca_key,
        });
    }
    for (i, p) in plans.iter().enumerate() {
        if p.org == CA_DIR {
            return Err(ProvisionError::ReservedName);
        }
        if plans[..i].iter().any(|q| q.org == p.org) {
            return Err(ProvisionError::Duplicate(p.org.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| ProvisionError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = FederationCa::generate(&options.ca_name)?;
    ca.save(&ca_dir)?;
    let crl = config_string(&ca_dir.join("crl.pem").display().to_string());

    let mut orgs = Vec::with_capacity(plans.len());
    for plan in plans {
        let endpoint = format!("https://{}", plan.listen);
        let bundle = ca.issue_org(&OrgRequest {
            profile: OrgProfile {
                org: plan.org.clone(),
                country: plan.country.clone(),
                org_type: plan.org_type.clone(),
                levels: plan.levels.clone(),
                sectors: Vec::new(),
                accreditations: Vec::new(),
                endpoint: endpoint.clone(),
                signing_keys: Vec::new(),
                encryption_keys: vec![],
                functions: plan.functions.iter().map(|f| f.to_string()).collect(),
            },
            validity_days: VALIDITY_DAYS,
        })?;
        let odir = dir.join(&plan.org);
        bundle.save(&odir)?;
        let org = ProvisionedOrg {
            org: plan.org.clone(),
            listen: plan.listen,
            config_path: odir.join("node.toml"),
            dir: odir,
            endpoint,
            bundle,
        };
        for (name, role) in USERS {
            let udir = org.user_dir(name);
            pki::issue_user(
                &org.bundle.org_ca_cert_pem,
                &org.bundle.org_ca_key_pem,
                name,
                role,
                VALIDITY_DAYS,
            )?
            .save(&udir, ca.cert_pem())?;
            write(&udir.join("client.toml"), &client_toml(&org.endpoint))?;
        }
        orgs.push(org);
    }
    // Again, with every issued serial in the index (for revocation).
    ca.save(&ca_dir)?;

    for (plan, org) in plans.iter().zip(&orgs) {
        let peers: Vec<PeerConfig> = orgs
            .iter()
            .filter(|p| plan.static_peers && p.org != org.org)
            .map(|p| PeerConfig {
                org: p.org.clone(),
                endpoint: p.endpoint.clone(),
            })
            .collect();
        let mut text = config::template(&org.org, &org.listen.to_string(), &peers);
        text = ConfigEdit::replace("# crl = \"crl.pem\"", format!("crl = {crl}")).apply(&text)?;
        for edit in &options.config_edits {
            text = edit.apply(&text)?;
        }
        NodeConfig::parse(&text, &org.dir, &org.config_path)?;
        write(&org.config_path, &text)?;
    }
    Ok(ProvisionedFederation { ca_dir, orgs })
}

/// A member's `client.toml` (next to its user.crt, user.key and ca.crt),
/// pointing at its organisation's node.
pub fn client_toml(endpoint: &str) -> String {
    format!(
        "# bluewire client config\nnode = {}\nca = \"ca.crt\"\ncert = \"user.crt\"\nkey = \"user.key\"\n",
        config_string(endpoint)
    )
}

/// `s` as a TOML string.
fn config_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn write(path: &Path, text: &str) -> Result<(), ProvisionError> {
    std::fs::write(path, text).map_err(|source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Set `key = value` in `[section]` of a TOML text: replaces the key's line
/// when the section has one, adds it at the top of the section otherwise.
fn set_key(text: &str, section: &str, key: &str, value: &str) -> Result<String, ProvisionError> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header = format!("[{section}]");
    let start = lines
        .iter()
        .position(|l| l.trim() == header)
        .ok_or_else(|| ProvisionError::NoSection(section.to_string()))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let line = format!("{key} = {value}");
    let existing = (start + 1..end).find(|&i| {
        lines[i]
            .trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    match existing {
        Some(i) => lines[i] = line,
        None => lines.insert(start + 1, line),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(org: &str, country: &str, static_peers: bool) -> OrgPlan {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port();
        OrgPlan {
            org: org.into(),
            country: country.into(),
            org_type: "csirt".into(),
            levels: vec![Level::Technical],
            functions: vec![Function::CsirtsNetwork],
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            static_peers,
        }
    }

    #[test]
    fn two_organisations_get_bundles_users_and_parsing_configs() {
        crate::tls::install_default_provider();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("fed");
        let plans = [plan("csirt-be", "BE", true), plan("csirt-fr", "FR", false)];
        let options = FederationOptions {
            ca_name: "provision test".into(),
            config_edits: vec![
                ConfigEdit::replace("retry_max_ms = 30000", "retry_max_ms = 500"),
                ConfigEdit::set("clusters", "sync_interval_ms", 200),
            ],
        };
        let fed = federation(&dir, &plans, &options).expect("provision");

        assert_eq!(fed.ca_dir, dir.join(CA_DIR));
        for f in ["ca.crt", "ca.key", "issued.json", "crl.pem"] {
            assert!(fed.ca_dir.join(f).is_file(), "{f} in the CA directory");
        }
        let ca = FederationCa::load(&fed.ca_dir).expect("CA loads");
        for p in &plans {
            assert!(
                !ca.serials_of_org(&p.org).is_empty(),
                "{}'s certificates are in the CA index",
                p.org
            );
        }
        assert_eq!(fed.orgs.len(), 2);
        for (p, o) in plans.iter().zip(&fed.orgs) {
            assert_eq!(o.org, p.org);
            assert_eq!(o.dir, dir.join(&p.org));
            assert_eq!(o.endpoint, format!("https://{}", p.listen));
            let bundle =
                "node.crt node.key signing.key encryption.key org-ca.crt org-ca.key ca.crt";
            for f in bundle.split(' ').chain(["node.toml"]) {
                assert!(o.dir.join(f).is_file(), "{f} of {}", o.org);
            }
            for (user, _) in USERS {
                let u = o.user_dir(user);
                for f in ["user.crt", "user.key", "ca.crt", "client.toml"] {
                    assert!(u.join(f).is_file(), "{f} of {}/{user}", o.org);
                }
                let client = std::fs::read_to_string(u.join("client.toml")).expect("client.toml");
                assert!(
                    client.contains(&format!("node = \"{}\"", o.endpoint)),
                    "{client}"
                );
            }
            let c = config::NodeConfig::load(&o.config_path).expect("node.toml parses");
            assert_eq!(c.org, p.org);
            assert_eq!(c.listen, p.listen);
            assert_eq!(
                c.tls.crl.as_deref(),
                Some(fed.ca_dir.join("crl.pem").as_path())
            );
            assert_eq!(c.tls.cert, o.dir.join("node.crt"));
            assert_eq!(c.delivery.retry_max_ms, 500);
            assert_eq!(c.clusters.sync_interval_ms, 200);
        }
        let be = config::NodeConfig::load(&fed.orgs[0].config_path).expect("csirt-be");
        assert_eq!(
            be.peers,
            [PeerConfig {
                org: "csirt-fr".into(),
                endpoint: fed.orgs[1].endpoint.clone(),
            }]
        );
        let fr = config::NodeConfig::load(&fed.orgs[1].config_path).expect("csirt-fr");
        assert!(fr.peers.is_empty(), "{:?}", fr.peers);

        // The same directory again: refused, nothing overwritten.
        let ca_key = std::fs::read(fed.ca_dir.join("ca.key")).expect("ca.key");
        let again = federation(&dir, &plans, &options).expect_err("a second federation");
        assert!(matches!(again, ProvisionError::Exists { .. }), "{again}");
        assert_eq!(
            std::fs::read(fed.ca_dir.join("ca.key")).expect("ca.key"),
            ca_key
        );
    }

    #[test]
    fn bad_plans_and_edits_are_refused() {
        crate::tls::install_default_provider();
        let tmp = tempfile::tempdir().expect("tempdir");
        let options = FederationOptions {
            ca_name: "provision test".into(),
            config_edits: Vec::new(),
        };
        let twice = [plan("csirt-be", "BE", true), plan("csirt-be", "BE", true)];
        let e = federation(&tmp.path().join("a"), &twice, &options).expect_err("twice");
        assert!(
            matches!(e, ProvisionError::Duplicate(ref o) if o == "csirt-be"),
            "{e}"
        );
        let reserved = [plan(CA_DIR, "BE", true)];
        let e = federation(&tmp.path().join("b"), &reserved, &options).expect_err("reserved");
        assert!(matches!(e, ProvisionError::ReservedName), "{e}");
        let stale = FederationOptions {
            config_edits: vec![ConfigEdit::replace("no such line", "x")],
            ..options
        };
        let e = federation(
            &tmp.path().join("c"),
            &[plan("csirt-be", "BE", true)],
            &stale,
        )
        .expect_err("stale edit");
        assert!(matches!(e, ProvisionError::TemplateChanged(_)), "{e}");
    }

    #[test]
    fn keys_are_replaced_or_added_in_their_section() {
        let t = "a = 1\n[clusters]\nsync_interval_ms = 2000  # comment\nx = 1\n[metrics]\n";
        assert_eq!(
            set_key(t, "clusters", "sync_interval_ms", "200").expect("set"),
            "a = 1\n[clusters]\nsync_interval_ms = 200\nx = 1\n[metrics]\n"
        );
        assert_eq!(
            set_key(t, "clusters", "former_member_grace_secs", "0").expect("set"),
            "a = 1\n[clusters]\nformer_member_grace_secs = 0\nsync_interval_ms = 2000  # comment\nx = 1\n[metrics]\n"
        );
        assert!(matches!(
            set_key("a = 1\n", "clusters", "x", "0"),
            Err(ProvisionError::NoSection(s)) if s == "clusters"
        ));
    }

    #[test]
    fn client_config_quotes_the_endpoint() {
        assert_eq!(
            client_toml("https://127.0.0.1:7443"),
            "# bluewire client config\nnode = \"https://127.0.0.1:7443\"\nca = \"ca.crt\"\ncert = \"user.crt\"\nkey = \"user.key\"\n"
        );
    }
}
