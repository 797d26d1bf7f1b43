//! Which node and which certificate: the global connection flags, the
//! client config file (`client.toml`, as `bluewire pki issue-user` writes
//! it) they fall back on, opening the mutual-TLS connection, and errors of
//! calls on it explained for people.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use bluewire_node::client::{Connection, explain_status};
use clap::Args;
use serde::Deserialize;

/// Where the node is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Client config file (TOML: node, ca, cert, key). Default: ./bluewire-client.toml if present.
    #[arg(long, global = true, env = "BLUEWIRE_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Node endpoint, https://HOST:PORT.
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// Federation root CA certificate.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Your user certificate (issued by `bluewire pki issue-user`).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Your user key.
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    node: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl ConnArgs {
    pub fn connect(&self) -> anyhow::Result<Connection> {
        let mut node = self.node.clone();
        let mut ca = self.ca.clone();
        let mut cert = self.cert.clone();
        let mut key = self.key.clone();
        let file = match &self.client_config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("bluewire-client.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read client config {}", path.display()))?;
            let f: ClientFile = toml::from_str(&text)
                .with_context(|| format!("client config {} is not valid", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
            node = node.or(f.node);
            ca = ca.or(f.ca.map(abs));
            cert = cert.or(f.cert.map(abs));
            key = key.or(f.key.map(abs));
        }
        let missing = |what: &str| {
            anyhow!(
                "no {what}: pass --{what} or --client-config FILE (written by `bluewire pki issue-user` as client.toml)"
            )
        };
        let node = node.ok_or_else(|| missing("node"))?;
        let ca = ca.ok_or_else(|| missing("ca"))?;
        let cert = cert.ok_or_else(|| missing("cert"))?;
        let key = key.ok_or_else(|| missing("key"))?;
        Connection::open(&node, &ca, &cert, &key).map_err(|e| anyhow!(e))
    }
}

/// A failed call on `conn`, explained for people.
pub fn status_err(conn: &Connection, s: tonic::Status) -> anyhow::Error {
    anyhow!(explain_status(&conn.endpoint, &s))
}
