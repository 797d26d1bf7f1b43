//! Unit tests of the local policy: schema, parsing and validation errors, narrow-only
//! evaluation, hot reload and the example files in `deploy/policy`.

use std::sync::Arc;
use std::time::Duration;

use bluewire_proto::v1::{Kind, Level as PbLevel, Marking, Tlp};

use super::engine::{parse_kind, parse_tlp, schema};
use super::*;
use crate::pki::Level;

const EXAMPLE: &str = include_str!("../../../deploy/policy/example.cedar");
const CASES: &str = include_str!("../../../deploy/policy/cases.toml");

fn org(id: &str, ty: &str, levels: &[Level]) -> OrgProfile {
    OrgProfile {
        org: id.into(),
        country: "BE".into(),
        org_type: ty.into(),
        levels: levels.to_vec(),
        sectors: vec![],
        accreditations: vec![],
        endpoint: format!("https://{id}.example:7443"),
        signing_keys: vec![],
        encryption_keys: vec![],
        functions: Vec::new(),
    }
}

fn content(tlp: Tlp, level: PbLevel, exercise: bool, cluster: &str) -> Content {
    Content {
        origin_org: "csirt-be".into(),
        kind: Kind::IncidentReport as i32,
        level: level as i32,
        marking: Some(Marking {
            tlp: tlp as i32,
            classification: String::new(),
            exercise,
        }),
        cluster: cluster.into(),
        ..Default::default()
    }
}

fn eval(p: &LocalPolicy, c: &Content, to: &OrgProfile) -> Verdict {
    let from = org("csirt-be", "csirt", &[Level::Technical]);
    p.evaluate(&PolicyInput {
        direction: Direction::Egress,
        content: c,
        origin: &from,
        recipient: to,
    })
}

#[test]
fn schema_parses_and_names_map() {
    let _ = schema();
    use crate::envelope::{kind_label, level_label, tlp_name};
    assert_eq!(kind_label(Kind::IncidentReport as i32), "incident-report");
    assert_eq!(kind_label(Kind::FreeText as i32), "free-text");
    assert_eq!(tlp_name(Tlp::AmberStrict as i32), "AMBER+STRICT");
    assert_eq!(tlp_name(Tlp::Red as i32), "RED");
    assert_eq!(level_label(PbLevel::Political as i32), "political");
    // Every kind a policy can name parses back to itself.
    for k in 1..=8 {
        assert_eq!(super::engine::parse_kind(kind_label(k)), Ok(k));
    }
    assert_eq!(parse_tlp("amber+strict"), Ok(Tlp::AmberStrict as i32));
    assert_eq!(
        parse_kind("incident-report"),
        Ok(Kind::IncidentReport as i32)
    );
    assert!(parse_kind("nope").unwrap_err().contains("free-text"));
}

#[test]
fn parse_error_names_file_line_and_column() {
    let text =
        "// header\n\nforbid (principal, action, resource)\nwhen { context.tlp == \"RED\" \n";
    let e = LocalPolicy::from_text(text, "local.cedar").unwrap_err();
    assert!(matches!(e, PolicyError::Parse(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("local.cedar:"), "{msg}");
    // The missing `}` is noticed at the end of the last rule, line 4.
    assert!(msg.contains("local.cedar:4:"), "{msg}");
    assert!(msg.contains("missing a closing"), "{msg}");

    let e = LocalPolicy::from_text(
        "\n\nforbid (principal, action, resource) when { context.tlp = \"RED\" };",
        "x.cedar",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("x.cedar:3:45:"), "{e}");
    assert!(e.contains("try using '=='"), "{e}");
}

#[test]
fn unknown_attribute_fails_schema_validation() {
    let text = "permit (principal, action, resource);\n@id(\"typo\")\nforbid (principal, action == Action::\"deliver\", resource)\n  when { resource.kind == \"military\" };\n";
    let e = LocalPolicy::from_text(text, "p.cedar").unwrap_err();
    assert!(matches!(e, PolicyError::Invalid(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("p.cedar:4:"), "{msg}");
    assert!(msg.contains("kind"), "{msg}");
    assert!(msg.contains("policy1"), "{msg}");

    let e = LocalPolicy::from_text(
        "forbid (principal, action, resource) when { context.colour == \"red\" };",
        "q.cedar",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("colour") && e.starts_with("q.cedar:1:"), "{e}");

    let e = LocalPolicy::from_text(
        "forbid (principal == User::\"x\", action, resource);",
        "r.cedar",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("User"), "{e}");
}

#[test]
fn forbid_narrows() {
    let p = LocalPolicy::from_text(
        "@id(\"no-red-to-military\")\n@reason(\"RED never goes to the military\")\nforbid (principal, action == Action::\"deliver\", resource)\n  when { context.tlp == \"RED\" && resource.type == \"military\" };\n",
        "p.cedar",
    )
    .unwrap();
    assert_eq!(p.len(), 1);
    let mil = org("mod-fr", "military", &[Level::Operational]);
    let csirt = org("csirt-fr", "csirt", &[Level::Technical]);
    let red = content(Tlp::Red, PbLevel::Operational, false, "c1");
    let amber = content(Tlp::Amber, PbLevel::Operational, false, "c1");
    let v = eval(&p, &red, &mil);
    assert!(!v.allowed);
    assert_eq!(
        v.reason,
        "forbidden by local policy no-red-to-military (policy0): RED never goes to the military"
    );
    assert_eq!(eval(&p, &amber, &mil), Verdict::allow());
    assert_eq!(eval(&p, &red, &csirt), Verdict::allow());
}

#[test]
fn a_policy_can_name_the_blueprint_functions_the_ca_certified() {
    let p = LocalPolicy::from_text(
        "@id(\"no-raw-reports-to-commanders\")\nforbid (principal, action == Action::\"deliver\", resource)\n  when { context.kind == \"incident-report\" && resource.functions.contains(\"cyber-commanders\") };\n",
        "p.cedar",
    )
    .unwrap();
    let mut commanders = org("eucc", "military", &[Level::Operational]);
    commanders.functions = vec!["cyber-commanders".into()];
    let mut cyclone = org("cyclone-fr", "liaison", &[Level::Operational]);
    cyclone.functions = vec!["cyclone".into()];
    let report = content(Tlp::Amber, PbLevel::Operational, false, "c1");
    assert!(!eval(&p, &report, &commanders).allowed);
    assert!(eval(&p, &report, &cyclone).allowed);
    // The memo keys on functions too: the same org id with other functions decides anew.
    let plain = org("eucc", "military", &[Level::Operational]);
    assert!(eval(&p, &report, &plain).allowed);
}

#[test]
fn permit_cannot_widen_and_empty_policy_allows() {
    // An explicit permit for a case a forbid also matches: forbid wins.
    let p = LocalPolicy::from_text(
        "permit (principal, action, resource) when { context.tlp == \"RED\" };\nforbid (principal, action, resource) when { context.tlp == \"RED\" };\n",
        "p.cedar",
    )
    .unwrap();
    assert_eq!(p.len(), 2);
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.contains("policy0") && w.contains("no effect"))
    );
    let to = org("csirt-fr", "csirt", &[Level::Technical]);
    let v = eval(&p, &content(Tlp::Red, PbLevel::Technical, false, "c"), &to);
    assert!(!v.allowed);
    assert_eq!(v.reason, "forbidden by local policy policy1 (p.cedar:2)");

    // A file of nothing but comments: allowed (the implicit permit), not Cedar's
    // default deny.
    let p = LocalPolicy::from_text("// nothing yet\n", "e.cedar").unwrap();
    assert!(p.is_empty());
    assert!(eval(&p, &content(Tlp::Red, PbLevel::Technical, false, "c"), &to).allowed);
    // A permit that matches nothing changes nothing either.
    let p = LocalPolicy::from_text(
        "permit (principal, action, resource) when { false };",
        "f.cedar",
    )
    .unwrap();
    assert!(eval(&p, &content(Tlp::Red, PbLevel::Technical, false, "c"), &to).allowed);
}

#[test]
fn a_forbid_that_errors_fails_closed() {
    // Long overflow is a runtime error that strict validation cannot rule out.
    let p = LocalPolicy::from_text(
        "@id(\"overflow\")\nforbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };\n",
        "o.cedar",
    )
    .unwrap();
    let to = org("csirt-fr", "csirt", &[Level::Technical]);
    let v = eval(
        &p,
        &content(Tlp::Green, PbLevel::Technical, false, "c"),
        &to,
    );
    assert!(!v.allowed, "{v:?}");
    assert!(
        v.reason.contains("overflow (policy0)") && v.reason.contains("denied to be safe"),
        "{v:?}"
    );
}

#[test]
fn hash_is_sha256_of_text() {
    let p = LocalPolicy::from_text("", "e.cedar").unwrap();
    assert_eq!(
        p.hash(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn reload_keeps_previous_on_bad_file_and_picks_up_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.cedar");
    let deny_red = "forbid (principal, action, resource) when { context.tlp == \"RED\" };\n";
    std::fs::write(&path, deny_red).unwrap();
    let h = PolicyHandle::new(Some(path.clone())).unwrap();
    let first = h.current().unwrap().hash();
    let to = org("csirt-fr", "csirt", &[Level::Technical]);
    let from = org("csirt-be", "csirt", &[Level::Technical]);
    let red = content(Tlp::Red, PbLevel::Technical, false, "c");
    let amber = content(Tlp::Amber, PbLevel::Technical, false, "c");
    let input = |c| PolicyInput {
        direction: Direction::Ingress,
        content: c,
        origin: &from,
        recipient: &to,
    };
    assert!(!h.evaluate(&input(&red)).allowed);
    assert!(!h.reload().unwrap(), "unchanged text is not a change");

    // A broken file: error, previous policy stays.
    std::fs::write(&path, "forbid (principal, action, resource) when {").unwrap();
    let e = h.reload().unwrap_err().to_string();
    assert!(e.contains("local.cedar:1:"), "{e}");
    assert_eq!(h.current().unwrap().hash(), first);
    assert!(!h.evaluate(&input(&red)).allowed);
    // An invalid (schema) file: same.
    std::fs::write(
        &path,
        "forbid (principal, action, resource) when { context.nope };",
    )
    .unwrap();
    assert!(matches!(h.reload(), Err(PolicyError::Invalid(_))));
    assert_eq!(h.current().unwrap().hash(), first);
    // A missing file: same.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(h.reload(), Err(PolicyError::Io { .. })));
    assert_eq!(h.current().unwrap().hash(), first);

    // A good change is picked up.
    let mut rx = h.subscribe();
    std::fs::write(
        &path,
        "forbid (principal, action, resource) when { context.tlp == \"AMBER\" };\n",
    )
    .unwrap();
    assert!(h.reload().unwrap());
    assert_ne!(h.current().unwrap().hash(), first);
    assert!(h.evaluate(&input(&red)).allowed);
    assert!(!h.evaluate(&input(&amber)).allowed);
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().clone(),
        Some(h.current().unwrap().hash())
    );

    // No policy configured: everything allowed, reload is a no-op.
    let none = PolicyHandle::new(None).unwrap();
    assert!(none.evaluate(&input(&red)).allowed);
    assert!(!none.reload().unwrap());
    // A node must not start on a broken file.
    std::fs::write(&path, "forbid (").unwrap();
    assert!(PolicyHandle::new(Some(path)).is_err());
}

#[tokio::test]
async fn watcher_reloads_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.cedar");
    std::fs::write(&path, "// empty\n").unwrap();
    let h = Arc::new(PolicyHandle::new(Some(path.clone())).unwrap());
    let tasks = crate::tasks::Tasks::new();
    h.spawn_watcher(Duration::from_millis(20), &tasks);
    let mut changes = h.subscribe();
    std::fs::write(&path, "forbid (principal, action, resource);\n").unwrap();
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("watcher picked up the change")
        .unwrap();
    assert_eq!(h.current().unwrap().len(), 1);
    tasks.stop();
    tasks
        .drained(Duration::from_secs(10))
        .await
        .expect("the watcher ends at the stop");
}

#[test]
fn example_files_pass() {
    let p = LocalPolicy::from_text(EXAMPLE, "example.cedar").unwrap();
    assert!(p.len() >= 3, "{}", p.len());
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    assert!(p.rules().iter().all(|r| r.forbid && r.name.is_some()));
    let results = run_cases(&p, CASES).unwrap();
    assert!(results.len() >= 6);
    for r in &results {
        assert!(r.passed(), "{r:?}");
    }
    assert!(results.iter().any(|r| !r.expected));
    assert!(results.iter().any(|r| r.expected));
    // The reasons name the rule.
    assert!(
        results
            .iter()
            .filter(|r| !r.got)
            .all(|r| r.reason.starts_with("forbidden by local policy "))
    );
}

#[test]
fn case_file_errors_name_the_case() {
    let p = LocalPolicy::from_text("", "e.cedar").unwrap();
    let e = run_cases(
        &p,
        "[[case]]\nname = \"a\"\norigin = \"ghost\"\nrecipient = \"ghost\"\nexpect = \"allow\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("case 1") && e.contains("ghost"), "{e}");
    let e = run_cases(&p, "[[case]]\nname = \"a\"\nexpect = \"maybe\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid cases file"), "{e}");
    let inline = r#"
[[case]]
name = "inline"
origin = { org = "a", country = "BE", type = "csirt", levels = ["technical"] }
recipient = { country = "FR", type = "csirt", levels = ["technical"] }
tlp = "purple"
expect = "allow"
"#;
    let e = run_cases(&p, inline).unwrap_err().to_string();
    assert!(e.contains("unknown TLP \"purple\""), "{e}");
    let ok = inline.replace("purple", "RED");
    let r = run_cases(&p, &ok).unwrap();
    assert!(r[0].passed());
}
