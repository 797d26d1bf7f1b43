//! The crisis workflow's core (the EU cybersecurity crisis-management blueprint): what a
//! workflow message must contain, who may send it, whether it follows the step it names,
//! and the state of a case derived from the workflow messages a node holds.
//!
//! Every function here is pure: no network, no store, no clock of its own (time comes in as
//! `now_ms`). The origin and every receiver call the same functions — [`check_fields`] from
//! `envelope::validate`, [`authority`] and [`follows`] from `ingress` and `outbound` — so a
//! step a misbehaving origin signs anyway is refused by receivers with the same rule.
//!
//! A case is opened by a `CaseOpen` message; the case is named by that message's
//! (origin, id). Its state has two axes plus review:
//! - *assessment*, moved by `cyclone` (escalation by `csirts-network`): observed → escalated →
//!   under assessment → potential | ongoing | not large-scale;
//! - *political*, moved by `presidency` (monitoring and information-sharing also by
//!   `council-secretariat`, `commission`, `eeas`): IPCR mode none → monitoring →
//!   information-sharing → full activation, and a crisis established / ceased;
//! - *review*: a final lessons-learned review closes the case.
//!
//! Each move names the state it moves from and the message that produced that state
//! (`link.previous`); the state of an axis is the `to` of the tip of its longest chain
//! (ties: latest `created_at_ms`, then origin, then id), so the same set of messages gives
//! the same state whatever order they arrived in. A backwards move is only a signed
//! `CaseReopen` by the axis owner. A retraction does not undo a step: state moves only by
//! workflow messages.
//!
//! Must never: read the store, the network or the clock; trust a field the sender writes for
//! authority (functions come only from the CA-certified profile).

use bluewire_proto::v1::{
    self as pb, AssessmentState as A, CaseAxis, Content, CrisisState as C, Kind, Level, LineStage,
    NoticeKind, PoliticalMode as M, ReserveStage, ReviewStatus, content::Body,
};

use crate::pki::{Function, OrgProfile};

pub mod bundle;
mod view;
pub use view::{
    CaseView, Clock, DueItem, Entry, Phase, ReserveItem, derive, sitrep_current, summary,
};

#[cfg(test)]
mod tests;

/// A reserve request must be served within 24 hours (blueprint IV.26(a)).
pub const RESERVE_DUE_MS: i64 = 24 * 3600 * 1000;
/// A due item is "due soon" this long before it is due.
pub const DUE_SOON_MS: i64 = 4 * 3600 * 1000;
/// A situation report is current for 24 hours unless superseded earlier.
pub const SITREP_CURRENT_MS: i64 = 24 * 3600 * 1000;

/// The workflow kinds: every message of one of these kinds belongs to a case.
pub fn is_case_kind(k: Kind) -> bool {
    matches!(
        k,
        Kind::CaseOpen
            | Kind::Escalation
            | Kind::Advice
            | Kind::Reserve
            | Kind::Notice
            | Kind::LessonsLearned
            | Kind::CaseReopen
    )
}

/// Is `body` a workflow body (the typed form of the political kinds included)?
pub fn is_case_body(body: &Body) -> bool {
    // Exhaustive on purpose: a new body kind must decide whether it is a workflow step.
    match body {
        Body::FreeText(_)
        | Body::Incident(_)
        | Body::MarkingChange(_)
        | Body::Retraction(_)
        | Body::Stix(_)
        | Body::Sealed(_) => false,
        Body::CaseOpen(_)
        | Body::Escalation(_)
        | Body::Advice(_)
        | Body::Assessment(_)
        | Body::CrisisStatus(_)
        | Body::SituationReport(_)
        | Body::Communication(_)
        | Body::Reserve(_)
        | Body::Notice(_)
        | Body::Lessons(_)
        | Body::Reopen(_) => true,
    }
}

/// Is `c` a workflow message (a case kind, or a political kind with its typed body)?
pub fn is_case_message(c: &Content) -> bool {
    c.body.as_ref().is_some_and(is_case_body)
}

/// The link of a workflow message (none for the opening message).
pub fn link(c: &Content) -> Option<&pb::CaseLink> {
    match c.body.as_ref()? {
        Body::Escalation(b) => b.link.as_ref(),
        Body::Advice(b) => b.link.as_ref(),
        Body::Assessment(b) => b.link.as_ref(),
        Body::CrisisStatus(b) => b.link.as_ref(),
        Body::SituationReport(b) => b.link.as_ref(),
        Body::Communication(b) => b.link.as_ref(),
        Body::Reserve(b) => b.link.as_ref(),
        Body::Notice(b) => b.link.as_ref(),
        Body::Lessons(b) => b.link.as_ref(),
        Body::Reopen(b) => b.link.as_ref(),
        _ => None,
    }
}

/// The link of a workflow message, to fill in at the origin.
pub fn link_mut(c: &mut Content) -> Option<&mut pb::CaseLink> {
    let l = match c.body.as_mut()? {
        Body::Escalation(b) => &mut b.link,
        Body::Advice(b) => &mut b.link,
        Body::Assessment(b) => &mut b.link,
        Body::CrisisStatus(b) => &mut b.link,
        Body::SituationReport(b) => &mut b.link,
        Body::Communication(b) => &mut b.link,
        Body::Reserve(b) => &mut b.link,
        Body::Notice(b) => &mut b.link,
        Body::Lessons(b) => &mut b.link,
        Body::Reopen(b) => &mut b.link,
        _ => return None,
    };
    Some(l.get_or_insert_with(Default::default))
}

fn pair(r: &pb::MessageRef) -> Option<(&str, &str)> {
    (!r.origin.is_empty() && !r.id.is_empty()).then_some((r.origin.as_str(), r.id.as_str()))
}

/// The classification and links of an incident report: an RSIT pair, NIS2 sector codes,
/// well-formed references, and a NIS2 stage only for a report that names its case.
pub fn check_incident(i: &pb::IncidentReport) -> Result<(), String> {
    crate::taxonomy::check_rsit(&i.taxonomy_class, &i.taxonomy_type)?;
    crate::taxonomy::check_nis2_sectors(&i.nis2_sectors)?;
    let set = |r: &Option<pb::MessageRef>| {
        r.as_ref()
            .is_some_and(|r| !r.id.is_empty() || !r.origin.is_empty())
    };
    if set(&i.supersedes) {
        check_ref(i.supersedes.as_ref(), "supersedes")?;
    }
    if set(&i.case) {
        check_ref(i.case.as_ref(), "case")?;
    } else if i.nis2_stage != pb::Nis2Stage::Unspecified as i32 {
        return Err("nis2_stage: a NIS2 stage is reported for a case: name it (case)".into());
    }
    if pb::Nis2Stage::try_from(i.nis2_stage).is_err() {
        return Err(format!(
            "nis2_stage {} is not a NIS2 Article 23 stage",
            i.nis2_stage
        ));
    }
    Ok(())
}

/// The case (origin, id) a message belongs to: its own for the opening message; the case
/// a workflow step links, or an incident report names.
pub fn case_of(c: &Content) -> Option<(&str, &str)> {
    match c.body.as_ref()? {
        Body::CaseOpen(_) => Some((c.origin_org.as_str(), c.id.as_str())),
        // An incident report filed for a case (NIS2 stages, updates) is part of it too.
        Body::Incident(i) => i.case.as_ref().and_then(pair),
        _ => link(c)?.case.as_ref().and_then(pair),
    }
}

/// The store's key for a case: "ORIGIN/ID".
pub fn case_key(c: &Content) -> Option<String> {
    case_of(c).map(|(o, i)| format!("{o}/{i}"))
}

/// The message a workflow message moves on from, when it names one.
pub fn previous(c: &Content) -> Option<(&str, &str)> {
    link(c)?.previous.as_ref().and_then(pair)
}

/// The axes of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Axis {
    Assessment,
    Political,
    Review,
}

impl Axis {
    pub fn as_str(self) -> &'static str {
        match self {
            Axis::Assessment => "assessment",
            Axis::Political => "political",
            Axis::Review => "review",
        }
    }

    /// A case's state on this axis when nothing has moved it.
    pub fn initial(self) -> AxisState {
        match self {
            Axis::Assessment => AxisState::Assessment(A::Observed),
            Axis::Political => AxisState::Political(M::None, C::None),
            Axis::Review => AxisState::Review(false),
        }
    }
}

/// One axis's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisState {
    Assessment(A),
    Political(M, C),
    /// Closed or not.
    Review(bool),
}

/// A move on one axis: what a step claims to move the case from and to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub axis: Axis,
    pub from: AxisState,
    pub to: AxisState,
}

fn a(v: i32) -> A {
    A::try_from(v).unwrap_or(A::Unspecified)
}
fn m(v: i32) -> M {
    M::try_from(v).unwrap_or(M::Unspecified)
}
fn cr(v: i32) -> C {
    C::try_from(v).unwrap_or(C::Unspecified)
}

/// The axis move a workflow message makes, if it makes one.
pub fn axis_move(c: &Content) -> Option<Move> {
    use AxisState as S;
    Some(match c.body.as_ref()? {
        Body::Escalation(_) => Move {
            axis: Axis::Assessment,
            from: S::Assessment(A::Observed),
            to: S::Assessment(A::Escalated),
        },
        Body::Assessment(b) => Move {
            axis: Axis::Assessment,
            from: S::Assessment(a(b.from)),
            to: S::Assessment(a(b.to)),
        },
        Body::CrisisStatus(b) => Move {
            axis: Axis::Political,
            from: S::Political(m(b.from_mode), cr(b.from_crisis)),
            to: S::Political(m(b.to_mode), cr(b.to_crisis)),
        },
        Body::Lessons(b) if b.status == ReviewStatus::Final as i32 => Move {
            axis: Axis::Review,
            from: S::Review(false),
            to: S::Review(true),
        },
        Body::Reopen(b) => match CaseAxis::try_from(b.axis).ok()? {
            CaseAxis::Assessment => Move {
                axis: Axis::Assessment,
                from: S::Assessment(a(b.from_assessment)),
                to: S::Assessment(a(b.to_assessment)),
            },
            CaseAxis::Political => Move {
                axis: Axis::Political,
                from: S::Political(m(b.from_mode), cr(b.from_crisis)),
                to: S::Political(m(b.to_mode), cr(b.to_crisis)),
            },
            CaseAxis::Review => Move {
                axis: Axis::Review,
                from: S::Review(true),
                to: S::Review(false),
            },
            CaseAxis::Unspecified => return None,
        },
        _ => return None,
    })
}

/// Labels, one spelling everywhere (CLI, JSON, audit).
pub fn assessment_label(s: A) -> &'static str {
    match s {
        A::Observed => "observed",
        A::Escalated => "escalated",
        A::UnderAssessment => "under-assessment",
        A::PotentialLargeScale => "potential-large-scale",
        A::OngoingLargeScale => "ongoing-large-scale",
        A::NotLargeScale => "not-large-scale",
        A::Unspecified => "unspecified",
    }
}

pub fn mode_label(s: M) -> &'static str {
    match s {
        M::None => "none",
        M::Monitoring => "monitoring",
        M::InformationSharing => "information-sharing",
        M::FullActivation => "full-activation",
        M::Unspecified => "unspecified",
    }
}

pub fn crisis_label(s: C) -> &'static str {
    match s {
        C::None => "none",
        C::Established => "established",
        C::Ceased => "ceased",
        C::Unspecified => "unspecified",
    }
}

pub fn state_label(s: AxisState) -> String {
    match s {
        AxisState::Assessment(x) => assessment_label(x).to_string(),
        AxisState::Political(mo, c) => format!("{} / crisis {}", mode_label(mo), crisis_label(c)),
        AxisState::Review(true) => "closed".into(),
        AxisState::Review(false) => "open".into(),
    }
}

fn is_verdict(s: A) -> bool {
    matches!(
        s,
        A::PotentialLargeScale | A::OngoingLargeScale | A::NotLargeScale
    )
}

/// Structural checks for a workflow message (called by `envelope::validate`, so at the
/// origin before signing and at every receiver): body matches kind, required fields, the
/// case link, and that a move is an edge of its axis at all. Each refusal names the field.
pub fn check_fields(c: &Content) -> Result<(), String> {
    let kind = Kind::try_from(c.kind).unwrap_or(Kind::Unspecified);
    let Some(body) = c.body.as_ref() else {
        return Err(format!(
            "kind {} needs its typed body",
            crate::envelope::kind_label(c.kind)
        ));
    };
    let expected = match body {
        Body::CaseOpen(_) => Kind::CaseOpen,
        Body::Escalation(_) => Kind::Escalation,
        Body::Advice(_) => Kind::Advice,
        Body::Assessment(_) => Kind::Assessment,
        Body::CrisisStatus(_) => Kind::CrisisStatus,
        Body::SituationReport(_) => Kind::SituationReport,
        Body::Communication(_) => Kind::PublicCommunication,
        Body::Reserve(_) => Kind::Reserve,
        Body::Notice(_) => Kind::Notice,
        Body::Lessons(_) => Kind::LessonsLearned,
        Body::Reopen(_) => Kind::CaseReopen,
        _ => {
            return Err(format!(
                "kind {} needs its typed workflow body",
                crate::envelope::kind_label(c.kind)
            ));
        }
    };
    if kind != expected {
        return Err(format!(
            "kind {} does not match its body (a {} body)",
            crate::envelope::kind_label(c.kind),
            crate::envelope::kind_label(expected as i32)
        ));
    }
    if c.cluster.is_empty() {
        return Err(
            "cluster: a workflow message belongs to a case, and a case to a cluster: publish it in the case's cluster"
                .into(),
        );
    }
    if !matches!(body, Body::CaseOpen(_)) {
        let l = link(c).ok_or("link: a workflow message names its case (link.case)")?;
        check_ref(l.case.as_ref(), "link.case")?;
        if let Some(p) = l
            .previous
            .as_ref()
            .filter(|p| !p.id.is_empty() || !p.origin.is_empty())
        {
            check_ref(Some(p), "link.previous")?;
        }
        if previous(c) == Some((c.origin_org.as_str(), c.id.as_str())) {
            return Err("link.previous names the message itself".into());
        }
    }
    let need = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    let has_previous = previous(c).is_some();
    match body {
        Body::CaseOpen(b) => {
            need(!b.title.trim().is_empty(), "title: a case needs a title")?;
            if let Some(i) = &b.incident
                && (!i.origin.is_empty() || !i.id.is_empty())
            {
                check_ref(Some(i), "incident")?;
            }
        }
        Body::Escalation(b) => {
            need(
                !b.summary.trim().is_empty(),
                "summary: an escalation says what is escalated",
            )?;
            for (i, r) in b.technical_reports.iter().enumerate() {
                check_ref(Some(r), &format!("technical_reports[{i}]"))?;
            }
            need(
                !b.affected_countries.is_empty(),
                "affected_countries: an escalation names the affected member states",
            )?;
            let p = Level::try_from(b.proposed_level).unwrap_or(Level::Unspecified);
            need(
                matches!(p, Level::Operational | Level::Political),
                "proposed_level: escalation proposes the operational or political level",
            )?;
            need(
                has_previous,
                "link.previous: an escalation names the step it follows (the case for the first one)",
            )?;
        }
        Body::Advice(b) => {
            need(
                is_verdict(a(b.verdict)),
                "verdict: advice is potential, ongoing or not large-scale",
            )?;
            need(
                b.confidence != pb::Confidence::Unspecified as i32
                    && pb::Confidence::try_from(b.confidence).is_ok(),
                "confidence: low, medium or high",
            )?;
            need(
                !b.rationale.trim().is_empty(),
                "rationale: advice gives its reasons",
            )?;
        }
        Body::Assessment(b) => {
            let to = a(b.to);
            need(
                to == A::UnderAssessment || is_verdict(to),
                "to: an assessment moves the case to under assessment or to a verdict (potential, ongoing or not large-scale)",
            )?;
            need(
                has_previous,
                "link.previous: an assessment names the step it follows",
            )?;
            if is_verdict(to) {
                need(
                    !b.rationale.trim().is_empty(),
                    "rationale: a verdict gives its reasons",
                )?;
                if to != A::NotLargeScale {
                    need(
                        !b.sector_impact.is_empty() || !b.population_impact.trim().is_empty(),
                        "sector_impact / population_impact: a large-scale verdict states the impact",
                    )?;
                    need(
                        b.outlook != pb::Outlook::Unspecified as i32
                            && pb::Outlook::try_from(b.outlook).is_ok(),
                        "outlook: improving, stable or worsening",
                    )?;
                }
            }
        }
        Body::CrisisStatus(_) => {
            need(
                has_previous,
                "link.previous: a crisis-status decision names the step it follows",
            )?;
        }
        Body::SituationReport(b) => {
            need(
                b.number >= 1,
                "number: situation reports are numbered from 1",
            )?;
            need(
                !b.impact.trim().is_empty(),
                "impact: a situation report states the impact",
            )?;
            need(
                (b.number == 1) != has_previous,
                "link.previous: report 1 supersedes nothing; every later report names the one it supersedes",
            )?;
        }
        Body::Communication(b) => {
            let stage = LineStage::try_from(b.stage).unwrap_or(LineStage::Unspecified);
            need(stage != LineStage::Unspecified, "stage: draft or agreed")?;
            need(!b.text.trim().is_empty(), "text: the line itself")?;
            need(
                stage != LineStage::Agreed || has_previous,
                "link.previous: an agreed line names the draft it agrees",
            )?;
        }
        Body::Reserve(b) => {
            let stage = ReserveStage::try_from(b.stage).unwrap_or(ReserveStage::Unspecified);
            match stage {
                ReserveStage::Unspecified => {
                    return Err(
                        "stage: requested, acknowledged, assigned, delivered or closed".into(),
                    );
                }
                ReserveStage::Requested => {
                    need(
                        !b.services.is_empty(),
                        "services: what the reserve should provide",
                    )?;
                    need(
                        !b.affected_entity.trim().is_empty(),
                        "affected_entity: who is affected",
                    )?;
                    need(
                        !b.impact.trim().is_empty(),
                        "impact: the impact on the affected entity",
                    )?;
                    need(
                        !has_previous,
                        "link.previous: a request starts its own lifecycle",
                    )?;
                }
                ReserveStage::Assigned => {
                    need(
                        !b.provider.trim().is_empty(),
                        "provider: who provides the service",
                    )?;
                    need(
                        has_previous,
                        "link.previous: a reserve update names the request",
                    )?;
                }
                _ => need(
                    has_previous,
                    "link.previous: a reserve update names the request",
                )?,
            }
        }
        Body::Notice(b) => {
            need(
                matches!(
                    NoticeKind::try_from(b.notice),
                    Ok(NoticeKind::SpaceServices | NoticeKind::DefenceInitiative)
                ),
                "notice: space-services or defence-initiative",
            )?;
            need(
                !b.summary.trim().is_empty(),
                "summary: what the notice is about",
            )?;
        }
        Body::Lessons(b) => {
            need(
                matches!(
                    ReviewStatus::try_from(b.status),
                    Ok(ReviewStatus::Draft | ReviewStatus::Final)
                ),
                "status: draft or final",
            )?;
            need(
                !b.findings.is_empty() || !b.actions.is_empty(),
                "findings / actions: a review records at least one",
            )?;
            for (i, x) in b.actions.iter().enumerate() {
                need(
                    !x.action.trim().is_empty() && !x.owner.trim().is_empty(),
                    &format!("actions[{i}]: every action has a text and an owner"),
                )?;
            }
            if b.status == ReviewStatus::Final as i32 {
                need(
                    has_previous,
                    "link.previous: a final review names the step it follows (the case for the first one)",
                )?;
            }
        }
        Body::Reopen(b) => {
            need(!b.reason.trim().is_empty(), "reason: a reopen says why")?;
            need(
                has_previous,
                "link.previous: a reopen names the step it takes back",
            )?;
            need(
                axis_move(c).is_some(),
                "axis: assessment, political or review",
            )?;
        }
        _ => {}
    }
    if let Some(mv) = axis_move(c) {
        edge(c, &mv)?;
    }
    Ok(())
}

fn check_ref(r: Option<&pb::MessageRef>, field: &str) -> Result<(), String> {
    let Some(r) = r else {
        return Err(format!("{field}: missing (ORIGIN and message id)"));
    };
    if r.origin.is_empty() {
        return Err(format!("{field}.origin: empty"));
    }
    match uuid::Uuid::parse_str(&r.id) {
        Ok(u) if u.get_version_num() == 7 => Ok(()),
        _ => Err(format!("{field}.id: {:?} is not a UUIDv7 message id", r.id)),
    }
}

/// Is the move an edge of its axis (whoever makes it)? Forward edges for the ordinary
/// steps, backward edges only for a reopen.
fn edge(c: &Content, mv: &Move) -> Result<(), String> {
    use AxisState as S;
    let reopen = matches!(c.body, Some(Body::Reopen(_)));
    let bad = |why: &str| {
        Err(format!(
            "{} axis: {} → {} is not allowed: {why}",
            mv.axis.as_str(),
            state_label(mv.from),
            state_label(mv.to)
        ))
    };
    match (mv.from, mv.to) {
        (S::Assessment(f), S::Assessment(t)) => {
            let rank = |s: A| match s {
                A::Observed => 1,
                A::Escalated => 2,
                A::UnderAssessment => 3,
                A::PotentialLargeScale | A::OngoingLargeScale | A::NotLargeScale => 4,
                A::Unspecified => 0,
            };
            if rank(f) == 0 || rank(t) == 0 {
                return bad("both states must be set");
            }
            if reopen {
                if rank(t) >= rank(f) {
                    return bad("a reopen goes back (to observed, escalated or under assessment)");
                }
                return Ok(());
            }
            let ok =
                matches!(
                    (f, t),
                    (A::Observed, A::Escalated) | (A::Escalated, A::UnderAssessment)
                ) || (matches!(f, A::UnderAssessment) || is_verdict(f)) && is_verdict(t) && f != t;
            if ok {
                Ok(())
            } else if rank(t) < rank(f) {
                bad("going back needs a signed reopen by cyclone")
            } else {
                bad("the assessment axis goes observed → escalated → under assessment → verdict")
            }
        }
        (S::Political(fm, fc), S::Political(tm, tc)) => {
            if [fm, tm].contains(&M::Unspecified) || [fc, tc].contains(&C::Unspecified) {
                return bad("mode and crisis state, from and to, must all be set");
            }
            for (mo, c) in [(fm, fc), (tm, tc)] {
                if let Err(why) = political_state(mo, c) {
                    return bad(why);
                }
            }
            if tm == M::None && fm != M::None {
                return bad("the arrangements go back to monitoring, not to none");
            }
            if reopen {
                return if fc == C::Ceased
                    && ((tm, tc) == (fm, C::None)
                        || (tm, tc) == (M::FullActivation, C::Established))
                {
                    Ok(())
                } else {
                    bad(
                        "a political reopen takes back a ceased crisis: to none (same mode) or established under full activation",
                    )
                };
            }
            if (fm, fc) == (tm, tc) {
                return bad("a decision changes the mode or the crisis state");
            }
            match (fc, tc) {
                (x, y) if x == y => Ok(()),
                (C::None, C::Established) => Ok(()),
                (C::Established, C::Ceased) if tm == M::Monitoring => Ok(()),
                (C::Established, C::Ceased) => {
                    bad("when a crisis ceases the arrangements go back to monitoring")
                }
                (C::Ceased, _) => bad("a ceased crisis comes back only by a reopen"),
                _ => bad("a crisis is established, then ceases"),
            }
        }
        // Fixed by the step itself (`axis_move`): a final review closes, a reopen opens.
        (S::Review(_), S::Review(_)) => Ok(()),
        _ => bad("from and to are on different axes"),
    }
}

/// Which (mode, crisis) pairs exist: an established crisis runs under full activation; a
/// ceased one leaves monitoring or information-sharing; no crisis without the arrangements.
fn political_state(mo: M, c: C) -> Result<(), &'static str> {
    match (mo, c) {
        (M::FullActivation, C::Established) | (_, C::None) => Ok(()),
        (_, C::Established) => Err("an established crisis runs under full activation"),
        (M::Monitoring | M::InformationSharing, C::Ceased) => Ok(()),
        (M::FullActivation, C::Ceased) => {
            Err("full activation after a ceased crisis needs a reopen by the presidency")
        }
        (_, _) => Err("no crisis has ceased before the arrangements were activated"),
    }
}

/// The functions that may make this move (or send this step), in words, for refusals.
fn needs(fs: &[Function]) -> String {
    fs.iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

const INFO_SHARING: [Function; 4] = [
    Function::Presidency,
    Function::CouncilSecretariat,
    Function::Commission,
    Function::Eeas,
];

/// Who may send this workflow message: the blueprint functions the CA certified for the
/// signer (`signer`), the levels it is certified for, and — for a final review or closing
/// a reserve request — whether it opened the case or made the request. Pure; the same at
/// origin and receivers.
pub fn authority(c: &Content, signer: Option<&OrgProfile>) -> Result<(), String> {
    let Some(p) = signer else {
        return Err(format!(
            "no certified profile for {:?}: its functions are unknown here",
            c.origin_org
        ));
    };
    if let Some(level) = crate::routing::pki_level(c.level)
        && !p.levels.contains(&level)
    {
        return Err(format!(
            "{} is not certified for the {} level: an organisation sends workflow messages only at its certified levels; escalation is the way up",
            p.org,
            level.as_str()
        ));
    }
    let opener = case_of(c).is_some_and(|(o, _)| o == c.origin_org);
    let allowed = |fs: &[Function], what: &str| {
        if fs.iter().any(|f| p.holds(*f)) {
            Ok(())
        } else {
            Err(format!(
                "{what} needs the {} function; {} is certified for [{}]",
                needs(fs),
                p.org,
                p.known_functions()
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let Some(body) = c.body.as_ref() else {
        return Ok(());
    };
    match body {
        Body::CaseOpen(_) => allowed(
            &[Function::CsirtsNetwork, Function::Cyclone],
            "opening a case",
        ),
        Body::Escalation(_) => allowed(&[Function::CsirtsNetwork], "escalation"),
        Body::Advice(_) => allowed(&[Function::CsirtsNetwork], "advice to EU-CyCLONe"),
        Body::Assessment(_) => allowed(&[Function::Cyclone], "a large-scale assessment"),
        Body::CrisisStatus(b) => {
            let (tm, tc) = (m(b.to_mode), cr(b.to_crisis));
            let (fm, fc) = (m(b.from_mode), cr(b.from_crisis));
            if tc != fc || tm == M::FullActivation || fm == M::FullActivation {
                allowed(
                    &[Function::Presidency],
                    "activating, deactivating or establishing / ceasing a crisis",
                )
            } else {
                allowed(&INFO_SHARING, "monitoring or information-sharing mode")
            }
        }
        Body::SituationReport(_) => allowed(
            &[Function::Cyclone, Function::CsirtsNetwork],
            "a situation report (the ISAA contribution)",
        ),
        Body::Communication(b) => {
            if b.stage == LineStage::Agreed as i32 {
                allowed(
                    &[Function::Presidency, Function::CouncilSecretariat],
                    "agreeing a public-communication line",
                )
            } else if p.levels.contains(&crate::pki::Level::Operational) {
                Ok(())
            } else {
                Err(format!(
                    "drafting a public-communication line is for the operational level; {} is not certified for it",
                    p.org
                ))
            }
        }
        Body::Reserve(b) => match ReserveStage::try_from(b.stage) {
            Ok(ReserveStage::Requested) => allowed(
                &[Function::CsirtsNetwork, Function::Cyclone],
                "requesting the cybersecurity reserve",
            ),
            Ok(ReserveStage::Closed) if previous(c).is_some_and(|(o, _)| o == c.origin_org) => {
                Ok(())
            }
            _ => allowed(
                &[Function::ReserveAuthority],
                "serving or closing a reserve request (closing also its requester)",
            ),
        },
        Body::Notice(b) => match NoticeKind::try_from(b.notice) {
            Ok(NoticeKind::SpaceServices) => {
                allowed(&[Function::Cyclone], "a space-services notice")
            }
            _ => allowed(
                &[Function::CsirtsNetwork, Function::Cyclone],
                "a defence-initiative notice",
            ),
        },
        Body::Lessons(b) => {
            if b.status == ReviewStatus::Final as i32 {
                if opener {
                    Ok(())
                } else {
                    allowed(
                        &[Function::Cyclone],
                        "a final review (closing the case), or opening the case",
                    )
                }
            } else if opener {
                Ok(())
            } else {
                allowed(
                    &[Function::Cyclone, Function::CsirtsNetwork],
                    "lessons learned",
                )
            }
        }
        Body::Reopen(b) => match CaseAxis::try_from(b.axis) {
            Ok(CaseAxis::Assessment) => allowed(&[Function::Cyclone], "reopening the assessment"),
            Ok(CaseAxis::Political) => {
                allowed(&[Function::Presidency], "reopening the political axis")
            }
            _ if opener => Ok(()),
            _ => allowed(
                &[Function::Cyclone],
                "reopening a closed case (or opening the case)",
            ),
        },
        _ => Ok(()),
    }
}

/// Does `c` follow the messages it names, as far as this node holds them? `case` is the
/// opening message when held, `prev` the message named in `link.previous` when held. A
/// missing one is no refusal (a node may not be in its audience); a held one must fit.
pub fn follows(c: &Content, case: Option<&Content>, prev: Option<&Content>) -> Result<(), String> {
    if let Some(open) = case {
        if !matches!(open.body, Some(Body::CaseOpen(_))) {
            return Err(format!(
                "link.case: {}/{} is a {}, not a case",
                open.origin_org,
                open.id,
                crate::envelope::kind_label(open.kind)
            ));
        }
        if open.cluster != c.cluster {
            return Err(format!(
                "cluster: the case is in cluster {}, this message in {}",
                open.cluster, c.cluster
            ));
        }
    }
    let Some(p) = prev else { return Ok(()) };
    let prev_case = case_of(p);
    if prev_case != case_of(c) {
        return Err(format!(
            "link.previous: {}/{} belongs to another case",
            p.origin_org, p.id
        ));
    }
    if p.cluster != c.cluster {
        return Err("link.previous: in another cluster".into());
    }
    let is_open = matches!(p.body, Some(Body::CaseOpen(_)));
    if let Some(mv) = axis_move(c) {
        let at = if is_open {
            mv.axis.initial()
        } else {
            match axis_move(p) {
                Some(pm) if pm.axis == mv.axis => pm.to,
                _ => {
                    return Err(format!(
                        "link.previous: {}/{} is not a step on the {} axis",
                        p.origin_org,
                        p.id,
                        mv.axis.as_str()
                    ));
                }
            }
        };
        if at != mv.from {
            return Err(format!(
                "from: the {} axis was {} after {}/{}, not {}",
                mv.axis.as_str(),
                state_label(at),
                p.origin_org,
                p.id,
                state_label(mv.from)
            ));
        }
        return Ok(());
    }
    match (&c.body, &p.body) {
        (Some(Body::SituationReport(s)), Some(Body::SituationReport(ps))) => {
            if ps.number.checked_add(1) != Some(s.number) {
                return Err(format!(
                    "number: report {} supersedes report {}, so it is number {}",
                    s.number,
                    ps.number,
                    ps.number.saturating_add(1)
                ));
            }
            Ok(())
        }
        (Some(Body::SituationReport(_)), _) => {
            Err("link.previous: a situation report supersedes a situation report".into())
        }
        (Some(Body::Communication(_)), Some(Body::Communication(d)))
            if d.stage == LineStage::Draft as i32 =>
        {
            Ok(())
        }
        (Some(Body::Communication(_)), _) => {
            Err("link.previous: an agreed line names a draft line".into())
        }
        (Some(Body::Reserve(_)), Some(Body::Reserve(r)))
            if r.stage == ReserveStage::Requested as i32 =>
        {
            Ok(())
        }
        (Some(Body::Reserve(_)), _) => {
            Err("link.previous: a reserve update names the reserve request".into())
        }
        _ => Ok(()),
    }
}

/// Fill in what the origin knows and the user does not write: the state each move starts
/// from, the step it follows (`link.previous`), a situation report's number, an agreed line's
/// draft and a reserve update's request when the case has only one. `view` is the case as
/// this node derived it, `msgs` its workflow messages. Pure; the result is then checked with
/// the same rules receivers apply.
pub fn aim(c: &mut Content, view: &CaseView, msgs: &[&Content]) -> Result<(), String> {
    let case_ref = pb::MessageRef {
        origin: view.origin.clone(),
        id: view.id.clone(),
    };
    let head = |axis: Axis| -> pb::MessageRef {
        view.head(axis)
            .map(|(o, i)| pb::MessageRef {
                origin: o.to_string(),
                id: i.to_string(),
            })
            .unwrap_or_else(|| case_ref.clone())
    };
    let named = previous(c).map(|(o, i)| (o.to_string(), i.to_string()));
    let (assessment, mode, crisis) = (view.assessment as i32, view.mode as i32, view.crisis as i32);
    let mut prev: Option<pb::MessageRef> = None;
    match c.body.as_mut() {
        Some(Body::Escalation(_)) => {
            if view.assessment != A::Observed {
                return Err(format!(
                    "the case is already {}: escalation moves an observed case",
                    assessment_label(view.assessment)
                ));
            }
            prev = Some(head(Axis::Assessment));
        }
        Some(Body::Assessment(b)) => {
            b.from = assessment;
            prev = Some(head(Axis::Assessment));
        }
        Some(Body::CrisisStatus(b)) => {
            b.from_mode = mode;
            b.from_crisis = crisis;
            if b.to_mode == M::Unspecified as i32 {
                // Establishing runs under full activation; ceasing goes back to monitoring.
                b.to_mode = match C::try_from(b.to_crisis) {
                    Ok(C::Established) => M::FullActivation as i32,
                    Ok(C::Ceased) => M::Monitoring as i32,
                    _ => mode,
                };
            }
            if b.to_crisis == C::Unspecified as i32 {
                b.to_crisis = crisis;
            }
            prev = Some(head(Axis::Political));
        }
        Some(Body::Reopen(b)) => {
            match CaseAxis::try_from(b.axis).unwrap_or(CaseAxis::Unspecified) {
                CaseAxis::Assessment => {
                    b.from_assessment = assessment;
                    if b.to_assessment == A::Unspecified as i32 {
                        b.to_assessment = A::UnderAssessment as i32;
                    }
                    prev = Some(head(Axis::Assessment));
                }
                CaseAxis::Political => {
                    b.from_mode = mode;
                    b.from_crisis = crisis;
                    if b.to_mode == M::Unspecified as i32 {
                        b.to_mode = mode;
                    }
                    if b.to_crisis == C::Unspecified as i32 {
                        b.to_crisis = C::None as i32;
                    }
                    prev = Some(head(Axis::Political));
                }
                CaseAxis::Review => prev = Some(head(Axis::Review)),
                CaseAxis::Unspecified => {}
            }
        }
        Some(Body::Lessons(b)) if b.status == ReviewStatus::Final as i32 => {
            if view.closed {
                return Err(
                    "the case is closed: reopen it (axis review) before another final review"
                        .into(),
                );
            }
            prev = Some(head(Axis::Review));
        }
        Some(Body::SituationReport(b)) => {
            let latest = view.sitrep.as_ref();
            b.number = match latest {
                Some(s) => s.0.checked_add(1).ok_or(
                    "the case's situation reports are numbered to the end: open a new case",
                )?,
                None => 1,
            };
            prev = latest.map(|s| pb::MessageRef {
                origin: s.1.clone(),
                id: s.2.clone(),
            });
        }
        Some(Body::Communication(b)) if b.stage == LineStage::Agreed as i32 && named.is_none() => {
            let draft = msgs
                .iter()
                .filter(|m| {
                    matches!(&m.body, Some(Body::Communication(d)) if d.stage == LineStage::Draft as i32)
                })
                .max_by(|x, y| {
                    (x.created_at_ms, &x.origin_org, &x.id).cmp(&(y.created_at_ms, &y.origin_org, &y.id))
                })
                .ok_or("there is no draft line in this case to agree: draft one first")?;
            prev = Some(pb::MessageRef {
                origin: draft.origin_org.clone(),
                id: draft.id.clone(),
            });
        }
        Some(Body::Reserve(b)) if b.stage != ReserveStage::Requested as i32 && named.is_none() => {
            let open: Vec<&ReserveItem> = view
                .reserve
                .iter()
                .filter(|r| r.stage != ReserveStage::Closed)
                .collect();
            match open.as_slice() {
                [one] => {
                    prev = Some(pb::MessageRef {
                        origin: one.origin.clone(),
                        id: one.id.clone(),
                    })
                }
                [] => return Err("this case has no open reserve request".into()),
                _ => {
                    return Err(format!(
                        "this case has {} open reserve requests: name the request",
                        open.len()
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(l) = link_mut(c) {
        l.case = Some(case_ref.clone());
        if let Some(p) = prev {
            l.previous = Some(p);
        }
    }
    Ok(())
}

/// The organisations a workflow step must reach, and why (blueprint IV.26, recital 20,
/// IV.27, VII.35), among `members` (organisation, certified profile) of the case's
/// cluster; never its origin. These never widen routing: a step that routing would keep
/// from one of them is refused instead of silently narrowed.
pub fn mandatory(c: &Content, members: &[(&str, &OrgProfile)]) -> Vec<(String, &'static str)> {
    let mut need: Vec<(Function, &'static str)> = Vec::new();
    match c.body.as_ref() {
        Some(Body::Reserve(b)) if b.stage == ReserveStage::Requested as i32 => {
            need.push((
                Function::CsirtsNetwork,
                "a reserve request informs the CSIRTs network (recital 20)",
            ));
            need.push((
                Function::Cyclone,
                "a reserve request informs EU-CyCLONe (recital 20)",
            ));
            if b.military_dimension {
                need.push((
                    Function::CyberCommanders,
                    "a request with a military dimension informs the Conference of EU Cyber Commanders (IV.26(c))",
                ));
            }
            if b.hybrid_campaign {
                need.push((
                    Function::Commission,
                    "in a hybrid campaign the Commission coordinates the response (IV.26(b))",
                ));
                need.push((
                    Function::Eeas,
                    "in a hybrid campaign the High Representative coordinates the response (IV.26(b))",
                ));
            }
        }
        Some(Body::Notice(b)) if b.notice == NoticeKind::SpaceServices as i32 => need.push((
            Function::Eeas,
            "EU-CyCLONe informs the High Representative of an impact on space services (IV.27)",
        )),
        // A defence-initiative notice (no other kind passes `check_fields`).
        Some(Body::Notice(_)) => {
            need.push((
                Function::Cyclone,
                "the use of defence-initiative teams is notified to EU-CyCLONe (VII.35)",
            ));
            need.push((
                Function::CyberCommanders,
                "the use of defence-initiative teams is notified to the Conference of EU Cyber Commanders (VII.35)",
            ));
        }
        _ => {}
    }
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for (f, why) in need {
        for (org, p) in members {
            if *org != c.origin_org && p.holds(f) && !out.iter().any(|(o, _)| o == org) {
                out.push((org.to_string(), why));
            }
        }
    }
    out.sort();
    out
}
