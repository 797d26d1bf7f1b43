//! The state of one case, derived from the workflow messages a node holds: the fold every
//! node runs. Pure: the same set of messages (in any order, with duplicates) and the same
//! `now_ms` give the same view. Authority is not checked again here: it was checked when
//! each message was accepted, against the certificate then, and a later re-issue does not
//! rewrite history.

use std::collections::HashSet;

use bluewire_proto::v1::{
    AssessmentState as A, Content, CrisisState as C, LineStage, PoliticalMode as M, ReserveStage,
    content::Body,
};

use super::{
    Axis, AxisState, DUE_SOON_MS, RESERVE_DUE_MS, SITREP_CURRENT_MS, assessment_label, axis_move,
    case_of, previous,
};

/// Where a case stands overall, derived from its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Detection,
    Assessment,
    Response,
    Recovery,
    Review,
    Closed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Detection => "detection",
            Phase::Assessment => "assessment",
            Phase::Response => "response",
            Phase::Recovery => "recovery",
            Phase::Review => "review",
            Phase::Closed => "closed",
        }
    }
}

/// A due item's clock at `now_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    OnTime,
    DueSoon,
    Overdue,
    /// Done before it was due.
    Met,
    /// Done, after it was due.
    Late,
}

impl Clock {
    pub fn as_str(self) -> &'static str {
        match self {
            Clock::OnTime => "on-time",
            Clock::DueSoon => "due-soon",
            Clock::Overdue => "overdue",
            Clock::Met => "met",
            Clock::Late => "late",
        }
    }

    /// The clock of something due at `due_ms`, done at `done_ms` (if done), seen at `now_ms`.
    pub fn at(due_ms: i64, done_ms: Option<i64>, now_ms: i64) -> Clock {
        match done_ms {
            Some(d) if d <= due_ms => Clock::Met,
            Some(_) => Clock::Late,
            None if now_ms >= due_ms => Clock::Overdue,
            None if now_ms >= due_ms - DUE_SOON_MS => Clock::DueSoon,
            None => Clock::OnTime,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueItem {
    pub what: String,
    /// The message that started the clock.
    pub origin: String,
    pub id: String,
    pub due_at_ms: i64,
    pub done_at_ms: Option<i64>,
    pub clock: Clock,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveItem {
    pub origin: String,
    pub id: String,
    pub requested_at_ms: i64,
    pub services: Vec<String>,
    pub stage: ReserveStage,
    pub provider: String,
    pub military_dimension: bool,
    pub hybrid_campaign: bool,
    pub due: DueItem,
}

/// One message of the case, as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub origin: String,
    pub id: String,
    pub author: String,
    pub kind: i32,
    pub level: i32,
    pub tlp: i32,
    pub exercise: bool,
    pub created_at_ms: i64,
    pub summary: String,
    /// For a move: whether it is on the axis's chain in effect (false: a concurrent step
    /// that lost, or one whose predecessor this node does not hold yet).
    pub in_effect: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseView {
    pub origin: String,
    pub id: String,
    /// From the opening message; empty when this node does not hold it (not in its audience).
    pub title: String,
    pub cluster: String,
    pub exercise: bool,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub assessment: A,
    pub mode: M,
    pub crisis: C,
    pub closed: bool,
    /// Whether this node holds anything of the assessment axis (the case-open message or a
    /// move) and of the political axis: a node sees a case only at its certified levels.
    pub assessment_seen: bool,
    pub political_seen: bool,
    pub phase: Phase,
    /// The message that produced each axis's state; `None`: the case itself (nothing moved it).
    pub heads: [(Axis, Option<(String, String)>); 3],
    /// Advice from the CSIRTs network: (adviser, verdict).
    pub advice: Vec<(String, A)>,
    /// The latest situation report: (number, origin, id, created_at_ms).
    pub sitrep: Option<(u32, String, String, i64)>,
    /// Agreed public-communication lines: (origin, id).
    pub agreed_lines: Vec<(String, String)>,
    pub reserve: Vec<ReserveItem>,
    /// Everything with a clock, in due order.
    pub due: Vec<DueItem>,
    /// Every message, oldest first.
    pub timeline: Vec<Entry>,
}

impl CaseView {
    /// The head of `axis` (`None`: the case itself).
    pub fn head(&self, axis: Axis) -> Option<(&str, &str)> {
        self.heads
            .iter()
            .find(|(a, _)| *a == axis)
            .and_then(|(_, h)| h.as_ref())
            .map(|(o, i)| (o.as_str(), i.as_str()))
    }
}

/// Is the latest situation report still current at `now_ms`?
pub fn sitrep_current(view: &CaseView, now_ms: i64) -> bool {
    view.sitrep
        .as_ref()
        .is_some_and(|s| now_ms < s.3 + SITREP_CURRENT_MS)
}

/// Deterministic order of messages: created, then origin, then id.
fn order(c: &Content) -> (i64, &str, &str) {
    (c.created_at_ms, c.origin_org.as_str(), c.id.as_str())
}

/// The state of the case `(origin, id)` from `msgs` (messages of other cases are ignored;
/// duplicates count once). `exercise`: the case's cluster is an exercise cluster.
pub fn derive(case: (&str, &str), msgs: &[&Content], exercise: bool, now_ms: i64) -> CaseView {
    let mut seen = HashSet::new();
    let mut mine: Vec<&Content> = msgs
        .iter()
        .copied()
        .filter(|c| case_of(c) == Some(case))
        .filter(|c| seen.insert((c.origin_org.as_str(), c.id.as_str())))
        .collect();
    mine.sort_by(|x, y| order(x).cmp(&order(y)));
    let open = mine
        .iter()
        .copied()
        .find(|c| (c.origin_org.as_str(), c.id.as_str()) == case)
        .filter(|c| matches!(c.body, Some(Body::CaseOpen(_))));
    // A case lives in one cluster (its opening message's, else its first step's): a step
    // elsewhere — an exercise step naming a real case, or the other way round — never counts.
    let home = open
        .or(mine.first().copied())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    mine.retain(|c| c.cluster == home);
    let (title, cluster, opened_at_ms) = match open.and_then(|c| c.body.as_ref().map(|b| (c, b))) {
        Some((c, Body::CaseOpen(b))) => (b.title.clone(), c.cluster.clone(), c.created_at_ms),
        _ => (
            String::new(),
            mine.first().map(|c| c.cluster.clone()).unwrap_or_default(),
            mine.first().map(|c| c.created_at_ms).unwrap_or_default(),
        ),
    };
    let exercise = exercise
        || mine
            .iter()
            .any(|c| c.marking.as_ref().is_some_and(|m| m.exercise));

    // Each axis: the chain in effect, walked from the case (see `chain`).
    let mut in_effect: HashSet<(&str, &str)> = HashSet::new();
    let mut heads = [
        (Axis::Assessment, None),
        (Axis::Political, None),
        (Axis::Review, None),
    ];
    let mut states = [
        Axis::Assessment.initial(),
        Axis::Political.initial(),
        Axis::Review.initial(),
    ];
    for (slot, (axis, head)) in heads.iter_mut().enumerate() {
        let steps = chain(case, *axis, &mine);
        if let Some(t) = steps.last() {
            states[slot] = axis_move(t).map(|mv| mv.to).unwrap_or(states[slot]);
            *head = Some((t.origin_org.clone(), t.id.clone()));
        }
        in_effect.extend(steps.iter().map(|c| (c.origin_org.as_str(), c.id.as_str())));
    }
    let assessment = match states[0] {
        AxisState::Assessment(s) => s,
        _ => A::Observed,
    };
    let (mode, crisis) = match states[1] {
        AxisState::Political(mo, c) => (mo, c),
        _ => (M::None, C::None),
    };
    let closed = states[2] == AxisState::Review(true);
    let seen = |axis: Axis| {
        mine.iter()
            .any(|c| axis_move(c).is_some_and(|mv| mv.axis == axis))
    };
    let assessment_seen = open.is_some() || seen(Axis::Assessment);
    let political_seen = seen(Axis::Political);

    let mut advice = Vec::new();
    let mut agreed_lines = Vec::new();
    let mut reviewed = false;
    let mut requests: Vec<&Content> = Vec::new();
    for c in &mine {
        match &c.body {
            Some(Body::Advice(b)) => advice.push((
                c.origin_org.clone(),
                A::try_from(b.verdict).unwrap_or(A::Unspecified),
            )),
            Some(Body::Communication(b)) if b.stage == LineStage::Agreed as i32 => {
                agreed_lines.push((c.origin_org.clone(), c.id.clone()));
            }
            Some(Body::Lessons(_)) => reviewed = true,
            Some(Body::Reserve(b)) if b.stage == ReserveStage::Requested as i32 => {
                requests.push(c);
            }
            _ => {}
        }
    }

    let sitrep = reports(&mine).last().and_then(|c| match &c.body {
        Some(Body::SituationReport(b)) => Some((
            b.number,
            c.origin_org.clone(),
            c.id.clone(),
            c.created_at_ms,
        )),
        _ => None,
    });
    let mut reserve = Vec::new();
    for r in requests {
        let Some(Body::Reserve(req)) = &r.body else {
            continue;
        };
        let updates: Vec<(&Content, ReserveStage, &str)> = mine
            .iter()
            .filter(|c| previous(c) == Some((r.origin_org.as_str(), r.id.as_str())))
            .filter_map(|c| match &c.body {
                Some(Body::Reserve(u)) => Some((
                    *c,
                    ReserveStage::try_from(u.stage).unwrap_or(ReserveStage::Unspecified),
                    u.provider.as_str(),
                )),
                _ => None,
            })
            .collect();
        let stage = updates
            .iter()
            .map(|u| u.1)
            .max()
            .unwrap_or(ReserveStage::Requested)
            .max(ReserveStage::Requested);
        let provider = updates
            .iter()
            .rfind(|u| u.1 == ReserveStage::Assigned)
            .map(|u| u.2.to_string())
            .unwrap_or_default();
        // Served when delivered; a close without delivery does not stop the clock.
        let done = updates
            .iter()
            .filter(|u| u.1 == ReserveStage::Delivered)
            .map(|u| u.0.created_at_ms)
            .min();
        let due_at = r.created_at_ms.saturating_add(RESERVE_DUE_MS);
        let closed_unserved = done.is_none() && stage == ReserveStage::Closed;
        let due = DueItem {
            what: format!("reserve request {}", r.id),
            origin: r.origin_org.clone(),
            id: r.id.clone(),
            due_at_ms: due_at,
            done_at_ms: done,
            clock: if closed_unserved {
                // Withdrawn: nothing is due any more; shown as met if closed in time.
                let closed_at = updates
                    .iter()
                    .filter(|u| u.1 == ReserveStage::Closed)
                    .map(|u| u.0.created_at_ms)
                    .min();
                Clock::at(due_at, closed_at, now_ms)
            } else {
                Clock::at(due_at, done, now_ms)
            },
        };
        reserve.push(ReserveItem {
            origin: r.origin_org.clone(),
            id: r.id.clone(),
            requested_at_ms: r.created_at_ms,
            services: req.services.clone(),
            stage,
            provider,
            military_dimension: req.military_dimension,
            hybrid_campaign: req.hybrid_campaign,
            due,
        });
    }
    let mut due: Vec<DueItem> = reserve.iter().map(|r| r.due.clone()).collect();
    due.extend(nis2_clocks(open, &mine, now_ms));
    due.sort_by(|x, y| (x.due_at_ms, &x.origin, &x.id).cmp(&(y.due_at_ms, &y.origin, &y.id)));

    let phase = if closed {
        Phase::Closed
    } else if reviewed {
        Phase::Review
    } else if crisis == C::Ceased
        || (assessment == A::NotLargeScale && mode <= M::Monitoring && crisis == C::None)
    {
        Phase::Recovery
    } else if crisis == C::Established
        || mode >= M::InformationSharing
        || matches!(assessment, A::PotentialLargeScale | A::OngoingLargeScale)
    {
        Phase::Response
    } else if matches!(assessment, A::Escalated | A::UnderAssessment) {
        Phase::Assessment
    } else {
        Phase::Detection
    };

    let timeline = mine
        .iter()
        .map(|c| {
            let k = (c.origin_org.as_str(), c.id.as_str());
            Entry {
                origin: c.origin_org.clone(),
                id: c.id.clone(),
                author: c.author.clone(),
                kind: c.kind,
                level: c.level,
                tlp: c.marking.as_ref().map(|m| m.tlp).unwrap_or(0),
                exercise: c.marking.as_ref().is_some_and(|m| m.exercise),
                created_at_ms: c.created_at_ms,
                summary: summary(c),
                in_effect: axis_move(c).is_none() || in_effect.contains(&k),
            }
        })
        .collect();

    CaseView {
        origin: case.0.to_string(),
        id: case.1.to_string(),
        title,
        cluster,
        exercise,
        opened_at_ms,
        updated_at_ms: mine.iter().map(|c| c.created_at_ms).max().unwrap_or(0),
        assessment,
        mode,
        crisis,
        closed,
        assessment_seen,
        political_seen,
        phase,
        heads,
        advice,
        sitrep,
        agreed_lines,
        reserve,
        due,
        timeline,
    }
}

/// How a move ranks where the chain forks: moves only an axis owner makes — the
/// Presidency activating, deactivating, establishing or ceasing; any reopen — outrank
/// the others, so a concurrent toggle by another function never overrides them.
fn weight(c: &Content) -> u8 {
    match &c.body {
        Some(Body::Reopen(_)) => 2,
        // (A move from full activation competes only with other Presidency moves.)
        Some(Body::CrisisStatus(b))
            if b.from_crisis != b.to_crisis || b.to_mode == M::FullActivation as i32 =>
        {
            2
        }
        _ => 1,
    }
}

/// The best of `candidates` at a fork: highest weight, then the earliest, then origin, id.
fn best<'a>(candidates: impl Iterator<Item = &'a Content>) -> Option<&'a Content> {
    candidates.min_by(|x, y| {
        (std::cmp::Reverse(weight(x)), order(x)).cmp(&(std::cmp::Reverse(weight(y)), order(y)))
    })
}

fn key(c: &Content) -> (&str, &str) {
    (c.origin_org.as_str(), c.id.as_str())
}

/// The chain in effect on `axis`, oldest first: from the case, at each step the best move
/// that names the current step and moves on from the state it left (a move that does not
/// fit what it names never counts, whatever order it arrived in; a cycle is never entered
/// from the case). When no move follows the case itself — this node holds only a later part
/// of the chain (another level's steps, or history from before it joined) — the walk starts
/// from the best move whose predecessor it does not hold.
pub(crate) fn chain<'a>(case: (&str, &str), axis: Axis, mine: &[&'a Content]) -> Vec<&'a Content> {
    let moves: Vec<(&'a Content, super::Move)> = mine
        .iter()
        .filter_map(|c| axis_move(c).filter(|m| m.axis == axis).map(|m| (*c, m)))
        .collect();
    let held: HashSet<(&str, &str)> = moves.iter().map(|(c, _)| key(c)).collect();
    let follows = |parent: Option<&'a Content>| {
        let from = parent
            .and_then(axis_move)
            .map(|m| m.to)
            .unwrap_or(axis.initial());
        let named = parent.map(key).unwrap_or(case);
        moves
            .iter()
            .filter(move |(c, m)| previous(c) == Some(named) && m.from == from)
            .map(|(c, _)| *c)
    };
    let mut next = best(follows(None)).or_else(|| {
        best(
            moves
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| previous(c).is_some_and(|p| p != case && !held.contains(&p))),
        )
    });
    let mut out: Vec<&'a Content> = Vec::new();
    let mut visited: HashSet<(&str, &str)> = HashSet::new();
    while let Some(m) = next {
        if !visited.insert(key(m)) {
            break;
        }
        out.push(m);
        next = best(follows(Some(m)).filter(|c| !visited.contains(&key(c))));
    }
    out
}

fn earliest<'a>(it: impl Iterator<Item = &'a Content>) -> Option<&'a Content> {
    it.min_by(|x, y| order(x).cmp(&order(y)))
}

/// The chain of situation reports in effect: from report 1, each the earliest report that
/// supersedes the current one with the next number (or, holding no report 1, from the
/// earliest report whose predecessor this node does not hold).
fn reports<'a>(mine: &[&'a Content]) -> Vec<&'a Content> {
    let all: Vec<(&'a Content, u32)> = mine
        .iter()
        .filter_map(|c| match &c.body {
            Some(Body::SituationReport(b)) => Some((*c, b.number)),
            _ => None,
        })
        .collect();
    let held: HashSet<(&str, &str)> = all.iter().map(|(c, _)| key(c)).collect();
    let mut next = earliest(
        all.iter()
            .filter(|(c, n)| *n == 1 && previous(c).is_none())
            .map(|(c, _)| *c),
    )
    .or_else(|| {
        earliest(
            all.iter()
                .filter(|(c, _)| previous(c).is_some_and(|p| !held.contains(&p)))
                .map(|(c, _)| *c),
        )
    });
    let mut out: Vec<&'a Content> = Vec::new();
    let mut visited: HashSet<(&str, &str)> = HashSet::new();
    while let Some(r) = next {
        if !visited.insert(key(r)) {
            break;
        }
        let n = all
            .iter()
            .find(|(c, _)| key(c) == key(r))
            .map(|(_, n)| *n)
            .unwrap_or(0);
        out.push(r);
        next = earliest(
            all.iter()
                .filter(|(c, m)| previous(c) == Some(key(r)) && n.checked_add(1) == Some(*m))
                .map(|(c, _)| *c),
        );
    }
    out
}

/// NIS2 Article 23(4) clocks for the reporting CSIRT (the case's opener), when the case was
/// opened with them: early warning within 24 h, incident notification within 72 h, final
/// report one month after the notification. A stage is met by the opener's incident report
/// for the case at that stage (or a later one, which carries what the earlier one would).
fn nis2_clocks(open: Option<&Content>, mine: &[&Content], now_ms: i64) -> Vec<DueItem> {
    use bluewire_proto::v1::Nis2Stage as N;
    let Some(open) = open else { return Vec::new() };
    let Some(Body::CaseOpen(b)) = &open.body else {
        return Vec::new();
    };
    if !b.nis2_reporting {
        return Vec::new();
    }
    let reported = |stage: N| {
        mine.iter()
            .filter(|c| c.origin_org == open.origin_org)
            .filter_map(|c| match &c.body {
                Some(Body::Incident(i)) if i.nis2_stage >= stage as i32 => Some(c.created_at_ms),
                _ => None,
            })
            .min()
    };
    const HOUR: i64 = 3600 * 1000;
    let at = open.created_at_ms;
    let notified = reported(N::Notification);
    let stages = [
        (
            "NIS2 early warning",
            N::EarlyWarning,
            at + 24 * HOUR,
            reported(N::EarlyWarning),
        ),
        (
            "NIS2 incident notification",
            N::Notification,
            at + 72 * HOUR,
            notified,
        ),
        (
            "NIS2 final report",
            N::Final,
            notified.unwrap_or(at + 72 * HOUR) + 30 * 24 * HOUR,
            reported(N::Final),
        ),
    ];
    stages
        .into_iter()
        .map(|(what, _, due_at_ms, done)| DueItem {
            what: what.to_string(),
            origin: open.origin_org.clone(),
            id: open.id.clone(),
            due_at_ms,
            done_at_ms: done,
            clock: Clock::at(due_at_ms, done, now_ms),
        })
        .collect()
}

/// One line saying what a workflow message does.
pub fn summary(c: &Content) -> String {
    use super::{crisis_label, mode_label, state_label};
    let Some(body) = &c.body else {
        return String::new();
    };
    match body {
        Body::CaseOpen(b) => format!("opened: {}", b.title),
        Body::Incident(i) => format!(
            "incident report{}: {}",
            match bluewire_proto::v1::Nis2Stage::try_from(i.nis2_stage) {
                Ok(bluewire_proto::v1::Nis2Stage::EarlyWarning) => " (NIS2 early warning)",
                Ok(bluewire_proto::v1::Nis2Stage::Notification) => " (NIS2 notification)",
                Ok(bluewire_proto::v1::Nis2Stage::Intermediate) => " (NIS2 intermediate report)",
                Ok(bluewire_proto::v1::Nis2Stage::Final) => " (NIS2 final report)",
                _ => "",
            },
            i.title
        ),
        Body::Escalation(b) => format!("escalated: {}", b.summary),
        Body::Advice(b) => format!(
            "advice: {}",
            assessment_label(A::try_from(b.verdict).unwrap_or(A::Unspecified))
        ),
        Body::Assessment(b) => format!(
            "assessment: {}",
            assessment_label(A::try_from(b.to).unwrap_or(A::Unspecified))
        ),
        Body::CrisisStatus(b) => format!(
            "crisis status: {}, crisis {}",
            mode_label(M::try_from(b.to_mode).unwrap_or(M::Unspecified)),
            crisis_label(C::try_from(b.to_crisis).unwrap_or(C::Unspecified))
        ),
        Body::SituationReport(b) => format!("situation report {}: {}", b.number, b.impact),
        Body::Communication(b) => format!(
            "public-communication line ({}): {}",
            if b.stage == LineStage::Agreed as i32 {
                "agreed"
            } else {
                "draft"
            },
            b.text
        ),
        Body::Reserve(b) => format!(
            "reserve {}{}",
            match ReserveStage::try_from(b.stage).unwrap_or(ReserveStage::Unspecified) {
                ReserveStage::Requested => "requested",
                ReserveStage::Acknowledged => "acknowledged",
                ReserveStage::Assigned => "assigned",
                ReserveStage::Delivered => "service delivered",
                ReserveStage::Closed => "closed",
                ReserveStage::Unspecified => "unspecified",
            },
            if b.services.is_empty() {
                String::new()
            } else {
                format!(": {}", b.services.join(", "))
            }
        ),
        Body::Notice(b) => format!("notice: {}", b.summary),
        Body::Lessons(b) => format!(
            "lessons learned ({}): {} findings, {} actions",
            if b.status == bluewire_proto::v1::ReviewStatus::Final as i32 {
                "final"
            } else {
                "draft"
            },
            b.findings.len(),
            b.actions.len()
        ),
        Body::Reopen(b) => format!(
            "reopened{}: {}",
            axis_move(c)
                .map(|mv| format!(" ({} → {})", mv.axis.as_str(), state_label(mv.to)))
                .unwrap_or_default(),
            b.reason
        ),
        _ => String::new(),
    }
}
