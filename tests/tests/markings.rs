//! Marking changes and retractions travel as origin-signed messages: a
//! retracted message leaves every receiver's feeds and queries; a marking can
//! be raised by a receiver but lowered only by the origin.

use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, backlog, item_id, pb};
use tonic::Code;

fn retraction(target: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::Retraction as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Clear as i32,
            ..Default::default()
        }),
        body: Some(pb::publish_request::Body::Retraction(pb::Retraction {
            target_id: target.into(),
            reason: "false positive".into(),
        })),
        ..Default::default()
    }
}

fn marking_change(target: &str, tlp: pb::Tlp) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::MarkingChange as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Clear as i32,
            ..Default::default()
        }),
        body: Some(pb::publish_request::Body::MarkingChange(
            pb::MarkingChange {
                target_id: target.into(),
                marking: Some(pb::Marking {
                    tlp: tlp as i32,
                    ..Default::default()
                }),
                reason: "sensitivity reassessed".into(),
            },
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retraction_by_the_origin_removes_the_message_everywhere() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let m = fed.publish("csirt-be", "wrong IOC list").await;
    let fr = fed.client("csirt-fr", "analyst");
    assert_eventually!(
        backlog(&fr, Some("csirt-be"))
            .await
            .iter()
            .any(|i| item_id(i) == m.id),
        "csirt-fr never received the message"
    );

    // Only the origin may retract.
    let e = fr
        .client()
        .publish(retraction(&m.id))
        .await
        .expect_err("a receiver cannot retract another organisation's message");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("only the origin"), "{}", e.message());

    let r = fed
        .client("csirt-be", "analyst")
        .client()
        .publish(retraction(&m.id))
        .await
        .expect("the origin retracts")
        .into_inner();
    assert_eq!(r.queued_for, ["csirt-fr"]);
    for org in ["csirt-be", "csirt-fr"] {
        let c = fed.client(org, "analyst");
        assert_eventually!(
            !backlog(&c, None).await.iter().any(|i| item_id(i) == m.id),
            "the retracted message is still in {org}'s feed"
        );
        let e = c
            .client()
            .get(pb::GetRequest { id: m.id.clone() })
            .await
            .expect_err("a retracted message leaves queries");
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().contains("retracted"), "{}", e.message());
        // The retraction itself is in the feed, so subscribers learn of it.
        assert!(
            backlog(&c, None).await.iter().any(|i| item_id(i) == r.id),
            "{org} does not show the retraction"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn markings_are_raised_by_anyone_and_lowered_only_by_the_origin() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let m = fed.publish("csirt-be", "indicator set").await; // TLP:GREEN
    let fr = fed.client("csirt-fr", "analyst");
    assert_eventually!(
        backlog(&fr, Some("csirt-be"))
            .await
            .iter()
            .any(|i| item_id(i) == m.id),
        "csirt-fr never received the message"
    );
    // A receiver may raise it...
    fr.client()
        .publish(marking_change(&m.id, pb::Tlp::Amber))
        .await
        .expect("raising a marking is allowed");
    let effective = |items: Vec<pb::FeedItem>| {
        items
            .into_iter()
            .find(|i| item_id(i) == m.id)
            .and_then(|i| i.effective_marking)
            .map(|m| m.tlp)
    };
    let be = fed.client("csirt-be", "analyst");
    assert_eventually!(
        effective(backlog(&be, None).await) == Some(pb::Tlp::Amber as i32),
        "the origin did not apply the raise"
    );
    // ...but not lower it.
    let e = fr
        .client()
        .publish(marking_change(&m.id, pb::Tlp::Clear))
        .await
        .expect_err("a receiver cannot lower a marking");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    // The origin can.
    be.client()
        .publish(marking_change(&m.id, pb::Tlp::Green))
        .await
        .expect("the origin lowers its own marking");
    assert_eventually!(
        effective(backlog(&fr, None).await) == Some(pb::Tlp::Green as i32),
        "csirt-fr did not apply the origin's change"
    );
    // The signed envelope never changes: the original marking is intact.
    let item = fr
        .client()
        .get(pb::GetRequest { id: m.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        item.content.unwrap().marking.unwrap().tlp,
        pb::Tlp::Green as i32
    );
}
