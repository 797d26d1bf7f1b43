//! A message published at one CSIRT reaches every other organisation of the
//! federation, verified, with the origin's exact signed bytes.

use bluewire_node::pki::{Function, Level};
use bluewire_node::signing::{self, MESSAGE_CONTEXT};
use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, backlog, free_text, item_id, pb};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_message_reaches_every_org_verified_and_byte_identical() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
        OrgSpec::new(
            "cyclone-fr",
            "FR",
            "liaison",
            &[Level::Technical, Level::Operational],
        ),
        OrgSpec::new("cert-eu", "EU", "eu-body", &[Level::Technical]),
    ])
    .await;

    // A subscriber is already following at each receiving org.
    let receivers = ["csirt-fr", "cyclone-fr", "cert-eu"];
    let mut streams = Vec::new();
    for org in receivers {
        let s = fed
            .client(org, "analyst")
            .client()
            .subscribe(pb::SubscribeRequest::default())
            .await
            .unwrap_or_else(|e| panic!("subscribe at {org}: {e}"))
            .into_inner();
        streams.push((org, s));
    }

    let published = fed
        .publish("csirt-be", "ransomware wave on hospitals")
        .await;
    let mut queued = published.queued_for.clone();
    queued.sort();
    assert_eq!(queued, ["cert-eu", "csirt-fr", "cyclone-fr"]);
    assert!(published.refused.is_empty(), "{:?}", published.refused);

    let origin = fed
        .client("csirt-be", "analyst")
        .client()
        .get(pb::GetRequest {
            id: published.id.clone(),
        })
        .await
        .expect("Get at the origin")
        .into_inner();
    let origin_env = origin.envelope.clone().expect("envelope at origin");
    assert!(origin.verified);
    assert_eq!(origin.signer_org, "csirt-be");

    // The origin's certified public key, from its bundle.
    let pk = fed
        .info("csirt-be")
        .bundle
        .node
        .signing_key
        .public_key("csirt-be")
        .unwrap();
    assert_eq!(
        origin_env.key_id,
        fed.info("csirt-be").bundle.node.signing_key.key_id
    );
    assert!(signing::verify(
        &pk,
        MESSAGE_CONTEXT,
        &origin_env.content,
        &origin_env.signature
    ));

    for (org, mut s) in streams {
        let items = bluewire_tests::take_items(&mut s, 1, bluewire_tests::EVENTUALLY).await;
        let item = &items[0];
        assert_eq!(item_id(item), published.id, "at {org}");
        assert!(item.verified, "at {org}");
        assert_eq!(item.signer_org, "csirt-be", "at {org}");
        assert_eq!(item.received_from, "csirt-be", "at {org}");
        let env = item.envelope.as_ref().expect("envelope");
        assert_eq!(env, &origin_env, "envelope bytes differ at {org}");
        assert!(
            signing::verify(&pk, MESSAGE_CONTEXT, &env.content, &env.signature),
            "signature does not verify at {org}"
        );
        let opened = bluewire_node::envelope::open(
            env,
            |k| (k == origin_env.key_id).then(|| ("csirt-be".to_string(), pk.clone())),
            bluewire_tests::now_ms(),
        )
        .unwrap_or_else(|e| panic!("envelope at {org} does not open: {e}"));
        assert_eq!(opened.content.origin_org, "csirt-be");
        assert_eq!(opened.content.author, "csirt-be/analyst");
        match opened.content.body {
            Some(pb::content::Body::FreeText(t)) => {
                assert_eq!(t.title, "ransomware wave on hospitals")
            }
            other => panic!("unexpected body at {org}: {other:?}"),
        }
        // Stored once, also readable by id and in the backlog.
        let feed = backlog(&fed.client(org, "analyst"), Some("csirt-be")).await;
        assert_eq!(feed.len(), 1, "at {org}");
    }

    // The origin sees its peers delivered with nothing left queued.
    assert_eventually!(
        {
            let peers = fed.peers("csirt-be").await;
            peers.len() == 3
                && peers
                    .iter()
                    .all(|p| p.outbox_depth == 0 && p.delivered >= 1)
        },
        "csirt-be outboxes did not drain: {:?}",
        fed.peers("csirt-be").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blueprint_functions_come_from_certificates_and_show_in_peers_and_explain() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE").with_functions(&[Function::CsirtsNetwork]),
        OrgSpec::new("cyclone-fr", "FR", "liaison", &[Level::Technical])
            .with_functions(&[Function::Presidency, Function::Cyclone]),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    // Once each link has handshaken, the peer's certified functions are known.
    assert_eventually!(
        {
            let peers = fed.peers("csirt-be").await;
            let of = |org: &str| {
                peers
                    .iter()
                    .find(|p| p.org == org)
                    .map(|p| p.functions.clone())
            };
            of("cyclone-fr") == Some(vec!["cyclone".into(), "presidency".into()])
                && of("csirt-fr") == Some(Vec::new())
        },
        "peers at csirt-be: {:?}",
        fed.peers("csirt-be").await
    );
    // csirt-fr explains once it has seen csirt-be's certificate (its own link handshook).
    assert_eventually!(
        fed.peers("csirt-fr")
            .await
            .iter()
            .any(|p| p.org == "csirt-be" && !p.functions.is_empty()),
        "peers at csirt-fr: {:?}",
        fed.peers("csirt-fr").await
    );
    let explained = fed
        .admin("csirt-fr")
        .explain(pb::ExplainRequest {
            draft: Some(free_text("t")),
            to: "csirt-be".into(),
            ..Default::default()
        })
        .await
        .expect("explain a draft")
        .into_inner()
        .recipients;
    assert_eq!(explained.len(), 1, "{explained:?}");
    assert_eq!(explained[0].functions, ["csirts-network"], "{explained:?}");
}
