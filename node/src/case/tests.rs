//! The crisis workflow's core, pinned: every transition allowed or refused per function
//! against hand-written oracle tables, the consistency rules, and the fold's independence
//! from delivery order, duplicates and losses-then-catch-up.

use super::*;

use bluewire_proto::v1::{
    AssessmentState as A, CaseAxis, Content, CrisisState as C, Kind, Level, LineStage, Marking,
    NoticeKind, PoliticalMode as M, ReserveStage, ReviewStatus, Tlp,
};
use proptest::prelude::*;

use crate::pki::{self, Function as F, OrgProfile};

const CLUSTER: &str = "csirt-be/crisis";
const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3600 * 1000;

/// A UUIDv7 id that sorts by `n`.
fn uid(n: u64) -> String {
    uuid::Builder::from_unix_timestamp_millis(T0 as u64 + n, &[n as u8; 10])
        .into_uuid()
        .to_string()
}

fn r(origin: &str, id: &str) -> pb::MessageRef {
    pb::MessageRef {
        origin: origin.into(),
        id: id.into(),
    }
}

fn content(origin: &str, n: u64, kind: Kind, level: Level, body: Body) -> Content {
    Content {
        id: uid(n),
        origin_org: origin.into(),
        author: format!("{origin}/alice"),
        created_at_ms: T0 + n as i64 * 1000,
        kind: kind as i32,
        level: level as i32,
        marking: Some(Marking {
            tlp: Tlp::Amber as i32,
            ..Default::default()
        }),
        cluster: CLUSTER.into(),
        body: Some(body),
        ..Default::default()
    }
}

fn link(case: &Content, prev: Option<&Content>) -> Option<pb::CaseLink> {
    Some(pb::CaseLink {
        case: Some(r(&case.origin_org, &case.id)),
        previous: prev.map(|p| r(&p.origin_org, &p.id)),
    })
}

fn open(origin: &str, n: u64) -> Content {
    content(
        origin,
        n,
        Kind::CaseOpen,
        Level::Operational,
        Body::CaseOpen(pb::CaseOpen {
            title: "ransomware in hospitals".into(),
            affected_countries: vec!["BE".into(), "FR".into()],
            sectors: vec!["health".into()],
            ..Default::default()
        }),
    )
}

fn escalation(origin: &str, n: u64, case: &Content, prev: &Content) -> Content {
    content(
        origin,
        n,
        Kind::Escalation,
        Level::Operational,
        Body::Escalation(pb::Escalation {
            link: link(case, Some(prev)),
            summary: "spreading across borders".into(),
            affected_countries: vec!["BE".into(), "FR".into()],
            proposed_level: Level::Operational as i32,
            ..Default::default()
        }),
    )
}

fn assessment(origin: &str, n: u64, case: &Content, prev: &Content, from: A, to: A) -> Content {
    content(
        origin,
        n,
        Kind::Assessment,
        Level::Political,
        Body::Assessment(pb::LargeScaleAssessment {
            link: link(case, Some(prev)),
            from: from as i32,
            to: to as i32,
            sector_impact: vec![pb::SectorImpact {
                sector: "health".into(),
                impact: "surgeries postponed".into(),
            }],
            outlook: pb::Outlook::Worsening as i32,
            rationale: "two member states, critical sector".into(),
            ..Default::default()
        }),
    )
}

fn decision(
    origin: &str,
    n: u64,
    case: &Content,
    prev: &Content,
    from: (M, C),
    to: (M, C),
) -> Content {
    content(
        origin,
        n,
        Kind::CrisisStatus,
        Level::Political,
        Body::CrisisStatus(pb::CrisisStatusDecision {
            link: link(case, Some(prev)),
            from_mode: from.0 as i32,
            from_crisis: from.1 as i32,
            to_mode: to.0 as i32,
            to_crisis: to.1 as i32,
            rationale: "IPCR".into(),
        }),
    )
}

fn sitrep(origin: &str, n: u64, case: &Content, prev: Option<&Content>, number: u32) -> Content {
    content(
        origin,
        n,
        Kind::SituationReport,
        Level::Political,
        Body::SituationReport(pb::SituationReport {
            link: link(case, prev),
            number,
            impact: "hospitals on paper".into(),
            ..Default::default()
        }),
    )
}

fn reserve(
    origin: &str,
    n: u64,
    case: &Content,
    request: Option<&Content>,
    stage: ReserveStage,
) -> Content {
    content(
        origin,
        n,
        Kind::Reserve,
        Level::Operational,
        Body::Reserve(pb::ReserveUpdate {
            link: link(case, request),
            stage: stage as i32,
            services: if stage == ReserveStage::Requested {
                vec!["incident response".into()]
            } else {
                vec![]
            },
            affected_entity: "CHU Liège".into(),
            impact: "emergency department closed".into(),
            provider: "reserve provider X".into(),
            ..Default::default()
        }),
    )
}

fn lessons(
    origin: &str,
    n: u64,
    case: &Content,
    prev: Option<&Content>,
    status: ReviewStatus,
) -> Content {
    content(
        origin,
        n,
        Kind::LessonsLearned,
        Level::Operational,
        Body::Lessons(pb::LessonsLearned {
            link: link(case, prev),
            findings: vec!["backups were online".into()],
            actions: vec![pb::LessonAction {
                action: "offline backups".into(),
                owner: "csirt-be".into(),
                due_at_ms: T0 + 90 * 24 * HOUR,
                status: "open".into(),
            }],
            status: status as i32,
        }),
    )
}

fn reopen(origin: &str, n: u64, case: &Content, prev: &Content, axis: CaseAxis) -> Content {
    content(
        origin,
        n,
        Kind::CaseReopen,
        Level::Operational,
        Body::Reopen(pb::CaseReopen {
            link: link(case, Some(prev)),
            axis: axis as i32,
            reason: "new evidence".into(),
            ..Default::default()
        }),
    )
}

fn profile(org: &str, functions: &[F], levels: &[pki::Level]) -> OrgProfile {
    OrgProfile {
        org: org.into(),
        country: "BE".into(),
        org_type: "csirt".into(),
        levels: levels.to_vec(),
        sectors: vec![],
        accreditations: vec![],
        endpoint: "https://127.0.0.1:7443".into(),
        signing_keys: vec![],
        encryption_keys: vec![],
        functions: functions.iter().map(|f| f.as_str().to_string()).collect(),
    }
}

/// Certified for every level, holding only `f`.
fn holding(org: &str, f: Option<F>) -> OrgProfile {
    profile(org, f.as_slice(), &pki::Level::ALL)
}

/// The single functions an org may hold, and none.
fn each_function() -> Vec<Option<F>> {
    std::iter::once(None)
        .chain(F::ALL.into_iter().map(Some))
        .collect()
}

fn names(allowed: &[F]) -> Vec<Option<F>> {
    allowed.iter().copied().map(Some).collect()
}

/// Checks `c` as a receiver would with the signer holding `f`: fields, then authority.
fn admitted(c: &Content, f: Option<F>) -> bool {
    check_fields(c).is_ok() && authority(c, Some(&holding(&c.origin_org, f))).is_ok()
}

fn assert_only(c: &Content, allowed: &[Option<F>], what: &str) {
    assert_eq!(check_fields(c), Ok(()), "{what}: fields");
    for f in each_function() {
        assert_eq!(
            admitted(c, f),
            allowed.contains(&f),
            "{what} by an org holding {f:?}: {:?}",
            authority(c, Some(&holding(&c.origin_org, f)))
        );
    }
}

// ---------------------------------------------------------------------------
// Authority per step, against the oracle table (blueprint I.3, III.22, IV.25–27, VII.35).
// ---------------------------------------------------------------------------

#[test]
fn each_step_is_sent_only_by_the_functions_the_blueprint_gives_it() {
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    let csirt_or_cyclone = names(&[F::CsirtsNetwork, F::Cyclone]);
    assert_only(&case, &csirt_or_cyclone, "opening a case");
    assert_only(&esc, &names(&[F::CsirtsNetwork]), "escalation");
    let advice = content(
        "csirt-fr",
        3,
        Kind::Advice,
        Level::Operational,
        Body::Advice(pb::Advice {
            link: link(&case, None),
            verdict: A::OngoingLargeScale as i32,
            confidence: pb::Confidence::High as i32,
            rationale: "two states".into(),
        }),
    );
    assert_only(&advice, &names(&[F::CsirtsNetwork]), "advice");
    let under = assessment(
        "cyclone-fr",
        4,
        &case,
        &esc,
        A::Escalated,
        A::UnderAssessment,
    );
    assert_only(&under, &names(&[F::Cyclone]), "assessment");
    assert_only(
        &sitrep("cyclone-fr", 5, &case, None, 1),
        &csirt_or_cyclone,
        "situation report",
    );
    let line = |stage: LineStage, prev: Option<&Content>| {
        content(
            "cyclone-fr",
            6 + stage as u64,
            Kind::PublicCommunication,
            Level::Operational,
            Body::Communication(pb::CommunicationLine {
                link: link(&case, prev),
                stage: stage as i32,
                text: "services are being restored".into(),
                audience: "public".into(),
            }),
        )
    };
    let draft = line(LineStage::Draft, None);
    assert_only(
        &draft,
        &each_function(),
        "drafting a line (any operational-level org)",
    );
    assert_only(
        &line(LineStage::Agreed, Some(&draft)),
        &names(&[F::Presidency, F::CouncilSecretariat]),
        "agreeing a line",
    );
    let request = reserve("csirt-be", 7, &case, None, ReserveStage::Requested);
    assert_only(&request, &csirt_or_cyclone, "requesting the reserve");
    for stage in [
        ReserveStage::Acknowledged,
        ReserveStage::Assigned,
        ReserveStage::Delivered,
    ] {
        let u = reserve("enisa", 8, &case, Some(&request), stage);
        assert_only(&u, &names(&[F::ReserveAuthority]), &format!("{stage:?}"));
    }
    assert_only(
        &reserve("enisa", 9, &case, Some(&request), ReserveStage::Closed),
        &names(&[F::ReserveAuthority]),
        "closing someone else's request",
    );
    // The requester closes its own request whatever it holds.
    assert_only(
        &reserve("csirt-be", 9, &case, Some(&request), ReserveStage::Closed),
        &each_function(),
        "the requester closing its request",
    );
    let notice = |kind: NoticeKind| {
        content(
            "cyclone-fr",
            10,
            Kind::Notice,
            Level::Operational,
            Body::Notice(pb::Notice {
                link: link(&case, None),
                notice: kind as i32,
                summary: "GNSS ground segment".into(),
            }),
        )
    };
    assert_only(
        &notice(NoticeKind::SpaceServices),
        &names(&[F::Cyclone]),
        "space notice",
    );
    assert_only(
        &notice(NoticeKind::DefenceInitiative),
        &csirt_or_cyclone,
        "defence-initiative notice",
    );
    // Lessons learned: anyone in the response drafts; the opener or cyclone closes.
    let other = |c: Content| Content {
        origin_org: "csirt-fr".into(),
        author: "csirt-fr/alice".into(),
        ..c
    };
    assert_only(
        &other(lessons("x", 11, &case, None, ReviewStatus::Draft)),
        &csirt_or_cyclone,
        "lessons learned (draft)",
    );
    assert_only(
        &other(lessons("x", 11, &case, Some(&case), ReviewStatus::Final)),
        &names(&[F::Cyclone]),
        "final review by another org",
    );
    assert_only(
        &lessons("csirt-be", 11, &case, Some(&case), ReviewStatus::Final),
        &each_function(),
        "final review by the case's opener",
    );
}

#[test]
fn the_signer_must_be_certified_for_the_level_it_sends_at() {
    let case = open("csirt-be", 1);
    let d = decision(
        "pres",
        2,
        &case,
        &case,
        (M::None, C::None),
        (M::Monitoring, C::None),
    );
    let operational_only = profile("pres", &[F::Presidency], &[pki::Level::Operational]);
    let why = authority(&d, Some(&operational_only)).unwrap_err();
    assert!(
        why.contains("not certified for the political level"),
        "{why}"
    );
    assert!(
        authority(
            &d,
            Some(&profile("pres", &[F::Presidency], &[pki::Level::Political]))
        )
        .is_ok()
    );
    // No profile: functions unknown, refused.
    assert!(
        authority(&d, None)
            .unwrap_err()
            .contains("no certified profile")
    );
    // Drafting a line needs the operational level.
    let draft = content(
        "pres",
        3,
        Kind::PublicCommunication,
        Level::Political,
        Body::Communication(pb::CommunicationLine {
            link: link(&case, None),
            stage: LineStage::Draft as i32,
            text: "t".into(),
            audience: String::new(),
        }),
    );
    let political_only = profile("pres", &[F::Presidency], &[pki::Level::Political]);
    assert!(
        authority(&draft, Some(&political_only))
            .unwrap_err()
            .contains("operational level")
    );
}

// ---------------------------------------------------------------------------
// Transitions, against oracle tables.
// ---------------------------------------------------------------------------

const ASSESSMENT_STATES: [A; 7] = [
    A::Unspecified,
    A::Observed,
    A::Escalated,
    A::UnderAssessment,
    A::PotentialLargeScale,
    A::OngoingLargeScale,
    A::NotLargeScale,
];

/// Oracle: the assessment moves cyclone makes with a large-scale assessment.
fn assessment_oracle(from: A, to: A) -> bool {
    use A::*;
    [
        (Escalated, UnderAssessment),
        (UnderAssessment, PotentialLargeScale),
        (UnderAssessment, OngoingLargeScale),
        (UnderAssessment, NotLargeScale),
        (PotentialLargeScale, OngoingLargeScale),
        (PotentialLargeScale, NotLargeScale),
        (OngoingLargeScale, PotentialLargeScale),
        (OngoingLargeScale, NotLargeScale),
        (NotLargeScale, PotentialLargeScale),
        (NotLargeScale, OngoingLargeScale),
    ]
    .contains(&(from, to))
}

/// Oracle: the backwards moves cyclone makes with a reopen.
fn assessment_reopen_oracle(from: A, to: A) -> bool {
    use A::*;
    [
        (Escalated, Observed),
        (UnderAssessment, Observed),
        (UnderAssessment, Escalated),
        (PotentialLargeScale, Observed),
        (PotentialLargeScale, Escalated),
        (PotentialLargeScale, UnderAssessment),
        (OngoingLargeScale, Observed),
        (OngoingLargeScale, Escalated),
        (OngoingLargeScale, UnderAssessment),
        (NotLargeScale, Observed),
        (NotLargeScale, Escalated),
        (NotLargeScale, UnderAssessment),
    ]
    .contains(&(from, to))
}

#[test]
fn assessment_moves_match_the_oracle_for_every_pair_and_function() {
    let case = open("csirt-be", 1);
    for from in ASSESSMENT_STATES {
        for to in ASSESSMENT_STATES {
            let c = assessment("cyclone-fr", 2, &case, &case, from, to);
            let allowed = if assessment_oracle(from, to) {
                names(&[F::Cyclone])
            } else {
                vec![]
            };
            for f in each_function() {
                assert_eq!(
                    admitted(&c, f),
                    allowed.contains(&f),
                    "assessment {from:?} → {to:?} by {f:?}: {:?}",
                    check_fields(&c)
                );
            }
            let mut back = reopen("cyclone-fr", 3, &case, &case, CaseAxis::Assessment);
            if let Some(Body::Reopen(b)) = back.body.as_mut() {
                b.from_assessment = from as i32;
                b.to_assessment = to as i32;
            }
            let allowed = if assessment_reopen_oracle(from, to) {
                names(&[F::Cyclone])
            } else {
                vec![]
            };
            for f in each_function() {
                assert_eq!(
                    admitted(&back, f),
                    allowed.contains(&f),
                    "reopen {from:?} → {to:?} by {f:?}: {:?}",
                    check_fields(&back)
                );
            }
        }
    }
    // Going back without a reopen names the rule.
    let c = assessment(
        "cyclone-fr",
        2,
        &case,
        &case,
        A::OngoingLargeScale,
        A::UnderAssessment,
    );
    assert!(
        check_fields(&c)
            .unwrap_err()
            .contains("signed reopen by cyclone")
    );
}

const POLITICAL_STATES: [(M, C); 15] = [
    (M::Unspecified, C::None),
    (M::Monitoring, C::Unspecified),
    (M::Unspecified, C::Unspecified),
    (M::None, C::None),
    (M::Monitoring, C::None),
    (M::InformationSharing, C::None),
    (M::FullActivation, C::None),
    (M::None, C::Established),
    (M::Monitoring, C::Established),
    (M::InformationSharing, C::Established),
    (M::FullActivation, C::Established),
    (M::None, C::Ceased),
    (M::Monitoring, C::Ceased),
    (M::InformationSharing, C::Ceased),
    (M::FullActivation, C::Ceased),
];

/// Oracle: crisis-status decisions, and who may take them (I.3: the Presidency activates
/// and deactivates; the Council secretariat, the Commission or the EEAS may switch on
/// information-sharing; after deactivation, monitoring).
fn political_oracle(from: (M, C), to: (M, C)) -> Vec<Option<F>> {
    use C::{Ceased, Established};
    use M::*;
    let p = names(&[F::Presidency]);
    let i = names(&[F::Presidency, F::CouncilSecretariat, F::Commission, F::Eeas]);
    let none = C::None;
    type Row<'a> = ((M, C), (M, C), &'a Vec<Option<F>>);
    let table: Vec<Row> = vec![
        ((None, none), (Monitoring, none), &i),
        ((None, none), (InformationSharing, none), &i),
        ((None, none), (FullActivation, none), &p),
        ((None, none), (FullActivation, Established), &p),
        ((Monitoring, none), (InformationSharing, none), &i),
        ((Monitoring, none), (FullActivation, none), &p),
        ((Monitoring, none), (FullActivation, Established), &p),
        ((InformationSharing, none), (Monitoring, none), &i),
        ((InformationSharing, none), (FullActivation, none), &p),
        (
            (InformationSharing, none),
            (FullActivation, Established),
            &p,
        ),
        ((FullActivation, none), (Monitoring, none), &p),
        ((FullActivation, none), (InformationSharing, none), &p),
        ((FullActivation, none), (FullActivation, Established), &p),
        ((FullActivation, Established), (Monitoring, Ceased), &p),
        ((Monitoring, Ceased), (InformationSharing, Ceased), &i),
        ((InformationSharing, Ceased), (Monitoring, Ceased), &i),
    ];
    table
        .into_iter()
        .find(|(f, t, _)| *f == from && *t == to)
        .map(|(_, _, who)| who.clone())
        .unwrap_or_default()
}

/// Oracle: political reopens, by the Presidency only.
fn political_reopen_oracle(from: (M, C), to: (M, C)) -> bool {
    use M::*;
    [
        ((Monitoring, C::Ceased), (Monitoring, C::None)),
        ((Monitoring, C::Ceased), (FullActivation, C::Established)),
        (
            (InformationSharing, C::Ceased),
            (InformationSharing, C::None),
        ),
        (
            (InformationSharing, C::Ceased),
            (FullActivation, C::Established),
        ),
    ]
    .contains(&(from, to))
}

#[test]
fn political_moves_match_the_oracle_for_every_pair_and_function() {
    let case = open("csirt-be", 1);
    for from in POLITICAL_STATES {
        for to in POLITICAL_STATES {
            let c = decision("pres", 2, &case, &case, from, to);
            let allowed = political_oracle(from, to);
            for f in each_function() {
                assert_eq!(
                    admitted(&c, f),
                    allowed.contains(&f),
                    "decision {from:?} → {to:?} by {f:?}: {:?} / {:?}",
                    check_fields(&c),
                    authority(&c, Some(&holding("pres", f)))
                );
            }
            let mut back = reopen("pres", 3, &case, &case, CaseAxis::Political);
            back.level = Level::Political as i32;
            if let Some(Body::Reopen(b)) = back.body.as_mut() {
                (b.from_mode, b.from_crisis) = (from.0 as i32, from.1 as i32);
                (b.to_mode, b.to_crisis) = (to.0 as i32, to.1 as i32);
            }
            let allowed = if political_reopen_oracle(from, to) {
                names(&[F::Presidency])
            } else {
                vec![]
            };
            for f in each_function() {
                assert_eq!(
                    admitted(&back, f),
                    allowed.contains(&f),
                    "political reopen {from:?} → {to:?} by {f:?}: {:?}",
                    check_fields(&back)
                );
            }
        }
    }
}

#[test]
fn review_closes_by_a_final_review_and_opens_again_only_by_a_reopen() {
    let case = open("csirt-be", 1);
    let last = lessons("csirt-be", 2, &case, Some(&case), ReviewStatus::Final);
    assert_eq!(
        axis_move(&last),
        Some(Move {
            axis: Axis::Review,
            from: AxisState::Review(false),
            to: AxisState::Review(true)
        })
    );
    assert_eq!(
        axis_move(&lessons("csirt-be", 2, &case, None, ReviewStatus::Draft)),
        None
    );
    let again = reopen("csirt-be", 3, &case, &last, CaseAxis::Review);
    assert_only(&again, &each_function(), "the opener reopening its case");
    let by_other = Content {
        origin_org: "csirt-fr".into(),
        author: "csirt-fr/alice".into(),
        ..again.clone()
    };
    assert_only(
        &by_other,
        &names(&[F::Cyclone]),
        "another org reopening a closed case",
    );
    assert!(follows(&again, Some(&case), Some(&last)).is_ok());
    // A reopen of a case that is not closed does not follow.
    let early = reopen("csirt-be", 3, &case, &case, CaseAxis::Review);
    assert!(
        follows(&early, Some(&case), Some(&case))
            .unwrap_err()
            .contains("review axis was open")
    );
}

// ---------------------------------------------------------------------------
// Required fields: each refusal names the field.
// ---------------------------------------------------------------------------

#[test]
fn each_missing_field_is_refused_by_name() {
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    type Edit = Box<dyn Fn(&mut Content)>;
    let cases: Vec<(Content, Edit, &str)> = vec![
        (
            case.clone(),
            Box::new(|c| {
                if let Some(Body::CaseOpen(b)) = c.body.as_mut() {
                    b.title = " ".into();
                }
            }),
            "title",
        ),
        (case.clone(), Box::new(|c| c.cluster.clear()), "cluster"),
        (
            esc.clone(),
            Box::new(|c| {
                if let Some(Body::Escalation(b)) = c.body.as_mut() {
                    b.affected_countries.clear();
                }
            }),
            "affected_countries",
        ),
        (
            esc.clone(),
            Box::new(|c| {
                if let Some(Body::Escalation(b)) = c.body.as_mut() {
                    b.proposed_level = Level::Technical as i32;
                }
            }),
            "proposed_level",
        ),
        (
            esc.clone(),
            Box::new(|c| {
                if let Some(Body::Escalation(b)) = c.body.as_mut() {
                    b.link.as_mut().unwrap().case = None;
                }
            }),
            "link.case",
        ),
        (
            esc.clone(),
            Box::new(|c| {
                if let Some(Body::Escalation(b)) = c.body.as_mut() {
                    b.link.as_mut().unwrap().case.as_mut().unwrap().id = "not-a-uuid".into();
                }
            }),
            "link.case.id",
        ),
        (
            esc.clone(),
            Box::new(|c| {
                if let Some(Body::Escalation(b)) = c.body.as_mut() {
                    b.link.as_mut().unwrap().previous = None;
                }
            }),
            "link.previous",
        ),
        (
            assessment(
                "cyclone-fr",
                3,
                &case,
                &esc,
                A::UnderAssessment,
                A::OngoingLargeScale,
            ),
            Box::new(|c| {
                if let Some(Body::Assessment(b)) = c.body.as_mut() {
                    b.outlook = 0;
                }
            }),
            "outlook",
        ),
        (
            assessment(
                "cyclone-fr",
                3,
                &case,
                &esc,
                A::UnderAssessment,
                A::OngoingLargeScale,
            ),
            Box::new(|c| {
                if let Some(Body::Assessment(b)) = c.body.as_mut() {
                    b.sector_impact.clear();
                }
            }),
            "sector_impact",
        ),
        (
            sitrep("cyclone-fr", 4, &case, None, 1),
            Box::new(|c| {
                if let Some(Body::SituationReport(b)) = c.body.as_mut() {
                    b.number = 2;
                }
            }),
            "link.previous",
        ),
        (
            sitrep("cyclone-fr", 4, &case, None, 1),
            Box::new(|c| {
                if let Some(Body::SituationReport(b)) = c.body.as_mut() {
                    b.number = 0;
                }
            }),
            "number",
        ),
        (
            reserve("csirt-be", 5, &case, None, ReserveStage::Requested),
            Box::new(|c| {
                if let Some(Body::Reserve(b)) = c.body.as_mut() {
                    b.services.clear();
                }
            }),
            "services",
        ),
        (
            reserve("csirt-be", 5, &case, None, ReserveStage::Requested),
            Box::new(|c| {
                if let Some(Body::Reserve(b)) = c.body.as_mut() {
                    b.affected_entity.clear();
                }
            }),
            "affected_entity",
        ),
        (
            reserve("enisa", 6, &case, Some(&case), ReserveStage::Assigned),
            Box::new(|c| {
                if let Some(Body::Reserve(b)) = c.body.as_mut() {
                    b.provider.clear();
                }
            }),
            "provider",
        ),
        (
            reserve("enisa", 6, &case, Some(&case), ReserveStage::Delivered),
            Box::new(|c| {
                if let Some(Body::Reserve(b)) = c.body.as_mut() {
                    b.link.as_mut().unwrap().previous = None;
                }
            }),
            "link.previous",
        ),
        (
            lessons("csirt-be", 7, &case, None, ReviewStatus::Draft),
            Box::new(|c| {
                if let Some(Body::Lessons(b)) = c.body.as_mut() {
                    b.actions[0].owner.clear();
                }
            }),
            "actions[0]",
        ),
        (
            reopen("cyclone-fr", 8, &case, &esc, CaseAxis::Assessment),
            Box::new(|c| {
                if let Some(Body::Reopen(b)) = c.body.as_mut() {
                    b.reason.clear();
                }
            }),
            "reason",
        ),
        (
            esc.clone(),
            Box::new(|c| c.kind = Kind::Advice as i32),
            "does not match its body",
        ),
        (esc.clone(), Box::new(|c| c.body = None), "typed body"),
    ];
    for (mut c, edit, field) in cases {
        edit(&mut c);
        let why = check_fields(&c).expect_err(field);
        assert!(why.contains(field), "refusal for {field}: {why}");
    }
}

// ---------------------------------------------------------------------------
// Consistency with the messages a step names.
// ---------------------------------------------------------------------------

#[test]
fn a_step_must_follow_the_state_its_previous_step_left() {
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    let under = assessment(
        "cyclone-fr",
        3,
        &case,
        &esc,
        A::Escalated,
        A::UnderAssessment,
    );
    assert_eq!(follows(&under, Some(&case), Some(&esc)), Ok(()));
    // Claims to move from under assessment, but its previous left the case escalated.
    let lie = assessment(
        "cyclone-fr",
        3,
        &case,
        &esc,
        A::UnderAssessment,
        A::OngoingLargeScale,
    );
    let why = follows(&lie, Some(&case), Some(&esc)).unwrap_err();
    assert!(why.contains("was escalated"), "{why}");
    // The first move follows the case itself from the axis's initial state.
    assert_eq!(follows(&esc, Some(&case), Some(&case)), Ok(()));
    let d = decision(
        "pres",
        4,
        &case,
        &case,
        (M::Monitoring, C::None),
        (M::InformationSharing, C::None),
    );
    assert!(
        follows(&d, Some(&case), Some(&case))
            .unwrap_err()
            .contains("none / crisis none")
    );
    // A step on another axis is no previous.
    let d = decision(
        "pres",
        4,
        &case,
        &esc,
        (M::None, C::None),
        (M::Monitoring, C::None),
    );
    assert!(
        follows(&d, Some(&case), Some(&esc))
            .unwrap_err()
            .contains("not a step on the political axis")
    );
    // Not holding them is no refusal (a node may not be in their audience).
    assert_eq!(follows(&lie, None, None), Ok(()));
    // The case must be a case, in the same cluster.
    assert!(
        follows(&under, Some(&esc), None)
            .unwrap_err()
            .contains("not a case")
    );
    let elsewhere = Content {
        cluster: "csirt-fr/other".into(),
        ..case.clone()
    };
    assert!(
        follows(&under, Some(&elsewhere), None)
            .unwrap_err()
            .contains("cluster")
    );
    // A previous from another case.
    let other_case = open("csirt-fr", 9);
    let other_esc = escalation("csirt-fr", 10, &other_case, &other_case);
    assert!(
        follows(&under, None, Some(&other_esc))
            .unwrap_err()
            .contains("another case")
    );
}

#[test]
fn reports_lines_and_reserve_updates_follow_what_they_name() {
    let case = open("csirt-be", 1);
    let one = sitrep("cyclone-fr", 2, &case, None, 1);
    let two = sitrep("cyclone-fr", 3, &case, Some(&one), 2);
    assert_eq!(follows(&two, Some(&case), Some(&one)), Ok(()));
    let three = sitrep("cyclone-fr", 4, &case, Some(&one), 3);
    assert!(
        follows(&three, Some(&case), Some(&one))
            .unwrap_err()
            .contains("number 2")
    );
    let request = reserve("csirt-be", 5, &case, None, ReserveStage::Requested);
    let ack = reserve(
        "enisa",
        6,
        &case,
        Some(&request),
        ReserveStage::Acknowledged,
    );
    assert_eq!(follows(&ack, Some(&case), Some(&request)), Ok(()));
    let ack_of_ack = reserve("enisa", 7, &case, Some(&ack), ReserveStage::Delivered);
    assert!(
        follows(&ack_of_ack, Some(&case), Some(&ack))
            .unwrap_err()
            .contains("reserve request")
    );
    assert!(
        follows(&two, Some(&case), Some(&request))
            .unwrap_err()
            .contains("supersedes a situation report")
    );
}

// ---------------------------------------------------------------------------
// The fold.
// ---------------------------------------------------------------------------

/// A whole case, detection to closed, in causal order.
fn chain() -> Vec<Content> {
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    let under = assessment(
        "cyclone-fr",
        3,
        &case,
        &esc,
        A::Escalated,
        A::UnderAssessment,
    );
    let verdict = assessment(
        "cyclone-fr",
        5,
        &case,
        &under,
        A::UnderAssessment,
        A::OngoingLargeScale,
    );
    let info = decision(
        "council",
        6,
        &case,
        &case,
        (M::None, C::None),
        (M::InformationSharing, C::None),
    );
    let full = decision(
        "pres",
        7,
        &case,
        &info,
        (M::InformationSharing, C::None),
        (M::FullActivation, C::Established),
    );
    let s1 = sitrep("cyclone-fr", 8, &case, None, 1);
    let s2 = sitrep("cyclone-fr", 9, &case, Some(&s1), 2);
    let request = reserve("csirt-be", 10, &case, None, ReserveStage::Requested);
    let delivered = reserve("enisa", 11, &case, Some(&request), ReserveStage::Delivered);
    let ceased = decision(
        "pres",
        12,
        &case,
        &full,
        (M::FullActivation, C::Established),
        (M::Monitoring, C::Ceased),
    );
    let review = lessons("csirt-be", 13, &case, Some(&case), ReviewStatus::Final);
    vec![
        case, esc, under, verdict, info, full, s1, s2, request, delivered, ceased, review,
    ]
}

fn view_of(msgs: &[Content], now: i64) -> CaseView {
    let refs: Vec<&Content> = msgs.iter().collect();
    derive(("csirt-be", &uid(1)), &refs, false, now)
}

#[test]
fn the_fold_walks_a_case_from_detection_to_closed() {
    let all = chain();
    let now = T0 + 20 * 1000;
    let phases: Vec<(usize, Phase, A, M, C)> = vec![
        (1, Phase::Detection, A::Observed, M::None, C::None),
        (2, Phase::Assessment, A::Escalated, M::None, C::None),
        (3, Phase::Assessment, A::UnderAssessment, M::None, C::None),
        (4, Phase::Response, A::OngoingLargeScale, M::None, C::None),
        (
            5,
            Phase::Response,
            A::OngoingLargeScale,
            M::InformationSharing,
            C::None,
        ),
        (
            6,
            Phase::Response,
            A::OngoingLargeScale,
            M::FullActivation,
            C::Established,
        ),
        (
            11,
            Phase::Recovery,
            A::OngoingLargeScale,
            M::Monitoring,
            C::Ceased,
        ),
        (
            12,
            Phase::Closed,
            A::OngoingLargeScale,
            M::Monitoring,
            C::Ceased,
        ),
    ];
    for (n, phase, a, m, c) in phases {
        let v = view_of(&all[..n], now);
        assert_eq!(
            (v.phase, v.assessment, v.mode, v.crisis),
            (phase, a, m, c),
            "after {n} messages"
        );
    }
    // What a node holds of each axis (it sees a case only at its certified levels).
    let v = view_of(&all[..1], now);
    assert!(v.assessment_seen && !v.political_seen);
    let v = view_of(&all[4..6], now);
    assert!(!v.assessment_seen && v.political_seen);
    assert_eq!(v.title, "");
    let v = view_of(&all[1..2], now);
    assert!(v.assessment_seen && !v.political_seen);
    let v = view_of(&all, now);
    assert_eq!(v.title, "ransomware in hospitals");
    assert_eq!(v.cluster, CLUSTER);
    assert!(v.closed);
    assert_eq!(v.sitrep.as_ref().map(|s| s.0), Some(2));
    assert_eq!(v.reserve.len(), 1);
    assert_eq!(v.reserve[0].stage, ReserveStage::Delivered);
    assert_eq!(v.reserve[0].due.clock, Clock::Met);
    assert_eq!(v.timeline.len(), 12);
    assert!(v.timeline.iter().all(|e| e.in_effect));
    assert_eq!(v.head(Axis::Political), Some(("pres", uid(12).as_str())));
    // Not large-scale, no arrangements: recovery (handled nationally).
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    let under = assessment(
        "cyclone-fr",
        3,
        &case,
        &esc,
        A::Escalated,
        A::UnderAssessment,
    );
    let not = assessment(
        "cyclone-fr",
        4,
        &case,
        &under,
        A::UnderAssessment,
        A::NotLargeScale,
    );
    assert_eq!(
        view_of(&[case.clone(), esc, under, not], now).phase,
        Phase::Recovery
    );
    // A draft review puts the case in review.
    let draft = lessons("csirt-fr", 5, &case, None, ReviewStatus::Draft);
    assert_eq!(view_of(&[case, draft], now).phase, Phase::Review);
}

#[test]
fn where_the_chain_forks_the_owners_move_then_the_earliest_wins() {
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    let under = assessment(
        "cyclone-fr",
        3,
        &case,
        &esc,
        A::Escalated,
        A::UnderAssessment,
    );
    // Two cyclone members give verdicts on the same state: the earlier counts.
    let ongoing = assessment(
        "cyclone-fr",
        4,
        &case,
        &under,
        A::UnderAssessment,
        A::OngoingLargeScale,
    );
    let potential = assessment(
        "cyclone-de",
        5,
        &case,
        &under,
        A::UnderAssessment,
        A::PotentialLargeScale,
    );
    let base = [case.clone(), esc.clone(), under.clone()];
    let v = view_of(
        &[&base[..], &[potential.clone(), ongoing.clone()]].concat(),
        T0,
    );
    assert_eq!(v.assessment, A::OngoingLargeScale);
    let lost = v.timeline.iter().find(|e| e.id == potential.id).unwrap();
    assert!(!lost.in_effect);
    // A stale step (moving on from an older state) does not displace the chain, however
    // late or long its own continuation.
    let stale = assessment(
        "cyclone-de",
        9,
        &case,
        &esc,
        A::Escalated,
        A::UnderAssessment,
    );
    let stale_on = assessment(
        "cyclone-de",
        10,
        &case,
        &stale,
        A::UnderAssessment,
        A::NotLargeScale,
    );
    let v = view_of(
        &[&base[..], &[ongoing.clone(), stale, stale_on]].concat(),
        T0,
    );
    assert_eq!(v.assessment, A::OngoingLargeScale);
    // The Presidency's decision outranks a concurrent toggle by another function, even an
    // earlier one with a long continuation (the toggler cannot fork it away).
    let info = decision(
        "council",
        20,
        &case,
        &case,
        (M::None, C::None),
        (M::InformationSharing, C::None),
    );
    let established = decision(
        "pres",
        22,
        &case,
        &info,
        (M::InformationSharing, C::None),
        (M::FullActivation, C::Established),
    );
    let toggle = decision(
        "commission",
        21,
        &case,
        &info,
        (M::InformationSharing, C::None),
        (M::Monitoring, C::None),
    );
    let back = decision(
        "commission",
        23,
        &case,
        &toggle,
        (M::Monitoring, C::None),
        (M::InformationSharing, C::None),
    );
    let again = decision(
        "commission",
        24,
        &case,
        &back,
        (M::InformationSharing, C::None),
        (M::Monitoring, C::None),
    );
    let v = view_of(
        &[case.clone(), info, established.clone(), toggle, back, again],
        T0,
    );
    assert_eq!((v.mode, v.crisis), (M::FullActivation, C::Established));
    assert_eq!(
        v.head(Axis::Political),
        Some(("pres", established.id.as_str()))
    );
    // A move that does not fit the step it names never counts, in whatever order it came
    // (a second escalation naming the first: escalation moves from observed only).
    let e2 = escalation("csirt-fr", 6, &case, &esc);
    let v = view_of(&[e2.clone(), case.clone(), esc.clone()], T0);
    assert_eq!(v.assessment, A::Escalated);
    assert_eq!(
        v.head(Axis::Assessment),
        Some(("csirt-be", esc.id.as_str()))
    );
    // A gap (the node does not hold a middle step): the tip it holds still counts.
    let verdict = assessment(
        "cyclone-fr",
        7,
        &case,
        &under,
        A::UnderAssessment,
        A::NotLargeScale,
    );
    assert_eq!(
        view_of(std::slice::from_ref(&verdict), T0).assessment,
        A::NotLargeScale
    );
    // ... but not against a chain that starts at the case.
    assert_eq!(view_of(&[case, esc, verdict], T0).assessment, A::Escalated);
}

#[test]
fn a_cycle_a_hostile_origin_signs_does_not_hang_the_fold() {
    let case = open("csirt-be", 1);
    let mut x = assessment("evil", 2, &case, &case, A::Escalated, A::UnderAssessment);
    let mut y = assessment(
        "evil",
        3,
        &case,
        &case,
        A::UnderAssessment,
        A::OngoingLargeScale,
    );
    if let Some(Body::Assessment(b)) = x.body.as_mut() {
        b.link.as_mut().unwrap().previous = Some(r("evil", &y.id));
    }
    if let Some(Body::Assessment(b)) = y.body.as_mut() {
        b.link.as_mut().unwrap().previous = Some(r("evil", &x.id));
    }
    let v = view_of(&[case, x, y], T0);
    // Never reachable from the case, nor a dangling start: the cycle never counts.
    assert_eq!(v.assessment, A::Observed);
    assert!(v.timeline[1..].iter().all(|e| !e.in_effect));
}

#[test]
fn the_reserve_clock_runs_24_hours_from_the_request() {
    let case = open("csirt-be", 1);
    let request = reserve("csirt-be", 2, &case, None, ReserveStage::Requested);
    let at = request.created_at_ms;
    let clock = |msgs: &[Content], now: i64| view_of(msgs, now).reserve[0].due.clock;
    let only = [case.clone(), request.clone()];
    assert_eq!(clock(&only, at + HOUR), Clock::OnTime);
    assert_eq!(clock(&only, at + 20 * HOUR - 1), Clock::OnTime);
    assert_eq!(clock(&only, at + 20 * HOUR), Clock::DueSoon);
    assert_eq!(clock(&only, at + 24 * HOUR - 1), Clock::DueSoon);
    assert_eq!(clock(&only, at + 24 * HOUR), Clock::Overdue);
    let mut delivered = reserve("enisa", 3, &case, Some(&request), ReserveStage::Delivered);
    delivered.created_at_ms = at + 24 * HOUR;
    let served = [case.clone(), request.clone(), delivered.clone()];
    assert_eq!(
        clock(&served, at + 48 * HOUR),
        Clock::Met,
        "delivered exactly at the deadline"
    );
    delivered.created_at_ms = at + 24 * HOUR + 1;
    let late = [case.clone(), request.clone(), delivered];
    assert_eq!(clock(&late, at + 48 * HOUR), Clock::Late);
    // Acknowledged or assigned does not stop the clock; the stage shows the latest.
    let ack = reserve("enisa", 4, &case, Some(&request), ReserveStage::Assigned);
    let v = view_of(&[case, request, ack], at + 25 * HOUR);
    assert_eq!(v.reserve[0].stage, ReserveStage::Assigned);
    assert_eq!(v.reserve[0].provider, "reserve provider X");
    assert_eq!(v.reserve[0].due.clock, Clock::Overdue);
    assert_eq!(v.due.len(), 1);
}

#[test]
fn the_latest_situation_report_is_current_for_24_hours() {
    let case = open("csirt-be", 1);
    let s1 = sitrep("cyclone-fr", 2, &case, None, 1);
    let s2 = sitrep("cyclone-fr", 3, &case, Some(&s1), 2);
    let v = view_of(&[case, s2.clone(), s1], T0);
    assert_eq!(
        v.sitrep.as_ref().map(|s| (s.0, s.2.clone())),
        Some((2, s2.id.clone()))
    );
    assert!(sitrep_current(&v, s2.created_at_ms + SITREP_CURRENT_MS - 1));
    assert!(!sitrep_current(&v, s2.created_at_ms + SITREP_CURRENT_MS));
}

#[test]
fn a_step_in_another_cluster_never_counts_for_the_case() {
    let all = chain();
    let mut stray = decision(
        "pres",
        30,
        &all[0],
        &all[10],
        (M::Monitoring, C::Ceased),
        (M::InformationSharing, C::Ceased),
    );
    stray.cluster = "csirt-be/exercise-1".into();
    let mut with_stray = all.clone();
    with_stray.push(stray.clone());
    assert_eq!(view_of(&with_stray, T0), view_of(&all, T0));
    // Without the case-open message, the earliest step's cluster is the case's.
    let mut partial: Vec<Content> = all[4..].to_vec();
    partial.push(stray);
    let v = view_of(&partial, T0);
    assert_eq!(v.cluster, CLUSTER);
    assert_eq!(v.mode, M::Monitoring);
}

#[test]
fn exercise_marks_the_whole_case() {
    let mut all = chain();
    assert!(!view_of(&all, T0).exercise);
    let refs: Vec<&Content> = all.iter().collect();
    assert!(derive(("csirt-be", &uid(1)), &refs, true, T0).exercise);
    all[3].marking.as_mut().unwrap().exercise = true;
    assert!(view_of(&all, T0).exercise);
}

// ---------------------------------------------------------------------------
// aim: what the origin fills in.
// ---------------------------------------------------------------------------

#[test]
fn aim_fills_the_state_a_step_moves_from_and_the_step_it_follows() {
    let all = chain();
    let case = &all[0];
    let v = view_of(&all[..4], T0);
    let mut next = assessment(
        "cyclone-fr",
        20,
        case,
        case,
        A::Unspecified,
        A::NotLargeScale,
    );
    aim(&mut next, &v, &all.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(
        axis_move(&next).unwrap().from,
        AxisState::Assessment(A::OngoingLargeScale)
    );
    assert_eq!(previous(&next), Some(("cyclone-fr", uid(5).as_str())));
    assert_eq!(check_fields(&next), Ok(()));
    assert_eq!(follows(&next, Some(case), Some(&all[3])), Ok(()));
    // Escalating an escalated case is refused with the state.
    let mut esc = escalation("csirt-be", 21, case, case);
    let why = aim(&mut esc, &v, &[]).unwrap_err();
    assert!(why.contains("already ongoing-large-scale"), "{why}");
    // The political axis starts at the case; an unset target keeps the current value.
    let mut info = decision(
        "council",
        22,
        case,
        case,
        (M::Unspecified, C::Unspecified),
        (M::InformationSharing, C::Unspecified),
    );
    aim(&mut info, &v, &[]).unwrap();
    assert_eq!(
        axis_move(&info).unwrap(),
        Move {
            axis: Axis::Political,
            from: AxisState::Political(M::None, C::None),
            to: AxisState::Political(M::InformationSharing, C::None),
        }
    );
    assert_eq!(previous(&info), Some(("csirt-be", uid(1).as_str())));
    // Situation reports are numbered on.
    let v = view_of(&all[..8], T0);
    let mut s = sitrep("cyclone-fr", 23, case, None, 0);
    aim(&mut s, &v, &[]).unwrap();
    assert!(matches!(&s.body, Some(Body::SituationReport(b)) if b.number == 3));
    assert_eq!(previous(&s), Some(("cyclone-fr", uid(9).as_str())));
    // A reserve update finds the one open request; two need naming.
    let v = view_of(&all[..9], T0);
    let mut ack = reserve("enisa", 24, case, None, ReserveStage::Acknowledged);
    aim(&mut ack, &v, &[]).unwrap();
    assert_eq!(previous(&ack), Some(("csirt-be", uid(10).as_str())));
    let mut two = all[..9].to_vec();
    two.push(reserve("csirt-fr", 25, case, None, ReserveStage::Requested));
    let v = view_of(&two, T0);
    let mut ack = reserve("enisa", 26, case, None, ReserveStage::Acknowledged);
    assert!(
        aim(&mut ack, &v, &[])
            .unwrap_err()
            .contains("2 open reserve requests")
    );
    // A closed case takes no second final review.
    let v = view_of(&all, T0);
    let mut again = lessons("csirt-be", 27, case, None, ReviewStatus::Final);
    assert!(aim(&mut again, &v, &[]).unwrap_err().contains("reopen"));
}

// ---------------------------------------------------------------------------
// Order independence.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any delivery order, with duplicates, gives the same view; so does holding a subset
    /// first and the rest later (losses, then catch-up).
    #[test]
    fn the_same_messages_give_the_same_state_in_any_order(
        order in Just((0..12usize).collect::<Vec<_>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..12usize, 0..6),
        lost in proptest::collection::vec(any::<bool>(), 12),
        now_h in 0i64..48,
    ) {
        let all = chain();
        let now = T0 + now_h * HOUR;
        let expected = view_of(&all, now);
        let mut delivered: Vec<Content> = order.iter().map(|&i| all[i].clone()).collect();
        delivered.extend(dups.iter().map(|&i| all[i].clone()));
        prop_assert_eq!(&view_of(&delivered, now), &expected);
        // Losses: whatever subset, the fold is total (no panic) and catch-up converges.
        let held: Vec<Content> = order
            .iter()
            .filter(|&&i| !lost[i])
            .map(|&i| all[i].clone())
            .collect();
        let _partial = view_of(&held, now);
        let mut caught_up = held.clone();
        caught_up.extend(order.iter().filter(|&&i| lost[i]).map(|&i| all[i].clone()));
        prop_assert_eq!(&view_of(&caught_up, now), &expected);
    }
}

#[test]
fn mandatory_recipients_follow_the_blueprint_and_never_include_the_origin() {
    let case = open("csirt-be", 1);
    let profiles: Vec<(&str, OrgProfile)> = [
        ("csirt-be", F::CsirtsNetwork),
        ("csirt-fr", F::CsirtsNetwork),
        ("cyclone-fr", F::Cyclone),
        ("commanders", F::CyberCommanders),
        ("commission", F::Commission),
        ("eeas", F::Eeas),
        ("enisa", F::ReserveAuthority),
        ("pres", F::Presidency),
    ]
    .into_iter()
    .map(|(o, f)| (o, holding(o, Some(f))))
    .collect();
    let members: Vec<(&str, &OrgProfile)> = profiles.iter().map(|(o, p)| (*o, p)).collect();
    let who = |c: &Content| -> Vec<String> {
        mandatory(c, &members).into_iter().map(|(o, _)| o).collect()
    };
    let mut request = reserve("csirt-be", 2, &case, None, ReserveStage::Requested);
    assert_eq!(who(&request), ["csirt-fr", "cyclone-fr"]);
    let set = |c: &mut Content, military: bool, hybrid: bool| {
        if let Some(Body::Reserve(b)) = c.body.as_mut() {
            (b.military_dimension, b.hybrid_campaign) = (military, hybrid);
        }
    };
    set(&mut request, true, false);
    assert_eq!(who(&request), ["commanders", "csirt-fr", "cyclone-fr"]);
    set(&mut request, false, true);
    assert_eq!(
        who(&request),
        ["commission", "csirt-fr", "cyclone-fr", "eeas"]
    );
    set(&mut request, true, true);
    assert_eq!(
        who(&request),
        ["commanders", "commission", "csirt-fr", "cyclone-fr", "eeas"]
    );
    // Only the request itself: later stages have no mandatory recipients.
    let ack = reserve(
        "enisa",
        3,
        &case,
        Some(&request),
        ReserveStage::Acknowledged,
    );
    assert!(who(&ack).is_empty());
    let notice = |origin: &str, kind: NoticeKind| {
        content(
            origin,
            4,
            Kind::Notice,
            Level::Operational,
            Body::Notice(pb::Notice {
                link: link(&case, None),
                notice: kind as i32,
                summary: "s".into(),
            }),
        )
    };
    assert_eq!(
        who(&notice("cyclone-fr", NoticeKind::SpaceServices)),
        ["eeas"]
    );
    assert_eq!(
        who(&notice("csirt-be", NoticeKind::DefenceInitiative)),
        ["commanders", "cyclone-fr"]
    );
    // The origin is never its own mandatory recipient.
    assert_eq!(
        who(&notice("cyclone-fr", NoticeKind::DefenceInitiative)),
        ["commanders"]
    );
    let why = mandatory(&notice("cyclone-fr", NoticeKind::SpaceServices), &members);
    assert!(why[0].1.contains("IV.27"), "{why:?}");
    assert!(who(&sitrep("cyclone-fr", 5, &case, None, 1)).is_empty());
}

fn incident(origin: &str, n: u64, case: Option<&Content>, stage: pb::Nis2Stage) -> Content {
    content(
        origin,
        n,
        Kind::IncidentReport,
        Level::Technical,
        Body::Incident(pb::IncidentReport {
            title: "report".into(),
            taxonomy_class: "malicious-code".into(),
            taxonomy_type: "infected-system".into(),
            nis2_sectors: vec!["health".into()],
            case: case.map(|c| r(&c.origin_org, &c.id)),
            nis2_stage: stage as i32,
            ..Default::default()
        }),
    )
}

#[test]
fn nis2_clocks_run_from_the_opening_for_the_reporting_csirt() {
    use pb::Nis2Stage as N;
    let mut case = open("csirt-be", 1);
    if let Some(Body::CaseOpen(b)) = case.body.as_mut() {
        b.nis2_reporting = true;
    }
    let at = case.created_at_ms;
    let clocks = |msgs: &[Content], now: i64| -> Vec<(String, Clock)> {
        view_of(msgs, now)
            .due
            .into_iter()
            .map(|d| (d.what, d.clock))
            .collect()
    };
    let only = [case.clone()];
    assert_eq!(
        clocks(&only, at + HOUR),
        [
            ("NIS2 early warning".to_string(), Clock::OnTime),
            ("NIS2 incident notification".to_string(), Clock::OnTime),
            ("NIS2 final report".to_string(), Clock::OnTime),
        ]
    );
    let due: Vec<i64> = view_of(&only, at).due.iter().map(|d| d.due_at_ms).collect();
    assert_eq!(
        due,
        [
            at + 24 * HOUR,
            at + 72 * HOUR,
            at + 72 * HOUR + 30 * 24 * HOUR
        ],
        "before the notification, the final report is due a month after its deadline"
    );
    assert_eq!(clocks(&only, at + 25 * HOUR)[0].1, Clock::Overdue);
    assert_eq!(clocks(&only, at + 69 * HOUR)[1].1, Clock::DueSoon);
    // The opener's early warning meets the first stage; another organisation's does not.
    let mut warning = incident("csirt-be", 2, Some(&case), N::EarlyWarning);
    warning.created_at_ms = at + 23 * HOUR;
    let by_other = incident("csirt-fr", 3, Some(&case), N::Notification);
    let v = clocks(&[case.clone(), warning.clone(), by_other], at + 80 * HOUR);
    assert_eq!(v[0].1, Clock::Met);
    assert_eq!(v[1].1, Clock::Overdue);
    // A notification sent straight away meets both early stages; the final report is due a
    // month after the notification.
    let mut notification = incident("csirt-be", 4, Some(&case), N::Notification);
    notification.created_at_ms = at + 10 * HOUR;
    let v = view_of(&[case.clone(), notification.clone()], at + 11 * HOUR);
    assert_eq!(v.due[0].clock, Clock::Met);
    assert_eq!(v.due[1].clock, Clock::Met);
    assert_eq!(v.due[2].due_at_ms, at + 10 * HOUR + 30 * 24 * HOUR);
    let mut last = incident("csirt-be", 5, Some(&case), N::Final);
    last.created_at_ms = at + 31 * 24 * HOUR;
    let v = view_of(&[case.clone(), notification, last], at + 32 * 24 * HOUR);
    assert_eq!(v.due[2].clock, Clock::Late);
    // Without nis2_reporting, no NIS2 clock.
    assert!(view_of(&[open("csirt-be", 1)], at).due.is_empty());
    // The report shows in the timeline.
    let v = view_of(&[case, warning], at);
    assert!(
        v.timeline[1].summary.contains("NIS2 early warning"),
        "{:?}",
        v.timeline
    );
}

#[test]
fn incident_reports_are_classified_with_rsit_and_nis2_codes() {
    use pb::Nis2Stage as N;
    let case = open("csirt-be", 1);
    let ok = incident("csirt-be", 2, Some(&case), N::EarlyWarning);
    let Some(Body::Incident(i)) = &ok.body else {
        unreachable!()
    };
    assert_eq!(check_incident(i), Ok(()));
    assert_eq!(case_of(&ok), Some(("csirt-be", uid(1).as_str())));
    type Edit = Box<dyn Fn(&mut pb::IncidentReport)>;
    let edits: Vec<(Edit, &str)> = vec![
        (
            Box::new(|i| i.taxonomy_type = "ddos".into()),
            "not a type of RSIT class",
        ),
        (
            Box::new(|i| i.taxonomy_class = "ransomware".into()),
            "not an ENISA RSIT class",
        ),
        (
            Box::new(|i| i.nis2_sectors = vec!["hospitals".into()]),
            "not a NIS2 sector code",
        ),
        (Box::new(|i| i.case = None), "nis2_stage"),
        (
            Box::new(|i| i.case.as_mut().unwrap().id = "x".into()),
            "case.id",
        ),
        (
            Box::new(|i| i.supersedes = Some(r("csirt-be", "y"))),
            "supersedes.id",
        ),
        (
            Box::new(|i| i.nis2_stage = 9),
            "not a NIS2 Article 23 stage",
        ),
    ];
    for (edit, want) in edits {
        let mut j = i.clone();
        edit(&mut j);
        let why = check_incident(&j).expect_err(want);
        assert!(why.contains(want), "{want}: {why}");
    }
}

#[test]
fn a_situation_report_pinned_out_of_sequence_never_becomes_current() {
    let case = open("csirt-be", 1);
    let s1 = sitrep("cyclone-fr", 2, &case, None, 1);
    let s2 = sitrep("cyclone-fr", 3, &case, Some(&s1), 2);
    // u32::MAX naming report 1 is not the next number: never current.
    let pinned = sitrep("evil", 4, &case, Some(&s1), u32::MAX);
    let v = view_of(&[case.clone(), s1.clone(), s2.clone(), pinned], T0);
    assert_eq!(
        v.sitrep.as_ref().map(|s| (s.0, s.2.clone())),
        Some((2, s2.id.clone()))
    );
    // One naming itself is refused outright.
    let mut selfish = sitrep("evil", 5, &case, None, 7);
    let me = r("evil", &selfish.id);
    if let Some(Body::SituationReport(b)) = selfish.body.as_mut() {
        b.link.as_mut().unwrap().previous = Some(me);
    }
    assert!(check_fields(&selfish).unwrap_err().contains("itself"));
    // Numbering on from the end is refused, not wrapped.
    let v = view_of(&[case.clone(), s1], T0);
    let v = CaseView {
        sitrep: Some((u32::MAX, "o".into(), uid(9), T0)),
        ..v
    };
    let mut next = sitrep("cyclone-fr", 6, &case, None, 0);
    assert!(
        aim(&mut next, &v, &[])
            .unwrap_err()
            .contains("numbered to the end")
    );
}

#[test]
fn refusals_say_which_rule_of_the_axis_was_broken() {
    let case = open("csirt-be", 1);
    let why = |c: &Content| check_fields(c).unwrap_err();
    // Assessment: back without a reopen, sideways to the same verdict.
    let back = assessment(
        "cyclone-fr",
        2,
        &case,
        &case,
        A::OngoingLargeScale,
        A::UnderAssessment,
    );
    assert!(
        why(&back).contains("signed reopen by cyclone"),
        "{}",
        why(&back)
    );
    let same = assessment(
        "cyclone-fr",
        2,
        &case,
        &case,
        A::OngoingLargeScale,
        A::OngoingLargeScale,
    );
    assert!(
        why(&same).contains("observed → escalated → under assessment → verdict"),
        "{}",
        why(&same)
    );
    let unset = assessment(
        "cyclone-fr",
        2,
        &case,
        &case,
        A::Unspecified,
        A::UnderAssessment,
    );
    assert!(
        why(&unset).contains("both states must be set"),
        "{}",
        why(&unset)
    );
    // Political.
    let d = |from, to| decision("pres", 3, &case, &case, from, to);
    let unset = d((M::Unspecified, C::None), (M::Monitoring, C::None));
    assert!(why(&unset).contains("must all be set"), "{}", why(&unset));
    let unset = d((M::Monitoring, C::Unspecified), (M::Monitoring, C::None));
    assert!(why(&unset).contains("must all be set"), "{}", why(&unset));
    let to_none = d((M::Monitoring, C::None), (M::None, C::None));
    assert!(why(&to_none).contains("not to none"), "{}", why(&to_none));
    let same = d((M::Monitoring, C::None), (M::Monitoring, C::None));
    assert!(
        why(&same).contains("changes the mode or the crisis state"),
        "{}",
        why(&same)
    );
    let cease_full = d(
        (M::FullActivation, C::Established),
        (M::InformationSharing, C::Ceased),
    );
    assert!(
        why(&cease_full).contains("back to monitoring"),
        "{}",
        why(&cease_full)
    );
    let again = d(
        (M::Monitoring, C::Ceased),
        (M::FullActivation, C::Established),
    );
    assert!(why(&again).contains("only by a reopen"), "{}", why(&again));
    let skip = d((M::Monitoring, C::None), (M::Monitoring, C::Ceased));
    assert!(
        why(&skip).contains("established, then ceases"),
        "{}",
        why(&skip)
    );
    let full_ceased = d((M::Monitoring, C::Ceased), (M::FullActivation, C::Ceased));
    assert!(
        why(&full_ceased).contains("needs a reopen by the presidency"),
        "{}",
        why(&full_ceased)
    );
    let est_mon = d((M::Monitoring, C::None), (M::Monitoring, C::Established));
    assert!(
        why(&est_mon).contains("runs under full activation"),
        "{}",
        why(&est_mon)
    );
    let ceased_none = d((M::None, C::Ceased), (M::Monitoring, C::Ceased));
    assert!(
        why(&ceased_none).contains("before the arrangements were activated"),
        "{}",
        why(&ceased_none)
    );
    let mut back = reopen("pres", 4, &case, &case, CaseAxis::Political);
    if let Some(Body::Reopen(b)) = back.body.as_mut() {
        (b.from_mode, b.from_crisis) = (M::Monitoring as i32, C::None as i32);
        (b.to_mode, b.to_crisis) = (M::Monitoring as i32, C::None as i32);
    }
    assert!(
        why(&back).contains("takes back a ceased crisis"),
        "{}",
        why(&back)
    );
    let mut forward = reopen("cyclone-fr", 4, &case, &case, CaseAxis::Assessment);
    if let Some(Body::Reopen(b)) = forward.body.as_mut() {
        (b.from_assessment, b.to_assessment) = (A::Escalated as i32, A::UnderAssessment as i32);
    }
    assert!(
        why(&forward).contains("a reopen goes back"),
        "{}",
        why(&forward)
    );
}

#[test]
fn only_the_axis_owner_reopens_even_the_cases_opener() {
    let case = open("csirt-be", 1);
    let esc = escalation("csirt-be", 2, &case, &case);
    // The opener (csirts-network) may reopen its closed case, not the assessment.
    let mut back = reopen("csirt-be", 3, &case, &esc, CaseAxis::Assessment);
    if let Some(Body::Reopen(b)) = back.body.as_mut() {
        (b.from_assessment, b.to_assessment) = (A::Escalated as i32, A::Observed as i32);
    }
    let opener = holding("csirt-be", Some(F::CsirtsNetwork));
    let why = authority(&back, Some(&opener)).unwrap_err();
    assert!(why.contains("needs the cyclone function"), "{why}");
    let mut political = reopen("csirt-be", 4, &case, &esc, CaseAxis::Political);
    political.level = Level::Political as i32;
    let why = authority(&political, Some(&opener)).unwrap_err();
    assert!(why.contains("needs the presidency function"), "{why}");
    let review = reopen("csirt-be", 5, &case, &esc, CaseAxis::Review);
    assert_eq!(authority(&review, Some(&opener)), Ok(()));
}

#[test]
fn an_agreed_line_agrees_a_draft_line_and_nothing_else() {
    let case = open("csirt-be", 1);
    let line = |n: u64, stage: LineStage, prev: Option<&Content>| {
        content(
            "pres",
            n,
            Kind::PublicCommunication,
            Level::Political,
            Body::Communication(pb::CommunicationLine {
                link: link(&case, prev),
                stage: stage as i32,
                text: "t".into(),
                audience: String::new(),
            }),
        )
    };
    let draft = line(2, LineStage::Draft, None);
    let agreed = line(3, LineStage::Agreed, Some(&draft));
    assert_eq!(follows(&agreed, Some(&case), Some(&draft)), Ok(()));
    let again = line(4, LineStage::Agreed, Some(&agreed));
    assert!(
        follows(&again, Some(&case), Some(&agreed))
            .unwrap_err()
            .contains("names a draft line")
    );
    let report = sitrep("cyclone-fr", 5, &case, None, 1);
    let odd = line(6, LineStage::Agreed, Some(&report));
    assert!(
        follows(&odd, Some(&case), Some(&report))
            .unwrap_err()
            .contains("names a draft line")
    );
}

#[test]
fn the_view_keeps_advice_agreed_lines_withdrawn_requests_and_the_phase_of_each_axis() {
    let case = open("csirt-be", 1);
    let advice = content(
        "csirt-fr",
        2,
        Kind::Advice,
        Level::Operational,
        Body::Advice(pb::Advice {
            link: link(&case, None),
            verdict: A::PotentialLargeScale as i32,
            confidence: pb::Confidence::Low as i32,
            rationale: "r".into(),
        }),
    );
    let line = |n: u64, stage: LineStage| {
        content(
            "pres",
            n,
            Kind::PublicCommunication,
            Level::Political,
            Body::Communication(pb::CommunicationLine {
                link: link(&case, None),
                stage: stage as i32,
                text: "t".into(),
                audience: String::new(),
            }),
        )
    };
    let draft = line(3, LineStage::Draft);
    let agreed = line(4, LineStage::Agreed);
    let v = view_of(&[case.clone(), advice, draft, agreed.clone()], T0);
    assert_eq!(v.advice, [("csirt-fr".to_string(), A::PotentialLargeScale)]);
    assert_eq!(v.agreed_lines, [("pres".to_string(), agreed.id.clone())]);
    // Information-sharing alone puts a case in response.
    let info = decision(
        "council",
        5,
        &case,
        &case,
        (M::None, C::None),
        (M::InformationSharing, C::None),
    );
    assert_eq!(view_of(&[case.clone(), info], T0).phase, Phase::Response);
    // A request withdrawn (closed without delivery) stops its clock: met if closed in time.
    let request = reserve("csirt-be", 6, &case, None, ReserveStage::Requested);
    let at = request.created_at_ms;
    let mut closed = reserve("csirt-be", 7, &case, Some(&request), ReserveStage::Closed);
    closed.created_at_ms = at + HOUR;
    let v = view_of(
        &[case.clone(), request.clone(), closed.clone()],
        at + 30 * HOUR,
    );
    assert_eq!(v.reserve[0].stage, ReserveStage::Closed);
    assert_eq!(
        (v.reserve[0].due.clock, v.reserve[0].due.done_at_ms),
        (Clock::Met, None)
    );
    closed.created_at_ms = at + 25 * HOUR;
    let v = view_of(&[case.clone(), request.clone(), closed], at + 30 * HOUR);
    assert_eq!(v.reserve[0].due.clock, Clock::Late);
    // Delivered, then closed: the delivery is what counts.
    let mut delivered = reserve("enisa", 8, &case, Some(&request), ReserveStage::Delivered);
    delivered.created_at_ms = at + 2 * HOUR;
    let mut late_close = reserve("enisa", 9, &case, Some(&request), ReserveStage::Closed);
    late_close.created_at_ms = at + 40 * HOUR;
    let v = view_of(&[case, request, delivered, late_close], at + 50 * HOUR);
    assert_eq!(v.reserve[0].due.done_at_ms, Some(at + 2 * HOUR));
    assert_eq!(v.reserve[0].due.clock, Clock::Met);
}

#[test]
fn the_presidencys_activation_and_any_reopen_outrank_an_earlier_concurrent_move() {
    let case = open("csirt-be", 1);
    let mon = decision(
        "council",
        2,
        &case,
        &case,
        (M::None, C::None),
        (M::Monitoring, C::None),
    );
    // Full activation without a crisis (yet) against an earlier toggle from the same state.
    let toggle = decision(
        "commission",
        3,
        &case,
        &mon,
        (M::Monitoring, C::None),
        (M::InformationSharing, C::None),
    );
    let full = decision(
        "pres",
        4,
        &case,
        &mon,
        (M::Monitoring, C::None),
        (M::FullActivation, C::None),
    );
    let v = view_of(&[case.clone(), mon, toggle, full.clone()], T0);
    assert_eq!(v.head(Axis::Political), Some(("pres", full.id.as_str())));
    // A reopen against an earlier concurrent toggle after the crisis ceased.
    let ceased_from = decision(
        "pres",
        5,
        &case,
        &case,
        (M::None, C::None),
        (M::FullActivation, C::Established),
    );
    let ceased = decision(
        "pres",
        6,
        &case,
        &ceased_from,
        (M::FullActivation, C::Established),
        (M::Monitoring, C::Ceased),
    );
    let toggle = decision(
        "commission",
        7,
        &case,
        &ceased,
        (M::Monitoring, C::Ceased),
        (M::InformationSharing, C::Ceased),
    );
    let mut back = reopen("pres", 8, &case, &ceased, CaseAxis::Political);
    if let Some(Body::Reopen(b)) = back.body.as_mut() {
        (b.from_mode, b.from_crisis) = (M::Monitoring as i32, C::Ceased as i32);
        (b.to_mode, b.to_crisis) = (M::FullActivation as i32, C::Established as i32);
    }
    let v = view_of(&[case, ceased_from, ceased, toggle, back.clone()], T0);
    assert_eq!((v.mode, v.crisis), (M::FullActivation, C::Established));
    assert_eq!(v.head(Axis::Political), Some(("pres", back.id.as_str())));
}

#[test]
fn situation_reports_chain_by_number_from_report_one() {
    let case = open("csirt-be", 1);
    let s1 = sitrep("cyclone-fr", 2, &case, None, 1);
    let s2 = sitrep("cyclone-fr", 3, &case, Some(&s1), 2);
    let s3 = sitrep("cyclone-fr", 4, &case, Some(&s2), 3);
    let current = |msgs: &[Content]| view_of(msgs, T0).sitrep.map(|s| (s.0, s.2));
    // Holding only 2 and 3 (report 1 not held): the chain starts at the earliest held.
    assert_eq!(current(&[s3.clone(), s2.clone()]), Some((3, s3.id.clone())));
    // A "report 1" that names a predecessor is no start; one naming the current report
    // with the wrong number, or the right number naming another report, is not next.
    let fake_one = sitrep("evil", 5, &case, Some(&s3), 1);
    let wrong_number = sitrep("evil", 6, &case, Some(&s1), 3);
    let not_naming = sitrep("evil", 7, &case, Some(&s3), 2);
    assert_eq!(
        current(&[case.clone(), s1.clone(), fake_one, wrong_number, not_naming]),
        Some((1, s1.id.clone()))
    );
    // Roots are reports numbered 1 naming nothing: an earlier "1" naming a predecessor, or an
    // earlier report with another number naming nothing, is no start.
    let mut early_fake = sitrep("evil", 8, &case, Some(&s3), 1);
    early_fake.created_at_ms = s1.created_at_ms - 1000;
    let mut orphan = sitrep("evil", 9, &case, None, 5);
    orphan.created_at_ms = s1.created_at_ms - 2000;
    assert_eq!(
        current(&[s1.clone(), early_fake, orphan]),
        Some((1, s1.id.clone()))
    );
    // Without report 1, the start is a report whose predecessor is not held — not one whose
    // predecessor is held but does not chain to it.
    let wrong_next = sitrep("evil", 10, &case, Some(&s2), 4);
    assert_eq!(current(&[s2.clone(), wrong_next]), Some((2, s2.id.clone())));
    // Holding report 1 and a later report whose predecessor is held: the chain from 1.
    assert_eq!(current(&[s1.clone(), s3.clone()]), Some((1, s1.id.clone())));
    assert_eq!(current(&[case, s1, s2, s3.clone()]), Some((3, s3.id)));
}
