//! The case service: a case's workflow messages as this node holds them (through the store's
//! case index), its derived view ([`crate::case::derive`]), the list of cases, and the
//! origin's half of publishing a workflow step (resolving the case the user named and aiming
//! the step at the case's current state). Decisions stay in `case`; this module only reads.
//! Never returns `tonic::Status`.

use bluewire_proto::v1 as pb;
use thiserror::Error;

use crate::case::{self, CaseView};
use crate::feed::{self, LookupError};
use crate::state::NodeState;

#[derive(Debug, Error)]
pub enum CaseError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("{0} is not a case: name the case-open message (bluewire case list)")]
    NotACase(String),
    #[error("{0}")]
    Refused(String),
}

/// A case and the decoded workflow messages this node holds of it.
pub struct Held {
    pub view: CaseView,
    pub messages: Vec<pb::Content>,
}

/// The case a reference names: "ID" or "ORIGIN/ID" of its case-open message — or of any
/// workflow message of the case, for convenience.
pub fn resolve(st: &NodeState, origin: &str, id: &str) -> Result<(String, String), CaseError> {
    let m = match feed::find(&st.store, origin, id) {
        Ok(m) => m,
        // Not holding the case-open message (another level's) is no reason not to know the
        // case: its messages are indexed under it.
        Err(LookupError::NotFound(what)) => {
            let (origin, id) = match feed::parse_reference(id) {
                ("", i) => (origin, i),
                (o, i) => (o, i),
            };
            let keys = st.store.case_keys().map_err(LookupError::Store)?;
            let matching: Vec<&String> = keys
                .iter()
                .filter(|k| {
                    let (o, i) = feed::parse_reference(k);
                    i == id && (origin.is_empty() || o == origin)
                })
                .collect();
            return match matching.as_slice() {
                [] => Err(LookupError::NotFound(what).into()),
                [one] => {
                    let (o, i) = feed::parse_reference(one);
                    Ok((o.to_string(), i.to_string()))
                }
                _ => Err(LookupError::Ambiguous {
                    id: id.to_string(),
                    origins: matching
                        .iter()
                        .map(|k| feed::parse_reference(k).0)
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let (_, content) = feed::decode(&m)?;
    case::case_of(&content)
        .map(|(o, i)| (o.to_string(), i.to_string()))
        .ok_or_else(|| CaseError::NotACase(format!("{}/{}", m.origin, m.id)))
}

/// The case `(origin, id)` as this node holds it, at `now_ms`.
pub fn load(st: &NodeState, origin: &str, id: &str, now_ms: i64) -> Result<Held, CaseError> {
    let key = format!("{origin}/{id}");
    let mut messages = Vec::new();
    for m in st.store.case_messages(&key).map_err(LookupError::Store)? {
        messages.push(feed::decode(&m)?.1);
    }
    if messages.is_empty() {
        return Err(LookupError::NotFound(format!("case {key}")).into());
    }
    let refs: Vec<&pb::Content> = messages.iter().collect();
    let mut view = case::derive((origin, id), &refs, false, now_ms);
    // The case's own cluster (as the fold decided it), never the first message's.
    view.exercise |= st.cluster(&view.cluster).is_some_and(|c| c.exercise);
    Ok(Held { view, messages })
}

/// Every case this node holds a workflow message of, newest activity first.
pub fn list(st: &NodeState, now_ms: i64) -> Result<Vec<CaseView>, CaseError> {
    let mut out = Vec::new();
    for key in st.store.case_keys().map_err(LookupError::Store)? {
        let (origin, id) = feed::parse_reference(&key);
        out.push(load(st, origin, id, now_ms)?.view);
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.updated_at_ms));
    Ok(out)
}

/// At the origin: point a workflow step at its case as this node holds it (the case named
/// by reference, the previous step, the states it moves from), and put it in the case's
/// cluster when the user named none. A case-open message needs nothing.
pub fn aim(st: &NodeState, content: &mut pb::Content, now_ms: i64) -> Result<(), CaseError> {
    // Messages named by reference ("ID" or "ORIGIN/ID") become (origin, id).
    let refs: Vec<&mut pb::MessageRef> = match content.body.as_mut() {
        Some(pb::content::Body::CaseOpen(b)) => b.incident.iter_mut().collect(),
        Some(pb::content::Body::Escalation(b)) => b.technical_reports.iter_mut().collect(),
        Some(pb::content::Body::Incident(b)) => b.supersedes.iter_mut().collect(),
        _ => Vec::new(),
    };
    for r in refs.into_iter().filter(|r| !r.id.is_empty()) {
        let m = feed::find(&st.store, &r.origin, &r.id)?;
        (r.origin, r.id) = (m.origin, m.id);
    }
    // An incident report filed for a case: the case by reference, in the case's cluster.
    if let Some(pb::content::Body::Incident(b)) = content.body.as_mut()
        && let Some(r) = b.case.as_mut().filter(|r| !r.id.is_empty())
    {
        (r.origin, r.id) = resolve(st, &r.origin, &r.id)?;
        if content.cluster.is_empty() {
            let held = load(st, &r.origin, &r.id, now_ms)?;
            content.cluster = held.view.cluster.clone();
            content.cluster_index = st
                .cluster(&content.cluster)
                .map(|c| c.head_index)
                .unwrap_or(0);
        }
    }
    if matches!(content.body, Some(pb::content::Body::CaseOpen(_)))
        || !case::is_case_message(content)
    {
        return Ok(());
    }
    let named = case::link(content)
        .and_then(|l| l.case.as_ref())
        .map(|r| (r.origin.clone(), r.id.clone()))
        .filter(|(_, i)| !i.is_empty())
        .ok_or_else(|| CaseError::Refused("link.case: name the case (its id)".into()))?;
    let (origin, id) = match resolve(st, &named.0, &named.1) {
        Ok(found) => found,
        // A node may hold none of a case's messages yet (the political level does not
        // receive the operational case-open message): named as ORIGIN/ID, the case starts
        // from its initial state here, and receivers check the rest.
        Err(CaseError::Lookup(LookupError::NotFound(_)))
            if !feed::parse_reference(&named.1).0.is_empty() || !named.0.is_empty() =>
        {
            let (o, i) = match feed::parse_reference(&named.1) {
                ("", i) => (named.0.clone(), i.to_string()),
                (o, i) => (o.to_string(), i.to_string()),
            };
            (o, i)
        }
        Err(CaseError::Lookup(LookupError::NotFound(what))) => {
            return Err(CaseError::Refused(format!(
                "this node holds no message of case {what}: name it as ORIGIN/ID (and its cluster)"
            )));
        }
        Err(e) => return Err(e),
    };
    // A step named by reference (an agreed line's draft, a reserve update's request).
    if let Some(l) = case::link_mut(content)
        && let Some(p) = l.previous.as_mut().filter(|p| !p.id.is_empty())
    {
        let m = feed::find(&st.store, &p.origin, &p.id)?;
        (p.origin, p.id) = (m.origin, m.id);
    }
    let held = match load(st, &origin, &id, now_ms) {
        Ok(h) => h,
        Err(CaseError::Lookup(LookupError::NotFound(_))) => {
            if content.cluster.is_empty() {
                return Err(CaseError::Refused(format!(
                    "this node holds no message of case {origin}/{id} yet: name the case's cluster"
                )));
            }
            Held {
                view: case::derive((&origin, &id), &[], false, now_ms),
                messages: Vec::new(),
            }
        }
        Err(e) => return Err(e),
    };
    if content.cluster.is_empty() {
        content.cluster = held.view.cluster.clone();
        content.cluster_index = st
            .cluster(&content.cluster)
            .map(|c| c.head_index)
            .unwrap_or(0);
    }
    let refs: Vec<&pb::Content> = held.messages.iter().collect();
    case::aim(content, &held.view, &refs).map_err(CaseError::Refused)?;
    // With named recipients, the workflow's mandatory ones are named too — except under
    // TLP:RED, where naming is the sender's decision: a RED step that leaves one out is
    // refused when it is planned.
    let red = content
        .marking
        .as_ref()
        .is_some_and(|m| m.tlp == pb::Tlp::Red as i32);
    if !content.recipients.is_empty() && !red {
        let cluster = st.cluster(&content.cluster);
        for (org, _) in crate::known::mandatory_recipients(cluster.as_deref(), content) {
            if !content.recipients.contains(&org) {
                content.recipients.push(org);
            }
        }
    }
    Ok(())
}

fn mref(origin: &str, id: &str) -> Option<pb::MessageRef> {
    Some(pb::MessageRef {
        origin: origin.to_string(),
        id: id.to_string(),
    })
}

fn due_pb(d: &case::DueItem) -> pb::CaseDueItem {
    pb::CaseDueItem {
        what: d.what.clone(),
        r#ref: mref(&d.origin, &d.id),
        due_at_ms: d.due_at_ms,
        done_at_ms: d.done_at_ms.unwrap_or(0),
        clock: d.clock.as_str().to_string(),
    }
}

fn stage_label(s: pb::ReserveStage) -> &'static str {
    match s {
        pb::ReserveStage::Requested => "requested",
        pb::ReserveStage::Acknowledged => "acknowledged",
        pb::ReserveStage::Assigned => "assigned",
        pb::ReserveStage::Delivered => "delivered",
        pb::ReserveStage::Closed => "closed",
        pb::ReserveStage::Unspecified => "unspecified",
    }
}

/// An axis this node holds nothing of (a node sees a case only at its certified levels).
pub const NOT_SEEN: &str = "not-seen-here";

/// A case's summary on the wire.
pub fn summary_pb(v: &CaseView, now_ms: i64) -> pb::CaseSummary {
    pb::CaseSummary {
        case: mref(&v.origin, &v.id),
        title: v.title.clone(),
        cluster: v.cluster.clone(),
        exercise: v.exercise,
        phase: v.phase.as_str().to_string(),
        assessment: if v.assessment_seen {
            case::assessment_label(v.assessment)
        } else {
            NOT_SEEN
        }
        .to_string(),
        political_mode: if v.political_seen {
            case::mode_label(v.mode)
        } else {
            NOT_SEEN
        }
        .to_string(),
        crisis: if v.political_seen {
            case::crisis_label(v.crisis)
        } else {
            NOT_SEEN
        }
        .to_string(),
        closed: v.closed,
        opened_at_ms: v.opened_at_ms,
        updated_at_ms: v.updated_at_ms,
        sitrep_number: v.sitrep.as_ref().map(|s| s.0).unwrap_or(0),
        sitrep_current: case::sitrep_current(v, now_ms),
        due: v.due.iter().map(due_pb).collect(),
        reserve: v
            .reserve
            .iter()
            .map(|r| pb::CaseReserveItem {
                request: mref(&r.origin, &r.id),
                requested_at_ms: r.requested_at_ms,
                services: r.services.clone(),
                stage: stage_label(r.stage).to_string(),
                provider: r.provider.clone(),
                military_dimension: r.military_dimension,
                hybrid_campaign: r.hybrid_campaign,
                due: Some(due_pb(&r.due)),
            })
            .collect(),
        advice: v
            .advice
            .iter()
            .map(|(org, verdict)| pb::CaseAdvice {
                org: org.clone(),
                verdict: case::assessment_label(*verdict).to_string(),
            })
            .collect(),
        messages: v.timeline.len() as u32,
    }
}

/// A case with its timeline on the wire.
pub fn detail_pb(v: &CaseView, now_ms: i64) -> pb::CaseDetail {
    pb::CaseDetail {
        summary: Some(summary_pb(v, now_ms)),
        timeline: v
            .timeline
            .iter()
            .map(|e| pb::CaseTimelineEntry {
                message: mref(&e.origin, &e.id),
                author: e.author.clone(),
                kind: crate::envelope::kind_label(e.kind).to_string(),
                level: crate::envelope::level_label(e.level).to_string(),
                tlp: crate::envelope::tlp_label(e.tlp).to_string(),
                exercise: e.exercise,
                created_at_ms: e.created_at_ms,
                summary: e.summary.clone(),
                in_effect: e.in_effect,
            })
            .collect(),
    }
}

/// `at_ms` as the time clocks are evaluated at (0: now).
pub fn at_or_now(at_ms: i64) -> i64 {
    if at_ms > 0 {
        at_ms
    } else {
        crate::clock::now_ms()
    }
}

/// The evidence bundle of case `(origin, id)`: every envelope this node holds of it, as
/// stored, and the node certificates of their signers.
pub fn export(st: &NodeState, origin: &str, id: &str) -> Result<pb::CaseBundle, CaseError> {
    use prost::Message;
    let now = crate::clock::now_ms();
    let held = load(st, origin, id, now)?;
    let key = format!("{origin}/{id}");
    let mut envelopes = Vec::new();
    for m in st.store.case_messages(&key).map_err(LookupError::Store)? {
        let env = pb::Envelope::decode(m.envelope.as_slice())
            .map_err(|e| LookupError::Corrupt(format!("{}/{}", m.origin, m.id), e))?;
        envelopes.push(env);
    }
    let mut orgs: Vec<&str> = held
        .messages
        .iter()
        .map(|c| c.origin_org.as_str())
        .collect();
    orgs.sort_unstable();
    orgs.dedup();
    let cluster = st.cluster(&held.view.cluster);
    let mut certificates = Vec::new();
    for org in orgs {
        let der = if org == st.org() {
            st.tls.chain.first().map(|c| c.as_ref().to_vec())
        } else {
            st.directory.cert(org).or_else(|| {
                cluster
                    .as_ref()
                    .and_then(|c| c.members.get(org))
                    .map(|m| m.cert_der.clone())
            })
        };
        match der {
            Some(d) => certificates.push(d),
            None => {
                return Err(CaseError::Refused(format!(
                    "this node holds no certificate of {org}, a signer of the case: the bundle could not be verified"
                )));
            }
        }
    }
    Ok(pb::CaseBundle {
        format: case::bundle::FORMAT.into(),
        case: mref(origin, id),
        exported_by: st.org().to_string(),
        exported_at_ms: now,
        exercise: held.view.exercise,
        envelopes,
        certificates,
    })
}

/// How often a node looks at its cases' clocks.
pub const CLOCK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The overdue-item gauge: `bluewire_case_items_overdue{kind,exercise}`.
pub const OVERDUE: &str = "bluewire_case_items_overdue";

/// What a clock pass found: the overdue items, and which of them it announced now.
#[derive(Debug, Default)]
pub struct ClockPass {
    pub overdue: usize,
    pub announced: Vec<String>,
}

/// One look at every case's clocks at `now_ms` (the caller's clock: the periodic task passes
/// the node's, tests any time they like): sets the overdue gauge and puts each item that is
/// overdue into this node's own feed, once — a local alert signed by this node and sent
/// nowhere (its id is derived from the item, so a restart or the next pass finds it stored).
pub async fn clock_pass(st: &NodeState, now_ms: i64) -> Result<ClockPass, CaseError> {
    use prost::Message;
    let mut pass = ClockPass::default();
    let mut counts: std::collections::BTreeMap<(&str, bool), u64> = Default::default();
    for ex in [false, true] {
        for kind in ["reserve", "nis2"] {
            counts.insert((kind, ex), 0);
        }
    }
    for view in list(st, now_ms)? {
        for d in view.due.iter().filter(|d| d.clock == case::Clock::Overdue) {
            pass.overdue += 1;
            let kind = if d.what.starts_with("NIS2") {
                "nis2"
            } else {
                "reserve"
            };
            *counts.entry((kind, view.exercise)).or_default() += 1;
            let started = view
                .timeline
                .iter()
                .find(|e| e.origin == d.origin && e.id == d.id);
            let content = alert(st, &view, d, started, now_ms);
            let env = crate::envelope::seal(&st.signer, &content);
            let outcome = st
                .store
                .insert(crate::store::NewMessage {
                    audit: vec![crate::audit::AuditEvent::published(
                        &content.id,
                        format!(
                            "clock: {} of case {}/{} overdue",
                            d.what, view.origin, view.id
                        ),
                    )],
                    ..crate::store::NewMessage::of(&content, env.encode_to_vec(), "", now_ms)
                })
                .await
                .map_err(LookupError::Store)?;
            if matches!(outcome, crate::store::InsertOutcome::Inserted(_)) {
                tracing::warn!(case = %format!("{}/{}", view.origin, view.id), item = %d.what, "overdue");
                pass.announced.push(content.id);
            }
        }
    }
    for ((kind, ex), n) in counts {
        st.metrics.gauge(
            OVERDUE,
            &[
                ("kind", kind),
                ("exercise", if ex { "true" } else { "false" }),
            ],
            n as f64,
        );
    }
    Ok(pass)
}

/// The local alert for an overdue item: a direct message to this organisation alone.
fn alert(
    st: &NodeState,
    view: &CaseView,
    d: &case::DueItem,
    started: Option<&case::Entry>,
    now_ms: i64,
) -> pb::Content {
    let seed = seed_of(&format!(
        "{}/{}|{}|{}/{}",
        view.origin, view.id, d.what, d.origin, d.id
    ));
    // Stable for the item whatever its due time becomes (a NIS2 final report's moves with
    // the notification): one alert per item.
    let at = started
        .map(|e| e.created_at_ms)
        .unwrap_or(view.opened_at_ms);
    let id = uuid::Builder::from_unix_timestamp_millis(at.max(0) as u64, &seed)
        .into_uuid()
        .to_string();
    pb::Content {
        id,
        origin_org: st.org().to_string(),
        author: format!("{}/case-clock", st.org()),
        created_at_ms: now_ms,
        kind: pb::Kind::FreeText as i32,
        level: started
            .map(|e| e.level)
            .unwrap_or(pb::Level::Operational as i32),
        marking: Some(pb::Marking {
            tlp: started.map(|e| e.tlp).unwrap_or(pb::Tlp::Amber as i32),
            classification: String::new(),
            exercise: view.exercise,
        }),
        recipients: vec![st.org().to_string()],
        body: Some(pb::content::Body::FreeText(pb::FreeText {
            title: format!(
                "{}OVERDUE: {} — case {}/{} {}",
                if view.exercise { "EXERCISE " } else { "" },
                d.what,
                view.origin,
                view.id,
                view.title
            ),
            body: format!(
                "Due at {} (unix ms); not done by {}. See: bluewire case show {}/{}",
                d.due_at_ms, now_ms, view.origin, view.id
            ),
        })),
        ..Default::default()
    }
}

/// Ten bytes derived from `s`, for a deterministic UUIDv7.
fn seed_of(s: &str) -> [u8; 10] {
    let digest = crate::envelope::content_hash(s.as_bytes());
    let mut out = [0u8; 10];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// The periodic clock pass, every [`CLOCK_EVERY`], until the node stops.
pub fn spawn_clocks(state: std::sync::Arc<NodeState>) {
    let tasks = state.tasks.clone();
    let stopping = tasks.stopping();
    tasks.spawn(tracing::debug_span!("case-clocks"), async move {
        let mut tick = tokio::time::interval(CLOCK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopping.cancelled() => break,
            }
            if let Err(e) = clock_pass(&state, crate::clock::now_ms()).await {
                tracing::warn!(error = %e, "case clock pass failed");
            }
        }
    });
}
