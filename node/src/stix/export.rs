//! The STIX 2.1 form of what Bluewire carries. Deterministic: the same message gives the same
//! objects, ids included, on every node, so tools that pull from several nodes see one object.
//!
//! | Bluewire | STIX 2.1 |
//! |---|---|
//! | incident report, case open | `incident` + incident-core extension ([`INCIDENT_CORE`], v1.0) |
//! | situation report, large-scale assessment | `report` |
//! | advice | `opinion` |
//! | free text, public-communication line | `note` |
//! | STIX bundle | its own objects (markings raised to the message's marking in force) |
//! | escalation, crisis status, reserve, notice, lessons learned, reopen | `bluewire-message` (custom, [`EXTENSION`]) |
//!
//! Every object Bluewire makes carries `created_by_ref` (an `identity` per origin
//! organisation), the TLP 2.0 `object_marking_refs` in force, and the [`EXTENSION`]
//! property extension naming the message (origin, id, author, kind, level, cluster).
//! Marking changes and retractions have no object: they are applied (retracted messages
//! are not exported; raised markings are).

use bluewire_proto::v1::{self as pb, Content, Tlp, content::Body};
use serde_json::{Map, Value, json};

use crate::envelope::{kind_label, level_label};

/// The OASIS incident-core extension (stix-common-objects, version 1.0).
pub const INCIDENT_CORE: &str = "extension-definition--ef765651-680c-498d-9894-99799f2fa126";
/// Bluewire's extension definition: the custom `bluewire-message` object and the property
/// extension naming the message each object came from. Documented in docs/STIX.md.
pub const EXTENSION: &str = "extension-definition--1f6b4bd4-5c1a-4c76-9b7e-3a4cb10e771e";
/// The identity that publishes [`EXTENSION`].
const BLUEWIRE_IDENTITY: &str = "identity--6e0c1f2e-7d0f-4f55-8f6e-2f8ab10e771e";
/// The last four bytes of every UUID Bluewire derives ("b10e771e"): how a receiver tells
/// that an object in a member's bundle claims an id Bluewire makes for its own objects.
const TAG: [u8; 4] = [0xb1, 0x0e, 0x77, 0x1e];
/// `created`/`modified` of the objects that are not messages (identities, the extension).
const EPOCH: &str = "2026-01-01T00:00:00.000Z";

/// A deterministic STIX id for (type, origin, key): a UUID in version-4 form made from a
/// SHA-256 of the three, so every node derives the same id for the same message.
pub fn stix_id(ty: &str, origin: &str, key: &str) -> String {
    let mut input = Vec::with_capacity(ty.len() + origin.len() + key.len() + 24);
    input.extend_from_slice(b"bluewire/v1/stix\0");
    for part in [ty, origin, key] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut bytes = [0u8; 16];
    bytes[..12].copy_from_slice(&d.as_ref()[..12]);
    bytes[12..].copy_from_slice(&TAG);
    format!(
        "{ty}--{}",
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    )
}

/// Whether `id` is one Bluewire derives ([`stix_id`] and its own two constants). A third
/// party's random UUID ends in the tag once in 2^32.
pub fn is_bluewire_id(id: &str) -> bool {
    id.rsplit_once("--")
        .is_some_and(|(_, u)| u.len() == 36 && u.ends_with("b10e771e"))
}

/// The `identity` an organisation's objects are created by.
pub fn identity_id(org: &str) -> String {
    stix_id("identity", org, "")
}

pub fn identity(org: &str) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": identity_id(org),
        "created": EPOCH,
        "modified": EPOCH,
        "name": org,
        "description": format!("The Bluewire organisation {org}, as its federation certificate names it."),
        "identity_class": "organization",
    })
}

/// The objects every export bundle starts with: Bluewire's identity and extension definition.
pub fn preamble() -> Vec<Value> {
    vec![
        json!({
            "type": "identity",
            "spec_version": "2.1",
            "id": BLUEWIRE_IDENTITY,
            "created": EPOCH,
            "modified": EPOCH,
            "name": "Bluewire",
            "description": "Federated, signed incident sharing between organisations.",
            "identity_class": "system",
        }),
        json!({
            "type": "extension-definition",
            "spec_version": "2.1",
            "id": EXTENSION,
            "created_by_ref": BLUEWIRE_IDENTITY,
            "created": EPOCH,
            "modified": EPOCH,
            "name": "bluewire-message",
            "description": "Names the signed Bluewire message an object came from (message_id, origin, author, kind, level, cluster), and defines the bluewire-message object for workflow steps STIX has no object for (escalation, crisis status, reserve request, notice, lessons learned, reopen).",
            "schema": "docs/STIX.md in the Bluewire repository",
            "version": "1.0.0",
            "extension_types": ["new-sdo", "property-extension"],
        }),
    ]
}

/// A STIX timestamp with millisecond precision.
pub fn timestamp(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The STIX objects for one message, marked with `tlp` (its marking in force). The
/// identities they reference are not included: see [`bundle`].
pub fn objects(c: &Content, tlp: Tlp) -> Vec<Value> {
    if let Some(Body::Stix(b)) = &c.body {
        return bundle_objects(c, b, tlp);
    }
    let Some((ty, mut props)) = describe(c) else {
        return Vec::new();
    };
    let created = timestamp(c.created_at_ms);
    let mut o = Map::new();
    o.insert("type".into(), ty.into());
    o.insert("spec_version".into(), "2.1".into());
    o.insert("id".into(), stix_id(ty, &c.origin_org, &c.id).into());
    o.insert("created_by_ref".into(), identity_id(&c.origin_org).into());
    o.insert("created".into(), created.clone().into());
    o.insert("modified".into(), created.into());
    o.append(&mut props);
    let mut labels: Vec<Value> = o
        .remove("labels")
        .and_then(|l| l.as_array().cloned())
        .unwrap_or_default();
    if let Some(m) = &c.marking {
        if m.exercise {
            labels.push("exercise".into());
        }
        if !m.classification.is_empty() {
            labels.push(format!("classification:{}", m.classification).into());
        }
    }
    if !labels.is_empty() {
        o.insert("labels".into(), labels.into());
    }
    if let Some(m) = super::marking_id(tlp) {
        o.insert("object_marking_refs".into(), json!([m]));
    }
    let ext = o
        .entry("extensions")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(ext) = ext.as_object_mut() {
        let mut mine = json!({
            "message_id": c.id,
            "origin": c.origin_org,
            "author": c.author,
            "kind": kind_label(c.kind),
            "level": level_label(c.level),
        });
        if !c.cluster.is_empty() {
            mine["cluster"] = c.cluster.clone().into();
        }
        let new_sdo = ty == "bluewire-message";
        mine["extension_type"] = if new_sdo {
            "new-sdo"
        } else {
            "property-extension"
        }
        .into();
        ext.insert(EXTENSION.into(), mine);
    }
    vec![Value::Object(o)]
}

/// A STIX bundle message's own objects, markings raised to `tlp`, vouched for by the origin.
fn bundle_objects(c: &Content, b: &pb::StixBundle, tlp: Tlp) -> Vec<Value> {
    let Ok(Value::Object(mut bundle)) = serde_json::from_str::<Value>(&b.json) else {
        return Vec::new();
    };
    let Some(Value::Array(objects)) = bundle.remove("objects") else {
        return Vec::new();
    };
    let by = identity_id(&c.origin_org);
    objects
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                super::raise_marking(m, tlp);
                let versioned = m.contains_key("created");
                let meta = matches!(
                    m.get("type").and_then(Value::as_str),
                    Some("marking-definition" | "extension-definition")
                );
                if versioned && !meta && !m.contains_key("created_by_ref") {
                    m.insert("created_by_ref".into(), by.clone().into());
                }
            }
            o
        })
        .collect()
}

/// A bundle of `objects` with the identities they reference and Bluewire's preamble, under a
/// bundle id derived from `seed`.
pub fn bundle(objects: Vec<Value>, seed: &str) -> Value {
    let mut all = preamble();
    let mut origins = std::collections::BTreeSet::new();
    for o in &objects {
        if let Some(ext) = o.get("extensions").and_then(|e| e.get(EXTENSION))
            && let Some(origin) = ext.get("origin").and_then(Value::as_str)
        {
            origins.insert(origin.to_string());
        }
    }
    let present: std::collections::HashSet<&str> = objects
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str))
        .collect();
    all.extend(
        origins
            .iter()
            .filter(|org| !present.contains(identity_id(org).as_str()))
            .map(|org| identity(org)),
    );
    all.extend(objects);
    json!({
        "type": "bundle",
        "id": stix_id("bundle", "", seed),
        "objects": all,
    })
}

/// The identities of the origins whose bundle messages are among `contents` (their objects
/// name them in `created_by_ref` but carry no Bluewire extension).
pub fn origin_identities<'a>(contents: impl Iterator<Item = &'a Content>) -> Vec<Value> {
    let orgs: std::collections::BTreeSet<&str> = contents
        .filter(|c| matches!(c.body, Some(Body::Stix(_))))
        .map(|c| c.origin_org.as_str())
        .collect();
    orgs.into_iter().map(identity).collect()
}

/// The STIX incident a case is (from its case-open message's origin and id).
fn case_ref(link: Option<&pb::CaseLink>) -> Option<String> {
    let case = link?.case.as_ref()?;
    Some(stix_id("incident", &case.origin, &case.id))
}

fn refs(c: &Content, link: Option<&pb::CaseLink>) -> Value {
    json!([case_ref(link).unwrap_or_else(|| identity_id(&c.origin_org))])
}

fn incident_core(determination: &str, status: &str) -> Value {
    json!({
        INCIDENT_CORE: {
            "extension_type": "property-extension",
            "determination": determination,
            "investigation_status": status,
        }
    })
}

/// The STIX type and properties for a message that is not a bundle.
fn describe(c: &Content) -> Option<(&'static str, Map<String, Value>)> {
    use crate::case::{assessment_label, crisis_label, mode_label};
    let body = c.body.as_ref()?;
    let v = match body {
        Body::FreeText(t) => (
            "note",
            json!({
                "abstract": t.title,
                "content": if t.body.is_empty() { &t.title } else { &t.body },
                "object_refs": [identity_id(&c.origin_org)],
            }),
        ),
        Body::Incident(i) => {
            let status = i.status.to_ascii_lowercase();
            let closed = ["closed", "resolved", "recovered"]
                .iter()
                .any(|w| status.contains(w));
            let mut labels: Vec<String> = Vec::new();
            if !i.taxonomy_class.is_empty() {
                labels.push(format!("rsit:{}=\"{}\"", i.taxonomy_class, i.taxonomy_type));
            }
            labels.extend(i.sectors.iter().map(|s| format!("sector:{s}")));
            labels.extend(i.nis2_sectors.iter().map(|s| format!("nis2-sector:{s}")));
            labels.extend(i.affected_countries.iter().map(|s| format!("country:{s}")));
            let mut o = json!({
                "name": i.title,
                "description": if i.description.is_empty() { &i.title } else { &i.description },
                "extensions": incident_core(
                    if status.contains("false") { "false-positive" } else { "confirmed" },
                    if closed { "closed" } else if status.is_empty() { "new" } else { "open" },
                ),
            });
            if !labels.is_empty() {
                o["labels"] = labels.into();
            }
            ("incident", o)
        }
        Body::CaseOpen(o) => {
            // A case is an incident the federation works on together; its id is the one
            // every later step refers to.
            let mut v = json!({
                "name": o.title,
                "description": if o.summary.is_empty() { &o.title } else { &o.summary },
                "extensions": incident_core("suspected", "open"),
            });
            let labels: Vec<String> = o
                .sectors
                .iter()
                .map(|s| format!("nis2-sector:{s}"))
                .chain(o.affected_countries.iter().map(|s| format!("country:{s}")))
                .chain(std::iter::once("bluewire:case".to_string()))
                .collect();
            v["labels"] = labels.into();
            ("incident", v)
        }
        Body::SituationReport(s) => {
            let description = [
                ("Impact", &s.impact),
                ("Consequences", &s.consequences),
                ("Response measures", &s.response_measures),
                ("Recovery measures", &s.recovery_measures),
            ]
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(h, t)| format!("{h}: {t}"))
            .collect::<Vec<_>>()
            .join("\n");
            (
                "report",
                json!({
                    "name": format!("Situation report {}", s.number),
                    "description": description,
                    "published": timestamp(c.created_at_ms),
                    "report_types": ["threat-report"],
                    "object_refs": refs(c, s.link.as_ref()),
                }),
            )
        }
        Body::Assessment(a) => (
            "report",
            json!({
                "name": format!(
                    "Large-scale incident assessment: {} to {}",
                    assessment_label(pb::AssessmentState::try_from(a.from).unwrap_or_default()),
                    assessment_label(pb::AssessmentState::try_from(a.to).unwrap_or_default()),
                ),
                "description": a.rationale,
                "published": timestamp(c.created_at_ms),
                "report_types": ["threat-report"],
                "object_refs": refs(c, a.link.as_ref()),
            }),
        ),
        Body::Advice(a) => {
            let verdict = pb::AssessmentState::try_from(a.verdict).unwrap_or_default();
            let opinion = match verdict {
                pb::AssessmentState::OngoingLargeScale => "strongly-agree",
                pb::AssessmentState::PotentialLargeScale => "agree",
                pb::AssessmentState::NotLargeScale => "disagree",
                _ => "neutral",
            };
            (
                "opinion",
                json!({
                    "opinion": opinion,
                    "explanation": format!(
                        "Advice: {} ({} confidence). {}",
                        assessment_label(verdict),
                        match pb::Confidence::try_from(a.confidence).unwrap_or_default() {
                            pb::Confidence::High => "high",
                            pb::Confidence::Medium => "medium",
                            pb::Confidence::Low => "low",
                            pb::Confidence::Unspecified => "unstated",
                        },
                        a.rationale
                    ),
                    "object_refs": refs(c, a.link.as_ref()),
                }),
            )
        }
        Body::Communication(l) => (
            "note",
            json!({
                "abstract": format!("Communication line for {}", if l.audience.is_empty() { "the public" } else { &l.audience }),
                "content": l.text,
                "object_refs": refs(c, l.link.as_ref()),
            }),
        ),
        // A body this node could not open: nothing to describe.
        Body::MarkingChange(_) | Body::Retraction(_) | Body::Stix(_) | Body::Sealed(_) => {
            return None;
        }
        Body::Escalation(e) => custom(
            e.link.as_ref(),
            "Escalation",
            &e.summary,
            json!({"proposed_level": level_label(e.proposed_level), "affected_countries": e.affected_countries, "sectors": e.sectors}),
        ),
        Body::CrisisStatus(s) => custom(
            s.link.as_ref(),
            &format!(
                "Crisis status: {} / {}",
                mode_label(pb::PoliticalMode::try_from(s.to_mode).unwrap_or_default()),
                crisis_label(pb::CrisisState::try_from(s.to_crisis).unwrap_or_default())
            ),
            &s.rationale,
            json!({}),
        ),
        Body::Reserve(r) => custom(
            r.link.as_ref(),
            &format!(
                "Reserve request: {}",
                pb::ReserveStage::try_from(r.stage)
                    .map(|s| s
                        .as_str_name()
                        .trim_start_matches("RESERVE_STAGE_")
                        .to_ascii_lowercase())
                    .unwrap_or_default()
            ),
            &[
                r.affected_entity.as_str(),
                r.impact.as_str(),
                r.note.as_str(),
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
            json!({"services": r.services, "provider": r.provider}),
        ),
        Body::Notice(n) => custom(
            n.link.as_ref(),
            &format!(
                "Notice: {}",
                pb::NoticeKind::try_from(n.notice)
                    .map(|s| s
                        .as_str_name()
                        .trim_start_matches("NOTICE_KIND_")
                        .to_ascii_lowercase())
                    .unwrap_or_default()
            ),
            &n.summary,
            json!({}),
        ),
        Body::Lessons(l) => custom(
            l.link.as_ref(),
            "Lessons learned",
            &l.findings.join("\n"),
            json!({"actions": l.actions.iter().map(|a| json!({"action": a.action, "owner": a.owner, "status": a.status})).collect::<Vec<_>>()}),
        ),
        Body::Reopen(r) => custom(r.link.as_ref(), "Case reopened", &r.reason, json!({})),
    };
    let (ty, Value::Object(mut props)) = v else {
        return None;
    };
    // STIX prohibits empty lists.
    props.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
    Some((ty, props))
}

/// A workflow step with no STIX equivalent, as a `bluewire-message` object.
fn custom(
    link: Option<&pb::CaseLink>,
    name: &str,
    description: &str,
    mut extra: Value,
) -> (&'static str, Value) {
    extra["name"] = name.into();
    extra["description"] = if description.is_empty() {
        name
    } else {
        description
    }
    .into();
    if let Some(case) = case_ref(link) {
        extra["case_ref"] = case.into();
    }
    ("bluewire-message", extra)
}

/// One bundle of everything in `messages` (each with its marking in force), in order: the
/// identities of every origin, then each message's objects; an object version that two
/// messages carry appears once. Returns the bundle and how many objects came from messages.
pub fn export_bundle(messages: &[(Content, Tlp)]) -> (Value, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut objects = Vec::new();
    for (c, tlp) in messages {
        for o in self::objects(c, *tlp) {
            let key = (
                o.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                super::version_of(&o),
            );
            if seen.insert(key) {
                objects.push(o);
            }
        }
    }
    let n = objects.len();
    let mut all = origin_identities(messages.iter().map(|(c, _)| c));
    all.extend(objects);
    let seed = messages
        .iter()
        .map(|(c, _)| format!("{}/{}", c.origin_org, c.id))
        .collect::<Vec<_>>()
        .join(",");
    (bundle(all, &seed), n)
}
