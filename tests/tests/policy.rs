//! Routing policy end to end, through the Federation, Client and Admin APIs:
//!
//! - a misbehaving peer that ignores egress policy (it holds csirt-be's node
//!   certificate and signing key and calls Federation.Deliver itself) is
//!   stopped at ingress, with the deciding rule in the reason, nothing stored,
//!   every refusal in Admin.Rejections, the audit trail and the metrics;
//! - the audit trail verifies after traffic, and an edited or deleted record
//!   is found (Admin.AuditVerify names the first bad seq; an export verifies
//!   offline and an edited exported record does not);
//! - Admin.Explain, for a stored message and for a draft, gives every
//!   recipient's deciding rule and the rules evaluated;
//! - a receiver's local Cedar policy refuses what the built-in rules allow.

use std::collections::BTreeMap;

use bluewire_node::envelope::seal;
use bluewire_node::pki::Level;
use bluewire_tests::{
    OrgSpec, TestFederation, assert_eventually, audit_export, backlog, content, item_id, pb,
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

/// Deliver one envelope to `to` with `from`'s node certificate.
async fn deliver(
    fed: &TestFederation,
    from: &str,
    to: &str,
    env: pb::Envelope,
) -> pb::DeliveryResult {
    let mut results = fed
        .node_conn(from, to)
        .federation()
        .deliver(pb::DeliverRequest {
            envelopes: vec![env],
        })
        .await
        .expect("Deliver answers with per-envelope results")
        .into_inner()
        .results;
    assert_eq!(results.len(), 1);
    results.remove(0)
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

async fn audit_verify(fed: &TestFederation, org: &str) -> pb::AuditVerifyResponse {
    fed.admin(org)
        .audit_verify(pb::AuditVerifyRequest {})
        .await
        .unwrap_or_else(|e| panic!("Admin.AuditVerify at {org}: {e}"))
        .into_inner()
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
        let r = deliver(&fed, BE, to, seal(&key, c)).await;
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
        let r = deliver(&fed, BE, to, seal(&key, c)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_trail_verifies_and_tampering_is_detected() {
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(fed.publish(BE, &format!("audited {i}")).await.id);
    }
    // Wait for the trail to settle: every message delivered and acknowledged.
    assert_eventually!(
        {
            let recs = audit_export(&fed, BE).await;
            ids.iter().all(|id| {
                recs.iter()
                    .any(|r| r.event == "delivered" && &r.msg_id == id)
            })
        },
        "csirt-be never audited the three deliveries"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let v = audit_verify(&fed, BE).await;
    let records = audit_export(&fed, BE).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, records.len() as u64, "{v:?}");
    assert!(
        v.records >= 6,
        "published + delivered for 3 messages: {v:?}"
    );
    assert_eq!(v.head_hash, records.last().unwrap().hash);
    for id in &ids {
        assert!(
            records
                .iter()
                .any(|r| r.event == "published" && &r.msg_id == id)
        );
    }

    // Offline verification of the export, and of an edited copy.
    bluewire_node::audit::verify_records(&records).expect("the export verifies");
    let mid = records.len() / 2;
    let mut edited = records.clone();
    edited[mid].detail.push_str(" (edited)");
    let (seq, why) = bluewire_node::audit::verify_records(&edited)
        .expect_err("an edited export must not verify");
    assert_eq!(seq, edited[mid].seq, "{why}");
    let mut cut = records.clone();
    cut.remove(mid);
    let (seq, why) = bluewire_node::audit::verify_records(&cut).expect_err("a gap must not verify");
    assert_eq!(seq, records[mid + 1].seq, "{why}");
    // A round trip through the JSON export format keeps it verifiable.
    let json: Vec<_> = records
        .iter()
        .map(|r| {
            bluewire_node::audit::record_from_json(&bluewire_node::audit::record_to_json(r))
                .unwrap()
        })
        .collect();
    bluewire_node::audit::verify_records(&json).expect("JSON round trip verifies");

    // Edit a stored record in place (its hash left as it was).
    let store = fed.node(BE).store.clone();
    let rows = store.audit_records(0, 10_000).expect("read audit records");
    let victim = rows[rows.len() / 2].clone();
    let original = victim.encode();
    let mut forged = victim.clone();
    forged.detail = "nothing to see here".into();
    store
        .tamper_audit_for_tests(victim.seq, Some(forged.encode()))
        .await
        .expect("tamper");
    let v = audit_verify(&fed, BE).await;
    assert!(!v.ok, "edited record not detected: {v:?}");
    assert_eq!(v.first_bad_seq, victim.seq, "{v:?}");
    assert!(v.problem.contains("edited"), "{v:?}");
    let exported = audit_export(&fed, BE).await;
    let (seq, _) =
        bluewire_node::audit::verify_records(&exported).expect_err("export of an edited log");
    assert_eq!(seq, victim.seq);

    // Put it back: the chain verifies again.
    store
        .tamper_audit_for_tests(victim.seq, Some(original))
        .await
        .expect("restore");
    let v = audit_verify(&fed, BE).await;
    assert!(v.ok, "{v:?}");

    // Delete a record.
    let gone = rows[1].seq;
    store
        .tamper_audit_for_tests(gone, None)
        .await
        .expect("delete");
    let v = audit_verify(&fed, BE).await;
    assert!(!v.ok, "deleted record not detected: {v:?}");
    assert_eq!(v.first_bad_seq, gone, "{v:?}");
    assert!(
        v.problem.contains("missing") || v.problem.contains("removed"),
        "{v:?}"
    );
    assert_eq!(v.records, rows.len() as u64 - 1, "{v:?}");

    // Delete the newest record (truncation).
    let store_fr = fed.node(FR).store.clone();
    let rows_fr = store_fr.audit_records(0, 10_000).unwrap();
    let last = rows_fr.last().expect("csirt-fr audited something").seq;
    assert!(audit_verify(&fed, FR).await.ok);
    store_fr.tamper_audit_for_tests(last, None).await.unwrap();
    let v = audit_verify(&fed, FR).await;
    assert!(
        !v.ok && v.first_bad_seq == last,
        "truncation not detected: {v:?}"
    );
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
    let r = deliver(&fed, BE, FR, seal(&key, &c)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(
        r.reason.contains("local-policy") && r.reason.contains("no-amber-strict-from-be"),
        "{r:?}"
    );
    assert!(!is_stored(&fed, FR, &c.id).await);
    // Other markings pass.
    let ok = content(BE, "green");
    let r = deliver(&fed, BE, FR, seal(&key, &ok)).await;
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

/// The Prometheus endpoint serves the per-rule counters over plain HTTP on
/// loopback, and a non-loopback metrics address is refused by the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_endpoint_serves_routing_counters_on_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    let info = fed.info(BE).clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = std::fs::read_to_string(&info.config_path).unwrap();
    assert!(toml.contains("# listen = \"127.0.0.1:9464\""), "{toml}");
    let bad = toml.replacen(
        "# listen = \"127.0.0.1:9464\"",
        "listen = \"0.0.0.0:9464\"",
        1,
    );
    let e = bluewire_node::config::NodeConfig::parse(&bad, &info.dir, &info.config_path)
        .expect_err("a non-loopback metrics address is refused");
    assert!(e.to_string().contains("loopback"), "{e}");
    std::fs::write(
        &info.config_path,
        toml.replacen(
            "# listen = \"127.0.0.1:9464\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        ),
    )
    .unwrap();
    let warm = fed.publish(BE, "warm-up").await;
    assert_eventually!(fed.has_message(FR, &warm.id).await, "warm-up never arrived");
    fed.stop(BE).await;
    fed.restart(BE).await;
    let m = fed.publish(BE, "counted").await;
    assert_eventually!(fed.has_message(FR, &m.id).await, "message never arrived");

    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics endpoint listening");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(
        body.contains("bluewire_routing_decisions_total{direction=\"egress\",outcome=\"allow\",rule=\"allowed\"}"),
        "{body}"
    );
    assert!(body.contains("bluewire_messages_published_total"), "{body}");
    // The store's write transactions since this start: at least the published message's.
    let commits: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("bluewire_store_commits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no store commit counter in:\n{body}"));
    assert!(commits >= 1, "{body}");
    assert!(
        body.contains("# TYPE bluewire_store_commits_total counter"),
        "{body}"
    );
}
