//! MISP in and out, end to end. The test data is made with PyMISP (tests/python/misp_event.py:
//! an event with every mapped attribute type, objects, galaxies, tags, a stricter attribute
//! and one MISP keeps in its organisation; a feed of two events written as PyMISP's feed
//! generator writes one). Its conversion (`bluewire_node::misp`) is imported through a real
//! node with `ImportStix` — the call `bluewire import misp` makes after the same conversion —
//! and compared with what misp-stix, MISP's own converter, makes of the same event.
//! Re-importing publishes nothing; an edited attribute publishes one new version. A node's
//! feed exported as a MISP feed is read back by PyMISP with every indicator value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bluewire_node::misp::{self, MispOptions};
use bluewire_node::stix::{self, pattern};
use bluewire_tests::{TestFederation, assert_eventually, backlog, item_content, pb, python};
use serde_json::{Value, json};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";

/// Run tests/python/misp_event.py with `args`; its standard output.
fn misp_script(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/misp_event.py");
    let out = python::command()
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tests/python/misp_event.py");
    assert!(
        out.status.success(),
        "misp_event.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PyMISP-made test data in a fresh directory.
fn test_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_path_buf();
    misp_script(&["build", out.to_str().expect("utf-8 path")]);
    (dir, out)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Publish a conversion at `org` as `bluewire import misp` does (one request; the node splits
/// it by marking).
async fn import(fed: &TestFederation, org: &str, c: &misp::Converted) -> pb::ImportStixResponse {
    let bundle = json!({
        "type": "bundle", "id": "bundle--5e7b0c1a-2b3c-4d5e-8f9a-0000000000cc", "objects": c.objects,
    });
    fed.client(org, "analyst")
        .client()
        .import_stix(pb::ImportStixRequest {
            bundle: bundle.to_string(),
            level: pb::Level::Technical as i32,
            marking: Some(pb::Marking {
                tlp: c.tlp as i32,
                ..Default::default()
            }),
            cluster: c.cluster.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("ImportStix at {org}: {e}"))
        .into_inner()
}

/// The STIX objects `org` holds from `origin`'s bundle messages, by id.
async fn objects_at(fed: &TestFederation, org: &str, origin: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for item in fed.feed(org, Some(origin)).await {
        let c = item_content(&item);
        if let Some(pb::content::Body::Stix(b)) = &c.body {
            let bundle: Value = serde_json::from_str(&b.json).expect("a stored bundle is JSON");
            for o in bundle["objects"].as_array().into_iter().flatten() {
                out.insert(o["id"].as_str().unwrap_or("").to_string(), o.clone());
            }
        }
    }
    out
}

/// A pattern's comparisons as (path, value), paths unquoted (`file:hashes.SHA-256`), values
/// as text (so misp-stix's `dst_port = '443'` and Bluewire's `dst_port = 443` compare equal).
fn pattern_pairs(p: &str) -> BTreeSet<(String, String)> {
    fn walk(p: &pattern::Pattern, out: &mut BTreeSet<(String, String)>) {
        match p {
            pattern::Pattern::Observation { comparison, .. } => cmp(comparison, out),
            pattern::Pattern::Grouped { inner, .. } => walk(inner, out),
            pattern::Pattern::And(v)
            | pattern::Pattern::Or(v)
            | pattern::Pattern::FollowedBy(v) => v.iter().for_each(|p| walk(p, out)),
        }
    }
    fn cmp(c: &pattern::Comparison, out: &mut BTreeSet<(String, String)>) {
        match c {
            pattern::Comparison::And(v) | pattern::Comparison::Or(v) => {
                v.iter().for_each(|c| cmp(c, out))
            }
            pattern::Comparison::Compare { path, value, .. } => {
                let mut key = format!("{}:", path.object_type);
                for (i, step) in path.steps.iter().enumerate() {
                    match step {
                        pattern::PathStep::Key(k) => {
                            if i > 0 {
                                key.push('.');
                            }
                            key.push_str(k);
                        }
                        pattern::PathStep::Index(n) => key.push_str(&format!("[{n}]")),
                        pattern::PathStep::AnyIndex => key.push_str("[*]"),
                    }
                }
                let value = match value {
                    pattern::Literal::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert((key, value));
            }
            other => panic!("unexpected comparison {other:?}"),
        }
    }
    let ast = pattern::parse(p).unwrap_or_else(|e| panic!("{p:?} does not parse: {e}"));
    let mut out = BTreeSet::new();
    walk(&ast, &mut out);
    out
}

/// The indicators of a set of objects: id → pattern pairs.
fn indicators<'a>(
    objects: impl Iterator<Item = &'a Value>,
) -> BTreeMap<String, BTreeSet<(String, String)>> {
    objects
        .filter(|o| o["type"] == "indicator")
        .map(|o| {
            (
                o["id"].as_str().unwrap_or("").to_string(),
                pattern_pairs(o["pattern"].as_str().unwrap_or("")),
            )
        })
        .collect()
}

/// The observables each observed-data saw, as comparable text: type and properties, refs
/// replaced by the value they point at. Left out: ids (each converter derives its own), and
/// what docs/MISP.md lists as differing on purpose (`protocols`: misp-stix writes "tcp",
/// which MISP never said; Bluewire writes the address family) and misp-stix's custom
/// `x_misp_*` properties.
fn observations(objects: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let by_id: BTreeMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    let value_of = |id: &Value| -> Value {
        id.as_str()
            .and_then(|i| by_id.get(i))
            .and_then(|o| o.get("value").cloned())
            .unwrap_or(Value::Null)
    };
    let mut out = BTreeMap::new();
    for od in objects.iter().filter(|o| o["type"] == "observed-data") {
        let mut seen = BTreeSet::new();
        for r in od["object_refs"].as_array().into_iter().flatten() {
            let Some(o) = r.as_str().and_then(|i| by_id.get(i)) else {
                panic!("{} refers to {r}, which is not in the bundle", od["id"]);
            };
            let mut props = BTreeMap::new();
            for (k, v) in o.as_object().into_iter().flatten() {
                if matches!(k.as_str(), "id" | "spec_version" | "protocols")
                    || k.starts_with("x_misp_")
                {
                    continue;
                }
                let v = if k.ends_with("_refs") {
                    let mut values: Vec<String> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| value_of(r).to_string())
                        .collect();
                    values.sort();
                    json!(values)
                } else if k.ends_with("_ref") {
                    value_of(v)
                } else {
                    v.clone()
                };
                props.insert(k.clone(), v);
            }
            seen.insert(json!(props).to_string());
        }
        out.insert(od["id"].as_str().unwrap_or("").to_string(), seen);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pymisp_event_imports_as_misp_stix_converts_it_and_only_once() {
    let (_dir, out) = test_data();
    let event = read_json(&out.join("event.json"));
    let converted = misp::event_to_stix(&event, &MispOptions::default()).expect("converts");
    assert_eq!(
        converted.tlp,
        pb::Tlp::Green,
        "the event is tagged tlp:green"
    );
    for o in &converted.objects {
        stix::check_object(o, converted.tlp).unwrap_or_else(|e| panic!("{o}: {e}"));
    }
    // What has no STIX form, or MISP keeps in the organisation, is listed with the reason.
    let skipped: BTreeSet<String> = converted
        .skipped
        .iter()
        .map(|(what, _)| {
            what.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(converted.skipped.len(), 7, "{:#?}", converted.skipped);
    for needle in [
        "galaxy sector",
        "attribute 5e7b0c1a-2b3c-4d5e-8f9a-100000000042", // ja3-fingerprint-md5
        "attribute 5e7b0c1a-2b3c-4d5e-8f9a-100000000043", // btc
        "attribute 5e7b0c1a-2b3c-4d5e-8f9a-100000000044", // text
        "attribute 5e7b0c1a-2b3c-4d5e-8f9a-100000000045", // distribution 0
        "object file",                                    // its entropy
        "object bank-account",
    ] {
        assert!(skipped.contains(needle), "{needle} not in {skipped:?}");
    }

    // Through a real node: everything published, nothing refused.
    let fed = TestFederation::new(&bluewire_tests::be_fr_eu()).await;
    let n = converted.objects.len() as u32;
    let first = import(&fed, FR, &converted).await;
    assert!(first.refused.is_empty(), "{:#?}", first.refused);
    assert_eq!((first.objects_published, first.objects_skipped), (n, 0));
    // The tlp:amber attribute travels under its own marking, the rest under the event's.
    assert_eq!(first.published.len(), 2, "{:?}", first.published);
    assert_eventually!(
        objects_at(&fed, BE, FR).await.len() == converted.objects.len(),
        "{BE} never held the event's {n} objects: {:?}",
        fed.rejections(BE).await
    );
    let at_be = objects_at(&fed, BE, FR).await;
    let strict = &at_be["indicator--5e7b0c1a-2b3c-4d5e-8f9a-100000000001"];
    assert_eq!(strict["object_marking_refs"], json!([stix::TLP_AMBER]));
    assert_eq!(
        at_be["report--5e7b0c1a-2b3c-4d5e-8f9a-0b1c2d3e4f50"]["object_marking_refs"],
        json!([stix::TLP_GREEN])
    );

    // The same event through misp-stix.
    let theirs_bundle = read_json(&out.join("misp-stix.json"));
    let theirs: Vec<Value> = theirs_bundle["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ours = &converted.objects;
    // Indicators: the same ids (indicator--{attribute or object uuid}) with the same
    // comparisons. misp-stix writes ports and AS numbers as strings ('443'), Bluewire as
    // the integers STIX types them; compared as text they are the same. misp-stix also
    // converts the attribute of distribution 0 (it leaves distribution to MISP's export;
    // Bluewire publishes, so it applies it).
    let our_indicators = indicators(ours.iter());
    let mut their_indicators = indicators(theirs.iter());
    assert!(
        their_indicators
            .remove("indicator--5e7b0c1a-2b3c-4d5e-8f9a-100000000045")
            .is_some()
    );
    assert_eq!(our_indicators.len(), 31, "{:#?}", our_indicators.keys());
    assert_eq!(our_indicators, their_indicators);
    // Observables: every observed-data Bluewire makes (attributes not to_ids, and MISP
    // objects whose attributes are not all to_ids), misp-stix makes with the same id and the
    // same observables. misp-stix also makes one for every to_ids attribute, beside its
    // indicator (based-on); Bluewire does not — the indicator carries the same values.
    let our_obs = observations(ours);
    let mut their_obs = observations(&theirs);
    assert!(
        their_obs
            .remove("observed-data--5e7b0c1a-2b3c-4d5e-8f9a-100000000045")
            .is_some()
    );
    assert_eq!(our_obs.len(), 17, "{:#?}", our_obs.keys());
    for (id, seen) in &our_obs {
        assert_eq!(Some(seen), their_obs.get(id), "{id}");
    }
    let extra: Vec<&String> = their_obs
        .keys()
        .filter(|id| !our_obs.contains_key(*id))
        .collect();
    for id in &extra {
        let uuid = id.trim_start_matches("observed-data--");
        assert!(
            our_indicators.contains_key(&format!("indicator--{uuid}")),
            "misp-stix observed {id}, which Bluewire neither observed nor indicated"
        );
    }
    // The event's report, the vulnerability and the galaxy clusters: the same ids and names.
    // Differences on purpose: a malware cluster is a family (is_family true; misp-stix
    // writes false), and the sector galaxy, which misp-stix makes an identity of, has no
    // STIX object in Bluewire's table (reported above).
    let names = |objects: &[Value]| -> BTreeMap<String, String> {
        objects
            .iter()
            .filter(|o| {
                matches!(
                    o["type"].as_str(),
                    Some(
                        "report"
                            | "vulnerability"
                            | "attack-pattern"
                            | "malware"
                            | "tool"
                            | "threat-actor"
                            | "intrusion-set"
                    )
                )
            })
            .map(|o| {
                (
                    o["id"].as_str().unwrap_or("").to_string(),
                    o["name"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(names(ours), names(&theirs));
    assert_eq!(names(ours).len(), 7);

    // Re-importing publishes nothing.
    let again = import(&fed, FR, &converted).await;
    assert!(again.refused.is_empty(), "{:#?}", again.refused);
    assert_eq!((again.objects_published, again.objects_skipped), (0, n));
    assert!(again.published.is_empty());
    // An attribute edited in MISP (a new timestamp) publishes its new version, only that.
    let mut edited = event.clone();
    edited["Event"]["Attribute"][0]["timestamp"] = "1796030000".into();
    let edited = misp::event_to_stix(&edited, &MispOptions::default()).expect("converts");
    let third = import(&fed, FR, &edited).await;
    assert_eq!(
        (third.objects_published, third.objects_skipped),
        (1, n - 1),
        "{third:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_misp_feed_imports_and_a_nodes_export_reads_back_in_pymisp() {
    let (_dir, out) = test_data();
    let feed = out.join("feed");
    let uuids =
        misp::feed_events(&read_json(&feed.join("manifest.json"))).expect("a feed manifest");
    assert_eq!(uuids.len(), 2);
    let fed = TestFederation::new(&bluewire_tests::be_fr_eu()).await;
    let mut want: BTreeSet<(String, String, bool)> = BTreeSet::new();
    for uuid in &uuids {
        let event = read_json(&feed.join(format!("{uuid}.json")));
        for a in event["Event"]["Attribute"].as_array().into_iter().flatten() {
            want.insert((
                a["type"].as_str().unwrap_or("").into(),
                a["value"].as_str().unwrap_or("").into(),
                a["to_ids"].as_bool().unwrap_or(false),
            ));
        }
        let c = misp::event_to_stix(&event, &MispOptions::default()).expect("converts");
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
        let r = import(&fed, FR, &c).await;
        assert!(r.refused.is_empty(), "{:#?}", r.refused);
    }
    assert_eventually!(
        backlog(&fed.client(BE, "analyst"), Some(FR)).await.len() == 2,
        "{BE} never held both events: {:?}",
        fed.rejections(BE).await
    );

    // BE's feed as a MISP feed, as `bluewire export misp --out DIR` writes it.
    let items = backlog(&fed.client(BE, "analyst"), Some(FR)).await;
    let export = out.join("export");
    std::fs::create_dir_all(&export).expect("mkdir");
    let mut events = Vec::new();
    for item in &items {
        let tlp = pb::Tlp::try_from(item.effective_marking.as_ref().map(|m| m.tlp).unwrap_or(0))
            .unwrap_or_default();
        let e = misp::message_to_event(&item_content(item), tlp).expect("a bundle is an event");
        let path = export.join(format!(
            "{}.json",
            e["Event"]["uuid"].as_str().expect("uuid")
        ));
        std::fs::write(path, serde_json::to_vec_pretty(&e).expect("json")).expect("write");
        events.push(e);
    }
    std::fs::write(
        export.join("manifest.json"),
        serde_json::to_vec_pretty(&misp::feed_manifest(&events)).expect("json"),
    )
    .expect("write");

    // PyMISP loads every event the manifest lists, with every value, type and to_ids flag.
    let read: Value =
        serde_json::from_str(&misp_script(&["read", export.to_str().expect("utf-8")]))
            .expect("misp_event.py read prints JSON");
    let read = read.as_array().expect("a list of events");
    assert_eq!(read.len(), 2);
    let mut got = BTreeSet::new();
    let mut tlps = BTreeSet::new();
    for e in read {
        assert_eq!(
            e["info"].as_str().map(|i| i.starts_with("Feed event")),
            Some(true),
            "{e}"
        );
        for t in e["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if t.starts_with("tlp:") {
                tlps.insert(t.to_string());
            }
        }
        for a in e["attributes"].as_array().into_iter().flatten() {
            got.insert((
                a["type"].as_str().unwrap_or("").to_string(),
                a["value"].as_str().unwrap_or("").to_string(),
                a["to_ids"].as_bool().unwrap_or(false),
            ));
        }
    }
    assert_eq!(got, want);
    // tlp:clear stays CLEAR only because the import was given no stricter --tlp.
    assert_eq!(
        tlps,
        BTreeSet::from(["tlp:amber".to_string(), "tlp:clear".to_string()])
    );
}
