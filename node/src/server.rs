//! Wiring: builds a node from its validated config (store, keys, TLS,
//! delivery workers, gRPC services) and serves it on a listener until the
//! shutdown signal, then drains. `Node::start` binds first and returns a
//! handle, so tests bind `127.0.0.1:0` without sleeps. No domain logic here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use bluewire_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;

use crate::cluster::ClusterState;
use crate::config::NodeConfig;
use crate::delivery::{self, PeerLink};
use crate::pki::{OrgProfile, PeerIdentity};
use crate::policy::Direction;
use crate::routing::{Context as RouteContext, Decision, Router};
use crate::signing::SigningKey;
use crate::store::Store;
use crate::tls::{self, TlsIdentity};
use bluewire_proto::v1::Content;
use prost::Message as _;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("signing key {path}: {message}")]
    SigningKey { path: String, message: String },
    #[error("node certificate: {0}")]
    Identity(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("local policy: {0}")]
    Policy(String),
    #[error("cluster logs in the store: {0}")]
    Clusters(String),
    #[error("gRPC server failed: {0}")]
    Serve(String),
    /// Stopped serving, but something still holds the store open (only matters to a process
    /// that wants to open the same data_dir again; a daemon that exits releases it anyway).
    #[error("{0}")]
    StillHeld(String),
}

/// Shared state of a running node; the API layer and workers hold an `Arc`.
pub struct NodeState {
    pub config: NodeConfig,
    pub profile: OrgProfile,
    pub store: Store,
    pub signer: SigningKey,
    pub router: Router,
    pub tls: TlsIdentity,
    pub peers: DashMap<String, Arc<PeerLink>>,
    pub keys: DashMap<String, (String, Vec<u8>)>,
    pub started_at_ms: i64,
    pub listen: SocketAddr,
    /// Verified state of every cluster this node takes part in.
    pub clusters: DashMap<String, Arc<ClusterState>>,
    /// Serialises cluster log changes (apply, sequence).
    pub cluster_lock: tokio::sync::Mutex<()>,
    /// Organisations whose node certificate this node has verified: (DER, profile).
    pub directory: DashMap<String, (Vec<u8>, OrgProfile)>,
    pub fed_clients: DashMap<String, FederationClient<Channel>>,
    pub client_config: Arc<rustls::ClientConfig>,
    pub shutdown_rx: watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Per peer organisation: federation calls and delivered envelopes.
    pub peer_limits: crate::ratelimit::RateLimiter,
    /// Per user certificate: client-service calls.
    pub client_limits: crate::ratelimit::RateLimiter,
}

impl NodeState {
    pub fn org(&self) -> &str {
        &self.profile.org
    }

    /// Remember the signing keys a verified certificate certifies.
    pub async fn learn_keys(&self, profile: &OrgProfile) {
        for k in &profile.signing_keys {
            if self.keys.contains_key(&k.key_id) {
                continue;
            }
            let Ok(pk) = hex::decode(&k.public_key_hex) else {
                warn!(peer.org = %profile.org, key.id = %k.key_id, "certificate carries an undecodable signing key");
                continue;
            };
            if let Err(e) = self.store.put_key(&k.key_id, &profile.org, &pk).await {
                warn!(error = %e, "could not persist a peer signing key");
            }
            self.keys
                .insert(k.key_id.clone(), (profile.org.clone(), pk));
        }
    }

    /// A CA-certified signing key by id.
    pub fn lookup_key(&self, key_id: &str) -> Option<(String, Vec<u8>)> {
        if let Some(k) = self.keys.get(key_id) {
            return Some(k.clone());
        }
        let k = self.store.get_key(key_id).ok().flatten()?;
        self.keys.insert(key_id.to_string(), k.clone());
        Some(k)
    }

    /// A CA-asserted profile: our own, a cluster member's, or one from a
    /// certificate this node has verified.
    pub fn profile_of(&self, org: &str, cluster: Option<&ClusterState>) -> Option<OrgProfile> {
        if org == self.org() {
            return Some(self.profile.clone());
        }
        if let Some(m) = cluster.and_then(|c| c.members.get(org)) {
            return Some(m.profile.clone());
        }
        self.directory.get(org).map(|d| d.1.clone())
    }

    /// The routing decision for one (message, recipient), with this node's
    /// view of the cluster and the CA-asserted profiles it knows.
    pub fn decide(&self, content: &Content, recipient: &str, direction: Direction) -> Decision {
        let d = self.route(content, recipient, direction);
        let dir = match direction {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        };
        self.metrics.decision(dir, d.rule, d.allowed);
        d
    }

    /// [`NodeState::decide`] without counting it in the metrics.
    fn route(&self, content: &Content, recipient: &str, direction: Direction) -> Decision {
        let cluster = if content.cluster.is_empty() {
            None
        } else {
            self.cluster(&content.cluster)
        };
        let rp = self.profile_of(recipient, cluster.as_deref());
        let op = self.profile_of(&content.origin_org, cluster.as_deref());
        self.router.decide(
            content,
            RouteContext {
                direction,
                recipient,
                recipient_profile: rp.as_ref(),
                origin_profile: op.as_ref(),
                cluster: cluster.as_deref(),
                now_ms: delivery::now_ms(),
            },
        )
    }

    /// Would the routing rules let `org` receive `target` (sent by this node
    /// now)? Why not, if not. Not counted in the routing metrics.
    pub fn may_receive(&self, target: &Content, org: &str) -> Result<(), String> {
        if target.origin_org == org {
            return Ok(());
        }
        let d = self.route(target, org, Direction::Egress);
        if d.allowed {
            Ok(())
        } else {
            Err(format!("{}: {}", d.rule, d.reason))
        }
    }

    /// The control-message authority rule (see [`crate::markings::authority`])
    /// for a received retraction or marking change, with the target as this
    /// node holds it.
    pub fn control_authority(
        &self,
        control: &Content,
    ) -> Result<crate::markings::Effect, crate::envelope::Rejected> {
        let Some((origin, id)) = crate::markings::target_of(control) else {
            return Ok(crate::markings::Effect::Apply);
        };
        let target = match self.store.get(origin, id) {
            Ok(Some(m)) => bluewire_proto::v1::Envelope::decode(m.envelope.as_slice())
                .ok()
                .and_then(|e| Content::decode(e.content.as_slice()).ok()),
            Ok(None) => None,
            Err(e) => {
                return Err(crate::envelope::Rejected::Later(format!(
                    "cannot read the target {origin}/{id}: {e}"
                )));
            }
        };
        let standing = target
            .as_ref()
            .map(|t| crate::markings::standing(&self.store, t));
        crate::markings::authority(control, target.as_ref().zip(standing.as_ref()), |t| {
            self.may_receive(t, &control.origin_org)
        })
    }

    /// Prometheus text: counters plus per-peer outbox gauges.
    pub fn render_metrics(&self) -> String {
        for p in self.peers.iter() {
            if let Ok(d) = self.store.outbox_depth(&p.org) {
                self.metrics
                    .gauge("bluewire_outbox_depth", &[("peer", &p.org)], d as f64);
            }
        }
        self.metrics
            .gauge("bluewire_store_head_seq", &[], self.store.head_seq() as f64);
        self.metrics.set_counter(
            crate::metrics::STORE_COMMITS,
            &[],
            self.store.commit_count(),
        );
        self.metrics.render()
    }

    /// Append to the audit trail; a failure is logged, never fatal to the
    /// operation being audited.
    pub async fn audit(&self, events: Vec<crate::audit::AuditEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_audit(events).await {
            warn!(error = %e, "audit append failed");
        }
    }

    /// Runs `work` in the background until it finishes or the node shuts down, whichever
    /// comes first, so no background job outlives [`Node::shutdown`].
    pub fn spawn_until_shutdown(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut shutdown = self.shutdown_rx.clone();
        tokio::spawn(async move {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                () = work => {}
                _ = shutdown.changed() => {}
            }
        });
    }

    /// Wake the delivery workers of these peers.
    pub fn notify_peers<'a>(&self, orgs: impl IntoIterator<Item = &'a String>) {
        for org in orgs {
            if let Some(p) = self.peers.get(org) {
                p.notify.notify_one();
            }
        }
    }
}

/// A running node.
pub struct Node {
    pub state: Arc<NodeState>,
    shutdown: watch::Sender<bool>,
    served: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl Node {
    /// Bind `config.listen` and start serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Self::start_on(config, listener).await
    }

    /// Start serving on an already bound listener.
    pub async fn start_on(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        tls::install_default_provider();
        let listen = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let tls = TlsIdentity::load(
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
            config.tls.crl.as_deref(),
        )?;
        let profile = match tls.own_identity() {
            Ok(PeerIdentity::Node { profile, .. }) => profile,
            Ok(other) => {
                return Err(NodeError::Identity(format!(
                    "{} is not a node certificate ({other:?}): issue one with `bluewire pki issue`",
                    config.tls.cert.display()
                )));
            }
            Err(e) => {
                return Err(NodeError::Identity(format!(
                    "{}: {e}",
                    config.tls.cert.display()
                )));
            }
        };
        if profile.org != config.org {
            return Err(NodeError::Identity(format!(
                "config says org = {:?} but {} was issued to {:?}",
                config.org,
                config.tls.cert.display(),
                profile.org
            )));
        }
        let key_err = |message: String| NodeError::SigningKey {
            path: config.tls.signing_key.display().to_string(),
            message,
        };
        let pem =
            std::fs::read_to_string(&config.tls.signing_key).map_err(|e| key_err(e.to_string()))?;
        let signer =
            SigningKey::from_pkcs8_pem(&profile.org, &pem).map_err(|e| key_err(e.to_string()))?;
        if !profile.signing_keys.iter().any(|k| {
            k.key_id == signer.key_id() && k.public_key_hex == hex::encode(signer.public_key())
        }) {
            return Err(key_err(format!(
                "key {} is not certified in {}: use the signing.key issued with this certificate",
                signer.key_id(),
                config.tls.cert.display()
            )));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::open(&config.data_dir)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server_config = tls.server_config()?;
        let client_config = tls.client_config()?;
        tls.spawn_crl_watcher(
            Duration::from_secs(config.tls.crl_poll_secs),
            shutdown_rx.clone(),
        );

        let policy = Arc::new(
            crate::policy::PolicyHandle::new(config.policy.file.clone())
                .map_err(|e| NodeError::Policy(e.to_string()))?,
        );
        policy.spawn_watcher(
            Duration::from_secs(config.policy.reload_secs),
            shutdown_rx.clone(),
        );
        let state = Arc::new(NodeState {
            profile: profile.clone(),
            store: store.clone(),
            signer,
            router: Router::with_policy(policy.clone()).with_former_member_grace_ms(
                i64::try_from(config.clusters.former_member_grace_secs)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            ),
            tls: tls.clone(),
            peers: DashMap::new(),
            keys: DashMap::new(),
            started_at_ms: delivery::now_ms(),
            listen,
            config: config.clone(),
            clusters: DashMap::new(),
            cluster_lock: tokio::sync::Mutex::new(()),
            directory: DashMap::new(),
            fed_clients: DashMap::new(),
            client_config: client_config.clone(),
            shutdown_rx: shutdown_rx.clone(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            peer_limits: crate::ratelimit::RateLimiter::new(
                config.limits.peer_rate_per_sec,
                config.limits.peer_burst,
            ),
            client_limits: crate::ratelimit::RateLimiter::new(
                config.limits.client_rate_per_sec,
                config.limits.client_burst,
            ),
        });
        state.learn_keys(&profile).await;
        for p in &config.peers {
            let link = PeerLink::new(p);
            state.peers.insert(p.org.clone(), link.clone());
            delivery::spawn_worker(link, state.clone());
        }
        if let Err(e) = crate::replication::load(&state).await {
            return Err(NodeError::Clusters(e.to_string()));
        }
        // Every policy change that takes effect is audited.
        {
            let st = state.clone();
            let mut changes = policy.subscribe();
            let mut shutdown = shutdown_rx.clone();
            let initial = changes.borrow_and_update().clone();
            st.audit(vec![crate::audit::AuditEvent::policy(match &initial {
                Some(h) => format!("local policy in force at start: sha256 {h}"),
                None => "no local policy at start: built-in rules only".to_string(),
            })])
            .await;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = changes.changed() => if r.is_err() { break },
                        _ = shutdown.changed() => break,
                    }
                    let h = changes.borrow_and_update().clone();
                    st.audit(vec![crate::audit::AuditEvent::policy(match h {
                        Some(h) => format!("local policy reloaded: sha256 {h}"),
                        None => "local policy removed".to_string(),
                    })])
                    .await;
                }
            });
        }
        if let Some(addr) = config.metrics.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?;
            info!(metrics.listen = %addr, "Prometheus endpoint on http://{addr}/metrics");
            let st = state.clone();
            crate::metrics::serve_http(
                listener,
                Arc::new(move || st.render_metrics()),
                shutdown_rx.clone(),
            );
        }
        crate::replication::spawn_sync(
            state.clone(),
            Duration::from_millis(config.clusters.sync_interval_ms),
            shutdown_rx.clone(),
        );

        let incoming = tls::incoming(
            listener,
            tls.clone(),
            server_config,
            Duration::from_millis(config.limits.handshake_timeout_ms),
            config.limits.max_connections,
        );
        let router = crate::api::router(state.clone());
        let mut rx = shutdown_rx.clone();
        let span = tracing::info_span!("node", node.org = %profile.org, node.listen = %listen);
        let served = tokio::spawn(
            async move {
                info!(peers = config.peers.len(), "node serving");
                let r = router
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = rx.changed().await;
                    })
                    .await
                    .map_err(|e| NodeError::Serve(e.to_string()));
                store.close().await;
                info!("node stopped");
                r
            }
            .instrument(span),
        );
        Ok(Node {
            state,
            shutdown,
            served,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.state.listen
    }

    /// Stop accepting, stop workers, drain, close the store.
    ///
    /// Returns once the store file is released, so the same data directory can be opened again
    /// in this process: background tasks (delivery workers, cluster pulls, subscriptions,
    /// acknowledgements) hold the node state and stop on the shutdown signal.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        const DRAIN: Duration = Duration::from_secs(10);
        let started = std::time::Instant::now();
        let _ = self.shutdown.send(true);
        let served = match tokio::time::timeout(DRAIN, self.served).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(NodeError::Serve(e.to_string())),
            Err(_) => Err(NodeError::Serve("drain timed out after 10 s".into())),
        };
        let state = self.state;
        loop {
            let (tasks, handles) = (Arc::strong_count(&state) - 1, state.store.handles() - 1);
            if tasks == 0 && handles == 0 {
                break;
            }
            if started.elapsed() > DRAIN {
                return Err(NodeError::StillHeld(format!(
                    "{tasks} task(s) still hold the node state and {handles} the store {} s \
                     after shutdown; the store file stays locked until they end",
                    DRAIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(state);
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "node state released"
        );
        served
    }

    /// Serve until `signal` completes, then shut down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), NodeError> {
        signal.await;
        self.shutdown().await
    }
}
