//! The node's side of clusters: keeps each cluster's verified state, persists
//! its log, sequences operations when this node is the convener, proposes
//! them to the convener otherwise, replicates logs (push a notification, the
//! member pulls and verifies every entry) and turns membership changes into
//! delivery effects (new peers, history for new members). Every entry goes
//! through `cluster::ClusterState` verification before it is stored or used.

use std::sync::Arc;
use std::time::Duration;

use bluewire_proto::v1::{
    self as pb, ClusterEntry, ClusterOp, HistoryRule, SignedClusterOp, cluster_op::Op,
};
use prost::Message;
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::cluster::{self, Applied, ClusterError, ClusterState, Standing};
use crate::peers::ConnectError;
use crate::pki::{OrgProfile, PeerIdentity};
use crate::state::{ClusterRefError, NodeState};

/// How long a proposal waits for the convener's answer.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Per cluster: failed attempts to put this node's new certificate in its log, and when to
/// try next.
pub type RekeyBackoff = std::collections::HashMap<String, (u32, tokio::time::Instant)>;

/// Why a cluster operation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Lookup(#[from] ClusterRefError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the convener {org} could not be reached: {message}")]
    Convener { org: String, message: String },
    #[error("the convener refused: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(
        "this node has never seen {0}'s certificate: pass --endpoint https://HOST:PORT of its node"
    )]
    NoCertificate(String),
    #[error("could not verify {org} at {endpoint}: {message}")]
    Unverified {
        org: String,
        endpoint: String,
        message: String,
    },
    /// A stored log that no longer verifies.
    #[error("stored log of {cluster} does not verify: {reason}")]
    Corrupt { cluster: String, reason: String },
    /// The user-supplied endpoint is not a usable `https://HOST:PORT`.
    #[error("{0}")]
    BadEndpoint(String),
    #[error("the node is shutting down")]
    Stopping,
    #[error("{0}")]
    Other(String),
}

impl NodeState {
    /// Verify and apply `entries` to cluster `id` (creating it from a
    /// genesis entry), persist them, update delivery. Entries already applied
    /// are skipped. When `only_if_involved`, a cluster that does not mention
    /// this organisation is not kept.
    pub async fn apply_entries(
        self: &Arc<Self>,
        id: &str,
        entries: Vec<ClusterEntry>,
        only_if_involved: bool,
    ) -> Result<Arc<ClusterState>, ReplicationError> {
        let _guard = self.cluster_lock.lock().await;
        self.apply_entries_locked(id, entries, only_if_involved)
            .await
    }

    async fn apply_entries_locked(
        self: &Arc<Self>,
        id: &str,
        entries: Vec<ClusterEntry>,
        only_if_involved: bool,
    ) -> Result<Arc<ClusterState>, ReplicationError> {
        let root = self.tls.root_der.clone();
        let mut state: Option<ClusterState> = self.cluster(id).map(|s| (*s).clone());
        let mut applied: Vec<Applied> = Vec::new();
        let mut to_store = Vec::new();
        for e in entries {
            let index = cluster::entry_index(&e)?;
            if let Some(s) = &state
                && index <= s.head_index
            {
                continue;
            }
            self.note_carried_cert(&e);
            cluster::check_signers(&e, |k| {
                crate::known::Known::key_distrusted_since(self.as_ref(), k)
            })?;
            let a = match state.as_mut() {
                None => {
                    let (s, a) = ClusterState::genesis(&e, &root)?;
                    if s.id != id {
                        return Err(ClusterError::Malformed(format!(
                            "log of {} offered as {id}",
                            s.id
                        ))
                        .into());
                    }
                    state = Some(s);
                    a
                }
                Some(s) => s.apply(&e, &root)?,
            };
            to_store.push((a.index, e.encode_to_vec()));
            applied.push(a);
        }
        let Some(state) = state else {
            return Err(ClusterRefError::Unknown(id.to_string()).into());
        };
        if only_if_involved && state.standing(self.org()).is_none() {
            return Err(ReplicationError::Other(format!(
                "{id} does not involve {}; not kept",
                self.org()
            )));
        }
        if !to_store.is_empty() {
            self.store.append_cluster_entries(id, to_store).await?;
        }
        let state = Arc::new(state);
        self.clusters.insert(id.to_string(), state.clone());
        self.after_apply(&state, &applied).await;
        Ok(state)
    }

    /// Tie the keys a certificate carried by `entry`'s operation (an acceptance, a rekey)
    /// certifies to its serial, so that `check_signers` finds them revoked if it is.
    fn note_carried_cert(&self, entry: &ClusterEntry) {
        let der = pb::ClusterEntryBody::decode(entry.body.as_slice())
            .ok()
            .and_then(|b| b.op)
            .and_then(|o| ClusterOp::decode(o.op.as_slice()).ok())
            .and_then(|o| match o.op {
                Some(Op::Accept(a)) => Some(a.node_cert),
                Some(Op::Rekey(r)) => Some(r.node_cert),
                _ => None,
            });
        let Some(der) = der else { return };
        let chain = [rustls::pki_types::CertificateDer::from(der.as_slice())];
        if let Ok(PeerIdentity::Node { profile, .. }) =
            crate::pki::identity_from_chain(&chain, &self.tls.root_der)
        {
            self.directory.note_serials(&profile, &der);
        }
    }

    /// Effects of applied entries on delivery and discovery.
    async fn after_apply(self: &Arc<Self>, state: &ClusterState, applied: &[Applied]) {
        for m in state.members.values() {
            self.directory
                .learn(&self.store, &m.profile, &m.cert_der)
                .await;
            if m.org != self.org() && m.standing == crate::cluster::Standing::Member {
                self.ensure_peer(&m.org, &m.profile.endpoint);
            }
        }
        let events = applied
            .iter()
            .map(|a| {
                crate::audit::AuditEvent::membership(
                    &state.id,
                    &a.op.actor_org,
                    format!(
                        "#{} {} (sequenced by {})",
                        a.index,
                        cluster::describe(&a.op),
                        a.sequenced_by
                    ),
                )
            })
            .collect();
        self.audit(events).await;
        for a in applied {
            info!(cluster.id = %state.id, cluster.index = a.index, actor = %a.op.actor_org, op = %cluster::describe(&a.op), "membership entry applied");
            if let Some(Op::Accept(_)) = &a.op.op
                && state.history == HistoryRule::Full
                && a.op.actor_org != self.org()
                && state.is_member(self.org())
            {
                self.share_history(&state.id, &a.op.actor_org).await;
            }
        }
    }

    /// Queue every message this node originated in `cluster` for `org`.
    async fn share_history(&self, cluster_id: &str, org: &str) {
        let mut after = 0;
        let mut seqs = Vec::new();
        loop {
            let page = match self.store.read_after(after, 1024) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "reading history for a new member failed");
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            // This node's own messages in the cluster (not its re-share copies: the
            // original is there too).
            seqs.extend(
                page.iter()
                    .filter(|m| m.origin == self.org() && !m.reshare && m.cluster == cluster_id)
                    .map(|m| m.seq),
            );
        }
        if seqs.is_empty() {
            return;
        }
        match self.store.enqueue(org, seqs).await {
            Ok(n) => {
                info!(cluster.id = %cluster_id, peer.org = %org, queued = n, "history queued for a new member");
                if let Some(p) = self.peers.get(org) {
                    p.rescan.store(true, std::sync::atomic::Ordering::Release);
                    p.notify.notify_one();
                }
            }
            Err(e) => warn!(error = %e, "queueing history for a new member failed"),
        }
    }

    /// Sequence a signed op as the convener, apply and persist it, notify.
    pub async fn sequence_local(
        self: &Arc<Self>,
        signed: SignedClusterOp,
    ) -> Result<(Arc<ClusterState>, ClusterEntry), ReplicationError> {
        let guard = self.cluster_lock.lock().await;
        let peek = ClusterOp::decode(signed.op.as_slice())
            .map_err(|e| ClusterError::Malformed(e.to_string()))?;
        let current = self.cluster(&peek.cluster_id);
        let entry = match (&current, &peek.op) {
            (None, Some(Op::Create(_))) => cluster::sequence(None, signed, &self.signer, now_ms()),
            (Some(_), Some(Op::Create(_))) => {
                return Err(ClusterError::State(format!(
                    "cluster {} already exists",
                    peek.cluster_id
                ))
                .into());
            }
            (None, _) => return Err(ClusterRefError::Unknown(peek.cluster_id).into()),
            (Some(s), _) => {
                if s.convener != self.org() {
                    return Err(ReplicationError::Other(format!(
                        "{} is not the convener of {} ({} is)",
                        self.org(),
                        s.id,
                        s.convener
                    )));
                }
                // A convener whose keys were rotated puts its new certificate in the log
                // before anything else it sequences (its entries are signed with the new
                // key); an op based on the head before that is then out of date.
                let own_rekey =
                    peek.actor_org == self.org() && matches!(peek.op, Some(Op::Rekey(_)));
                let s = match self.newer_own_cert(s) {
                    Some(node_cert) if !own_rekey => {
                        let op = self.own_op(
                            &s.id,
                            s.head_hash.clone(),
                            Op::Rekey(pb::RekeyMember { node_cert }),
                        );
                        let entry = cluster::sequence(
                            Some(s),
                            cluster::sign_op(&self.signer, &op),
                            &self.signer,
                            now_ms(),
                        );
                        let rekeyed = self.apply_entries_locked(&s.id, vec![entry], false).await?;
                        info!(cluster.id = %s.id, "this node's new certificate is in the cluster log (key rotation)");
                        self.notify_cluster(&rekeyed);
                        rekeyed
                    }
                    _ => s.clone(),
                };
                s.verify_op(&signed, &self.tls.root_der)?;
                cluster::sequence(Some(&s), signed, &self.signer, now_ms())
            }
        };
        let state = self
            .apply_entries_locked(&peek.cluster_id, vec![entry.clone()], false)
            .await?;
        drop(guard);
        self.notify_cluster(&state);
        Ok((state, entry))
    }

    /// Tell every organisation the log mentions that it grew.
    pub fn notify_cluster(self: &Arc<Self>, state: &ClusterState) {
        for org in state.known_orgs() {
            if org == self.org() {
                continue;
            }
            // Former members and decliners hear of the entry that ended
            // their involvement, and of nothing after it.
            let involved = state.members.get(&org).is_some_and(|m| {
                matches!(m.standing, Standing::Member | Standing::Invited)
                    || m.since_index == state.head_index
            });
            if !involved {
                continue;
            }
            let Ok(mut client) = self.fed_client(&org) else {
                continue;
            };
            let req = pb::ClusterNotifyRequest {
                cluster_id: state.id.clone(),
                head_index: state.head_index,
            };
            self.tasks.spawn(
                tracing::debug_span!("cluster-notify", peer.org = %org),
                async move {
                    if let Err(e) = client.cluster_notify(req).await {
                        debug!(error = %e, "cluster notify failed; the member will pull later");
                    }
                },
            );
        }
    }

    /// Build, sign and carry out an operation as this organisation. After a key rotation,
    /// the log first gets this node's new certificate (its operations are signed with the
    /// new key), and an operation based on the head before that is based on the new head.
    pub async fn act(
        self: &Arc<Self>,
        cluster_id: &str,
        base_hash: String,
        op: Op,
    ) -> Result<Arc<ClusterState>, ReplicationError> {
        let mut base_hash = base_hash;
        if !matches!(op, Op::Rekey(_) | Op::Create(_) | Op::Accept(_))
            && let Some(before) = self.cluster(cluster_id)
            && let Some(after) = self.rekey(&before).await?
            && base_hash == before.head_hash
        {
            base_hash = after.head_hash.clone();
        }
        self.act_as_is(cluster_id, base_hash, op).await
    }

    /// This node's certificate, if the one `c`'s log holds for it is an earlier one (a key
    /// rotation since): a current member, a certificate issued after the log's.
    fn newer_own_cert(&self, c: &ClusterState) -> Option<Vec<u8>> {
        let own = self.tls.chain.first()?.as_ref();
        let m = c
            .members
            .get(self.org())
            .filter(|m| m.standing == Standing::Member && m.cert_der != own)?;
        let issued = |d: &[u8]| crate::pki::validity_ms(d).map(|v| v.0).ok();
        (issued(own)? > issued(&m.cert_der)?).then(|| own.to_vec())
    }

    /// Put this node's current certificate in `c`'s log after a key rotation (`pki rotate`):
    /// None when the log already holds it. The convener sequences its own at once; a member
    /// proposes it to the convener.
    pub async fn rekey(
        self: &Arc<Self>,
        c: &ClusterState,
    ) -> Result<Option<Arc<ClusterState>>, ReplicationError> {
        let Some(node_cert) = self.newer_own_cert(c) else {
            return Ok(None);
        };
        let state = self
            .act_as_is(
                &c.id,
                c.head_hash.clone(),
                Op::Rekey(pb::RekeyMember { node_cert }),
            )
            .await?;
        info!(cluster.id = %c.id, "this node's new certificate is in the cluster log (key rotation)");
        Ok(Some(state))
    }

    /// Put this node's current certificate in every cluster log that holds an earlier one;
    /// with `conveners_only`, only where this node sequences (no network needed). A failure
    /// is logged and tried again at a later sync, backing off (`backoff`: per cluster, the
    /// failures so far and when to try next); a log that moved on meanwhile is tried again
    /// at the next sync, once pulled.
    pub async fn rekey_all(self: &Arc<Self>, conveners_only: bool, backoff: &mut RekeyBackoff) {
        let clusters: Vec<Arc<ClusterState>> = self.clusters.iter().map(|c| c.clone()).collect();
        let stopping = self.tasks.stopping();
        for c in clusters {
            if stopping.is_cancelled() {
                return;
            }
            if (conveners_only && c.convener != self.org())
                || backoff
                    .get(&c.id)
                    .is_some_and(|(_, next)| *next > tokio::time::Instant::now())
            {
                continue;
            }
            match self.rekey(&c).await {
                Ok(_) => {
                    backoff.remove(&c.id);
                }
                Err(ReplicationError::Cluster(ClusterError::Conflict { .. }))
                | Err(ReplicationError::Stopping) => {
                    debug!(cluster.id = %c.id, "the log moved on before this node's new certificate went in; next sync")
                }
                Err(e) => {
                    let failures = backoff.get(&c.id).map_or(0, |b| b.0) + 1;
                    let wait = Duration::from_secs(2u64.saturating_pow(failures.min(8)));
                    backoff.insert(c.id.clone(), (failures, tokio::time::Instant::now() + wait));
                    warn!(cluster.id = %c.id, error = %e, retry_in_s = wait.as_secs(), "could not put this node's new certificate (key rotation) in the cluster log; its cluster operations wait for it");
                }
            }
        }
    }

    /// An operation by this organisation, now, with a fresh id.
    fn own_op(&self, cluster_id: &str, base_hash: String, op: Op) -> ClusterOp {
        ClusterOp {
            cluster_id: cluster_id.to_string(),
            base_hash,
            op_id: crate::envelope::new_id(),
            actor_org: self.org().to_string(),
            at_ms: now_ms(),
            op: Some(op),
        }
    }

    async fn act_as_is(
        self: &Arc<Self>,
        cluster_id: &str,
        base_hash: String,
        op: Op,
    ) -> Result<Arc<ClusterState>, ReplicationError> {
        let signed = cluster::sign_op(&self.signer, &self.own_op(cluster_id, base_hash, op));
        let convener = match self.cluster(cluster_id) {
            Some(s) => s.convener.clone(),
            None => self.org().to_string(),
        };
        if convener == self.org() {
            return Ok(self.sequence_local(signed).await?.0);
        }
        let mut client = self.fed_client(&convener)?;
        // Nothing is stored before the answer: the wait gives way to a stop and a deadline
        // (a convener that never answers does not hold up the caller, nor the sync loop).
        let call = client.propose_cluster_op(pb::ProposeClusterOpRequest { op: Some(signed) });
        let stopping = self.tasks.stopping();
        let answer = tokio::select! {
            r = tokio::time::timeout(PROPOSE_TIMEOUT, call) => r,
            () = stopping.cancelled() => return Err(ReplicationError::Stopping),
        };
        let resp = answer
            .map_err(|_| ReplicationError::Convener {
                org: convener.clone(),
                message: format!("no answer within {} s", PROPOSE_TIMEOUT.as_secs()),
            })?
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    ReplicationError::Convener {
                        org: convener.clone(),
                        message: s.message().to_string(),
                    }
                }
                code => ReplicationError::Refused {
                    code,
                    message: s.message().to_string(),
                },
            })?
            .into_inner();
        self.apply_entries(cluster_id, resp.entries, false).await
    }

    /// Pull `id`'s log from `org` (the convener or any member) and apply it.
    pub async fn pull_from(self: &Arc<Self>, org: &str, id: &str) -> Result<(), ReplicationError> {
        let mut client = self.fed_client(org)?;
        let known = self.cluster(id).is_some();
        let stopping = self.tasks.stopping();
        loop {
            let from = self.cluster(id).map(|s| s.head_index + 1).unwrap_or(0);
            // Only the network wait gives way to a stop: entries fetched are applied whole
            // (stored, then their effects: history for new members, audit).
            let fetched = tokio::select! {
                r = client.cluster_log(pb::ClusterLogRequest {
                    cluster_id: id.to_string(),
                    from_index: from,
                    limit: 256,
                }) => r,
                () = stopping.cancelled() => return Err(ReplicationError::Stopping),
            };
            let resp = fetched
                .map_err(|s| ReplicationError::Other(format!("{org}: {}", s.message())))?
                .into_inner();
            if resp.entries.is_empty() {
                return Ok(());
            }
            let n = resp.entries.len();
            self.apply_entries(id, resp.entries, !known).await?;
            if n < 256 {
                return Ok(());
            }
        }
    }

    /// Every entry of `c`'s stored log, verified again from genesis, as operators read it.
    pub fn log_lines(&self, c: &ClusterState) -> Result<Vec<pb::ClusterLogLine>, ReplicationError> {
        let raw: Vec<Vec<u8>> = self
            .store
            .cluster_entries(&c.id, 0, usize::MAX)?
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let (_, applied) =
            cluster::replay(&raw, &self.tls.root_der).map_err(|e| ReplicationError::Corrupt {
                cluster: c.id.clone(),
                reason: e.to_string(),
            })?;
        Ok(applied
            .into_iter()
            .map(|a| pb::ClusterLogLine {
                index: a.index,
                hash: a.hash,
                actor: a.op.actor_org.clone(),
                op: cluster::describe(&a.op),
                at_ms: a.sequenced_at_ms,
                sequenced_by: a.sequenced_by,
            })
            .collect())
    }

    /// An invitee's verified node certificate: from the directory, or by
    /// connecting to `endpoint` (else its configured one) and reading the
    /// certificate it presents.
    pub async fn invitee_cert(
        &self,
        org: &str,
        endpoint: &str,
    ) -> Result<Vec<u8>, ReplicationError> {
        let configured = self
            .config
            .peers
            .iter()
            .find(|p| p.org == org)
            .map(|p| p.endpoint.clone());
        let known = self.directory.cert(org);
        let endpoint = match (endpoint.is_empty(), known, configured) {
            (true, Some(der), _) => return Ok(der),
            (true, None, Some(configured)) => configured,
            (true, None, None) => return Err(ReplicationError::NoCertificate(org.to_string())),
            (false, ..) => endpoint.to_string(),
        };
        let link = Arc::new(std::sync::Mutex::new(crate::tls::LinkInfo::default()));
        self.dialer
            .client(&endpoint, org, link.clone(), Duration::from_secs(5))
            .map_err(|e| ReplicationError::BadEndpoint(e.to_string()))?
            .hello(pb::HelloRequest {})
            .await
            .map_err(|e| ReplicationError::Unverified {
                org: org.to_string(),
                endpoint: endpoint.clone(),
                message: e.message().to_string(),
            })?;
        let (der, peer) = {
            let l = link
                .lock()
                .map_err(|_| ReplicationError::Other("link state lock poisoned".into()))?;
            (l.cert_der.clone(), l.peer.clone())
        };
        if let Some(PeerIdentity::Node { profile, .. }) = peer {
            self.directory.learn(&self.store, &profile, &der).await;
        }
        Ok(der)
    }

    /// Another organisation's node proposes an operation to this node as the
    /// convener: only its own operations, never a cluster's creation.
    pub async fn propose_from(
        self: &Arc<Self>,
        peer: &str,
        signed: SignedClusterOp,
    ) -> Result<ClusterEntry, ReplicationError> {
        let op = ClusterOp::decode(signed.op.as_slice())
            .map_err(|e| ClusterError::Malformed(format!("operation is not a ClusterOp: {e}")))?;
        if op.actor_org != peer {
            return Err(ClusterError::Authority(format!(
                "{peer} may only propose its own operations, not {}'s",
                op.actor_org
            ))
            .into());
        }
        if matches!(op.op, Some(Op::Create(_))) {
            return Err(ClusterError::Malformed(
                "a cluster is created at its convener's own node".into(),
            )
            .into());
        }
        let (_, entry) = self.sequence_local(signed).await?;
        Ok(entry)
    }

    /// Encoded log entries of `cluster_id` from `from_index` that `peer` may
    /// read: organisations the log mentions; former members and decliners only
    /// up to the entry that ended their involvement.
    pub fn log_for(
        &self,
        peer: &str,
        cluster_id: &str,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, ReplicationError> {
        let c = self.cluster(cluster_id).ok_or_else(|| {
            ReplicationError::from(ClusterRefError::Unknown(cluster_id.to_string()))
        })?;
        let Some(m) = c.members.get(peer) else {
            return Err(
                ClusterError::Authority(format!("{peer} does not appear in {}", c.id)).into(),
            );
        };
        let mut limit = limit.clamp(1, 1000);
        if !matches!(m.standing, Standing::Member | Standing::Invited) {
            let last = m.since_index;
            if from_index > last {
                return Ok(Vec::new());
            }
            limit = limit.min((last - from_index + 1) as usize);
        }
        Ok(self
            .store
            .cluster_entries(&c.id, from_index, limit)?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// A member says a cluster's log has grown: if this node is behind, pull
    /// from it (every entry is verified; an unknown cluster is kept only if it
    /// involves this organisation).
    pub async fn notified(
        self: &Arc<Self>,
        peer: &OrgProfile,
        cert: &[u8],
        cluster_id: &str,
        head: u64,
    ) {
        let known_head = self.cluster(cluster_id).map(|c| c.head_index);
        if known_head.is_some_and(|h| h >= head) {
            return;
        }
        self.directory.learn(&self.store, peer, cert).await;
        let st = self.clone();
        let (from, id) = (peer.org.clone(), cluster_id.to_string());
        let span = tracing::debug_span!("cluster-pull", cluster.id = %id, peer.org = %from);
        // To its end: a pull stops at its next network wait, never between storing entries
        // and carrying out what they mean.
        self.tasks.spawn_to_end(span, async move {
            if let Err(e) = st.pull_from(&from, &id).await {
                debug!(error = %e, "pull after notify failed; periodic sync will retry");
            }
        });
    }

    /// Start a peer delivery worker for a member learned from a cluster log.
    pub fn ensure_peer(self: &Arc<Self>, org: &str, endpoint: &str) {
        if self.peers.contains_key(org) || org == self.org() {
            return;
        }
        let link = crate::delivery::PeerLink::new(&crate::config::PeerConfig {
            org: org.to_string(),
            endpoint: endpoint.to_string(),
        });
        self.peers.insert(org.to_string(), link.clone());
        crate::delivery::spawn_worker(link, self.clone());
    }
}

/// Periodically pull every cluster's log from its convener (or, failing
/// that, from other members), so a node that was offline catches up.
pub fn spawn_sync(state: Arc<NodeState>, every: Duration) {
    let tasks = state.tasks.clone();
    let stopping = tasks.stopping();
    // To its end, stopping between pulls (see `pull_from`).
    tasks.spawn_to_end(
        tracing::info_span!("cluster-sync"),
        async move {
            let mut tick = tokio::time::interval(every);
            let mut backoff = RekeyBackoff::new();
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopping.cancelled() => break,
                }
                let clusters: Vec<Arc<ClusterState>> =
                    state.clusters.iter().map(|c| c.clone()).collect();
                let round = async {
                    for c in clusters {
                        if c.convener == state.org() {
                            continue;
                        }
                        let mut sources = vec![c.convener.clone()];
                        sources.extend(
                            c.current_members()
                                .into_iter()
                                .filter(|m| m != state.org() && *m != c.convener),
                        );
                        for src in sources {
                            if stopping.is_cancelled() {
                                return;
                            }
                            match state.pull_from(&src, &c.id).await {
                                Ok(()) => break,
                                Err(e) => debug!(cluster.id = %c.id, source = %src, error = %e, "cluster pull failed; trying another member"),
                            }
                        }
                    }
                };
                round.await;
                // After the pull: a rekey based on the head the convener has.
                state.rekey_all(false, &mut backoff).await;
            }
        },
    );
}

/// Load every stored cluster log (verifying it again) and the directory.
pub async fn load(state: &Arc<NodeState>) -> Result<(), ReplicationError> {
    for id in state.store.cluster_ids()? {
        let entries: Vec<Vec<u8>> = state
            .store
            .cluster_entries(&id, 0, usize::MAX)?
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        match cluster::replay(&entries, &state.tls.root_der) {
            Ok((s, _)) => {
                let s = Arc::new(s);
                state.clusters.insert(id.clone(), s.clone());
                state.after_apply(&s, &[]).await;
            }
            Err(e) => {
                warn!(cluster.id = %id, error = %e, "stored cluster log does not verify; ignoring it")
            }
        }
    }
    // A convener whose keys were rotated puts its new certificate in its logs before it
    // sequences anything else: its members check entries with the keys the log certifies.
    state.rekey_all(true, &mut RekeyBackoff::new()).await;
    Ok(())
}
