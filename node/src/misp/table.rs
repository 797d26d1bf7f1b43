//! The MISP attribute types, object relations and galaxy types Bluewire maps to STIX 2.1,
//! as *facts*: one comparison each on a cyber-observable (`file:hashes.MD5 = '…'`). The
//! same facts make an indicator's pattern (rendered through the patterning AST, so quoting
//! and escaping are the parser's) and an observed-data's cyber-observables, so the two
//! never disagree. Shapes follow misp-stix (MISP's own converter), so a consumer sees the
//! same STIX whichever tool made it; where they differ, docs/MISP.md says why.
//!
//! Pure: no store, network or clock.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::stix::pattern::{Comparison, Literal, ObjectPath, Operator, PathStep, Pattern};

/// A literal a fact compares with.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Str(String),
    Int(i64),
}

impl Lit {
    fn json(&self) -> Value {
        match self {
            Lit::Str(s) => Value::from(s.as_str()),
            Lit::Int(n) => Value::from(*n),
        }
    }

    fn literal(&self) -> Literal {
        match self {
            Lit::Str(s) => Literal::Str(s.clone()),
            Lit::Int(n) => Literal::Int(*n),
        }
    }
}

/// Where on the observable a fact sits.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Path {
    /// `root:prop`.
    Prop(&'static str),
    /// `root:hashes.'ALGORITHM'`.
    Hash(&'static str),
    /// `root:prop.value` of one referenced observable of type `child`; `typed` adds
    /// `root:prop.type = 'child'` (network-traffic addresses, as misp-stix writes them).
    Ref {
        prop: &'static str,
        child: &'static str,
        typed: bool,
    },
    /// `root:prop[*].value` of a list of referenced observables of type `child`.
    Refs {
        prop: &'static str,
        child: &'static str,
    },
    /// A path into an extension: patterns only (no observable carries it on its own).
    Ext(&'static [&'static str]),
}

/// One comparison on an observable of type `root`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fact {
    pub root: &'static str,
    pub path: Path,
    pub value: Lit,
}

impl Fact {
    fn new(root: &'static str, path: Path, value: Lit) -> Fact {
        Fact { root, path, value }
    }

    fn prop(root: &'static str, prop: &'static str, value: &str) -> Fact {
        Fact::new(root, Path::Prop(prop), Lit::Str(value.to_string()))
    }

    /// A key naming the property a single-valued fact sets (two facts with the same key
    /// cannot both hold on one observable); None for list members.
    pub(super) fn single_key(&self) -> Option<String> {
        match &self.path {
            Path::Prop(p) => Some((*p).to_string()),
            Path::Hash(a) => Some(format!("hashes.{a}")),
            Path::Ref { prop, .. } => Some((*prop).to_string()),
            Path::Refs { .. } => None,
            Path::Ext(keys) => Some(keys.join(".")),
        }
    }

    /// The comparisons this fact is, as (path, value) pairs in the canonical form
    /// [`path_key`] gives.
    pub(super) fn pairs(&self) -> Vec<(String, String)> {
        self.comparisons()
            .iter()
            .filter_map(|c| match c {
                Comparison::Compare { path, value, .. } => Some((path_key(path), lit_text(value))),
                _ => None,
            })
            .collect()
    }

    fn comparisons(&self) -> Vec<Comparison> {
        let key = |k: &str| PathStep::Key(k.to_string());
        let cmp = |steps: Vec<PathStep>, value: Literal| Comparison::Compare {
            path: ObjectPath {
                object_type: self.root.to_string(),
                steps,
            },
            negated: false,
            op: Operator::Eq,
            value,
        };
        let value = self.value.literal();
        match &self.path {
            Path::Prop(p) => vec![cmp(vec![key(p)], value)],
            Path::Hash(a) => vec![cmp(vec![key("hashes"), key(a)], value)],
            Path::Ref { prop, child, typed } => {
                let mut out = Vec::new();
                if *typed {
                    out.push(cmp(
                        vec![key(prop), key("type")],
                        Literal::Str(child.to_string()),
                    ));
                }
                out.push(cmp(vec![key(prop), key("value")], value));
                out
            }
            Path::Refs { prop, .. } => {
                vec![cmp(
                    vec![key(prop), PathStep::AnyIndex, key("value")],
                    value,
                )]
            }
            Path::Ext(keys) => vec![cmp(keys.iter().map(|k| key(k)).collect(), value)],
        }
    }
}

/// A path as one comparable string: `type:key.key[*].key`, keys unquoted.
pub(super) fn path_key(path: &ObjectPath) -> String {
    let mut s = format!("{}:", path.object_type);
    for (i, step) in path.steps.iter().enumerate() {
        match step {
            PathStep::Key(k) => {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathStep::Index(n) => s.push_str(&format!("[{n}]")),
            PathStep::AnyIndex => s.push_str("[*]"),
        }
    }
    s
}

/// A literal's value as text (strings unquoted, numbers as written).
pub(super) fn lit_text(l: &Literal) -> String {
    match l {
        Literal::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The pattern `[a AND b …]` of facts on one observable type.
pub(super) fn pattern(facts: &[Fact]) -> String {
    let mut cmps: Vec<Comparison> = facts.iter().flat_map(Fact::comparisons).collect();
    let comparison = if cmps.len() == 1 {
        cmps.remove(0)
    } else {
        Comparison::And(cmps)
    };
    Pattern::Observation {
        comparison,
        qualifiers: Vec::new(),
    }
    .to_string()
}

/// MISP hash types: (MISP name, STIX hash algorithm, hex length or 0 when not hex).
const HASHES: [(&str, &str, usize); 8] = [
    ("md5", "MD5", 32),
    ("sha1", "SHA-1", 40),
    ("sha256", "SHA-256", 64),
    ("sha512", "SHA-512", 128),
    ("sha3-256", "SHA3-256", 64),
    ("sha3-512", "SHA3-512", 128),
    ("ssdeep", "SSDEEP", 0),
    ("tlsh", "TLSH", 0),
];

/// x509 fingerprints: (MISP type, STIX hash algorithm, hex length).
const X509: [(&str, &str, usize); 3] = [
    ("x509-fingerprint-md5", "MD5", 32),
    ("x509-fingerprint-sha1", "SHA-1", 40),
    ("x509-fingerprint-sha256", "SHA-256", 64),
];

/// The header path misp-stix uses for a user-agent.
const USER_AGENT: &[&str] = &[
    "extensions",
    "http-request-ext",
    "request_header",
    "User-Agent",
];

/// Every MISP attribute type [`attribute_facts`] maps (besides `vulnerability`, which
/// becomes a vulnerability object).
#[cfg(test)]
pub(super) const ATTRIBUTE_TYPES: &[&str] = &[
    "ip-src",
    "ip-dst",
    "ip-src|port",
    "ip-dst|port",
    "domain",
    "hostname",
    "domain|ip",
    "url",
    "uri",
    "email",
    "email-src",
    "email-dst",
    "email-subject",
    "md5",
    "sha1",
    "sha256",
    "sha512",
    "sha3-256",
    "sha3-512",
    "ssdeep",
    "tlsh",
    "filename",
    "filename|md5",
    "filename|sha1",
    "filename|sha256",
    "filename|sha512",
    "mutex",
    "regkey",
    "AS",
    "user-agent",
    "mac-address",
    "x509-fingerprint-md5",
    "x509-fingerprint-sha1",
    "x509-fingerprint-sha256",
];

fn hash(algorithm: &'static str, hex_len: usize, value: &str) -> Result<Lit, String> {
    let ok =
        hex_len == 0 || (value.len() == hex_len && value.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(Lit::Str(value.to_string()))
    } else {
        Err(format!(
            "{value:?} is not a {algorithm} hash ({hex_len} hexadecimal digits)"
        ))
    }
}

/// The STIX type of an IP address or CIDR range.
fn address_type(value: &str) -> Result<&'static str, String> {
    let (ip, prefix) = value.split_once('/').unwrap_or((value, ""));
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("{value:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if !prefix.is_empty() && prefix.parse::<u8>().map_or(true, |p| p > max) {
        return Err(format!("{value:?} has no valid prefix length"));
    }
    Ok(if addr.is_ipv4() {
        "ipv4-addr"
    } else {
        "ipv6-addr"
    })
}

fn address(side: &'static str, value: &str) -> Result<Fact, String> {
    Ok(Fact::new(
        "network-traffic",
        Path::Ref {
            prop: side,
            child: address_type(value)?,
            typed: true,
        },
        Lit::Str(value.to_string()),
    ))
}

fn port(value: &str) -> Result<Lit, String> {
    value
        .trim()
        .parse::<u16>()
        .map(|p| Lit::Int(i64::from(p)))
        .map_err(|_| format!("{value:?} is not a port number (0–65535)"))
}

/// `a|b` of a MISP composite type.
fn split<'a>(ty: &str, value: &'a str) -> Result<(&'a str, &'a str), String> {
    value
        .rsplit_once('|')
        .map(|(a, b)| (a.trim(), b.trim()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("a {ty} value is two parts joined by |, not {value:?}"))
}

/// The facts of a MISP attribute, or why it has no STIX form.
pub(super) fn attribute_facts(ty: &str, value: &str) -> Result<Vec<Fact>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("the value is empty".into());
    }
    let side = |ty: &str| {
        if ty.starts_with("ip-src") {
            "src_ref"
        } else {
            "dst_ref"
        }
    };
    let port_prop = |ty: &str| {
        if ty.starts_with("ip-src") {
            "src_port"
        } else {
            "dst_port"
        }
    };
    let facts = match ty {
        "ip-src" | "ip-dst" => vec![address(side(ty), v)?],
        "ip-src|port" | "ip-dst|port" => {
            let (ip, p) = split(ty, v)?;
            vec![
                address(side(ty), ip)?,
                Fact::new("network-traffic", Path::Prop(port_prop(ty)), port(p)?),
            ]
        }
        "domain" | "hostname" => vec![Fact::prop("domain-name", "value", v)],
        "domain|ip" => {
            let (domain, ip) = split(ty, v)?;
            vec![
                Fact::prop("domain-name", "value", domain),
                Fact::new(
                    "domain-name",
                    Path::Refs {
                        prop: "resolves_to_refs",
                        child: address_type(ip)?,
                    },
                    Lit::Str(ip.to_string()),
                ),
            ]
        }
        "url" | "uri" => vec![Fact::prop("url", "value", v)],
        "email" => vec![Fact::prop("email-addr", "value", v)],
        "email-src" => vec![Fact::new(
            "email-message",
            Path::Ref {
                prop: "from_ref",
                child: "email-addr",
                typed: false,
            },
            Lit::Str(v.to_string()),
        )],
        "email-dst" => vec![Fact::new(
            "email-message",
            Path::Refs {
                prop: "to_refs",
                child: "email-addr",
            },
            Lit::Str(v.to_string()),
        )],
        "email-subject" => vec![Fact::prop("email-message", "subject", v)],
        "filename" => vec![Fact::prop("file", "name", v)],
        "mutex" => vec![Fact::prop("mutex", "name", v)],
        "regkey" => vec![Fact::prop("windows-registry-key", "key", v)],
        "AS" => {
            let digits = v.trim_start_matches("AS").trim_start_matches("as");
            let n: u32 = digits
                .parse()
                .map_err(|_| format!("{v:?} is not an AS number (AS64496 or 64496)"))?;
            vec![Fact::new(
                "autonomous-system",
                Path::Prop("number"),
                Lit::Int(i64::from(n)),
            )]
        }
        "user-agent" => vec![Fact::new(
            "network-traffic",
            Path::Ext(USER_AGENT),
            Lit::Str(v.to_string()),
        )],
        "mac-address" => vec![Fact::prop(
            "mac-addr",
            "value",
            v.to_ascii_lowercase().as_str(),
        )],
        "ja3-fingerprint-md5" => {
            return Err(
                "STIX 2.1 has no observable for a JA3 fingerprint (misp-stix writes a custom x-misp-attribute)"
                    .into(),
            );
        }
        _ => {
            if let Some((_, alg, len)) = HASHES.iter().find(|(t, ..)| *t == ty) {
                vec![Fact::new("file", Path::Hash(alg), hash(alg, *len, v)?)]
            } else if let Some((_, alg, len)) = ty
                .strip_prefix("filename|")
                .and_then(|h| HASHES.iter().find(|(t, ..)| *t == h))
            {
                let (name, h) = split(ty, v)?;
                vec![
                    Fact::prop("file", "name", name),
                    Fact::new("file", Path::Hash(alg), hash(alg, *len, h)?),
                ]
            } else if let Some((_, alg, len)) = X509.iter().find(|(t, ..)| *t == ty) {
                vec![Fact::new(
                    "x509-certificate",
                    Path::Hash(alg),
                    hash(alg, *len, v)?,
                )]
            } else {
                return Err(format!("no STIX 2.1 mapping for the MISP type {ty:?}"));
            }
        }
    };
    Ok(facts)
}

/// The observable type a MISP object of this template becomes, if Bluewire maps it.
pub(super) fn object_root(name: &str) -> Option<&'static str> {
    Some(match name {
        "file" => "file",
        "domain-ip" => "domain-name",
        "url" => "url",
        "email" => "email-message",
        "ip-port" => "network-traffic",
        "registry-key" => "windows-registry-key",
        _ => return None,
    })
}

/// The fact one attribute of a MISP object stands for: None when Bluewire maps no
/// property for the relation, `Err` when the value does not fit it.
pub(super) fn object_fact(name: &str, relation: &str, value: &str) -> Option<Result<Fact, String>> {
    let v = value.trim();
    let r = || -> Option<Result<Fact, String>> {
        let root = object_root(name)?;
        let str_fact = |p: &'static str| Some(Ok(Fact::prop(root, p, v)));
        match (name, relation) {
            ("file", "filename") => str_fact("name"),
            ("file", "mimetype") => str_fact("mime_type"),
            ("file", "size-in-bytes") => Some(
                v.parse::<u64>()
                    .ok()
                    .and_then(|n| i64::try_from(n).ok())
                    .map(|n| Fact::new(root, Path::Prop("size"), Lit::Int(n)))
                    .ok_or_else(|| format!("{v:?} is not a size in bytes")),
            ),
            ("file", h) => {
                let (_, alg, len) = HASHES.iter().find(|(t, ..)| *t == h)?;
                Some(hash(alg, *len, v).map(|l| Fact::new(root, Path::Hash(alg), l)))
            }
            ("domain-ip", "domain" | "hostname") => str_fact("value"),
            ("domain-ip", "ip") => Some(address_type(v).map(|child| {
                Fact::new(
                    root,
                    Path::Refs {
                        prop: "resolves_to_refs",
                        child,
                    },
                    Lit::Str(v.to_string()),
                )
            })),
            ("url", "url") => str_fact("value"),
            ("email", "from") => Some(Ok(Fact::new(
                root,
                Path::Ref {
                    prop: "from_ref",
                    child: "email-addr",
                    typed: false,
                },
                Lit::Str(v.to_string()),
            ))),
            ("email", "to" | "cc" | "bcc") => {
                let prop = match relation {
                    "to" => "to_refs",
                    "cc" => "cc_refs",
                    _ => "bcc_refs",
                };
                Some(Ok(Fact::new(
                    root,
                    Path::Refs {
                        prop,
                        child: "email-addr",
                    },
                    Lit::Str(v.to_string()),
                )))
            }
            ("email", "subject") => str_fact("subject"),
            ("email", "message-id") => str_fact("message_id"),
            ("ip-port", "ip" | "ip-dst") => Some(address("dst_ref", v)),
            ("ip-port", "ip-src") => Some(address("src_ref", v)),
            ("ip-port", "dst-port") => {
                Some(port(v).map(|p| Fact::new(root, Path::Prop("dst_port"), p)))
            }
            ("ip-port", "src-port") => {
                Some(port(v).map(|p| Fact::new(root, Path::Prop("src_port"), p)))
            }
            ("registry-key", "key") => str_fact("key"),
            _ => None,
        }
    };
    if v.is_empty() {
        return Some(Err("the value is empty".into()));
    }
    r()
}

/// UUIDv5 (RFC 4122 section 4.3) of `name` in the namespace `ns`.
pub(super) fn uuid5(ns: &uuid::Uuid, name: &str) -> uuid::Uuid {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(ns.as_bytes());
    ctx.update(name.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    uuid::Builder::from_sha1_bytes(b).into_uuid()
}

/// An observable with its id: a UUIDv5 of its properties in the namespace `ns` (the MISP
/// attribute's or object's uuid). The same MISP record with the same values gives the same
/// id; an edited value gives a new one, so the new observable is published, not skipped.
fn sco(ty: &str, props: Map<String, Value>, ns: &uuid::Uuid) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), ty.into());
    o.extend(props);
    let id = format!("{ty}--{}", uuid5(ns, &Value::Object(o.clone()).to_string()));
    o.insert("spec_version".into(), "2.1".into());
    o.insert("id".into(), id.into());
    Value::Object(o)
}

fn id_of(o: &Value) -> String {
    o.get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The cyber-observables of facts on one observable type: the root first, then the
/// observables it references.
pub(super) fn observables(facts: &[Fact], ns: &uuid::Uuid) -> Result<Vec<Value>, String> {
    let Some(root_ty) = facts.first().map(|f| f.root) else {
        return Err("nothing to observe".into());
    };
    let mut root = Map::new();
    let mut children: Vec<Value> = Vec::new();
    let mut protocols = BTreeSet::new();
    for f in facts {
        let mut child = |child: &str, children: &mut Vec<Value>| {
            let mut p = Map::new();
            p.insert("value".into(), f.value.json());
            let c = sco(child, p, ns);
            let id = id_of(&c);
            if let Some(proto) = child.strip_suffix("-addr").filter(|p| p.starts_with("ipv")) {
                protocols.insert(proto.to_string());
            }
            if !children.iter().any(|o| id_of(o) == id) {
                children.push(c);
            }
            id
        };
        match &f.path {
            Path::Prop(p) => {
                root.insert((*p).into(), f.value.json());
            }
            Path::Hash(a) => {
                if let Value::Object(h) = root
                    .entry("hashes")
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    h.insert((*a).into(), f.value.json());
                }
            }
            Path::Ref { prop, child: c, .. } => {
                let id = child(c, &mut children);
                root.insert((*prop).into(), id.into());
            }
            Path::Refs { prop, child: c } => {
                let id = child(c, &mut children);
                if let Value::Array(list) = root
                    .entry(*prop)
                    .or_insert_with(|| Value::Array(Vec::new()))
                    && !list.iter().any(|x| x.as_str() == Some(id.as_str()))
                {
                    list.push(id.into());
                }
            }
            Path::Ext(_) => {
                return Err(
                    "STIX 2.1 has no observable that carries it on its own (a network-traffic needs an address): mark it to_ids in MISP to import it as an indicator"
                        .into(),
                );
            }
        }
    }
    match root_ty {
        "network-traffic" => {
            let p: Vec<Value> = protocols.into_iter().map(Value::from).collect();
            root.insert("protocols".into(), p.into());
        }
        "email-message" => {
            root.insert("is_multipart".into(), false.into());
        }
        _ => {}
    }
    let mut out = vec![sco(root_ty, root, ns)];
    out.extend(children);
    Ok(out)
}

/// The STIX object a MISP galaxy's clusters become (misp-stix's table), if any.
pub(super) fn galaxy_type(galaxy: &str) -> Option<&'static str> {
    Some(match galaxy {
        "cmtmf-attack-pattern"
        | "mitre-attack-pattern"
        | "mitre-enterprise-attack-attack-pattern"
        | "mitre-ics-techniques"
        | "mitre-mobile-attack-attack-pattern"
        | "mitre-pre-attack-attack-pattern" => "attack-pattern",
        "mitre-enterprise-attack-intrusion-set"
        | "mitre-intrusion-set"
        | "mitre-mobile-attack-intrusion-set"
        | "mitre-pre-attack-intrusion-set" => "intrusion-set",
        "android"
        | "backdoor"
        | "banker"
        | "cryptominers"
        | "malpedia"
        | "mitre-enterprise-attack-malware"
        | "mitre-ics-software"
        | "mitre-malware"
        | "mitre-mobile-attack-malware"
        | "ransomware"
        | "stealer" => "malware",
        "360net-threat-actor"
        | "microsoft-activity-group"
        | "mitre-ics-groups"
        | "threat-actor" => "threat-actor",
        "botnet"
        | "rat"
        | "exploit-kit"
        | "tds"
        | "tool"
        | "mitre-tool"
        | "mitre-enterprise-attack-tool"
        | "mitre-mobile-attack-tool" => "tool",
        _ => return None,
    })
}

/// The MISP attribute (type, value) for comparisons on one observable, when they are one
/// of the shapes [`attribute_facts`] makes: the inverse of the table.
pub(super) fn reverse(pairs: &[(String, String)]) -> Option<(&'static str, String)> {
    let get = |k: &str| pairs.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let has = |keys: &[&str]| pairs.len() == keys.len() && keys.iter().all(|k| get(k).is_some());
    for side in ["src", "dst"] {
        let ty_key = format!("network-traffic:{side}_ref.type");
        let value_key = format!("network-traffic:{side}_ref.value");
        let port_key = format!("network-traffic:{side}_port");
        let ip = if side == "src" { "ip-src" } else { "ip-dst" };
        let ip_port = if side == "src" {
            "ip-src|port"
        } else {
            "ip-dst|port"
        };
        if has(&[&ty_key, &value_key]) || has(&[&value_key]) {
            return Some((ip, get(&value_key)?));
        }
        if has(&[&ty_key, &value_key, &port_key]) || has(&[&value_key, &port_key]) {
            return Some((ip_port, format!("{}|{}", get(&value_key)?, get(&port_key)?)));
        }
    }
    if has(&["domain-name:value", "domain-name:resolves_to_refs[*].value"]) {
        return Some((
            "domain|ip",
            format!(
                "{}|{}",
                get("domain-name:value")?,
                get("domain-name:resolves_to_refs[*].value")?
            ),
        ));
    }
    if pairs.len() == 2
        && let Some(name) = get("file:name")
    {
        for (t, alg, _) in HASHES {
            if let Some(h) = get(&format!("file:hashes.{alg}")) {
                let ty = match t {
                    "md5" => "filename|md5",
                    "sha1" => "filename|sha1",
                    "sha256" => "filename|sha256",
                    "sha512" => "filename|sha512",
                    _ => return None,
                };
                return Some((ty, format!("{name}|{h}")));
            }
        }
    }
    let [(key, value)] = pairs else {
        return None;
    };
    let ty = match key.as_str() {
        "ipv4-addr:value" | "ipv6-addr:value" => "ip-dst",
        "domain-name:value" => "domain",
        "url:value" => "url",
        "email-addr:value" => "email",
        "email-message:from_ref.value" => "email-src",
        "email-message:to_refs[*].value" => "email-dst",
        "email-message:subject" => "email-subject",
        "file:name" => "filename",
        "mutex:name" => "mutex",
        "windows-registry-key:key" => "regkey",
        "autonomous-system:number" => return Some(("AS", format!("AS{value}"))),
        "network-traffic:extensions.http-request-ext.request_header.User-Agent" => "user-agent",
        "mac-addr:value" => "mac-address",
        k => {
            if let Some(alg) = k.strip_prefix("file:hashes.") {
                HASHES.iter().find(|(_, a, _)| *a == alg)?.0
            } else if let Some(alg) = k.strip_prefix("x509-certificate:hashes.") {
                X509.iter().find(|(_, a, _)| *a == alg)?.0
            } else {
                return None;
            }
        }
    };
    Some((ty, value.clone()))
}

/// The (path, value) pairs [`attribute_facts`] gives for (type, value), for checking that a
/// hinted type has the shape a pattern has.
pub(super) fn attribute_pairs(ty: &str, value: &str) -> Option<Vec<(String, String)>> {
    let facts = attribute_facts(ty, value).ok()?;
    Some(facts.iter().flat_map(Fact::pairs).collect())
}

/// MISP's default category for the attribute types Bluewire writes.
pub(super) fn category(ty: &str) -> &'static str {
    match ty {
        "md5" | "sha1" | "sha256" | "sha512" | "sha3-256" | "sha3-512" | "ssdeep" | "tlsh"
        | "filename" | "email-src" | "email-subject" => "Payload delivery",
        t if t.starts_with("filename|") => "Payload delivery",
        "mutex" => "Artifacts dropped",
        "regkey" => "Persistence mechanism",
        "vulnerability" => "External analysis",
        "yara" | "sigma" => "Payload installation",
        "text" => "Other",
        _ => "Network activity",
    }
}
