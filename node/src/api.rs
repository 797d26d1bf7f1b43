//! The gRPC surface: thin implementations of the generated Federation,
//! Client and Admin traits. Converts protobuf to domain calls and domain
//! errors to `Status` in one place, and enforces who may call what from the
//! connection's verified identity (never from a request field). No routing
//! or crypto decisions are made here beyond calling the modules that own them.

use std::pin::Pin;
use std::sync::Arc;

use bluewire_proto::v1 as pb;
use pb::admin_server::{Admin, AdminServer};
use pb::client_server::{Client, ClientServer};
use pb::federation_server::{Federation, FederationServer};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info, warn};

use crate::audit::AuditEvent;
use crate::cluster::{self, ClusterState};
use crate::delivery::now_ms;
use crate::envelope::{self, Rejected, level_label, tlp_label};
use crate::pki::{OrgProfile, PeerIdentity, UserRole};
use crate::policy::Direction;
use crate::replication::ReplicationError;
use crate::server::NodeState;
use crate::store::{InsertOutcome, NewMessage, Rejection, StoredMessage};
use crate::tls::ConnInfo;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Local record ids of this node's re-share copies (outbox only, not feeds).
pub const RESHARE_PREFIX: &str = "fwd:";

/// Build the tonic router with every service, health and reflection.
pub fn router(state: Arc<NodeState>) -> tonic::transport::server::Router {
    let limits = &state.config.limits;
    let max = limits.max_request_bytes;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let api = Api {
        state: state.clone(),
    };
    let fed = FederationServer::new(api.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let client = ClientServer::new(api.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = AdminServer::new(api)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    tokio::spawn(async move {
        health_reporter.set_serving::<FederationServer<Api>>().await;
        health_reporter.set_serving::<ClientServer<Api>>().await;
    });
    let mut b = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
    let r = b
        .add_service(health)
        .add_service(fed)
        .add_service(client)
        .add_service(admin);
    match reflection {
        Some(refl) => r.add_service(refl),
        None => r,
    }
}

#[derive(Clone)]
pub struct Api {
    state: Arc<NodeState>,
}

fn conn<T>(req: &Request<T>) -> Result<&ConnInfo, Status> {
    req.extensions()
        .get::<ConnInfo>()
        .ok_or_else(|| Status::unauthenticated("no verified TLS identity on this connection"))
}

impl Api {
    fn check_revoked(&self, c: &ConnInfo) -> Result<(), Status> {
        if self.state.tls.revocations.identity_revoked(&c.identity) {
            return Err(Status::permission_denied(
                "your certificate has been revoked by the federation CA",
            ));
        }
        Ok(())
    }

    /// The calling node's CA-asserted profile.
    fn require_node<T>(&self, req: &Request<T>) -> Result<OrgProfile, Status> {
        self.require_node_cert(req).map(|(p, _)| p)
    }

    /// The calling node's profile and verified certificate.
    fn require_node_cert<T>(&self, req: &Request<T>) -> Result<(OrgProfile, Arc<Vec<u8>>), Status> {
        let c = conn(req)?;
        self.check_revoked(c)?;
        match &*c.identity {
            PeerIdentity::Node { profile, .. } => {
                if !self.state.peer_limits.try_take(&profile.org) {
                    self.state.metrics.inc(
                        crate::metrics::RATE_LIMITED,
                        &[("kind", "peer"), ("who", &profile.org)],
                    );
                    return Err(Status::resource_exhausted(format!(
                        "{} is over its rate limit on this node ({} calls and envelopes per \
                         second, limits.peer_rate_per_sec); back off and retry",
                        profile.org,
                        self.state.peer_limits.rate()
                    )));
                }
                Ok((profile.clone(), c.cert_der.clone()))
            }
            PeerIdentity::User { .. } => Err(Status::permission_denied(
                "the federation service is for nodes; a user certificate cannot call it",
            )),
        }
    }

    /// A user of this node's organisation; `operator` demands that role.
    fn require_user<T>(
        &self,
        req: &Request<T>,
        operator: bool,
    ) -> Result<(String, UserRole), Status> {
        let c = conn(req)?;
        self.check_revoked(c)?;
        match &*c.identity {
            PeerIdentity::User {
                org, name, role, ..
            } => {
                if org != self.state.org() {
                    return Err(Status::permission_denied(format!(
                        "this node serves users of {}; your certificate is from {org}",
                        self.state.org()
                    )));
                }
                if operator && *role != UserRole::Operator {
                    return Err(Status::permission_denied(format!(
                        "admin commands need a certificate with the operator role; yours is {role}"
                    )));
                }
                // Client-service calls are limited per user; admin calls are not.
                if !operator && !self.state.client_limits.try_take(name) {
                    self.state.metrics.inc(
                        crate::metrics::RATE_LIMITED,
                        &[("kind", "client"), ("who", name)],
                    );
                    return Err(Status::resource_exhausted(format!(
                        "{name} is over its rate limit on this node ({} requests per second, \
                         limits.client_rate_per_sec); slow down and retry",
                        self.state.client_limits.rate()
                    )));
                }
                Ok((name.clone(), *role))
            }
            PeerIdentity::Node { profile, .. } => Err(Status::permission_denied(format!(
                "node {} cannot use the client or admin service: use a user certificate",
                profile.org
            ))),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Ends a feed with `status` as its last item, so the subscriber learns why it ended (a clean
/// end of stream would look like "nothing more to come"). Gives up after a second if the
/// subscriber is not reading.
async fn say_goodbye(tx: &tokio::sync::mpsc::Sender<Result<pb::FeedItem, Status>>, status: Status) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tx.send(Err(status))).await;
}

fn feed_item_for(st: &NodeState, m: StoredMessage) -> Result<Option<pb::FeedItem>, Status> {
    let mut item = feed_item(m, st.org())?;
    if let Some(c) = &item.content {
        let standing = crate::markings::standing(&st.store, c);
        if standing.retracted.is_some() {
            return Ok(None);
        }
        item.effective_marking = standing.marking;
    }
    Ok(Some(item))
}

fn feed_item(m: StoredMessage, me: &str) -> Result<pb::FeedItem, Status> {
    let env = pb::Envelope::decode(m.envelope.as_slice()).map_err(internal)?;
    let content = pb::Content::decode(env.content.as_slice()).map_err(internal)?;
    let signer_org = if m.received_from.is_empty() {
        me.to_string()
    } else {
        content.origin_org.clone()
    };
    Ok(pb::FeedItem {
        seq: m.seq,
        content: Some(content),
        verified: true,
        signer_org,
        received_from: m.received_from,
        received_at_ms: m.received_at_ms,
        effective_marking: None,
        forwarded: env
            .forwarding
            .as_ref()
            .and_then(|f| pb::ForwardAttestation::decode(f.attestation.as_slice()).ok()),
        envelope: Some(env),
    })
}

#[tonic::async_trait]
impl Federation for Api {
    async fn deliver(
        &self,
        req: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let (peer, peer_cert) = self.require_node_cert(&req)?;
        let st = &self.state;
        let span = tracing::debug_span!("deliver", peer.org = %peer.org);
        async move {
            st.learn_org(&peer, &peer_cert).await;
            let mut behind: Option<String> = None;
            let mut controls = Vec::new();
            // Accepted messages other than control messages, by their slot.
            let mut plain = Vec::new();
            let mut rejected_rules: Vec<(usize, &'static str)> = Vec::new();
            let envelopes = req.into_inner().envelopes;
            if envelopes.len() > st.config.limits.max_batch {
                return Err(Status::invalid_argument(format!(
                    "{} envelopes in one Deliver call; the limit is {}",
                    envelopes.len(),
                    st.config.limits.max_batch
                )));
            }
            let now = now_ms();
            let mut results: Vec<pb::DeliveryResult> = Vec::with_capacity(envelopes.len());
            let mut accepted = Vec::new();
            let mut slots = Vec::new();
            // Envelopes over the peer's rate limit are not even opened: they are answered
            // RETRY_LATER, and the sender backs off and sends them again.
            let granted = st.peer_limits.take_up_to(&peer.org, envelopes.len() as u64) as usize;
            let mut over_limit = String::new();
            if granted < envelopes.len() {
                st.metrics.add(
                    crate::metrics::RATE_LIMITED,
                    &[("kind", "peer"), ("who", &peer.org)],
                    (envelopes.len() - granted) as u64,
                );
                debug!(
                    granted,
                    sent = envelopes.len(),
                    "peer over its envelope rate limit"
                );
                over_limit = format!(
                    "{} is over its rate limit on this node ({} envelopes per second, \
                     limits.peer_rate_per_sec)",
                    peer.org,
                    st.peer_limits.rate()
                );
            }
            for (i, env) in envelopes.into_iter().enumerate() {
                if i >= granted {
                    results.push(pb::DeliveryResult {
                        outcome: pb::DeliveryOutcome::RetryLater as i32,
                        reason: over_limit.clone(),
                        id: String::new(),
                    });
                    continue;
                }
                // A re-share carries the origin's certificate: learn its keys
                // (after verifying it against the federation root) first.
                if let Some(f) = &env.forwarding
                    && !f.origin_cert.is_empty()
                {
                    let chain = [rustls::pki_types::CertificateDer::from(
                        f.origin_cert.clone(),
                    )];
                    if let Ok(PeerIdentity::Node { profile, .. }) =
                        crate::pki::identity_from_chain(&chain, &st.tls.root_der)
                    {
                        st.learn_org(&profile, &f.origin_cert).await;
                    }
                }
                let opened = envelope::open(&env, |k| st.lookup_key(k), now).and_then(|o| {
                    let view = match &env.forwarding {
                        None if o.content.origin_org != peer.org => {
                            return Err(Rejected::NotFromOrigin {
                                peer: peer.org.clone(),
                                origin: o.content.origin_org.clone(),
                            });
                        }
                        None => std::borrow::Cow::Borrowed(&o.content),
                        Some(_) => {
                            let a =
                                envelope::open_forwarding(&env, &o.content, |k| st.lookup_key(k))?;
                            if a.forwarder_org != peer.org {
                                return Err(Rejected::NotFromOrigin {
                                    peer: peer.org.clone(),
                                    origin: a.forwarder_org,
                                });
                            }
                            // A marking raised since (if this node holds the original) counts.
                            let marking = crate::markings::standing(&st.store, &o.content)
                                .marking
                                .unwrap_or_default();
                            envelope::reshare_allowed(&o.content, &marking).map_err(|why| {
                                Rejected::Policy {
                                    rule: "reshare",
                                    reason: why,
                                }
                            })?;
                            std::borrow::Cow::Owned(envelope::forwarded_view(&o.content, &a))
                        }
                    };
                    let d = st.decide(&view, st.org(), Direction::Ingress);
                    if d.retry {
                        return Err(Rejected::Later(d.reason));
                    }
                    if !d.allowed {
                        return Err(Rejected::Policy {
                            rule: d.rule,
                            reason: d.reason,
                        });
                    }
                    let effect = st.control_authority(&o.content)?;
                    Ok((o, effect))
                });
                match opened {
                    Err(Rejected::Later(why)) => {
                        let id = pb::Content::decode(env.content.as_slice())
                            .map(|c| {
                                behind = Some(c.cluster.clone());
                                c.id
                            })
                            .unwrap_or_default();
                        debug!(msg.id = %id, reason = %why, "asking the sender to retry later");
                        results.push(pb::DeliveryResult {
                            outcome: pb::DeliveryOutcome::RetryLater as i32,
                            reason: why,
                            id,
                        });
                    }
                    Ok((o, effect)) => {
                        debug!(msg.id = %o.content.id, "accepted for storage");
                        if crate::envelope::is_control_kind(
                            pb::Kind::try_from(o.content.kind).unwrap_or(pb::Kind::Unspecified),
                        ) {
                            controls.push((o.content.clone(), effect));
                        } else {
                            plain.push((slots.len(), o.content.clone()));
                        }
                        slots.push(results.len());
                        results.push(pb::DeliveryResult {
                            outcome: pb::DeliveryOutcome::Accepted as i32,
                            reason: String::new(),
                            id: o.content.id.clone(),
                        });
                        let audit = vec![AuditEvent::received(&o.content.id, &peer.org)];
                        accepted.push(NewMessage {
                            id: o.content.id,
                            envelope: env.encode_to_vec(),
                            origin: o.content.origin_org,
                            kind: o.content.kind,
                            level: o.content.level,
                            received_from: peer.org.clone(),
                            received_at_ms: now,
                            outbox: Vec::new(),
                            audit,
                        });
                    }
                    Err(why) => {
                        let id = pb::Content::decode(env.content.as_slice())
                            .map(|c| c.id)
                            .unwrap_or_default();
                        warn!(msg.id = %id, reason = %why, "envelope rejected");
                        if let Rejected::Unroutable { rule, .. } = &why {
                            st.metrics.decision("ingress", rule, false);
                        }
                        st.store
                            .record_rejection(Rejection {
                                at_ms: now,
                                from_peer: peer.org.clone(),
                                id: id.clone(),
                                reason: why.to_string(),
                            })
                            .await
                            .map_err(internal)?;
                        rejected_rules.push((results.len(), why.rule()));
                        results.push(pb::DeliveryResult {
                            outcome: pb::DeliveryOutcome::Rejected as i32,
                            reason: why.to_string(),
                            id,
                        });
                    }
                }
            }
            if !accepted.is_empty() {
                let outcomes = st.store.insert_many(accepted).await.map_err(|e| {
                    Status::unavailable(format!("store write failed, retry later: {e}"))
                })?;
                let mut fresh = vec![false; outcomes.len()];
                for (k, (slot, outcome)) in slots.into_iter().zip(outcomes).enumerate() {
                    match outcome {
                        InsertOutcome::Duplicate(_) => {
                            results[slot].outcome = pb::DeliveryOutcome::Duplicate as i32;
                        }
                        InsertOutcome::Inserted(_) => fresh[k] = true,
                    }
                }
                // Raises of these messages by other organisations may have arrived first.
                for (_, c) in plain.iter().filter(|(k, _)| fresh[*k]) {
                    crate::markings::settle(&st.store, c, |t, org| st.may_receive(t, org)).await;
                }
            }
            for (c, effect) in &controls {
                crate::markings::apply(&st.store, c, *effect).await;
            }
            let mut events = Vec::new();
            for (i, r) in results.iter().enumerate() {
                match pb::DeliveryOutcome::try_from(r.outcome) {
                    // Its "received" record was chained with the insert.
                    Ok(pb::DeliveryOutcome::Accepted) => {
                        st.metrics
                            .inc(crate::metrics::MESSAGES_RECEIVED, &[("peer", &peer.org)]);
                    }
                    Ok(pb::DeliveryOutcome::Rejected) => {
                        let rule = rejected_rules
                            .iter()
                            .find(|(at, _)| *at == i)
                            .map(|(_, rule)| *rule)
                            .unwrap_or("ingress");
                        st.metrics.inc(
                            crate::metrics::ENVELOPES_REJECTED,
                            &[("peer", &peer.org), ("rule", rule)],
                        );
                        events.push(AuditEvent::rejected(&r.id, &peer.org, rule, &r.reason));
                    }
                    _ => {}
                }
            }
            st.audit(events).await;
            if let Some(cluster) = behind {
                // Catch up from the sender, which is ahead of us.
                let st = self.state.clone();
                let from = peer.org.clone();
                self.state.spawn_until_shutdown(
                    async move {
                        if let Err(e) = st.pull_from(&from, &cluster).await {
                            debug!(error = %e, "catch-up pull failed");
                        }
                    }
                    .in_current_span(),
                );
            }
            Ok(Response::new(pb::DeliverResponse { results }))
        }
        .instrument(span)
        .await
    }

    async fn backfill(
        &self,
        req: Request<pb::BackfillRequest>,
    ) -> Result<Response<pb::BackfillResponse>, Status> {
        let peer = self.require_node(&req)?;
        let r = req.into_inner();
        let limit = (r.limit as usize).clamp(1, 1024);
        let st = &self.state;
        let mut entries = Vec::new();
        let mut cursor = r.after_seq;
        let mut more = false;
        // Scan a bounded window so one call never walks the whole store.
        for _ in 0..16 {
            let page = st.store.read_after(cursor, 1024).map_err(internal)?;
            if page.is_empty() {
                break;
            }
            for m in page {
                cursor = m.seq;
                if m.origin != st.org() {
                    continue;
                }
                let env = pb::Envelope::decode(m.envelope.as_slice()).map_err(internal)?;
                let content = pb::Content::decode(env.content.as_slice()).map_err(internal)?;
                let retracted = crate::markings::standing(&st.store, &content)
                    .retracted
                    .is_some();
                if !retracted && st.decide(&content, &peer.org, Direction::Egress).allowed {
                    entries.push(pb::BackfillEntry {
                        seq: m.seq,
                        envelope: Some(env),
                    });
                    if entries.len() >= limit {
                        more = true;
                        break;
                    }
                }
            }
            if more {
                break;
            }
        }
        Ok(Response::new(pb::BackfillResponse { entries, more }))
    }

    async fn propose_cluster_op(
        &self,
        req: Request<pb::ProposeClusterOpRequest>,
    ) -> Result<Response<pb::ClusterLogResponse>, Status> {
        let peer = self.require_node(&req)?;
        let signed = req
            .into_inner()
            .op
            .ok_or_else(|| Status::invalid_argument("no operation"))?;
        let op = pb::ClusterOp::decode(signed.op.as_slice())
            .map_err(|e| Status::invalid_argument(format!("operation is not a ClusterOp: {e}")))?;
        if op.actor_org != peer.org {
            return Err(Status::permission_denied(format!(
                "{} may only propose its own operations, not {}'s",
                peer.org, op.actor_org
            )));
        }
        if matches!(op.op, Some(pb::cluster_op::Op::Create(_))) {
            return Err(Status::invalid_argument(
                "a cluster is created at its convener's own node",
            ));
        }
        let (_, entry) = self
            .state
            .sequence_local(signed)
            .await
            .map_err(replication_status)?;
        Ok(Response::new(pb::ClusterLogResponse {
            entries: vec![entry],
        }))
    }

    async fn cluster_log(
        &self,
        req: Request<pb::ClusterLogRequest>,
    ) -> Result<Response<pb::ClusterLogResponse>, Status> {
        let peer = self.require_node(&req)?;
        let r = req.into_inner();
        let c = self
            .state
            .cluster(&r.cluster_id)
            .ok_or_else(|| Status::not_found(format!("no cluster {} here", r.cluster_id)))?;
        let Some(m) = c.members.get(&peer.org) else {
            return Err(Status::permission_denied(format!(
                "{} does not appear in {}",
                peer.org, c.id
            )));
        };
        let mut limit = (r.limit as usize).clamp(1, 1000);
        // Former members and decliners may read up to the entry that ended
        // their involvement, not what the cluster did afterwards.
        if !matches!(
            m.standing,
            crate::cluster::Standing::Member | crate::cluster::Standing::Invited
        ) {
            let last = m.since_index;
            if r.from_index > last {
                return Ok(Response::new(pb::ClusterLogResponse { entries: vec![] }));
            }
            limit = limit.min((last - r.from_index + 1) as usize);
        }
        let entries = self
            .state
            .store
            .cluster_entries(&c.id, r.from_index, limit)
            .map_err(internal)?
            .into_iter()
            .map(|(_, b)| pb::ClusterEntry::decode(b.as_slice()).map_err(internal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ClusterLogResponse { entries }))
    }

    async fn cluster_notify(
        &self,
        req: Request<pb::ClusterNotifyRequest>,
    ) -> Result<Response<pb::ClusterNotifyResponse>, Status> {
        let (peer, cert) = self.require_node_cert(&req)?;
        let r = req.into_inner();
        let known_head = self.state.cluster(&r.cluster_id).map(|c| c.head_index);
        if known_head.is_none_or(|h| h < r.head_index) {
            self.state.learn_org(&peer, &cert).await;
            let st = self.state.clone();
            let span = tracing::debug_span!("cluster-pull", cluster.id = %r.cluster_id, peer.org = %peer.org);
            self.state.spawn_until_shutdown(
                async move {
                    if let Err(e) = st.pull_from(&peer.org, &r.cluster_id).await {
                        debug!(error = %e, "pull after notify failed; periodic sync will retry");
                    }
                }
                .instrument(span),
            );
        }
        Ok(Response::new(pb::ClusterNotifyResponse {}))
    }

    async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        let c = conn(&req)?;
        self.check_revoked(c)?;
        let caller_org = match &*c.identity {
            PeerIdentity::Node { profile, .. } => profile.org.clone(),
            PeerIdentity::User { org, .. } => org.clone(),
        };
        Ok(Response::new(pb::HelloResponse {
            org: self.state.org().to_string(),
            version: VERSION.to_string(),
            caller_org,
            kx_group: c.kx_group.clone(),
        }))
    }
}

/// Cluster errors as gRPC statuses, with the reason intact.
pub fn replication_status(e: ReplicationError) -> Status {
    use crate::cluster::ClusterError as C;
    let msg = e.to_string();
    match e {
        ReplicationError::UnknownCluster(_) => Status::not_found(msg),
        ReplicationError::Ambiguous(..) => Status::invalid_argument(msg),
        ReplicationError::Convener { .. } => Status::unavailable(msg),
        ReplicationError::Refused { code, message } => Status::new(code, message),
        ReplicationError::Cluster(C::Authority(_)) => Status::permission_denied(msg),
        ReplicationError::Cluster(C::Conflict { .. }) => Status::aborted(msg),
        ReplicationError::Cluster(C::State(_) | C::Replay(_)) => Status::failed_precondition(msg),
        ReplicationError::Cluster(_) => Status::invalid_argument(msg),
        ReplicationError::Store(_) | ReplicationError::Other(_) => Status::internal(msg),
    }
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::FeedItem, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Client for Api {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let (user, _role) = self.require_user(&req, false)?;
        let st = &self.state;
        let mut content = self.draft_content(&user, req.into_inner())?;
        self.prepare_control(&mut content)?;
        let cluster = st.cluster(&content.cluster);
        if let Some(c) = &cluster
            && let Err((rule, why)) = st.router.check_origin(&content, c, now_ms())
        {
            let msg = format!("refused before signing ({rule}): {why}");
            return Err(match rule {
                "cluster-membership" | "cluster-role" => Status::permission_denied(msg),
                _ => Status::invalid_argument(msg),
            });
        }
        let span = tracing::info_span!("publish", msg.id = %content.id, author = %content.author);
        async move {
            let candidates: Vec<String> = match &cluster {
                Some(c) => c
                    .current_members()
                    .into_iter()
                    .filter(|m| m != st.org())
                    .collect(),
                None => st.config.peers.iter().map(|p| p.org.clone()).collect(),
            };
            let decisions: Vec<_> = candidates
                .iter()
                .map(|org| st.decide(&content, org, Direction::Egress))
                .collect();
            let (allowed, refused): (Vec<_>, Vec<_>) =
                decisions.into_iter().partition(|d| d.allowed);
            let queued_for: Vec<String> = allowed.into_iter().map(|d| d.org).collect();
            let env = envelope::seal(&st.signer, &content);
            let mut events = vec![AuditEvent::published(
                &content.id,
                format!(
                    "{} by {} in {} at {} {}; queued for [{}]",
                    pb::Kind::try_from(content.kind)
                        .map(|k| k.as_str_name())
                        .unwrap_or("?"),
                    content.author,
                    if content.cluster.is_empty() {
                        "no cluster"
                    } else {
                        &content.cluster
                    },
                    level_label(content.level),
                    tlp_label(content.marking.as_ref().map(|m| m.tlp).unwrap_or(0)),
                    queued_for.join(", ")
                ),
            )];
            for d in &refused {
                events.push(AuditEvent::rejected(
                    &content.id,
                    &d.org,
                    d.rule,
                    format!("egress: {}", d.reason),
                ));
            }
            // The audit records commit with the message: one transaction, one fsync.
            let outcome = st
                .store
                .insert(NewMessage {
                    id: content.id.clone(),
                    envelope: env.encode_to_vec(),
                    origin: content.origin_org.clone(),
                    kind: content.kind,
                    level: content.level,
                    received_from: String::new(),
                    received_at_ms: now_ms(),
                    outbox: queued_for.clone(),
                    audit: events,
                })
                .await
                .map_err(|e| Status::unavailable(format!("not stored, publish again: {e}")))?;
            let seq = match outcome {
                InsertOutcome::Inserted(s) | InsertOutcome::Duplicate(s) => s,
            };
            st.notify_peers(&queued_for);
            crate::markings::apply(&st.store, &content, crate::markings::Effect::Apply).await;
            info!(msg.seq = seq, queued = queued_for.len(), "published");
            st.metrics.inc(crate::metrics::MESSAGES_PUBLISHED, &[]);
            Ok(Response::new(pb::PublishResponse {
                id: content.id.clone(),
                seq,
                queued_for,
                refused: refused
                    .into_iter()
                    .map(|d| pb::RoutingDecision {
                        org: d.org,
                        allowed: false,
                        rule: d.rule.to_string(),
                        reason: d.reason,
                    })
                    .collect(),
            }))
        }
        .instrument(span)
        .await
    }

    type SubscribeStream = FeedStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (user, _) = self.require_user(&req, false)?;
        let r = req.into_inner();
        let st = self.state.clone();
        let mut cursor = r.after_seq;
        if cursor == 0 && !r.durable_name.is_empty() {
            cursor = st
                .store
                .get_cursor(&r.durable_name)
                .map_err(internal)?
                .unwrap_or(0);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut head = st.store.subscribe_head();
        let mut shutdown = st.shutdown_rx.clone();
        let span = tracing::info_span!("subscribe", subscriber = %user, cursor);
        let going_away = || {
            Status::unavailable(
                "the node is shutting down; subscribe again with after_seq = the last seq you \
                 received (or your durable name) to resume without a gap",
            )
        };
        tokio::spawn(
            async move {
                loop {
                    if *shutdown.borrow() {
                        say_goodbye(&tx, going_away()).await;
                        return;
                    }
                    let page = match st.store.read_after(cursor, 256) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(internal(e))).await;
                            return;
                        }
                    };
                    if page.is_empty() {
                        if r.no_follow {
                            return;
                        }
                        tokio::select! {
                            changed = head.changed() => if changed.is_err() { return },
                            _ = tx.closed() => return,
                            // A dropped sender means the node is going away too.
                            r = shutdown.changed() => if r.is_err() {
                                say_goodbye(&tx, going_away()).await;
                                return;
                            },
                        }
                        continue;
                    }
                    for m in page {
                        cursor = m.seq;
                        // This node's own re-share copies are outbox records.
                        if m.id.starts_with(RESHARE_PREFIX) {
                            continue;
                        }
                        if !r.kinds.is_empty() && !r.kinds.contains(&m.kind) {
                            continue;
                        }
                        if !r.levels.is_empty() && !r.levels.contains(&m.level) {
                            continue;
                        }
                        if !r.origins.is_empty() && !r.origins.contains(&m.origin) {
                            continue;
                        }
                        let item = match feed_item_for(&st, m) {
                            Ok(Some(i)) => Ok(i),
                            // Retracted by its origin: it leaves the feed.
                            Ok(None) => continue,
                            Err(e) => Err(e),
                        };
                        if !r.clusters.is_empty()
                            && let Ok(i) = &item
                            && !i.content.as_ref().is_some_and(|c| {
                                r.clusters.iter().any(|f| {
                                    *f == c.cluster || c.cluster.ends_with(&format!("/{f}"))
                                })
                            })
                        {
                            continue;
                        }
                        // A subscriber that stops reading holds this task (backpressure),
                        // but never past shutdown.
                        tokio::select! {
                            sent = tx.send(item) => if sent.is_err() {
                                debug!("subscriber went away");
                                return;
                            },
                            _ = shutdown.changed() => {
                                say_goodbye(&tx, going_away()).await;
                                return;
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::FeedItem>, Status> {
        self.require_user(&req, false)?;
        let id = req.into_inner().id;
        let m = self.find(&id)?;
        match feed_item_for(&self.state, m)? {
            Some(item) => Ok(Response::new(item)),
            None => Err(Status::not_found(format!(
                "message {id} was retracted by its origin"
            ))),
        }
    }

    async fn reshare(
        &self,
        req: Request<pb::ReshareRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let (user, _) = self.require_user(&req, false)?;
        let r = req.into_inner();
        let st = &self.state;
        let m = self.find(&r.message_id)?;
        let env = pb::Envelope::decode(m.envelope.as_slice()).map_err(internal)?;
        let content = pb::Content::decode(env.content.as_slice()).map_err(internal)?;
        let standing = crate::markings::standing(&st.store, &content);
        if let Some(why) = standing.retracted {
            return Err(Status::failed_precondition(format!(
                "retracted by its origin: {why}"
            )));
        }
        let marking = standing.marking.unwrap_or_default();
        envelope::reshare_allowed(&content, &marking)
            .map_err(|why| Status::permission_denied(format!("cannot re-share: {why}")))?;
        let c = self.resolve(&r.to_cluster)?;
        if c.id == content.cluster {
            return Err(Status::invalid_argument(format!(
                "{} is already in {}",
                content.id, c.id
            )));
        }
        match c.role_of(st.org()) {
            Some(pb::ClusterRole::Observer) | None => {
                return Err(Status::permission_denied(format!(
                    "{} is not a publishing member of {}",
                    st.org(),
                    c.id
                )));
            }
            Some(_) => {}
        }
        let origin_cert = st
            .directory
            .get(&content.origin_org)
            .map(|d| d.0.clone())
            .or_else(|| (content.origin_org == st.org()).then(|| st.tls.chain[0].to_vec()))
            .unwrap_or_default();
        let a = pb::ForwardAttestation {
            message_id: content.id.clone(),
            forwarder_org: st.org().to_string(),
            to_cluster: c.id.clone(),
            cluster_index: c.head_index,
            at_ms: now_ms(),
            content_hash: envelope::content_hash(&env.content),
        };
        let fwd = envelope::attest(
            &st.signer,
            &pb::Envelope {
                forwarding: None,
                ..env
            },
            &a,
            origin_cert,
        );
        let view = envelope::forwarded_view(&content, &a);
        let (allowed, refused): (Vec<_>, Vec<_>) = c
            .current_members()
            .into_iter()
            .filter(|o| o != st.org())
            .map(|o| st.decide(&view, &o, Direction::Egress))
            .partition(|d| d.allowed);
        let queued_for: Vec<String> = allowed.into_iter().map(|d| d.org).collect();
        let outcome = st
            .store
            .insert(NewMessage {
                id: format!("{RESHARE_PREFIX}{}:{}", content.id, c.id),
                envelope: fwd.encode_to_vec(),
                origin: content.origin_org.clone(),
                kind: content.kind,
                level: content.level,
                received_from: String::new(),
                received_at_ms: now_ms(),
                outbox: queued_for.clone(),
                audit: vec![
                    AuditEvent::new(crate::audit::AuditKind::Sent)
                        .msg(&content.id)
                        .cluster(&c.id)
                        .rule("reshare")
                        .detail(format!(
                            "re-shared by {user} into {} for [{}]",
                            c.id,
                            queued_for.join(", ")
                        )),
                ],
            })
            .await
            .map_err(|e| Status::unavailable(format!("not stored, re-share again: {e}")))?;
        st.notify_peers(&queued_for);
        let seq = match outcome {
            InsertOutcome::Inserted(s) | InsertOutcome::Duplicate(s) => s,
        };
        Ok(Response::new(pb::PublishResponse {
            id: content.id,
            seq,
            queued_for,
            refused: refused
                .into_iter()
                .map(|d| pb::RoutingDecision {
                    org: d.org,
                    allowed: false,
                    rule: d.rule.to_string(),
                    reason: d.reason,
                })
                .collect(),
        }))
    }

    async fn commit_cursor(
        &self,
        req: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::CommitCursorResponse>, Status> {
        self.require_user(&req, false)?;
        let r = req.into_inner();
        if r.durable_name.is_empty() {
            return Err(Status::invalid_argument("durable_name is empty"));
        }
        self.state
            .store
            .set_cursor(&r.durable_name, r.seq)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::CommitCursorResponse {}))
    }
}

impl Api {
    fn peer_statuses(&self) -> Result<Vec<pb::PeerStatus>, Status> {
        let mut out = Vec::new();
        for p in self.state.peers.iter() {
            let s = p.stats();
            out.push(pb::PeerStatus {
                org: p.org.clone(),
                endpoint: p.endpoint.clone(),
                connected: s.connected,
                outbox_depth: self.state.store.outbox_depth(&p.org).map_err(internal)?,
                delivered: self.state.store.delivered_count(&p.org).map_err(internal)?,
                consecutive_failures: s.consecutive_failures,
                last_error: s.last_error,
                last_success_ms: s.last_success_ms,
                kx_group: p.kx_group(),
            });
        }
        out.sort_by(|a, b| a.org.cmp(&b.org));
        Ok(out)
    }
}

impl Api {
    /// The content a publish request would produce (not signed, not stored).
    fn draft_content(&self, user: &str, r: pb::PublishRequest) -> Result<pb::Content, Status> {
        let st = &self.state;
        let body = match r.body {
            None => None,
            Some(pb::publish_request::Body::FreeText(t)) => Some(pb::content::Body::FreeText(t)),
            Some(pb::publish_request::Body::Incident(i)) => Some(pb::content::Body::Incident(i)),
            // A control message names its target by (origin, id): resolve what the user gave.
            Some(pb::publish_request::Body::MarkingChange(mut m)) => {
                let t = self.find_target(&m.target_origin, &m.target_id)?;
                (m.target_origin, m.target_id) = (t.origin, t.id);
                Some(pb::content::Body::MarkingChange(m))
            }
            Some(pb::publish_request::Body::Retraction(mut x)) => {
                let t = self.find_target(&x.target_origin, &x.target_id)?;
                (x.target_origin, x.target_id) = (t.origin, t.id);
                Some(pb::content::Body::Retraction(x))
            }
        };
        let cluster = if r.cluster.is_empty() {
            None
        } else {
            Some(self.resolve(&r.cluster)?)
        };
        let content = pb::Content {
            id: envelope::new_id(),
            origin_org: st.org().to_string(),
            author: format!("{}/{}", st.org(), user),
            created_at_ms: now_ms(),
            expires_at_ms: r.expires_at_ms,
            kind: r.kind,
            level: r.level,
            marking: r.marking,
            recipients: r.recipients,
            cluster: cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            cluster_index: cluster.as_ref().map(|c| c.head_index).unwrap_or(0),
            scope_sectors: r.scope_sectors,
            scope_countries: r.scope_countries,
            no_reshare: r.no_reshare,
            body,
        };
        envelope::validate(&content).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(content)
    }

    /// A stored message by "ID" or "ORIGIN/ID", as a gRPC error if there is
    /// none or the bare id is used by several organisations.
    fn find(&self, reference: &str) -> Result<StoredMessage, Status> {
        let (origin, id) = match reference.split_once('/') {
            Some((o, i)) => (o, i),
            None => ("", reference),
        };
        self.find_target(origin, id)
    }

    /// The message `origin` published as `id`; with no origin, the only
    /// message with that id (`id` may also be written "ORIGIN/ID").
    fn find_target(&self, origin: &str, id: &str) -> Result<StoredMessage, Status> {
        let (origin, id) = match (origin.is_empty(), id.split_once('/')) {
            (true, Some((o, i))) => (o, i),
            _ => (origin, id),
        };
        let store = &self.state.store;
        if !origin.is_empty() {
            return store.get(origin, id).map_err(internal)?.ok_or_else(|| {
                Status::not_found(format!("no message {origin}/{id} on this node"))
            });
        }
        let mut found = store.find_by_id(id).map_err(internal)?;
        match found.len() {
            0 => Err(Status::not_found(format!(
                "no message with id {id} on this node"
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(Status::invalid_argument(format!(
                "id {id} is used by several organisations ({}): name the one you mean as ORIGIN/{id}",
                found
                    .iter()
                    .map(|m| m.origin.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// For a control message: check this organisation's authority with the
    /// same rule receivers apply, and aim it at the target's audience.
    fn prepare_control(&self, content: &mut pb::Content) -> Result<(), Status> {
        let Some((origin, id)) = crate::markings::target_of(content) else {
            return Ok(());
        };
        let st = &self.state;
        let m =
            st.store.get(origin, id).map_err(internal)?.ok_or_else(|| {
                Status::not_found(format!("no message {origin}/{id} on this node"))
            })?;
        let env = pb::Envelope::decode(m.envelope.as_slice()).map_err(internal)?;
        let target = pb::Content::decode(env.content.as_slice()).map_err(internal)?;
        let standing = crate::markings::standing(&st.store, &target);
        crate::markings::authority(content, Some((&target, &standing)), |t| {
            st.may_receive(t, st.org())
        })
        .map_err(|e| Status::permission_denied(e.to_string()))?;
        let index = st
            .cluster(&target.cluster)
            .map(|c| c.head_index)
            .unwrap_or(0);
        crate::markings::aim(content, &target, &standing, index);
        Ok(())
    }

    fn cluster_ref(&self, req: Request<pb::ClusterRef>) -> Result<Arc<ClusterState>, Status> {
        self.resolve(&req.into_inner().cluster)
    }

    /// A cluster by id or unambiguous name, as a gRPC error if there is none.
    fn resolve(&self, name: &str) -> Result<Arc<ClusterState>, Status> {
        self.state.resolve_cluster(name).map_err(replication_status)
    }

    /// Carry out an operation on `c` as this organisation.
    async fn act(
        &self,
        c: &ClusterState,
        op: pb::cluster_op::Op,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let state = self
            .state
            .act(&c.id, c.head_hash.clone(), op)
            .await
            .map_err(replication_status)?;
        Ok(Response::new(cluster_info(&state, self.state.org())))
    }

    /// The invitee's verified node certificate: from the directory, or by
    /// connecting to `endpoint` and reading the certificate it presents.
    async fn invitee_cert(&self, org: &str, endpoint: &str) -> Result<Vec<u8>, Status> {
        let configured = self
            .state
            .config
            .peers
            .iter()
            .find(|p| p.org == org)
            .map(|p| p.endpoint.clone());
        let known = self.state.directory.get(org).map(|d| d.0.clone());
        let endpoint = match (endpoint.is_empty(), known, configured) {
            (true, Some(der), _) => return Ok(der),
            (true, None, Some(configured)) => configured,
            _ => endpoint.to_string(),
        };
        let endpoint = endpoint.as_str();
        if endpoint.is_empty() {
            return self
                .state
                .directory
                .get(org)
                .map(|d| d.0.clone())
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "this node has never seen {org}'s certificate: pass --endpoint https://HOST:PORT of its node"
                    ))
                });
        }
        let link = Arc::new(std::sync::Mutex::new(crate::tls::LinkInfo::default()));
        let channel = crate::tls::channel(
            endpoint,
            self.state.client_config.clone(),
            self.state.tls.root_der.clone(),
            Some(org.to_string()),
            link.clone(),
            std::time::Duration::from_secs(5),
        )
        .map_err(Status::invalid_argument)?;
        pb::federation_client::FederationClient::new(channel)
            .hello(pb::HelloRequest {})
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "could not verify {org} at {endpoint}: {}",
                    e.message()
                ))
            })?;
        let (der, peer) = {
            let l = link.lock().map_err(|_| Status::internal("lock poisoned"))?;
            (l.cert_der.clone(), l.peer.clone())
        };
        if let Some(PeerIdentity::Node { profile, .. }) = peer {
            self.state.learn_org(&profile, &der).await;
        }
        Ok(der)
    }
}

/// What `cluster show` prints.
pub fn cluster_info(c: &ClusterState, me: &str) -> pb::ClusterInfo {
    pb::ClusterInfo {
        id: c.id.clone(),
        name: c.name.clone(),
        purpose: c.purpose.clone(),
        levels: c.levels.clone(),
        max_tlp: c.max_tlp,
        history: c.history as i32,
        convener: c.convener.clone(),
        members: c
            .members
            .values()
            .map(|m| pb::ClusterMember {
                org: m.org.clone(),
                role: m.role as i32,
                state: m.standing.as_str().to_string(),
                endpoint: m.profile.endpoint.clone(),
                since_index: m.since_index,
            })
            .collect(),
        head_index: c.head_index,
        head_hash: c.head_hash.clone(),
        my_state: c
            .standing(me)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "none".into()),
        exercise: c.exercise,
    }
}

#[tonic::async_trait]
impl Admin for Api {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.require_user(&req, true)?;
        let st = &self.state;
        Ok(Response::new(pb::StatusResponse {
            org: st.org().to_string(),
            version: VERSION.to_string(),
            listen: st.listen.to_string(),
            messages: st.store.message_count().map_err(internal)?,
            last_seq: st.store.head_seq(),
            rejected: st.store.rejection_count().map_err(internal)?,
            started_at_ms: st.started_at_ms,
            peers: self.peer_statuses()?,
        }))
    }

    async fn peers(
        &self,
        req: Request<pb::PeersRequest>,
    ) -> Result<Response<pb::PeersResponse>, Status> {
        self.require_user(&req, true)?;
        Ok(Response::new(pb::PeersResponse {
            peers: self.peer_statuses()?,
        }))
    }

    async fn reload_revocations(
        &self,
        req: Request<pb::ReloadRevocationsRequest>,
    ) -> Result<Response<pb::ReloadRevocationsResponse>, Status> {
        self.require_user(&req, true)?;
        self.state
            .tls
            .reload_crl()
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::ReloadRevocationsResponse {
            revoked_serials: self.state.tls.revocations.len() as u32,
        }))
    }

    async fn cluster_create(
        &self,
        req: Request<pb::ClusterCreateRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let r = req.into_inner();
        cluster::check_name(&r.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let st = &self.state;
        let id = cluster::cluster_id(st.org(), &r.name);
        let node_cert = st.tls.chain.first().map(|c| c.to_vec()).unwrap_or_default();
        let state = st
            .act(
                &id,
                String::new(),
                pb::cluster_op::Op::Create(pb::CreateCluster {
                    name: r.name,
                    purpose: r.purpose,
                    levels: r.levels,
                    max_tlp: r.max_tlp,
                    history: r.history,
                    node_cert,
                    exercise: r.exercise,
                }),
            )
            .await
            .map_err(replication_status)?;
        Ok(Response::new(cluster_info(&state, st.org())))
    }

    async fn cluster_invite(
        &self,
        req: Request<pb::ClusterInviteRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        let node_cert = self.invitee_cert(&r.org, &r.endpoint).await?;
        let role = if r.role == 0 {
            pb::ClusterRole::Member as i32
        } else {
            r.role
        };
        self.act(
            &c,
            pb::cluster_op::Op::Invite(pb::InviteMember {
                org: r.org,
                role,
                node_cert,
            }),
        )
        .await
    }

    async fn cluster_accept(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let c = self.cluster_ref(req)?;
        let node_cert = self
            .state
            .tls
            .chain
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        self.act(
            &c,
            pb::cluster_op::Op::Accept(pb::AcceptInvitation { node_cert }),
        )
        .await
    }

    async fn cluster_decline(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let c = self.cluster_ref(req)?;
        self.act(&c, pb::cluster_op::Op::Decline(pb::DeclineInvitation {}))
            .await
    }

    async fn cluster_leave(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let c = self.cluster_ref(req)?;
        self.act(&c, pb::cluster_op::Op::Leave(pb::LeaveCluster {}))
            .await
    }

    async fn cluster_remove(
        &self,
        req: Request<pb::ClusterMemberRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        self.act(
            &c,
            pb::cluster_op::Op::Remove(pb::RemoveMember {
                org: r.org,
                reason: r.reason,
            }),
        )
        .await
    }

    async fn cluster_set_role(
        &self,
        req: Request<pb::ClusterSetRoleRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        self.act(
            &c,
            pb::cluster_op::Op::SetRole(pb::SetMemberRole {
                org: r.org,
                role: r.role,
            }),
        )
        .await
    }

    async fn cluster_transfer_convener(
        &self,
        req: Request<pb::ClusterMemberRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        self.act(
            &c,
            pb::cluster_op::Op::Transfer(pb::TransferConvener { to: r.org }),
        )
        .await
    }

    async fn cluster_list(
        &self,
        req: Request<pb::ClusterListRequest>,
    ) -> Result<Response<pb::ClusterListResponse>, Status> {
        self.require_user(&req, true)?;
        let mut clusters: Vec<pb::ClusterInfo> = self
            .state
            .clusters
            .iter()
            .map(|c| cluster_info(&c, self.state.org()))
            .collect();
        clusters.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(pb::ClusterListResponse { clusters }))
    }

    async fn cluster_show(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.require_user(&req, true)?;
        let c = self.cluster_ref(req)?;
        Ok(Response::new(cluster_info(&c, self.state.org())))
    }

    async fn cluster_log_entries(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterLogEntriesResponse>, Status> {
        self.require_user(&req, true)?;
        let c = self.cluster_ref(req)?;
        let raw: Vec<Vec<u8>> = self
            .state
            .store
            .cluster_entries(&c.id, 0, usize::MAX)
            .map_err(internal)?
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let (_, applied) = cluster::replay(&raw, &self.state.tls.root_der).map_err(|e| {
            Status::data_loss(format!("stored log of {} does not verify: {e}", c.id))
        })?;
        Ok(Response::new(pb::ClusterLogEntriesResponse {
            entries: applied
                .into_iter()
                .map(|a| pb::ClusterLogLine {
                    index: a.index,
                    hash: a.hash,
                    actor: a.op.actor_org.clone(),
                    op: cluster::describe(&a.op),
                    at_ms: a.sequenced_at_ms,
                    sequenced_by: a.sequenced_by,
                })
                .collect(),
        }))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let (user, _) = self.require_user(&req, true)?;
        let r = req.into_inner();
        let st = &self.state;
        let content = if !r.message_id.is_empty() {
            let m = self.find(&r.message_id)?;
            let env = pb::Envelope::decode(m.envelope.as_slice()).map_err(internal)?;
            pb::Content::decode(env.content.as_slice()).map_err(internal)?
        } else if let Some(d) = r.draft {
            self.draft_content(&user, d)?
        } else {
            return Err(Status::invalid_argument("give a message id or a draft"));
        };
        let direction = if content.origin_org == st.org() {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let targets: Vec<String> = if !r.to.is_empty() {
            vec![r.to]
        } else if direction == Direction::Ingress {
            vec![st.org().to_string()]
        } else if let Some(c) = st.cluster(&content.cluster) {
            c.known_orgs()
                .into_iter()
                .filter(|o| o != st.org())
                .collect()
        } else {
            st.config.peers.iter().map(|p| p.org.clone()).collect()
        };
        let recipients = targets
            .iter()
            .map(|org| {
                let d = st.decide(&content, org, direction);
                pb::RecipientExplanation {
                    org: d.org,
                    allowed: d.allowed,
                    rule: d.rule.to_string(),
                    reason: d.reason,
                    steps: d
                        .steps
                        .into_iter()
                        .map(|s| pb::RuleResult {
                            rule: s.rule.to_string(),
                            allowed: s.allowed,
                            reason: s.reason,
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ExplainResponse { recipients }))
    }

    async fn reload_policy(
        &self,
        req: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        self.require_user(&req, true)?;
        let Some(handle) = self.state.router.policy() else {
            return Err(Status::failed_precondition(
                "this node has no policy handle",
            ));
        };
        handle.reload().map_err(|e| {
            Status::failed_precondition(format!("policy not reloaded, previous one kept: {e}"))
        })?;
        let current = handle.current();
        Ok(Response::new(pb::ReloadPolicyResponse {
            loaded: current.is_some(),
            policy_hash: current.as_ref().map(|p| p.hash()).unwrap_or_default(),
            policies: current.as_ref().map(|p| p.len() as u32).unwrap_or(0),
        }))
    }

    async fn audit_verify(
        &self,
        req: Request<pb::AuditVerifyRequest>,
    ) -> Result<Response<pb::AuditVerifyResponse>, Status> {
        self.require_user(&req, true)?;
        let r = crate::audit::verify(&self.state.store).map_err(internal)?;
        Ok(Response::new(r))
    }

    async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        self.require_user(&req, true)?;
        Ok(Response::new(pb::MetricsResponse {
            text: self.state.render_metrics(),
        }))
    }

    type AuditExportStream =
        Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send + 'static>>;

    async fn audit_export(
        &self,
        req: Request<pb::AuditExportRequest>,
    ) -> Result<Response<Self::AuditExportStream>, Status> {
        self.require_user(&req, true)?;
        let r = req.into_inner();
        let records =
            crate::audit::export(&self.state.store, r.since_ms, r.until_ms).map_err(internal)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            records.into_iter().map(Ok),
        ))))
    }

    async fn rejections(
        &self,
        req: Request<pb::RejectionsRequest>,
    ) -> Result<Response<pb::RejectionsResponse>, Status> {
        self.require_user(&req, true)?;
        let limit = req.into_inner().limit.clamp(1, 10_000) as usize;
        let rs = self.state.store.rejections(limit).map_err(internal)?;
        Ok(Response::new(pb::RejectionsResponse {
            rejections: rs
                .into_iter()
                .map(|r| pb::Rejection {
                    at_ms: r.at_ms,
                    from_peer: r.from_peer,
                    id: r.id,
                    reason: r.reason,
                })
                .collect(),
        }))
    }
}
