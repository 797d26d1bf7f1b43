//! A Bluewire message as one MISP event, and the `manifest.json` of a MISP feed, so a MISP
//! instance can add a directory Bluewire writes as a feed. Deterministic: the event's uuid
//! and its attributes' uuids are made from the message's (origin, id), so exporting again
//! updates the same MISP event instead of adding one.
//!
//! What becomes an attribute: a bundle's indicators whose pattern is one comparison, or an
//! OR of them, or one of the composite shapes the import makes (address and port, domain and
//! address, file name and hash) → `to_ids` attributes of the type the import maps from
//! (`misp:type` labels, as misp-stix writes them, choose between types of the same shape);
//! other STIX patterns → `stix2-pattern`, and sigma/yara/snort rules → their MISP types;
//! cyber-observables → attributes that are not `to_ids`; vulnerabilities → `vulnerability`;
//! every other kind of message → a `text` attribute with its description.

use std::collections::{HashMap, HashSet};

use bluewire_proto::v1::{Content, Severity, Tlp, content::Body};
use serde_json::{Map, Value, json};

use super::table;
use crate::envelope::kind_label;
use crate::stix::{self, pattern};

/// The namespace of the UUIDs Bluewire gives MISP events, attributes and organisations.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8d1e_2b7c_4f3a_5e60_9c1d_0a2b_3c4d_5e6f);

/// A deterministic UUID (version 5) for (kind, origin, key). Not [`stix::export::stix_id`]:
/// an attribute uuid becomes a STIX id when the event comes back into Bluewire, and those
/// ids are kept for Bluewire's own objects.
fn uuid_for(kind: &str, origin: &str, key: &str) -> String {
    table::uuid5(&NAMESPACE, &format!("{kind}\0{origin}\0{key}")).to_string()
}

/// One MISP attribute being built.
struct Attr {
    ty: String,
    value: String,
    to_ids: bool,
    comment: String,
    ts: i64,
    tlp: Option<Tlp>,
    key: String,
}

/// A message as one MISP event (`{"Event": {...}}`), marked `tlp` (its marking in force).
/// None for messages that are not content (marking changes, retractions).
pub fn message_to_event(c: &Content, tlp: Tlp) -> Option<Value> {
    let body = c.body.as_ref()?;
    if matches!(body, Body::MarkingChange(_) | Body::Retraction(_)) {
        return None;
    }
    let secs = c.created_at_ms.div_euclid(1000);
    let created = stix::export::timestamp(c.created_at_ms);
    let mut attrs: Vec<Attr> = Vec::new();
    let info;
    let mut threat_level = 4;
    let mut analysis = 2;
    match body {
        Body::Stix(b) => {
            let bundle: Value = serde_json::from_str(&b.json).unwrap_or(Value::Null);
            let objects = bundle
                .get("objects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            info = objects
                .iter()
                .find(|o| {
                    matches!(
                        o.get("type").and_then(Value::as_str),
                        Some("report" | "grouping")
                    )
                })
                .and_then(|o| o.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .unwrap_or_else(|| stix::summary(&b.json));
            attrs = bundle_attributes(&objects, secs, tlp);
        }
        Body::Incident(i) => {
            info = i.title.clone();
            threat_level = match Severity::try_from(i.severity).unwrap_or_default() {
                Severity::Critical | Severity::High => 1,
                Severity::Medium => 2,
                Severity::Low => 3,
                Severity::Unspecified => 4,
            };
            let status = i.status.to_ascii_lowercase();
            analysis = if ["closed", "resolved", "recovered"]
                .iter()
                .any(|w| status.contains(w))
            {
                2
            } else if status.is_empty() {
                0
            } else {
                1
            };
            let text = if i.description.is_empty() {
                &i.title
            } else {
                &i.description
            };
            attrs.push(text_attr(text, secs));
        }
        _ => {
            // Every other kind: its STIX form's name and text.
            let o = stix::export::objects(c, tlp).into_iter().next()?;
            let field = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
                    .map(str::to_string)
            };
            info = field(&["name", "abstract"]).unwrap_or_else(|| kind_label(c.kind).to_string());
            if let Some(t) = field(&["description", "content", "explanation"]) {
                attrs.push(text_attr(&t, secs));
            }
        }
    }
    let info = if info.trim().is_empty() {
        format!("Bluewire {} {}/{}", kind_label(c.kind), c.origin_org, c.id)
    } else {
        info.replace(['\n', '\r'], " ")
    };
    let event_uuid = uuid_for("misp-event", &c.origin_org, &c.id);
    let mut seen = HashSet::new();
    let attributes: Vec<Value> = attrs
        .into_iter()
        .filter(|a| seen.insert((a.ty.clone(), a.value.clone())))
        .map(|a| {
            let mut m = json!({
                "uuid": uuid_for("misp-attribute", &c.origin_org, &format!("{}\0{}", c.id, a.key)),
                "type": a.ty,
                "category": table::category(&a.ty),
                "value": a.value,
                "to_ids": a.to_ids,
                "timestamp": a.ts.to_string(),
                "comment": a.comment,
                "distribution": "5",
                "disable_correlation": false,
            });
            if let Some(t) = a.tlp {
                m["Tag"] = json!([{"name": super::tlp_tag(t)}]);
            }
            m
        })
        .collect();
    let distribution = if matches!(tlp, Tlp::Clear | Tlp::Green) {
        "3"
    } else {
        "1"
    };
    Some(json!({"Event": {
        "uuid": event_uuid,
        "info": info,
        "date": &created[..10],
        "timestamp": secs.to_string(),
        "publish_timestamp": secs.to_string(),
        "published": true,
        "threat_level_id": threat_level.to_string(),
        "analysis": analysis.to_string(),
        "distribution": distribution,
        "Orgc": {"name": c.origin_org, "uuid": uuid_for("misp-org", &c.origin_org, "")},
        "Tag": [
            {"name": super::tlp_tag(tlp)},
            {"name": format!("bluewire:kind=\"{}\"", kind_label(c.kind))},
        ],
        "Attribute": attributes,
    }}))
}

fn text_attr(text: &str, secs: i64) -> Attr {
    Attr {
        ty: "text".into(),
        value: text.to_string(),
        to_ids: false,
        comment: String::new(),
        ts: secs,
        tlp: None,
        key: "text".into(),
    }
}

/// `modified` (or `created`) of an object in unix seconds, else `fallback`.
fn secs_of(o: &Value, fallback: i64) -> i64 {
    stix::timestamp_ms(&stix::version_of(o))
        .map(|ms| ms.div_euclid(1000))
        .unwrap_or(fallback)
}

/// The (path, value) pairs of a comparison that is an AND of equalities (or one).
fn equalities(c: &pattern::Comparison) -> Option<Vec<(String, String)>> {
    match c {
        pattern::Comparison::Compare {
            path,
            negated: false,
            op: pattern::Operator::Eq,
            value,
        } => Some(vec![(table::path_key(path), table::lit_text(value))]),
        pattern::Comparison::And(v) => {
            let mut out = Vec::new();
            for c in v {
                out.extend(equalities(c)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// A MISP attribute a comparison maps back to: its type, its value, and the comparison's
/// (path, value) pairs.
type Found = (&'static str, String, Vec<(String, String)>);

/// The MISP (type, value)s a pattern is, when each alternative is one the table maps back.
fn pattern_attributes(p: &pattern::Pattern) -> Option<Vec<Found>> {
    let comparisons: Vec<&pattern::Comparison> = match p {
        pattern::Pattern::Observation {
            comparison,
            qualifiers,
        } if qualifiers.is_empty() => match comparison {
            pattern::Comparison::Or(v) => v.iter().collect(),
            c => vec![c],
        },
        pattern::Pattern::Or(v) => {
            let mut out = Vec::new();
            for o in v {
                let pattern::Pattern::Observation {
                    comparison,
                    qualifiers,
                } = o
                else {
                    return None;
                };
                if !qualifiers.is_empty() {
                    return None;
                }
                out.push(comparison);
            }
            out
        }
        _ => return None,
    };
    comparisons
        .into_iter()
        .map(|c| {
            let pairs = equalities(c)?;
            let (ty, value) = table::reverse(&pairs)?;
            Some((ty, value, pairs))
        })
        .collect()
}

/// The MISP type an object's `misp:type="…"` label names.
fn label_type(o: &Value) -> Option<String> {
    o.get("labels")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|l| {
            l.strip_prefix("misp:type=\"")?
                .strip_suffix('"')
                .map(str::to_string)
        })
}

/// The attributes of a bundle's objects.
fn bundle_attributes(objects: &[Value], fallback: i64, tlp: Tlp) -> Vec<Attr> {
    let by_id: HashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o.get("id")?.as_str()?, o)))
        .collect();
    // When an observed-data saw an observable, its time.
    let mut observed_at: HashMap<&str, i64> = HashMap::new();
    for o in objects.iter().filter(|o| o["type"] == "observed-data") {
        for r in o
            .get("object_refs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_str() {
                observed_at.entry(r).or_insert_with(|| secs_of(o, fallback));
            }
        }
    }
    // Observables another observable carries (addresses of traffic, a domain's addresses,
    // a message's addresses) are written with it, not on their own.
    let mut carried: HashSet<&str> = HashSet::new();
    for o in objects {
        for key in ["src_ref", "dst_ref", "from_ref"] {
            if let Some(r) = o.get(key).and_then(Value::as_str) {
                carried.insert(r);
            }
        }
        for key in ["resolves_to_refs", "to_refs", "cc_refs", "bcc_refs"] {
            for r in o.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = r.as_str() {
                    carried.insert(r);
                }
            }
        }
    }
    let value_of = |id: &str| -> Option<String> {
        by_id
            .get(id)?
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut out = Vec::new();
    for o in objects {
        let Some(id) = o.get("id").and_then(Value::as_str) else {
            continue;
        };
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        let own_tlp = o
            .as_object()
            .and_then(stix::object_tlp)
            .filter(|t| *t > tlp);
        let comment = ["description", "name"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let ts = observed_at
            .get(id)
            .copied()
            .unwrap_or_else(|| secs_of(o, fallback));
        let mut push = |ty: &str, value: String, to_ids: bool, n: usize| {
            out.push(Attr {
                ty: ty.to_string(),
                value,
                to_ids,
                comment: comment.clone(),
                ts,
                tlp: own_tlp,
                key: format!("{id}\0{n}"),
            });
        };
        match ty {
            "indicator" => {
                let p = o.get("pattern").and_then(Value::as_str).unwrap_or("");
                match o.get("pattern_type").and_then(Value::as_str).unwrap_or("") {
                    "stix" => {
                        let parsed = pattern::parse(p).ok();
                        match parsed.as_ref().and_then(pattern_attributes) {
                            Some(found) => {
                                let hint = label_type(o);
                                for (n, (ty, value, pairs)) in found.into_iter().enumerate() {
                                    // A misp:type label picks between types of one shape
                                    // (domain/hostname, url/uri).
                                    let ty = match &hint {
                                        Some(h)
                                            if table::attribute_pairs(h, &value).as_ref()
                                                == Some(&pairs) =>
                                        {
                                            h.as_str()
                                        }
                                        _ => ty,
                                    };
                                    push(ty, value, true, n);
                                }
                            }
                            None if parsed.is_some() => {
                                push("stix2-pattern", p.to_string(), true, 0)
                            }
                            None => {}
                        }
                    }
                    "sigma" => push("sigma", p.to_string(), true, 0),
                    "yara" => push("yara", p.to_string(), true, 0),
                    "snort" | "suricata" => push("snort", p.to_string(), true, 0),
                    _ => {}
                }
            }
            "vulnerability" => {
                let name = o
                    .get("external_references")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|r| r["source_name"] == "cve")
                    .and_then(|r| r.get("external_id").and_then(Value::as_str))
                    .or_else(|| o.get("name").and_then(Value::as_str));
                if let Some(n) = name {
                    push("vulnerability", n.to_string(), false, 0);
                }
            }
            "ipv4-addr" | "ipv6-addr" if !carried.contains(id) => {
                if let Some(v) = value_of(id) {
                    push("ip-dst", v, false, 0);
                }
            }
            "network-traffic" => {
                for (side, ip, ip_port) in [
                    ("src", "ip-src", "ip-src|port"),
                    ("dst", "ip-dst", "ip-dst|port"),
                ] {
                    let Some(addr) = o
                        .get(format!("{side}_ref"))
                        .and_then(Value::as_str)
                        .and_then(value_of)
                    else {
                        continue;
                    };
                    match o.get(format!("{side}_port")).and_then(Value::as_i64) {
                        Some(p) => push(ip_port, format!("{addr}|{p}"), false, 0),
                        None => push(ip, addr, false, 0),
                    }
                }
            }
            "domain-name" if !carried.contains(id) => {
                let Some(domain) = value_of(id) else { continue };
                let ips: Vec<String> = o
                    .get("resolves_to_refs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| value_of(r.as_str()?))
                    .collect();
                if ips.is_empty() {
                    push("domain", domain, false, 0);
                } else {
                    for (n, ip) in ips.into_iter().enumerate() {
                        push("domain|ip", format!("{domain}|{ip}"), false, n);
                    }
                }
            }
            "url" => {
                if let Some(v) = value_of(id) {
                    push("url", v, false, 0);
                }
            }
            "email-addr" if !carried.contains(id) => {
                if let Some(v) = value_of(id) {
                    push("email", v, false, 0);
                }
            }
            "email-message" => {
                let mut n = 0;
                if let Some(v) = o.get("from_ref").and_then(Value::as_str).and_then(value_of) {
                    push("email-src", v, false, n);
                    n += 1;
                }
                for r in o
                    .get("to_refs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(v) = r.as_str().and_then(value_of) {
                        push("email-dst", v, false, n);
                        n += 1;
                    }
                }
                if let Some(s) = o.get("subject").and_then(Value::as_str) {
                    push("email-subject", s.to_string(), false, n);
                }
            }
            "file" => {
                let name = o.get("name").and_then(Value::as_str);
                let hashes = o
                    .get("hashes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut n = 0;
                for (alg, h) in &hashes {
                    let Some(h) = h.as_str() else { continue };
                    let Some((hash_ty, _)) =
                        table::reverse(&[(format!("file:hashes.{alg}"), h.to_string())])
                    else {
                        continue;
                    };
                    match name {
                        Some(f)
                            if table::attribute_facts(
                                &format!("filename|{hash_ty}"),
                                &format!("{f}|{h}"),
                            )
                            .is_ok() =>
                        {
                            push(&format!("filename|{hash_ty}"), format!("{f}|{h}"), false, n);
                        }
                        _ => push(hash_ty, h.to_string(), false, n),
                    }
                    n += 1;
                }
                if n == 0
                    && let Some(f) = name
                {
                    push("filename", f.to_string(), false, 0);
                }
            }
            "mutex" => simple(o, "name", "mutex", &mut push),
            "windows-registry-key" => simple(o, "key", "regkey", &mut push),
            "mac-addr" => simple(o, "value", "mac-address", &mut push),
            "autonomous-system" => {
                if let Some(n) = o.get("number").and_then(Value::as_i64) {
                    push("AS", format!("AS{n}"), false, 0);
                }
            }
            "x509-certificate" => {
                let hashes = o
                    .get("hashes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (n, (alg, h)) in hashes.iter().enumerate() {
                    if let Some(h) = h.as_str()
                        && let Some((t, v)) = table::reverse(&[(
                            format!("x509-certificate:hashes.{alg}"),
                            h.to_string(),
                        )])
                    {
                        push(t, v, false, n);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn simple(o: &Value, prop: &str, ty: &str, push: &mut impl FnMut(&str, String, bool, usize)) {
    if let Some(v) = o.get(prop).and_then(Value::as_str) {
        push(ty, v.to_string(), false, 0);
    }
}

/// A MISP feed's `manifest.json` for `events` (each `{"Event": {...}}` or bare): event uuid →
/// the summary MISP lists feeds by, as PyMISP's feed generator writes it.
pub fn feed_manifest(events: &[Value]) -> Value {
    let mut m = Map::new();
    for e in events {
        let ev = e.get("Event").unwrap_or(e);
        let Some(uuid) = ev.get("uuid").and_then(Value::as_str) else {
            continue;
        };
        let num = |k: &str| super::int(ev.get(k)).unwrap_or(0);
        let tags: Vec<Value> = ev
            .get("Tag")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name"))
            .map(|n| json!({"name": n}))
            .collect();
        m.insert(
            uuid.to_string(),
            json!({
                "Orgc": ev.get("Orgc").cloned().unwrap_or_else(|| json!({})),
                "Tag": tags,
                "info": ev.get("info").cloned().unwrap_or_else(|| "".into()),
                "date": ev.get("date").cloned().unwrap_or_else(|| "".into()),
                "analysis": num("analysis"),
                "threat_level_id": num("threat_level_id"),
                "timestamp": num("timestamp"),
            }),
        );
    }
    Value::Object(m)
}
