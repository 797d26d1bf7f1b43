//! Harness for Bluewire integration tests: a federation of real nodes with
//! real certificates and real stores in a temporary directory, talking mutual
//! TLS over 127.0.0.1 only.
//!
//! `TestFederation::new` creates a federation CA, binds a listener per
//! organisation first (so every endpoint is known before certificates and
//! configs are written), issues each organisation with an `operator` and an
//! `analyst` user, writes `node.toml` with every other organisation as a
//! peer, and starts the nodes in-process (or leaves them for a real process,
//! see [`OrgSpec::external`] and [`TestFederation::spawn_process`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bluewire_node;
pub use bluewire_proto::v1 as pb;

use bluewire_node::client::Connection;
use bluewire_node::config::{self, NodeConfig, PeerConfig};
use bluewire_node::pki::{self, FederationCa, Level, OrgBundle, OrgProfile, OrgRequest, UserRole};
use bluewire_node::signing::SigningKey;
use bluewire_node::{Node, NodeState};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

/// How long an `assert_eventually!` waits before failing.
pub const EVENTUALLY: Duration = Duration::from_secs(30);
/// Poll interval of `assert_eventually!`.
pub const POLL: Duration = Duration::from_millis(50);

/// Poll `$cond` (an expression that may `.await`, evaluating to `bool`) every
/// 50 ms until it is true; panic with the message after [`EVENTUALLY`] (or
/// the given timeout).
#[macro_export]
macro_rules! assert_eventually {
    (timeout = $t:expr, $cond:expr, $($msg:tt)+) => {{
        let __timeout: ::std::time::Duration = $t;
        let __deadline = ::std::time::Instant::now() + __timeout;
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() >= __deadline {
                panic!("not true within {:?}: {}", __timeout, format!($($msg)+));
            }
            ::tokio::time::sleep($crate::POLL).await;
        }
    }};
    ($cond:expr, $($msg:tt)+) => {
        $crate::assert_eventually!(timeout = $crate::EVENTUALLY, $cond, $($msg)+)
    };
}

/// An organisation to create.
#[derive(Clone, Debug)]
pub struct OrgSpec {
    pub org: String,
    pub country: String,
    pub org_type: String,
    pub levels: Vec<Level>,
    /// Start the node inside the test process (default) or leave it for
    /// [`TestFederation::spawn_process`].
    pub in_process: bool,
}

impl OrgSpec {
    pub fn new(org: &str, country: &str, org_type: &str, levels: &[Level]) -> Self {
        Self {
            org: org.into(),
            country: country.into(),
            org_type: org_type.into(),
            levels: levels.to_vec(),
            in_process: true,
        }
    }

    /// A national CSIRT at the technical level.
    pub fn csirt(org: &str, country: &str) -> Self {
        Self::new(org, country, "csirt", &[Level::Technical])
    }

    /// Do not start this node in-process; run it with `spawn_process`.
    pub fn external(mut self) -> Self {
        self.in_process = false;
        self
    }
}

/// Files and addresses of one organisation.
#[derive(Clone, Debug)]
pub struct OrgInfo {
    pub org: String,
    pub port: u16,
    pub endpoint: String,
    /// `orgs/ORG`: node.crt node.key signing.key org-ca.* ca.crt node.toml data/ users/
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub bundle: OrgBundle,
}

impl OrgInfo {
    pub fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(user)
    }
}

/// A running test federation. Dropping it kills node processes it spawned;
/// in-process nodes stop with the test's runtime.
pub struct TestFederation {
    pub dir: tempfile::TempDir,
    /// The federation CA directory (ca.crt, ca.key, issued.json, crl.pem).
    pub fed_dir: PathBuf,
    orgs: BTreeMap<String, OrgInfo>,
    nodes: Mutex<HashMap<String, Node>>,
    procs: Mutex<HashMap<String, Child>>,
}

impl Drop for TestFederation {
    fn drop(&mut self) {
        if let Ok(mut procs) = self.procs.lock() {
            for (_, mut c) in procs.drain() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// How [`TestFederation::with_options`] builds a federation.
#[derive(Clone, Debug)]
pub struct FedOptions {
    /// Write every other organisation as a static `[[peers]]` entry
    /// (default). Without static peers, nodes only know each other from
    /// what they learn at run time (e.g. certificates in cluster logs).
    pub static_peers: bool,
    /// `[clusters] sync_interval_ms` for every node; `None` keeps the
    /// template's value.
    pub cluster_sync_interval_ms: Option<u64>,
}

impl Default for FedOptions {
    fn default() -> Self {
        Self {
            static_peers: true,
            cluster_sync_interval_ms: None,
        }
    }
}

impl FedOptions {
    /// Static peers as usual, cluster logs pulled every 200 ms.
    pub fn fast_cluster_sync() -> Self {
        Self {
            cluster_sync_interval_ms: Some(200),
            ..Self::default()
        }
    }
}

/// The node config the harness writes: the template with the CRL enabled
/// and delivery retries tuned so tests converge fast, optionally with
/// another `[clusters] sync_interval_ms`.
fn node_toml_with(
    org: &str,
    port: u16,
    peers: &[PeerConfig],
    crl: &Path,
    cluster_sync_interval_ms: Option<u64>,
) -> String {
    let t = config::template(org, &format!("127.0.0.1:{port}"), peers);
    let t = match cluster_sync_interval_ms {
        None => t,
        Some(ms) if t.contains("sync_interval_ms = 2000") => t.replacen(
            "sync_interval_ms = 2000",
            &format!("sync_interval_ms = {ms}"),
            1,
        ),
        Some(ms) => {
            assert!(
                !t.contains("[clusters]"),
                "config template has a [clusters] section without sync_interval_ms = 2000"
            );
            format!("{t}\n[clusters]\nsync_interval_ms = {ms}\n")
        }
    };
    let replace = |t: String, from: &str, to: &str| {
        assert!(
            t.contains(from),
            "config template no longer contains {from:?}"
        );
        t.replacen(from, to, 1)
    };
    let t = replace(
        t,
        "# crl = \"crl.pem\"",
        &format!("crl = {:?}", crl.display().to_string()),
    );
    let t = replace(t, "crl_poll_secs = 5", "crl_poll_secs = 1");
    let t = replace(t, "retry_min_ms = 100", "retry_min_ms = 50");
    let t = replace(t, "retry_max_ms = 30000", "retry_max_ms = 500");
    replace(t, "timeout_ms = 10000 ", "timeout_ms = 5000 ")
}

/// Bind 127.0.0.1:`port`, retrying for a while (the previous owner of the
/// port may still be releasing it).
pub async fn bind_port(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Err(e) => panic!("cannot re-bind 127.0.0.1:{port}: {e}"),
        }
    }
}

impl TestFederation {
    /// Create and start a federation of `orgs` (every org peers with every other).
    pub async fn new(orgs: &[OrgSpec]) -> TestFederation {
        Self::with_options(orgs, FedOptions::default()).await
    }

    /// A federation whose nodes have no static peers at all (they must
    /// discover each other, e.g. from cluster logs), with cluster logs
    /// pulled every 200 ms.
    pub async fn new_without_peers(orgs: &[OrgSpec]) -> TestFederation {
        Self::with_options(
            orgs,
            FedOptions {
                static_peers: false,
                cluster_sync_interval_ms: Some(200),
            },
        )
        .await
    }

    /// Create and start a federation of `orgs` built as `opts` says.
    pub async fn with_options(orgs: &[OrgSpec], opts: FedOptions) -> TestFederation {
        bluewire_node::tls::install_default_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let fed_dir = dir.path().join("fed");
        let ca = FederationCa::generate("Bluewire test federation").expect("federation CA");
        ca.save(&fed_dir).expect("save federation CA");

        // Bind first so that every endpoint is known.
        let mut listeners = HashMap::new();
        let mut ports = BTreeMap::new();
        for spec in orgs {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            ports.insert(spec.org.clone(), l.local_addr().expect("local addr").port());
            listeners.insert(spec.org.clone(), l);
        }

        let mut infos = BTreeMap::new();
        for spec in orgs {
            let port = ports[&spec.org];
            let endpoint = format!("https://127.0.0.1:{port}");
            let bundle = ca
                .issue_org(&OrgRequest {
                    profile: OrgProfile {
                        org: spec.org.clone(),
                        country: spec.country.clone(),
                        org_type: spec.org_type.clone(),
                        levels: spec.levels.clone(),
                        sectors: Vec::new(),
                        accreditations: Vec::new(),
                        endpoint: endpoint.clone(),
                        signing_keys: Vec::new(),
                    },
                    validity_days: 30,
                })
                .expect("issue organisation");
            let odir = dir.path().join("orgs").join(&spec.org);
            bundle.save(&odir).expect("save org bundle");
            for (name, role) in [
                ("operator", UserRole::Operator),
                ("analyst", UserRole::Analyst),
            ] {
                pki::issue_user(
                    &bundle.org_ca_cert_pem,
                    &bundle.org_ca_key_pem,
                    name,
                    role,
                    30,
                )
                .expect("issue user")
                .save(&odir.join("users").join(name), &bundle.ca_cert_pem)
                .expect("save user");
            }
            let peers: Vec<PeerConfig> = ports
                .iter()
                .filter(|_| opts.static_peers)
                .filter(|(o, _)| **o != spec.org)
                .map(|(o, p)| PeerConfig {
                    org: o.clone(),
                    endpoint: format!("https://127.0.0.1:{p}"),
                })
                .collect();
            let config_path = odir.join("node.toml");
            std::fs::write(
                &config_path,
                node_toml_with(
                    &spec.org,
                    port,
                    &peers,
                    &fed_dir.join("crl.pem"),
                    opts.cluster_sync_interval_ms,
                ),
            )
            .expect("write node.toml");
            infos.insert(
                spec.org.clone(),
                OrgInfo {
                    org: spec.org.clone(),
                    port,
                    endpoint,
                    dir: odir,
                    config_path,
                    bundle,
                },
            );
        }
        // Persist the index with every issued serial (for revocation tests).
        ca.save(&fed_dir).expect("save federation CA index");

        let fed = TestFederation {
            dir,
            fed_dir,
            orgs: infos,
            nodes: Mutex::new(HashMap::new()),
            procs: Mutex::new(HashMap::new()),
        };
        for spec in orgs {
            let l = listeners.remove(&spec.org).expect("listener");
            if spec.in_process {
                l.set_nonblocking(true).expect("nonblocking");
                let l = TcpListener::from_std(l).expect("tokio listener");
                fed.start_on(&spec.org, l).await;
            }
        }
        fed
    }

    pub fn info(&self, org: &str) -> &OrgInfo {
        self.orgs
            .get(org)
            .unwrap_or_else(|| panic!("no organisation {org} in this federation"))
    }

    pub fn orgs(&self) -> impl Iterator<Item = &OrgInfo> {
        self.orgs.values()
    }

    pub fn config(&self, org: &str) -> NodeConfig {
        NodeConfig::load(&self.info(org).config_path).expect("load node.toml")
    }

    async fn start_on(&self, org: &str, listener: TcpListener) {
        let node = Node::start_on(self.config(org), listener)
            .await
            .unwrap_or_else(|e| panic!("start node {org}: {e}"));
        self.nodes.lock().unwrap().insert(org.to_string(), node);
    }

    /// Shared state of a running in-process node.
    pub fn node(&self, org: &str) -> Arc<NodeState> {
        self.nodes
            .lock()
            .unwrap()
            .get(org)
            .unwrap_or_else(|| panic!("node {org} is not running in-process"))
            .state
            .clone()
    }

    /// Stop an in-process node (drains and closes its store).
    pub async fn stop(&self, org: &str) {
        let node = self
            .nodes
            .lock()
            .unwrap()
            .remove(org)
            .unwrap_or_else(|| panic!("node {org} is not running in-process"));
        node.shutdown()
            .await
            .unwrap_or_else(|e| panic!("stop node {org}: {e}"));
    }

    /// Start a stopped in-process node again on the same port and config.
    pub async fn restart(&self, org: &str) {
        let l = bind_port(self.info(org).port).await;
        self.start_on(org, l).await;
    }

    /// Run `org`'s node as a real process (`bin` is the `bw-test-node`
    /// binary) and wait until it answers its operator.
    pub async fn spawn_process(&self, org: &str, bin: &Path) {
        let info = self.info(org);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(info.dir.join("node.log"))
            .expect("node log");
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&info.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.procs.lock().unwrap().insert(org.to_string(), child);
        let admin = self.client(org, "operator").admin();
        assert_eventually!(
            {
                let mut a = admin.clone();
                a.status(pb::StatusRequest {}).await.is_ok()
            },
            "process node {org} never answered Admin.Status (see {})",
            info.dir.join("node.log").display()
        );
    }

    /// SIGKILL a node process spawned with `spawn_process`.
    pub fn kill_process(&self, org: &str) {
        let mut child = self
            .procs
            .lock()
            .unwrap()
            .remove(org)
            .unwrap_or_else(|| panic!("no process for {org}"));
        child.kill().expect("SIGKILL node process");
        child.wait().expect("reap node process");
    }

    /// A connection to `org`'s node as its user `user` ("operator"/"analyst").
    pub fn client(&self, org: &str, user: &str) -> Connection {
        let info = self.info(org);
        let u = info.user_dir(user);
        Connection::open(
            &info.endpoint,
            &u.join("ca.crt"),
            &u.join("user.crt"),
            &u.join("user.key"),
        )
        .unwrap_or_else(|e| panic!("connection to {org} as {user}: {e}"))
    }

    /// A connection to `to`'s node as a user of `from` (cross-organisation).
    pub fn client_as(&self, from: &str, user: &str, to: &str) -> Connection {
        let u = self.info(from).user_dir(user);
        Connection::open(
            &self.info(to).endpoint,
            &u.join("ca.crt"),
            &u.join("user.crt"),
            &u.join("user.key"),
        )
        .unwrap_or_else(|e| panic!("connection to {to} as {from}/{user}: {e}"))
    }

    /// A connection to `to`'s node with `from`'s node certificate.
    pub fn node_conn(&self, from: &str, to: &str) -> Connection {
        let d = &self.info(from).dir;
        Connection::open(
            &self.info(to).endpoint,
            &d.join("ca.crt"),
            &d.join("node.crt"),
            &d.join("node.key"),
        )
        .unwrap_or_else(|e| panic!("node connection {from} -> {to}: {e}"))
    }

    /// `org`'s message-signing key.
    pub fn signing_key(&self, org: &str) -> SigningKey {
        let pem = std::fs::read_to_string(self.info(org).dir.join("signing.key"))
            .expect("read signing.key");
        SigningKey::from_pkcs8_pem(org, &pem).expect("signing key")
    }

    /// Publish a free-text message at `org` as its analyst; panics on error.
    pub async fn publish(&self, org: &str, text: &str) -> pb::PublishResponse {
        self.client(org, "analyst")
            .client()
            .publish(free_text(text))
            .await
            .unwrap_or_else(|e| panic!("publish at {org}: {e}"))
            .into_inner()
    }

    /// The node's whole feed (backlog only), optionally of one origin.
    pub async fn feed(&self, org: &str, origin: Option<&str>) -> Vec<pb::FeedItem> {
        backlog(&self.client(org, "analyst"), origin).await
    }

    /// Admin.Peers at `org`.
    pub async fn peers(&self, org: &str) -> Vec<pb::PeerStatus> {
        self.client(org, "operator")
            .admin()
            .peers(pb::PeersRequest {})
            .await
            .unwrap_or_else(|e| panic!("Admin.Peers at {org}: {e}"))
            .into_inner()
            .peers
    }

    /// Admin.Rejections at `org`.
    pub async fn rejections(&self, org: &str) -> Vec<pb::Rejection> {
        self.client(org, "operator")
            .admin()
            .rejections(pb::RejectionsRequest { limit: 1000 })
            .await
            .unwrap_or_else(|e| panic!("Admin.Rejections at {org}: {e}"))
            .into_inner()
            .rejections
    }
}

/// A TLP:GREEN technical free-text publish request.
pub fn free_text(text: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Green as i32,
            ..Default::default()
        }),
        body: Some(pb::publish_request::Body::FreeText(pb::FreeText {
            title: text.into(),
            body: format!("body of {text}"),
        })),
        ..Default::default()
    }
}

/// Content for a free-text message originated by `org` (to seal by hand).
pub fn content(org: &str, text: &str) -> pb::Content {
    pb::Content {
        id: bluewire_node::envelope::new_id(),
        origin_org: org.into(),
        author: format!("{org}/analyst"),
        created_at_ms: now_ms(),
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Green as i32,
            ..Default::default()
        }),
        body: Some(pb::content::Body::FreeText(pb::FreeText {
            title: text.into(),
            body: format!("body of {text}"),
        })),
        ..Default::default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Everything currently in a node's feed (`no_follow`), optionally of one origin.
pub async fn backlog(conn: &Connection, origin: Option<&str>) -> Vec<pb::FeedItem> {
    let req = pb::SubscribeRequest {
        origins: origin.map(|o| vec![o.to_string()]).unwrap_or_default(),
        no_follow: true,
        ..Default::default()
    };
    let mut s = conn
        .client()
        .subscribe(req)
        .await
        .unwrap_or_else(|e| panic!("subscribe at {}: {e}", conn.endpoint))
        .into_inner();
    let mut out = Vec::new();
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Ok(Some(Ok(item))) => out.push(item),
            Ok(Some(Err(e))) => panic!("feed at {} failed: {e}", conn.endpoint),
            Ok(None) => return out,
            Err(_) => panic!(
                "backlog at {} did not end within {EVENTUALLY:?}",
                conn.endpoint
            ),
        }
    }
}

/// Read exactly `n` items from a subscription stream within `timeout`.
pub async fn take_items(
    stream: &mut tonic::Streaming<pb::FeedItem>,
    n: usize,
    timeout: Duration,
) -> Vec<pb::FeedItem> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(item))) => out.push(item),
            Ok(Ok(None)) => panic!("feed ended after {} of {n} items", out.len()),
            Ok(Err(e)) => panic!("feed failed after {} of {n} items: {e}", out.len()),
            Err(_) => panic!("only {} of {n} feed items within {timeout:?}", out.len()),
        }
    }
    out
}

/// Decoded content of a feed item (from the signed bytes, not the convenience copy).
pub fn item_content(item: &pb::FeedItem) -> pb::Content {
    use prost::Message;
    let env = item.envelope.as_ref().expect("feed item without envelope");
    pb::Content::decode(env.content.as_slice()).expect("stored content decodes")
}

/// Message id of a feed item.
pub fn item_id(item: &pb::FeedItem) -> String {
    item_content(item).id
}

// ---------------------------------------------------------------------------
// Clusters.

impl TestFederation {
    /// The Admin service at `org`, as its operator.
    pub fn admin(&self, org: &str) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
        self.client(org, "operator").admin()
    }

    /// What `org`'s node knows of cluster `id` (Admin.ClusterList), or None.
    pub async fn cluster(&self, org: &str, id: &str) -> Option<pb::ClusterInfo> {
        self.admin(org)
            .cluster_list(pb::ClusterListRequest {})
            .await
            .unwrap_or_else(|e| panic!("Admin.ClusterList at {org}: {e}"))
            .into_inner()
            .clusters
            .into_iter()
            .find(|c| c.id == id)
    }

    /// Admin.ClusterLogEntries at `org`; panics on error.
    pub async fn cluster_log(&self, org: &str, id: &str) -> Vec<pb::ClusterLogLine> {
        self.admin(org)
            .cluster_log_entries(pb::ClusterRef { cluster: id.into() })
            .await
            .unwrap_or_else(|e| panic!("Admin.ClusterLogEntries {id} at {org}: {e}"))
            .into_inner()
            .entries
    }

    /// Wait until every org in `orgs` holds cluster `id` at the same head
    /// as `reference` (re-read on every poll); returns `reference`'s view.
    pub async fn await_cluster_head(
        &self,
        id: &str,
        reference: &str,
        orgs: &[&str],
    ) -> pb::ClusterInfo {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let r = self
                .cluster(reference, id)
                .await
                .unwrap_or_else(|| panic!("{reference} does not know cluster {id}"));
            let mut behind = Vec::new();
            for org in orgs {
                let h = self
                    .cluster(org, id)
                    .await
                    .map(|c| (c.head_index, c.head_hash));
                if h.as_ref().map(|h| &h.1) != Some(&r.head_hash) {
                    behind.push(format!("{org} at {h:?}"));
                }
            }
            if behind.is_empty() {
                return r;
            }
            if Instant::now() >= deadline {
                panic!(
                    "cluster {id}: not at {reference}'s head ({}, {}) within {EVENTUALLY:?}: {}",
                    r.head_index,
                    r.head_hash,
                    behind.join("; ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Publish `text` to cluster `cluster` at `org` as its analyst.
    pub async fn publish_to_cluster(
        &self,
        org: &str,
        cluster: &str,
        text: &str,
    ) -> Result<pb::PublishResponse, tonic::Status> {
        let mut req = free_text(text);
        req.cluster = cluster.into();
        self.client(org, "analyst")
            .client()
            .publish(req)
            .await
            .map(|r| r.into_inner())
    }

    /// Is message `id` stored at `org`'s node?
    pub async fn has_message(&self, org: &str, id: &str) -> bool {
        self.client(org, "analyst")
            .client()
            .get(pb::GetRequest { id: id.into() })
            .await
            .is_ok()
    }
}
