//! STIX 2.1 content: the checks a bundle passes at the origin and again at every receiver,
//! the TLP rule between a bundle and its envelope, and (in [`export`]) the STIX form of
//! everything Bluewire carries.
//!
//! Pure: no store, no network, no clock. The envelope's TLP is authoritative: an object may
//! carry the same or a stricter TLP 2.0 marking; an object with none is given the envelope's
//! marking by the origin ([`normalise`]); a bundle with a looser marking is refused.
//!
//! What is checked (per object, see [`objects`]): the id form `TYPE--UUID` with the object's
//! own type, `spec_version` "2.1", RFC 3339 UTC timestamps with `modified` not before
//! `created`, the properties STIX 2.1 requires for each type, every `*_ref`/`*_refs` an
//! identifier of the kind the property names, markings, and each `stix` indicator pattern
//! through the patterning grammar ([`pattern`]). Types STIX does not define are accepted
//! only as custom objects (`x-` prefix, or a `new-sdo`/`new-sco`/`new-sro` extension).
//! Limits: the bundle fits the envelope (1 MiB of content) and holds at most
//! [`MAX_OBJECTS`] objects; an indicator pattern is at most [`MAX_PATTERN_BYTES`].

pub mod export;
mod objects;
pub mod pattern;
#[cfg(test)]
mod tests;

use bluewire_proto::v1::Tlp;
use serde_json::{Map, Value};

/// Most objects one bundle message carries (importers split larger sets).
pub const MAX_OBJECTS: usize = 5_000;
/// Longest indicator pattern accepted.
pub const MAX_PATTERN_BYTES: usize = 64 * 1024;

/// The TLP 2.0 marking definitions (extension `extension-definition--60a3c5c5-…`).
pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";
pub const TLP_CLEAR: &str = "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487";
pub const TLP_GREEN: &str = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb";
pub const TLP_AMBER: &str = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421";
pub const TLP_AMBER_STRICT: &str = "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003";
pub const TLP_RED: &str = "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1";

/// TLP 1.0 definitions (STIX 2.1 section 7.2.1.4), still written by MISP and OpenCTI: read
/// as their TLP 2.0 equivalents (WHITE is CLEAR), never written.
const TLP1: [(&str, Tlp, &str); 4] = [
    (
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
        Tlp::Clear,
        "white",
    ),
    (
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
        Tlp::Green,
        "green",
    ),
    (
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
        Tlp::Amber,
        "amber",
    ),
    (
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
        Tlp::Red,
        "red",
    ),
];

/// The TLP a marking-definition id stands for, if it is one of the official ones.
pub fn tlp_of(marking_id: &str) -> Option<Tlp> {
    match marking_id {
        TLP_CLEAR => Some(Tlp::Clear),
        TLP_GREEN => Some(Tlp::Green),
        TLP_AMBER => Some(Tlp::Amber),
        TLP_AMBER_STRICT => Some(Tlp::AmberStrict),
        TLP_RED => Some(Tlp::Red),
        _ => TLP1.iter().find(|(id, ..)| *id == marking_id).map(|t| t.1),
    }
}

/// The TLP 2.0 marking-definition id for `tlp` (None for unspecified).
pub fn marking_id(tlp: Tlp) -> Option<&'static str> {
    match tlp {
        Tlp::Clear => Some(TLP_CLEAR),
        Tlp::Green => Some(TLP_GREEN),
        Tlp::Amber => Some(TLP_AMBER),
        Tlp::AmberStrict => Some(TLP_AMBER_STRICT),
        Tlp::Red => Some(TLP_RED),
        Tlp::Unspecified => None,
    }
}

fn tlp_name(t: Tlp) -> &'static str {
    crate::envelope::tlp_label(t as i32)
}

/// One object version a bundle carries: what indexes and TAXII serve it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    pub ty: String,
    /// `modified`, or `created` for objects without it; "" for objects that are not
    /// versioned (cyber-observables).
    pub version: String,
    /// Position in the bundle's `objects`.
    pub index: usize,
}

/// Parse and check a bundle `origin` signed under an envelope marked `envelope_tlp`, as
/// every receiver does: each object also carries a TLP marking (the origin gives unmarked
/// objects the envelope's, [`normalise`]). Returns the object versions, in bundle order.
pub fn check_bundle(json: &str, envelope_tlp: Tlp, origin: &str) -> Result<Vec<Version>, String> {
    let bundle = parse(json)?;
    check_value(&bundle, envelope_tlp, origin, true)
}

/// [`check_bundle`] on an already parsed bundle; `marked`: every object must carry a TLP
/// marking already.
pub fn check_value(
    bundle: &Value,
    envelope_tlp: Tlp,
    origin: &str,
    marked: bool,
) -> Result<Vec<Version>, String> {
    let objects = bundle_objects(bundle)?;
    let defs = tlp_definitions(objects);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(objects.len());
    for (index, o) in objects.iter().enumerate() {
        let at = |e: String| {
            let id = o.get("id").and_then(Value::as_str).unwrap_or("(no id)");
            format!("object {index} ({id}): {e}")
        };
        let Some(obj) = o.as_object() else {
            return Err(format!("object {index} is not a JSON object"));
        };
        let (id, ty, version) = objects::check(obj).map_err(at)?;
        check_markings(obj, envelope_tlp, &defs).map_err(at)?;
        check_speaks_for_itself(obj, origin).map_err(at)?;
        if marked && !is_meta(obj) && object_level_tlp(obj, &defs).is_none() {
            return Err(at(
                "it carries no TLP marking: the origin gives every object the message's marking before signing"
                    .into(),
            ));
        }
        if !seen.insert((id.clone(), version.clone())) {
            return Err(at(format!(
                "the bundle holds this object twice at version {version:?}: keep one"
            )));
        }
        out.push(Version {
            id,
            ty,
            version,
            index,
        });
    }
    Ok(out)
}

/// Parse a bundle's JSON text, with the reason when it is not JSON.
pub fn parse(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| format!("the bundle is not JSON: {e}"))
}

/// The `objects` of a bundle, after checking the bundle's own properties.
pub fn bundle_objects(bundle: &Value) -> Result<&Vec<Value>, String> {
    let Some(b) = bundle.as_object() else {
        return Err("a STIX bundle is a JSON object with type \"bundle\"".into());
    };
    if b.get("type").and_then(Value::as_str) != Some("bundle") {
        return Err("the top-level object's type is not \"bundle\"".into());
    }
    let id = b.get("id").and_then(Value::as_str).unwrap_or("");
    objects::check_id(id, Some("bundle")).map_err(|e| format!("bundle id: {e}"))?;
    if b.contains_key("spec_version") {
        return Err(
            "the bundle has a spec_version: that is STIX 2.0; STIX 2.1 puts spec_version on each object"
                .into(),
        );
    }
    let objects = match b.get("objects") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err("the bundle has no objects".into()),
    };
    if objects.len() > MAX_OBJECTS {
        return Err(format!(
            "the bundle holds {} objects, over the {MAX_OBJECTS}-object limit: split it (bluewire import stix does)",
            objects.len()
        ));
    }
    Ok(objects)
}

/// Marking definitions a bundle declares with definition type `tlp` (or the TLP 2.0
/// extension) under ids of its own: they are TLP markings too, so they cannot be used to
/// mark an object looser than its envelope unnoticed.
type TlpDefinitions = std::collections::HashMap<String, Tlp>;

fn tlp_definitions(objects: &[Value]) -> TlpDefinitions {
    let word = crate::envelope::parse_tlp_name;
    objects
        .iter()
        .filter(|o| o.get("type").and_then(Value::as_str) == Some("marking-definition"))
        .filter_map(|o| {
            let id = o.get("id")?.as_str()?;
            let t = match o.get("definition_type").and_then(Value::as_str) {
                Some("tlp") => word(o.get("definition")?.get("tlp")?.as_str()?)?,
                _ if o
                    .get("extensions")
                    .and_then(|e| e.get(TLP2_EXTENSION))
                    .is_some() =>
                {
                    word(o.get("name")?.as_str()?)?
                }
                _ => return None,
            };
            Some((id.to_string(), t))
        })
        .collect()
}

fn tlp_in(id: &str, defs: &TlpDefinitions) -> Option<Tlp> {
    tlp_of(id).or_else(|| defs.get(id).copied())
}

/// The TLP an object declares: the strictest TLP among its object and granular markings.
pub fn object_tlp(obj: &Map<String, Value>) -> Option<Tlp> {
    object_tlp_with(obj, &TlpDefinitions::new())
}

fn object_tlp_with(obj: &Map<String, Value>, defs: &TlpDefinitions) -> Option<Tlp> {
    let refs = obj
        .get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    let granular = obj
        .get("granular_markings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("marking_ref").and_then(Value::as_str));
    refs.chain(granular).filter_map(|r| tlp_in(r, defs)).max()
}

/// The strictest TLP among an object's object-level markings (granular ones left out).
fn object_level_tlp(obj: &Map<String, Value>, defs: &TlpDefinitions) -> Option<Tlp> {
    obj.get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|r| tlp_in(r, defs))
        .max()
}

/// Objects that are about markings and extensions, not intelligence: they carry no TLP.
fn is_meta(obj: &Map<String, Value>) -> bool {
    matches!(
        obj.get("type").and_then(Value::as_str),
        Some("marking-definition" | "extension-definition" | "language-content")
    )
}

/// A member speaks only for itself: no object may take an id Bluewire derives for the
/// objects it makes (another organisation's identity, incident, report, …; see
/// [`export::is_bluewire_id`]) other than the origin's own identity, claim to be created by
/// such an object, or carry the extension Bluewire uses to name a message's origin.
fn check_speaks_for_itself(obj: &Map<String, Value>, origin: &str) -> Result<(), String> {
    let own = export::identity_id(origin);
    let id = obj.get("id").and_then(Value::as_str).unwrap_or("");
    if export::is_bluewire_id(id) && id != own {
        return Err(
            "its id is one Bluewire derives for an organisation's identity or messages: a bundle carries the origin's own objects, it cannot replace another's"
                .into(),
        );
    }
    if let Some(by) = obj.get("created_by_ref").and_then(Value::as_str)
        && export::is_bluewire_id(by)
        && by != own
    {
        return Err(format!(
            "created_by_ref names another organisation's Bluewire identity: an organisation speaks only for itself (use {own}, or leave it out)"
        ));
    }
    if obj
        .get("extensions")
        .and_then(Value::as_object)
        .is_some_and(|e| e.contains_key(export::EXTENSION))
        || obj.get("type").and_then(Value::as_str) == Some("bluewire-message")
    {
        return Err(
            "it carries Bluewire's own extension, which names the message an object came from: leave it out, the node adds it"
                .into(),
        );
    }
    Ok(())
}

/// The envelope's TLP is authoritative: no object-level or granular TLP marking may be looser.
fn check_markings(
    obj: &Map<String, Value>,
    envelope: Tlp,
    defs: &TlpDefinitions,
) -> Result<(), String> {
    let looser = |t: Tlp, where_: &str| {
        Err(format!(
            "{where_} marks it {} but the message is {}: an object may only be marked the same or stricter than its envelope (mark the message {} or lower the object's marking)",
            tlp_name(t),
            tlp_name(envelope),
            tlp_name(t),
        ))
    };
    if let Some(refs) = obj.get("object_marking_refs").and_then(Value::as_array) {
        for t in refs
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|r| tlp_in(r, defs))
        {
            if t < envelope {
                return looser(t, "object_marking_refs");
            }
        }
    }
    if let Some(g) = obj.get("granular_markings").and_then(Value::as_array) {
        for m in g {
            if let Some(t) = m
                .get("marking_ref")
                .and_then(Value::as_str)
                .and_then(|r| tlp_in(r, defs))
                && t < envelope
            {
                return looser(t, "a granular marking");
            }
        }
    }
    // A bundle may carry the official TLP definitions, but not redefine them.
    if obj.get("type").and_then(Value::as_str) == Some("marking-definition")
        && let Some(id) = obj.get("id").and_then(Value::as_str)
        && let Some(t) = tlp_of(id)
        && !official_definition(obj, id, t)
    {
        return Err(format!(
            "it redefines the official {} marking definition: leave it out, every STIX tool knows it",
            tlp_name(t)
        ));
    }
    Ok(())
}

/// Whether a marking-definition object with an official TLP id says what the official one says.
fn official_definition(obj: &Map<String, Value>, id: &str, t: Tlp) -> bool {
    if let Some((_, _, word)) = TLP1.iter().find(|(i, ..)| *i == id) {
        return obj.get("definition_type").and_then(Value::as_str) == Some("tlp")
            && obj
                .get("definition")
                .and_then(|d| d.get("tlp"))
                .and_then(Value::as_str)
                == Some(word);
    }
    obj.get("name").and_then(Value::as_str) == Some(tlp_name(t))
        && obj
            .get("extensions")
            .and_then(|e| e.get(TLP2_EXTENSION))
            .is_some()
}

/// The origin's pass before signing: give every object without a TLP marking the envelope's
/// (objects that are themselves markings or extension definitions excepted), and return the
/// bundle as compact JSON. Refuses what [`check_bundle`] refuses.
pub fn normalise(json: &str, envelope_tlp: Tlp, origin: &str) -> Result<String, String> {
    let mut bundle = parse(json)?;
    check_value(&bundle, envelope_tlp, origin, false)?;
    let Some(marking) = marking_id(envelope_tlp) else {
        return Err("the message has no TLP".into());
    };
    if let Some(objects) = bundle.get_mut("objects").and_then(Value::as_array_mut) {
        for o in objects.iter_mut().filter_map(Value::as_object_mut) {
            give_marking(o, marking);
        }
    }
    serde_json::to_string(&bundle).map_err(|e| format!("re-encoding the bundle: {e}"))
}

/// Add `marking` to an object that carries no TLP marking (meta objects keep theirs).
pub(crate) fn give_marking(o: &mut Map<String, Value>, marking: &str) {
    let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
    if matches!(ty, "marking-definition" | "extension-definition")
        || object_level_tlp(o, &TlpDefinitions::new()).is_some()
    {
        return;
    }
    match o.get_mut("object_marking_refs") {
        Some(Value::Array(refs)) => refs.push(Value::from(marking)),
        _ => {
            o.insert("object_marking_refs".into(), Value::from(vec![marking]));
        }
    }
}

/// Raise every object's TLP marking to at least `tlp` (a later marking change made the
/// message stricter than its bundle says): looser TLP references are replaced.
pub(crate) fn raise_marking(o: &mut Map<String, Value>, tlp: Tlp) {
    let Some(marking) = marking_id(tlp) else {
        return;
    };
    if let Some(Value::Array(refs)) = o.get_mut("object_marking_refs") {
        refs.retain(|r| r.as_str().and_then(tlp_of).is_none_or(|t| t >= tlp));
        if refs.is_empty() {
            o.remove("object_marking_refs");
        }
    }
    if let Some(Value::Array(g)) = o.get_mut("granular_markings") {
        for m in g.iter_mut().filter_map(Value::as_object_mut) {
            if m.get("marking_ref")
                .and_then(Value::as_str)
                .and_then(tlp_of)
                .is_some_and(|t| t < tlp)
            {
                m.insert("marking_ref".into(), Value::from(marking));
            }
        }
    }
    give_marking(o, marking);
}

/// The (id, version) of each object a bundle message carries, for the store's index; empty
/// for other messages (and for a bundle that does not parse, which validation refused).
pub fn index_of(c: &bluewire_proto::v1::Content) -> Vec<(String, String)> {
    let Some(bluewire_proto::v1::content::Body::Stix(b)) = &c.body else {
        return Vec::new();
    };
    let Ok(bundle) = parse(&b.json) else {
        return Vec::new();
    };
    let Some(objects) = bundle.get("objects").and_then(Value::as_array) else {
        return Vec::new();
    };
    objects
        .iter()
        .filter_map(|o| {
            let id = o.get("id")?.as_str()?;
            Some((id.to_string(), version_of(o)))
        })
        .collect()
}

/// An object's version: `modified`, else `created`, else "" (cyber-observables).
pub fn version_of(o: &Value) -> String {
    o.get("modified")
        .or_else(|| o.get("created"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// What a bundle holds, as people read it: "STIX bundle: 3 indicator, 1 malware".
pub fn summary(json: &str) -> String {
    let Ok(bundle) = parse(json) else {
        return "STIX bundle (unreadable)".into();
    };
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in bundle
        .get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        *counts
            .entry(o.get("type").and_then(Value::as_str).unwrap_or("?"))
            .or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
    format!("STIX bundle: {}", parts.join(", "))
}

/// Check one object on its own (importers use it to refuse single objects with reasons and
/// keep the rest): what [`check_bundle`] checks per object, but a marking (the origin adds
/// it) and the origin's own-objects rule ([`check_object_from`]).
pub fn check_object(o: &Value, envelope_tlp: Tlp) -> Result<Version, String> {
    let Some(obj) = o.as_object() else {
        return Err("not a JSON object".into());
    };
    let (id, ty, version) = objects::check(obj)?;
    check_markings(obj, envelope_tlp, &TlpDefinitions::new())?;
    Ok(Version {
        id,
        ty,
        version,
        index: 0,
    })
}

/// [`check_object`] for an object `origin` is about to publish: also refused when it takes
/// another organisation's Bluewire id or provenance.
pub fn check_object_from(o: &Value, envelope_tlp: Tlp, origin: &str) -> Result<Version, String> {
    let v = check_object(o, envelope_tlp)?;
    if let Some(obj) = o.as_object() {
        check_speaks_for_itself(obj, origin)?;
    }
    Ok(v)
}

/// A STIX timestamp (RFC 3339, UTC, `Z`) as unix milliseconds.
pub fn timestamp_ms(s: &str) -> Option<i64> {
    objects::parse_timestamp(s)
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
}
