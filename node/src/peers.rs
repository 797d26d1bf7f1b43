//! Peer links: one per organisation this node delivers to — its endpoint,
//! the live link state `bluewire peers` shows (connected, failures, last
//! error, negotiated key exchange) and the wake-up its delivery worker waits
//! on. Holds no messages and decides nothing.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluewire_proto::v1::federation_client::FederationClient;
use rustls::pki_types::CertificateDer;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::config::PeerConfig;
use crate::tls::LinkInfo;

/// Why no federation client could be made for an organisation.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no endpoint known for {0}: it is neither a configured peer nor in a cluster log")]
    NoEndpoint(String),
    /// The endpoint is not a usable `https://HOST:PORT` (the reason says which part).
    #[error("{0}")]
    BadEndpoint(String),
}

/// Makes federation clients: the one place a connection to another node is set up (mutual
/// TLS with this node's identity, the peer checked against the federation root and the
/// organisation it must be, the request size limit).
#[derive(Clone, Debug)]
pub struct Dialer {
    pub client_config: Arc<rustls::ClientConfig>,
    pub root_der: CertificateDer<'static>,
    pub max_request_bytes: usize,
    /// HTTP/2 keepalive ping interval (`[delivery] keepalive_ms`).
    pub keepalive: Duration,
}

impl Dialer {
    /// A lazily connecting client for `org` at `endpoint`; the handshake's outcome (peer
    /// identity, key exchange) lands in `link`.
    pub fn client(
        &self,
        endpoint: &str,
        org: &str,
        link: Arc<Mutex<LinkInfo>>,
        connect_timeout: Duration,
    ) -> Result<FederationClient<Channel>, ConnectError> {
        let channel = crate::tls::channel(
            endpoint,
            self.client_config.clone(),
            self.root_der.clone(),
            Some(org.to_string()),
            link,
            connect_timeout,
            self.keepalive,
        )
        .map_err(ConnectError::BadEndpoint)?;
        Ok(FederationClient::new(channel)
            .max_decoding_message_size(self.max_request_bytes)
            .max_encoding_message_size(self.max_request_bytes))
    }
}

/// Live state of one peer link, shown by `bluewire status` / `peers`.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub connected: bool,
    pub consecutive_failures: u32,
    pub last_error: String,
    pub last_success_ms: i64,
    /// The member that took this peer's messages on last while the direct link was down
    /// (cleared when the direct link delivers again).
    pub via: Option<String>,
}

/// Handle to a peer's delivery worker.
#[derive(Debug)]
pub struct PeerLink {
    pub org: String,
    /// Set when entries older than what the worker already sent were queued
    /// (e.g. history for a new member): the worker rescans from the start.
    pub rescan: AtomicBool,
    pub endpoint: String,
    pub notify: Notify,
    pub stats: Mutex<PeerStats>,
    pub link: Arc<Mutex<LinkInfo>>,
    /// The delivery worker's working link, while it has one: other workers relay through it.
    pub client: Mutex<Option<FederationClient<Channel>>>,
    /// The peer's last Hello listed [`crate::signature_table::FEATURE`]: its Deliver calls
    /// carry each batch signature once.
    pub shares_signatures: AtomicBool,
    /// The peer's last Hello listed [`crate::api::DELIVER_STREAM`]: deliveries go over one
    /// DeliverStream.
    pub streams_deliveries: AtomicBool,
}

impl PeerLink {
    pub fn new(peer: &PeerConfig) -> Arc<Self> {
        Arc::new(Self {
            org: peer.org.clone(),
            rescan: AtomicBool::new(false),
            endpoint: peer.endpoint.clone(),
            notify: Notify::new(),
            stats: Mutex::new(PeerStats::default()),
            link: Arc::new(Mutex::new(LinkInfo::default())),
            client: Mutex::new(None),
            shares_signatures: AtomicBool::new(false),
            streams_deliveries: AtomicBool::new(false),
        })
    }

    pub fn stats(&self) -> PeerStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How messages for this peer travel now: "direct", "via ORG" or "unreachable".
    pub fn path(&self) -> String {
        let s = self.stats();
        crate::relay::path_label(s.connected, s.via.as_deref())
    }

    /// The working link to this peer, if its worker has one now.
    pub fn working_client(&self) -> Option<FederationClient<Channel>> {
        if !self.stats().connected {
            return None;
        }
        self.client.lock().ok().and_then(|c| c.clone())
    }

    pub(crate) fn set_client(&self, c: &Option<FederationClient<Channel>>) {
        if let Ok(mut slot) = self.client.lock() {
            slot.clone_from(c);
        }
    }

    pub fn kx_group(&self) -> String {
        self.link
            .lock()
            .map(|l| l.kx_group.clone())
            .unwrap_or_default()
    }

    /// Record a failed attempt or call; whether it is worth a log line (the first failure
    /// and then at powers of two, so a long outage does not flood the log).
    pub(crate) fn failed(&self, err: &str) -> Option<u32> {
        let mut failures = 0;
        self.update(|s| {
            s.connected = false;
            s.consecutive_failures += 1;
            s.last_error = err.to_string();
            failures = s.consecutive_failures;
        });
        (failures == 1 || failures.is_power_of_two()).then_some(failures)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut PeerStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }
}
