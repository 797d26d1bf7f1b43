//! Routing policy end to end, through the Federation, Client and Admin APIs:
//!
//! - a misbehaving peer that ignores egress policy (it holds csirt-be's node
//!   certificate and signing key and calls Federation.Deliver itself) is
//!   stopped at ingress, with the deciding rule in the reason, nothing stored,
//!   every refusal in Admin.Rejections, the audit trail and the metrics;
//! - Admin.Explain, for a stored message and for a draft, gives every
//!   recipient's deciding rule and the rules evaluated;
//! - a receiver's local Cedar policy refuses what the built-in rules allow.

use std::collections::BTreeMap;

use bluewire_node::envelope::seal;
use bluewire_node::pki::Level;
use bluewire_tests::clusters::deliver_as;
use bluewire_tests::{
    OrgSpec, TestFederation, assert_eventually, audit_export, audit_verify, backlog, content,
    item_id, pb,
};
use tonic::Code;

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
/// A crisis-management ministry: operational and political levels only.
const CRISIS: &str = "crisis-fr";

async fn federation() -> TestFederation {
    TestFederation::new(&[
        OrgSpec::new(BE, "BE", "csirt", &[Level::Technical, Level::Operational]),
        OrgSpec::csirt(FR, "FR"),
        OrgSpec::new(
            CRISIS,
            "FR",
            "ministry",
            &[Level::Operational, Level::Political],
        ),
    ])
    .await
}

/// Content from csirt-be with the given routing fields (free text unless
/// `incident`).
fn crafted(
    level: pb::Level,
    kind: pb::Kind,
    tlp: pb::Tlp,
    recipients: &[&str],
    text: &str,
) -> pb::Content {
    let mut c = content(BE, text);
    c.level = level as i32;
    c.kind = kind as i32;
    c.marking = Some(pb::Marking {
        tlp: tlp as i32,
        ..Default::default()
    });
    c.recipients = recipients.iter().map(|s| s.to_string()).collect();
    c.body = Some(match kind {
        pb::Kind::IncidentReport => pb::content::Body::Incident(pb::IncidentReport {
            title: text.into(),
            description: "crafted by a misbehaving peer".into(),
            ..Default::default()
        }),
        _ => pb::content::Body::FreeText(pb::FreeText {
            title: text.into(),
            body: "crafted by a misbehaving peer".into(),
        }),
    });
    c
}

async fn metrics(fed: &TestFederation, org: &str) -> String {
    fed.admin(org)
        .metrics(pb::MetricsRequest {})
        .await
        .unwrap_or_else(|e| panic!("Admin.Metrics at {org}: {e}"))
        .into_inner()
        .text
}

/// The value of `bluewire_routing_decisions_total{direction,rule,outcome}`
/// in a Prometheus text page (0 when absent), whatever the label order.
fn decisions(text: &str, direction: &str, rule: &str, outcome: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("bluewire_routing_decisions_total{"))
        .filter(|l| {
            l.contains(&format!("direction=\"{direction}\""))
                && l.contains(&format!("rule=\"{rule}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn is_stored(fed: &TestFederation, org: &str, id: &str) -> bool {
    match fed
        .client(org, "analyst")
        .client()
        .get(pb::GetRequest { id: id.into() })
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Code::NotFound => false,
        Err(e) => panic!("Client.Get {id} at {org}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misbehaving_peer_is_stopped_at_ingress_by_the_rule_it_ignored() {
    use pb::{Kind as K, Level as L, Tlp as T};
    let fed = federation().await;
    let key = fed.signing_key(BE);

    // (to, content, what the reason must contain, deciding routing rule if routing decides)
    let mut cases: Vec<(&str, pb::Content, &str, Option<&str>)> = Vec::new();
    let push = |cases: &mut Vec<_>, to, c, needle, rule| cases.push((to, c, needle, rule));
    push(
        &mut cases,
        FR,
        crafted(
            L::Technical,
            K::FreeText,
            T::Red,
            &[CRISIS],
            "red, names someone else",
        ),
        "recipients",
        Some("recipients"),
    );
    push(
        &mut cases,
        FR,
        crafted(L::Technical, K::FreeText, T::Red, &[], "red, names nobody"),
        "TLP:RED",
        Some("tlp"),
    );
    push(
        &mut cases,
        FR,
        crafted(
            L::Political,
            K::IncidentReport,
            T::Green,
            &[],
            "political incident",
        ),
        "political level",
        Some("levels"),
    );
    push(
        &mut cases,
        CRISIS,
        crafted(
            L::Political,
            K::IncidentReport,
            T::Green,
            &[],
            "political incident to ministry",
        ),
        "political level",
        Some("levels"),
    );
    push(
        &mut cases,
        FR,
        crafted(
            L::Political,
            K::SituationReport,
            T::Green,
            &[],
            "sitrep to a technical csirt",
        ),
        "political",
        Some("levels"),
    );
    push(
        &mut cases,
        FR,
        crafted(
            L::Operational,
            K::IncidentReport,
            T::Amber,
            &[],
            "operational to technical",
        ),
        "operational",
        Some("levels"),
    );
    push(
        &mut cases,
        CRISIS,
        crafted(
            L::Technical,
            K::FreeText,
            T::Green,
            &[],
            "technical to operational-only",
        ),
        "technical",
        Some("levels"),
    );
    let mut classified = crafted(
        L::Technical,
        K::IncidentReport,
        T::Amber,
        &[FR],
        "classified",
    );
    classified.marking.as_mut().unwrap().classification = "EU RESTRICTED".into();
    push(
        &mut cases,
        FR,
        classified,
        "EU RESTRICTED",
        Some("classification"),
    );
    let mut scoped = crafted(L::Technical, K::FreeText, T::Green, &[], "scoped to DE");
    scoped.scope_countries = vec!["DE".into()];
    push(&mut cases, FR, scoped, "DE", Some("scope"));
    let mut sector = crafted(L::Technical, K::FreeText, T::Green, &[], "scoped to energy");
    sector.scope_sectors = vec!["energy".into()];
    push(&mut cases, FR, sector, "energy", Some("scope"));
    let mut drill = crafted(L::Technical, K::FreeText, T::Green, &[], "exercise, direct");
    drill.marking.as_mut().unwrap().exercise = true;
    push(&mut cases, FR, drill, "exercise", Some("exercise"));

    for (to, c, needle, rule) in &cases {
        let title = match &c.body {
            Some(pb::content::Body::FreeText(t)) => t.title.clone(),
            Some(pb::content::Body::Incident(i)) => i.title.clone(),
            _ => unreachable!(),
        };
        let r = deliver_as(&fed, BE, to, seal(&key, c)).await;
        assert_eq!(
            r.outcome,
            pb::DeliveryOutcome::Rejected as i32,
            "{title} to {to}: {r:?}"
        );
        assert_eq!(r.id, c.id, "{title}");
        assert!(
            r.reason.contains(needle),
            "{title}: reason {:?} should mention {needle:?}",
            r.reason
        );
        if let Some(rule) = rule {
            assert!(
                r.reason.contains(&format!("routing refused it ({rule}):")),
                "{title}: reason {:?} should name the {rule} rule",
                r.reason
            );
        }
        assert!(
            !is_stored(&fed, to, &c.id).await,
            "{title}: refused message stored at {to}"
        );
    }

    // The same peer, playing by the rules, still gets through.
    let ok_fr = crafted(L::Technical, K::FreeText, T::Red, &[FR], "red, named");
    let ok_crisis = crafted(
        L::Operational,
        K::IncidentReport,
        T::Amber,
        &[],
        "operational to ministry",
    );
    for (to, c) in [(FR, &ok_fr), (CRISIS, &ok_crisis)] {
        let r = deliver_as(&fed, BE, to, seal(&key, c)).await;
        assert_eq!(
            r.outcome,
            pb::DeliveryOutcome::Accepted as i32,
            "{to}: {r:?}"
        );
        assert!(is_stored(&fed, to, &c.id).await);
    }
    let feed: Vec<String> = backlog(&fed.client(FR, "analyst"), Some(BE))
        .await
        .iter()
        .map(item_id)
        .collect();
    assert_eq!(
        feed,
        vec![ok_fr.id.clone()],
        "only the lawful message is in csirt-fr's feed"
    );

    // Every refusal is in the rejection log, the audit trail and the metrics.
    let mut by_org: BTreeMap<&str, (Vec<pb::Rejection>, Vec<pb::AuditRecord>, String)> =
        BTreeMap::new();
    for org in [FR, CRISIS] {
        by_org.insert(
            org,
            (
                fed.rejections(org).await,
                audit_export(&fed, org).await,
                metrics(&fed, org).await,
            ),
        );
    }
    let mut want_denials: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (to, c, needle, rule) in &cases {
        let (rejections, audit, _) = &by_org[to];
        assert!(
            rejections
                .iter()
                .any(|r| r.id == c.id && r.from_peer == BE && r.reason.contains(needle)),
            "{} not in {to}'s rejection log: {rejections:?}",
            c.id
        );
        let rec = audit
            .iter()
            .find(|r| r.event == "rejected" && r.msg_id == c.id)
            .unwrap_or_else(|| panic!("no audit record of the refusal of {} at {to}", c.id));
        assert_eq!(rec.peer, BE);
        assert!(rec.detail.contains(needle), "{rec:?}");
        if let Some(rule) = rule {
            *want_denials.entry((to, rule)).or_default() += 1;
        }
    }
    for ((to, rule), n) in want_denials {
        let m = &by_org[to].2;
        assert!(
            decisions(m, "ingress", rule, "deny") >= n,
            "{to}: expected {n} ingress denials by {rule} in\n{m}"
        );
    }
    for org in [FR, CRISIS] {
        let m = &by_org[org].2;
        assert!(
            decisions(m, "ingress", "allowed", "allow") >= 1,
            "{org}: no ingress allow in\n{m}"
        );
        assert!(
            m.contains("# TYPE bluewire_routing_decisions_total counter"),
            "{m}"
        );
        assert!(audit_verify(&fed, org).await.ok);
    }
}

async fn explain_draft(
    fed: &TestFederation,
    draft: &pb::PublishRequest,
) -> Vec<pb::RecipientExplanation> {
    fed.admin(BE)
        .explain(pb::ExplainRequest {
            draft: Some(draft.clone()),
            ..Default::default()
        })
        .await
        .expect("Explain a draft")
        .into_inner()
        .recipients
}

fn check_explanation(e: &pb::RecipientExplanation) {
    assert!(!e.steps.is_empty(), "{e:?}");
    let last = e.steps.last().unwrap();
    if e.allowed {
        assert_eq!(e.rule, "allowed", "{e:?}");
        assert!(e.steps.iter().all(|s| s.allowed), "{e:?}");
        assert_eq!(
            last.rule, "local-policy",
            "an allowed decision runs every rule: {e:?}"
        );
    } else {
        assert_eq!(last.rule, e.rule, "steps end at the deciding rule: {e:?}");
        assert!(!last.allowed, "{e:?}");
        assert!(
            e.steps[..e.steps.len() - 1].iter().all(|s| s.allowed),
            "{e:?}"
        );
    }
    assert_eq!(e.steps[0].rule, "cluster-membership", "{e:?}");
    assert!(e.steps.iter().all(|s| !s.reason.is_empty()), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_lists_every_recipient_with_the_deciding_rule() {
    let fed = federation().await;
    let mut draft = bluewire_tests::free_text("draft");
    draft.level = pb::Level::Operational as i32;
    draft.kind = pb::Kind::IncidentReport as i32;
    draft.body = Some(pb::publish_request::Body::Incident(pb::IncidentReport {
        title: "operational incident".into(),
        ..Default::default()
    }));
    // Wait until csirt-be has verified its peers' certificates (levels known).
    assert_eventually!(
        explain_draft(&fed, &draft)
            .await
            .iter()
            .any(|e| e.org == FR && e.rule == "levels"),
        "csirt-be never learned csirt-fr's certified levels: {:?}",
        explain_draft(&fed, &draft).await
    );
    let by_org: BTreeMap<String, pb::RecipientExplanation> = explain_draft(&fed, &draft)
        .await
        .into_iter()
        .map(|e| (e.org.clone(), e))
        .collect();
    assert_eq!(
        by_org.keys().cloned().collect::<Vec<_>>(),
        vec![CRISIS.to_string(), FR.to_string()]
    );
    let fr = &by_org[FR];
    assert!(
        !fr.allowed && fr.rule == "levels" && fr.reason.contains("operational"),
        "{fr:?}"
    );
    assert!(by_org[CRISIS].allowed, "{:?}", by_org[CRISIS]);
    by_org.values().for_each(check_explanation);

    // One recipient only.
    let one = fed
        .admin(BE)
        .explain(pb::ExplainRequest {
            draft: Some(draft.clone()),
            to: CRISIS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .recipients;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].org, CRISIS);

    // A draft the author may not publish at all is refused with the reason.
    let mut bad = draft.clone();
    bad.level = pb::Level::Political as i32;
    let err = fed
        .admin(BE)
        .explain(pb::ExplainRequest {
            draft: Some(bad),
            ..Default::default()
        })
        .await
        .expect_err("a political incident is not a valid draft");
    assert_eq!(err.code(), Code::InvalidArgument);

    // A stored message, at its origin (egress) and at a receiver (ingress).
    let published = fed
        .client(BE, "analyst")
        .client()
        .publish(draft.clone())
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.queued_for, vec![CRISIS.to_string()]);
    assert_eq!(published.refused.len(), 1);
    assert_eq!(published.refused[0].rule, "levels");
    let stored = fed
        .admin(BE)
        .explain(pb::ExplainRequest {
            message_id: published.id.clone(),
            ..Default::default()
        })
        .await
        .expect("Explain a stored message")
        .into_inner()
        .recipients;
    assert_eq!(stored.len(), 2, "{stored:?}");
    stored.iter().for_each(check_explanation);
    for e in &stored {
        assert_eq!(e.allowed, e.org == CRISIS, "{e:?}");
    }
    assert_eventually!(
        fed.has_message(CRISIS, &published.id).await,
        "the operational incident never reached crisis-fr"
    );
    let at_receiver = fed
        .admin(CRISIS)
        .explain(pb::ExplainRequest {
            message_id: published.id.clone(),
            ..Default::default()
        })
        .await
        .expect("Explain at the receiver")
        .into_inner()
        .recipients;
    assert_eq!(at_receiver.len(), 1, "{at_receiver:?}");
    assert_eq!(at_receiver[0].org, CRISIS);
    assert!(at_receiver[0].allowed, "{at_receiver:?}");
    check_explanation(&at_receiver[0]);
    // Unknown message id.
    let err = fed
        .admin(BE)
        .explain(pb::ExplainRequest {
            message_id: bluewire_node::envelope::new_id(),
            ..Default::default()
        })
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);

    // Egress decisions are counted.
    let m = metrics(&fed, BE).await;
    assert!(decisions(&m, "egress", "levels", "deny") >= 1, "{m}");
    assert!(decisions(&m, "egress", "allowed", "allow") >= 1, "{m}");
}

/// A receiver's local Cedar policy narrows what the built-in rules allow,
/// and refuses a peer that sends it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receivers_local_policy_refuses_what_builtin_rules_allow() {
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    let info = fed.info(FR).clone();
    let policy = info.dir.join("policy.cedar");
    std::fs::write(
        &policy,
        r#"@id("no-amber-strict-from-be")
@reason("we take AMBER+STRICT from csirt-be only through the liaison desk")
forbid (principal == Org::"csirt-be", action == Action::"deliver", resource)
when { context.direction == "ingress" && context.tlp == "AMBER+STRICT" };
"#,
    )
    .unwrap();
    let toml = std::fs::read_to_string(&info.config_path).unwrap();
    assert!(
        toml.contains("# file = \"policy.cedar\""),
        "node.toml template has no commented `[policy] file` line:\n{toml}"
    );
    std::fs::write(
        &info.config_path,
        toml.replacen(
            "# file = \"policy.cedar\"",
            &format!("file = {:?}", policy.display().to_string()),
            1,
        ),
    )
    .unwrap();
    // Stopped straight away, with csirt-fr's delivery worker possibly
    // mid-handshake: `Node::shutdown` returns only once the store is released.
    fed.stop(FR).await;
    fed.restart(FR).await;

    let key = fed.signing_key(BE);
    let mut c = content(BE, "amber strict");
    c.marking.as_mut().unwrap().tlp = pb::Tlp::AmberStrict as i32;
    let r = deliver_as(&fed, BE, FR, seal(&key, &c)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(
        r.reason.contains("local-policy") && r.reason.contains("no-amber-strict-from-be"),
        "{r:?}"
    );
    assert!(!is_stored(&fed, FR, &c.id).await);
    // Other markings pass.
    let ok = content(BE, "green");
    let r = deliver_as(&fed, BE, FR, seal(&key, &ok)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Accepted as i32, "{r:?}");
    let m = metrics(&fed, FR).await;
    assert!(decisions(&m, "ingress", "local-policy", "deny") >= 1, "{m}");
    // The policy in force is in the audit trail.
    let audit = audit_export(&fed, FR).await;
    assert!(
        audit
            .iter()
            .any(|r| r.event == "policy" && r.detail.contains("sha256")),
        "{audit:?}"
    );
}
