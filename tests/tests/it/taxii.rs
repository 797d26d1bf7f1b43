//! The TAXII 2.1 server driven by the real OASIS `taxii2-client` (tests/python/taxii_client.py):
//! discovery, API root, collections, paging through a collection over mutual TLS and with a
//! token (Basic and Bearer), an object by id, the manifest and versions, a POST whose objects
//! then reach another node, pagination that stays stable while messages arrive, and the
//! spec's 401/404/406/415/422 answers. What a caller sees is its node's feed: a member of a
//! cluster sees its collection, a non-member does not.

use bluewire_tests::clusters::{create, join};
use bluewire_tests::{
    FedOptions, OrgSpec, TestFederation, assert_eventually, backlog, item_content, pb, python,
};
use pb::{ClusterRole as Role, HistoryRule};
use serde_json::{Value, json};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
const EU: &str = "cert-eu";

fn specs() -> Vec<OrgSpec> {
    bluewire_tests::be_fr_eu()
}

const T: &str = "2026-11-30T08:00:00.000Z";

fn indicators(n: u32) -> (Value, Vec<String>) {
    let ids: Vec<String> = (0..n)
        .map(|i| format!("indicator--5e0c1a2b-3c4d-4e5f-8a6b-{i:012}"))
        .collect();
    let objects: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "type": "indicator", "spec_version": "2.1", "id": id, "created": T, "modified": T,
                "name": format!("C2 {i}"), "description": "ransomware C2",
                "pattern": format!("[ipv4-addr:value = '198.51.100.{i}']"), "pattern_type": "stix",
                "valid_from": T,
            })
        })
        .collect();
    (
        json!({"type": "bundle", "id": "bundle--5e0c1a2b-3c4d-4e5f-8a6b-0000000000ff", "objects": objects}),
        ids,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taxii2_client_reads_and_publishes_through_a_node() {
    let fed = TestFederation::with_options(
        &specs(),
        FedOptions {
            taxii: true,
            ..FedOptions::fast_cluster_sync()
        },
    )
    .await;
    // A cluster of BE and FR: its own collection at both, none at EU.
    let cluster = create(&fed, BE, "ransomware", HistoryRule::SinceJoin).await;
    join(&fed, BE, BE, &cluster.id, FR, Role::Member, &[BE, FR]).await;

    // FR publishes 23 indicators federation-wide; BE serves them.
    let (bundle, ids) = indicators(23);
    let r = fed
        .client(FR, "analyst")
        .client()
        .import_stix(pb::ImportStixRequest {
            bundle: bundle.to_string(),
            level: pb::Level::Technical as i32,
            marking: Some(pb::Marking {
                tlp: pb::Tlp::Green as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner();
    assert_eq!(r.objects_published, 23, "{r:?}");
    let published = r.published[0].id.clone();
    assert_eventually!(
        fed.has_message(BE, &published).await,
        "the bundle never reached {BE}"
    );

    // BE shares one indicator inside the cluster; FR publishes one federation-wide and
    // retracts it. Neither may show in BE's federation collection.
    let one = |uuid: &str, ip: &str| {
        json!({"type": "bundle", "id": format!("bundle--{uuid}"), "objects": [{
            "type": "indicator", "spec_version": "2.1", "id": format!("indicator--{uuid}"),
            "created": T, "modified": T, "name": "x", "description": "x",
            "pattern": format!("[ipv4-addr:value = '{ip}']"), "pattern_type": "stix", "valid_from": T,
        }]})
    };
    let in_cluster = "6a0c1a2b-3c4d-4e5f-8a6b-000000000001";
    let r = fed
        .client(BE, "analyst")
        .client()
        .import_stix(pb::ImportStixRequest {
            bundle: one(in_cluster, "192.0.2.1").to_string(),
            level: pb::Level::Technical as i32,
            marking: Some(pb::Marking {
                tlp: pb::Tlp::Amber as i32,
                ..Default::default()
            }),
            cluster: cluster.id.clone(),
            ..Default::default()
        })
        .await
        .expect("import into the cluster")
        .into_inner();
    assert_eq!(r.objects_published, 1, "{r:?}");
    let retracted = "6a0c1a2b-3c4d-4e5f-8a6b-000000000002";
    let r = fed
        .client(FR, "analyst")
        .client()
        .import_stix(pb::ImportStixRequest {
            bundle: one(retracted, "192.0.2.2").to_string(),
            level: pb::Level::Technical as i32,
            marking: Some(pb::Marking {
                tlp: pb::Tlp::Green as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner();
    let gone = r.published[0].id.clone();
    assert_eventually!(fed.has_message(BE, &gone).await, "never reached {BE}");
    fed.client(FR, "analyst")
        .client()
        .publish(bluewire_tests::retraction_request(&gone))
        .await
        .expect("retract");
    assert_eventually!(
        !backlog(&fed.client(BE, "analyst"), Some(FR))
            .await
            .iter()
            .any(|i| item_content(i).id == gone),
        "the retraction never took effect at {BE}"
    );

    let token = fed
        .client(BE, "operator")
        .admin()
        .token_create(pb::TokenCreateRequest {
            user: "soc".into(),
            role: "soc-tool".into(),
            label: "taxii2-client test".into(),
            ttl_ms: 3_600_000,
        })
        .await
        .expect("token create")
        .into_inner()
        .token;

    // A second token, revoked: refused from then on.
    let admin = || fed.client(BE, "operator").admin();
    let second = admin()
        .token_create(pb::TokenCreateRequest {
            user: "misp".into(),
            role: "analyst".into(),
            label: "revoked in the test".into(),
            ttl_ms: 3_600_000,
        })
        .await
        .expect("token create")
        .into_inner();
    let revoked = second.token.clone();
    admin()
        .token_revoke(pb::TokenRevokeRequest {
            id: second.info.expect("info").id,
        })
        .await
        .expect("token revoke");

    let be = fed.info(BE);
    let user = be.user_dir("analyst");
    let addr = fed.node(BE).taxii_addr().expect("BE serves TAXII");
    let args = json!({
        "url": format!("https://{addr}/taxii2/"),
        "ca": user.join("ca.crt"),
        "cert": user.join("user.crt"),
        "key": user.join("user.key"),
        "user": "soc",
        "token": token,
        "expect_ids": ids,
        "absent_ids": [format!("indicator--{in_cluster}"), format!("indicator--{retracted}")],
        "cluster_ids": [format!("indicator--{in_cluster}")],
        "revoked_token": revoked,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/taxii_client.py");
    let out = tokio::task::spawn_blocking(move || {
        python::command()
            .arg(script)
            .arg(args.to_string())
            .output()
            .expect("run taxii_client.py")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "taxii2-client run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("the script prints JSON");
    assert_eq!(
        seen["collections"],
        json!(["csirt-be/ransomware", "federation"]),
        "{seen:#}"
    );
    assert_eq!(seen["paged_indicators"], 23, "{seen:#}");
    assert_eq!(seen["after_post"], 26, "{seen:#}");
    assert_eq!(
        seen["codes"],
        json!({
            "no_auth": 401, "bad_token": 401, "wrong_secret": 401, "revoked_token": 401,
            "basic_other_user": 401, "wrong_accept": 406, "wrong_content_type": 415,
            "unknown_collection": 404, "unknown_object": 404, "not_json": 422, "status": 200,
        }),
        "{seen:#}"
    );

    // What the tool posted was published as BE's user "soc", signed by BE, and reached FR.
    let posted = "indicator--7d1f2c3b-4a5e-4f60-8b7c-000000000001";
    assert_eventually!(
        backlog(&fed.client(FR, "analyst"), Some(BE))
            .await
            .iter()
            .map(item_content)
            .any(|c| c.author == "csirt-be/soc"
                && matches!(&c.body, Some(pb::content::Body::Stix(b)) if b.json.contains(posted))),
        "the objects posted over TAXII never reached {FR}"
    );

    // EU is no member of the cluster: its TAXII server lists only the federation feed.
    let eu_addr = fed.node(EU).taxii_addr().expect("EU serves TAXII");
    let eu_user = fed.info(EU).user_dir("analyst");
    let out = python::script(
        r#"
import json, sys
from taxii2client.v21 import Server
a = json.loads(sys.argv[1])
s = Server(a["url"], verify=a["ca"], cert=(a["cert"], a["key"]))
print(json.dumps(sorted(c.title for c in s.api_roots[0].collections)))
"#,
        &[&json!({
            "url": format!("https://{eu_addr}/taxii2/"),
            "ca": eu_user.join("ca.crt"),
            "cert": eu_user.join("user.crt"),
            "key": eu_user.join("user.key"),
        })
        .to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"["federation"]"#
    );
}
