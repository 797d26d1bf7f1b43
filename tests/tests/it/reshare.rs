//! Re-sharing a received message into another cluster keeps the origin's
//! signed envelope, adds the forwarder's signed attestation, reaches members
//! of the target cluster that never met the origin, and is refused when the
//! markings forbid it — at the forwarder and again at the receiver.

use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, pb};
use tonic::Code;

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
const EU: &str = "cert-eu";

async fn cluster_of(fed: &TestFederation, convener: &str, name: &str, members: &[&str]) -> String {
    let id = fed
        .admin(convener)
        .cluster_create(pb::ClusterCreateRequest {
            name: name.into(),
            purpose: "reshare test".into(),
            levels: vec![pb::Level::Technical as i32],
            max_tlp: pb::Tlp::Amber as i32,
            history: pb::HistoryRule::SinceJoin as i32,
            exercise: false,
        })
        .await
        .expect("create")
        .into_inner()
        .id;
    for org in members {
        fed.admin(convener)
            .cluster_invite(pb::ClusterInviteRequest {
                cluster: id.clone(),
                org: org.to_string(),
                role: pb::ClusterRole::Member as i32,
                endpoint: fed.info(org).endpoint.clone(),
            })
            .await
            .expect("invite");
        assert_eventually!(
            fed.cluster(org, &id)
                .await
                .is_some_and(|c| c.my_state == "invited"),
            "{org} never saw the invitation"
        );
        fed.admin(org)
            .cluster_accept(pb::ClusterRef {
                cluster: id.clone(),
            })
            .await
            .expect("accept");
    }
    for org in members {
        assert_eventually!(
            fed.cluster(convener, &id).await.is_some_and(|c| c
                .members
                .iter()
                .any(|m| m.org == *org && m.state == "member"))
                && fed.cluster(org, &id).await.is_some_and(|c| {
                    c.members.iter().filter(|m| m.state == "member").count() == members.len() + 1
                }),
            "{org} did not converge on {id}"
        );
    }
    id
}

fn message(text: &str, tlp: pb::Tlp, cluster: &str) -> pb::PublishRequest {
    let mut r = bluewire_tests::free_text(text);
    r.cluster = cluster.into();
    r.marking = Some(pb::Marking {
        tlp: tlp as i32,
        ..Default::default()
    });
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reshare_reaches_the_other_cluster_with_the_origins_signature() {
    // No static peers: cert-eu never meets csirt-be directly.
    let fed = TestFederation::new_without_peers(&[
        OrgSpec::csirt(BE, "BE"),
        OrgSpec::csirt(FR, "FR"),
        OrgSpec::new(EU, "EU", "eu-body", &[bluewire_node::pki::Level::Technical]),
    ])
    .await;
    let a = cluster_of(&fed, BE, "source", &[FR]).await;
    let b = cluster_of(&fed, FR, "onward", &[EU]).await;

    let green = fed
        .client(BE, "analyst")
        .client()
        .publish(message("shareable IOCs", pb::Tlp::Green, &a))
        .await
        .expect("publish GREEN")
        .into_inner();
    let amber = fed
        .client(BE, "analyst")
        .client()
        .publish(message("not for onward sharing", pb::Tlp::Amber, &a))
        .await
        .expect("publish AMBER")
        .into_inner();
    assert_eventually!(
        fed.has_message(FR, &green.id).await && fed.has_message(FR, &amber.id).await,
        "csirt-fr never received both messages"
    );
    assert!(!fed.has_message(EU, &green.id).await);

    // AMBER is refused at the forwarder, with the reason.
    let e = fed
        .client(FR, "analyst")
        .client()
        .reshare(pb::ReshareRequest {
            message_id: amber.id.clone(),
            to_cluster: b.clone(),
        })
        .await
        .expect_err("TLP:AMBER must not be re-shared");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("TLP:AMBER"), "{}", e.message());

    // GREEN goes through: cert-eu gets csirt-be's exact signed content.
    let r = fed
        .client(FR, "analyst")
        .client()
        .reshare(pb::ReshareRequest {
            message_id: green.id.clone(),
            to_cluster: b.clone(),
        })
        .await
        .expect("GREEN may be re-shared")
        .into_inner();
    assert_eq!(r.queued_for, [EU]);
    assert_eventually!(
        fed.has_message(EU, &green.id).await,
        "cert-eu never received the re-share"
    );
    let at_eu = fed
        .client(EU, "analyst")
        .client()
        .get(pb::GetRequest {
            id: green.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let at_fr = fed
        .client(FR, "analyst")
        .client()
        .get(pb::GetRequest {
            id: green.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let (e_eu, e_fr) = (at_eu.envelope.unwrap(), at_fr.envelope.unwrap());
    assert_eq!(
        e_eu.content, e_fr.content,
        "the origin's bytes travel unchanged"
    );
    assert_eq!(e_eu.signature, e_fr.signature);
    assert_eq!(at_eu.signer_org, BE);
    assert_eq!(at_eu.received_from, FR);
    let f = at_eu.forwarded.expect("the attestation is shown");
    assert_eq!(
        (f.forwarder_org.as_str(), f.to_cluster.as_str()),
        (FR, b.as_str())
    );
    assert!(!fed.has_message(EU, &amber.id).await);
}

/// A forwarder that ignores the marking rules is stopped at the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_reshare_of_amber_is_rejected_at_ingress() {
    let fed = TestFederation::new_without_peers(&[
        OrgSpec::csirt(BE, "BE"),
        OrgSpec::csirt(FR, "FR"),
        OrgSpec::new(EU, "EU", "eu-body", &[bluewire_node::pki::Level::Technical]),
    ])
    .await;
    let a = cluster_of(&fed, BE, "source", &[FR]).await;
    let b = cluster_of(&fed, FR, "onward", &[EU]).await;
    let amber = fed
        .client(BE, "analyst")
        .client()
        .publish(message("not for onward sharing", pb::Tlp::Amber, &a))
        .await
        .unwrap()
        .into_inner();
    assert_eventually!(
        fed.has_message(FR, &amber.id).await,
        "csirt-fr never got it"
    );
    let original = fed
        .client(FR, "analyst")
        .client()
        .get(pb::GetRequest {
            id: amber.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope
        .unwrap();
    let head = fed.cluster(FR, &b).await.unwrap().head_index;
    let attestation = pb::ForwardAttestation {
        message_id: amber.id.clone(),
        forwarder_org: FR.into(),
        to_cluster: b.clone(),
        cluster_index: head,
        at_ms: original_created(&original),
        content_hash: bluewire_node::envelope::content_hash(&original.content),
    };
    let be_cert = std::fs::read_to_string(fed.info(BE).dir.join("node.crt")).unwrap();
    let be_der = bluewire_node::pki::load_certs_pem(&be_cert).unwrap()[0].to_vec();
    let forged =
        bluewire_node::envelope::attest(&fed.signing_key(FR), &original, &attestation, be_der);
    let r = fed
        .node_conn(FR, EU)
        .federation()
        .deliver(pb::DeliverRequest {
            envelopes: vec![forged],
            ..Default::default()
        })
        .await
        .expect("the call itself succeeds")
        .into_inner();
    let r = &r.results[0];
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("TLP:AMBER"), "{}", r.reason);
    assert!(!fed.has_message(EU, &amber.id).await);
}

fn original_created(env: &pb::Envelope) -> i64 {
    use prost::Message;
    pb::Content::decode(&env.content[..])
        .map(|c| c.created_at_ms)
        .unwrap_or(0)
}
