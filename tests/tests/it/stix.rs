//! STIX 2.1 threat intelligence end to end: a bundle imported at one node reaches the others
//! signed and once, objects refused are reported with reasons and the rest published,
//! re-importing publishes nothing twice, the envelope's TLP is authoritative at every receiver
//! (a member crafting a bundle marked looser than its envelope is refused), and what a node
//! exports passes the OASIS validator in strict mode and parses with the stix2 library. The
//! pattern parser agrees with OASIS stix2-patterns on the corpus in tests/stix/patterns.txt.

use bluewire_node::stix;
use bluewire_tests::rogue::Rogue;
use bluewire_tests::{
    OrgSpec, TestFederation, assert_eventually, backlog, item_content, pb, python,
};
use serde_json::{Value, json};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
const EU: &str = "cert-eu";

fn specs() -> Vec<OrgSpec> {
    bluewire_tests::be_fr_eu()
}

const T: &str = "2026-11-30T08:00:00.000Z";

fn indicator(uuid: &str, pattern: &str) -> Value {
    json!({
        "type": "indicator", "spec_version": "2.1", "id": format!("indicator--{uuid}"),
        "created": T, "modified": T, "name": format!("indicator {uuid}"),
        "description": "seen in the hospital intrusions", "indicator_types": ["malicious-activity"],
        "pattern": pattern, "pattern_type": "stix", "valid_from": T,
    })
}

/// Four good objects (an indicator, malware, the relationship between them, an IPv4
/// observable), one with a broken pattern and one marked TLP:CLEAR.
fn feed_bundle() -> Value {
    let mut loose = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000006",
        "[domain-name:value = 'evil.example']",
    );
    loose["object_marking_refs"] = json!([stix::TLP_CLEAR]);
    json!({
        "type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa",
        "objects": [
            indicator("0c4d5e6f-1a2b-4c3d-8e9f-000000000001", "[ipv4-addr:value = '198.51.100.7']"),
            {
                "type": "malware", "spec_version": "2.1", "id": "malware--0c4d5e6f-1a2b-4c3d-8e9f-000000000002",
                "created": T, "modified": T, "name": "LockBit", "description": "ransomware",
                "is_family": true, "malware_types": ["ransomware"],
            },
            {
                "type": "relationship", "spec_version": "2.1",
                "id": "relationship--0c4d5e6f-1a2b-4c3d-8e9f-000000000003", "created": T, "modified": T,
                "relationship_type": "indicates", "description": "the C2 of this family",
                "source_ref": "indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000001",
                "target_ref": "malware--0c4d5e6f-1a2b-4c3d-8e9f-000000000002",
            },
            // A real UUIDv5 id: uuid5(STIX namespace, {"value":"198.51.100.7"}).
            {"type": "ipv4-addr", "spec_version": "2.1", "id": "ipv4-addr--12592121-be4c-5a93-a813-5a5af16e50db", "value": "198.51.100.7"},
            indicator("0c4d5e6f-1a2b-4c3d-8e9f-000000000005", "[ipv4-addr:value = '1.2.3.4'"),
            loose,
        ],
    })
}

fn import_request(bundle: &Value, tlp: pb::Tlp) -> pb::ImportStixRequest {
    pb::ImportStixRequest {
        bundle: bundle.to_string(),
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn import(
    fed: &TestFederation,
    org: &str,
    r: pb::ImportStixRequest,
) -> pb::ImportStixResponse {
    fed.client(org, "analyst")
        .client()
        .import_stix(r)
        .await
        .unwrap_or_else(|e| panic!("ImportStix at {org}: {e}"))
        .into_inner()
}

fn stix_items(items: &[pb::FeedItem]) -> Vec<pb::Content> {
    items
        .iter()
        .map(item_content)
        .filter(|c| c.kind == pb::Kind::StixBundle as i32)
        .collect()
}

fn bundle_of(c: &pb::Content) -> Value {
    match &c.body {
        Some(pb::content::Body::Stix(b)) => {
            serde_json::from_str(&b.json).expect("stored bundle is JSON")
        }
        other => panic!("not a STIX body: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_bundle_reaches_members_once_and_exports_strictly_valid() {
    let fed = TestFederation::new(&specs()).await;
    let first = import(&fed, FR, import_request(&feed_bundle(), pb::Tlp::Green)).await;
    assert_eq!(first.objects_published, 4, "{first:?}");
    assert_eq!(first.objects_skipped, 0);
    let reasons: Vec<(u32, &str)> = first
        .refused
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == 4 && reasons[0].1.contains("pattern"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == 5
            && reasons[1].1.contains("TLP:CLEAR")
            && reasons[1].1.contains("TLP:GREEN"),
        "{reasons:?}"
    );
    assert_eq!(first.published.len(), 1, "{first:?}");
    let published = first.published[0].clone();
    for org in [BE, EU] {
        assert_eventually!(
            stix_items(&fed.feed(org, Some(FR)).await).len() == 1,
            "the bundle never reached {org}: {:?}",
            fed.rejections(org).await
        );
    }
    // What arrived is signed by the origin, and every object carries the envelope's marking.
    let at_be = stix_items(&fed.feed(BE, Some(FR)).await);
    assert_eq!(at_be[0].id, published.id);
    let objects = bundle_of(&at_be[0])["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(objects.len(), 4);
    for o in &objects {
        assert_eq!(o["object_marking_refs"], json!([stix::TLP_GREEN]), "{o}");
    }
    // Re-importing publishes nothing twice.
    let again = import(&fed, FR, import_request(&feed_bundle(), pb::Tlp::Green)).await;
    assert_eq!(
        (again.objects_published, again.objects_skipped),
        (0, 4),
        "{again:?}"
    );
    assert!(again.published.is_empty());
    assert_eq!(again.refused.len(), 2);

    // An object marked stricter than the request travels in a message of its own marking (so
    // routing follows it); a RED one needs named recipients.
    let mut amber = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000021",
        "[ipv4-addr:value = '192.0.2.21']",
    );
    amber["object_marking_refs"] = json!([stix::TLP_AMBER]);
    let mut red = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000022",
        "[ipv4-addr:value = '192.0.2.22']",
    );
    red["object_marking_refs"] = json!([stix::TLP_RED]);
    let plain = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000023",
        "[ipv4-addr:value = '192.0.2.23']",
    );
    let mixed = json!({"type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000ab", "objects": [amber, red, plain]});
    let split = import(&fed, FR, import_request(&mixed, pb::Tlp::Green)).await;
    assert_eq!(split.objects_published, 2, "{split:?}");
    assert_eq!(split.published.len(), 2, "one message per TLP: {split:?}");
    assert!(
        split.refused.len() == 1 && split.refused[0].reason.contains("named recipients"),
        "{split:?}"
    );
    for p in &split.published {
        assert_eventually!(
            fed.has_message(BE, &p.id).await,
            "{} never reached {BE}",
            p.id
        );
    }
    let at_be = stix_items(&fed.feed(BE, Some(FR)).await);
    let amber_msg = at_be
        .iter()
        .find(|c| bundle_of(c).to_string().contains("000000000021"))
        .expect("the AMBER object's message");
    assert_eq!(
        amber_msg.marking.as_ref().map(|m| m.tlp),
        Some(pb::Tlp::Amber as i32)
    );
    assert!(
        !bundle_of(amber_msg).to_string().contains("000000000023"),
        "the GREEN object travels apart"
    );

    // BE does not republish as its own what FR shared with it under AMBER.
    let copy = json!({"type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000ac",
                      "objects": [bundle_of(amber_msg)["objects"][0].clone()]});
    let stolen = import(&fed, BE, import_request(&copy, pb::Tlp::Amber)).await;
    assert!(stolen.published.is_empty(), "{stolen:?}");
    assert!(
        stolen.refused[0]
            .reason
            .contains("csirt-fr shared this object with you"),
        "{stolen:?}"
    );

    // An incident report beside it; then each node's export passes the OASIS validator.
    let incident = fed
        .client(BE, "analyst")
        .client()
        .publish(pb::PublishRequest {
            kind: pb::Kind::IncidentReport as i32,
            level: pb::Level::Technical as i32,
            marking: Some(pb::Marking {
                tlp: pb::Tlp::Green as i32,
                ..Default::default()
            }),
            body: Some(pb::publish_request::Body::Incident(pb::IncidentReport {
                title: "Ransomware at two hospitals".into(),
                description: "LockBit affiliate; C2 198.51.100.7".into(),
                severity: pb::Severity::High as i32,
                status: "open".into(),
                taxonomy_class: "malicious-code".into(),
                taxonomy_type: "infected-system".into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .expect("publish incident")
        .into_inner();
    assert_eventually!(
        fed.has_message(EU, &incident.id).await,
        "the incident never reached {EU}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut incident_ids = Vec::new();
    for org in [BE, EU] {
        let items = backlog(&fed.client(org, "analyst"), None).await;
        let messages: Vec<(pb::Content, pb::Tlp)> = items
            .iter()
            .map(|i| {
                let c = item_content(i);
                let tlp =
                    pb::Tlp::try_from(i.effective_marking.as_ref().map(|m| m.tlp).unwrap_or(0))
                        .unwrap_or_default();
                (c, tlp)
            })
            .collect();
        let (bundle, n) = stix::export::export_bundle(&messages);
        assert!(n >= 5, "{org} exported {n} objects");
        let file = dir.path().join(format!("{org}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&bundle).expect("json")).expect("write");
        if let Err(e) = python::validate_stix_strict(&file) {
            panic!("{org}'s export is not valid STIX 2.1 (strict):\n{e}\n{bundle:#}");
        }
        let objects = bundle["objects"].as_array().expect("objects");
        let incidents: Vec<&Value> = objects.iter().filter(|o| o["type"] == "incident").collect();
        assert_eq!(incidents.len(), 1, "{org}: {incidents:?}");
        let ext = &incidents[0]["extensions"][stix::export::INCIDENT_CORE];
        assert_eq!(ext["investigation_status"], "open");
        assert_eq!(
            incidents[0]["created_by_ref"],
            stix::export::identity_id(BE)
        );
        incident_ids.push(incidents[0]["id"].clone());
        assert!(
            objects
                .iter()
                .any(|o| o["id"] == "indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000001"),
            "{org}: the imported indicator is missing"
        );
    }
    // Deterministic: the same message is the same STIX object on every node.
    assert_eq!(incident_ids[0], incident_ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_crafting_a_bundle_looser_than_its_envelope_is_refused() {
    let fed = TestFederation::new(&specs()).await;
    let rogue = Rogue::new(&fed, FR);
    let crafted = |bundle: Value, tlp: pb::Tlp| {
        let mut c = rogue.content("crafted bundle");
        c.kind = pb::Kind::StixBundle as i32;
        c.marking = Some(pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        });
        c.body = Some(pb::content::Body::Stix(pb::StixBundle {
            json: bundle.to_string(),
        }));
        c
    };
    let bundle = |objects: Vec<Value>| json!({"type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000bb", "objects": objects});
    let mut loose = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000011",
        "[ipv4-addr:value = '203.0.113.9']",
    );
    loose["object_marking_refs"] = json!([stix::TLP_GREEN]);
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![loose.clone()]), pb::Tlp::Amber),
            "content",
            "TLP:GREEN",
        )
        .await;
    let mut granular = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000012",
        "[ipv4-addr:value = '203.0.113.9']",
    );
    granular["granular_markings"] =
        json!([{"marking_ref": stix::TLP_CLEAR, "selectors": ["pattern"]}]);
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![granular]), pb::Tlp::Green),
            "content",
            "granular",
        )
        .await;
    let broken = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000013",
        "[ipv4-addr:value = '203.0.113.9'",
    );
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![broken]), pb::Tlp::Green),
            "content",
            "pattern",
        )
        .await;
    let redefined = json!({
        "type": "marking-definition", "spec_version": "2.1", "id": stix::TLP_RED,
        "created": T, "name": "TLP:CLEAR", "definition_type": "statement",
        "definition": {"statement": "share freely"},
    });
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![redefined.clone()]), pb::Tlp::Green),
            "content",
            "redefines",
        )
        .await;
    rogue
        .expect_refused(
            BE,
            crafted(
                json!({"type": "bundle", "id": "nope", "objects": [loose]}),
                pb::Tlp::Green,
            ),
            "content",
            "bundle id",
        )
        .await;
    // A member speaks only for itself: another member's Bluewire identity, provenance, or an
    // unmarked object (the origin marks every object before signing) are refused.
    let mut spoof = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000015",
        "[ipv4-addr:value = '203.0.113.9']",
    );
    spoof["created_by_ref"] = json!(stix::export::identity_id(BE));
    spoof["object_marking_refs"] = json!([stix::TLP_GREEN]);
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![spoof]), pb::Tlp::Green),
            "content",
            "speaks only for itself",
        )
        .await;
    let mut hijack = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000016",
        "[ipv4-addr:value = '203.0.113.9']",
    );
    hijack["id"] = json!(stix::export::stix_id(
        "indicator",
        EU,
        "01a00000-0000-7000-8000-000000000001"
    ));
    hijack["object_marking_refs"] = json!([stix::TLP_GREEN]);
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![hijack]), pb::Tlp::Green),
            "content",
            "cannot replace another's",
        )
        .await;
    let unmarked = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000017",
        "[ipv4-addr:value = '203.0.113.9']",
    );
    rogue
        .expect_refused(
            BE,
            crafted(bundle(vec![unmarked]), pb::Tlp::Green),
            "content",
            "no TLP marking",
        )
        .await;
    // The same bundle marked no looser than its envelope is accepted.
    let mut ok = indicator(
        "0c4d5e6f-1a2b-4c3d-8e9f-000000000014",
        "[ipv4-addr:value = '203.0.113.9']",
    );
    ok["object_marking_refs"] = json!([stix::TLP_GREEN]);
    rogue
        .expect_accepted(BE, crafted(bundle(vec![ok]), pb::Tlp::Green))
        .await;
}

#[test]
fn pattern_parser_agrees_with_oasis_stix2_patterns() {
    let corpus = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/stix/patterns.txt"))
        .expect("tests/stix/patterns.txt");
    let lines: Vec<(bool, &str)> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(' ') {
            Some(("ok", p)) => (true, p),
            Some(("bad", p)) => (false, p),
            _ => panic!("corpus line {l:?} does not start with `ok ` or `bad `"),
        })
        .collect();
    assert!(lines.len() >= 40, "the corpus has {} patterns", lines.len());
    let ours: Vec<bool> = lines
        .iter()
        .map(|(_, p)| stix::pattern::parse(p).is_ok())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("patterns");
    std::fs::write(
        &file,
        lines.iter().map(|(_, p)| *p).collect::<Vec<_>>().join("\n"),
    )
    .expect("write");
    let out = python::script(
        r#"
import sys
from stix2patterns.validator import validate
for line in open(sys.argv[1]).read().split("\n"):
    print("ok" if validate(line, stix_version="2.1", print_errs=False) else "bad")
"#,
        &[file.to_str().expect("utf-8")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<bool> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l == "ok")
        .collect();
    assert_eq!(theirs.len(), lines.len());
    let mut problems = Vec::new();
    for (i, (want, p)) in lines.iter().enumerate() {
        if ours[i] != *want || theirs[i] != *want {
            problems.push(format!(
                "{p:?}: corpus says {want}, ours {}, stix2-patterns {}",
                ours[i], theirs[i]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "disagreements:\n{}",
        problems.join("\n")
    );
}
