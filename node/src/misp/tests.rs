use bluewire_proto::v1::{self as pb, content::Body};
use serde_json::{Value, json};

use super::*;

const EVENT: &str = "5e7b0c1a-2b3c-4d5e-8f9a-0b1c2d3e4f50";
const SG: &str = "5e7b0c1a-2b3c-4d5e-8f9a-5600000000aa";
/// 2026-11-30T08:00:00Z.
const T: i64 = 1_796_025_600;

fn uuid(n: usize) -> String {
    format!("5e7b0c1a-2b3c-4d5e-8f9a-{n:012}")
}

fn attr(n: usize, ty: &str, value: &str, to_ids: bool) -> Value {
    json!({
        "uuid": uuid(n), "type": ty, "value": value, "to_ids": to_ids,
        "category": table::category(ty), "timestamp": (T + n as i64).to_string(),
        "distribution": "5", "comment": "",
    })
}

/// An event as MISP's API writes it (numbers as strings).
fn event(attributes: Vec<Value>) -> Value {
    json!({"Event": {
        "uuid": EVENT, "info": "LockBit affiliate", "date": "2026-11-30",
        "timestamp": T.to_string(), "publish_timestamp": (T + 60).to_string(), "published": true,
        "distribution": "3", "sharing_group_id": "0", "threat_level_id": "1", "analysis": "1",
        "Orgc": {"name": "CIRCL", "uuid": "5e7b0c1a-2b3c-4d5e-8f9a-0000000000ff"},
        "Tag": [{"name": "tlp:green"}, {"name": "rsit:malicious-code=\"ransomware\""}],
        "Attribute": attributes,
    }})
}

fn opts(tlp: Tlp) -> MispOptions {
    MispOptions {
        tlp,
        ..Default::default()
    }
}

fn convert(e: &Value) -> Converted {
    let c = event_to_stix(e, &opts(Tlp::Clear)).expect("converts");
    assert_valid(&c);
    c
}

/// Every object passes the checks a receiver makes, every pattern parses, the report is
/// last and refers to everything else.
fn assert_valid(c: &Converted) {
    for o in &c.objects {
        stix::check_object(o, c.tlp).unwrap_or_else(|e| panic!("{o}: {e}"));
        if let Some(p) = o.get("pattern").and_then(Value::as_str) {
            stix::pattern::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }
    if let Some(report) = c.objects.last() {
        assert_eq!(report["type"], "report");
        let refs = report["object_refs"].as_array().expect("refs");
        let others: Vec<&Value> = c.objects[..c.objects.len() - 1]
            .iter()
            .filter(|o| o["type"] != "identity")
            .map(|o| &o["id"])
            .collect();
        assert_eq!(refs.iter().collect::<Vec<_>>(), others);
    }
}

fn by_id<'a>(c: &'a Converted, id: &str) -> &'a Value {
    c.objects
        .iter()
        .find(|o| o["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {:#?}", c.objects))
}

fn of_type<'a>(c: &'a Converted, ty: &str) -> Vec<&'a Value> {
    c.objects.iter().filter(|o| o["type"] == ty).collect()
}

/// Each mapped MISP type, to_ids, and the exact pattern it becomes.
const PATTERNS: &[(&str, &str, &str)] = &[
    (
        "ip-src",
        "198.51.100.7",
        "[network-traffic:src_ref.type = 'ipv4-addr' AND network-traffic:src_ref.value = '198.51.100.7']",
    ),
    (
        "ip-dst",
        "203.0.113.9",
        "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '203.0.113.9']",
    ),
    (
        "ip-dst",
        "2001:db8::/32",
        "[network-traffic:dst_ref.type = 'ipv6-addr' AND network-traffic:dst_ref.value = '2001:db8::/32']",
    ),
    (
        "ip-src|port",
        "198.51.100.8|8080",
        "[network-traffic:src_ref.type = 'ipv4-addr' AND network-traffic:src_ref.value = '198.51.100.8' AND network-traffic:src_port = 8080]",
    ),
    (
        "ip-dst|port",
        "203.0.113.10|443",
        "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '203.0.113.10' AND network-traffic:dst_port = 443]",
    ),
    (
        "domain",
        "evil.example",
        "[domain-name:value = 'evil.example']",
    ),
    (
        "hostname",
        "c2.evil.example",
        "[domain-name:value = 'c2.evil.example']",
    ),
    (
        "domain|ip",
        "evil.example|198.51.100.9",
        "[domain-name:value = 'evil.example' AND domain-name:resolves_to_refs[*].value = '198.51.100.9']",
    ),
    (
        "url",
        "https://evil.example/gate.php?id=1",
        "[url:value = 'https://evil.example/gate.php?id=1']",
    ),
    ("uri", "/gate.php", "[url:value = '/gate.php']"),
    (
        "email",
        "bad@evil.example",
        "[email-addr:value = 'bad@evil.example']",
    ),
    (
        "email-src",
        "phish@evil.example",
        "[email-message:from_ref.value = 'phish@evil.example']",
    ),
    (
        "email-dst",
        "victim@hospital.example",
        "[email-message:to_refs[*].value = 'victim@hospital.example']",
    ),
    (
        "email-subject",
        "Invoice 'overdue' \\ now",
        "[email-message:subject = 'Invoice \\'overdue\\' \\\\ now']",
    ),
    (
        "md5",
        "d41d8cd98f00b204e9800998ecf8427e",
        "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
    ),
    (
        "sha1",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "[file:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']",
    ),
    (
        "sha256",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "[file:hashes.'SHA-256' = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']",
    ),
    (
        "sha512",
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        "[file:hashes.'SHA-512' = 'cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e']",
    ),
    (
        "sha3-256",
        "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
        "[file:hashes.'SHA3-256' = '3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532']",
    ),
    (
        "sha3-512",
        "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0",
        "[file:hashes.'SHA3-512' = 'b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0']",
    ),
    (
        "ssdeep",
        "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C",
        "[file:hashes.SSDEEP = '3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C']",
    ),
    (
        "tlsh",
        "T1A7E0A6D2E9B2E0C4F0A0C0D0E0F0A0B0C0D0E0F0A0B0C0D0E0F0A0B0C0D0E0F0A0B0C0",
        "[file:hashes.TLSH = 'T1A7E0A6D2E9B2E0C4F0A0C0D0E0F0A0B0C0D0E0F0A0B0C0D0E0F0A0B0C0D0E0F0A0B0C0']",
    ),
    (
        "filename",
        "invoice.pdf.exe",
        "[file:name = 'invoice.pdf.exe']",
    ),
    (
        "filename|md5",
        "a.exe|0cc175b9c0f1b6a831c399e269772661",
        "[file:name = 'a.exe' AND file:hashes.MD5 = '0cc175b9c0f1b6a831c399e269772661']",
    ),
    (
        "filename|sha1",
        "b.exe|86f7e437faa5a7fce15d1ddcb9eaeaea377667b8",
        "[file:name = 'b.exe' AND file:hashes.'SHA-1' = '86f7e437faa5a7fce15d1ddcb9eaeaea377667b8']",
    ),
    (
        "filename|sha256",
        "c.exe|ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
        "[file:name = 'c.exe' AND file:hashes.'SHA-256' = 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb']",
    ),
    (
        "filename|sha512",
        "d.exe|cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        "[file:name = 'd.exe' AND file:hashes.'SHA-512' = 'cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e']",
    ),
    (
        "mutex",
        "Global\\LockBit3",
        "[mutex:name = 'Global\\\\LockBit3']",
    ),
    (
        "regkey",
        "HKLM\\Software\\Run\\evil",
        "[windows-registry-key:key = 'HKLM\\\\Software\\\\Run\\\\evil']",
    ),
    ("AS", "AS64496", "[autonomous-system:number = 64496]"),
    (
        "user-agent",
        "Mozilla/5.0 (LockBit)",
        "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'Mozilla/5.0 (LockBit)']",
    ),
    (
        "mac-address",
        "00:1A:2b:3c:4d:5e",
        "[mac-addr:value = '00:1a:2b:3c:4d:5e']",
    ),
    (
        "x509-fingerprint-md5",
        "d41d8cd98f00b204e9800998ecf8427e",
        "[x509-certificate:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']",
    ),
    (
        "x509-fingerprint-sha1",
        "9dd2b4a2ad1c1a4c5e8f0b3f6e9a2b1c0d4e5f60",
        "[x509-certificate:hashes.'SHA-1' = '9dd2b4a2ad1c1a4c5e8f0b3f6e9a2b1c0d4e5f60']",
    ),
    (
        "x509-fingerprint-sha256",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "[x509-certificate:hashes.'SHA-256' = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855']",
    ),
];

#[test]
fn each_mapped_type_gives_its_exact_pattern() {
    for ty in table::ATTRIBUTE_TYPES {
        assert!(
            PATTERNS.iter().any(|(t, ..)| t == ty),
            "{ty} is mapped but not in the table test"
        );
    }
    let attributes = PATTERNS
        .iter()
        .enumerate()
        .map(|(n, (ty, value, _))| attr(n, ty, value, true))
        .collect();
    let c = convert(&event(attributes));
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    for (n, (ty, value, want)) in PATTERNS.iter().enumerate() {
        let o = by_id(&c, &format!("indicator--{}", uuid(n)));
        assert_eq!(o["pattern"], *want, "{ty} {value}");
        assert_eq!(o["pattern_type"], "stix");
        assert_eq!(o["labels"][0], format!("misp:type=\"{ty}\""));
        // Rendering the parsed pattern gives it back: it is what the AST says.
        let p = stix::pattern::parse(want).expect("parses");
        assert_eq!(p.to_string(), *want);
    }
    // vulnerability: a vulnerability object, to_ids or not.
    let c = convert(&event(vec![attr(
        0,
        "vulnerability",
        "CVE-2021-44228",
        true,
    )]));
    let v = by_id(&c, &format!("vulnerability--{}", uuid(0)));
    assert_eq!(v["name"], "CVE-2021-44228");
    assert_eq!(
        v["external_references"],
        json!([{"source_name": "cve", "external_id": "CVE-2021-44228"}])
    );
    assert!(of_type(&c, "indicator").is_empty());
}

#[test]
fn malformed_values_are_skipped_with_the_reason() {
    let c = convert(&event(vec![
        attr(0, "md5", "not-a-hash", true),
        attr(1, "ip-dst", "999.1.1.1", true),
        attr(2, "ip-dst|port", "198.51.100.1|http", true),
        attr(3, "AS", "ASX", true),
        attr(4, "domain", "  ", true),
        attr(5, "domain|ip", "evil.example", true),
    ]));
    let why: Vec<&str> = c.skipped.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(why.len(), 6, "{why:?}");
    assert!(why[0].contains("MD5"), "{why:?}");
    assert!(why[1].contains("not an IP address"), "{why:?}");
    assert!(why[2].contains("port"), "{why:?}");
    assert!(why[3].contains("AS number"), "{why:?}");
    assert!(why[4].contains("empty"), "{why:?}");
    assert!(why[5].contains("two parts"), "{why:?}");
    assert!(
        c.objects.is_empty(),
        "nothing left to publish: {:?}",
        c.objects
    );
}

#[test]
fn attributes_not_for_detection_become_observed_data() {
    let c = convert(&event(vec![
        attr(0, "ip-dst", "192.0.2.1", false),
        attr(1, "domain|ip", "cdn.example|2001:db8::3", false),
        attr(2, "email-src", "sender@benign.example", false),
        attr(
            3,
            "filename|sha256",
            "d.exe|ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            false,
        ),
        attr(4, "ip-src|port", "192.0.2.2|4444", false),
        attr(5, "user-agent", "Mozilla/5.0", false),
    ]));
    assert!(of_type(&c, "indicator").is_empty());
    let observed = |n: usize| -> Vec<Value> {
        let od = by_id(&c, &format!("observed-data--{}", uuid(n)));
        assert_eq!(od["number_observed"], 1);
        assert_eq!(
            od["first_observed"],
            stix::export::timestamp((T + n as i64) * 1000)
        );
        od["object_refs"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|r| {
                let mut o = by_id(&c, r.as_str().expect("id")).clone();
                // Ids are UUIDv5 of the properties, checked below; compare the rest.
                o.as_object_mut().expect("object").remove("id");
                o
            })
            .collect()
    };
    let ip = observed(0);
    assert_eq!(ip[0]["type"], "network-traffic");
    assert_eq!(ip[0]["protocols"], json!(["ipv4"]));
    assert_eq!(
        ip[1],
        json!({"type": "ipv4-addr", "spec_version": "2.1", "value": "192.0.2.1"})
    );
    let nt = by_id(&c, observed_ref(&c, 0, 0));
    assert_eq!(nt["dst_ref"], by_id(&c, observed_ref(&c, 0, 1))["id"]);
    let d = observed(1);
    assert_eq!(d[0]["value"], "cdn.example");
    assert_eq!(
        d[1],
        json!({"type": "ipv6-addr", "spec_version": "2.1", "value": "2001:db8::3"})
    );
    let e = observed(2);
    assert_eq!(e[0]["type"], "email-message");
    assert_eq!(e[0]["is_multipart"], false);
    assert_eq!(e[1]["value"], "sender@benign.example");
    let f = observed(3);
    assert_eq!(
        f[0],
        json!({"type": "file", "spec_version": "2.1", "name": "d.exe", "hashes": {"SHA-256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}})
    );
    let p = observed(4);
    assert_eq!(p[0]["src_port"], 4444);
    // A user-agent alone has no observable (a network-traffic needs an address).
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    assert!(c.skipped[0].0.contains("user-agent") && c.skipped[0].1.contains("to_ids"));
    // Observable ids: UUIDv5 of the properties in the attribute's uuid.
    let ns = uuid::Uuid::try_parse(&uuid(0)).expect("uuid");
    let want = table::uuid5(
        &ns,
        &json!({"type": "ipv4-addr", "value": "192.0.2.1"}).to_string(),
    );
    assert_eq!(observed_ref(&c, 0, 1), format!("ipv4-addr--{want}"));
}

fn observed_ref(c: &Converted, n: usize, i: usize) -> &str {
    by_id(c, &format!("observed-data--{}", uuid(n)))["object_refs"][i]
        .as_str()
        .expect("ref")
}

fn object(n: usize, name: &str, meta: &str, attributes: &[(&str, &str, &str, bool)]) -> Value {
    json!({
        "uuid": uuid(1000 + n), "name": name, "meta-category": meta, "timestamp": (T + 100).to_string(),
        "distribution": "5",
        "Attribute": attributes.iter().enumerate().map(|(k, (rel, ty, v, ids))| json!({
            "uuid": uuid(2000 + 10 * n + k), "object_relation": rel, "type": ty, "value": v,
            "to_ids": ids, "timestamp": (T + 100).to_string(), "distribution": "5",
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn objects_become_one_indicator_anded_and_an_observed_data_of_the_rest() {
    let mut e = event(vec![]);
    e["Event"]["Object"] = json!([
        object(
            0,
            "file",
            "file",
            &[
                ("filename", "filename", "dropper.exe", false),
                ("md5", "md5", "c3fcd3d76192e4007dfb496cca67e13b", true),
                (
                    "sha256",
                    "sha256",
                    "f7846f55cf23e14eebeab5b4e1550cad5b509e3348fbc4efa3a1413d393cb650",
                    true
                ),
                ("size-in-bytes", "size-in-bytes", "73802", false),
                ("entropy", "float", "7.9", false),
            ]
        ),
        object(
            1,
            "domain-ip",
            "network",
            &[
                ("domain", "domain", "c3.evil.example", false),
                ("ip", "ip-dst", "198.51.100.77", false),
                ("ip", "ip-dst", "198.51.100.78", false),
                ("domain", "domain", "c4.evil.example", false),
            ]
        ),
        object(
            2,
            "ip-port",
            "network",
            &[
                ("ip", "ip-dst", "198.51.100.99", true),
                ("dst-port", "port", "4443", true),
            ]
        ),
        object(
            3,
            "email",
            "network",
            &[
                ("from", "email-src", "ceo@evil.example", true),
                ("subject", "email-subject", "Urgent", true),
                ("to", "email-dst", "finance@hospital.example", true),
            ]
        ),
        object(
            4,
            "bank-account",
            "financial",
            &[("account", "bank-account-nr", "123", false)]
        ),
    ]);
    e["Event"]["Object"][0]["ObjectReference"] = json!([{
        "uuid": uuid(3000), "object_uuid": uuid(1000), "referenced_uuid": uuid(1002),
        "relationship_type": "downloaded-from",
    }]);
    let c = convert(&e);
    // file: the to_ids hashes make the pattern; the whole file is also observed.
    let ind = by_id(&c, &format!("indicator--{}", uuid(1000)));
    assert_eq!(
        ind["pattern"],
        "[file:hashes.MD5 = 'c3fcd3d76192e4007dfb496cca67e13b' AND file:hashes.'SHA-256' = 'f7846f55cf23e14eebeab5b4e1550cad5b509e3348fbc4efa3a1413d393cb650']"
    );
    assert_eq!(
        ind["labels"],
        json!(["misp:name=\"file\"", "misp:meta-category=\"file\""])
    );
    let od = by_id(&c, &format!("observed-data--{}", uuid(1000)));
    let file = by_id(&c, od["object_refs"][0].as_str().expect("ref"));
    assert_eq!(file["name"], "dropper.exe");
    assert_eq!(file["size"], 73802);
    assert_eq!(file["hashes"]["MD5"], "c3fcd3d76192e4007dfb496cca67e13b");
    assert!(
        c.objects
            .iter()
            .any(|o| o["relationship_type"] == "based-on"
                && o["source_ref"] == ind["id"]
                && o["target_ref"] == od["id"])
    );
    // domain-ip, nothing to_ids: observed only; a second domain cannot be on one domain-name.
    assert!(
        c.objects
            .iter()
            .all(|o| o["id"] != format!("indicator--{}", uuid(1001)))
    );
    let od = by_id(&c, &format!("observed-data--{}", uuid(1001)));
    let domain = by_id(&c, od["object_refs"][0].as_str().expect("ref"));
    assert_eq!(domain["value"], "c3.evil.example");
    assert_eq!(domain["resolves_to_refs"].as_array().map(Vec::len), Some(2));
    // ip-port and email, all to_ids: one indicator each, nothing observed.
    assert_eq!(
        by_id(&c, &format!("indicator--{}", uuid(1002)))["pattern"],
        "[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '198.51.100.99' AND network-traffic:dst_port = 4443]"
    );
    assert_eq!(
        by_id(&c, &format!("indicator--{}", uuid(1003)))["pattern"],
        "[email-message:from_ref.value = 'ceo@evil.example' AND email-message:subject = 'Urgent' AND email-message:to_refs[*].value = 'finance@hospital.example']"
    );
    assert!(
        c.objects
            .iter()
            .all(|o| o["id"] != format!("observed-data--{}", uuid(1002)))
    );
    // The object reference, between what was converted.
    let r = by_id(&c, &format!("relationship--{}", uuid(3000)));
    assert_eq!(r["relationship_type"], "downloaded-from");
    assert_eq!(r["target_ref"], format!("indicator--{}", uuid(1002)));
    let skipped: Vec<String> = c.skipped.iter().map(|(w, y)| format!("{w}: {y}")).collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
    assert!(skipped[0].contains("entropy") && skipped[0].contains("no STIX property"));
    assert!(skipped[1].contains("c4.evil.example") && skipped[1].contains("second"));
    assert!(skipped[2].contains("bank-account") && skipped[2].contains("1 attribute"));
}

fn galaxy(gtype: &str, gname: &str, clusters: &[(&str, &str, Value)]) -> Value {
    json!({
        "type": gtype, "name": gname, "uuid": uuid(4000),
        "GalaxyCluster": clusters.iter().map(|(value, u, meta)| json!({
            "type": gtype, "value": value, "uuid": u, "description": format!("{value} described"),
            "tag_name": format!("misp-galaxy:{gtype}=\"{value}\""), "meta": meta,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn galaxies_become_stix_objects_the_report_refers_to() {
    let mut e = event(vec![
        attr(0, "domain", "evil.example", true),
        attr(1, "domain", "benign.example", false),
    ]);
    e["Event"]["Galaxy"] = json!([
        galaxy(
            "mitre-attack-pattern",
            "Attack Pattern",
            &[(
                "Phishing - T1566",
                &uuid(5001),
                json!({"external_id": ["T1566"]})
            )]
        ),
        galaxy(
            "threat-actor",
            "Threat Actor",
            &[(
                "Wizard Spider",
                &uuid(5002),
                json!({"synonyms": ["UNC1878"]})
            )]
        ),
        galaxy(
            "mitre-tool",
            "Tool",
            &[("Cobalt Strike - S0154", &uuid(5003), json!({}))]
        ),
        galaxy(
            "mitre-intrusion-set",
            "Intrusion Set",
            &[(
                "FIN12 - G0159",
                &uuid(5004),
                json!({"synonyms": ["FIN12", "Pistachio Tempest"]})
            )]
        ),
        galaxy(
            "ransomware",
            "Ransomware",
            &[("LockBit", &uuid(5005), json!({}))]
        ),
        galaxy("sector", "Sector", &[("Health", &uuid(5006), json!({}))]),
    ]);
    let malware = galaxy(
        "mitre-malware",
        "Malware",
        &[("LockBit 3.0 - S1202", &uuid(5007), json!({}))],
    );
    e["Event"]["Attribute"][0]["Galaxy"] = json!([malware.clone()]);
    e["Event"]["Attribute"][1]["Galaxy"] = json!([malware]);
    let c = convert(&e);
    let ap = by_id(&c, &format!("attack-pattern--{}", uuid(5001)));
    assert_eq!(ap["name"], "Phishing");
    assert_eq!(
        ap["external_references"],
        json!([{"source_name": "mitre-attack", "external_id": "T1566"}])
    );
    assert_eq!(
        by_id(&c, &format!("threat-actor--{}", uuid(5002)))["aliases"],
        json!(["UNC1878"])
    );
    assert_eq!(
        by_id(&c, &format!("tool--{}", uuid(5003)))["name"],
        "Cobalt Strike"
    );
    let is = by_id(&c, &format!("intrusion-set--{}", uuid(5004)));
    assert_eq!(is["name"], "FIN12");
    assert_eq!(is["aliases"], json!(["Pistachio Tempest"]));
    let m = by_id(&c, &format!("malware--{}", uuid(5005)));
    assert_eq!(
        (m["name"].as_str(), m["is_family"].as_bool()),
        (Some("LockBit"), Some(true))
    );
    assert_eq!(
        m["labels"],
        json!([
            "misp:galaxy-name=\"Ransomware\"",
            "misp:galaxy-type=\"ransomware\"",
            "misp-galaxy:ransomware=\"LockBit\""
        ])
    );
    // The attribute's galaxy: one malware object (made once), indicated by the indicator,
    // related to the observed-data.
    let lb3 = format!("malware--{}", uuid(5007));
    assert_eq!(c.objects.iter().filter(|o| o["id"] == lb3).count(), 1);
    let rels: Vec<(&str, &str)> = of_type(&c, "relationship")
        .iter()
        .filter(|r| r["target_ref"] == lb3)
        .map(|r| {
            (
                r["relationship_type"].as_str().unwrap_or(""),
                r["source_ref"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rels,
        vec![
            ("indicates", format!("indicator--{}", uuid(0)).as_str()),
            ("related-to", format!("observed-data--{}", uuid(1)).as_str()),
        ]
    );
    // The report refers to the galaxy objects (assert_valid: to everything).
    let report = c.objects.last().expect("report");
    for id in [ap["id"].clone(), json!(lb3)] {
        assert!(
            report["object_refs"]
                .as_array()
                .is_some_and(|r| r.contains(&id))
        );
    }
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    assert!(c.skipped[0].0.contains("Health") && c.skipped[0].1.contains("sector"));
}

#[test]
fn the_event_is_a_report_with_its_non_tlp_tags_and_the_creator() {
    let c = convert(&event(vec![attr(0, "domain", "evil.example", true)]));
    assert_eq!(c.event_uuid, EVENT);
    assert_eq!(c.info, "LockBit affiliate");
    let r = c.objects.last().expect("report");
    assert_eq!(r["id"], format!("report--{EVENT}"));
    assert_eq!(r["name"], "LockBit affiliate");
    assert_eq!(r["labels"], json!(["rsit:malicious-code=\"ransomware\""]));
    assert_eq!(r["created"], stix::export::timestamp(T * 1000));
    assert_eq!(r["published"], stix::export::timestamp((T + 60) * 1000));
    let id = &c.objects[0];
    assert_eq!(
        (id["type"].as_str(), id["name"].as_str(), id["id"].as_str()),
        (
            Some("identity"),
            Some("CIRCL"),
            Some("identity--5e7b0c1a-2b3c-4d5e-8f9a-0000000000ff")
        )
    );
    assert!(
        c.objects[1..]
            .iter()
            .all(|o| o["created_by_ref"] == id["id"])
    );
    // An event with nothing Bluewire can carry publishes nothing, and says why.
    let c = convert(&event(vec![attr(
        0,
        "btc",
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
        true,
    )]));
    assert!(c.objects.is_empty());
    assert_eq!(c.skipped.len(), 1);
}

/// The event's distribution, sharing group and tags → (message TLP, cluster), or the error.
fn audience(
    distribution: &str,
    tags: &[&str],
    o: &MispOptions,
) -> Result<(Tlp, Option<String>), String> {
    let mut e = event(vec![attr(0, "domain", "evil.example", true)]);
    e["Event"]["distribution"] = distribution.into();
    e["Event"]["Tag"] = tags.iter().map(|t| json!({"name": t})).collect();
    if distribution == "4" {
        e["Event"]["sharing_group_id"] = "7".into();
        e["Event"]["SharingGroup"] = json!({"uuid": SG, "name": "Health ISAC"});
    }
    event_to_stix(&e, o).map(|c| {
        assert_valid(&c);
        (c.tlp, c.cluster)
    })
}

#[test]
fn distribution_table_event_rows() {
    let none = opts(Tlp::Clear);
    let with_cluster = MispOptions {
        cluster: Some("ransomware".into()),
        ..none.clone()
    };
    let mapped = MispOptions {
        sharing_groups: [(SG.to_string(), "health".to_string())].into(),
        ..none.clone()
    };
    // 0: never imported.
    let e = audience("0", &[], &none).expect_err("org only");
    assert!(
        e.contains("distribution 0") && e.contains("not imported"),
        "{e}"
    );
    // 1: needs a cluster, at least AMBER.
    let e = audience("1", &[], &none).expect_err("no cluster");
    assert!(e.contains("--cluster"), "{e}");
    assert_eq!(
        audience("1", &["tlp:clear"], &with_cluster),
        Ok((Tlp::Amber, Some("ransomware".into())))
    );
    assert_eq!(
        audience("1", &["tlp:red"], &with_cluster),
        Ok((Tlp::Red, Some("ransomware".into())))
    );
    // 2: at least AMBER; a cluster given is kept.
    assert_eq!(audience("2", &["tlp:green"], &none), Ok((Tlp::Amber, None)));
    assert_eq!(
        audience("2", &[], &with_cluster),
        Ok((Tlp::Amber, Some("ransomware".into())))
    );
    // 3 (and absent): no floor, the tag and --tlp decide.
    assert_eq!(audience("3", &["tlp:green"], &none), Ok((Tlp::Green, None)));
    assert_eq!(audience("3", &[], &none), Ok((Tlp::Clear, None)));
    let mut e = event(vec![attr(0, "domain", "evil.example", true)]);
    e["Event"]
        .as_object_mut()
        .expect("event")
        .remove("distribution");
    assert_eq!(event_to_stix(&e, &none).map(|c| c.tlp), Ok(Tlp::Green));
    // 4: the mapped cluster, at least AMBER; unmapped or mapped elsewhere: refused.
    let e = audience("4", &[], &none).expect_err("unmapped");
    assert!(
        e.contains(SG) && e.contains("Health ISAC") && e.contains("--sharing-group"),
        "{e}"
    );
    assert_eq!(
        audience("4", &["tlp:green"], &mapped),
        Ok((Tlp::Amber, Some("health".into())))
    );
    let upper = MispOptions {
        sharing_groups: [(SG.to_ascii_uppercase(), "health".to_string())].into(),
        ..none.clone()
    };
    assert_eq!(
        audience("4", &[], &upper),
        Ok((Tlp::Amber, Some("health".into())))
    );
    let both = MispOptions {
        cluster: Some("ransomware".into()),
        ..mapped.clone()
    };
    let e = audience("4", &[], &both).expect_err("two clusters");
    assert!(e.contains("health") && e.contains("ransomware"), "{e}");
    let mut e = event(vec![]);
    e["Event"]["distribution"] = "4".into();
    assert!(event_to_stix(&e, &mapped).is_err_and(|e| e.contains("SharingGroup")));
    // 5 is not an event level; nor is anything else.
    assert!(audience("5", &[], &none).is_err_and(|e| e.contains("inherit")));
    assert!(audience("9", &[], &none).is_err());
}

#[test]
fn tlp_table_takes_the_strictest_and_never_widens() {
    let at = |t: Tlp| opts(t);
    for (tag, want) in [
        ("tlp:white", Tlp::Clear),
        ("tlp:clear", Tlp::Clear),
        ("TLP:GREEN", Tlp::Green),
        ("tlp:amber", Tlp::Amber),
        ("tlp:amber+strict", Tlp::AmberStrict),
        ("tlp:red", Tlp::Red),
    ] {
        assert_eq!(tag_tlp(tag), Some(want), "{tag}");
        assert_eq!(
            audience("3", &[tag], &at(Tlp::Clear)).map(|a| a.0),
            Ok(want),
            "{tag}"
        );
        // --tlp is a floor: it raises a looser tag, never lowers a stricter one.
        assert_eq!(
            audience("3", &[tag], &at(Tlp::Amber)).map(|a| a.0),
            Ok(want.max(Tlp::Amber)),
            "{tag}"
        );
    }
    assert_eq!(tag_tlp("tlp:ex:chr"), None);
    assert_eq!(
        audience("3", &["tlp:green", "tlp:amber"], &at(Tlp::Clear)).map(|a| a.0),
        Ok(Tlp::Amber)
    );
    assert_eq!(
        audience("3", &[], &at(Tlp::Unspecified)).map(|a| a.0),
        Ok(Tlp::Clear)
    );
}

#[test]
fn distribution_table_attribute_rows() {
    let mut a = vec![
        attr(0, "domain", "inherit.example", true),
        attr(1, "domain", "org-only.example", true),
        attr(2, "domain", "community.example", true),
        attr(3, "domain", "connected.example", true),
        attr(4, "domain", "all.example", true),
        attr(5, "domain", "red.example", true),
        attr(6, "domain", "clear.example", true),
        attr(7, "domain", "group.example", true),
        attr(8, "domain", "deleted.example", true),
    ];
    a[1]["distribution"] = "0".into();
    a[2]["distribution"] = "1".into();
    a[3]["distribution"] = "2".into();
    a[4]["distribution"] = "3".into();
    a[5]["Tag"] = json!([{"name": "tlp:red"}]);
    a[6]["Tag"] = json!([{"name": "tlp:clear"}]);
    a[7]["distribution"] = "4".into();
    a[7]["SharingGroup"] = json!({"uuid": SG, "name": "Health ISAC"});
    a[8]["deleted"] = true.into();
    let e = event(a);
    let marking = |c: &Converted, n: usize| {
        by_id(c, &format!("indicator--{}", uuid(n)))
            .get("object_marking_refs")
            .cloned()
    };
    // A GREEN event published federation-wide.
    let c = convert(&e);
    assert_eq!(c.tlp, Tlp::Green);
    assert_eq!(marking(&c, 0), None, "inherits the message's marking");
    assert_eq!(
        marking(&c, 3),
        Some(json!([stix::TLP_AMBER])),
        "connected communities: AMBER"
    );
    assert_eq!(marking(&c, 4), None);
    assert_eq!(
        marking(&c, 5),
        Some(json!([stix::TLP_RED])),
        "a stricter tag is kept"
    );
    assert_eq!(marking(&c, 6), None, "a looser tag takes the message's");
    let skipped: Vec<&str> = c.skipped.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(skipped.len(), 4, "{:?}", c.skipped);
    for (n, why) in [
        (1, "distribution 0"),
        (2, "--cluster"),
        (7, "sharing group"),
        (8, "deleted"),
    ] {
        assert!(
            c.skipped
                .iter()
                .any(|(w, y)| w.contains(&uuid(n)) && y.contains(why)),
            "{n} {why}: {:?}",
            c.skipped
        );
    }
    // In a cluster the sharing group maps to: community and group attributes come along.
    let o = MispOptions {
        tlp: Tlp::Clear,
        cluster: Some("health".into()),
        sharing_groups: [(SG.to_string(), "health".to_string())].into(),
    };
    let c = event_to_stix(&e, &o).expect("converts");
    assert_valid(&c);
    assert_eq!(marking(&c, 2), Some(json!([stix::TLP_AMBER])));
    assert_eq!(marking(&c, 7), Some(json!([stix::TLP_AMBER])));
    assert_eq!(c.skipped.len(), 2, "{:?}", c.skipped);
}

#[test]
fn unknown_types_are_reported_never_dropped() {
    let types = [
        ("btc", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
        ("ja3-fingerprint-md5", "e7d705a3286e19ea42f587b344ee6865"),
        ("text", "seen at two hospitals"),
        ("link", "https://blog.example/post"),
        (
            "sha224",
            "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f",
        ),
        ("a-type-misp-does-not-have", "x"),
    ];
    let mut attributes: Vec<Value> = types
        .iter()
        .enumerate()
        .map(|(n, (t, v))| attr(n, t, v, true))
        .collect();
    attributes.push(attr(10, "domain", "evil.example", true));
    let c = convert(&event(attributes));
    assert_eq!(of_type(&c, "indicator").len(), 1);
    assert_eq!(c.skipped.len(), types.len(), "{:?}", c.skipped);
    for ((what, why), (t, _)) in c.skipped.iter().zip(types) {
        assert!(what.contains(t), "{what}");
        assert!(why.contains("STIX"), "{why}");
    }
}

#[test]
fn conversion_is_deterministic_and_an_edit_is_a_new_version() {
    let e = event(vec![
        attr(0, "domain", "evil.example", true),
        attr(1, "ip-dst", "192.0.2.1", false),
    ]);
    let first = convert(&e);
    assert_eq!(first, convert(&e));
    // A new timestamp on one attribute: the same ids, a new modified for its objects only.
    let mut edited = e.clone();
    edited["Event"]["Attribute"][0]["timestamp"] = (T + 500).to_string().into();
    let second = convert(&edited);
    let changed: Vec<&str> = first
        .objects
        .iter()
        .zip(&second.objects)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| {
            assert_eq!(a["id"], b["id"]);
            a["id"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(changed, vec![format!("indicator--{}", uuid(0))]);
    assert_eq!(
        by_id(&second, &format!("indicator--{}", uuid(0)))["modified"],
        stix::export::timestamp((T + 500) * 1000)
    );
    // An observed value edited in place (same uuid, new timestamp): a new observable id,
    // so the receivers get the new value rather than a skip.
    let mut edited = e.clone();
    edited["Event"]["Attribute"][1]["value"] = "192.0.2.99".into();
    edited["Event"]["Attribute"][1]["timestamp"] = (T + 500).to_string().into();
    let third = convert(&edited);
    assert_ne!(observed_ref(&first, 1, 1), observed_ref(&third, 1, 1));
}

#[test]
fn every_pattern_parses_and_every_object_passes_the_checks() {
    // Everything at once: every mapped type both ways, objects, galaxies, markings.
    let mut attributes: Vec<Value> = PATTERNS
        .iter()
        .enumerate()
        .flat_map(|(n, (ty, v, _))| [attr(n, ty, v, true), attr(100 + n, ty, v, false)])
        .collect();
    attributes[3]["Tag"] = json!([{"name": "tlp:amber+strict"}]);
    let mut e = event(attributes);
    e["Event"]["Object"] = json!([object(
        0,
        "file",
        "file",
        &[("md5", "md5", "c3fcd3d76192e4007dfb496cca67e13b", true)]
    )]);
    e["Event"]["Galaxy"] = json!([galaxy(
        "threat-actor",
        "Threat Actor",
        &[("Wizard Spider", &uuid(5002), json!({}))]
    )]);
    for tlp in [Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::Red] {
        let c = event_to_stix(&e, &opts(tlp)).expect("converts");
        assert_valid(&c);
        assert!(of_type(&c, "indicator").len() > PATTERNS.len());
        // Only user-agent (not to_ids) has no form.
        assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    }
}

#[test]
fn a_feed_manifest_lists_its_events_oldest_first() {
    let manifest = json!({
        "5e7b0c1a-2b3c-4d5e-8f9a-300000000002": {"info": "b", "timestamp": 300},
        "5e7b0c1a-2b3c-4d5e-8f9a-300000000001": {"info": "a", "timestamp": "100"},
        "5e7b0c1a-2b3c-4d5e-8f9a-300000000003": {"info": "c", "timestamp": 200},
    });
    assert_eq!(
        feed_events(&manifest),
        Ok(vec![
            "5e7b0c1a-2b3c-4d5e-8f9a-300000000001".to_string(),
            "5e7b0c1a-2b3c-4d5e-8f9a-300000000003".to_string(),
            "5e7b0c1a-2b3c-4d5e-8f9a-300000000002".to_string(),
        ])
    );
    assert!(feed_events(&json!({"not-a-uuid": {}})).is_err_and(|e| e.contains("not-a-uuid")));
    assert!(feed_events(&json!([1])).is_err());
}

fn message(id: &str, body: Body, tlp: Tlp) -> pb::Content {
    pb::Content {
        id: id.into(),
        origin_org: "csirt-fr".into(),
        author: "csirt-fr/analyst".into(),
        created_at_ms: T * 1000 + 250,
        kind: match body {
            Body::Stix(_) => pb::Kind::StixBundle,
            Body::Incident(_) => pb::Kind::IncidentReport,
            _ => pb::Kind::FreeText,
        } as i32,
        marking: Some(pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        }),
        body: Some(body),
        ..Default::default()
    }
}

fn bundle_message(id: &str, objects: &[Value], tlp: Tlp) -> pb::Content {
    let json = json!({"type": "bundle", "id": "bundle--5e7b0c1a-2b3c-4d5e-8f9a-0000000000bb", "objects": objects});
    message(
        id,
        Body::Stix(pb::StixBundle {
            json: json.to_string(),
        }),
        tlp,
    )
}

fn indicator(n: usize, pattern: &str) -> Value {
    json!({
        "type": "indicator", "spec_version": "2.1", "id": format!("indicator--{}", uuid(n)),
        "created": "2026-11-30T08:00:00.000Z", "modified": "2026-11-30T09:00:00.000Z",
        "name": format!("indicator {n}"), "pattern": pattern, "pattern_type": "stix",
        "valid_from": "2026-11-30T08:00:00.000Z",
    })
}

fn attributes(e: &Value) -> Vec<(String, String, bool)> {
    e["Event"]["Attribute"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or("").to_string(),
                a["value"].as_str().unwrap_or("").to_string(),
                a["to_ids"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn a_bundle_message_becomes_an_event_of_attributes() {
    let mut red = indicator(3, "[url:value = 'http://red.example/']");
    red["object_marking_refs"] = json!([stix::TLP_RED]);
    let mut sigma = indicator(6, "title: x");
    sigma["pattern_type"] = "sigma".into();
    let objects = vec![
        indicator(0, "[ipv4-addr:value = '198.51.100.7']"),
        indicator(
            1,
            "[domain-name:value = 'a.example'] OR [domain-name:value = 'b.example']",
        ),
        indicator(
            2,
            "[file:name = 'x.exe' AND file:hashes.'SHA-256' = 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb']",
        ),
        red,
        indicator(
            4,
            "[ipv4-addr:value = '198.51.100.8'] FOLLOWEDBY [domain-name:value = 'c.example']",
        ),
        indicator(
            5,
            "[url:value = 'http://x.example/' OR url:value = 'http://y.example/']",
        ),
        sigma,
        json!({"type": "ipv4-addr", "spec_version": "2.1", "id": "ipv4-addr--12592121-be4c-5a93-a813-5a5af16e50db", "value": "192.0.2.1"}),
        json!({"type": "ipv4-addr", "spec_version": "2.1", "id": "ipv4-addr--22592121-be4c-5a93-a813-5a5af16e50db", "value": "192.0.2.2"}),
        json!({"type": "network-traffic", "spec_version": "2.1", "id": "network-traffic--32592121-be4c-5a93-a813-5a5af16e50db", "src_ref": "ipv4-addr--22592121-be4c-5a93-a813-5a5af16e50db", "src_port": 4444, "protocols": ["tcp"]}),
        json!({"type": "vulnerability", "spec_version": "2.1", "id": format!("vulnerability--{}", uuid(7)), "created": "2026-11-30T08:00:00.000Z", "modified": "2026-11-30T08:00:00.000Z", "name": "Log4Shell", "external_references": [{"source_name": "cve", "external_id": "CVE-2021-44228"}]}),
        json!({"type": "report", "spec_version": "2.1", "id": format!("report--{}", uuid(8)), "created": "2026-11-30T08:00:00.000Z", "modified": "2026-11-30T08:00:00.000Z", "name": "LockBit C2s", "published": "2026-11-30T08:00:00.000Z", "object_refs": [format!("indicator--{}", uuid(0))]}),
    ];
    let c = bundle_message("0193a000-0000-7000-8000-000000000001", &objects, Tlp::Amber);
    let e = message_to_event(&c, Tlp::Amber).expect("an event");
    let ev = &e["Event"];
    assert_eq!(ev["info"], "LockBit C2s");
    assert_eq!(ev["Orgc"]["name"], "csirt-fr");
    assert_eq!(ev["distribution"], "1");
    assert_eq!(ev["timestamp"], T.to_string());
    assert_eq!(ev["date"], "2026-11-30");
    assert_eq!(
        ev["Tag"],
        json!([{"name": "tlp:amber"}, {"name": "bluewire:kind=\"stix-bundle\""}])
    );
    let pattern4 =
        "[ipv4-addr:value = '198.51.100.8'] FOLLOWEDBY [domain-name:value = 'c.example']";
    assert_eq!(
        attributes(&e),
        vec![
            ("ip-dst".into(), "198.51.100.7".into(), true),
            ("domain".into(), "a.example".into(), true),
            ("domain".into(), "b.example".into(), true),
            (
                "filename|sha256".into(),
                "x.exe|ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb".into(),
                true
            ),
            ("url".into(), "http://red.example/".into(), true),
            ("stix2-pattern".into(), pattern4.into(), true),
            ("url".into(), "http://x.example/".into(), true),
            ("url".into(), "http://y.example/".into(), true),
            ("sigma".into(), "title: x".into(), true),
            ("ip-dst".into(), "192.0.2.1".into(), false),
            ("ip-src|port".into(), "192.0.2.2|4444".into(), false),
            ("vulnerability".into(), "CVE-2021-44228".into(), false),
        ]
    );
    let attrs = ev["Attribute"].as_array().expect("attributes");
    assert_eq!(
        attrs[4]["Tag"],
        json!([{"name": "tlp:red"}]),
        "a stricter object keeps its TLP"
    );
    assert_eq!(attrs[0]["comment"], "indicator 0");
    assert_eq!(attrs[0]["timestamp"], (T + 3600).to_string());
    assert_eq!(attrs[0]["category"], "Network activity");
    // Deterministic, and distinct per message.
    assert_eq!(Some(e.clone()), message_to_event(&c, Tlp::Amber));
    let other = bundle_message("0193a000-0000-7000-8000-000000000002", &objects, Tlp::Amber);
    let e2 = message_to_event(&other, Tlp::Amber).expect("event");
    assert_ne!(e2["Event"]["uuid"], ev["uuid"]);
    assert_ne!(e2["Event"]["Attribute"][0]["uuid"], attrs[0]["uuid"]);
    // GREEN and CLEAR go to all communities.
    assert_eq!(
        message_to_event(&c, Tlp::Green).expect("event")["Event"]["distribution"],
        "3"
    );
}

#[test]
fn other_kinds_become_a_text_attribute() {
    let incident = message(
        "0193a000-0000-7000-8000-000000000003",
        Body::Incident(pb::IncidentReport {
            title: "Ransomware at two hospitals".into(),
            description: "LockBit affiliate; C2 198.51.100.7".into(),
            severity: pb::Severity::High as i32,
            status: "open".into(),
            ..Default::default()
        }),
        Tlp::Green,
    );
    let e = message_to_event(&incident, Tlp::Green).expect("event");
    assert_eq!(e["Event"]["info"], "Ransomware at two hospitals");
    assert_eq!(e["Event"]["threat_level_id"], "1");
    assert_eq!(e["Event"]["analysis"], "1");
    assert_eq!(
        e["Event"]["Tag"][1]["name"],
        "bluewire:kind=\"incident-report\""
    );
    assert_eq!(
        attributes(&e),
        vec![(
            "text".into(),
            "LockBit affiliate; C2 198.51.100.7".into(),
            false
        )]
    );
    let note = message(
        "0193a000-0000-7000-8000-000000000004",
        Body::FreeText(pb::FreeText {
            title: "Heads-up".into(),
            body: "Patch the VPN".into(),
        }),
        Tlp::Clear,
    );
    let e = message_to_event(&note, Tlp::Clear).expect("event");
    assert_eq!(e["Event"]["info"], "Heads-up");
    assert_eq!(
        attributes(&e),
        vec![("text".into(), "Patch the VPN".into(), false)]
    );
    let retraction = message(
        "0193a000-0000-7000-8000-000000000005",
        Body::Retraction(pb::Retraction::default()),
        Tlp::Clear,
    );
    assert_eq!(message_to_event(&retraction, Tlp::Clear), None);
}

#[test]
fn the_feed_manifest_summarises_each_event() {
    let c = bundle_message(
        "0193a000-0000-7000-8000-000000000001",
        &[indicator(0, "[domain-name:value = 'a.example']")],
        Tlp::Green,
    );
    let e = message_to_event(&c, Tlp::Green).expect("event");
    let uuid = e["Event"]["uuid"].as_str().expect("uuid").to_string();
    let m = feed_manifest(std::slice::from_ref(&e));
    assert_eq!(
        m[&uuid],
        json!({
            "Orgc": e["Event"]["Orgc"], "Tag": [{"name": "tlp:green"}, {"name": "bluewire:kind=\"stix-bundle\""}],
            "info": e["Event"]["info"], "date": "2026-11-30", "analysis": 2, "threat_level_id": 4,
            "timestamp": T,
        })
    );
    assert_eq!(feed_events(&m), Ok(vec![uuid]));
}

#[test]
fn simple_indicators_round_trip_misp_to_stix_to_misp() {
    // Every mapped type to_ids, and those with observables not to_ids (in an event of their
    // own: MISP keeps one attribute per type and value): MISP → STIX (as the node publishes
    // it) → MISP keeps the type and the value.
    let lower = |ty: &str, v: &str| {
        if ty == "mac-address" {
            v.to_ascii_lowercase()
        } else {
            v.to_string()
        }
    };
    let mut detect: Vec<Value> = PATTERNS
        .iter()
        .enumerate()
        .map(|(n, (ty, v, _))| attr(n, ty, v, true))
        .collect();
    detect.push(attr(300, "vulnerability", "CVE-2021-44228", true));
    let mut want_detect: Vec<(String, String, bool)> = PATTERNS
        .iter()
        .map(|(ty, v, _)| (ty.to_string(), lower(ty, v), true))
        .collect();
    want_detect.push(("vulnerability".into(), "CVE-2021-44228".into(), false));
    let observed = [
        "ip-src",
        "ip-dst",
        "ip-src|port",
        "ip-dst|port",
        "domain",
        "domain|ip",
        "url",
        "email",
        "email-src",
        "email-dst",
        "email-subject",
        "md5",
        "sha1",
        "sha256",
        "sha512",
        "filename",
        "filename|md5",
        "filename|sha256",
        "mutex",
        "regkey",
        "AS",
        "mac-address",
        "x509-fingerprint-sha1",
    ];
    let mut observe = Vec::new();
    let mut want_observe = Vec::new();
    for (k, ty) in observed.iter().enumerate() {
        let (_, v, _) = PATTERNS
            .iter()
            .find(|(t, ..)| t == ty)
            .expect("in the table");
        observe.push(attr(200 + k, ty, v, false));
        want_observe.push((ty.to_string(), lower(ty, v), false));
    }
    for (n, (records, mut want)) in [(detect, want_detect), (observe, want_observe)]
        .into_iter()
        .enumerate()
    {
        let converted = convert(&event(records));
        assert!(converted.skipped.is_empty(), "{:?}", converted.skipped);
        let id = format!("0193a000-0000-7000-8000-00000000001{n}");
        let c = bundle_message(&id, &converted.objects, converted.tlp);
        let e = message_to_event(&c, converted.tlp).expect("event");
        assert_eq!(e["Event"]["info"], "LockBit affiliate");
        let mut got = attributes(&e);
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}
