//! The shared state of a running node: handles to its store, keys, router,
//! directory, clusters, peer links, limits and metrics, which the API layer,
//! services and workers hold behind an `Arc`. Also what the node knows, as the
//! pure decisions see it ([`Known`]). Builds nothing (that is `server`) and
//! decides nothing itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bluewire_proto::v1::Content;
use bluewire_proto::v1::federation_client::FederationClient;
use dashmap::DashMap;
use prost::Message as _;
use tonic::transport::Channel;
use tracing::warn;

use crate::cluster::ClusterState;
use crate::config::NodeConfig;
use crate::known::Known;
use crate::peers::{ConnectError, PeerLink};
use crate::pki::OrgProfile;
use crate::policy::Direction;
use crate::routing::{Decision, Router};
use crate::signing::SigningKey;
use crate::store::Store;
use crate::tls::TlsIdentity;

/// Why a cluster a user named could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ClusterRefError {
    #[error("no cluster {0:?} is known here (cluster list shows what this node knows)")]
    Unknown(String),
    #[error("{0:?} matches several clusters ({1}); use the full id")]
    Ambiguous(String, String),
}

/// Shared state of a running node; the API layer and workers hold an `Arc`.
pub struct NodeState {
    pub config: NodeConfig,
    pub profile: OrgProfile,
    pub store: Store,
    pub signer: Arc<SigningKey>,
    /// Seals published messages in batches, one signature each (see [`crate::sealer`]).
    pub sealer: crate::sealer::Sealer,
    /// Batch signatures this node verified on arrival (see [`crate::envelope::open_with`]).
    pub verified_batches: crate::envelope::VerifiedBatches,
    /// Opens what is encrypted to this organisation (`[tls] encryption_key`).
    /// This organisation's decryption keys: `[tls] encryption_key` first, then the keys
    /// `pki rotate` retired beside it (`retired/*/encryption.key`). Empty: none configured.
    pub decryptors: Vec<crate::e2e::RecipientKey>,
    pub router: Router,
    pub tls: TlsIdentity,
    pub peers: DashMap<String, Arc<PeerLink>>,
    pub started_at_ms: i64,
    pub listen: SocketAddr,
    /// Verified state of every cluster this node takes part in.
    pub clusters: DashMap<String, Arc<ClusterState>>,
    /// Serialises cluster log changes (apply, sequence).
    pub cluster_lock: tokio::sync::Mutex<()>,
    /// Organisations this node knows: certificates, profiles, signing keys.
    pub directory: crate::directory::Directory,
    pub fed_clients: DashMap<String, FederationClient<Channel>>,
    /// Makes every federation client this node uses.
    pub dialer: crate::peers::Dialer,
    /// Every background task of this node (see [`crate::tasks`]).
    pub tasks: crate::tasks::Tasks,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Per peer organisation: federation calls and delivered envelopes.
    pub peer_limits: crate::ratelimit::RateLimiter,
    /// Per user certificate: client-service calls.
    pub client_limits: crate::ratelimit::RateLimiter,
    /// Where the TAXII server listens, once it does (`[taxii]`).
    pub taxii_listen: std::sync::OnceLock<SocketAddr>,
    /// Delivery streams open per peer organisation (see [`crate::api::DELIVER_STREAM`]).
    pub deliver_streams: crate::api::DeliverStreams,
}

impl NodeState {
    pub fn org(&self) -> &str {
        &self.profile.org
    }

    /// The TAXII server's bound address, when `[taxii]` is enabled.
    pub fn taxii_addr(&self) -> Option<SocketAddr> {
        self.taxii_listen.get().copied()
    }

    /// The routing decision for one (message, recipient), with this node's
    /// view of the cluster and the CA-asserted profiles it knows, counted in
    /// the routing metrics.
    pub fn decide(&self, content: &Content, recipient: &str, direction: Direction) -> Decision {
        let d = crate::known::route(
            self,
            &self.router,
            content,
            recipient,
            direction,
            crate::clock::now_ms(),
        );
        let dir = match direction {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        };
        self.metrics.decision(dir, d.rule, d.allowed);
        d
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
        let sync_every = match self.store.sync_mode() {
            crate::store::SyncMode::Always => 0.0,
            crate::store::SyncMode::Interval(d) => d.as_secs_f64(),
        };
        self.metrics
            .gauge(crate::metrics::STORE_SYNC_INTERVAL, &[], sync_every);
        // Rendered from the start (at 0), so alerts on them work before the first subscriber.
        self.metrics
            .gauge_add(crate::metrics::SUBSCRIBERS, &[], 0.0);
        self.metrics
            .add(crate::metrics::SLOW_SUBSCRIBERS_DISCONNECTED, &[], 0);
        self.metrics.set_counter(
            crate::metrics::STORE_COMMITS,
            &[],
            self.store.commit_count(),
        );
        self.metrics.set_counter(
            crate::metrics::STORE_COMMITS_BY_CALLER,
            &[],
            self.store.commits_by_caller(),
        );
        self.metrics.set_counter(
            crate::metrics::SIGNATURES_MADE,
            &[],
            self.sealer.signatures(),
        );
        self.metrics.set_stage(
            crate::metrics::Stage::StoreCommit,
            self.store.commit_time(),
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

    /// A cluster by full id, or by name when exactly one known cluster has it.
    pub fn resolve_cluster(&self, name: &str) -> Result<Arc<ClusterState>, ClusterRefError> {
        if let Some(c) = self.clusters.get(name) {
            return Ok(c.clone());
        }
        let matches: Vec<Arc<ClusterState>> = self
            .clusters
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.clone())
            .collect();
        match matches.len() {
            0 => Err(ClusterRefError::Unknown(name.to_string())),
            1 => Ok(matches[0].clone()),
            _ => Err(ClusterRefError::Ambiguous(
                name.to_string(),
                matches
                    .iter()
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    pub fn cluster(&self, id: &str) -> Option<Arc<ClusterState>> {
        self.clusters.get(id).map(|c| c.clone())
    }

    /// The endpoint of an organisation this node knows.
    pub fn endpoint_of(&self, org: &str) -> Option<String> {
        if let Some(p) = self.peers.get(org) {
            return Some(p.endpoint.clone());
        }
        self.directory.endpoint(org)
    }

    /// A federation client for `org` (lazy connection, cached).
    pub fn fed_client(&self, org: &str) -> Result<FederationClient<Channel>, ConnectError> {
        if let Some(c) = self.fed_clients.get(org) {
            return Ok(c.clone());
        }
        let endpoint = self
            .endpoint_of(org)
            .ok_or_else(|| ConnectError::NoEndpoint(org.to_string()))?;
        let link = Arc::new(std::sync::Mutex::new(crate::tls::LinkInfo::default()));
        let c = self
            .dialer
            .client(&endpoint, org, link, Duration::from_secs(5))?;
        self.fed_clients.insert(org.to_string(), c.clone());
        Ok(c)
    }

    /// What `bluewire status` shows: who this node is, what it holds, its peer links.
    pub fn status(
        &self,
        version: &str,
    ) -> Result<bluewire_proto::v1::StatusResponse, crate::store::StoreError> {
        Ok(bluewire_proto::v1::StatusResponse {
            org: self.org().to_string(),
            version: version.to_string(),
            listen: self.listen.to_string(),
            messages: self.store.message_count()?,
            last_seq: self.store.head_seq(),
            rejected: self.store.rejection_count()?,
            started_at_ms: self.started_at_ms,
            peers: self.peer_statuses()?,
        })
    }

    /// Every peer link with its live state and its outbox and delivery counts, by org.
    pub fn peer_statuses(
        &self,
    ) -> Result<Vec<bluewire_proto::v1::PeerStatus>, crate::store::StoreError> {
        let mut out = Vec::new();
        for p in self.peers.iter() {
            let s = p.stats();
            out.push(bluewire_proto::v1::PeerStatus {
                org: p.org.clone(),
                endpoint: p.endpoint.clone(),
                connected: s.connected,
                outbox_depth: self.store.outbox_depth(&p.org)?,
                delivered: self.store.delivered_count(&p.org)?,
                consecutive_failures: s.consecutive_failures,
                last_error: s.last_error,
                last_success_ms: s.last_success_ms,
                kx_group: p.kx_group(),
                path: p.path(),
                relay_depth: self.store.relay_depth(&p.org)?,
                functions: self
                    .directory
                    .profile(&p.org, None)
                    .map(|pr| pr.functions.clone())
                    .unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.org.cmp(&b.org));
        Ok(out)
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

impl Known for NodeState {
    fn me(&self) -> &str {
        self.org()
    }

    fn key(&self, key_id: &str) -> Option<(String, Vec<u8>)> {
        self.directory.key(&self.store, key_id)
    }

    fn verified_batches(&self) -> Option<&crate::envelope::VerifiedBatches> {
        Some(&self.verified_batches)
    }

    fn cluster(&self, id: &str) -> Option<Arc<ClusterState>> {
        NodeState::cluster(self, id)
    }

    fn profile(&self, org: &str, cluster: Option<&ClusterState>) -> Option<Arc<OrgProfile>> {
        self.directory.profile(org, cluster)
    }

    fn held(
        &self,
        origin: &str,
        id: &str,
    ) -> Result<Option<(Content, crate::markings::Standing)>, String> {
        let unreadable = |e: String| format!("cannot read {origin}/{id} here: {e}");
        let Some(m) = self
            .store
            .get(origin, id)
            .map_err(|e| unreadable(e.to_string()))?
        else {
            return Ok(None);
        };
        let env = bluewire_proto::v1::Envelope::decode(m.envelope.as_slice())
            .map_err(|e| unreadable(e.to_string()))?;
        let content = Content::decode(&env.content[..]).map_err(|e| unreadable(e.to_string()))?;
        let standing = self.standing(&content)?;
        Ok(Some((content, standing)))
    }

    fn standing(&self, content: &Content) -> Result<crate::markings::Standing, String> {
        let annotations = self
            .store
            .annotations(&content.origin_org, &content.id)
            .map_err(|e| {
                format!(
                    "cannot read {}/{}'s annotations here: {e}",
                    content.origin_org, content.id
                )
            })?;
        Ok(crate::markings::standing_from(content, &annotations))
    }

    fn decryptors(&self) -> &[crate::e2e::RecipientKey] {
        &self.decryptors
    }
    fn certified_own_key(&self, key_id: &str) -> bool {
        key_id.starts_with(&format!("{}/", self.org()))
            && self.directory.key_serial(key_id).is_some()
    }

    fn key_distrusted_since(&self, key_id: &str) -> Option<i64> {
        let serial = self.directory.key_serial(key_id)?;
        self.tls.revocations.distrusted_since(&serial)
    }
}
