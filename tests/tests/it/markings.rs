//! Marking changes and retractions travel as origin-signed messages: a
//! retracted message leaves every receiver's feeds and queries; a marking can
//! be raised by a receiver but lowered only by the origin; a receiver's raise
//! is kept per organisation, so the origin's lowering does not undo it.

use bluewire_tests::{
    OrgSpec, TestFederation, assert_eventually, backlog, item_id, marking_request, pb,
    retraction_request,
};
use tonic::Code;

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
        .publish(retraction_request(&m.id))
        .await
        .expect_err("a receiver cannot retract another organisation's message");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("only the origin"), "{}", e.message());

    let r = fed
        .client("csirt-be", "analyst")
        .client()
        .publish(retraction_request(&m.id))
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
        .publish(marking_request(&m.id, pb::Tlp::Amber))
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
    // ...but not lower it below what the origin set.
    let e = fr
        .client()
        .publish(marking_request(&m.id, pb::Tlp::Clear))
        .await
        .expect_err("a receiver cannot lower a marking");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(e.message().contains("only the origin"), "{}", e.message());
    // The origin can lower its own marking, but a raise by another organisation is
    // kept per organisation: csirt-fr's AMBER still stands everywhere...
    be.client()
        .publish(marking_request(&m.id, pb::Tlp::Clear))
        .await
        .expect("the origin lowers its own marking");
    let origin_lowered = |items: Vec<pb::FeedItem>| {
        items
            .into_iter()
            .filter_map(|i| i.content)
            .any(|c| match c.body {
                Some(pb::content::Body::MarkingChange(x)) => {
                    x.target_id == m.id
                        && c.origin_org == "csirt-be"
                        && x.marking.is_some_and(|k| k.tlp == pb::Tlp::Clear as i32)
                }
                _ => false,
            })
    };
    assert_eventually!(
        origin_lowered(backlog(&fr, None).await),
        "csirt-fr never received the origin's change"
    );
    assert_eq!(
        effective(backlog(&fr, None).await),
        Some(pb::Tlp::Amber as i32)
    );
    assert_eq!(
        effective(backlog(&be, None).await),
        Some(pb::Tlp::Amber as i32)
    );
    // ...until csirt-fr itself withdraws it.
    // Below the message's signed marking is a lowering, which only the origin may do...
    let e = fr
        .client()
        .publish(marking_request(&m.id, pb::Tlp::Clear))
        .await
        .expect_err("csirt-fr cannot go below the signed TLP:GREEN");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // ...but marking it at its signed level withdraws csirt-fr's raise.
    fr.client()
        .publish(marking_request(&m.id, pb::Tlp::Green))
        .await
        .expect("csirt-fr withdraws its raise at the message's signed marking");
    assert_eventually!(
        effective(backlog(&be, None).await) == Some(pb::Tlp::Clear as i32),
        "csirt-be did not apply csirt-fr's withdrawal"
    );
    assert_eventually!(
        effective(backlog(&fr, None).await) == Some(pb::Tlp::Clear as i32),
        "csirt-fr's own view did not follow"
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
