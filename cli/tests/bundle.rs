//! Offline bundles through the real `bluewire` binary: two node processes with no network
//! path between them (each has the other as a peer at an address nothing listens on)
//! exchange a day's traffic by file. Asserts what an operator sees: exit codes, JSON on
//! stdout, reasons on stderr, and the receiving members' feed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Nodes, Run, bw_in, free_port, spawn_node, until_ok};
use serde_json::Value;

#[test]
fn two_nodes_without_a_network_path_exchange_a_days_traffic_by_bundle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let bw = |args: &[&str]| bw_in(root, args, Duration::from_secs(30));

    bw(&["pki", "init-federation", "--out", "fed"]).expect_ok("pki init-federation");
    let mut listen = BTreeMap::new();
    for (org, country) in [("csirt-be", "BE"), ("csirt-fr", "FR")] {
        let l = format!("127.0.0.1:{}", free_port());
        bw(&[
            "pki",
            "issue",
            "--ca",
            "fed",
            "--org",
            org,
            "--country",
            country,
            "--type",
            "csirt",
            "--levels",
            "technical,operational",
            "--endpoint",
            &format!("https://{l}"),
            "--out",
            &format!("orgs/{org}"),
        ])
        .expect_ok("pki issue");
        listen.insert(org, l);
    }
    for (org, name, role) in [
        ("csirt-be", "alice", "analyst"),
        ("csirt-be", "olga", "operator"),
        ("csirt-fr", "bob", "analyst"),
        ("csirt-fr", "fred", "operator"),
    ] {
        bw(&[
            "pki",
            "issue-user",
            "--org-dir",
            &format!("orgs/{org}"),
            "--name",
            name,
            "--role",
            role,
            "--out",
            &format!("users/{name}"),
        ])
        .expect_ok("pki issue-user");
    }
    let cfg = |user: &str| format!("users/{user}/client.toml");
    let as_user = |user: &str, args: &[&str]| -> Run {
        let mut a = vec!["--client-config".to_string(), cfg(user)];
        a.extend(["--output".into(), "json".into()]);
        a.extend(args.iter().map(|s| s.to_string()));
        bw(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Each node has the other as a peer, at an address nothing listens on: the link is down
    // for the whole test, so whatever csirt-fr holds came by bundle.
    let mut nodes = Nodes(Vec::new());
    for (org, other) in [("csirt-be", "csirt-fr"), ("csirt-fr", "csirt-be")] {
        let dir = root.join("orgs").join(org);
        let peer = format!("{other}=https://127.0.0.1:{}", free_port());
        bw_in(
            &dir,
            &[
                "node",
                "init",
                "--org",
                org,
                "--listen",
                &listen[org],
                "--peer",
                &peer,
            ],
            Duration::from_secs(20),
        )
        .expect_ok("node init");
        spawn_node(&mut nodes, org, &dir);
    }
    for user in ["olga", "fred"] {
        until_ok(&mut nodes, root, &["--client-config", &cfg(user), "status"]);
    }

    // A day's traffic at csirt-be.
    let publish = |tlp: &str, title: &str, to: Option<&str>| -> String {
        let mut args = vec![
            "publish",
            "--level",
            "technical",
            "--tlp",
            tlp,
            "--title",
            title,
        ];
        if let Some(to) = to {
            args.extend(["--to", to]);
        }
        let r = as_user("alice", &args).expect_ok("publish").json();
        r["id"].as_str().expect("publish prints an id").to_string()
    };
    let mut expected = Vec::new();
    for i in 0..20 {
        publish("GREEN", &format!("green-{i}"), None);
        expected.push(format!("green-{i}"));
    }
    for i in 0..3 {
        publish("AMBER", &format!("amber-{i}"), None);
        expected.push(format!("amber-{i}"));
    }
    publish("RED", "red-for-fr", Some("csirt-fr"));
    expected.push("red-for-fr".into());
    // Not for csirt-fr: never in its bundle.
    publish("RED", "red-for-eu", Some("cert-eu"));
    // Retracted before the export: never in the bundle either.
    let gone = publish("GREEN", "retracted", None);
    as_user("alice", &["retract", &gone, "--reason", "wrong host"]).expect_ok("retract");
    // The retraction travels (the retracted message does not).
    expected.push(format!("retraction of csirt-be/{gone}"));

    // Export: csirt-be's node has never met csirt-fr, so it needs its certificate.
    let unknown = as_user(
        "olga",
        &["bundle", "export", "--for", "csirt-fr", "--out", "day.bwb"],
    );
    assert!(!unknown.ok(), "{unknown:#?}");
    assert!(
        unknown.stderr.contains("--recipient-cert"),
        "no advice: {unknown:#?}"
    );
    assert!(!root.join("day.bwb").exists());
    let fr_cert = "orgs/csirt-fr/node.crt";
    let export = |out: &str, extra: &[&str]| -> Value {
        let mut args = vec![
            "bundle",
            "export",
            "--for",
            "csirt-fr",
            "--recipient-cert",
            fr_cert,
            "--out",
            out,
        ];
        args.extend(extra);
        as_user("olga", &args).expect_ok("bundle export").json()
    };
    let day = export("day.bwb", &[]);
    // 24 messages and the retraction.
    assert_eq!(day["envelopes"], 25, "{day:#}");
    assert_eq!(day["encrypted"], true, "{day:#}");
    assert_eq!(day["highest_tlp"], "TLP:RED", "{day:#}");
    let bytes = std::fs::read(root.join("day.bwb")).expect("bundle written");
    for secret in ["red-for-fr", "amber-0", "green-0"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} readable in the encrypted bundle"
        );
    }
    // Never overwritten.
    let again = as_user(
        "olga",
        &["bundle", "export", "--for", "csirt-fr", "--out", "day.bwb"],
    );
    assert!(!again.ok() && again.stderr.contains("exists"), "{again:#?}");

    // Import at csirt-fr.
    let imported = as_user("fred", &["bundle", "import", "day.bwb"])
        .expect_ok("bundle import")
        .json();
    assert_eq!(imported["accepted"], 25, "{imported:#}");
    assert_eq!(imported["rejected"], 0, "{imported:#}");
    assert_eq!(imported["from"], "csirt-be", "{imported:#}");
    assert_eq!(imported["encrypted"], true, "{imported:#}");
    let titles = |user: &str| -> Vec<String> {
        as_user(user, &["subscribe", "--no-follow"])
            .expect_ok("subscribe")
            .json_lines()
            .iter()
            .filter(|m| m["origin"] == "csirt-be")
            .filter_map(|m| m["title"].as_str().map(str::to_string))
            .filter(|t| !t.is_empty())
            .collect()
    };
    let mut got = titles("bob");
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "csirt-fr's feed after the import");

    // Again: nothing new, refused as replayed, nothing changed.
    let replay = as_user("fred", &["bundle", "import", "day.bwb"]);
    assert!(!replay.ok(), "{replay:#?}");
    assert!(replay.stderr.contains("replayed"), "{replay:#?}");
    // Tampered: one byte flipped in the middle.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(root.join("tampered.bwb"), &bad).expect("write");
    let tampered = as_user("fred", &["bundle", "import", "tampered.bwb"]);
    assert!(!tampered.ok(), "{tampered:#?}");
    assert!(tampered.stderr.contains("tampered"), "{tampered:#?}");
    // Foreign: csirt-be's own node is not the addressee.
    let foreign = as_user("olga", &["bundle", "import", "day.bwb"]);
    assert!(!foreign.ok(), "{foreign:#?}");
    assert!(
        foreign.stderr.contains("foreign") && foreign.stderr.contains("csirt-fr's node"),
        "{foreign:#?}"
    );
    // Not a bundle at all.
    std::fs::write(root.join("notes.txt"), "meeting at 10").expect("write");
    let junk = as_user("fred", &["bundle", "import", "notes.txt"]);
    assert!(
        !junk.ok() && junk.stderr.contains("not a Bluewire offline bundle"),
        "{junk:#?}"
    );
    let mut after = titles("bob");
    after.sort();
    assert_eq!(after, want, "refused imports changed csirt-fr's feed");

    // The next day: only what is new, nothing above GREEN, so signed but not encrypted.
    let since = now_ms().to_string();
    publish("GREEN", "next-day", None);
    let next = export("next.bwb", &["--since", &since]);
    assert_eq!(next["envelopes"], 1, "{next:#}");
    assert_eq!(next["encrypted"], false, "{next:#}");
    let imported = as_user("fred", &["bundle", "import", "next.bwb"])
        .expect_ok("bundle import")
        .json();
    assert_eq!(imported["accepted"], 1, "{imported:#}");
    assert!(titles("bob").iter().any(|t| t == "next-day"));

    // End to end: since the export, csirt-be's node knows csirt-fr's certified encryption
    // key, so a message can be encrypted to it; the bundle carries only ciphertext of it.
    let since = now_ms().to_string();
    let e2e = as_user(
        "alice",
        &[
            "publish",
            "--level",
            "technical",
            "--tlp",
            "RED",
            "--to",
            "csirt-fr",
            "--encrypt",
            "--title",
            "e2e-secret",
        ],
    )
    .expect_ok("publish --encrypt")
    .json();
    let e2e_id = e2e["id"].as_str().expect("id").to_string();
    let third = export("third.bwb", &["--since", &since]);
    assert_eq!(third["envelopes"], 1, "{third:#}");
    as_user("fred", &["bundle", "import", "third.bwb"]).expect_ok("bundle import");
    let item = as_user("bob", &["get", &e2e_id]).expect_ok("get").json();
    assert_eq!(item["title"], "e2e-secret", "{item:#}");
    assert_eq!(item["end_to_end"], true, "{item:#}");

    // Both audit trails record it and still verify.
    for user in ["olga", "fred"] {
        as_user(user, &["audit", "verify"]).expect_ok("audit verify");
    }
    let trail = as_user("fred", &["audit", "export"]).expect_ok("audit export");
    assert!(
        trail.stdout.contains("imported offline bundle"),
        "no bundle record in csirt-fr's audit trail"
    );
    assert_link_down(root, &cfg("fred"));

    // The federation CA states a key compromise from a time; the CLI writes it to the CRL
    // and the index (nodes then mark what the key signed since as suspect: it::compromise).
    let revoked = bw(&[
        "--output",
        "json",
        "pki",
        "revoke",
        "--ca",
        "fed",
        "--org",
        "csirt-be",
        "--compromised-since",
        "2026-12-01T14:00:00Z",
    ])
    .expect_ok("pki revoke --compromised-since")
    .json();
    assert_eq!(
        revoked["compromised_since_ms"], 1_796_133_600_000i64,
        "{revoked:#}"
    );
    let future = bw(&[
        "pki",
        "revoke",
        "--ca",
        "fed",
        "--org",
        "csirt-fr",
        "--compromised-since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(
        !future.ok() && future.stderr.contains("future"),
        "{future:#?}"
    );
    let list = bw(&["--output", "json", "pki", "list", "--ca", "fed"])
        .expect_ok("pki list")
        .json();
    let be: Vec<&Value> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|c| c["org"] == "csirt-be")
        .collect();
    assert!(
        !be.is_empty()
            && be
                .iter()
                .all(|c| c["compromised_since"] == 1_796_133_600i64),
        "{list:#}"
    );
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

/// The test's premise: csirt-fr never had a working link to csirt-be.
fn assert_link_down(root: &Path, fred: &str) {
    let peers = bw_in(
        root,
        &["--client-config", fred, "--output", "json", "peers"],
        Duration::from_secs(20),
    )
    .expect_ok("peers")
    .json();
    let be = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["org"] == "csirt-be"))
        .unwrap_or_else(|| panic!("csirt-be not among csirt-fr's peers: {peers:#}"));
    assert_ne!(be["connected"], true, "{be:#}");
    // No other member to relay through either.
    assert_eq!(be["path"], "unreachable", "{be:#}");
}
