//! Connecting to a node as a member or operator: loads a user certificate
//! and opens a mutual-TLS gRPC channel (used by the `bluewire` CLI, tests
//! and benchmarks). Holds no state beyond the channel.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluewire_proto::v1::admin_client::AdminClient;
use bluewire_proto::v1::client_client::ClientClient;
use bluewire_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;

use crate::tls::{LinkInfo, TlsError, TlsIdentity};

/// A channel to one node plus what its handshake negotiated.
#[derive(Clone)]
pub struct Connection {
    pub channel: Channel,
    pub link: Arc<Mutex<LinkInfo>>,
    pub endpoint: String,
}

/// Largest message the client side encodes or decodes.
pub const CLIENT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl Connection {
    /// Open a (lazy) channel to `endpoint` with the certificate and key in
    /// PEM files, trusting the federation root in `ca`.
    pub fn open(endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self, String> {
        crate::tls::install_default_provider();
        let id = TlsIdentity::load(ca, cert, key, None).map_err(|e: TlsError| e.to_string())?;
        let cfg = id.client_config().map_err(|e| e.to_string())?;
        let link = Arc::new(Mutex::new(LinkInfo::default()));
        let channel = crate::tls::channel(
            endpoint,
            cfg,
            id.root_der.clone(),
            None,
            link.clone(),
            Duration::from_secs(5),
        )?;
        Ok(Self {
            channel,
            link,
            endpoint: endpoint.to_string(),
        })
    }

    pub fn client(&self) -> ClientClient<Channel> {
        ClientClient::new(self.channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE)
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    pub fn federation(&self) -> FederationClient<Channel> {
        FederationClient::new(self.channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE)
    }

    /// Key-exchange group of the current connection ("" before connecting).
    pub fn kx_group(&self) -> String {
        self.link
            .lock()
            .map(|l| l.kx_group.clone())
            .unwrap_or_default()
    }
}

/// Turn a gRPC error into advice for a person at a terminal.
pub fn explain_status(endpoint: &str, s: &tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message();
    let lower = msg.to_ascii_lowercase();
    let tls_problem = [
        "certificate",
        "handshake",
        "tls",
        "peer closed",
        "unknownca",
        "revoked",
    ]
    .iter()
    .any(|w| lower.contains(w));
    match s.code() {
        Code::Unavailable | Code::Unknown if tls_problem => format!(
            "TLS with {endpoint} failed ({msg}): check --ca is the federation root and --cert/--key are your (unrevoked) user certificate"
        ),
        Code::Unavailable => format!(
            "cannot reach the node at {endpoint} ({msg}): is it running, and is the endpoint right?"
        ),
        Code::PermissionDenied => format!("refused by the node: {msg}"),
        Code::InvalidArgument => format!("the node rejected the request: {msg}"),
        Code::NotFound => msg.to_string(),
        _ => format!("{}: {msg}", s.code()),
    }
}
