//! The crisis workflow end to end (EU blueprint): real nodes of organisations holding the
//! blueprint functions run a case from detection to closed through the Client API (what
//! `bluewire case …` / `bluewire reserve …` call); every node derives the case from the
//! signed messages it holds, and nodes that see the same levels agree. A member without a
//! function, or a misbehaving origin signing an illegal step, is refused at the origin and
//! by every receiver with the same rule.

use bluewire_node::pki::{Function, Level};
use bluewire_tests::clusters::{create_with, join};
use bluewire_tests::rogue::Rogue;
use bluewire_tests::{FedOptions, OrgSpec, TestFederation, assert_eventually, now_ms, pb};
use pb::ClusterRole as Role;
use pb::publish_request::Body as B;
use tonic::Code;

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
const CY: &str = "cyclone-fr";
const PRES: &str = "presidency";
const ENISA: &str = "enisa";
const EU: &str = "cert-eu";
const ALL: [&str; 6] = [BE, FR, CY, PRES, ENISA, EU];
const HOUR: i64 = 3600 * 1000;

fn specs() -> Vec<OrgSpec> {
    use Level::{Operational as O, Political as P, Technical as T};
    vec![
        OrgSpec::new(BE, "BE", "csirt", &[T, O]).with_functions(&[Function::CsirtsNetwork]),
        OrgSpec::new(FR, "FR", "csirt", &[T, O]).with_functions(&[Function::CsirtsNetwork]),
        OrgSpec::new(CY, "FR", "liaison", &[O, P]).with_functions(&[Function::Cyclone]),
        OrgSpec::new(PRES, "EU", "council", &[P]).with_functions(&[Function::Presidency]),
        OrgSpec::new(ENISA, "EU", "eu-body", &[O]).with_functions(&[Function::ReserveAuthority]),
        OrgSpec::new(EU, "EU", "csirt", &[T, O, P]).with_functions(&[Function::CsirtsNetwork]),
    ]
}

/// Six organisations in one crisis cluster (operational and political levels).
async fn crisis_federation() -> (TestFederation, String) {
    let fed = TestFederation::with_options(&specs(), FedOptions::fast_cluster_sync()).await;
    let info = create_with(
        &fed,
        BE,
        pb::ClusterCreateRequest {
            name: "crisis".into(),
            purpose: "cross-border incident response".into(),
            levels: vec![pb::Level::Operational as i32, pb::Level::Political as i32],
            max_tlp: pb::Tlp::Red as i32,
            history: pb::HistoryRule::Full as i32,
            exercise: false,
        },
    )
    .await;
    for org in [FR, CY, PRES, ENISA, EU] {
        join(&fed, BE, BE, &info.id, org, Role::Member, &ALL).await;
    }
    (fed, info.id)
}

fn step(kind: pb::Kind, level: pb::Level, cluster: &str, body: B) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: kind as i32,
        level: level as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Amber as i32,
            ..Default::default()
        }),
        cluster: cluster.into(),
        body: Some(body),
        ..Default::default()
    }
}

fn link(case: &str) -> Option<pb::CaseLink> {
    Some(pb::CaseLink {
        // ORIGIN/ID: the political level holds none of the case's messages at first.
        case: Some(pb::MessageRef {
            origin: BE.into(),
            id: case.into(),
        }),
        previous: None,
    })
}

async fn publish(
    fed: &TestFederation,
    org: &str,
    r: pb::PublishRequest,
) -> Result<pb::PublishResponse, tonic::Status> {
    fed.client(org, "analyst")
        .client()
        .publish(r)
        .await
        .map(|r| r.into_inner())
}

async fn ok(fed: &TestFederation, org: &str, r: pb::PublishRequest) -> pb::PublishResponse {
    publish(fed, org, r)
        .await
        .unwrap_or_else(|e| panic!("step at {org}: {e}"))
}

async fn case_at(
    fed: &TestFederation,
    org: &str,
    case: &str,
    at_ms: i64,
) -> Option<pb::CaseDetail> {
    fed.client(org, "analyst")
        .client()
        .get_case(pb::GetCaseRequest {
            case: case.into(),
            at_ms,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// (phase, assessment, mode, crisis, sitrep) at `org`, or None when it holds nothing of it.
async fn state(
    fed: &TestFederation,
    org: &str,
    case: &str,
) -> Option<(String, String, String, String, u32)> {
    case_at(fed, org, case, 0)
        .await
        .and_then(|d| d.summary)
        .map(|s| {
            (
                s.phase,
                s.assessment,
                s.political_mode,
                s.crisis,
                s.sitrep_number,
            )
        })
}

/// Wait until every org in `orgs` holds message `id`.
async fn reached(fed: &TestFederation, id: &str, orgs: &[&str]) {
    for org in orgs {
        assert_eventually!(fed.has_message(org, id).await, "{id} at {org}");
    }
}

async fn open_case(fed: &TestFederation, cluster: &str) -> String {
    let open = ok(
        fed,
        BE,
        step(
            pb::Kind::CaseOpen,
            pb::Level::Operational,
            cluster,
            B::CaseOpen(pb::CaseOpen {
                title: "ransomware in hospitals".into(),
                affected_countries: vec!["BE".into(), "FR".into()],
                sectors: vec!["health".into()],
                ..Default::default()
            }),
        ),
    )
    .await;
    reached(fed, &open.id, &[FR, CY, ENISA, EU]).await;
    open.id
}

fn escalation(case: &str) -> pb::PublishRequest {
    step(
        pb::Kind::Escalation,
        pb::Level::Operational,
        "",
        B::Escalation(pb::Escalation {
            link: link(case),
            summary: "spreading to FR hospitals".into(),
            affected_countries: vec!["BE".into(), "FR".into()],
            sectors: vec!["health".into()],
            proposed_level: pb::Level::Operational as i32,
            ..Default::default()
        }),
    )
}

fn assess(case: &str, to: pb::AssessmentState) -> pb::PublishRequest {
    step(
        pb::Kind::Assessment,
        pb::Level::Operational,
        "",
        B::Assessment(pb::LargeScaleAssessment {
            link: link(case),
            to: to as i32,
            sector_impact: vec![pb::SectorImpact {
                sector: "health".into(),
                impact: "surgeries postponed in two member states".into(),
            }],
            outlook: pb::Outlook::Worsening as i32,
            rationale: "cross-border, critical sector".into(),
            ..Default::default()
        }),
    )
}

fn decide(
    cluster: &str,
    case: &str,
    mode: pb::PoliticalMode,
    crisis: pb::CrisisState,
) -> pb::PublishRequest {
    step(
        pb::Kind::CrisisStatus,
        pb::Level::Political,
        cluster,
        B::CrisisStatus(pb::CrisisStatusDecision {
            link: link(case),
            to_mode: mode as i32,
            to_crisis: crisis as i32,
            rationale: "IPCR".into(),
            ..Default::default()
        }),
    )
}

fn reserve(case: &str, stage: pb::ReserveStage) -> pb::PublishRequest {
    let requested = stage == pb::ReserveStage::Requested;
    step(
        pb::Kind::Reserve,
        pb::Level::Operational,
        "",
        B::Reserve(pb::ReserveUpdate {
            link: link(case),
            stage: stage as i32,
            services: if requested {
                vec!["incident response".into()]
            } else {
                vec![]
            },
            affected_entity: if requested {
                "CHU Liège".into()
            } else {
                String::new()
            },
            impact: if requested {
                "emergency department closed".into()
            } else {
                String::new()
            },
            ..Default::default()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_case_runs_from_detection_to_closed_and_nodes_seeing_the_same_levels_agree() {
    let (fed, cluster) = crisis_federation().await;
    let case = open_case(&fed, &cluster).await;
    let esc = ok(&fed, BE, escalation(&case)).await;
    reached(&fed, &esc.id, &[CY]).await;
    let advice = ok(
        &fed,
        FR,
        step(
            pb::Kind::Advice,
            pb::Level::Operational,
            "",
            B::Advice(pb::Advice {
                link: link(&case),
                verdict: pb::AssessmentState::OngoingLargeScale as i32,
                confidence: pb::Confidence::High as i32,
                rationale: "same strain in FR".into(),
            }),
        ),
    )
    .await;
    reached(&fed, &advice.id, &[CY]).await;
    let under = ok(
        &fed,
        CY,
        assess(&case, pb::AssessmentState::UnderAssessment),
    )
    .await;
    assert_eq!(
        state(&fed, CY, &case).await.map(|s| s.1),
        Some("under-assessment".into())
    );
    reached(&fed, &under.id, &[BE]).await;
    let verdict = ok(
        &fed,
        CY,
        assess(&case, pb::AssessmentState::OngoingLargeScale),
    )
    .await;
    reached(&fed, &verdict.id, &[BE, FR, ENISA, EU]).await;
    let info = ok(
        &fed,
        PRES,
        decide(
            &cluster,
            &case,
            pb::PoliticalMode::InformationSharing,
            pb::CrisisState::Unspecified,
        ),
    )
    .await;
    reached(&fed, &info.id, &[CY]).await;
    let full = ok(
        &fed,
        PRES,
        decide(
            &cluster,
            &case,
            pb::PoliticalMode::FullActivation,
            pb::CrisisState::Established,
        ),
    )
    .await;
    let sitrep = |n: &str| {
        step(
            pb::Kind::SituationReport,
            pb::Level::Political,
            "",
            B::SituationReport(pb::SituationReport {
                link: link(&case),
                impact: format!("impact {n}"),
                ..Default::default()
            }),
        )
    };
    let s1 = ok(&fed, CY, sitrep("one")).await;
    let s2 = ok(&fed, CY, sitrep("two")).await;
    // The reserve: requested by a CSIRT, served by the reserve authority inside 24 h.
    let request = ok(&fed, BE, reserve(&case, pb::ReserveStage::Requested)).await;
    reached(&fed, &request.id, &[ENISA]).await;
    ok(&fed, ENISA, reserve(&case, pb::ReserveStage::Acknowledged)).await;
    let delivered = ok(&fed, ENISA, reserve(&case, pb::ReserveStage::Delivered)).await;
    reached(&fed, &full.id, &[CY, EU]).await;
    let ceased = ok(
        &fed,
        PRES,
        decide(
            &cluster,
            &case,
            pb::PoliticalMode::Unspecified,
            pb::CrisisState::Ceased,
        ),
    )
    .await;
    reached(&fed, &ceased.id, &[CY]).await;
    // The final review, at the political level so every level learns the case is closed.
    let review = ok(
        &fed,
        CY,
        step(
            pb::Kind::LessonsLearned,
            pb::Level::Political,
            "",
            B::Lessons(pb::LessonsLearned {
                link: link(&case),
                findings: vec!["backups were online".into()],
                actions: vec![pb::LessonAction {
                    action: "offline backups in hospitals".into(),
                    owner: BE.into(),
                    due_at_ms: now_ms() + 90 * 24 * HOUR,
                    status: "open".into(),
                }],
                status: pb::ReviewStatus::Final as i32,
            }),
        ),
    )
    .await;
    for (id, orgs) in [
        (&s2.id, &[CY, PRES, EU][..]),
        (&s1.id, &[CY, PRES, EU][..]),
        (&delivered.id, &[BE, FR, CY, ENISA, EU][..]),
        (&review.id, &[CY, PRES, EU][..]),
    ] {
        reached(&fed, id, orgs).await;
    }

    // Operational and political: the whole case.
    let full_view = state(&fed, CY, &case).await.expect("case at cyclone-fr");
    assert_eq!(
        full_view,
        (
            "closed".into(),
            "ongoing-large-scale".into(),
            "monitoring".into(),
            "ceased".into(),
            2
        )
    );
    assert_eq!(state(&fed, EU, &case).await.as_ref(), Some(&full_view));
    // Technical and operational CSIRTs: the assessment axis, no political messages.
    let csirt = state(&fed, BE, &case).await.expect("case at csirt-be");
    assert_eq!(csirt.1, "ongoing-large-scale");
    assert_eq!(
        (csirt.2.as_str(), csirt.3.as_str(), csirt.4),
        ("not-seen-here", "not-seen-here", 0)
    );
    assert_eq!(state(&fed, FR, &case).await.as_ref(), Some(&csirt));
    // The political level: crisis status, reports and the review, no raw technical content.
    let d = case_at(&fed, PRES, &case, 0)
        .await
        .expect("case at presidency");
    let s = d.summary.clone().unwrap();
    assert_eq!(
        (
            s.phase.as_str(),
            s.political_mode.as_str(),
            s.crisis.as_str(),
            s.sitrep_number
        ),
        ("closed", "monitoring", "ceased", 2)
    );
    assert!(
        s.title.is_empty(),
        "the case-open message is operational: {s:?}"
    );
    let kinds: Vec<&str> = d.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds
            .iter()
            .all(|k| matches!(*k, "crisis-status" | "situation-report" | "lessons-learned")),
        "the political level holds only political kinds: {kinds:?}"
    );
    assert!(d.timeline.iter().all(|e| e.level == "political"));
    // The reserve clock: served inside 24 h; the CSIRT sees it met.
    let be = case_at(&fed, BE, &case, 0).await.unwrap().summary.unwrap();
    assert_eq!(be.reserve.len(), 1, "{be:?}");
    assert_eq!(be.reserve[0].stage, "delivered");
    assert_eq!(be.reserve[0].due.as_ref().unwrap().clock, "met");
    // The timeline at cyclone-fr has every step, signer and level, oldest first.
    let d = case_at(&fed, CY, &case, 0).await.unwrap();
    let signers: Vec<(String, String)> = d
        .timeline
        .iter()
        .map(|e| (e.message.clone().unwrap().origin, e.kind.clone()))
        .collect();
    for want in [
        (BE, "case-open"),
        (BE, "escalation"),
        (FR, "advice"),
        (CY, "assessment"),
        (PRES, "crisis-status"),
        (ENISA, "reserve"),
        (CY, "lessons-learned"),
    ] {
        assert!(
            signers.iter().any(|(o, k)| o == want.0 && k == want.1),
            "{want:?} missing from {signers:?}"
        );
    }
    let times: Vec<i64> = d.timeline.iter().map(|e| e.created_at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // ListCases shows it too.
    let listed = fed
        .client(CY, "analyst")
        .client()
        .list_cases(pb::ListCasesRequest { at_ms: 0 })
        .await
        .unwrap()
        .into_inner()
        .cases;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].phase, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steps_without_the_function_or_against_the_state_are_refused_at_origin_and_receivers() {
    let (fed, cluster) = crisis_federation().await;
    let case = open_case(&fed, &cluster).await;
    // Against the state: assessing a case nobody escalated.
    let e = publish(
        &fed,
        CY,
        assess(&case, pb::AssessmentState::UnderAssessment),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("observed → under-assessment"),
        "{}",
        e.message()
    );
    // Escalate; once csirt-fr holds it, a second escalation is refused by the state.
    let esc = ok(&fed, BE, escalation(&case)).await;
    reached(&fed, &esc.id, &[CY, FR, ENISA, EU]).await;
    let e = publish(&fed, FR, escalation(&case)).await.unwrap_err();
    assert!(e.message().contains("already escalated"), "{}", e.message());
    // At the origin: a CSIRT cannot assess, cyclone cannot activate the crisis response.
    let e = publish(
        &fed,
        FR,
        assess(&case, pb::AssessmentState::UnderAssessment),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("needs the cyclone function"),
        "{}",
        e.message()
    );
    let e = publish(
        &fed,
        CY,
        decide(
            &cluster,
            &case,
            pb::PoliticalMode::FullActivation,
            pb::CrisisState::Established,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        e.message().contains("needs the presidency function"),
        "{}",
        e.message()
    );

    // Receivers: csirt-fr signs an assessment itself (valid certificate and key, no
    // cyclone function) and delivers it straight to cyclone-fr and cert-eu.
    let index = fed.cluster(CY, &cluster).await.unwrap().head_index;
    let rogue = Rogue::new(&fed, FR);
    let forged = |to: pb::AssessmentState, from: pb::AssessmentState, org: &str| {
        let mut c = Rogue::new(&fed, org).in_cluster(&cluster, index, "x");
        c.kind = pb::Kind::Assessment as i32;
        c.level = pb::Level::Operational as i32;
        c.marking = Some(pb::Marking {
            tlp: pb::Tlp::Amber as i32,
            ..Default::default()
        });
        c.body = Some(pb::content::Body::Assessment(pb::LargeScaleAssessment {
            link: Some(pb::CaseLink {
                case: Some(pb::MessageRef {
                    origin: BE.into(),
                    id: case.clone(),
                }),
                previous: Some(pb::MessageRef {
                    origin: BE.into(),
                    id: esc.id.clone(),
                }),
            }),
            from: from as i32,
            to: to as i32,
            sector_impact: vec![pb::SectorImpact {
                sector: "health".into(),
                impact: "forged".into(),
            }],
            outlook: pb::Outlook::Stable as i32,
            rationale: "forged".into(),
            ..Default::default()
        }));
        c
    };
    let by_csirt = forged(
        pb::AssessmentState::UnderAssessment,
        pb::AssessmentState::Escalated,
        FR,
    );
    for to in [CY, EU] {
        rogue
            .expect_refused(to, &by_csirt, "workflow", "needs the cyclone function")
            .await;
    }
    // cyclone-fr's own key, but a step that does not follow the escalation it names.
    let cyclone = Rogue::new(&fed, CY);
    let lie = forged(
        pb::AssessmentState::OngoingLargeScale,
        pb::AssessmentState::UnderAssessment,
        CY,
    );
    for to in [BE, EU] {
        cyclone
            .expect_refused(to, &lie, "workflow", "the assessment axis was escalated")
            .await;
    }
    // An illegal edge (back without a reopen) is refused as content, whoever signs it.
    let back = forged(
        pb::AssessmentState::UnderAssessment,
        pb::AssessmentState::OngoingLargeScale,
        CY,
    );
    cyclone
        .expect_refused(BE, &back, "content", "needs a signed reopen by cyclone")
        .await;
    // None of it moved the case anywhere.
    for org in [BE, FR, CY, ENISA, EU] {
        assert_eq!(
            state(&fed, org, &case).await.map(|s| s.1),
            Some("escalated".into()),
            "at {org}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unserved_reserve_request_turns_overdue_after_24_hours() {
    let (fed, cluster) = crisis_federation().await;
    let case = open_case(&fed, &cluster).await;
    let request = ok(&fed, BE, reserve(&case, pb::ReserveStage::Requested)).await;
    reached(&fed, &request.id, &[ENISA]).await;
    let clock_at = |org: &'static str, at: i64| {
        let fed = &fed;
        let case = case.clone();
        async move {
            let s = case_at(fed, org, &case, at).await.unwrap().summary.unwrap();
            s.reserve[0].due.clone().unwrap().clock
        }
    };
    let t = now_ms();
    assert_eq!(clock_at(ENISA, t).await, "on-time");
    assert_eq!(clock_at(ENISA, t + 21 * HOUR).await, "due-soon");
    assert_eq!(clock_at(ENISA, t + 25 * HOUR).await, "overdue");
    assert_eq!(clock_at(BE, t + 25 * HOUR).await, "overdue");
    // The node's clock pass, driven at a chosen time: the overdue item becomes one alert in
    // the node's own feed (sent nowhere) and a gauge.
    let enisa = fed.node(ENISA);
    let gauge = |st: &bluewire_node::NodeState| {
        st.metrics.gauge_value(
            bluewire_node::workflow::OVERDUE,
            &[("kind", "reserve"), ("exercise", "false")],
        )
    };
    let pass = bluewire_node::workflow::clock_pass(&enisa, t + 20 * HOUR)
        .await
        .unwrap();
    assert_eq!((pass.overdue, pass.announced.len()), (0, 0));
    assert_eq!(gauge(&enisa), Some(0.0));
    let pass = bluewire_node::workflow::clock_pass(&enisa, t + 25 * HOUR)
        .await
        .unwrap();
    assert_eq!((pass.overdue, pass.announced.len()), (1, 1), "{pass:?}");
    assert_eq!(gauge(&enisa), Some(1.0));
    let again = bluewire_node::workflow::clock_pass(&enisa, t + 26 * HOUR)
        .await
        .unwrap();
    assert_eq!(
        (again.overdue, again.announced.len()),
        (1, 0),
        "announced once"
    );
    let alert = &pass.announced[0];
    let feed = fed.feed(ENISA, Some(ENISA)).await;
    let item = feed
        .iter()
        .find(|i| i.content.as_ref().is_some_and(|c| &c.id == alert))
        .expect("the alert is in enisa's feed");
    let title = match &item.content.as_ref().unwrap().body {
        Some(pb::content::Body::FreeText(t)) => t.title.clone(),
        other => panic!("{other:?}"),
    };
    assert!(title.starts_with("OVERDUE: reserve request"), "{title}");
    assert!(item.verified);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!fed.has_message(BE, alert).await, "the alert stays local");
    // Served now: met, whenever it is looked at; the gauge goes back to zero.
    let done = ok(&fed, ENISA, reserve(&case, pb::ReserveStage::Delivered)).await;
    reached(&fed, &done.id, &[BE]).await;
    assert_eq!(clock_at(BE, t + 25 * HOUR).await, "met");
    let pass = bluewire_node::workflow::clock_pass(&enisa, t + 27 * HOUR)
        .await
        .unwrap();
    assert_eq!(pass.overdue, 0);
    assert_eq!(gauge(&enisa), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reserve_request_reaches_the_csirts_network_and_cyclone_or_is_refused() {
    let (fed, cluster) = crisis_federation().await;
    let case = open_case(&fed, &cluster).await;
    let mandatory = [FR, CY, EU];
    // Named recipients: the node names the mandatory ones too.
    let mut named = reserve(&case, pb::ReserveStage::Requested);
    named.recipients = vec![ENISA.into()];
    let r = ok(&fed, BE, named).await;
    for org in mandatory.iter().chain([&ENISA]) {
        assert!(r.queued_for.contains(&org.to_string()), "{org}: {r:?}");
    }
    assert!(!r.queued_for.contains(&PRES.to_string()), "{r:?}");
    reached(&fed, &r.id, &[ENISA, FR, CY, EU]).await;
    // TLP:RED naming only the reserve authority: refused at the origin, saying who and why.
    let mut red = reserve(&case, pb::ReserveStage::Requested);
    red.marking.as_mut().unwrap().tlp = pb::Tlp::Red as i32;
    red.recipients = vec![ENISA.into()];
    let e = publish(&fed, BE, red.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("(workflow)")
            && e.message().contains("must receive this step")
            && e.message().contains("CSIRTs network"),
        "{}",
        e.message()
    );
    // Naming them all, RED goes through.
    red.recipients = vec![ENISA.into(), FR.into(), CY.into(), EU.into()];
    ok(&fed, BE, red).await;
    // A member that signs a RED request naming only the reserve authority itself is
    // refused by the receiver with the same rule.
    let index = fed.cluster(BE, &cluster).await.unwrap().head_index;
    let rogue = Rogue::new(&fed, BE);
    let mut c = rogue.in_cluster(&cluster, index, "x");
    c.kind = pb::Kind::Reserve as i32;
    c.level = pb::Level::Operational as i32;
    c.marking = Some(pb::Marking {
        tlp: pb::Tlp::Red as i32,
        ..Default::default()
    });
    c.recipients = vec![ENISA.into()];
    c.body = Some(pb::content::Body::Reserve(pb::ReserveUpdate {
        link: Some(pb::CaseLink {
            case: Some(pb::MessageRef {
                origin: BE.into(),
                id: case.clone(),
            }),
            previous: None,
        }),
        stage: pb::ReserveStage::Requested as i32,
        services: vec!["forensics".into()],
        affected_entity: "hospital".into(),
        impact: "down".into(),
        ..Default::default()
    }));
    rogue
        .expect_refused(ENISA, &c, "workflow", "must receive this step")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nis2_stages_are_met_by_the_openers_incident_reports_for_the_case() {
    let (fed, cluster) = crisis_federation().await;
    let open = ok(
        &fed,
        BE,
        step(
            pb::Kind::CaseOpen,
            pb::Level::Operational,
            &cluster,
            B::CaseOpen(pb::CaseOpen {
                title: "ransomware, NIS2 entity".into(),
                nis2_reporting: true,
                ..Default::default()
            }),
        ),
    )
    .await;
    let report = |stage: pb::Nis2Stage, taxonomy: (&str, &str)| {
        step(
            pb::Kind::IncidentReport,
            pb::Level::Operational,
            "",
            B::Incident(pb::IncidentReport {
                title: "hospital group".into(),
                taxonomy_class: taxonomy.0.into(),
                taxonomy_type: taxonomy.1.into(),
                nis2_sectors: vec!["health".into()],
                // By bare id: the node names the case's origin and cluster.
                case: Some(pb::MessageRef {
                    origin: String::new(),
                    id: open.id.clone(),
                }),
                nis2_stage: stage as i32,
                ..Default::default()
            }),
        )
    };
    // A report that misclassifies is refused, naming the field.
    let e = publish(
        &fed,
        BE,
        report(pb::Nis2Stage::EarlyWarning, ("intrusions", "ddos")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("taxonomy_type"), "{}", e.message());
    let warning = ok(
        &fed,
        BE,
        report(
            pb::Nis2Stage::EarlyWarning,
            ("malicious-code", "infected-system"),
        ),
    )
    .await;
    reached(&fed, &warning.id, &[FR]).await;
    let t = now_ms();
    for org in [BE, FR] {
        let s = case_at(&fed, org, &open.id, t + 73 * HOUR)
            .await
            .unwrap()
            .summary
            .unwrap();
        let clocks: Vec<(&str, &str)> = s
            .due
            .iter()
            .map(|d| (d.what.as_str(), d.clock.as_str()))
            .collect();
        assert_eq!(
            clocks,
            [
                ("NIS2 early warning", "met"),
                ("NIS2 incident notification", "overdue"),
                ("NIS2 final report", "on-time"),
            ],
            "at {org}"
        );
    }
}
