//! MISP in and out: a MISP event (MISP core format, as MISP's REST API and feeds write it)
//! as STIX 2.1 objects Bluewire can publish ([`event_to_stix`]), a MISP feed's
//! `manifest.json` ([`feed_events`]), and the reverse: a Bluewire message as a MISP event
//! and a feed manifest for MISP to pull ([`message_to_event`], [`feed_manifest`]).
//!
//! Pure: no store, no network, no clock — the same event gives the same objects, ids
//! included, so re-importing it skips everything and an edited attribute (a new MISP
//! timestamp) is a new version. It never widens what MISP allowed: the message's TLP is
//! the strictest of the event's TLP tag, the floor its distribution sets and the user's
//! `--tlp`, and an event MISP keeps inside its organisation is not converted at all.
//!
//! # Distribution and TLP
//!
//! | MISP `distribution` | event | attribute or object |
//! |---|---|---|
//! | 0 your organisation only | refused (`Err`) | skipped, reported |
//! | 1 this community only | needs `--cluster`; at least TLP:AMBER | at least AMBER; skipped unless the event goes to a cluster |
//! | 2 connected communities | at least TLP:AMBER | at least AMBER |
//! | 3 all communities (also: absent, as feeds write events) | no floor | no floor |
//! | 4 sharing group | the cluster `--sharing-group UUID=CLUSTER` maps it to (refused when unmapped, or mapped elsewhere than `--cluster`); at least AMBER | at least AMBER; skipped unless its group maps to the event's cluster |
//! | 5 inherit | refused (not an event level) | the event's |
//!
//! | MISP tag | TLP |
//! |---|---|
//! | `tlp:white`, `tlp:clear` | CLEAR |
//! | `tlp:green` | GREEN |
//! | `tlp:amber` | AMBER |
//! | `tlp:amber+strict` | AMBER+STRICT |
//! | `tlp:red` | RED |
//!
//! The message TLP is the strictest of the event's TLP tags, its distribution floor and
//! [`MispOptions::tlp`]. An attribute (or object) whose own tags or distribution make it
//! stricter keeps that as an object marking on everything made from it (stricter than the
//! envelope is allowed); a looser one simply takes the message's.
//!
//! # What becomes what
//!
//! The attribute table is `misp/table.rs`'s (documented in docs/MISP.md): `to_ids` attributes
//! become an `indicator` (`indicator--{attribute uuid}`) with a STIX pattern, the others an
//! `observed-data` (`observed-data--{attribute uuid}`) with its cyber-observables (ids a
//! UUIDv5 of their properties in the attribute's uuid), `vulnerability` a vulnerability.
//! A MISP object becomes one indicator whose pattern ANDs its `to_ids` attributes, and an
//! observed-data of all of them when not every attribute is `to_ids`. Galaxy clusters
//! become attack patterns, malware, tools, threat actors and intrusion sets
//! (`TYPE--{cluster uuid}`); an attribute's galaxies are linked to its indicator by an
//! `indicates` relationship. The event becomes a `report` (`report--{event uuid}`) that
//! refers to all of it, labelled with its non-TLP tags. Everything not converted is listed
//! in [`Converted::skipped`] with the reason.

mod export;
mod table;
#[cfg(test)]
mod tests;

pub use export::{feed_manifest, message_to_event};

use std::collections::{BTreeMap, HashMap, HashSet};

use bluewire_proto::v1::Tlp;
use serde_json::{Map, Value, json};

use crate::stix;

/// How an import may mark and route what it converts.
#[derive(Debug, Clone, Default)]
pub struct MispOptions {
    /// The user's `--tlp`: the least strict TLP the import may give (the event's tags and
    /// distribution can only make it stricter).
    pub tlp: Tlp,
    /// The user's `--cluster`: where events go (required for distribution 1).
    pub cluster: Option<String>,
    /// Sharing-group uuid → cluster, from `--sharing-group UUID=CLUSTER`.
    pub sharing_groups: BTreeMap<String, String>,
}

/// One MISP event as STIX 2.1 objects for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub event_uuid: String,
    pub info: String,
    /// The message's TLP.
    pub tlp: Tlp,
    /// The cluster the message goes to.
    pub cluster: Option<String>,
    /// The STIX objects, the event's report last; empty when nothing could be converted.
    pub objects: Vec<Value>,
    /// What was not converted: (what, why).
    pub skipped: Vec<(String, String)>,
}

/// The TLP a MISP tag names, if it is one of the TLP tags.
pub fn tag_tlp(tag: &str) -> Option<Tlp> {
    Some(match tag.trim().to_ascii_lowercase().as_str() {
        "tlp:white" | "tlp:clear" => Tlp::Clear,
        "tlp:green" => Tlp::Green,
        "tlp:amber" => Tlp::Amber,
        "tlp:amber+strict" => Tlp::AmberStrict,
        "tlp:red" => Tlp::Red,
        _ => return None,
    })
}

/// The MISP tag for a TLP.
pub fn tlp_tag(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear | Tlp::Unspecified => "tlp:clear",
        Tlp::Green => "tlp:green",
        Tlp::Amber => "tlp:amber",
        Tlp::AmberStrict => "tlp:amber+strict",
        Tlp::Red => "tlp:red",
    }
}

/// The event uuids a MISP feed's `manifest.json` lists (each `UUID.json` beside it), oldest
/// first (by the manifest's timestamp, then uuid), so later versions are imported last.
pub fn feed_events(manifest: &Value) -> Result<Vec<String>, String> {
    let Some(m) = manifest.as_object() else {
        return Err(
            "manifest.json is not a JSON object of event uuids (a MISP feed's manifest)".into(),
        );
    };
    let mut out = Vec::with_capacity(m.len());
    for (key, entry) in m {
        let uuid = uuid::Uuid::try_parse(key).map_err(|_| {
            format!("manifest.json: {key:?} is not an event uuid (a MISP feed's manifest is keyed by event uuid)")
        })?;
        out.push((int(entry.get("timestamp")).unwrap_or(0), uuid.to_string()));
    }
    out.sort();
    Ok(out.into_iter().map(|(_, u)| u).collect())
}

/// A MISP number, written as a JSON number or a string (MISP writes both).
fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// A MISP flag: `true`, `1` or `"1"`.
fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.trim(), "1" | "true" | "True"),
        other => int(other).is_some_and(|n| n != 0),
    }
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("").trim()
}

/// A value as text (MISP values are strings; some exporters write numbers).
fn value_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn uuid_of(v: Option<&Value>) -> Option<uuid::Uuid> {
    v.and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::try_parse(s.trim()).ok())
}

/// The names of a record's tags.
fn tags(m: &Map<String, Value>) -> Vec<String> {
    m.get("Tag")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The strictest TLP among tags, and the tags that are not TLP tags.
fn split_tags(tags: &[String]) -> (Option<Tlp>, Vec<String>) {
    let tlp = tags.iter().filter_map(|t| tag_tlp(t)).max();
    let rest = tags
        .iter()
        .filter(|t| tag_tlp(t).is_none())
        .cloned()
        .collect();
    (tlp, rest)
}

/// A STIX timestamp for unix seconds.
fn stamp(secs: i64) -> String {
    stix::export::timestamp(secs.saturating_mul(1000))
}

/// An ISO 8601 date-time with offset (MISP's first_seen/last_seen) as a STIX timestamp.
fn iso(s: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some(stix::export::timestamp(ms))
}

/// Short form of a value for messages.
fn short(v: &str) -> String {
    if v.chars().count() > 80 {
        format!("{}…", v.chars().take(79).collect::<String>())
    } else {
        v.to_string()
    }
}

/// A sharing group's (uuid, name) as a record carries it.
fn sharing_group(m: &Map<String, Value>) -> Option<(String, String)> {
    let sg = m.get("SharingGroup")?.as_object()?;
    let uuid = uuid_of(sg.get("uuid"))?.to_string();
    Some((uuid, text(sg, "name").to_string()))
}

/// The cluster a sharing group is mapped to (keys compared as UUIDs, so case and braces do
/// not matter).
fn mapped<'a>(opts: &'a MispOptions, uuid: &str) -> Option<&'a String> {
    opts.sharing_groups
        .iter()
        .find(|(k, _)| uuid::Uuid::try_parse(k.trim()).is_ok_and(|u| u.to_string() == uuid))
        .map(|(_, c)| c)
}

/// The TLP floor and cluster an event's distribution demands.
fn event_audience(
    ev: &Map<String, Value>,
    opts: &MispOptions,
) -> Result<(Tlp, Option<String>), String> {
    let distribution = int(ev.get("distribution")).unwrap_or(3);
    match distribution {
        0 => Err(
            "distribution 0 (your organisation only): MISP keeps this event inside its organisation, so it is not imported (change its distribution in MISP if it may be shared)"
                .into(),
        ),
        1 => match &opts.cluster {
            Some(c) => Ok((Tlp::Amber, Some(c.clone()))),
            None => Err(
                "distribution 1 (this community only): give --cluster, the Bluewire cluster that is this community"
                    .into(),
            ),
        },
        2 => Ok((Tlp::Amber, opts.cluster.clone())),
        3 => Ok((Tlp::Clear, opts.cluster.clone())),
        4 => {
            let Some((uuid, name)) = sharing_group(ev) else {
                return Err(
                    "distribution 4 (sharing group) but the event carries no SharingGroup with a uuid: export it from MISP with its sharing group"
                        .into(),
                );
            };
            let Some(cluster) = mapped(opts, &uuid) else {
                return Err(format!(
                    "distribution 4: the sharing group {name:?} ({uuid}) is not mapped to a cluster: give --sharing-group {uuid}=CLUSTER"
                ));
            };
            if let Some(c) = &opts.cluster
                && c != cluster
            {
                return Err(format!(
                    "distribution 4: the sharing group {name:?} ({uuid}) maps to the cluster {cluster:?} but --cluster is {c:?}: leave --cluster out or map the group to it"
                ));
            }
            Ok((Tlp::Amber, Some(cluster.clone())))
        }
        5 => Err("distribution 5 (inherit) is an attribute's level, not an event's: the event is malformed".into()),
        n => Err(format!(
            "distribution {n} is not a MISP distribution level (0 to 4)"
        )),
    }
}

/// The per-event state of a conversion.
struct Ctx<'a> {
    opts: &'a MispOptions,
    event_uuid: uuid::Uuid,
    event_ts: i64,
    tlp: Tlp,
    cluster: Option<String>,
    /// The event's sharing group (uuid, name) and its instance-local id.
    event_sg: Option<(String, String)>,
    event_sg_id: Option<i64>,
    identity: Option<String>,
    objects: Vec<Value>,
    ids: HashSet<String>,
    skipped: Vec<(String, String)>,
    /// MISP uuid of an attribute or object → its main STIX object and TLP (for references).
    by_uuid: HashMap<String, (String, Tlp)>,
}

/// A converted attribute or object: its objects and the one references point at.
struct Made {
    objects: Vec<Value>,
    main: String,
}

impl Ctx<'_> {
    fn skip(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.skipped.push((what.into(), why.into()));
    }

    /// The TLP floor an attribute's or object's own distribution sets, or why it is skipped.
    fn record_audience(&self, m: &Map<String, Value>) -> Result<Tlp, String> {
        match int(m.get("distribution")) {
            None | Some(5) | Some(3) => Ok(Tlp::Clear),
            Some(0) => Err("distribution 0 (your organisation only)".into()),
            Some(1) if self.cluster.is_none() => Err(
                "distribution 1 (this community only) but the event is not published into a cluster (give --cluster)"
                    .into(),
            ),
            Some(1 | 2) => Ok(Tlp::Amber),
            Some(4) => {
                let sg = sharing_group(m).or_else(|| {
                    let id = int(m.get("sharing_group_id"))?;
                    (Some(id) == self.event_sg_id)
                        .then(|| self.event_sg.clone())
                        .flatten()
                });
                let Some((uuid, name)) = sg else {
                    return Err(
                        "distribution 4 (sharing group) without its SharingGroup".into()
                    );
                };
                match (mapped(self.opts, &uuid), &self.cluster) {
                    (Some(c), Some(event)) if c == event => Ok(Tlp::Amber),
                    (mapped, event) => Err(format!(
                        "distribution 4: the sharing group {name:?} ({uuid}) {} but the event goes to {}",
                        mapped.map_or("is not mapped (--sharing-group)".to_string(), |c| format!("maps to the cluster {c:?}")),
                        event.as_deref().map_or("no cluster".to_string(), |c| format!("the cluster {c:?}")),
                    )),
                }
            }
            Some(n) => Err(format!("distribution {n} is not a MISP distribution level")),
        }
    }

    /// type, spec_version, id, created, modified and created_by_ref of a domain object.
    fn sdo(&self, ty: &str, id: &str, ts: i64) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), ty.into());
        o.insert("spec_version".into(), "2.1".into());
        o.insert("id".into(), id.into());
        if let Some(by) = &self.identity {
            o.insert("created_by_ref".into(), by.clone().into());
        }
        o.insert("created".into(), stamp(ts).into());
        o.insert("modified".into(), stamp(ts).into());
        o
    }

    fn relationship(&self, ty: &str, source: &str, target: &str, ts: i64) -> Value {
        let id = relationship_id(&self.event_uuid, source, target, ty);
        let mut o = self.sdo("relationship", &id, ts);
        o.insert("relationship_type".into(), ty.into());
        o.insert("source_ref".into(), source.into());
        o.insert("target_ref".into(), target.into());
        Value::Object(o)
    }

    /// Mark every object `tlp` when it is stricter than the message; check each as a
    /// receiver will; keep them all or, with the reason, none.
    fn accept(&mut self, what: &str, made: Made, tlp: Tlp, uuid: Option<&str>) -> Option<String> {
        let mut objects = made.objects;
        if tlp > self.tlp
            && let Some(m) = stix::marking_id(tlp)
        {
            for o in objects.iter_mut().filter_map(Value::as_object_mut) {
                o.insert("object_marking_refs".into(), json!([m]));
            }
        }
        for o in &objects {
            if let Err(e) = stix::check_object(o, self.tlp) {
                self.skip(what, format!("its STIX form is not valid: {e}"));
                return None;
            }
        }
        for o in objects {
            let id = o
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if self.ids.insert(id) {
                self.objects.push(o);
            }
        }
        if let Some(u) = uuid {
            self.by_uuid.insert(u.to_string(), (made.main.clone(), tlp));
        }
        Some(made.main)
    }

    /// Objects for galaxies (event-level or an attribute's); returns the ids made or found.
    fn galaxies(&mut self, galaxies: Option<&Value>, ts: i64) -> Vec<String> {
        let mut ids = Vec::new();
        for g in galaxies.and_then(Value::as_array).into_iter().flatten() {
            let Some(g) = g.as_object() else { continue };
            let gtype = text(g, "type");
            let gname = text(g, "name");
            for c in g
                .get("GalaxyCluster")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                let value = text(c, "value");
                let what = format!("galaxy {gtype} cluster {value:?}");
                let Some(ty) = table::galaxy_type(gtype) else {
                    self.skip(
                        what,
                        format!("no STIX object for the MISP galaxy type {gtype:?}"),
                    );
                    continue;
                };
                let Some(uuid) = uuid_of(c.get("uuid")) else {
                    self.skip(what, "the cluster has no uuid: the STIX id is made from it");
                    continue;
                };
                let id = format!("{ty}--{uuid}");
                if self.ids.contains(&id) {
                    ids.push(id);
                    continue;
                }
                let o = self.galaxy_object(ty, &id, gtype, gname, c, ts);
                if let Some(id) = self.accept(
                    &what,
                    Made {
                        objects: vec![o],
                        main: id,
                    },
                    self.tlp,
                    None,
                ) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    fn galaxy_object(
        &self,
        ty: &str,
        id: &str,
        gtype: &str,
        gname: &str,
        c: &Map<String, Value>,
        ts: i64,
    ) -> Value {
        let value = text(c, "value");
        // misp-stix names MITRE clusters without their " - T1566" suffix.
        let name = match value.rsplit_once(" - ") {
            Some((n, _)) if gtype.starts_with("mitre-") => n.trim(),
            _ => value,
        };
        let mut o = self.sdo(ty, id, ts);
        o.insert("name".into(), name.into());
        let description = text(c, "description");
        if !description.is_empty() {
            o.insert("description".into(), description.into());
        }
        let mut labels = vec![
            format!("misp:galaxy-name=\"{gname}\""),
            format!("misp:galaxy-type=\"{gtype}\""),
        ];
        let tag = text(c, "tag_name");
        if !tag.is_empty() {
            labels.push(tag.to_string());
        }
        o.insert("labels".into(), labels.into());
        let meta = c.get("meta").and_then(Value::as_object);
        let list = |key: &str| -> Vec<String> {
            match meta.and_then(|m| m.get(key)) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        let synonyms: Vec<String> = list("synonyms").into_iter().filter(|s| s != name).collect();
        match ty {
            // A galaxy cluster names a family, not one sample.
            "malware" => {
                o.insert("is_family".into(), true.into());
            }
            "attack-pattern" => {
                let refs: Vec<Value> = list("external_id")
                    .into_iter()
                    .filter_map(|x| {
                        let source = if x.starts_with('T') {
                            "mitre-attack"
                        } else if x.starts_with("CAPEC") {
                            "capec"
                        } else {
                            return None;
                        };
                        Some(json!({"source_name": source, "external_id": x}))
                    })
                    .collect();
                if !refs.is_empty() {
                    o.insert("external_references".into(), refs.into());
                }
            }
            _ => {}
        }
        if ty != "attack-pattern" && !synonyms.is_empty() {
            o.insert("aliases".into(), synonyms.into());
        }
        Value::Object(o)
    }

    /// Labels misp-stix gives a record: its type/category (or name/meta-category), then its
    /// non-TLP tags.
    fn labels(first: [(&str, &str); 2], tags: &[String]) -> Vec<String> {
        first
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("misp:{k}=\"{v}\""))
            .chain(tags.iter().cloned())
            .collect()
    }

    fn indicator(
        &self,
        id: &str,
        pattern: String,
        ts: i64,
        labels: &[String],
        phase: &str,
        comment: &str,
    ) -> Value {
        let mut o = self.sdo("indicator", id, ts);
        o.insert("pattern".into(), pattern.into());
        o.insert("pattern_type".into(), "stix".into());
        o.insert("pattern_version".into(), "2.1".into());
        o.insert("valid_from".into(), stamp(ts).into());
        if !labels.is_empty() {
            o.insert("labels".into(), labels.to_vec().into());
        }
        if !phase.is_empty() {
            o.insert(
                "kill_chain_phases".into(),
                json!([{"kill_chain_name": "misp-category", "phase_name": phase}]),
            );
        }
        if !comment.is_empty() {
            o.insert("description".into(), comment.into());
        }
        Value::Object(o)
    }

    /// An observed-data of `facts` and the observables it refers to (observables first).
    #[allow(clippy::too_many_arguments)]
    fn observed(
        &self,
        id: &str,
        facts: &[table::Fact],
        ns: &uuid::Uuid,
        ts: i64,
        seen: (Option<String>, Option<String>),
        labels: &[String],
    ) -> Result<Vec<Value>, String> {
        let mut out = table::observables(facts, ns)?;
        let refs: Vec<Value> = out.iter().filter_map(|o| o.get("id").cloned()).collect();
        let (mut first, mut last) = (
            seen.0.unwrap_or_else(|| stamp(ts)),
            seen.1.unwrap_or_else(|| stamp(ts)),
        );
        if first > last {
            std::mem::swap(&mut first, &mut last);
        }
        let mut o = self.sdo("observed-data", id, ts);
        o.insert("first_observed".into(), first.into());
        o.insert("last_observed".into(), last.into());
        o.insert("number_observed".into(), 1.into());
        o.insert("object_refs".into(), refs.into());
        if !labels.is_empty() {
            o.insert("labels".into(), labels.to_vec().into());
        }
        out.push(Value::Object(o));
        Ok(out)
    }

    fn attribute(&mut self, a: &Map<String, Value>) {
        let ty = text(a, "type").to_string();
        let value = value_text(a.get("value"));
        let Some(uuid) = uuid_of(a.get("uuid")) else {
            return self.skip(
                format!("attribute {ty} {:?}", short(&value)),
                "it has no uuid: the STIX ids are made from it",
            );
        };
        let what = format!("attribute {uuid} ({ty} {:?})", short(&value));
        if flag(a.get("deleted")) {
            return self.skip(what, "deleted in MISP");
        }
        if self.by_uuid.contains_key(&uuid.to_string()) {
            return self.skip(what, "the event holds this uuid twice");
        }
        let floor = match self.record_audience(a) {
            Ok(t) => t,
            Err(why) => return self.skip(what, why),
        };
        let (tag_tlp, rest) = split_tags(&tags(a));
        let tlp = self.tlp.max(floor).max(tag_tlp.unwrap_or(Tlp::Clear));
        let ts = int(a.get("timestamp")).unwrap_or(self.event_ts);
        let category = text(a, "category").to_string();
        let labels = Self::labels([("type", &ty), ("category", &category)], &rest);
        let comment = text(a, "comment").to_string();
        let made = if ty == "vulnerability" {
            let id = format!("vulnerability--{uuid}");
            let mut o = self.sdo("vulnerability", &id, ts);
            o.insert("name".into(), value.trim().into());
            if value.trim().to_ascii_uppercase().starts_with("CVE-") {
                o.insert(
                    "external_references".into(),
                    json!([{"source_name": "cve", "external_id": value.trim()}]),
                );
            }
            if !comment.is_empty() {
                o.insert("description".into(), comment.clone().into());
            }
            o.insert("labels".into(), labels.clone().into());
            Made {
                objects: vec![Value::Object(o)],
                main: id,
            }
        } else {
            let facts = match table::attribute_facts(&ty, &value) {
                Ok(f) => f,
                Err(why) => return self.skip(what, why),
            };
            if flag(a.get("to_ids")) {
                let id = format!("indicator--{uuid}");
                let o = self.indicator(
                    &id,
                    table::pattern(&facts),
                    ts,
                    &labels,
                    &category,
                    &comment,
                );
                Made {
                    objects: vec![o],
                    main: id,
                }
            } else {
                let id = format!("observed-data--{uuid}");
                let seen = (
                    a.get("first_seen").and_then(Value::as_str).and_then(iso),
                    a.get("last_seen").and_then(Value::as_str).and_then(iso),
                );
                match self.observed(&id, &facts, &uuid, ts, seen, &labels) {
                    Ok(objects) => Made { objects, main: id },
                    Err(why) => return self.skip(what, why),
                }
            }
        };
        let Some(main) = self.accept(&what, made, tlp, Some(&uuid.to_string())) else {
            return;
        };
        // The attribute's own galaxies: misp-stix's relationships.
        let targets = self.galaxies(a.get("Galaxy"), ts);
        let rel = if main.starts_with("indicator--") {
            "indicates"
        } else {
            "related-to"
        };
        for t in targets {
            let r = self.relationship(rel, &main, &t, ts);
            self.accept(
                &what,
                Made {
                    objects: vec![r],
                    main: String::new(),
                },
                tlp,
                None,
            );
        }
    }

    fn object(&mut self, o: &Map<String, Value>) {
        let name = text(o, "name").to_string();
        let Some(uuid) = uuid_of(o.get("uuid")) else {
            return self.skip(
                format!("object {name}"),
                "it has no uuid: the STIX ids are made from it",
            );
        };
        let what = format!("object {name} {uuid}");
        if flag(o.get("deleted")) {
            return self.skip(what, "deleted in MISP");
        }
        let attributes: Vec<&Map<String, Value>> = o
            .get("Attribute")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect();
        if table::object_root(&name).is_none() {
            return self.skip(
                what,
                format!(
                    "no STIX mapping for MISP objects of the template {name:?} ({} attribute(s) not imported)",
                    attributes.len()
                ),
            );
        }
        let mut tlp = match self.record_audience(o) {
            Ok(t) => self.tlp.max(t),
            Err(why) => return self.skip(what, why),
        };
        let mut ts = int(o.get("timestamp")).unwrap_or(self.event_ts);
        let (mut all, mut ids_facts) = (Vec::new(), Vec::new());
        let mut single = HashSet::new();
        let mut first_seen = o.get("first_seen").and_then(Value::as_str).and_then(iso);
        let mut last_seen = o.get("last_seen").and_then(Value::as_str).and_then(iso);
        for a in attributes {
            let relation = text(a, "object_relation").to_string();
            let value = value_text(a.get("value"));
            let at = format!("{what} attribute {relation} {:?}", short(&value));
            if flag(a.get("deleted")) {
                self.skip(at, "deleted in MISP");
                continue;
            }
            let floor = match self.record_audience(a) {
                Ok(t) => t,
                Err(why) => {
                    self.skip(at, why);
                    continue;
                }
            };
            let fact = match table::object_fact(&name, &relation, &value) {
                None => {
                    self.skip(
                        at,
                        format!("no STIX property for {relation:?} in a {name} object"),
                    );
                    continue;
                }
                Some(Err(why)) => {
                    self.skip(at, why);
                    continue;
                }
                Some(Ok(f)) => f,
            };
            if let Some(k) = fact.single_key()
                && !single.insert(k.clone())
            {
                self.skip(
                    at,
                    format!(
                        "a second {relation:?} in one object: the STIX {} holds one {k}",
                        fact.root
                    ),
                );
                continue;
            }
            let (tag_tlp, _) = split_tags(&tags(a));
            tlp = tlp.max(floor).max(tag_tlp.unwrap_or(Tlp::Clear));
            if let Some(t) = int(a.get("timestamp")) {
                ts = ts.max(t);
            }
            first_seen =
                first_seen.or_else(|| a.get("first_seen").and_then(Value::as_str).and_then(iso));
            last_seen =
                last_seen.or_else(|| a.get("last_seen").and_then(Value::as_str).and_then(iso));
            if flag(a.get("to_ids")) {
                ids_facts.push(fact.clone());
            }
            all.push(fact);
        }
        if all.is_empty() {
            return self.skip(what, "none of its attributes has a STIX form");
        }
        let meta = text(o, "meta-category").to_string();
        let labels = Self::labels([("name", &name), ("meta-category", &meta)], &[]);
        let comment = text(o, "comment").to_string();
        let mut objects = Vec::new();
        let mut main = None;
        if !ids_facts.is_empty() {
            let id = format!("indicator--{uuid}");
            objects.push(self.indicator(
                &id,
                table::pattern(&ids_facts),
                ts,
                &labels,
                &meta,
                &comment,
            ));
            main = Some(id);
        }
        // Attributes that are not to_ids are not in the pattern: the whole object is then
        // also observed, so nothing MISP holds is lost.
        if ids_facts.len() < all.len() {
            let id = format!("observed-data--{uuid}");
            match self.observed(&id, &all, &uuid, ts, (first_seen, last_seen), &labels) {
                Ok(mut obs) => {
                    if let Some(ind) = &main {
                        obs.push(self.relationship("based-on", ind, &id, ts));
                    }
                    objects.extend(obs);
                    main.get_or_insert(id);
                }
                Err(why) if main.is_some() => {
                    self.skip(format!("{what} (its attributes that are not to_ids)"), why);
                }
                Err(why) => return self.skip(what, why),
            }
        }
        let Some(main) = main else { return };
        self.accept(&what, Made { objects, main }, tlp, Some(&uuid.to_string()));
    }

    /// MISP object references between what was converted, as relationships.
    fn references(&mut self, objects: &[&Map<String, Value>]) {
        for o in objects {
            let Some(src_uuid) = uuid_of(o.get("uuid")) else {
                continue;
            };
            for r in o
                .get("ObjectReference")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                let rel = text(r, "relationship_type");
                let dst_uuid = uuid_of(r.get("referenced_uuid"));
                let what = format!(
                    "object reference {src_uuid} {rel} {}",
                    dst_uuid.map(|u| u.to_string()).unwrap_or_default()
                );
                if flag(r.get("deleted")) {
                    self.skip(what, "deleted in MISP");
                    continue;
                }
                let ends = (
                    self.by_uuid.get(&src_uuid.to_string()).cloned(),
                    dst_uuid.and_then(|u| self.by_uuid.get(&u.to_string()).cloned()),
                );
                let (Some((src, t1)), Some((dst, t2))) = ends else {
                    self.skip(what, "one of its ends was not converted");
                    continue;
                };
                // STIX relationship types are lower-case words joined by hyphens.
                let stix_rel = if !rel.is_empty()
                    && rel
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    rel
                } else {
                    "related-to"
                };
                let ts = int(r.get("timestamp")).unwrap_or(self.event_ts);
                let mut rel_obj = self.relationship(stix_rel, &src, &dst, ts);
                if let Some(u) = uuid_of(r.get("uuid")) {
                    rel_obj["id"] = format!("relationship--{u}").into();
                }
                self.accept(
                    &what,
                    Made {
                        objects: vec![rel_obj],
                        main: String::new(),
                    },
                    t1.max(t2),
                    None,
                );
            }
        }
    }
}

/// A deterministic relationship id for (source, target, type): a UUIDv5 in the event's
/// uuid (not [`stix::export::stix_id`], whose ids receivers keep for Bluewire's own objects).
fn relationship_id(event: &uuid::Uuid, source: &str, target: &str, ty: &str) -> String {
    format!(
        "relationship--{}",
        table::uuid5(event, &format!("{ty}\0{source}\0{target}"))
    )
}

/// Convert one MISP event (`{"Event": {...}}` or the bare event) to STIX 2.1 objects for one
/// Bluewire message. `Err` when the event may not or cannot be imported at all (its
/// distribution, or no uuid/timestamp), with what to do.
pub fn event_to_stix(event: &Value, opts: &MispOptions) -> Result<Converted, String> {
    let ev = event
        .get("Event")
        .unwrap_or(event)
        .as_object()
        .ok_or("not a MISP event: expected {\"Event\": {…}}")?;
    let event_uuid =
        uuid_of(ev.get("uuid")).ok_or("the event has no uuid (MISP core format requires one)")?;
    let uuid = event_uuid.to_string();
    let info = text(ev, "info").to_string();
    let event_ts = int(ev.get("timestamp"))
        .or_else(|| {
            let date = text(ev, "date");
            let t = time::OffsetDateTime::parse(
                &format!("{date}T00:00:00Z"),
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some(t.unix_timestamp())
        })
        .ok_or("the event has neither a timestamp nor a date")?;
    let (tag_tlp, labels) = split_tags(&tags(ev));
    let (floor, cluster) = event_audience(ev, opts)?;
    let user = if opts.tlp == Tlp::Unspecified {
        Tlp::Clear
    } else {
        opts.tlp
    };
    let tlp = user.max(floor).max(tag_tlp.unwrap_or(Tlp::Clear));
    let mut ctx = Ctx {
        opts,
        event_uuid,
        event_ts,
        tlp,
        cluster,
        event_sg: sharing_group(ev),
        event_sg_id: int(ev.get("sharing_group_id")).filter(|id| *id != 0),
        identity: None,
        objects: Vec::new(),
        ids: HashSet::new(),
        skipped: Vec::new(),
        by_uuid: HashMap::new(),
    };
    // The creating organisation, as misp-stix names it.
    if let Some(orgc) = ev.get("Orgc").and_then(Value::as_object)
        && let Some(org_uuid) = uuid_of(orgc.get("uuid"))
        && !text(orgc, "name").is_empty()
    {
        let id = format!("identity--{org_uuid}");
        let mut o = ctx.sdo("identity", &id, event_ts);
        o.insert("name".into(), text(orgc, "name").into());
        o.insert("identity_class".into(), "organization".into());
        if ctx
            .accept(
                "the event's organisation (Orgc)",
                Made {
                    objects: vec![Value::Object(o)],
                    main: id.clone(),
                },
                tlp,
                None,
            )
            .is_some()
        {
            ctx.identity = Some(id);
        }
    }
    ctx.galaxies(ev.get("Galaxy"), event_ts);
    for a in ev
        .get("Attribute")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        ctx.attribute(a);
    }
    let objects: Vec<&Map<String, Value>> = ev
        .get("Object")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect();
    for o in &objects {
        ctx.object(o);
    }
    ctx.references(&objects);
    for r in ev
        .get("EventReport")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        ctx.skip(
            format!("event report {:?}", text(r, "name")),
            "event reports are not imported (their text refers to MISP objects by uuid)",
        );
    }
    let refs: Vec<Value> = ctx
        .objects
        .iter()
        .filter(|o| o.get("type").and_then(Value::as_str) != Some("identity"))
        .filter_map(|o| o.get("id").cloned())
        .collect();
    if refs.is_empty() {
        // Nothing but (perhaps) the organisation: there is nothing to publish.
        ctx.objects.clear();
    } else {
        let published = int(ev.get("publish_timestamp"))
            .filter(|t| *t > 0)
            .unwrap_or(event_ts);
        let mut r = ctx.sdo("report", &format!("report--{uuid}"), event_ts);
        r.insert(
            "name".into(),
            if info.is_empty() {
                format!("MISP event {uuid}")
            } else {
                info.clone()
            }
            .into(),
        );
        r.insert("published".into(), stamp(published).into());
        r.insert("report_types".into(), json!(["threat-report"]));
        r.insert("object_refs".into(), refs.into());
        if !labels.is_empty() {
            r.insert("labels".into(), labels.into());
        }
        ctx.accept(
            "the event's report",
            Made {
                objects: vec![Value::Object(r)],
                main: String::new(),
            },
            tlp,
            None,
        );
    }
    Ok(Converted {
        event_uuid: uuid,
        info,
        tlp,
        cluster: ctx.cluster,
        objects: ctx.objects,
        skipped: ctx.skipped,
    })
}
