//! A rogue federation member: a real organisation with a valid node
//! certificate and signing key that crafts its own correctly signed
//! envelopes and calls another node's `Federation` service directly,
//! ignoring every egress rule its own node would apply.
//!
//! [`Rogue`] builds well-formed content for its organisation, seals it with
//! the organisation's real key, forwards (re-shares) envelopes with its own
//! attestation, delivers arbitrary envelopes and makes the other federation
//! calls (`Backfill`, `ClusterLog`, `ProposeClusterOp`, `Hello`).
//! [`Rogue::check_refused`] states what a refusal must look like to a user:
//! outcome REJECTED with a reason, nothing stored (or the stored copy
//! unchanged), the refusal in `Admin.Rejections` and audited under the rule's
//! name, and the node still answering. [`Failures`] collects the problems of
//! many cases so that one test reports every case that does not hold.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bluewire_node::client::Connection;
use bluewire_node::envelope;
use bluewire_node::signing::SigningKey;
use bluewire_node::store::StoredMessage;
use prost::Message;
use tonic::transport::Channel;

use crate::{TestFederation, now_ms, pb};

type FederationClient = pb::federation_client::FederationClient<Channel>;

/// What a rogue sends: content it seals with its own key, or an envelope
/// exactly as given (tampered, signed by another key, forwarded...).
#[derive(Clone, Debug)]
pub enum Sent {
    Content(Box<pb::Content>),
    Envelope(Box<pb::Envelope>),
}

impl From<pb::Content> for Sent {
    fn from(c: pb::Content) -> Self {
        Sent::Content(Box::new(c))
    }
}

impl From<&pb::Content> for Sent {
    fn from(c: &pb::Content) -> Self {
        Sent::Content(Box::new(c.clone()))
    }
}

impl From<pb::Envelope> for Sent {
    fn from(e: pb::Envelope) -> Self {
        Sent::Envelope(Box::new(e))
    }
}

impl From<&pb::Envelope> for Sent {
    fn from(e: &pb::Envelope) -> Self {
        Sent::Envelope(Box::new(e.clone()))
    }
}

/// A member of `fed` acting on its own, with its real node certificate and
/// signing key.
pub struct Rogue<'a> {
    pub fed: &'a TestFederation,
    pub org: String,
    pub key: SigningKey,
    conns: Mutex<HashMap<String, Connection>>,
    /// Deliveries go over `Federation.DeliverStream` (one stream per delivery) instead of
    /// `Federation.Deliver`.
    over_stream: std::sync::atomic::AtomicBool,
}

impl<'a> Rogue<'a> {
    pub fn new(fed: &'a TestFederation, org: &str) -> Self {
        Self {
            fed,
            org: org.to_string(),
            key: fed.signing_key(org),
            conns: Mutex::new(HashMap::new()),
            over_stream: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The mutual-TLS connection to `to`'s node with this organisation's
    /// node certificate (opened once, reused).
    pub fn conn(&self, to: &str) -> Connection {
        self.conns
            .lock()
            .unwrap()
            .entry(to.to_string())
            .or_insert_with(|| self.fed.node_conn(&self.org, to))
            .clone()
    }

    pub fn federation(&self, to: &str) -> FederationClient {
        self.conn(to).federation()
    }

    /// From now on, deliver over `Federation.DeliverStream` (`true`) or `Federation.Deliver`.
    pub fn deliver_over_stream(&self, on: bool) {
        self.over_stream
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// One Deliver request and its answer, over the call or a stream of its own as
    /// [`Rogue::deliver_over_stream`] says: a request refused as a whole is an error
    /// status either way.
    pub async fn deliver_request(
        &self,
        to: &str,
        request: pb::DeliverRequest,
    ) -> Result<pb::DeliverResponse, tonic::Status> {
        if !self.over_stream.load(std::sync::atomic::Ordering::Relaxed) {
            return self
                .federation(to)
                .deliver(request)
                .await
                .map(|r| r.into_inner());
        }
        let mut answers = self
            .federation(to)
            .deliver_stream(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("the stream ended without an answer"))?;
        if answer.code != 0 {
            return Err(tonic::Status::new(
                tonic::Code::from(answer.code),
                answer.error,
            ));
        }
        Ok(answer)
    }

    /// Well-formed TLP:GREEN technical free text from this organisation,
    /// with a fresh id and author "ORG/analyst".
    pub fn content(&self, text: &str) -> pb::Content {
        crate::content(&self.org, text)
    }

    /// [`Rogue::content`] published into `cluster`, claiming log index `index`.
    pub fn in_cluster(&self, cluster: &str, index: u64, text: &str) -> pb::Content {
        let mut c = self.content(text);
        c.cluster = cluster.into();
        c.cluster_index = index;
        c
    }

    /// A retraction of (`target_origin`, `target_id`) signed by this
    /// organisation: a direct, TLP:GREEN control message.
    pub fn retraction(&self, target_origin: &str, target_id: &str) -> pb::Content {
        let mut c = self.content("retraction");
        c.kind = pb::Kind::Retraction as i32;
        c.body = Some(pb::content::Body::Retraction(pb::Retraction {
            target_id: target_id.into(),
            reason: format!("retracted by {}", self.org),
            target_origin: target_origin.into(),
        }));
        c
    }

    /// A marking change of (`target_origin`, `target_id`) to `tlp`, signed
    /// by this organisation: a direct, TLP:GREEN control message.
    pub fn marking_change(
        &self,
        target_origin: &str,
        target_id: &str,
        tlp: pb::Tlp,
    ) -> pb::Content {
        let mut c = self.content("marking change");
        c.kind = pb::Kind::MarkingChange as i32;
        c.body = Some(pb::content::Body::MarkingChange(pb::MarkingChange {
            target_id: target_id.into(),
            marking: Some(pb::Marking {
                tlp: tlp as i32,
                ..Default::default()
            }),
            reason: format!("marking changed by {}", self.org),
            target_origin: target_origin.into(),
        }));
        c
    }

    /// Sign `c` with this organisation's real key.
    pub fn seal(&self, c: &pb::Content) -> pb::Envelope {
        envelope::seal(&self.key, c)
    }

    /// `original` (left untouched) with this organisation's signed
    /// attestation that it re-shares it into `to_cluster` at `cluster_index`.
    pub fn forward(
        &self,
        original: &pb::Envelope,
        to_cluster: &str,
        cluster_index: u64,
        origin_cert_der: Vec<u8>,
    ) -> pb::Envelope {
        self.forward_as(
            &self.org,
            original,
            to_cluster,
            cluster_index,
            origin_cert_der,
        )
    }

    /// Like [`Rogue::forward`], but the attestation names `forwarder_org`
    /// (signed with this organisation's key all the same).
    pub fn forward_as(
        &self,
        forwarder_org: &str,
        original: &pb::Envelope,
        to_cluster: &str,
        cluster_index: u64,
        origin_cert_der: Vec<u8>,
    ) -> pb::Envelope {
        let (_, id) = origin_and_id(original);
        let attestation = pb::ForwardAttestation {
            message_id: id,
            forwarder_org: forwarder_org.into(),
            to_cluster: to_cluster.into(),
            cluster_index,
            at_ms: now_ms(),
            content_hash: envelope::content_hash(&original.content),
        };
        envelope::attest(&self.key, original, &attestation, origin_cert_der)
    }

    fn envelope(&self, sent: Sent) -> pb::Envelope {
        match sent {
            Sent::Content(c) => self.seal(&c),
            Sent::Envelope(e) => *e,
        }
    }

    /// Federation.Deliver of one envelope (content is sealed first). An
    /// answer RETRY_LATER because of the peer rate limit is retried for a
    /// while; any other answer is returned as it is.
    pub async fn try_deliver(
        &self,
        to: &str,
        sent: impl Into<Sent>,
    ) -> Result<pb::DeliveryResult, String> {
        let env = self.envelope(sent.into());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut results = self
                .deliver_request(
                    to,
                    pb::DeliverRequest {
                        envelopes: vec![env.clone()],
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| {
                    format!(
                        "Deliver {} -> {to} failed as a call: {:?} {}",
                        self.org,
                        e.code(),
                        e.message()
                    )
                })?
                .results;
            if results.len() != 1 {
                return Err(format!(
                    "Deliver {} -> {to}: {} results for one envelope",
                    self.org,
                    results.len()
                ));
            }
            let r = results.remove(0);
            let rate_limited = r.outcome == pb::DeliveryOutcome::RetryLater as i32
                && r.reason.contains("rate limit");
            if !rate_limited || Instant::now() >= deadline {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Rogue::try_deliver`], panicking if the call itself fails.
    pub async fn deliver(&self, to: &str, sent: impl Into<Sent>) -> pb::DeliveryResult {
        self.try_deliver(to, sent)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Federation.Hello to `to`.
    pub async fn hello(&self, to: &str) -> Result<pb::HelloResponse, tonic::Status> {
        self.federation(to)
            .hello(pb::HelloRequest {})
            .await
            .map(|r| r.into_inner())
    }

    /// Every envelope Federation.Backfill at `to` hands this organisation
    /// from the start (all pages).
    pub async fn backfill(&self, to: &str) -> Result<Vec<pb::Envelope>, tonic::Status> {
        let mut out = Vec::new();
        let mut after_seq = 0;
        for _ in 0..1000 {
            let r = self
                .federation(to)
                .backfill(pb::BackfillRequest {
                    after_seq,
                    limit: 256,
                })
                .await?
                .into_inner();
            for e in r.entries {
                after_seq = after_seq.max(e.seq);
                out.extend(e.envelope);
            }
            if !r.more {
                break;
            }
        }
        Ok(out)
    }

    /// Federation.ClusterLog of `cluster` at `to`, from the start.
    pub async fn cluster_log(
        &self,
        to: &str,
        cluster: &str,
    ) -> Result<Vec<pb::ClusterEntry>, tonic::Status> {
        self.federation(to)
            .cluster_log(pb::ClusterLogRequest {
                cluster_id: cluster.into(),
                from_index: 0,
                limit: 1000,
            })
            .await
            .map(|r| r.into_inner().entries)
    }

    /// A cluster op naming `actor_org`, signed with this organisation's key.
    pub fn sign_op(
        &self,
        cluster: &str,
        base_hash: &str,
        actor_org: &str,
        op: pb::cluster_op::Op,
    ) -> pb::SignedClusterOp {
        bluewire_node::cluster::sign_op(
            &self.key,
            &pb::ClusterOp {
                cluster_id: cluster.into(),
                base_hash: base_hash.into(),
                op_id: envelope::new_id(),
                actor_org: actor_org.into(),
                at_ms: now_ms(),
                op: Some(op),
            },
        )
    }

    /// Federation.ProposeClusterOp at `to`.
    pub async fn propose(
        &self,
        to: &str,
        op: pb::SignedClusterOp,
    ) -> Result<pb::ClusterLogResponse, tonic::Status> {
        self.federation(to)
            .propose_cluster_op(pb::ProposeClusterOpRequest { op: Some(op) })
            .await
            .map(|r| r.into_inner())
    }

    /// Deliver `sent` to `to` and check it is refused the way a user must
    /// see it: outcome REJECTED with a reason containing `needle`; the
    /// envelope's (origin, id) not stored at `to` (or, when a copy was
    /// stored before, that copy unchanged); a rejection from this
    /// organisation in `to`'s Admin.Rejections with the same reason; an
    /// audit record `rejected` with the content id and `rule`; and `to`
    /// still answering this organisation's Hello. Every problem found is in
    /// the error, prefixed with the case.
    pub async fn check_refused(
        &self,
        to: &str,
        sent: impl Into<Sent>,
        rule: &str,
        needle: &str,
    ) -> Result<pb::DeliveryResult, String> {
        let env = self.envelope(sent.into());
        let (origin, id) = origin_and_id(&env);
        let case = format!(
            "{} -> {to}: {origin}/{id} \"{}\" (should be refused by {rule:?})",
            self.org,
            title_of_envelope(&env)
        );
        let before = stored(self.fed, to, &origin, &id);
        // Records of earlier refusals of the same envelope do not count for this one.
        let audited_before = audit_export(self.fed, to)
            .await
            .iter()
            .filter(|a| {
                a.event == "rejected" && a.msg_id == id && a.peer == self.org && a.rule == rule
            })
            .count();
        let listed_before = self
            .fed
            .rejections(to)
            .await
            .iter()
            .filter(|x| x.id == id && x.from_peer == self.org)
            .count();
        let r = self
            .try_deliver(to, env)
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        let mut problems = Vec::new();
        if r.outcome != pb::DeliveryOutcome::Rejected as i32 {
            problems.push(format!(
                "outcome {} (reason {:?}), not REJECTED",
                outcome_name(r.outcome),
                r.reason
            ));
        } else {
            if r.reason.is_empty() {
                problems.push("refused without a reason".into());
            } else if !r.reason.contains(needle) {
                problems.push(format!("reason {:?} does not mention {needle:?}", r.reason));
            }
            if r.id != id {
                problems.push(format!("result names id {:?}, not {id:?}", r.id));
            }
        }
        let after = stored(self.fed, to, &origin, &id);
        match (&before, &after) {
            (None, Some(m)) => problems.push(format!(
                "stored at {to} anyway (seq {}, received from {})",
                m.seq, m.received_from
            )),
            (Some(b), Some(a)) if b.seq != a.seq || b.envelope != a.envelope => {
                problems.push(format!(
                    "the copy stored at {to} changed (seq {} -> {})",
                    b.seq, a.seq
                ))
            }
            (Some(_), None) => problems.push(format!("the copy stored at {to} disappeared")),
            _ => {}
        }
        if r.outcome == pb::DeliveryOutcome::Rejected as i32 {
            let audit = audit_export(self.fed, to).await;
            let rejected: Vec<&pb::AuditRecord> = audit
                .iter()
                .filter(|a| a.event == "rejected" && a.msg_id == id && a.peer == self.org)
                .collect();
            if rejected.iter().filter(|a| a.rule == rule).count() <= audited_before {
                problems.push(format!(
                    "no audit record `rejected` of {id} under rule {rule:?} at {to}; rejected records of it: {:?}",
                    rejected
                        .iter()
                        .map(|a| (a.rule.as_str(), a.detail.as_str()))
                        .collect::<Vec<_>>()
                ));
            }
            let rejections = self.fed.rejections(to).await;
            let listed = rejections
                .iter()
                .filter(|x| x.id == id && x.from_peer == self.org)
                .count();
            if listed <= listed_before
                || !rejections
                    .iter()
                    .any(|x| x.id == id && x.from_peer == self.org && x.reason == r.reason)
            {
                problems.push(format!(
                    "not in {to}'s Admin.Rejections with the same reason"
                ));
            }
        }
        match self.hello(to).await {
            Ok(h) if h.org == to && h.caller_org == self.org => {}
            Ok(h) => problems.push(format!("Hello after the refusal answered {h:?}")),
            Err(e) => problems.push(format!(
                "{to} no longer answers {}'s Hello: {:?} {}",
                self.org,
                e.code(),
                e.message()
            )),
        }
        if problems.is_empty() {
            Ok(r)
        } else {
            Err(format!("{case}: {}", problems.join("; ")))
        }
    }

    /// [`Rogue::check_refused`], panicking with every problem found.
    pub async fn expect_refused(
        &self,
        to: &str,
        sent: impl Into<Sent>,
        rule: &str,
        needle: &str,
    ) -> pb::DeliveryResult {
        self.check_refused(to, sent, rule, needle)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Deliver `sent` to `to` and check it is ACCEPTED and stored there
    /// under its (origin, id).
    pub async fn check_accepted(
        &self,
        to: &str,
        sent: impl Into<Sent>,
    ) -> Result<pb::DeliveryResult, String> {
        let env = self.envelope(sent.into());
        let (origin, id) = origin_and_id(&env);
        let case = format!(
            "{} -> {to}: {origin}/{id} \"{}\" (should be accepted)",
            self.org,
            title_of_envelope(&env)
        );
        let r = self
            .try_deliver(to, env)
            .await
            .map_err(|e| format!("{case}: {e}"))?;
        let mut problems = Vec::new();
        if r.outcome != pb::DeliveryOutcome::Accepted as i32 {
            problems.push(format!(
                "outcome {} (reason {:?}), not ACCEPTED",
                outcome_name(r.outcome),
                r.reason
            ));
        }
        if stored(self.fed, to, &origin, &id).is_none() {
            problems.push(format!("({origin}, {id}) is not stored at {to}"));
        }
        if problems.is_empty() {
            Ok(r)
        } else {
            Err(format!("{case}: {}", problems.join("; ")))
        }
    }

    /// [`Rogue::check_accepted`], panicking with every problem found.
    pub async fn expect_accepted(&self, to: &str, sent: impl Into<Sent>) -> pb::DeliveryResult {
        self.check_accepted(to, sent)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Problems of many cases, reported together at the end of a test.
#[derive(Debug, Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep the error of `r`, if any; returns the value otherwise.
    pub fn check<T>(&mut self, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                println!("FAILED: {e}");
                self.0.push(e);
                None
            }
        }
    }

    /// Record a failure unless `cond` holds.
    pub fn ensure(&mut self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            let e = what();
            println!("FAILED: {e}");
            self.0.push(e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Panic listing every problem, if there is any.
    pub fn finish(self, what: &str) {
        if !self.0.is_empty() {
            panic!(
                "{what}: {} problem(s):\n  - {}",
                self.0.len(),
                self.0.join("\n  - ")
            );
        }
    }
}

/// (origin_org, id) of an envelope's content; empty strings when it does not decode.
pub fn origin_and_id(env: &pb::Envelope) -> (String, String) {
    pb::Content::decode(&env.content[..])
        .map(|c| (c.origin_org, c.id))
        .unwrap_or_default()
}

/// The title of a message (free text or incident), or its kind.
pub fn title_of(c: &pb::Content) -> String {
    match &c.body {
        Some(pb::content::Body::FreeText(t)) => t.title.clone(),
        Some(pb::content::Body::Incident(i)) => i.title.clone(),
        Some(pb::content::Body::Retraction(r)) => {
            format!("retraction of {}/{}", r.target_origin, r.target_id)
        }
        Some(pb::content::Body::MarkingChange(m)) => format!(
            "marking change of {}/{} to {}",
            m.target_origin,
            m.target_id,
            envelope::tlp_label(m.marking.as_ref().map_or(0, |m| m.tlp))
        ),
        Some(_) => bluewire_node::case::summary(c),
        None => String::new(),
    }
}

fn title_of_envelope(env: &pb::Envelope) -> String {
    let mut t = pb::Content::decode(&env.content[..])
        .map(|c| title_of(&c))
        .unwrap_or_else(|_| "undecodable content".into());
    t.truncate(80);
    t
}

/// The name of a DeliveryOutcome value.
pub fn outcome_name(outcome: i32) -> String {
    pb::DeliveryOutcome::try_from(outcome)
        .map(|o| o.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown outcome {outcome}"))
}

/// The message (origin, id) as stored at `org`'s in-process node.
pub fn stored(fed: &TestFederation, org: &str, origin: &str, id: &str) -> Option<StoredMessage> {
    fed.node(org)
        .store
        .get(origin, id)
        .unwrap_or_else(|e| panic!("store.get({origin}, {id}) at {org}: {e}"))
}

/// The envelope of (origin, id) as stored at `org`; panics when absent.
pub fn stored_envelope(fed: &TestFederation, org: &str, origin: &str, id: &str) -> pb::Envelope {
    let m = stored(fed, org, origin, id)
        .unwrap_or_else(|| panic!("{origin}/{id} is not stored at {org}"));
    pb::Envelope::decode(m.envelope.as_slice()).expect("stored envelope decodes")
}

/// Client.Get of `id` ("UUID" or "ORIGIN/UUID") at `org` as its analyst.
pub async fn get(fed: &TestFederation, org: &str, id: &str) -> Result<pb::FeedItem, tonic::Status> {
    fed.client(org, "analyst")
        .client()
        .get(pb::GetRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}

/// (origin, id) of every item in `org`'s feed.
pub async fn feed_keys(fed: &TestFederation, org: &str) -> Vec<(String, String)> {
    fed.feed(org, None)
        .await
        .iter()
        .map(|i| {
            let c = crate::item_content(i);
            (c.origin_org, c.id)
        })
        .collect()
}

/// Is (origin, id) retracted at `org`, as its analysts see it: Client.Get of
/// "ORIGIN/ID" answers NOT_FOUND saying it was retracted, and it is not in
/// the feed?
pub async fn check_retracted(
    fed: &TestFederation,
    org: &str,
    origin: &str,
    id: &str,
) -> Result<(), String> {
    let mut problems = Vec::new();
    match get(fed, org, &format!("{origin}/{id}")).await {
        Ok(item) => problems.push(format!(
            "Client.Get answers it (effective marking {:?})",
            item.effective_marking
        )),
        Err(e) if e.code() == tonic::Code::NotFound && e.message().contains("retracted") => {}
        Err(e) => problems.push(format!(
            "Client.Get answers {:?} {:?}, not NOT_FOUND because retracted",
            e.code(),
            e.message()
        )),
    }
    if feed_keys(fed, org)
        .await
        .iter()
        .any(|(o, i)| o == origin && i == id)
    {
        problems.push("it is in the feed".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{origin}/{id} should be retracted at {org}: {}",
            problems.join("; ")
        ))
    }
}

/// Client.Get of "ORIGIN/ID" at `org`, failing with what went wrong.
pub async fn get_ref(
    fed: &TestFederation,
    org: &str,
    origin: &str,
    id: &str,
) -> Result<pb::FeedItem, String> {
    get(fed, org, &format!("{origin}/{id}")).await.map_err(|e| {
        format!(
            "Client.Get {origin}/{id} at {org}: {:?} {}",
            e.code(),
            e.message()
        )
    })
}

/// The effective TLP of (origin, id) at `org` (Client.Get of "ORIGIN/ID").
pub async fn effective_tlp(
    fed: &TestFederation,
    org: &str,
    origin: &str,
    id: &str,
) -> Result<pb::Tlp, String> {
    let item = get_ref(fed, org, origin, id).await?;
    let tlp = item
        .effective_marking
        .map(|m| m.tlp)
        .ok_or_else(|| format!("{origin}/{id} at {org} has no effective marking"))?;
    pb::Tlp::try_from(tlp).map_err(|_| format!("{origin}/{id} at {org}: unknown TLP {tlp}"))
}

pub use crate::audit_export;

/// `org`'s node certificate (DER), as a re-share attestation carries it.
pub fn node_cert_der(fed: &TestFederation, org: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(fed.info(org).dir.join("node.crt")).expect("read node.crt");
    bluewire_node::pki::load_certs_pem(&pem).expect("node.crt parses")[0].to_vec()
}

/// Give `org`'s node a local Cedar policy (written next to its node.toml)
/// and restart it so that it is in force.
pub async fn install_local_policy(fed: &TestFederation, org: &str, cedar: &str) {
    let info = fed.info(org).clone();
    let policy = info.dir.join("policy.cedar");
    std::fs::write(&policy, cedar).expect("write policy.cedar");
    let toml = std::fs::read_to_string(&info.config_path).expect("read node.toml");
    set_policy_file(&info.config_path, &toml, &policy);
    fed.stop(org).await;
    fed.restart(org).await;
}

fn set_policy_file(config: &Path, toml: &str, policy: &Path) {
    assert!(
        toml.contains("# file = \"policy.cedar\""),
        "node.toml template has no commented `[policy] file` line:\n{toml}"
    );
    std::fs::write(
        config,
        toml.replacen(
            "# file = \"policy.cedar\"",
            &format!("file = {:?}", policy.display().to_string()),
            1,
        ),
    )
    .expect("write node.toml");
}
