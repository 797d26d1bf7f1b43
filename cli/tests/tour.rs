//! The README's "five-minute tour", driven through the real `bluewire` binary
//! as a new user would: PKI, two nodes as child processes, publish, subscribe,
//! status, the errors a user meets, revocation. Asserts only what a user sees:
//! exit codes, JSON on stdout, advice on stderr.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Nodes, bw_in, free_port, spawn_node, until_ok};
use serde_json::Value;

#[test]
fn five_minute_tour() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let t = Duration::from_secs(20);
    let bw = |args: &[&str]| bw_in(root, args, t);

    let (be_port, eu_port, dead_port) = (free_port(), free_port(), free_port());
    let be_listen = format!("127.0.0.1:{be_port}");
    let eu_listen = format!("127.0.0.1:{eu_port}");
    let be_ep = format!("https://{be_listen}");
    let eu_ep = format!("https://{eu_listen}");

    // 1. Federation PKI.
    bw(&["pki", "init-federation", "--out", "fed"]).expect_ok("pki init-federation");
    for (org, country, ty, ep) in [
        ("csirt-be", "BE", "csirt", &be_ep),
        ("cert-eu", "EU", "eu-body", &eu_ep),
    ] {
        let out = format!("orgs/{org}");
        let r = bw(&[
            "--output",
            "json",
            "pki",
            "issue",
            "--ca",
            "fed",
            "--org",
            org,
            "--country",
            country,
            "--type",
            ty,
            "--levels",
            "technical,operational",
            "--endpoint",
            ep,
            "--out",
            &out,
        ])
        .expect_ok("pki issue");
        assert_eq!(r.json()["org"], org, "{r:#?}");
        for f in [
            "node.crt",
            "node.key",
            "signing.key",
            "org-ca.crt",
            "org-ca.key",
            "ca.crt",
        ] {
            assert!(root.join(&out).join(f).is_file(), "pki issue wrote no {f}");
        }
    }
    let before = bw(&["--output", "json", "pki", "list", "--ca", "fed"])
        .expect_ok("pki list")
        .json();
    let rows = before.as_array().expect("pki list is an array");
    assert!(rows.iter().any(|r| r["org"] == "cert-eu"), "{before:#}");
    assert!(
        rows.iter().all(|r| r.get("revoked_at").is_none()),
        "{before:#}"
    );

    // 2. Members.
    for (org, name, role) in [
        ("csirt-be", "alice", "analyst"),
        ("cert-eu", "bob", "soc-tool"),
        ("csirt-be", "olga", "operator"),
    ] {
        let org_dir = format!("orgs/{org}");
        let out = format!("users/{name}");
        bw(&[
            "pki",
            "issue-user",
            "--org-dir",
            &org_dir,
            "--name",
            name,
            "--role",
            role,
            "--out",
            &out,
        ])
        .expect_ok("pki issue-user");
        assert!(root.join(&out).join("client.toml").is_file());
    }
    let cfg = |user: &str| {
        root.join("users")
            .join(user)
            .join("client.toml")
            .to_string_lossy()
            .into_owned()
    };
    let (alice, bob, olga) = (cfg("alice"), cfg("bob"), cfg("olga"));

    // 3. Run nodes.
    let mut nodes = Nodes(Vec::new());
    for (org, listen, peer) in [
        ("csirt-be", &be_listen, format!("cert-eu={eu_ep}")),
        ("cert-eu", &eu_listen, format!("csirt-be={be_ep}")),
    ] {
        let dir = root.join("orgs").join(org);
        bw_in(
            &dir,
            &[
                "node", "init", "--org", org, "--listen", listen, "--peer", &peer,
            ],
            t,
        )
        .expect_ok("node init");
        spawn_node(&mut nodes, org, &dir);
    }

    // Ready when a member can talk to each node (bounded).
    until_ok(
        &mut nodes,
        root,
        &["--client-config", &olga, "--output", "json", "status"],
    );
    until_ok(
        &mut nodes,
        root,
        &[
            "--client-config",
            &bob,
            "--output",
            "json",
            "subscribe",
            "--no-follow",
        ],
    );

    // 4. Publish and subscribe.
    let feed = |user: &str| {
        bw(&[
            "--client-config",
            user,
            "--output",
            "json",
            "subscribe",
            "--no-follow",
        ])
        .expect_ok("subscribe --no-follow")
        .json_lines()
    };
    assert_eq!(
        feed(&bob),
        Vec::<Value>::new(),
        "cert-eu's feed starts empty"
    );

    let published = bw(&[
        "--client-config",
        &alice,
        "--output",
        "json",
        "publish",
        "--kind",
        "incident",
        "--level",
        "technical",
        "--tlp",
        "AMBER",
        "--severity",
        "high",
        "--sector",
        "health",
        "--title",
        "Ransomware in two hospitals",
        "--body",
        "Initial access via VPN appliance",
    ])
    .expect_ok("publish")
    .json();
    let id = published["id"].as_str().expect("publish prints an id");
    assert!(!id.is_empty(), "{published:#}");
    assert_eq!(published["queued_for"], serde_json::json!(["cert-eu"]));
    assert_eq!(published["refused"], serde_json::json!([]));

    // Poll cert-eu's feed until the message shows up (bounded).
    let arrived = |id: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(m) = feed(&bob).into_iter().find(|m| m["id"] == id) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "message {id} never reached cert-eu"
            );
            thread::sleep(Duration::from_millis(200));
        }
    };
    let m = arrived(id);
    assert_eq!(m["verified"], true, "{m:#}");
    assert_eq!(m["origin"], "csirt-be", "{m:#}");
    assert_eq!(m["signer_org"], "csirt-be", "{m:#}");
    assert_eq!(m["received_from"], "csirt-be", "{m:#}");
    assert_eq!(m["tlp"], "TLP:AMBER", "{m:#}");
    assert_eq!(m["kind"], "incident-report", "{m:#}");
    assert_eq!(m["level"], "technical", "{m:#}");
    assert_eq!(m["title"], "Ransomware in two hospitals", "{m:#}");
    assert_eq!(m["body"], "Initial access via VPN appliance", "{m:#}");

    // A message for a named recipient only.
    let to_eu = bw(&[
        "--client-config",
        &alice,
        "--output",
        "json",
        "publish",
        "--level",
        "technical",
        "--tlp",
        "RED",
        "--to",
        "cert-eu",
        "--title",
        "For CERT-EU only",
    ])
    .expect_ok("publish --to cert-eu")
    .json();
    assert_eq!(to_eu["queued_for"], serde_json::json!(["cert-eu"]));
    let to_id = to_eu["id"].as_str().expect("publish prints an id");
    let m = arrived(to_id);
    assert_eq!(m["tlp"], "TLP:RED", "{m:#}");
    assert_eq!(m["kind"], "free-text", "{m:#}");
    assert_eq!(m["recipients"], serde_json::json!(["cert-eu"]), "{m:#}");
    assert_eq!(m["verified"], true, "{m:#}");

    // A bad flag value is refused before anything is sent, naming the value.
    let bad = bw(&[
        "--client-config",
        &alice,
        "publish",
        "--level",
        "technical",
        "--tlp",
        "PURPLE",
        "--title",
        "x",
    ]);
    assert!(!bad.ok(), "--tlp PURPLE accepted: {bad:#?}");
    assert!(bad.stderr.contains("PURPLE"), "{bad:#?}");
    assert!(
        bad.stderr.contains("AMBER"),
        "no hint of valid values: {bad:#?}"
    );

    // 4b. Threat feeds: import a STIX bundle directory (idempotent, refusals listed), the
    // other organisation exports what it received as STIX.
    std::fs::create_dir_all(root.join("feed")).expect("mkdir feed");
    let t0 = "2026-11-30T08:00:00.000Z";
    let indicator = |n: u32, pattern: &str| {
        serde_json::json!({
            "type": "indicator", "spec_version": "2.1",
            "id": format!("indicator--0c4d5e6f-1a2b-4c3d-8e9f-00000000000{n}"),
            "created": t0, "modified": t0, "name": format!("C2 {n}"), "description": "c2",
            "pattern": pattern, "pattern_type": "stix", "valid_from": t0,
        })
    };
    let bundle = serde_json::json!({
        "type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa",
        "objects": [
            indicator(1, "[ipv4-addr:value = '198.51.100.7']"),
            indicator(2, "[domain-name:value = 'c2.example' AND ipv4-addr:value = '198.51.100.8'"),
        ],
    });
    std::fs::write(root.join("feed/vendor.json"), bundle.to_string()).expect("write bundle");
    let imported = bw(&[
        "--client-config",
        &alice,
        "--output",
        "json",
        "import",
        "stix",
        "feed",
        "--tlp",
        "GREEN",
    ]);
    assert!(
        !imported.ok(),
        "an import with a refusal exits non-zero: {imported:#?}"
    );
    let summary = imported.json();
    assert_eq!(
        (summary["published"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(0)),
        "{summary:#}"
    );
    let refused = &summary["refused"][0];
    assert_eq!(
        refused["id"], "indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000002",
        "{summary:#}"
    );
    assert!(
        refused["reason"].as_str().unwrap_or("").contains("pattern"),
        "{summary:#}"
    );
    assert!(
        imported.stderr.contains("nothing is published twice"),
        "{imported:#?}"
    );
    let again = bw(&[
        "--client-config",
        &alice,
        "--output",
        "json",
        "import",
        "stix",
        "feed/vendor.json",
        "--tlp",
        "GREEN",
    ]);
    assert_eq!(
        (
            again.json()["published"].as_u64(),
            again.json()["skipped"].as_u64()
        ),
        (Some(0), Some(1)),
        "{again:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let exported = loop {
        bw(&[
            "--client-config",
            &bob,
            "export",
            "stix",
            "--out",
            "export.json",
        ])
        .expect_ok("export stix");
        let b: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("export.json")).expect("read export"),
        )
        .expect("export is JSON");
        let found = b["objects"].as_array().is_some_and(|o| {
            o.iter()
                .any(|o| o["id"] == "indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000001")
        });
        if found {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the indicator never reached cert-eu's export: {b:#}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(exported["type"], "bundle");
    let objects = exported["objects"].as_array().expect("objects");
    let ind = objects
        .iter()
        .find(|o| o["id"] == "indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000001")
        .expect("indicator");
    assert_eq!(
        ind["object_marking_refs"],
        serde_json::json!(["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"])
    );
    assert!(
        objects.iter().any(|o| o["type"] == "incident"),
        "the incident report exports as an incident"
    );

    // CSV: one indicator per row, columns named by --map; re-importing skips every row.
    std::fs::write(
        root.join("iocs.csv"),
        "ip,note\n198.51.100.21,C2 one\n198.51.100.22,C2 two\n,no value\n",
    )
    .expect("write csv");
    let csv = || {
        bw(&[
            "--client-config",
            &alice,
            "--output",
            "json",
            "import",
            "csv",
            "iocs.csv",
            "--map",
            "ip=ipv4-addr:value,note=description",
            "--tlp",
            "GREEN",
        ])
        .json()
    };
    let first = csv();
    assert_eq!(first["published"], 2, "{first:#}");
    assert_eq!(first["refused"][0]["at"], "iocs.csv row 4", "{first:#}");
    let again = csv();
    assert_eq!(
        again["skipped"], 2,
        "re-importing the same file publishes nothing twice: {again:#}"
    );

    // 4c. A TAXII token for a tool: shown once, listed without its secret, revocable.
    let created = bw(&[
        "--client-config",
        &olga,
        "--output",
        "json",
        "token",
        "create",
        "--user",
        "soc",
        "--role",
        "soc-tool",
        "--expires-in",
        "30d",
        "--label",
        "OpenCTI",
    ])
    .expect_ok("token create")
    .json();
    let token = created["token"].as_str().expect("the token is shown once");
    assert!(token.starts_with("bwt_"), "{created:#}");
    let token_id = created["id"].as_str().expect("token id").to_string();
    let listed = bw(&[
        "--client-config",
        &olga,
        "--output",
        "json",
        "token",
        "list",
    ])
    .expect_ok("token list");
    assert!(
        !listed.stdout.contains(token),
        "token list shows the secret: {listed:#?}"
    );
    assert_eq!(listed.json()[0]["user"], "soc", "{listed:#?}");
    let revoked = bw(&[
        "--client-config",
        &olga,
        "--output",
        "json",
        "token",
        "revoke",
        &token_id,
    ])
    .expect_ok("token revoke")
    .json();
    assert_eq!(revoked["state"], "revoked", "{revoked:#}");
    let denied = bw(&["--client-config", &alice, "token", "list"]);
    assert!(
        !denied.ok() && denied.stderr.contains("operator"),
        "{denied:#?}"
    );

    // 5. Operate: the operator sees the peer link, drained, post-quantum KX.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let s = bw(&["--client-config", &olga, "--output", "json", "status"])
            .expect_ok("status (operator)")
            .json();
        let peer = s["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["org"] == "cert-eu"))
            .cloned()
            .unwrap_or_else(|| panic!("no peer cert-eu in status: {s:#}"));
        if peer["outbox_depth"] == 0 && peer["kx_group"] == "X25519MLKEM768" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "peer cert-eu never drained with PQ KX: {s:#}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["org"], "csirt-be", "{status:#}");
    let peer = status["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["org"] == "cert-eu"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(peer["path"], "direct", "{status:#}");
    assert!(status["messages"].as_u64() >= Some(2), "{status:#}");

    // An analyst may not run admin commands, and is told why.
    let denied = bw(&["--client-config", &alice, "status"]);
    assert!(!denied.ok(), "analyst ran status: {denied:#?}");
    assert!(denied.stderr.contains("operator role"), "{denied:#?}");
    assert!(denied.stdout.is_empty(), "{denied:#?}");

    // Nothing listening: the user is told the node cannot be reached.
    let dead = format!("https://127.0.0.1:{dead_port}");
    let unreachable = bw(&[
        "--client-config",
        &bob,
        "--node",
        &dead,
        "subscribe",
        "--no-follow",
    ]);
    assert!(!unreachable.ok(), "{unreachable:#?}");
    // The user is told which node could not be reached and what to check.
    assert!(
        unreachable
            .stderr
            .contains(&format!("cannot reach the node at {dead}")),
        "{unreachable:#?}"
    );

    // Key rotation: csirt-be's node gets new TLS, signing and encryption keys (same profile,
    // same users); the old files stay under retired/, the old certificate retires after the
    // overlap (none here: `pki crl` lists it at once).
    let rotated = bw(&[
        "--output",
        "json",
        "pki",
        "rotate",
        "--ca",
        "fed",
        "--org-dir",
        "orgs/csirt-be",
        "--overlap",
        "0m",
    ])
    .expect_ok("pki rotate")
    .json();
    let old_serial = rotated["old_serial"].as_str().expect("old serial");
    let retired = root.join("orgs/csirt-be/retired").join(old_serial);
    for f in ["node.crt", "encryption.key"] {
        assert!(retired.join(f).is_file(), "no retired {f}: {rotated:#}");
    }
    let crl = bw(&["--output", "json", "pki", "crl", "--ca", "fed"])
        .expect_ok("pki crl")
        .json();
    assert!(
        crl["listed"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s == old_serial)),
        "{crl:#}"
    );
    let listed = bw(&["pki", "list", "--ca", "fed"]).expect_ok("pki list");
    assert!(
        listed.stdout.contains(&format!(
            "by {}",
            rotated["serial"].as_str().expect("new serial")
        )),
        "{listed:#?}"
    );
    nodes.restart("csirt-be", &root.join("orgs/csirt-be"));
    until_ok(
        &mut nodes,
        root,
        &["--client-config", &olga, "--output", "json", "status"],
    );
    let published = bw(&[
        "--client-config",
        &alice,
        "--output",
        "json",
        "publish",
        "--level",
        "technical",
        "--tlp",
        "GREEN",
        "--title",
        "Signed with the rotated key",
    ])
    .expect_ok("publish after rotation")
    .json();
    let m = arrived(published["id"].as_str().expect("id"));
    assert_eq!(m["key_id"], rotated["signing_key_id"], "{m:#}");
    assert_eq!(m["verified"], true, "{m:#}");

    // Revocation: the federation CA marks all of cert-eu's certificates.
    bw(&["pki", "revoke", "--ca", "fed", "--org", "cert-eu"]).expect_ok("pki revoke");
    assert!(root.join("fed/crl.pem").is_file());
    let after = bw(&["--output", "json", "pki", "list", "--ca", "fed"])
        .expect_ok("pki list")
        .json();
    let rows = after.as_array().expect("pki list is an array");
    let eu: Vec<&Value> = rows.iter().filter(|r| r["org"] == "cert-eu").collect();
    assert!(!eu.is_empty(), "{after:#}");
    assert!(
        eu.iter().all(|r| r["revoked_at"].is_i64()),
        "cert-eu not revoked: {after:#}"
    );
    assert!(
        rows.iter()
            .filter(|r| r["org"] == "csirt-be")
            .all(|r| r.get("revoked_at").is_none()),
        "csirt-be revoked too: {after:#}"
    );

    drop(nodes);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "tour took {:?}",
        started.elapsed()
    );
}
