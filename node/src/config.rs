//! Node configuration: the TOML file, parsed into a validated typed struct.
//! Relative paths are resolved against the config file's directory. This is
//! the one reference for every field (`bluewire-node init` writes it out with
//! comments). Never reads or mutates environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    org: String,
    listen: String,
    data_dir: PathBuf,
    tls: RawTls,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    clusters: ClustersConfig,
    #[serde(default)]
    feed: FeedConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    taxii: RawTaxii,
    #[serde(default)]
    peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTaxii {
    enabled: bool,
    listen: String,
    page_size: usize,
    default_tlp: String,
    title: String,
}

impl Default for RawTaxii {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:9443".into(),
            page_size: 1000,
            default_tlp: "AMBER".into(),
            title: "Bluewire".into(),
        }
    }
}

/// The TAXII 2.1 server (off by default): HTTPS, TLS 1.3, user certificates or tokens.
#[derive(Debug, Clone)]
pub struct TaxiiConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Objects per page when a client asks for none, and the most it may ask for.
    pub page_size: usize,
    /// The TLP posted objects without a TLP marking are published at.
    pub default_tlp: bluewire_proto::v1::Tlp,
    /// The API root's title.
    pub title: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    file: Option<PathBuf>,
    reload_secs: Option<u64>,
}

/// The Prometheus scrape endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Plain-HTTP `GET /metrics` listener, loopback only (e.g.
    /// "127.0.0.1:9464"); absent: metrics only through `bluewire metrics`
    /// (the mutual-TLS admin API).
    pub listen: Option<SocketAddr>,
}

/// The operator's local routing policy.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// A Cedar file of forbid rules (see deploy/policy/example.cedar); None:
    /// only the built-in rules apply.
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes (s).
    pub reload_secs: u64,
}

/// Cluster log replication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClustersConfig {
    /// How often a member pulls each cluster's log from its convener (ms).
    /// Conveners also push a notification on every change, so this bounds
    /// catch-up after an outage rather than normal propagation.
    pub sync_interval_ms: u64,
    /// How long after the log entry that ended an organisation's membership
    /// (leave, removal, or a change to observer) this node still accepts
    /// messages it created before that entry (s). Bounds how long a departed
    /// member can backdate messages into the cluster; a legitimate message
    /// held up longer than this in the sender's outbox is refused.
    pub former_member_grace_secs: u64,
}

impl Default for ClustersConfig {
    fn default() -> Self {
        Self {
            sync_interval_ms: 2000,
            former_member_grace_secs: 600,
        }
    }
}

/// Subscriptions (`Client.Subscribe`): what a node does about subscribers that do not keep up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// A subscriber whose buffer (at most `feed::buffer::MAX_ITEMS` items and
    /// `feed::buffer::MAX_BYTES` bytes queued for it) stays full this long (ms), taking
    /// nothing from it, is disconnected: its stream ends with RESOURCE_EXHAUSTED, the reason,
    /// and the `after_seq` to resume from without a gap. Must be > 0.
    pub slow_subscriber_ms: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            slow_subscriber_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    signing_key: PathBuf,
    encryption_key: Option<PathBuf>,
    crl: Option<PathBuf>,
    #[serde(default = "default_crl_poll_secs")]
    crl_poll_secs: u64,
    #[serde(default)]
    allow_classical_kx: bool,
}

fn default_crl_poll_secs() -> u64 {
    5
}

/// When a commit of the store reaches the disk (also `bench fanout --store-sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreSync {
    /// `fdatasync` before every acknowledgement.
    #[default]
    Always,
    /// Written to the OS before every acknowledgement, synced every `sync_interval_ms`.
    Interval,
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub sync: StoreSync,
    /// With `sync = "interval"`: how often the file is synced.
    pub sync_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            sync: StoreSync::Always,
            sync_interval_ms: 1000,
        }
    }
}

impl StoreSync {
    /// As node.toml spells it.
    pub fn name(self) -> &'static str {
        match self {
            StoreSync::Always => "always",
            StoreSync::Interval => "interval",
        }
    }
}

impl StoreConfig {
    /// What the store is opened with.
    pub fn mode(&self) -> crate::store::SyncMode {
        match self.sync {
            StoreSync::Always => crate::store::SyncMode::Always,
            StoreSync::Interval => crate::store::SyncMode::Interval(
                std::time::Duration::from_millis(self.sync_interval_ms),
            ),
        }
    }
}

/// Outbox delivery tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Most envelopes handed to a peer in one Deliver call.
    pub batch_size: usize,
    /// First retry delay after a failed delivery; doubles up to `retry_max_ms`, with jitter.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// Per-call timeout for a Deliver call (and for one connection attempt: TCP, TLS, Hello).
    pub timeout_ms: u64,
    /// While a peer is unreachable, a new connection attempt starts this often (attempts
    /// overlap, the first to answer wins), so delivery resumes within about this long of
    /// the link coming back.
    pub reconnect_ms: u64,
    /// HTTP/2 keepalive ping interval on peer links; a link whose ping is unanswered for
    /// twice this long is dropped and replaced.
    pub keepalive_ms: u64,
    /// When the direct link to a peer has been down this long (ms), its messages go through
    /// another member that can reach it (relay); 0: never relay.
    pub relay_after_ms: u64,
    /// Most relays a message this node sends may pass through (1-3).
    pub relay_hop_limit: u32,
    /// Most envelopes this node carries for one recipient on other members' behalf.
    pub relay_max_queued: u64,
    /// Most bytes this node carries on other members' behalf, all recipients together.
    pub relay_max_bytes: u64,
    /// When a publish follows the previous one by less than this (µs) while another publish
    /// is still in progress, the origin's signing thread waits this long for more before
    /// signing, so one signature (and each receiver's check of it) covers more messages: less
    /// CPU per message under load, up to this much more latency. A publish that follows the
    /// previous one by more, or comes while nothing else is in progress, is never held
    /// ([`crate::linger`]). 2000 (the default); 0: never wait. Despite its section,
    /// delivery workers never wait.
    pub linger_us: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            retry_min_ms: 100,
            retry_max_ms: 30_000,
            timeout_ms: 10_000,
            reconnect_ms: 250,
            keepalive_ms: 1_000,
            relay_after_ms: 3_000,
            relay_hop_limit: 2,
            relay_max_queued: 20_000,
            relay_max_bytes: 256 * 1024 * 1024,
            linger_us: 2_000,
        }
    }
}

/// Limits that protect the node from misbehaving peers and clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest gRPC request the node decodes (bytes). An envelope's content
    /// is additionally capped at 1 MiB.
    pub max_request_bytes: usize,
    /// Most envelopes in one Deliver call.
    pub max_batch: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Concurrent connections (peers + clients).
    pub max_connections: usize,
    /// TLS handshake timeout (ms).
    pub handshake_timeout_ms: u64,
    /// Per peer organisation: federation calls plus delivered envelopes per second. Surplus
    /// envelopes are answered RETRY_LATER (the sender backs off), surplus calls
    /// RESOURCE_EXHAUSTED.
    pub peer_rate_per_sec: u32,
    /// How many of those a peer may save up for a burst.
    pub peer_burst: u32,
    /// Per user certificate: client-service calls (publish, get, subscribe, re-share) per
    /// second. Admin calls are not limited.
    pub client_rate_per_sec: u32,
    /// How many of those a user may save up for a burst.
    pub client_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 4 * 1024 * 1024,
            max_batch: 1024,
            max_concurrent_streams: 128,
            max_connections: 1024,
            handshake_timeout_ms: 10_000,
            peer_rate_per_sec: 20_000,
            peer_burst: 40_000,
            client_rate_per_sec: 5_000,
            client_burst: 10_000,
        }
    }
}

/// A peer node this node delivers to (until clusters provide discovery).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub org: String,
    /// `https://HOST:PORT` of the peer's node.
    pub endpoint: String,
}

/// TLS and signing material, resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub signing_key: PathBuf,
    /// Hybrid X25519 + ML-KEM-768 decryption key certified in `cert`: opens what is
    /// encrypted to this organisation (offline bundles). None: nothing encrypted opens here.
    pub encryption_key: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub crl_poll_secs: u64,
    /// Accept (and offer) classical key exchange (X25519, P-256) on node-to-node links.
    /// Off by default: federation links use X25519MLKEM768 only; turning it on is logged.
    pub allow_classical_kx: bool,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub org: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub clusters: ClustersConfig,
    pub feed: FeedConfig,
    pub store: StoreConfig,
    pub policy: PolicyConfig,
    pub metrics: MetricsConfig,
    pub taxii: TaxiiConfig,
    pub peers: Vec<PeerConfig>,
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, path)
    }

    /// Parse `text`; relative paths resolve against `base`. `origin` names the
    /// file in error messages.
    pub fn parse(text: &str, base: &Path, origin: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        check_org(&raw.org).map_err(|m| invalid(format!("org: {m}")))?;
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(format!(
                "listen = {:?} is not an address like \"127.0.0.1:7443\"",
                raw.listen
            ))
        })?;
        let mut seen = std::collections::HashSet::new();
        for p in &raw.peers {
            check_org(&p.org).map_err(|m| invalid(format!("peer org: {m}")))?;
            if p.org == raw.org {
                return Err(invalid(format!("peer {:?} is this node itself", p.org)));
            }
            if !seen.insert(p.org.clone()) {
                return Err(invalid(format!("peer {:?} is listed twice", p.org)));
            }
            parse_endpoint(&p.endpoint).map_err(|m| invalid(format!("peer {:?}: {m}", p.org)))?;
        }
        if raw.delivery.batch_size == 0 || raw.delivery.retry_min_ms == 0 {
            return Err(invalid(
                "delivery.batch_size and delivery.retry_min_ms must be > 0".into(),
            ));
        }
        if raw.delivery.linger_us > MAX_LINGER_US {
            return Err(invalid(format!(
                "delivery.linger_us = {} is more than {MAX_LINGER_US} (µs): a message may wait \
                 this long at signing; use 0 (off) to {MAX_LINGER_US}, \
                 2000 is the measured setting (deploy/README.md, \"Sizing\")",
                raw.delivery.linger_us
            )));
        }
        if raw.delivery.reconnect_ms == 0
            || raw.delivery.keepalive_ms == 0
            || raw.delivery.timeout_ms == 0
        {
            return Err(invalid(
                "delivery.timeout_ms, delivery.reconnect_ms and delivery.keepalive_ms must be > 0"
                    .into(),
            ));
        }
        if !(1..=crate::relay::MAX_HOPS).contains(&raw.delivery.relay_hop_limit) {
            return Err(invalid(format!(
                "delivery.relay_hop_limit is {}: it must be 1 to {}",
                raw.delivery.relay_hop_limit,
                crate::relay::MAX_HOPS
            )));
        }
        if raw.delivery.retry_max_ms < raw.delivery.retry_min_ms {
            return Err(invalid(
                "delivery.retry_max_ms must be >= delivery.retry_min_ms".into(),
            ));
        }
        let l = &raw.limits;
        if l.peer_rate_per_sec == 0
            || l.peer_burst == 0
            || l.client_rate_per_sec == 0
            || l.client_burst == 0
        {
            return Err(invalid(
                "limits.peer_rate_per_sec, limits.peer_burst, limits.client_rate_per_sec and \
                 limits.client_burst must be > 0"
                    .into(),
            ));
        }
        if raw.limits.max_batch == 0 || raw.limits.max_request_bytes < 64 * 1024 {
            return Err(invalid(
                "limits.max_batch must be > 0 and limits.max_request_bytes >= 65536".into(),
            ));
        }
        if raw.feed.slow_subscriber_ms == 0 {
            return Err(invalid(
                "feed.slow_subscriber_ms must be > 0: a subscriber whose buffer stays full that \
                 long is disconnected (10000 is the default)"
                    .into(),
            ));
        }
        if !(MIN_SYNC_INTERVAL_MS..=MAX_SYNC_INTERVAL_MS).contains(&raw.store.sync_interval_ms) {
            return Err(invalid(format!(
                "store.sync_interval_ms = {} is not between {MIN_SYNC_INTERVAL_MS} and \
                 {MAX_SYNC_INTERVAL_MS} (1000, once a second, is the default)",
                raw.store.sync_interval_ms
            )));
        }
        if let Some(m) = raw.metrics.listen
            && !m.ip().is_loopback()
        {
            return Err(invalid(format!(
                "metrics.listen = {m} is not a loopback address: the metrics endpoint is plain HTTP, so it only listens on 127.0.0.0/8 or ::1 (scrape through a local agent, or use `bluewire metrics` over mutual TLS)"
            )));
        }
        let taxii_listen: SocketAddr = raw.taxii.listen.parse().map_err(|_| {
            invalid(format!(
                "taxii.listen = {:?} is not an address like \"127.0.0.1:9443\"",
                raw.taxii.listen
            ))
        })?;
        if !(1..=10_000).contains(&raw.taxii.page_size) {
            return Err(invalid(format!(
                "taxii.page_size = {} is not between 1 and 10000",
                raw.taxii.page_size
            )));
        }
        let default_tlp =
            crate::envelope::parse_tlp_name(&raw.taxii.default_tlp).ok_or_else(|| {
                invalid(format!(
                    "taxii.default_tlp = {:?} is not CLEAR, GREEN, AMBER, AMBER+STRICT or RED",
                    raw.taxii.default_tlp
                ))
            })?;
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        Ok(Self {
            org: raw.org,
            listen,
            data_dir: abs(&raw.data_dir),
            tls: TlsConfig {
                ca: abs(&raw.tls.ca),
                cert: abs(&raw.tls.cert),
                key: abs(&raw.tls.key),
                signing_key: abs(&raw.tls.signing_key),
                encryption_key: raw.tls.encryption_key.as_deref().map(abs),
                crl: raw.tls.crl.as_deref().map(abs),
                crl_poll_secs: raw.tls.crl_poll_secs.max(1),
                allow_classical_kx: raw.tls.allow_classical_kx,
            },
            delivery: raw.delivery,
            limits: raw.limits,
            clusters: ClustersConfig {
                sync_interval_ms: raw.clusters.sync_interval_ms.max(100),
                former_member_grace_secs: raw.clusters.former_member_grace_secs,
            },
            feed: raw.feed,
            store: raw.store,
            policy: PolicyConfig {
                file: raw.policy.file.as_deref().map(abs),
                reload_secs: raw.policy.reload_secs.unwrap_or(5).max(1),
            },
            metrics: raw.metrics,
            taxii: TaxiiConfig {
                enabled: raw.taxii.enabled,
                listen: taxii_listen,
                page_size: raw.taxii.page_size,
                default_tlp,
                title: raw.taxii.title,
            },
            peers: raw.peers,
        })
    }
}

/// `store.sync_interval_ms` bounds: at most a thousand syncs a second, at least one every
/// ten minutes (what a power cut can lose).
const MIN_SYNC_INTERVAL_MS: u64 = 1;
const MAX_SYNC_INTERVAL_MS: u64 = 600_000;
/// Longest `delivery.linger_us` (100 ms).
const MAX_LINGER_US: u64 = 100_000;

/// Organisation ids, by the federation's one rule ([`crate::pki::check_org_id`]).
pub fn check_org(org: &str) -> Result<(), String> {
    crate::pki::check_org_id(org).map_err(|e| match e {
        crate::pki::PkiError::Invalid(why) => why,
        other => other.to_string(),
    })
}

/// `https://HOST:PORT` → (host, port).
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let rest = endpoint.strip_prefix("https://").ok_or_else(|| {
        format!("endpoint {endpoint:?} must start with https:// (there is no plaintext port)")
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint {endpoint:?} has no :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("endpoint {endpoint:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    Ok((host.to_string(), port))
}

/// A commented configuration, as written by `bluewire-node init`.
pub fn template(org: &str, listen: &str, peers: &[PeerConfig]) -> String {
    let mut s = format!(
        r#"# Bluewire node configuration. Relative paths are relative to this file.

# This organisation's id. Must equal the org the federation CA asserted in
# tls.cert; the node refuses to start otherwise.
org = "{org}"

# Address of the single mutual-TLS 1.3 gRPC port (federation, client and admin
# services). There is no plaintext port.
listen = "{listen}"

# The embedded store (messages, outboxes, cursors, keys, rejections).
data_dir = "data"

[tls]
# Federation root CA certificate: the only trust anchor.
ca = "ca.crt"
# This node's certificate and key, issued by `bluewire pki issue`.
cert = "node.crt"
key = "node.key"
# Hybrid Ed25519 + ML-DSA-65 message-signing key (two PEM blocks) certified in node.crt.
signing_key = "signing.key"
# Hybrid X25519 + ML-KEM-768 decryption key certified in node.crt: opens messages
# encrypted end to end to this organisation (`publish --encrypt`) and offline
# bundles (`bluewire bundle import`). Without it, neither opens here.
encryption_key = "encryption.key"
# Optional CA-signed revocation list (`bluewire pki revoke`); re-read when it
# changes, checked every crl_poll_secs seconds. No restart needed.
# crl = "crl.pem"
crl_poll_secs = 5
# Links to other nodes use the post-quantum hybrid X25519MLKEM768 key exchange
# only; a node offering nothing else is refused. Set true to also offer and
# accept X25519/P-256 with nodes (every such link is logged). Listeners for
# third-party tools (TAXII) always keep a classical fallback.
allow_classical_kx = false

[delivery]
batch_size = 256        # envelopes per Deliver call at most (halved after a call that timed out, e.g. on a slow link)
retry_min_ms = 100      # first retry delay after a peer answered RETRY_LATER or failed; doubles with jitter ...
retry_max_ms = 30000    # ... up to this
timeout_ms = 10000      # per Deliver call and per connection attempt
reconnect_ms = 250      # while a peer is unreachable, a new connection attempt this often
keepalive_ms = 1000     # HTTP/2 ping interval on peer links; unanswered for 2x this: link replaced
relay_after_ms = 3000   # direct link down this long: deliver through a member that can reach the peer (0: never)
relay_hop_limit = 2     # most relays a message of this node passes through (1-3)
relay_max_queued = 20000        # most envelopes carried for one recipient on others' behalf
relay_max_bytes = 268435456     # most bytes carried on others' behalf, all recipients together
linger_us = 2000        # a publish following the previous one by less than this (µs), while another is in progress, waits this long for company at signing: less CPU per message under load, up to this much more latency (0: never wait)

[limits]
max_request_bytes = 4194304   # largest gRPC request decoded; content is capped at 1 MiB
max_batch = 1024              # envelopes per incoming Deliver call
max_concurrent_streams = 128  # HTTP/2 streams per connection
max_connections = 1024
handshake_timeout_ms = 10000
peer_rate_per_sec = 20000     # per peer org: calls + delivered envelopes; surplus envelopes are
peer_burst = 40000            #   answered RETRY_LATER and the peer backs off
client_rate_per_sec = 5000    # per user certificate: publish/get/subscribe/reshare calls
client_burst = 10000          #   (admin calls are not limited)

[clusters]
sync_interval_ms = 2000       # members pull cluster logs this often (conveners also push)
former_member_grace_secs = 600  # a departed member's earlier messages are accepted this long

[feed]
# A subscriber that takes nothing from its buffer (64 items / 1 MiB) for this
# long while it is full is disconnected with the reason and the after_seq to
# resume from; the others and the node never wait for it.
slow_subscriber_ms = 10000

[store]
# When a commit reaches the disk. "always": fdatasync before every
# acknowledgement, so what was acknowledged survives kill -9, an OS crash and a
# power cut. "interval": written to the OS before every acknowledgement
# (survives kill -9 and restarts) and synced every sync_interval_ms; an OS
# crash or a power cut loses up to that much (plus the sync in progress), and
# the node then refuses to start until the operator accepts it. About half the
# latency; see deploy/README.md, "Store durability".
sync = "always"
sync_interval_ms = 1000

[metrics]
# Prometheus scrape endpoint (plain HTTP GET /metrics, loopback addresses only).
# listen = "127.0.0.1:9464"

[taxii]
# A TAXII 2.1 server for the tools that read and publish STIX (MISP, OpenCTI, SIEMs):
# HTTPS with TLS 1.3; users authenticate with their certificate or a token
# (bluewire token create). Off by default.
enabled = false
listen = "127.0.0.1:9443"
page_size = 1000        # objects per page by default, and the most a client may ask for
default_tlp = "AMBER"   # the TLP of posted objects that carry none

[policy]
# Optional Cedar file of forbid rules that narrow what the built-in routing
# rules allow (never widen). Checked every reload_secs; `bluewire policy check`
# validates it. See deploy/policy/example.cedar.
# file = "policy.cedar"
reload_secs = 5
"#
    );
    if peers.is_empty() {
        s.push_str(
            "\n# Static peers for messages sent without a cluster (cluster members are\n# discovered from the cluster logs):\n# [[peers]]\n# org = \"cert-eu\"\n# endpoint = \"https://127.0.0.1:7444\"\n",
        );
    }
    for p in peers {
        s.push_str(&format!(
            "\n[[peers]]\norg = \"{}\"\nendpoint = \"{}\"\n",
            p.org, p.endpoint
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses() {
        let t = template(
            "csirt-be",
            "127.0.0.1:7443",
            &[PeerConfig {
                org: "cert-eu".into(),
                endpoint: "https://127.0.0.1:7444".into(),
            }],
        );
        let c = NodeConfig::parse(&t, Path::new("/etc/bw"), Path::new("node.toml")).unwrap();
        assert_eq!(c.org, "csirt-be");
        assert_eq!(c.tls.cert, PathBuf::from("/etc/bw/node.crt"));
        assert_eq!(c.peers.len(), 1);
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../deploy/examples/node.toml");
        let c = NodeConfig::parse(text, Path::new("/etc/bluewire"), Path::new("node.toml"))
            .expect("deploy/examples/node.toml must stay a valid config");
        assert!(c.metrics.listen.is_some_and(|a| a.ip().is_loopback()));
        assert!(c.policy.file.is_some());
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let t = template("csirt-be", "nowhere", &[]);
        let e = NodeConfig::parse(&t, Path::new("."), Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let t = template(
            "csirt-be",
            "127.0.0.1:1",
            &[PeerConfig {
                org: "x".into(),
                endpoint: "http://a:1".into(),
            }],
        );
        let e = NodeConfig::parse(&t, Path::new("."), Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("organisation id"), "{e}");
        let e = NodeConfig::parse("org = 1", Path::new("."), Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
        assert!(parse_endpoint("http://a:1").unwrap_err().contains("https"));
        let t = template("csirt-be", "127.0.0.1:1", &[]).replacen(
            "peer_burst = 40000",
            "peer_burst = 0",
            1,
        );
        let e = NodeConfig::parse(&t, Path::new("."), Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("limits.peer_burst"), "{e}");
        let c = NodeConfig::parse(
            &template("csirt-be", "127.0.0.1:1", &[]),
            Path::new("."),
            Path::new("n.toml"),
        )
        .unwrap();
        assert_eq!(
            (c.limits.peer_rate_per_sec, c.limits.client_rate_per_sec),
            (20_000, 5_000)
        );
        assert_eq!(c.feed.slow_subscriber_ms, 10_000);
        let t = template("csirt-be", "127.0.0.1:1", &[]).replacen(
            "slow_subscriber_ms = 10000",
            "slow_subscriber_ms = 0",
            1,
        );
        let e = NodeConfig::parse(&t, Path::new("."), Path::new("n.toml")).unwrap_err();
        assert!(e.to_string().contains("feed.slow_subscriber_ms"), "{e}");
        // Files written before the [feed] section keep the default.
        let t = template("csirt-be", "127.0.0.1:1", &[]);
        let (before, after) = t.split_once("[feed]").expect("the template has [feed]");
        let (_, rest) = after.split_once("[metrics]").expect("[metrics] follows");
        let c = NodeConfig::parse(
            &format!("{before}[metrics]{rest}"),
            Path::new("."),
            Path::new("n.toml"),
        )
        .unwrap();
        assert_eq!(c.feed.slow_subscriber_ms, 10_000);
    }

    #[test]
    fn the_store_syncs_every_commit_unless_told_otherwise() {
        let parse = |t: &str| NodeConfig::parse(t, Path::new("."), Path::new("n.toml"));
        let t = template("csirt-be", "127.0.0.1:1", &[]);
        assert_eq!(
            parse(&t).unwrap().store.mode(),
            crate::store::SyncMode::Always
        );
        // Files written before the [store] section sync every commit too.
        let (before, after) = t.split_once("[store]").expect("the template has [store]");
        let (_, rest) = after.split_once("[metrics]").expect("[metrics] follows");
        let old = format!("{before}[metrics]{rest}");
        assert_eq!(
            parse(&old).unwrap().store.mode(),
            crate::store::SyncMode::Always
        );
        let interval = t.replacen("sync = \"always\"", "sync = \"interval\"", 1);
        assert_eq!(
            parse(&interval).unwrap().store.mode(),
            crate::store::SyncMode::Interval(std::time::Duration::from_secs(1))
        );
        let every_50 = interval.replacen("sync_interval_ms = 1000", "sync_interval_ms = 50", 1);
        assert_eq!(
            parse(&every_50).unwrap().store.mode(),
            crate::store::SyncMode::Interval(std::time::Duration::from_millis(50))
        );
        for (bad, says) in [
            (
                "sync_interval_ms = 0",
                "store.sync_interval_ms = 0 is not between 1 and 600000",
            ),
            (
                "sync_interval_ms = 600001",
                "store.sync_interval_ms = 600001",
            ),
        ] {
            let e = parse(&interval.replacen("sync_interval_ms = 1000", bad, 1)).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = parse(&t.replacen("sync = \"always\"", "sync = \"never\"", 1)).unwrap_err();
        assert!(
            e.to_string().contains("always") && e.to_string().contains("interval"),
            "{e}"
        );
    }

    #[test]
    fn linger_is_2000_us_by_default_can_be_turned_off_and_is_bounded() {
        let parse = |t: &str| NodeConfig::parse(t, Path::new("."), Path::new("n.toml"));
        let t = template("csirt-be", "127.0.0.1:1", &[]);
        assert_eq!(parse(&t).unwrap().delivery.linger_us, 2_000);
        let off = t.replacen("linger_us = 2000 ", "linger_us = 0 ", 1);
        assert_eq!(parse(&off).unwrap().delivery.linger_us, 0);
        // A file written before the setting existed gets the default.
        let old = t.replacen("linger_us = 2000 ", "", 1);
        assert_ne!(old, t);
        assert_eq!(parse(&old).unwrap().delivery.linger_us, 2_000);
        let most = t.replacen("linger_us = 2000 ", "linger_us = 100000 ", 1);
        assert_eq!(parse(&most).unwrap().delivery.linger_us, 100_000);
        let e = parse(&t.replacen("linger_us = 2000 ", "linger_us = 100001 ", 1)).unwrap_err();
        assert!(
            e.to_string().contains("delivery.linger_us = 100001")
                && e.to_string().contains("use 0 (off) to 100000"),
            "{e}"
        );
    }
}
