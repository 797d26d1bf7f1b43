//! The STIX checks, the TLP rule and the export, pinned in memory.

use super::*;
use bluewire_proto::v1::{self as pb, Content, content::Body};
use serde_json::json;

const T: &str = "2026-11-30T08:00:00.000Z";
const ORIGIN: &str = "csirt-fr";

/// The origin's checks (objects may still be unmarked: the origin marks them).
fn check(json: &str, tlp: Tlp) -> Result<Vec<Version>, String> {
    check_value(&parse(json)?, tlp, ORIGIN, false)
}
const U: &str = "0c4d5e6f-1a2b-4c3d-8e9f-000000000001";

fn indicator() -> Value {
    json!({
        "type": "indicator", "spec_version": "2.1", "id": format!("indicator--{U}"),
        "created": T, "modified": T, "name": "C2", "description": "d",
        "pattern": "[ipv4-addr:value = '198.51.100.7']", "pattern_type": "stix", "valid_from": T,
    })
}

fn bundle(objects: Vec<Value>) -> String {
    json!({"type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa", "objects": objects})
        .to_string()
}

/// The refusal for one object under a GREEN envelope.
fn refusal(o: Value) -> String {
    check(&bundle(vec![o]), Tlp::Green).expect_err("refused")
}

fn with(mut o: Value, key: &str, v: Value) -> Value {
    o[key] = v;
    o
}

fn without(mut o: Value, key: &str) -> Value {
    o.as_object_mut().expect("object").remove(key);
    o
}

#[test]
fn a_valid_bundle_lists_its_object_versions() {
    let sco =
        json!({"type": "ipv4-addr", "id": format!("ipv4-addr--{U}"), "value": "198.51.100.7"});
    let v = check(&bundle(vec![indicator(), sco]), Tlp::Green).expect("valid");
    assert_eq!(
        v,
        vec![
            Version {
                id: format!("indicator--{U}"),
                ty: "indicator".into(),
                version: T.into(),
                index: 0
            },
            Version {
                id: format!("ipv4-addr--{U}"),
                ty: "ipv4-addr".into(),
                version: String::new(),
                index: 1
            },
        ]
    );
}

#[test]
fn bundle_level_refusals_say_what_is_wrong() {
    let cases = [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        (
            r#"{"type":"report","id":"bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa","objects":[{}]}"#,
            "not \"bundle\"",
        ),
        (
            r#"{"type":"bundle","id":"bundle--x","objects":[{}]}"#,
            "bundle id",
        ),
        (
            r#"{"type":"bundle","id":"bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa","objects":[]}"#,
            "no objects",
        ),
        (
            r#"{"type":"bundle","id":"bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa","spec_version":"2.0","objects":[{}]}"#,
            "STIX 2.0",
        ),
    ];
    for (text, needle) in cases {
        let e = check(text, Tlp::Green).expect_err(text);
        assert!(e.contains(needle), "{text}: {e}");
    }
    let many = bundle(vec![json!({}); MAX_OBJECTS + 1]);
    assert!(
        check(&many, Tlp::Green)
            .expect_err("too many")
            .contains("5000-object limit")
    );
    let twice = bundle(vec![indicator(), indicator()]);
    assert!(
        check(&twice, Tlp::Green)
            .expect_err("dup")
            .contains("twice")
    );
    // The same id at two versions is two objects.
    let later = with(indicator(), "modified", json!("2026-12-01T00:00:00Z"));
    assert!(check(&bundle(vec![indicator(), later]), Tlp::Green).is_ok());
    assert!(
        check(&bundle(vec![json!(1)]), Tlp::Green)
            .expect_err("n")
            .contains("not a JSON object")
    );
}

#[test]
fn object_refusals_name_the_property() {
    let i = indicator();
    let cases: Vec<(Value, &str)> = vec![
        (without(i.clone(), "type"), "\"type\" is missing"),
        (with(i.clone(), "type", json!(3)), "not a string"),
        (
            with(i.clone(), "type", json!("Indicator")),
            "not a STIX type name",
        ),
        (with(i.clone(), "type", json!("ab")), "not a STIX type name"),
        (
            with(i.clone(), "id", json!(format!("malware--{U}"))),
            "does not start with",
        ),
        (with(i.clone(), "id", json!("indicator--1234")), "RFC 4122"),
        (
            with(i.clone(), "id", json!(format!("indicator{U}"))),
            "TYPE--UUID",
        ),
        (
            without(i.clone(), "spec_version"),
            "spec_version is missing",
        ),
        (
            with(i.clone(), "spec_version", json!("2.0")),
            "only STIX 2.1",
        ),
        (without(i.clone(), "created"), "\"created\" is missing"),
        (without(i.clone(), "modified"), "\"modified\" is missing"),
        (
            with(i.clone(), "created", json!("2026-11-30 08:00:00")),
            "not a STIX timestamp",
        ),
        (
            with(i.clone(), "created", json!("2026-11-30T08:00:00+01:00")),
            "not a STIX timestamp",
        ),
        (
            with(i.clone(), "modified", json!("2026-11-29T08:00:00Z")),
            "earlier than created",
        ),
        (
            without(i.clone(), "pattern"),
            "needs the property \"pattern\"",
        ),
        (
            with(i.clone(), "pattern", json!("ipv4-addr:value = '1'")),
            "pattern",
        ),
        (
            with(i.clone(), "pattern_type", json!("")),
            "pattern_type is empty",
        ),
        (with(i.clone(), "valid_until", json!(T)), "valid_until"),
        (
            with(i.clone(), "created_by_ref", json!(format!("malware--{U}"))),
            "created_by_ref",
        ),
        (with(i.clone(), "object_refs", json!([])), "non-empty list"),
        (
            with(i.clone(), "object_refs", json!([3])),
            "not an identifier",
        ),
        (
            with(i.clone(), "sample_ref", json!(3)),
            "sample_ref is not an identifier",
        ),
        (
            with(
                i.clone(),
                "granular_markings",
                json!([{"marking_ref": TLP_RED}]),
            ),
            "no selectors",
        ),
        (
            with(
                i.clone(),
                "granular_markings",
                json!([{"selectors": ["name"]}]),
            ),
            "marking_ref or a lang",
        ),
        (
            with(
                with(i.clone(), "type", json!("weird-thing")),
                "id",
                json!(format!("weird-thing--{U}")),
            ),
            "not a STIX 2.1 object type",
        ),
        (
            with(
                i.clone(),
                "pattern",
                json!("x".repeat(MAX_PATTERN_BYTES + 1)),
            ),
            "byte limit",
        ),
    ];
    for (o, needle) in cases {
        let e = refusal(o.clone());
        assert!(e.contains(needle), "{o}: {e:?} lacks {needle:?}");
        assert!(e.starts_with("object 0 ("), "{e}");
    }
}

#[test]
fn type_specific_rules() {
    let sdo = |ty: &str, props: Value| {
        let mut o = json!({"type": ty, "spec_version": "2.1", "id": format!("{ty}--{U}"), "created": T, "modified": T});
        for (k, v) in props.as_object().expect("props") {
            o[k] = v.clone();
        }
        o
    };
    let ok = [
        sdo("malware", json!({"is_family": false})),
        sdo("malware", json!({"is_family": true, "name": "x"})),
        sdo(
            "opinion",
            json!({"opinion": "agree", "object_refs": [format!("malware--{U}")]}),
        ),
        sdo(
            "report",
            json!({"name": "r", "published": T, "object_refs": [format!("malware--{U}")]}),
        ),
        sdo(
            "sighting",
            json!({"sighting_of_ref": format!("indicator--{U}"), "count": 0}),
        ),
        sdo(
            "observed-data",
            json!({"first_observed": T, "last_observed": T, "number_observed": 1, "object_refs": [format!("ipv4-addr--{U}")]}),
        ),
        sdo("location", json!({"country": "BE"})),
        sdo("x-acme-thing", json!({})),
        json!({"type": "marking-definition", "spec_version": "2.1", "id": format!("marking-definition--{U}"), "created": T, "definition_type": "statement", "definition": {"statement": "c"}}),
        json!({"type": "acme-widget", "spec_version": "2.1", "id": format!("acme-widget--{U}"), "created": T, "modified": T, "extensions": {format!("extension-definition--{U}"): {"extension_type": "new-sdo"}}}),
        json!({"type": "x-acme-obs", "id": format!("x-acme-obs--{U}")}),
        sdo(
            "indicator",
            json!({"name": "y", "pattern": "alert tcp any any", "pattern_type": "snort", "valid_from": T}),
        ),
    ];
    for o in ok {
        assert!(
            check(&bundle(vec![o.clone()]), Tlp::Green).is_ok(),
            "{o}: {:?}",
            check(&bundle(vec![o.clone()]), Tlp::Green)
        );
    }
    let bad = [
        (sdo("malware", json!({"is_family": "yes"})), "true or false"),
        (sdo("malware", json!({"is_family": true})), "needs a name"),
        (
            sdo(
                "opinion",
                json!({"opinion": "meh", "object_refs": [format!("malware--{U}")]}),
            ),
            "not one of",
        ),
        (
            sdo(
                "report",
                json!({"name": "r", "published": "yesterday", "object_refs": [format!("malware--{U}")]}),
            ),
            "published",
        ),
        (
            sdo(
                "sighting",
                json!({"sighting_of_ref": format!("ipv4-addr--{U}")}),
            ),
            "a sighting is of a domain object",
        ),
        (
            sdo(
                "sighting",
                json!({"sighting_of_ref": format!("indicator--{U}"), "count": 1_000_000_000u64}),
            ),
            "count",
        ),
        (
            sdo(
                "observed-data",
                json!({"first_observed": T, "last_observed": "2026-11-29T00:00:00Z", "number_observed": 1, "object_refs": [format!("ipv4-addr--{U}")]}),
            ),
            "earlier than first_observed",
        ),
        (
            sdo(
                "observed-data",
                json!({"first_observed": T, "last_observed": T, "number_observed": 0, "object_refs": [format!("ipv4-addr--{U}")]}),
            ),
            "number_observed",
        ),
        (
            sdo("location", json!({})),
            "one of the properties region, country, latitude",
        ),
        (
            sdo(
                "relationship",
                json!({"relationship_type": "", "source_ref": format!("indicator--{U}"), "target_ref": format!("malware--{U}")}),
            ),
            "relationship_type is empty",
        ),
        (
            json!({"type": "marking-definition", "spec_version": "2.1", "id": format!("marking-definition--{U}"), "created": T}),
            "definition_type",
        ),
        (
            json!({"type": "ipv4-addr", "id": format!("ipv4-addr--{U}")}),
            "needs the property \"value\"",
        ),
        (
            json!({"type": "ipv4-addr", "id": format!("ipv4-addr--{U}"), "value": "1.2.3.4", "spec_version": "2.0"}),
            "only STIX 2.1",
        ),
    ];
    for (o, needle) in bad {
        let e = refusal(o.clone());
        assert!(e.contains(needle), "{o}: {e:?} lacks {needle:?}");
    }
}

#[test]
fn the_envelope_tlp_is_authoritative() {
    let marked = |m: &str| with(indicator(), "object_marking_refs", json!([m]));
    // Same or stricter: accepted. Looser: refused with both levels named.
    for (env, obj, ok) in [
        (Tlp::Green, TLP_GREEN, true),
        (Tlp::Green, TLP_AMBER, true),
        (Tlp::Amber, TLP_RED, true),
        (Tlp::Amber, TLP_GREEN, false),
        (Tlp::AmberStrict, TLP_AMBER, false),
        (Tlp::Red, TLP_AMBER_STRICT, false),
        (Tlp::Green, TLP_CLEAR, false),
        (Tlp::Clear, TLP_CLEAR, true),
    ] {
        let r = check(&bundle(vec![marked(obj)]), env);
        assert_eq!(r.is_ok(), ok, "{env:?} envelope, {obj}: {r:?}");
        if let Err(e) = r {
            assert!(e.contains(tlp_name(env)) && e.contains("stricter"), "{e}");
        }
    }
    // TLP 1.0 ids count: WHITE is CLEAR, AMBER is AMBER.
    assert!(check(&bundle(vec![marked(TLP1[0].0)]), Tlp::Green).is_err());
    assert!(check(&bundle(vec![marked(TLP1[2].0)]), Tlp::Amber).is_ok());
    // The strictest of several markings decides nothing alone: every TLP marking must pass.
    let two = with(
        indicator(),
        "object_marking_refs",
        json!([TLP_RED, TLP_CLEAR]),
    );
    assert!(check(&bundle(vec![two]), Tlp::Green).is_err());
    // Granular markings too.
    let g = with(
        indicator(),
        "granular_markings",
        json!([{"marking_ref": TLP_CLEAR, "selectors": ["name"]}]),
    );
    assert!(refusal(g).contains("granular"));
    let g = with(
        indicator(),
        "granular_markings",
        json!([{"marking_ref": TLP_RED, "selectors": ["name"]}]),
    );
    assert!(check(&bundle(vec![g]), Tlp::Green).is_ok());
    // Custom markings are not TLP and pass.
    assert!(
        check(
            &bundle(vec![marked(&format!("marking-definition--{U}"))]),
            Tlp::Red
        )
        .is_ok()
    );
}

#[test]
fn official_tlp_definitions_may_be_carried_but_not_redefined() {
    let tlp2 = |name: &str| {
        json!({"type": "marking-definition", "spec_version": "2.1", "id": TLP_AMBER, "created": "2022-10-01T00:00:00.000Z",
               "name": name, "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": "amber"}}})
    };
    assert!(check(&bundle(vec![tlp2("TLP:AMBER")]), Tlp::Green).is_ok());
    assert!(refusal(tlp2("TLP:CLEAR")).contains("redefines the official TLP:AMBER"));
    let no_ext = without(tlp2("TLP:AMBER"), "extensions");
    assert!(
        check(
            &bundle(vec![with(no_ext, "definition_type", json!("statement"))]),
            Tlp::Green
        )
        .is_err()
    );
    let tlp1 = |word: &str| {
        json!({"type": "marking-definition", "spec_version": "2.1", "id": TLP1[3].0, "created": "2017-01-20T00:00:00.000Z",
               "definition_type": "tlp", "definition": {"tlp": word}})
    };
    assert!(check(&bundle(vec![tlp1("red")]), Tlp::Green).is_ok());
    assert!(refusal(tlp1("white")).contains("redefines"));
    assert_eq!(tlp_of(TLP1[1].0), Some(Tlp::Green));
    assert_eq!(tlp_of("marking-definition--nope"), None);
    for t in [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ] {
        assert_eq!(marking_id(t).and_then(tlp_of), Some(t));
    }
    assert_eq!(marking_id(Tlp::Unspecified), None);
}

#[test]
fn normalise_gives_unmarked_objects_the_envelope_marking() {
    let stricter = with(
        with(
            indicator(),
            "id",
            json!("indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000002"),
        ),
        "object_marking_refs",
        json!([TLP_RED]),
    );
    let custom = with(
        with(
            indicator(),
            "id",
            json!("indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000003"),
        ),
        "object_marking_refs",
        json!([format!("marking-definition--{U}")]),
    );
    let def = json!({"type": "marking-definition", "spec_version": "2.1", "id": format!("marking-definition--{U}"), "created": T, "definition_type": "statement", "definition": {"statement": "c"}});
    let out = normalise(
        &bundle(vec![indicator(), stricter, custom, def]),
        Tlp::Amber,
        ORIGIN,
    )
    .expect("normalised");
    let v: Value = serde_json::from_str(&out).expect("json");
    let o = &v["objects"];
    assert_eq!(o[0]["object_marking_refs"], json!([TLP_AMBER]));
    assert_eq!(o[1]["object_marking_refs"], json!([TLP_RED]));
    assert_eq!(
        o[2]["object_marking_refs"],
        json!([format!("marking-definition--{U}"), TLP_AMBER])
    );
    assert!(o[3].get("object_marking_refs").is_none());
    // The result passes the receiver's check, and a looser bundle is refused here too.
    assert!(check(&out, Tlp::Amber).is_ok());
    assert!(
        normalise(
            &bundle(vec![with(
                indicator(),
                "object_marking_refs",
                json!([TLP_GREEN])
            )]),
            Tlp::Amber,
            ORIGIN
        )
        .is_err()
    );
    assert!(normalise(&bundle(vec![indicator()]), Tlp::Unspecified, ORIGIN).is_err());
}

#[test]
fn raise_marking_replaces_looser_tlp_only() {
    let mut o = with(
        indicator(),
        "object_marking_refs",
        json!([TLP_GREEN, format!("marking-definition--{U}")]),
    );
    o["granular_markings"] = json!([{"marking_ref": TLP_CLEAR, "selectors": ["name"]}, {"marking_ref": TLP_RED, "selectors": ["pattern"]}]);
    let m = o.as_object_mut().expect("object");
    raise_marking(m, Tlp::Amber);
    assert_eq!(
        m["object_marking_refs"],
        json!([format!("marking-definition--{U}"), TLP_AMBER])
    );
    assert_eq!(m["granular_markings"][0]["marking_ref"], json!(TLP_AMBER));
    assert_eq!(m["granular_markings"][1]["marking_ref"], json!(TLP_RED));
    let mut only = with(indicator(), "object_marking_refs", json!([TLP_GREEN]));
    let m = only.as_object_mut().expect("object");
    raise_marking(m, Tlp::Red);
    assert_eq!(m["object_marking_refs"], json!([TLP_RED]));
    let mut strict = with(indicator(), "object_marking_refs", json!([TLP_RED]));
    let m = strict.as_object_mut().expect("object");
    raise_marking(m, Tlp::Green);
    assert_eq!(m["object_marking_refs"], json!([TLP_RED]));
}

#[test]
fn index_summary_and_single_object_checks() {
    let c = Content {
        body: Some(Body::Stix(pb::StixBundle {
            json: bundle(vec![
                indicator(),
                json!({"type": "ipv4-addr", "id": format!("ipv4-addr--{U}"), "value": "1.2.3.4"}),
            ]),
        })),
        ..Default::default()
    };
    assert_eq!(
        index_of(&c),
        vec![
            (format!("indicator--{U}"), T.to_string()),
            (format!("ipv4-addr--{U}"), String::new())
        ]
    );
    assert!(index_of(&Content::default()).is_empty());
    let Some(Body::Stix(b)) = &c.body else {
        unreachable!()
    };
    assert_eq!(summary(&b.json), "STIX bundle: 1 indicator, 1 ipv4-addr");
    assert_eq!(version_of(&without(indicator(), "modified")), T);
    assert!(check_object(&indicator(), Tlp::Green).is_ok());
    assert!(
        check_object(
            &with(indicator(), "object_marking_refs", json!([TLP_CLEAR])),
            Tlp::Green
        )
        .is_err()
    );
    assert!(check_object(&json!(2), Tlp::Green).is_err());
}

fn message(kind: pb::Kind, body: Body) -> Content {
    Content {
        id: "01930000-0000-7000-8000-000000000001".into(),
        origin_org: "csirt-be".into(),
        author: "csirt-be/analyst".into(),
        created_at_ms: 1_764_000_000_123,
        kind: kind as i32,
        level: pb::Level::Operational as i32,
        cluster: "csirt-be/ops".into(),
        marking: Some(pb::Marking {
            tlp: Tlp::Amber as i32,
            exercise: true,
            ..Default::default()
        }),
        body: Some(body),
        ..Default::default()
    }
}

fn link() -> Option<pb::CaseLink> {
    Some(pb::CaseLink {
        case: Some(pb::MessageRef {
            origin: "csirt-fr".into(),
            id: "case-1".into(),
        }),
        previous: None,
    })
}

#[test]
fn every_kind_exports_to_a_valid_deterministic_object() {
    let case_incident = export::stix_id("incident", "csirt-fr", "case-1");
    let cases: Vec<(Content, &str)> = vec![
        (
            message(
                pb::Kind::FreeText,
                Body::FreeText(pb::FreeText {
                    title: "t".into(),
                    body: "b".into(),
                }),
            ),
            "note",
        ),
        (
            message(
                pb::Kind::IncidentReport,
                Body::Incident(pb::IncidentReport {
                    title: "i".into(),
                    status: "resolved".into(),
                    taxonomy_class: "intrusions".into(),
                    taxonomy_type: "system-compromise".into(),
                    ..Default::default()
                }),
            ),
            "incident",
        ),
        (
            message(
                pb::Kind::CaseOpen,
                Body::CaseOpen(pb::CaseOpen {
                    title: "c".into(),
                    ..Default::default()
                }),
            ),
            "incident",
        ),
        (
            message(
                pb::Kind::SituationReport,
                Body::SituationReport(pb::SituationReport {
                    link: link(),
                    number: 2,
                    impact: "x".into(),
                    ..Default::default()
                }),
            ),
            "report",
        ),
        (
            message(
                pb::Kind::Assessment,
                Body::Assessment(pb::LargeScaleAssessment {
                    link: link(),
                    from: 3,
                    to: 5,
                    ..Default::default()
                }),
            ),
            "report",
        ),
        (
            message(
                pb::Kind::Advice,
                Body::Advice(pb::Advice {
                    link: link(),
                    verdict: pb::AssessmentState::OngoingLargeScale as i32,
                    confidence: 3,
                    rationale: "r".into(),
                }),
            ),
            "opinion",
        ),
        (
            message(
                pb::Kind::PublicCommunication,
                Body::Communication(pb::CommunicationLine {
                    link: link(),
                    text: "l".into(),
                    ..Default::default()
                }),
            ),
            "note",
        ),
        (
            message(
                pb::Kind::Escalation,
                Body::Escalation(pb::Escalation {
                    link: link(),
                    summary: "s".into(),
                    ..Default::default()
                }),
            ),
            "bluewire-message",
        ),
        (
            message(
                pb::Kind::CrisisStatus,
                Body::CrisisStatus(pb::CrisisStatusDecision {
                    link: link(),
                    ..Default::default()
                }),
            ),
            "bluewire-message",
        ),
        (
            message(
                pb::Kind::Reserve,
                Body::Reserve(pb::ReserveUpdate {
                    link: link(),
                    stage: 1,
                    services: vec!["forensics".into()],
                    ..Default::default()
                }),
            ),
            "bluewire-message",
        ),
        (
            message(
                pb::Kind::Notice,
                Body::Notice(pb::Notice {
                    link: link(),
                    notice: 1,
                    summary: "n".into(),
                }),
            ),
            "bluewire-message",
        ),
        (
            message(
                pb::Kind::LessonsLearned,
                Body::Lessons(pb::LessonsLearned {
                    link: link(),
                    findings: vec!["f".into()],
                    ..Default::default()
                }),
            ),
            "bluewire-message",
        ),
        (
            message(
                pb::Kind::CaseReopen,
                Body::Reopen(pb::CaseReopen {
                    link: link(),
                    reason: "r".into(),
                    ..Default::default()
                }),
            ),
            "bluewire-message",
        ),
    ];
    for (c, ty) in cases {
        let objects = export::objects(&c, Tlp::Red);
        assert_eq!(objects.len(), 1, "{ty}");
        let o = &objects[0];
        assert_eq!(o["type"], ty, "{o}");
        assert_eq!(o, &export::objects(&c, Tlp::Red)[0], "deterministic");
        assert_eq!(o["id"], export::stix_id(ty, "csirt-be", &c.id));
        assert_eq!(o["created"], "2025-11-24T16:00:00.123Z");
        assert_eq!(o["created_by_ref"], export::identity_id("csirt-be"));
        assert_eq!(o["object_marking_refs"], json!([TLP_RED]));
        assert!(
            o["labels"]
                .as_array()
                .is_some_and(|l| l.contains(&json!("exercise"))),
            "{o}"
        );
        let ext = &o["extensions"][export::EXTENSION];
        assert_eq!(ext["message_id"], c.id.as_str());
        assert_eq!(ext["cluster"], "csirt-be/ops");
        assert_eq!(ext["level"], "operational");
        // Our own export passes our own checks.
        check_object(o, Tlp::Red).unwrap_or_else(|e| panic!("{ty}: {e}\n{o:#}"));
        if ty != "note" && ty != "incident" {
            let refs = o
                .get("object_refs")
                .or_else(|| o.get("case_ref"))
                .expect("refers to the case");
            assert!(refs.to_string().contains(&case_incident), "{o}");
        }
    }
    // Control messages are applied, not exported.
    let retraction = message(
        pb::Kind::Retraction,
        Body::Retraction(pb::Retraction::default()),
    );
    assert!(export::objects(&retraction, Tlp::Green).is_empty());
}

#[test]
fn bundles_export_their_own_objects_raised_and_vouched_for() {
    let c = Content {
        origin_org: "csirt-fr".into(),
        body: Some(Body::Stix(pb::StixBundle {
            json: bundle(vec![with(
                indicator(),
                "object_marking_refs",
                json!([TLP_GREEN]),
            )]),
        })),
        ..Default::default()
    };
    let o = export::objects(&c, Tlp::Amber);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0]["object_marking_refs"], json!([TLP_AMBER]));
    assert_eq!(o[0]["created_by_ref"], export::identity_id("csirt-fr"));
    assert_eq!(o[0]["id"], format!("indicator--{U}"));
    let (b, n) = export::export_bundle(&[(c.clone(), Tlp::Amber), (c, Tlp::Amber)]);
    assert_eq!(n, 1, "one object version once");
    let ids: Vec<&str> = b["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert!(
        ids.contains(&export::identity_id("csirt-fr").as_str()),
        "{ids:?}"
    );
    assert!(ids.contains(&export::EXTENSION), "{ids:?}");
    check(&b.to_string(), Tlp::Clear)
        .expect_err("an export names Bluewire's objects: it is not a bundle a member may publish");
}

#[test]
fn stix_ids_are_uuid4_form_and_separate_their_inputs() {
    let a = export::stix_id("note", "ab", "c");
    let uuid = uuid::Uuid::parse_str(a.trim_start_matches("note--")).expect("uuid");
    assert_eq!(uuid.get_version_num(), 4);
    assert_ne!(a, export::stix_id("note", "a", "bc"));
    assert_ne!(a, export::stix_id("report", "ab", "c"));
    assert_eq!(export::timestamp(0), "1970-01-01T00:00:00.000Z");
}

#[test]
fn envelope_validation_applies_the_bundle_checks() {
    let mut c = Content {
        id: crate::envelope::new_id(),
        origin_org: "csirt-fr".into(),
        author: "csirt-fr/analyst".into(),
        kind: pb::Kind::StixBundle as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: Tlp::Amber as i32,
            ..Default::default()
        }),
        body: Some(Body::Stix(pb::StixBundle {
            json: bundle(vec![with(
                indicator(),
                "object_marking_refs",
                json!([TLP_GREEN]),
            )]),
        })),
        ..Default::default()
    };
    let e = crate::envelope::validate(&c).expect_err("looser than the envelope");
    assert_eq!(e.rule(), "content");
    assert!(
        e.to_string().contains("STIX bundle refused") && e.to_string().contains("TLP:GREEN"),
        "{e}"
    );
    c.marking = Some(pb::Marking {
        tlp: Tlp::Green as i32,
        ..Default::default()
    });
    assert_eq!(crate::envelope::validate(&c), Ok(()));
    c.body = Some(Body::FreeText(pb::FreeText::default()));
    assert!(
        crate::envelope::validate(&c)
            .expect_err("no stix body")
            .to_string()
            .contains("needs a stix body")
    );
}

#[test]
fn receivers_require_every_object_marked() {
    let unmarked = bundle(vec![indicator()]);
    let e = check_bundle(&unmarked, Tlp::Green, ORIGIN).expect_err("unmarked");
    assert!(e.contains("no TLP marking"), "{e}");
    let marked = normalise(&unmarked, Tlp::Green, ORIGIN).expect("normalised");
    assert!(check_bundle(&marked, Tlp::Green, ORIGIN).is_ok());
    // Meta objects carry no TLP.
    let def = json!({"type": "marking-definition", "spec_version": "2.1", "id": format!("marking-definition--{U}"), "created": T, "definition_type": "statement", "definition": {"statement": "c"}});
    assert!(check_bundle(&bundle(vec![def]), Tlp::Green, ORIGIN).is_ok());
    // A granular marking covers its selectors only: the object itself still needs one.
    let g = with(
        indicator(),
        "granular_markings",
        json!([{"marking_ref": TLP_GREEN, "selectors": ["name"]}]),
    );
    assert!(check_bundle(&bundle(vec![g.clone()]), Tlp::Green, ORIGIN).is_err());
    let fixed = normalise(&bundle(vec![g]), Tlp::Green, ORIGIN).expect("normalised");
    assert!(check_bundle(&fixed, Tlp::Green, ORIGIN).is_ok());
}

#[test]
fn a_member_speaks_only_for_itself() {
    let other = export::identity_id("csirt-be");
    let own = export::identity_id(ORIGIN);
    assert!(export::is_bluewire_id(&other) && export::is_bluewire_id(export::EXTENSION));
    assert!(!export::is_bluewire_id(&format!("indicator--{U}")));
    // Taking another organisation's identity, or a Bluewire-made object's id.
    let spoof = json!({"type": "identity", "spec_version": "2.1", "id": other, "created": T, "modified": T, "name": "x"});
    assert!(refusal(spoof).contains("cannot replace another's"));
    let hijack = with(
        indicator(),
        "id",
        json!(export::stix_id("indicator", "csirt-be", "m1")),
    );
    assert!(refusal(hijack).contains("cannot replace another's"));
    // Its own identity is fine; so is referring to Bluewire objects.
    let mine = json!({"type": "identity", "spec_version": "2.1", "id": own, "created": T, "modified": T, "name": "me"});
    assert!(check(&bundle(vec![mine]), Tlp::Green).is_ok());
    let about = json!({"type": "note", "spec_version": "2.1", "id": format!("note--{U}"), "created": T, "modified": T,
                       "content": "c", "object_refs": [export::stix_id("incident", "csirt-be", "m1")]});
    assert!(check(&bundle(vec![about]), Tlp::Green).is_ok());
    // Provenance: created by another member, or Bluewire's own extension.
    let by = with(indicator(), "created_by_ref", json!(other));
    assert!(refusal(by).contains("speaks only for itself"));
    assert!(
        check(
            &bundle(vec![with(indicator(), "created_by_ref", json!(own))]),
            Tlp::Green
        )
        .is_ok()
    );
    let ext = with(
        indicator(),
        "extensions",
        json!({export::EXTENSION: {"extension_type": "property-extension", "origin": "csirt-be"}}),
    );
    assert!(refusal(ext).contains("Bluewire's own extension"));
    assert!(
        check_object_from(
            &with(indicator(), "created_by_ref", json!(other)),
            Tlp::Green,
            ORIGIN
        )
        .is_err()
    );
    assert!(
        check_object(
            &with(indicator(), "created_by_ref", json!(other)),
            Tlp::Green
        )
        .is_ok()
    );
}

#[test]
fn tlp_aliases_are_tlp_markings() {
    // An upper-case spelling of an official id is refused as an id.
    let upper = TLP_CLEAR
        .to_uppercase()
        .replace("MARKING-DEFINITION", "marking-definition");
    let e = refusal(with(indicator(), "object_marking_refs", json!([upper])));
    assert!(e.contains("upper case"), "{e}");
    // A bundle's own TLP-typed definition is a TLP marking: it cannot mark an object looser.
    let alias = format!("marking-definition--{U}");
    let def = json!({"type": "marking-definition", "spec_version": "2.1", "id": alias, "created": T,
                     "definition_type": "tlp", "definition": {"tlp": "white"}});
    let e = check(
        &bundle(vec![
            def.clone(),
            with(
                with(
                    indicator(),
                    "id",
                    json!("indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000009"),
                ),
                "object_marking_refs",
                json!([alias]),
            ),
        ]),
        Tlp::Amber,
    )
    .expect_err("looser through an alias");
    assert!(e.contains("TLP:CLEAR"), "{e}");
    let red = json!({"type": "marking-definition", "spec_version": "2.1", "id": format!("marking-definition--{U}"), "created": T,
                     "name": "TLP:RED", "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": "red"}}});
    let o = with(
        indicator(),
        "object_marking_refs",
        json!([format!("marking-definition--{U}")]),
    );
    assert!(
        check_value(
            &parse(&bundle(vec![red, o])).expect("json"),
            Tlp::Amber,
            ORIGIN,
            true
        )
        .is_ok()
    );
    assert_eq!(
        object_tlp(
            &with(
                indicator(),
                "granular_markings",
                json!([{"marking_ref": TLP_RED, "selectors": ["name"]}])
            )
            .as_object()
            .expect("o")
            .clone()
        ),
        Some(Tlp::Red)
    );
}
