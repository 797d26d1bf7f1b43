//! `bluewire import csv FILE --map …`: rows of a CSV file (a header row, then one indicator per
//! row) as STIX 2.1 indicators. The map names what each column is:
//!
//! - an observable, as the STIX object path the pattern compares (`ipv4-addr:value`,
//!   `domain-name:value`, `url:value`, `file:hashes.'SHA-256'`, `email-addr:value`, …):
//!   several observable columns in one row are ANDed into one pattern; an empty cell is left
//!   out;
//! - `name`, `description`, `valid_from`, `valid_until` (STIX timestamps), `labels` and
//!   `indicator_types` (separated by `;`), `confidence` (0–100), or `tlp` (a per-row marking,
//!   which may only be stricter than the message's).
//!
//! Ids are deterministic (from the pattern), and `created`/`modified` are the row's
//! `valid_from`, else the file's modification time: re-importing the same file publishes
//! nothing twice, and an edited file publishes only its changed rows.

use std::collections::BTreeMap;

use bluewire_node::stix;
use serde_json::{Value, json};

/// What a column is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An object path compared for equality in the pattern.
    Observable(String),
    Name,
    Description,
    ValidFrom,
    ValidUntil,
    Labels,
    IndicatorTypes,
    Confidence,
    Tlp,
}

/// Parse `COLUMN=TARGET` pairs (from `--map`, comma-separated or repeated).
pub fn parse_map(pairs: &[String]) -> Result<Vec<(String, Target)>, String> {
    let mut out = Vec::new();
    for pair in pairs.iter().flat_map(|p| split_outside_quotes(p)) {
        let (col, target) = pair.split_once('=').ok_or_else(|| {
            format!(
                "--map {pair:?} is not COLUMN=TARGET (e.g. ip=ipv4-addr:value, note=description)"
            )
        })?;
        let (col, target) = (col.trim(), target.trim());
        if col.is_empty() {
            return Err(format!("--map {pair:?} names no column"));
        }
        let t = match target {
            "name" => Target::Name,
            "description" => Target::Description,
            "valid_from" => Target::ValidFrom,
            "valid_until" => Target::ValidUntil,
            "labels" => Target::Labels,
            "indicator_types" => Target::IndicatorTypes,
            "confidence" => Target::Confidence,
            "tlp" => Target::Tlp,
            path => {
                // Check the path with the pattern grammar itself.
                let probe = format!("[EXISTS {path}]");
                stix::pattern::parse(&probe).map_err(|e| {
                    format!(
                        "--map {col}={path}: not an object path nor one of name, description, valid_from, valid_until, labels, indicator_types, confidence, tlp ({e})"
                    )
                })?;
                Target::Observable(path.to_string())
            }
        };
        if out.iter().any(|(c, _)| c == col) {
            return Err(format!("--map names the column {col:?} twice"));
        }
        out.push((col.to_string(), t));
    }
    if !out.iter().any(|(_, t)| matches!(t, Target::Observable(_))) {
        return Err("--map names no observable column (e.g. --map ip=ipv4-addr:value)".into());
    }
    Ok(out)
}

/// Split on commas that are not inside single quotes (`file:hashes.'SHA-256'` has none, but
/// a quoted step may).
fn split_outside_quotes(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// An indicator's id from its pattern (a UUID in version-4 form from a SHA-256), so the same
/// row is the same object on every import. Not [`stix::export::stix_id`]: those ids are
/// Bluewire's own, and a member may not publish them.
fn indicator_id(pattern: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("bluewire/v1/csv-indicator\0{pattern}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&d.as_ref()[..16]);
    format!(
        "indicator--{}",
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    )
}

/// A string literal of the patterning language.
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// What a file's rows became: indicators, and (row number, reason) for rows left out.
#[derive(Debug, Default)]
pub struct Rows {
    pub objects: Vec<Value>,
    pub refused: Vec<(usize, String)>,
}

/// Turn CSV `text` into indicators by `map`. `default_time` (a STIX timestamp) stands in for
/// rows without `valid_from`. Row numbers count the header as row 1.
pub fn convert(text: &str, map: &[(String, Target)], default_time: &str) -> Result<Rows, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("reading the header row: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut columns = BTreeMap::new();
    for (col, target) in map {
        let i = header.iter().position(|h| h == col).ok_or_else(|| {
            format!(
                "--map names the column {col:?}, which the header row ({}) lacks",
                header.join(",")
            )
        })?;
        columns.insert(i, target.clone());
    }
    let mut rows = Rows::default();
    for (n, record) in reader.records().enumerate() {
        let row = n + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                rows.refused.push((row, format!("not a CSV row: {e}")));
                continue;
            }
        };
        match indicator(&record, &columns, default_time) {
            Ok(Some(o)) => rows.objects.push(o),
            Ok(None) => rows
                .refused
                .push((row, "no observable value in this row".into())),
            Err(e) => rows.refused.push((row, e)),
        }
    }
    Ok(rows)
}

fn indicator(
    record: &csv::StringRecord,
    columns: &BTreeMap<usize, Target>,
    default_time: &str,
) -> Result<Option<Value>, String> {
    let mut comparisons = Vec::new();
    let mut o = serde_json::Map::new();
    for (i, target) in columns {
        let v = record.get(*i).unwrap_or("").trim();
        if v.is_empty() {
            continue;
        }
        match target {
            Target::Observable(path) => comparisons.push(format!("{path} = {}", literal(v))),
            Target::Name => {
                o.insert("name".into(), v.into());
            }
            Target::Description => {
                o.insert("description".into(), v.into());
            }
            Target::ValidFrom | Target::ValidUntil => {
                let key = if *target == Target::ValidFrom {
                    "valid_from"
                } else {
                    "valid_until"
                };
                if stix::timestamp_ms(v).is_none() {
                    return Err(format!(
                        "{key} {v:?} is not a STIX timestamp (e.g. 2026-01-31T09:30:00Z)"
                    ));
                }
                o.insert(key.into(), v.into());
            }
            Target::Labels | Target::IndicatorTypes => {
                let list: Vec<&str> = v
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let key = if *target == Target::Labels {
                    "labels"
                } else {
                    "indicator_types"
                };
                o.insert(key.into(), json!(list));
            }
            Target::Confidence => {
                let c: u8 = v
                    .parse()
                    .ok()
                    .filter(|c| *c <= 100)
                    .ok_or_else(|| format!("confidence {v:?} is not 0 to 100"))?;
                o.insert("confidence".into(), c.into());
            }
            Target::Tlp => {
                let t = bluewire_node::envelope::parse_tlp_name(v).ok_or_else(|| {
                    format!("tlp {v:?} is not CLEAR, GREEN, AMBER, AMBER+STRICT or RED")
                })?;
                if let Some(m) = stix::marking_id(t) {
                    o.insert("object_marking_refs".into(), json!([m]));
                }
            }
        }
    }
    if comparisons.is_empty() {
        return Ok(None);
    }
    let pattern = format!("[{}]", comparisons.join(" AND "));
    stix::pattern::parse(&pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
    let time = o
        .get("valid_from")
        .and_then(Value::as_str)
        .unwrap_or(default_time)
        .to_string();
    o.entry("valid_from").or_insert_with(|| time.clone().into());
    o.entry("name")
        .or_insert_with(|| comparisons.join(" AND ").into());
    o.insert("type".into(), "indicator".into());
    o.insert("spec_version".into(), "2.1".into());
    o.insert("id".into(), indicator_id(&pattern).into());
    o.insert("created".into(), time.clone().into());
    o.insert("modified".into(), time.into());
    o.insert("pattern".into(), pattern.into());
    o.insert("pattern_type".into(), "stix".into());
    Ok(Some(Value::Object(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluewire_proto::v1::Tlp;

    const T: &str = "2026-11-30T08:00:00.000Z";

    fn map(s: &str) -> Vec<(String, Target)> {
        parse_map(&[s.to_string()]).expect("map")
    }

    #[test]
    fn maps_parse_and_bad_ones_say_why() {
        let m = map(
            "ip=ipv4-addr:value,sha=file:hashes.'SHA-256',note=description,seen=valid_from,tags=labels",
        );
        assert_eq!(
            m[0],
            ("ip".into(), Target::Observable("ipv4-addr:value".into()))
        );
        assert_eq!(
            m[1],
            (
                "sha".into(),
                Target::Observable("file:hashes.'SHA-256'".into())
            )
        );
        assert_eq!(m[2].1, Target::Description);
        assert_eq!(m[3].1, Target::ValidFrom);
        assert_eq!(m[4].1, Target::Labels);
        for (bad, needle) in [
            ("ip", "COLUMN=TARGET"),
            ("=ipv4-addr:value", "no column"),
            ("ip=IPv4:value", "not an object path"),
            ("note=description", "no observable"),
            ("ip=ipv4-addr:value,ip=domain-name:value", "twice"),
        ] {
            let e = parse_map(&[bad.to_string()]).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn rows_become_indicators_that_pass_the_stix_checks() {
        let text = "ip,domain,note,seen,tags,conf,tlp\n\
                    198.51.100.7,c2.example,LockBit C2,2026-11-01T00:00:00Z,c2;lockbit,80,\n\
                    ,evil.example,,,,,RED\n\
                    ,,only a note,,,,\n\
                    203.0.113.9,,,yesterday,,,\n\
                    203.0.113.10,,,,,101,\n";
        let m = map(
            "ip=ipv4-addr:value,domain=domain-name:value,note=description,seen=valid_from,tags=labels,conf=confidence,tlp=tlp",
        );
        let r = convert(text, &m, T).expect("converts");
        assert_eq!(r.objects.len(), 2, "{:?}", r.refused);
        let first = &r.objects[0];
        assert_eq!(
            first["pattern"],
            "[ipv4-addr:value = '198.51.100.7' AND domain-name:value = 'c2.example']"
        );
        assert_eq!(first["description"], "LockBit C2");
        assert_eq!(first["labels"], json!(["c2", "lockbit"]));
        assert_eq!(first["confidence"], 80);
        assert_eq!(first["created"], "2026-11-01T00:00:00Z");
        let second = &r.objects[1];
        assert_eq!(second["created"], T);
        assert_eq!(second["object_marking_refs"], json!([stix::TLP_RED]));
        for o in &r.objects {
            stix::check_object(o, Tlp::Green).unwrap_or_else(|e| panic!("{e}: {o}"));
        }
        let refused: Vec<usize> = r.refused.iter().map(|(n, _)| *n).collect();
        assert_eq!(refused, vec![4, 5, 6], "{:?}", r.refused);
        assert!(r.refused[0].1.contains("no observable"));
        assert!(r.refused[1].1.contains("valid_from"));
        assert!(r.refused[2].1.contains("confidence"));
        // Deterministic, and ids a member may publish (not Bluewire's own).
        assert!(!stix::export::is_bluewire_id(
            first["id"].as_str().expect("id")
        ));
        // Deterministic: the same file gives the same objects.
        assert_eq!(convert(text, &m, T).expect("again").objects, r.objects);
    }

    #[test]
    fn values_are_quoted_as_pattern_literals() {
        let text = "url\nhttps://x.example/a'b\\c\n";
        let r = convert(text, &map("url=url:value"), T).expect("converts");
        assert_eq!(
            r.objects[0]["pattern"],
            r"[url:value = 'https://x.example/a\'b\\c']"
        );
        stix::pattern::parse(r.objects[0]["pattern"].as_str().expect("pattern")).expect("parses");
    }

    #[test]
    fn a_missing_column_or_a_bad_row_is_reported() {
        let e = convert("a,b\n1,2\n", &map("ip=ipv4-addr:value"), T).expect_err("no column");
        assert!(e.contains("lacks"), "{e}");
        let r = convert(
            "ip\n1.2.3.4\n5.6.7.8,extra\n",
            &map("ip=ipv4-addr:value"),
            T,
        )
        .expect("rows");
        assert_eq!(r.objects.len(), 1);
        assert_eq!(r.refused[0].0, 3);
        assert!(r.refused[0].1.contains("not a CSV row"));
    }
}
