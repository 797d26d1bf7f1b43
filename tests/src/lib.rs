//! Harness for Bluewire integration tests: a federation of real nodes with
//! real certificates and real stores in a temporary directory, talking mutual
//! TLS over 127.0.0.1 only.
//!
//! `TestFederation::new` binds a listener per organisation first (so every
//! endpoint is known before certificates and configs are written), has
//! [`bluewire_node::provision::federation`] create the federation CA, each
//! organisation with an `operator` and an `analyst` user and its `node.toml`
//! with every other organisation as a peer, and starts the nodes in-process
//! (or leaves them for a real process, see [`OrgSpec::external`] and
//! [`TestFederation::spawn_process`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bluewire_node;
pub use bluewire_proto::v1 as pb;

use bluewire_node::client::Connection;
use bluewire_node::config::NodeConfig;
use bluewire_node::pki::{Function, Level, OrgBundle};
pub use bluewire_node::provision::ConfigEdit;
use bluewire_node::provision::{self, FederationOptions, OrgPlan};
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
    /// Blueprint functions its certificate asserts (none unless given).
    pub functions: Vec<Function>,
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
            functions: Vec::new(),
            in_process: true,
        }
    }

    /// With these blueprint functions in its certificate.
    pub fn with_functions(mut self, functions: &[Function]) -> Self {
        self.functions = functions.to_vec();
        self
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
    /// `ORG`: node.crt node.key signing.key org-ca.* ca.crt node.toml data/ users/
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub bundle: OrgBundle,
}

impl OrgInfo {
    pub fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(user)
    }
}

/// The three organisations most tests use: csirt-be (technical and operational), csirt-fr
/// (a CSIRT, technical) and cert-eu (an EU body, technical).
pub fn be_fr_eu() -> Vec<OrgSpec> {
    vec![
        OrgSpec::new(
            "csirt-be",
            "BE",
            "csirt",
            &[Level::Technical, Level::Operational],
        ),
        OrgSpec::csirt("csirt-fr", "FR"),
        OrgSpec::new("cert-eu", "EU", "eu-body", &[Level::Technical]),
    ]
}

/// A running test federation. Dropping it kills node processes it spawned;
/// in-process nodes stop with the test's runtime.
pub struct TestFederation {
    pub dir: tempfile::TempDir,
    /// The federation CA directory (ca.crt, ca.key, issued.json, crl.pem),
    /// `federation-ca` in `dir`.
    pub fed_dir: PathBuf,
    orgs: BTreeMap<String, OrgInfo>,
    nodes: Mutex<HashMap<String, Node>>,
    procs: Mutex<HashMap<String, Child>>,
    proxies: HashMap<String, FaultProxy>,
    paths: HashMap<(String, String), FaultProxy>,
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
    /// `[clusters] former_member_grace_secs` for every node (how long after
    /// the log entry that ended its membership a former member's earlier
    /// messages are still accepted); `None` keeps the template's value.
    pub former_member_grace_secs: Option<u64>,
    /// Every node serves TAXII 2.1 on a free loopback port (`NodeState::taxii_addr`).
    pub taxii: bool,
    /// Organisations every other node reaches through a [`FaultProxy`] (its static peer
    /// endpoint points at the proxy; users still connect directly): [`TestFederation::link`].
    pub proxied: Vec<String>,
    /// Directed links (from, to) that go through a [`FaultProxy`] of their own: `from`'s
    /// static peer entry for `to` points at it, everyone else reaches `to` directly
    /// ([`TestFederation::path`]). Not for organisations in `proxied`.
    pub proxied_paths: Vec<(String, String)>,
    /// Keep the shipped `[delivery]` retry and timeout settings instead of the harness's
    /// faster ones (for measuring what an operator gets).
    pub shipped_delivery: bool,
    /// Further edits of every node.toml, applied after the harness's own (e.g.
    /// `ConfigEdit::set("feed", "slow_subscriber_ms", 300)`).
    pub config_edits: Vec<ConfigEdit>,
}

impl Default for FedOptions {
    fn default() -> Self {
        Self {
            static_peers: true,
            cluster_sync_interval_ms: None,
            former_member_grace_secs: None,
            taxii: false,
            proxied: Vec::new(),
            proxied_paths: Vec::new(),
            shipped_delivery: false,
            config_edits: Vec::new(),
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

/// The harness's edits of every node.toml: the `[clusters]` settings `opts`
/// asks for, and revocation and delivery retries tuned so tests converge
/// fast.
fn config_edits(opts: &FedOptions) -> Vec<ConfigEdit> {
    let mut edits = Vec::new();
    if let Some(ms) = opts.cluster_sync_interval_ms {
        edits.push(ConfigEdit::set("clusters", "sync_interval_ms", ms));
    }
    if let Some(secs) = opts.former_member_grace_secs {
        edits.push(ConfigEdit::set(
            "clusters",
            "former_member_grace_secs",
            secs,
        ));
    }
    if opts.taxii {
        edits.push(ConfigEdit::set("taxii", "enabled", true));
        edits.push(ConfigEdit::set("taxii", "listen", "\"127.0.0.1:0\""));
    }
    edits.push(ConfigEdit::replace(
        "crl_poll_secs = 5",
        "crl_poll_secs = 1",
    ));
    if !opts.shipped_delivery {
        edits.extend([
            ConfigEdit::replace("retry_min_ms = 100", "retry_min_ms = 50"),
            ConfigEdit::replace("retry_max_ms = 30000", "retry_max_ms = 500"),
            ConfigEdit::replace("timeout_ms = 10000 ", "timeout_ms = 5000 "),
        ]);
    }
    edits.extend(opts.config_edits.iter().cloned());
    edits
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
                ..FedOptions::default()
            },
        )
        .await
    }

    /// csirt-be and csirt-fr, csirt-fr reached only through a fault proxy
    /// ([`TestFederation::link`]), with the shipped `[delivery]` settings: a link to cut.
    pub async fn be_fr_through_a_proxy() -> TestFederation {
        Self::with_options(
            &[
                OrgSpec::csirt("csirt-be", "BE"),
                OrgSpec::csirt("csirt-fr", "FR"),
            ],
            FedOptions {
                proxied: vec!["csirt-fr".into()],
                shipped_delivery: true,
                ..FedOptions::default()
            },
        )
        .await
    }

    /// Create and start a federation of `orgs` built as `opts` says.
    pub async fn with_options(orgs: &[OrgSpec], opts: FedOptions) -> TestFederation {
        bluewire_node::tls::install_default_provider();
        let dir = tempfile::tempdir().expect("tempdir");

        // Bind first so that every endpoint is known.
        let mut listeners = HashMap::new();
        let mut plans = Vec::new();
        for spec in orgs {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            plans.push(OrgPlan {
                org: spec.org.clone(),
                country: spec.country.clone(),
                org_type: spec.org_type.clone(),
                levels: spec.levels.clone(),
                functions: spec.functions.clone(),
                listen: l.local_addr().expect("local addr"),
                static_peers: opts.static_peers,
            });
            listeners.insert(spec.org.clone(), l);
        }
        let provisioned = provision::federation(
            dir.path(),
            &plans,
            &FederationOptions {
                ca_name: "Bluewire test federation".into(),
                config_edits: config_edits(&opts),
            },
        )
        .unwrap_or_else(|e| panic!("provision the test federation: {e}"));
        let infos: BTreeMap<String, OrgInfo> = provisioned
            .orgs
            .into_iter()
            .map(|o| {
                let info = OrgInfo {
                    org: o.org.clone(),
                    port: o.listen.port(),
                    endpoint: o.endpoint,
                    dir: o.dir,
                    config_path: o.config_path,
                    bundle: o.bundle,
                };
                (o.org, info)
            })
            .collect();

        let mut proxies = HashMap::new();
        for org in &opts.proxied {
            let info: &OrgInfo = infos
                .get(org)
                .unwrap_or_else(|| panic!("proxied organisation {org} is not in the federation"));
            let upstream = SocketAddr::from(([127, 0, 0, 1], info.port));
            let proxy = FaultProxy::start(upstream).await;
            let (from, to) = (info.endpoint.clone(), format!("https://{}", proxy.addr()));
            for other in infos.values().filter(|o| &o.org != org) {
                let text = std::fs::read_to_string(&other.config_path).expect("read node.toml");
                let quoted = format!("\"{from}\"");
                assert!(
                    text.contains(&quoted),
                    "{} has no peer entry for {org}",
                    other.org
                );
                let text = text.replace(&quoted, &format!("\"{to}\""));
                std::fs::write(&other.config_path, text).expect("write node.toml");
            }
            proxies.insert(org.clone(), proxy);
        }
        let mut paths = HashMap::new();
        for (from, to) in &opts.proxied_paths {
            assert!(
                !opts.proxied.contains(to),
                "{to} is reached through a proxy already"
            );
            let (Some(src), Some(dst)) = (infos.get(from), infos.get(to)) else {
                panic!("proxied path {from} -> {to}: not both in the federation");
            };
            let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], dst.port))).await;
            let text = std::fs::read_to_string(&src.config_path).expect("read node.toml");
            let quoted = format!("\"{}\"", dst.endpoint);
            assert!(text.contains(&quoted), "{from} has no peer entry for {to}");
            let text = text.replace(&quoted, &format!("\"https://{}\"", proxy.addr()));
            std::fs::write(&src.config_path, text).expect("write node.toml");
            paths.insert((from.clone(), to.clone()), proxy);
        }
        let fed = TestFederation {
            dir,
            fed_dir: provisioned.ca_dir,
            orgs: infos,
            nodes: Mutex::new(HashMap::new()),
            procs: Mutex::new(HashMap::new()),
            proxies,
            paths,
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

    /// The link into `org` (every other node reaches it through this proxy); only for
    /// organisations in [`FedOptions::proxied`].
    pub fn link(&self, org: &str) -> &FaultProxy {
        self.proxies
            .get(org)
            .unwrap_or_else(|| panic!("{org} is not reached through a proxy (FedOptions::proxied)"))
    }

    /// The link from `from` to `to` (only `from` goes through this proxy to reach `to`); only
    /// for paths in [`FedOptions::proxied_paths`].
    pub fn path(&self, from: &str, to: &str) -> &FaultProxy {
        self.paths
            .get(&(from.to_string(), to.to_string()))
            .unwrap_or_else(|| {
                panic!("{from} -> {to} is not a proxied path (FedOptions::proxied_paths)")
            })
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
    /// How many messages `org`'s node holds (0 while it does not answer).
    pub async fn message_count(&self, org: &str) -> u64 {
        self.admin(org)
            .status(pb::StatusRequest {})
            .await
            .map(|s| s.into_inner().messages)
            .unwrap_or(0)
    }

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

/// A retraction as an analyst publishes it (the node fills target_origin).
/// A TLP:RED free-text message for `to` alone, encrypted end to end (`publish --encrypt`).
pub fn sealed_red_for(to: &str, title: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Red as i32,
            ..Default::default()
        }),
        recipients: vec![to.into()],
        encrypt: true,
        ..free_text(title)
    }
}

/// The title of a free-text feed item (panics on any other body).
pub fn item_title(item: &pb::FeedItem) -> String {
    match item.content.as_ref().and_then(|c| c.body.clone()) {
        Some(pb::content::Body::FreeText(t)) => t.title,
        other => panic!("not a free-text body: {other:?}"),
    }
}

pub fn retraction_request(target: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::Retraction as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Clear as i32,
            ..Default::default()
        }),
        body: Some(pb::publish_request::Body::Retraction(pb::Retraction {
            target_id: target.into(),
            reason: "false positive".into(),
            target_origin: String::new(),
        })),
        ..Default::default()
    }
}

/// A marking change as an analyst publishes it (the node fills target_origin).
pub fn marking_request(target: &str, tlp: pb::Tlp) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::MarkingChange as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Clear as i32,
            ..Default::default()
        }),
        body: Some(pb::publish_request::Body::MarkingChange(
            pb::MarkingChange {
                target_id: target.into(),
                marking: Some(pb::Marking {
                    tlp: tlp as i32,
                    ..Default::default()
                }),
                reason: "sensitivity reassessed".into(),
                target_origin: String::new(),
            },
        )),
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
    pb::Content::decode(&env.content[..]).expect("stored content decodes")
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

    /// The value of one metrics series at `org` (`series` as rendered: the name, with its
    /// labels if it has any), read over Admin.Metrics; None when it is not rendered.
    pub async fn metric(&self, org: &str, series: &str) -> Option<f64> {
        let text = self
            .admin(org)
            .metrics(pb::MetricsRequest {})
            .await
            .expect("metrics")
            .into_inner()
            .text;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
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

    /// Message `id` as `org`'s analyst gets it (None: not held, or retracted).
    pub async fn get(&self, org: &str, id: &str) -> Option<pb::FeedItem> {
        self.client(org, "analyst")
            .client()
            .get(pb::GetRequest { id: id.into() })
            .await
            .ok()
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

/// Cluster operations through the Admin and Federation APIs (what the CLI
/// and a peer node call), shared by the cluster and rogue-member tests.
pub mod clusters {
    use bluewire_node::cluster::sign_op;
    use bluewire_node::envelope::new_id;
    use tonic::Code;

    use crate::{TestFederation, now_ms, pb};
    use pb::{ClusterRole as Role, HistoryRule};

    pub type Res = Result<pb::ClusterInfo, tonic::Status>;

    /// Create cluster `name` at `org`: technical level, at most TLP:AMBER.
    pub async fn create(
        fed: &TestFederation,
        org: &str,
        name: &str,
        history: HistoryRule,
    ) -> pb::ClusterInfo {
        create_with(
            fed,
            org,
            pb::ClusterCreateRequest {
                name: name.into(),
                purpose: format!("purpose of {name}"),
                levels: vec![pb::Level::Technical as i32],
                max_tlp: pb::Tlp::Amber as i32,
                history: history as i32,
                exercise: false,
            },
        )
        .await
    }

    /// Admin.ClusterCreate at `org` with the request as given; panics on error.
    pub async fn create_with(
        fed: &TestFederation,
        org: &str,
        req: pb::ClusterCreateRequest,
    ) -> pb::ClusterInfo {
        let name = req.name.clone();
        fed.admin(org)
            .cluster_create(req)
            .await
            .unwrap_or_else(|e| panic!("ClusterCreate {name} at {org}: {e}"))
            .into_inner()
    }

    /// `by` invites `org`, naming `org`'s endpoint (so it works whether or not
    /// `by` has seen `org`'s certificate before).
    pub async fn invite(fed: &TestFederation, by: &str, id: &str, org: &str, role: Role) -> Res {
        fed.admin(by)
            .cluster_invite(pb::ClusterInviteRequest {
                cluster: id.into(),
                org: org.into(),
                role: role as i32,
                endpoint: fed.info(org).endpoint.clone(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub fn cref(id: &str) -> pb::ClusterRef {
        pb::ClusterRef { cluster: id.into() }
    }

    pub async fn accept(fed: &TestFederation, org: &str, id: &str) -> Res {
        fed.admin(org)
            .cluster_accept(cref(id))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn decline(fed: &TestFederation, org: &str, id: &str) -> Res {
        fed.admin(org)
            .cluster_decline(cref(id))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn leave(fed: &TestFederation, org: &str, id: &str) -> Res {
        fed.admin(org)
            .cluster_leave(cref(id))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn remove(fed: &TestFederation, by: &str, id: &str, org: &str, reason: &str) -> Res {
        fed.admin(by)
            .cluster_remove(pb::ClusterMemberRequest {
                cluster: id.into(),
                org: org.into(),
                reason: reason.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn set_role(fed: &TestFederation, by: &str, id: &str, org: &str, role: Role) -> Res {
        fed.admin(by)
            .cluster_set_role(pb::ClusterSetRoleRequest {
                cluster: id.into(),
                org: org.into(),
                role: role as i32,
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn transfer(fed: &TestFederation, by: &str, id: &str, to: &str) -> Res {
        fed.admin(by)
            .cluster_transfer_convener(pb::ClusterMemberRequest {
                cluster: id.into(),
                org: to.into(),
                reason: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The cluster an operation answered; panics with the refusal otherwise.
    pub fn ok(r: Res, what: &str) -> pb::ClusterInfo {
        r.unwrap_or_else(|e| panic!("{what}: {:?} {}", e.code(), e.message()))
    }

    /// The refusal of an operation, checked for its code and reason.
    pub fn refused(r: Res, code: Code, needle: &str, what: &str) -> tonic::Status {
        let e = match r {
            Ok(i) => panic!(
                "{what}: expected {code:?}, but it succeeded (head {})",
                i.head_index
            ),
            Err(e) => e,
        };
        assert_eq!(
            e.code(),
            code,
            "{what}: wrong code; message: {}",
            e.message()
        );
        assert!(
            e.message().contains(needle),
            "{what}: message {:?} should mention {needle:?}",
            e.message()
        );
        e
    }

    /// Wait until `org`'s own ClusterList shows `id` with `my_state`.
    pub async fn await_my_state(fed: &TestFederation, org: &str, id: &str, my_state: &str) {
        crate::assert_eventually!(
            fed.cluster(org, id)
                .await
                .is_some_and(|c| c.my_state == my_state),
            "{org} never saw itself as {my_state:?} in {id}: {:?}",
            fed.cluster(org, id).await
        );
    }

    /// Invite `org` (by `by`), let it see the invitation and accept, and wait
    /// until every org in `all` has the convener's head.
    pub async fn join(
        fed: &TestFederation,
        by: &str,
        convener: &str,
        id: &str,
        org: &str,
        role: Role,
        all: &[&str],
    ) {
        ok(
            invite(fed, by, id, org, role).await,
            &format!("{by} invites {org}"),
        );
        await_my_state(fed, org, id, "invited").await;
        // An op is based on the actor's own head: let it catch up first.
        fed.await_cluster_head(id, convener, &[org]).await;
        let info = ok(accept(fed, org, id).await, &format!("{org} accepts {id}"));
        assert_eq!(info.my_state, "member");
        // Former members and decliners no longer replicate the log.
        let involved: Vec<&str> = all
            .iter()
            .copied()
            .filter(|o| {
                info.members
                    .iter()
                    .any(|m| m.org == *o && (m.state == "member" || m.state == "invited"))
            })
            .collect();
        fed.await_cluster_head(id, convener, &involved).await;
    }

    /// Deliver one envelope to `to` with `from`'s node certificate.
    pub async fn deliver_as(
        fed: &TestFederation,
        from: &str,
        to: &str,
        env: pb::Envelope,
    ) -> pb::DeliveryResult {
        let mut r = fed
            .node_conn(from, to)
            .federation()
            .deliver(pb::DeliverRequest {
                envelopes: vec![env],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("Deliver {from} -> {to}: {e}"))
            .into_inner()
            .results;
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    /// A cluster op signed by `actor`'s key, based on `base`.
    pub fn signed_op(
        fed: &TestFederation,
        id: &str,
        base: &str,
        actor: &str,
        op: pb::cluster_op::Op,
    ) -> pb::SignedClusterOp {
        sign_op(
            &fed.signing_key(actor),
            &pb::ClusterOp {
                cluster_id: id.into(),
                base_hash: base.into(),
                op_id: new_id(),
                actor_org: actor.into(),
                at_ms: now_ms(),
                op: Some(op),
            },
        )
    }

    /// Federation.ProposeClusterOp from `from`'s node to `to`.
    pub async fn propose(
        fed: &TestFederation,
        from: &str,
        to: &str,
        op: pb::SignedClusterOp,
    ) -> Result<pb::ClusterLogResponse, tonic::Status> {
        fed.node_conn(from, to)
            .federation()
            .propose_cluster_op(pb::ProposeClusterOpRequest { op: Some(op) })
            .await
            .map(|r| r.into_inner())
    }
}

pub mod chaos;
pub mod faultproxy;
pub use faultproxy::FaultProxy;
pub mod python;
pub mod rogue;

/// Admin.AuditExport at `org`.
pub async fn audit_export(fed: &TestFederation, org: &str) -> Vec<pb::AuditRecord> {
    let mut s = fed
        .admin(org)
        .audit_export(pb::AuditExportRequest::default())
        .await
        .unwrap_or_else(|e| panic!("Admin.AuditExport at {org}: {e}"))
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r.unwrap_or_else(|e| panic!("AuditExport stream at {org}: {e}")));
    }
    out
}

/// Admin.AuditVerify at `org`.
pub async fn audit_verify(fed: &TestFederation, org: &str) -> pb::AuditVerifyResponse {
    fed.admin(org)
        .audit_verify(pb::AuditVerifyRequest {})
        .await
        .unwrap_or_else(|e| panic!("Admin.AuditVerify at {org}: {e}"))
        .into_inner()
}
