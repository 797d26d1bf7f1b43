//! TAXII 2.1 query parameters (section 3.4 of the spec): `added_after`, `limit`, `next`,
//! `match[id]`, `match[type]`, `match[version]`, `match[spec_version]`, parsed and applied.
//! Pure: a query is a value, an object passes it or not, a page position is a token.

use serde_json::Value;

/// The parameters of `objects` and `manifest` (section 3.4).
pub const OBJECT_PARAMS: &[&str] = &[
    "added_after",
    "limit",
    "next",
    "match[id]",
    "match[type]",
    "match[version]",
    "match[spec_version]",
];

/// Where a page ends: the store sequence of a message and the position of an object in what
/// that message exports. Pages are in (seq, index) order, and new messages only ever get
/// larger sequences, so a position stays valid while messages keep arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub seq: u64,
    pub index: u32,
}

impl Cursor {
    /// The opaque `next` token.
    pub fn token(self) -> String {
        format!("{}-{}", self.seq, self.index)
    }

    pub fn parse(token: &str) -> Result<Cursor, String> {
        let bad = || {
            format!("next={token:?} is not a token this server gave out: start again without next")
        };
        let (seq, index) = token.split_once('-').ok_or_else(bad)?;
        Ok(Cursor {
            seq: seq.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// Which versions of each object: `match[version]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    /// The latest (the default).
    Last,
    First,
    All,
    /// These `modified` timestamps (or `created`, for objects without it).
    At(Vec<String>),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only objects added after this (unix ms).
    pub added_after: Option<i64>,
    pub limit: usize,
    pub next: Option<Cursor>,
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub versions: Versions,
    pub spec_versions: Vec<String>,
}

/// Parse a query string (`a=b&c=d`, percent-encoded) for an endpoint that takes `allowed`
/// parameters, with `default_limit` and `max_limit`.
pub fn parse(
    query: Option<&str>,
    allowed: &[&str],
    default_limit: usize,
    max_limit: usize,
) -> Result<Query, String> {
    let mut q = Query {
        added_after: None,
        limit: default_limit,
        next: None,
        ids: Vec::new(),
        types: Vec::new(),
        versions: Versions::Last,
        spec_versions: Vec::new(),
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "the parameter {k:?} is not supported here; this endpoint takes {}",
                allowed.join(", ")
            ));
        }
        let list = || -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        match k.as_str() {
            "added_after" => {
                let t = crate::stix::timestamp_ms(&v).ok_or_else(|| {
                    format!("added_after={v:?} is not a timestamp like 2026-01-31T09:30:00.000Z")
                })?;
                q.added_after = Some(t);
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("limit={v:?} is not a positive integer"))?;
                q.limit = n.min(max_limit);
            }
            "next" => q.next = Some(Cursor::parse(&v)?),
            "match[id]" => q.ids.extend(list()),
            "match[type]" => q.types.extend(list()),
            "match[spec_version]" => q.spec_versions.extend(list()),
            "match[version]" => {
                let items = list();
                q.versions = match items.as_slice() {
                    [one] if one == "last" => Versions::Last,
                    [one] if one == "first" => Versions::First,
                    [one] if one == "all" => Versions::All,
                    _ => {
                        for t in &items {
                            if crate::stix::timestamp_ms(t).is_none() {
                                return Err(format!(
                                    "match[version]={v:?}: each value is last, first, all or a timestamp"
                                ));
                            }
                        }
                        Versions::At(items)
                    }
                };
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Percent-decoding of one query component (`+` is a space).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?} has a bad percent escape"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

impl Query {
    /// Whether `o` passes `match[id]`, `match[type]` and `match[spec_version]` (objects
    /// without a `spec_version`, cyber-observables, are 2.1).
    pub fn admits(&self, o: &Value) -> bool {
        let field = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
        (self.ids.is_empty() || self.ids.iter().any(|i| i == field("id")))
            && (self.types.is_empty() || self.types.iter().any(|t| t == field("type")))
            && (self.spec_versions.is_empty() || {
                let v = o
                    .get("spec_version")
                    .and_then(Value::as_str)
                    .unwrap_or("2.1");
                self.spec_versions.iter().any(|s| s == v)
            })
    }

    /// Whether an object at `version`, among the versions `all` of its id this collection
    /// holds, passes `match[version]`.
    pub fn admits_version(&self, version: &str, all: &[String]) -> bool {
        match &self.versions {
            Versions::All => true,
            Versions::Last => all
                .iter()
                .all(|v| ordered(v, version) != std::cmp::Ordering::Greater),
            Versions::First => all
                .iter()
                .all(|v| ordered(v, version) != std::cmp::Ordering::Less),
            Versions::At(list) => list.iter().any(|v| same_time(v, version)),
        }
    }
}

/// Two versions in time order (as text when one is not a timestamp).
fn ordered(a: &str, b: &str) -> std::cmp::Ordering {
    match (crate::stix::timestamp_ms(a), crate::stix::timestamp_ms(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Two STIX timestamps naming the same instant (precision may differ).
fn same_time(a: &str, b: &str) -> bool {
    match (crate::stix::timestamp_ms(a), crate::stix::timestamp_ms(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[&str] = OBJECT_PARAMS;

    #[test]
    fn parameters_parse_and_bad_ones_say_why() {
        let q = parse(
            Some("limit=5&match%5Btype%5D=indicator,malware&match[id]=a--1&added_after=2026-01-01T00:00:00Z&next=7-3&match[version]=all&match[spec_version]=2.1"),
            ALL,
            100,
            1000,
        )
        .expect("parses");
        assert_eq!(q.limit, 5);
        assert_eq!(q.types, ["indicator", "malware"]);
        assert_eq!(q.ids, ["a--1"]);
        assert_eq!(q.added_after, Some(1_767_225_600_000));
        assert_eq!(q.next, Some(Cursor { seq: 7, index: 3 }));
        assert_eq!(q.versions, Versions::All);
        assert_eq!(q.spec_versions, ["2.1"]);
        let d = parse(None, ALL, 100, 1000).expect("empty");
        assert_eq!((d.limit, d.versions, d.next), (100, Versions::Last, None));
        assert_eq!(
            parse(Some("limit=5000"), ALL, 100, 1000).map(|q| q.limit),
            Ok(1000)
        );
        for (bad, needle) in [
            ("limit=0", "positive"),
            ("limit=x", "positive"),
            ("next=zz", "start again"),
            ("added_after=yesterday", "timestamp"),
            ("match[version]=newest", "last, first, all"),
            ("colour=red", "not supported"),
            ("limit=%ZZ", "percent"),
        ] {
            let e = parse(Some(bad), ALL, 100, 1000).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(parse(Some("limit=3"), &["match[id]"], 100, 1000).is_err());
        assert_eq!(
            parse(Some("match[version]=first"), ALL, 1, 1).map(|q| q.versions),
            Ok(Versions::First)
        );
        assert_eq!(
            parse(
                Some("match[version]=2026-01-01T00:00:00Z,2026-02-01T00:00:00.000Z"),
                ALL,
                1,
                1
            )
            .map(|q| q.versions),
            Ok(Versions::At(vec![
                "2026-01-01T00:00:00Z".into(),
                "2026-02-01T00:00:00.000Z".into()
            ]))
        );
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor { seq: 42, index: 7 };
        assert_eq!(Cursor::parse(&c.token()), Ok(c));
        assert!(Cursor::parse("42").is_err());
        assert!(Cursor::parse("a-1").is_err());
        assert!(Cursor::parse("1-b").is_err());
        assert!(Cursor { seq: 1, index: 9 } < Cursor { seq: 2, index: 0 });
    }

    #[test]
    fn matching_objects_and_versions() {
        let q = parse(
            Some("match[type]=indicator&match[spec_version]=2.1"),
            ALL,
            10,
            10,
        )
        .expect("q");
        assert!(
            q.admits(&json!({"type": "indicator", "id": "indicator--1", "spec_version": "2.1"}))
        );
        assert!(!q.admits(&json!({"type": "malware", "id": "malware--1", "spec_version": "2.1"})));
        let sco = parse(Some("match[spec_version]=2.1"), ALL, 10, 10).expect("q");
        assert!(sco.admits(&json!({"type": "ipv4-addr", "id": "ipv4-addr--1"})));
        let old = parse(Some("match[spec_version]=2.0"), ALL, 10, 10).expect("q");
        assert!(!old.admits(&json!({"type": "ipv4-addr", "id": "ipv4-addr--1"})));
        let id = parse(Some("match[id]=indicator--2"), ALL, 10, 10).expect("q");
        assert!(!id.admits(&json!({"type": "indicator", "id": "indicator--1"})));
        assert!(id.admits(&json!({"type": "indicator", "id": "indicator--2"})));

        let all = vec![
            "2026-01-01T00:00:00.000Z".to_string(),
            "2026-02-01T00:00:00.000Z".to_string(),
        ];
        let last = parse(None, ALL, 1, 1).expect("q");
        assert!(last.admits_version(&all[1], &all));
        assert!(!last.admits_version(&all[0], &all));
        let first = parse(Some("match[version]=first"), ALL, 1, 1).expect("q");
        assert!(first.admits_version(&all[0], &all) && !first.admits_version(&all[1], &all));
        let every = parse(Some("match[version]=all"), ALL, 1, 1).expect("q");
        assert!(every.admits_version(&all[0], &all) && every.admits_version(&all[1], &all));
        // Compared as times, not text: "…00Z" is earlier than "…00.500Z".
        let mixed = vec![
            "2026-01-01T00:00:00Z".to_string(),
            "2026-01-01T00:00:00.500Z".to_string(),
        ];
        assert!(last.admits_version(&mixed[1], &mixed) && !last.admits_version(&mixed[0], &mixed));
        let at = parse(Some("match[version]=2026-02-01T00:00:00Z"), ALL, 1, 1).expect("q");
        assert!(at.admits_version(&all[1], &all) && !at.admits_version(&all[0], &all));
    }
}
