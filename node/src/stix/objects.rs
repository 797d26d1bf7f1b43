//! Per-object STIX 2.1 checks: identifiers, timestamps, required properties per type,
//! references, and indicator patterns. Each refusal names the property and what to do.

use serde_json::{Map, Value};

use super::{MAX_PATTERN_BYTES, pattern};

/// What kind of STIX object a type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Domain objects: versioned, created/modified required.
    Sdo,
    /// Relationship objects: versioned.
    Sro,
    /// Cyber-observables: not versioned (no created/modified).
    Sco,
    /// Meta objects (marking and extension definitions, language content).
    Smo,
}

/// Each type STIX 2.1 defines, its class, and the properties it requires ("a|b": one of).
const TYPES: &[(&str, Class, &[&str])] = &[
    ("attack-pattern", Class::Sdo, &["name"]),
    ("campaign", Class::Sdo, &["name"]),
    ("course-of-action", Class::Sdo, &["name"]),
    ("grouping", Class::Sdo, &["context", "object_refs"]),
    ("identity", Class::Sdo, &["name"]),
    ("incident", Class::Sdo, &["name"]),
    (
        "indicator",
        Class::Sdo,
        &["pattern", "pattern_type", "valid_from"],
    ),
    ("infrastructure", Class::Sdo, &["name"]),
    ("intrusion-set", Class::Sdo, &["name"]),
    ("location", Class::Sdo, &["region|country|latitude"]),
    ("malware", Class::Sdo, &["is_family"]),
    (
        "malware-analysis",
        Class::Sdo,
        &["product", "result|analysis_sco_refs"],
    ),
    ("note", Class::Sdo, &["content", "object_refs"]),
    (
        "observed-data",
        Class::Sdo,
        &[
            "first_observed",
            "last_observed",
            "number_observed",
            "object_refs|objects",
        ],
    ),
    ("opinion", Class::Sdo, &["opinion", "object_refs"]),
    ("report", Class::Sdo, &["name", "published", "object_refs"]),
    ("threat-actor", Class::Sdo, &["name"]),
    ("tool", Class::Sdo, &["name"]),
    ("vulnerability", Class::Sdo, &["name"]),
    (
        "relationship",
        Class::Sro,
        &["relationship_type", "source_ref", "target_ref"],
    ),
    ("sighting", Class::Sro, &["sighting_of_ref"]),
    ("marking-definition", Class::Smo, &[]),
    (
        "extension-definition",
        Class::Smo,
        &[
            "created_by_ref",
            "name",
            "schema",
            "version",
            "extension_types",
        ],
    ),
    ("language-content", Class::Smo, &["object_ref", "contents"]),
    ("artifact", Class::Sco, &["payload_bin|url"]),
    ("autonomous-system", Class::Sco, &["number"]),
    ("directory", Class::Sco, &["path"]),
    ("domain-name", Class::Sco, &["value"]),
    ("email-addr", Class::Sco, &["value"]),
    ("email-message", Class::Sco, &["is_multipart"]),
    ("file", Class::Sco, &["name|hashes"]),
    ("ipv4-addr", Class::Sco, &["value"]),
    ("ipv6-addr", Class::Sco, &["value"]),
    ("mac-addr", Class::Sco, &["value"]),
    ("mutex", Class::Sco, &["name"]),
    (
        "network-traffic",
        Class::Sco,
        &["protocols", "src_ref|dst_ref"],
    ),
    ("process", Class::Sco, &[]),
    ("software", Class::Sco, &["name"]),
    ("url", Class::Sco, &["value"]),
    ("user-account", Class::Sco, &[]),
    ("windows-registry-key", Class::Sco, &[]),
    ("x509-certificate", Class::Sco, &[]),
];

const OPINIONS: [&str; 5] = [
    "strongly-disagree",
    "disagree",
    "neutral",
    "agree",
    "strongly-agree",
];

/// Check one object; returns (id, type, version) where version is `modified` (or
/// `created`), "" for cyber-observables.
pub(super) fn check(o: &Map<String, Value>) -> Result<(String, String, String), String> {
    let ty = string(o, "type")?;
    check_type_name(ty)?;
    let id = string(o, "id")?;
    check_id(id, Some(ty))?;
    let class = match TYPES.iter().find(|(t, ..)| *t == ty) {
        Some((_, class, required)) => {
            for r in *required {
                if !r.split('|').any(|p| o.contains_key(p)) {
                    return Err(match r.contains('|') {
                        true => format!(
                            "a {ty} needs one of the properties {}",
                            r.replace('|', ", ")
                        ),
                        false => format!("a {ty} needs the property {r:?}"),
                    });
                }
            }
            *class
        }
        None => custom_class(o, ty)?,
    };
    match o.get("spec_version").map(Value::as_str) {
        Some(Some("2.1")) => {}
        None if class == Class::Sco => {}
        None => return Err("spec_version is missing: STIX 2.1 objects say \"2.1\"".into()),
        Some(v) => {
            return Err(format!(
                "spec_version is {}, not \"2.1\": only STIX 2.1 is accepted",
                v.map(|s| format!("{s:?}"))
                    .unwrap_or_else(|| "not a string".into())
            ));
        }
    }
    let mut version = String::new();
    if class != Class::Sco {
        let created = timestamp(o, "created")?.ok_or("the property \"created\" is missing")?;
        version = o
            .get("created")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if class != Class::Smo || o.contains_key("modified") {
            let modified = match timestamp(o, "modified")? {
                Some(m) => m,
                None if class == Class::Smo => created,
                None => return Err("the property \"modified\" is missing".into()),
            };
            if modified < created {
                return Err("modified is earlier than created".into());
            }
            if let Some(m) = o.get("modified").and_then(Value::as_str) {
                version = m.to_string();
            }
        }
    }
    check_refs(o)?;
    check_type_specific(o, ty)?;
    Ok((id.to_string(), ty.to_string(), version))
}

/// An object type STIX does not define: custom (`x-`) or declared by an extension.
fn custom_class(o: &Map<String, Value>, ty: &str) -> Result<Class, String> {
    let declared = o
        .get("extensions")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|e| e.values())
        .filter_map(|v| v.get("extension_type").and_then(Value::as_str))
        .find(|t| t.starts_with("new-"));
    match declared {
        Some("new-sdo") => Ok(Class::Sdo),
        Some("new-sro") => Ok(Class::Sro),
        Some("new-sco") => Ok(Class::Sco),
        _ if ty.starts_with("x-") => Ok(if o.contains_key("created") {
            Class::Sdo
        } else {
            Class::Sco
        }),
        _ => Err(format!(
            "type {ty:?} is not a STIX 2.1 object type: a custom object needs an extension-definition of extension_type new-sdo, new-sco or new-sro (or an x- prefix)"
        )),
    }
}

fn string<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("the property {key:?} is not a string")),
        None => Err(format!("the property {key:?} is missing")),
    }
}

/// Type names: 3–250 characters of a–z, 0–9 and hyphens, no double hyphen.
fn check_type_name(ty: &str) -> Result<(), String> {
    let ok = (3..=250).contains(&ty.len())
        && ty
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ty.contains("--")
        && !ty.starts_with('-')
        && !ty.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "type {ty:?} is not a STIX type name (3 to 250 characters of a-z, 0-9 and single hyphens)"
        ))
    }
}

/// `TYPE--UUID`, UUID in its 36-character hyphenated form; `ty` when the type must match.
pub(super) fn check_id(id: &str, ty: Option<&str>) -> Result<(), String> {
    let Some((t, uuid)) = id.rsplit_once("--") else {
        return Err(format!("{id:?} is not a STIX identifier (TYPE--UUID)"));
    };
    if let Some(want) = ty
        && t != want
    {
        return Err(format!(
            "id {id:?} does not start with the object's type {want:?}"
        ));
    }
    if t.is_empty() || uuid.len() != 36 || uuid::Uuid::try_parse(uuid).is_err() {
        return Err(format!(
            "{id:?} is not a STIX identifier: TYPE--UUID with an RFC 4122 UUID"
        ));
    }
    // One spelling per id: an upper-case alias of an official marking would slip past
    // every comparison with it.
    if uuid.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{id:?} spells its UUID in upper case: STIX ids are lower case"
        ));
    }
    Ok(())
}

/// A STIX timestamp: RFC 3339, UTC with a literal `Z`.
fn timestamp(o: &Map<String, Value>, key: &str) -> Result<Option<time::OffsetDateTime>, String> {
    let Some(v) = o.get(key) else {
        return Ok(None);
    };
    let s = v
        .as_str()
        .ok_or_else(|| format!("{key} is not a timestamp string"))?;
    parse_timestamp(s).map(Some).ok_or_else(|| {
        format!("{key} {s:?} is not a STIX timestamp (e.g. 2026-01-31T09:30:00.000Z, UTC)")
    })
}

pub(crate) fn parse_timestamp(s: &str) -> Option<time::OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b.get(10) != Some(&b'T') || b.last() != Some(&b'Z') {
        return None;
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// `*_ref` properties hold one identifier, `*_refs` a list; `created_by_ref` an identity,
/// `object_marking_refs` marking definitions.
fn check_refs(o: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in o {
        let want = match k.as_str() {
            "created_by_ref" => Some("identity"),
            "object_marking_refs" => Some("marking-definition"),
            _ => None,
        };
        if k.ends_with("_ref") {
            let id = v
                .as_str()
                .ok_or_else(|| format!("{k} is not an identifier string"))?;
            check_id(id, want).map_err(|e| format!("{k}: {e}"))?;
        } else if k.ends_with("_refs") {
            let list = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{k} is not a non-empty list of identifiers"))?;
            for id in list {
                let id = id
                    .as_str()
                    .ok_or_else(|| format!("{k} holds something that is not an identifier"))?;
                check_id(id, want).map_err(|e| format!("{k}: {e}"))?;
            }
        }
    }
    if let Some(g) = o.get("granular_markings") {
        let list = g
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or("granular_markings is not a non-empty list")?;
        for m in list {
            let selectors = m.get("selectors").and_then(Value::as_array);
            if selectors.is_none_or(|s| s.is_empty()) {
                return Err("a granular marking has no selectors".into());
            }
            match (m.get("marking_ref"), m.get("lang")) {
                (Some(Value::String(r)), _) => check_id(r, Some("marking-definition"))
                    .map_err(|e| format!("granular marking_ref: {e}"))?,
                (None, Some(Value::String(_))) => {}
                _ => return Err("a granular marking needs a marking_ref or a lang".into()),
            }
        }
    }
    Ok(())
}

fn check_type_specific(o: &Map<String, Value>, ty: &str) -> Result<(), String> {
    match ty {
        "indicator" => {
            let from = timestamp(o, "valid_from")?;
            if let (Some(from), Some(until)) = (from, timestamp(o, "valid_until")?)
                && until <= from
            {
                return Err("valid_until is not later than valid_from".into());
            }
            let p = string(o, "pattern")?;
            let pattern_type = string(o, "pattern_type")?;
            if p.len() > MAX_PATTERN_BYTES {
                return Err(format!(
                    "the pattern is {} bytes, over the {MAX_PATTERN_BYTES}-byte limit",
                    p.len()
                ));
            }
            if pattern_type == "stix" {
                pattern::parse(p).map_err(|e| format!("pattern {p:?}: {e}"))?;
            } else if pattern_type.is_empty() {
                return Err("pattern_type is empty (stix, sigma, snort, suricata, yara, …)".into());
            }
        }
        "malware" => {
            let family = o
                .get("is_family")
                .and_then(Value::as_bool)
                .ok_or("is_family is not true or false")?;
            if family && !o.contains_key("name") {
                return Err("a malware family (is_family true) needs a name".into());
            }
        }
        "opinion" => {
            let op = string(o, "opinion")?;
            if !OPINIONS.contains(&op) {
                return Err(format!(
                    "opinion {op:?} is not one of {}",
                    OPINIONS.join(", ")
                ));
            }
        }
        "report" => {
            timestamp(o, "published")?;
        }
        "observed-data" => {
            let (Some(first), Some(last)) = (
                timestamp(o, "first_observed")?,
                timestamp(o, "last_observed")?,
            ) else {
                return Err("first_observed and last_observed are required".into());
            };
            if last < first {
                return Err("last_observed is earlier than first_observed".into());
            }
            count(o, "number_observed", 1)?;
        }
        "sighting" => {
            if o.contains_key("count") {
                count(o, "count", 0)?;
            }
            let of = string(o, "sighting_of_ref")?;
            let of_type = of.split("--").next().unwrap_or("");
            if TYPES
                .iter()
                .any(|(t, c, _)| *t == of_type && matches!(c, Class::Sco | Class::Sro))
            {
                return Err(format!(
                    "sighting_of_ref points at a {of_type}: a sighting is of a domain object (an indicator, malware, …)"
                ));
            }
        }
        "relationship" => {
            let rt = string(o, "relationship_type")?;
            if rt.is_empty() {
                return Err("relationship_type is empty".into());
            }
        }
        "marking-definition" => {
            let has_def = o.contains_key("definition_type") && o.contains_key("definition");
            if !has_def && !o.contains_key("extensions") {
                return Err(
                    "a marking-definition needs definition_type and definition, or an extension"
                        .into(),
                );
            }
        }
        _ => {}
    }
    Ok(())
}

fn count(o: &Map<String, Value>, key: &str, min: u64) -> Result<(), String> {
    match o.get(key).and_then(Value::as_u64) {
        Some(n) if (min..=999_999_999).contains(&n) => Ok(()),
        _ => Err(format!("{key} is not an integer from {min} to 999,999,999")),
    }
}
