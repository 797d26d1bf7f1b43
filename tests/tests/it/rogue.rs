//! A hostile federation member is refused. The rogue is a real organisation
//! (csirt-fr, sometimes cert-eu or csirt-be) with a valid node certificate
//! and signing key that crafts its own correctly signed envelopes and calls
//! another node's `Federation` service directly, ignoring every rule its own
//! node would apply before sending. This file proves that:
//!
//! - the five cases of the issue are refused with a reason and change
//!   nothing for anyone else:
//!   1. undoing a retraction: a retraction of csirt-be's retracted message
//!      signed by csirt-fr is refused (`control-authority`); one addressed to
//!      a csirt-fr "copy" does not un-retract it; the message stays retracted
//!      at csirt-be and cert-eu (Client.Get NOT_FOUND, not in the feed);
//!   2. squatting an id: csirt-fr's own message under cert-eu's message id,
//!      delivered to csirt-be before csirt-be joins the (full-history)
//!      cluster, does not shadow cert-eu's real message: both are stored, Get
//!      "ORIGIN/ID" answers each, a bare Get names both origins;
//!   3. an observer posting into a cluster is refused (`cluster-role`);
//!   4. a former member backdating a message into its old membership is
//!      refused once the grace has passed (`cluster-membership`), while with
//!      the default grace a message sealed or published just before leaving
//!      still arrives;
//!   5. claiming another organisation's author is refused (`author`);
//! - every ingress rule refuses an envelope crafted to violate it (and only
//!   it), under its own name in the audit trail, with the refusal in
//!   Admin.Rejections, nothing stored, and the node still serving; the
//!   lawful counterparts (a raise, the origin's own retraction, a GREEN
//!   re-share) are accepted, and a raise by another organisation stays in
//!   force when the origin later lowers its marking;
//! - the other federation calls answer only what the caller may have:
//!   Backfill returns only messages the caller may receive, ClusterLog is
//!   PERMISSION_DENIED to a non-member, ProposeClusterOp of another
//!   organisation's operation is PERMISSION_DENIED, and a re-share
//!   attestation the calling peer did not sign for itself is refused
//!   (`origin`).

use bluewire_node::envelope::seal;
use bluewire_node::pki::Level;
use bluewire_node::signing::SigningKey;
use bluewire_tests::clusters::{create, create_with, join, leave, ok, signed_op};
use bluewire_tests::rogue::{
    Failures, Rogue, audit_export, check_retracted, effective_tlp, feed_keys, get, get_ref,
    install_local_policy, node_cert_der, origin_and_id, outcome_name, stored, stored_envelope,
    title_of,
};
use bluewire_tests::{
    FedOptions, OrgSpec, TestFederation, assert_eventually, free_text, marking_request, pb,
    retraction_request,
};
use pb::{ClusterRole as Role, HistoryRule};
use tonic::Code;

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
const EU: &str = "cert-eu";

/// csirt-be (technical and operational), csirt-fr and cert-eu (technical).
fn specs() -> Vec<OrgSpec> {
    vec![
        OrgSpec::new(BE, "BE", "csirt", &[Level::Technical, Level::Operational]),
        OrgSpec::csirt(FR, "FR"),
        OrgSpec::new(EU, "EU", "eu-body", &[Level::Technical]),
    ]
}

/// The three organisations, cluster logs pulled every 200 ms.
async fn federation(opts: FedOptions) -> TestFederation {
    TestFederation::with_options(&specs(), opts).await
}

fn fast() -> FedOptions {
    FedOptions::fast_cluster_sync()
}

/// Wait until (origin, id) is stored at every org in `at`.
async fn await_stored(fed: &TestFederation, at: &[&str], origin: &str, id: &str) {
    for org in at {
        assert_eventually!(
            stored(fed, org, origin, id).is_some(),
            "{origin}/{id} never reached {org}; rejections there: {:?}",
            fed.rejections(org).await
        );
    }
}

/// Wait until `from` has nothing queued for any org in `to`: every Deliver
/// of what it published was answered, so receivers have applied it (a
/// control message takes effect before the receiver answers).
async fn await_drained(fed: &TestFederation, from: &str, to: &[&str]) {
    for org in to {
        assert_eventually!(
            fed.peers(from)
                .await
                .iter()
                .any(|p| p.org == *org && p.outbox_depth == 0),
            "{from} still has messages queued for {org}: {:?}",
            fed.peers(from).await
        );
    }
}

/// Publish `req` at `org` as its analyst; panics on error.
async fn publish(fed: &TestFederation, org: &str, req: pb::PublishRequest) -> pb::PublishResponse {
    fed.client(org, "analyst")
        .client()
        .publish(req)
        .await
        .unwrap_or_else(|e| panic!("publish at {org}: {:?} {}", e.code(), e.message()))
        .into_inner()
}

/// Free text with the given TLP and explicit recipients.
fn marked(text: &str, tlp: pb::Tlp, recipients: &[&str]) -> pb::PublishRequest {
    let mut r = free_text(text);
    r.marking = Some(pb::Marking {
        tlp: tlp as i32,
        ..Default::default()
    });
    r.recipients = recipients.iter().map(|s| s.to_string()).collect();
    r
}

/// The body of an envelope's content.
fn body_of(env: &pb::Envelope) -> Option<pb::content::Body> {
    use prost::Message;
    pb::Content::decode(&env.content[..]).ok()?.body
}

/// Client.Get of "ORIGIN/ID" at `org` answers the content with this title.
async fn check_get_title(
    fed: &TestFederation,
    org: &str,
    origin: &str,
    id: &str,
    title: &str,
) -> Result<(), String> {
    let item = get_ref(fed, org, origin, id).await?;
    let c = bluewire_tests::item_content(&item);
    if c.origin_org == origin && title_of(&c) == title {
        Ok(())
    } else {
        Err(format!(
            "Client.Get {origin}/{id} at {org} answered {}'s {:?}, not {origin}'s {title:?}",
            c.origin_org,
            title_of(&c)
        ))
    }
}

/// A later message from `from` still reaches every org in `to` (the
/// refusals cut nobody off).
async fn still_flows(fed: &TestFederation, from: &str, to: &[&str]) {
    let m = fed
        .publish(from, &format!("{from} after the refusals"))
        .await;
    await_stored(fed, to, from, &m.id).await;
}

// ---------------------------------------------------------------------------
// The five cases of the issue.

/// Cases 1 and 5: undoing a retraction, and claiming another
/// organisation's author.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undoing_a_retraction_and_claiming_another_organisations_author_are_refused() {
    let fed = federation(FedOptions::default()).await;
    let mut f = Failures::new();

    // csirt-be publishes M and retracts it through its Client API.
    let m = fed.publish(BE, "wrong IOC list").await;
    await_stored(&fed, &[FR, EU], BE, &m.id).await;
    let r = publish(&fed, BE, retraction_request(&m.id)).await;
    await_stored(&fed, &[FR, EU], BE, &r.id).await;
    await_drained(&fed, BE, &[FR, EU]).await;
    for org in [BE, EU] {
        f.check(check_retracted(&fed, org, BE, &m.id).await);
    }
    // The retraction csirt-be's node signed names the target's origin.
    let signed = stored_envelope(&fed, EU, BE, &r.id);
    match body_of(&signed) {
        Some(pb::content::Body::Retraction(x)) => f.ensure(x.target_origin == BE, || {
            format!(
                "csirt-be's retraction names target_origin {:?}",
                x.target_origin
            )
        }),
        other => f.ensure(false, || {
            format!("csirt-be's retraction has body {other:?}")
        }),
    }

    let rogue = Rogue::new(&fed, FR);
    // Its own signed retraction of M, naming csirt-be as the origin.
    let undo = rogue.retraction(BE, &m.id);
    for to in [BE, EU] {
        f.check(
            rogue
                .check_refused(to, &undo, "control-authority", "retract")
                .await,
        );
    }
    // ... and one addressed to a csirt-fr "copy" of M that does not exist.
    // csirt-fr may retract its own messages, even one the receiver does not hold (a
    // retraction may arrive before its target), so this is accepted, and it touches
    // nothing of csirt-be's (checked below).
    let own = rogue.retraction(FR, &m.id);
    for to in [BE, EU] {
        f.check(rogue.check_accepted(to, &own).await);
    }
    // Replaying csirt-be's original M (csirt-fr received it) is not its to send.
    let original = stored_envelope(&fed, FR, BE, &m.id);
    for to in [BE, EU] {
        f.check(rogue.check_refused(to, &original, "origin", "").await);
    }
    // M stays retracted everywhere; the origin's retraction is still shown.
    for org in [BE, EU] {
        f.check(check_retracted(&fed, org, BE, &m.id).await);
        let keys = feed_keys(&fed, org).await;
        f.ensure(keys.contains(&(BE.to_string(), r.id.clone())), || {
            format!("{org} no longer shows csirt-be's retraction {}", r.id)
        });
    }

    // Case 5: csirt-fr signs as the head of CERT-EU.
    let mut c = rogue.content("statement of the head of CERT-EU");
    c.author = format!("{EU}/head-of-cert");
    for to in [BE, EU] {
        f.check(rogue.check_refused(to, &c, "author", "author").await);
    }

    // Nothing changed for anyone else: csirt-fr's lawful traffic still flows.
    still_flows(&fed, FR, &[BE, EU]).await;
    still_flows(&fed, BE, &[FR, EU]).await;
    f.finish("undoing a retraction / claiming an author");
}

/// Case 2: squatting another organisation's message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn squatting_an_id_does_not_shadow_the_real_message() {
    let fed = federation(fast()).await;
    let mut f = Failures::new();
    let k = create(&fed, EU, "squat", HistoryRule::Full).await.id;
    join(&fed, EU, EU, &k, FR, Role::Member, &[FR]).await;
    let m = fed
        .publish_to_cluster(EU, &k, "the real M")
        .await
        .expect("cert-eu publishes M");
    await_stored(&fed, &[FR], EU, &m.id).await;

    // csirt-fr publishes its own message under M's id, to csirt-be (not yet
    // in the cluster) and to cert-eu itself. It is csirt-fr's message: it
    // is stored as such, beside (never instead of) cert-eu's.
    let rogue = Rogue::new(&fed, FR);
    let mut squat = rogue.content("squatted M");
    squat.id = m.id.clone();
    for to in [BE, EU] {
        f.check(rogue.check_accepted(to, &squat).await);
    }

    // csirt-be joins; with the full history rule cert-eu's real M reaches it.
    join(&fed, EU, EU, &k, BE, Role::Member, &[FR, BE]).await;
    await_stored(&fed, &[BE], EU, &m.id).await;

    for org in [BE, EU] {
        f.check(check_get_title(&fed, org, EU, &m.id, "the real M").await);
        f.check(check_get_title(&fed, org, FR, &m.id, "squatted M").await);
        match get(&fed, org, &m.id).await {
            Err(e)
                if e.code() == Code::InvalidArgument
                    && e.message().contains(EU)
                    && e.message().contains(FR) => {}
            Err(e) => f.ensure(false, || {
                format!(
                    "bare Get {} at {org}: {:?} {:?}, not INVALID_ARGUMENT naming {EU} and {FR}",
                    m.id,
                    e.code(),
                    e.message()
                )
            }),
            Ok(item) => f.ensure(false, || {
                format!(
                    "bare Get {} at {org} answered {}'s message instead of INVALID_ARGUMENT",
                    m.id,
                    bluewire_tests::item_content(&item).origin_org
                )
            }),
        }
        let keys = feed_keys(&fed, org).await;
        for origin in [EU, FR] {
            f.ensure(keys.contains(&(origin.to_string(), m.id.clone())), || {
                format!("{origin}/{} is not in {org}'s feed", m.id)
            });
        }
    }
    // A squat that claims cert-eu as its origin is refused outright.
    let mut forged = squat.clone();
    forged.origin_org = EU.into();
    forged.author = format!("{EU}/analyst");
    f.check(rogue.check_refused(BE, &forged, "origin", "").await);
    f.check(check_get_title(&fed, BE, EU, &m.id, "the real M").await);

    still_flows(&fed, EU, &[BE, FR]).await;
    f.finish("squatting an id");
}

/// Cases 3 and 4: an observer posting, and a former member backdating into
/// its old membership once the grace (0 s here) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn observer_posting_and_former_member_backdating_are_refused() {
    let fed = federation(FedOptions {
        former_member_grace_secs: Some(0),
        ..fast()
    })
    .await;
    let mut f = Failures::new();
    let rogue = Rogue::new(&fed, FR);

    // Case 3: csirt-fr observes the cluster; cert-eu is a member.
    let obs = create(&fed, BE, "observed", HistoryRule::SinceJoin)
        .await
        .id;
    join(&fed, BE, BE, &obs, FR, Role::Observer, &[FR]).await;
    join(&fed, BE, BE, &obs, EU, Role::Member, &[FR, EU]).await;
    let head = fed.await_cluster_head(&obs, BE, &[FR, EU]).await.head_index;
    let post = rogue.in_cluster(&obs, head, "an observer speaks");
    for to in [BE, EU] {
        f.check(
            rogue
                .check_refused(to, &post, "cluster-role", "observer")
                .await,
        );
    }
    // Observers still receive; members still publish.
    let member = fed
        .publish_to_cluster(EU, &obs, "a member speaks")
        .await
        .expect("a member publishes");
    await_stored(&fed, &[BE, FR], EU, &member.id).await;

    // Case 4: csirt-fr was a member, then left.
    let former = create(&fed, BE, "former", HistoryRule::SinceJoin).await.id;
    join(&fed, BE, BE, &former, FR, Role::Member, &[FR]).await;
    join(&fed, BE, BE, &former, EU, Role::Member, &[FR, EU]).await;
    let log = fed.cluster_log(BE, &former).await;
    let accepted = log
        .iter()
        .find(|l| l.actor == FR && l.op.contains("accept"))
        .unwrap_or_else(|| panic!("no acceptance by {FR} in {former}'s log: {log:?}"))
        .clone();
    ok(leave(&fed, FR, &former).await, "csirt-fr leaves");
    fed.await_cluster_head(&former, BE, &[EU]).await;
    let mut backdated = rogue.in_cluster(&former, accepted.index, "backdated after leaving");
    backdated.created_at_ms = accepted.at_ms + 1;
    for to in [BE, EU] {
        f.check(
            rogue
                .check_refused(to, &backdated, "cluster-membership", &former)
                .await,
        );
    }
    // Not backdated: sent after its membership ended.
    let late = rogue.in_cluster(&former, accepted.index, "sent after leaving");
    for to in [BE, EU] {
        f.check(
            rogue
                .check_refused(to, &late, "cluster-membership", &former)
                .await,
        );
    }
    // Nothing changed for the remaining members.
    let after = fed
        .publish_to_cluster(EU, &former, "members carry on")
        .await
        .expect("cert-eu publishes");
    await_stored(&fed, &[BE], EU, &after.id).await;
    f.ensure(stored(&fed, FR, EU, &after.id).is_none(), || {
        "the former member still receives the cluster's messages".into()
    });
    still_flows(&fed, FR, &[BE, EU]).await;
    f.finish("observer posting / former member backdating");
}

// ---------------------------------------------------------------------------
// One refusal per ingress rule.

const POLICY: &str = r#"@id("no-amber-strict-from-fr")
@reason("we take AMBER+STRICT from csirt-fr only through the liaison desk")
forbid (principal == Org::"csirt-fr", action == Action::"deliver", resource)
when { context.direction == "ingress" && context.tlp == "AMBER+STRICT" };
"#;

fn with_tlp(mut c: pb::Content, tlp: pb::Tlp) -> pb::Content {
    c.marking.get_or_insert_with(Default::default).tlp = tlp as i32;
    c
}

/// A refused case: who sends what to whom, the rule that must refuse it
/// and what its reason must mention.
struct Case<'r, 'f> {
    what: &'static str,
    by: &'r Rogue<'f>,
    to: &'static str,
    sent: pb::Envelope,
    rule: &'static str,
    needle: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_ingress_rule_refuses_the_envelope_that_violates_it() {
    use pb::{Kind as K, Level as L, Tlp as T};
    let fed = federation(fast()).await;
    // csirt-be's operator forbids AMBER+STRICT from csirt-fr (local-policy).
    install_local_policy(&fed, BE, POLICY).await;

    // "members": csirt-fr and cert-eu are members, technical, up to TLP:RED.
    let members = create_with(
        &fed,
        BE,
        pb::ClusterCreateRequest {
            name: "members".into(),
            purpose: "rogue tests".into(),
            levels: vec![L::Technical as i32],
            max_tlp: T::Red as i32,
            history: HistoryRule::SinceJoin as i32,
            exercise: false,
        },
    )
    .await
    .id;
    join(&fed, BE, BE, &members, FR, Role::Member, &[FR]).await;
    join(&fed, BE, BE, &members, EU, Role::Member, &[FR, EU]).await;
    // "observed": csirt-fr observes, cert-eu is a member, up to TLP:GREEN.
    let observed = create_with(
        &fed,
        BE,
        pb::ClusterCreateRequest {
            name: "observed".into(),
            purpose: "rogue tests".into(),
            levels: vec![L::Technical as i32],
            max_tlp: T::Green as i32,
            history: HistoryRule::SinceJoin as i32,
            exercise: false,
        },
    )
    .await
    .id;
    join(&fed, BE, BE, &observed, FR, Role::Observer, &[FR]).await;
    join(&fed, BE, BE, &observed, EU, Role::Member, &[FR, EU]).await;
    // "former": csirt-fr is a member and leaves (default grace: 600 s).
    let former = create(&fed, BE, "former", HistoryRule::SinceJoin).await.id;
    join(&fed, BE, BE, &former, FR, Role::Member, &[FR]).await;
    join(&fed, BE, BE, &former, EU, Role::Member, &[FR, EU]).await;

    let fr = Rogue::new(&fed, FR);
    let eu = Rogue::new(&fed, EU);
    let mut f = Failures::new();

    // Before leaving "former", csirt-fr seals one message and publishes another.
    let former_head = fed.cluster(FR, &former).await.unwrap().head_index;
    let sealed_before = fr.seal(&fr.in_cluster(&former, former_head, "sealed before leaving"));
    let published_before = fed
        .publish_to_cluster(FR, &former, "published just before leaving")
        .await
        .expect("csirt-fr publishes before leaving");
    ok(leave(&fed, FR, &former).await, "csirt-fr leaves");
    let former_now = fed.await_cluster_head(&former, BE, &[EU]).await.head_index;

    // Messages csirt-be publishes lawfully, for the control-message cases.
    let m_green = fed.publish(BE, "green from csirt-be").await;
    let m_amber = publish(&fed, BE, marked("amber from csirt-be", T::Amber, &[])).await;
    let m_red = publish(&fed, BE, marked("red for cert-eu", T::Red, &[EU])).await;
    let f_own = fed.publish(FR, "csirt-fr's own").await;
    await_stored(&fed, &[FR, EU], BE, &m_green.id).await;
    await_stored(&fed, &[FR, EU], BE, &m_amber.id).await;
    await_stored(&fed, &[EU], BE, &m_red.id).await;
    await_stored(&fed, &[BE, EU], FR, &f_own.id).await;

    let members_head = fed.cluster(FR, &members).await.unwrap().head_index;
    let observed_head = fed.cluster(EU, &observed).await.unwrap().head_index;
    let be_key = fed.signing_key(BE);
    let be_cert = node_cert_der(&fed, BE);
    // A message of csirt-be's that csirt-fr re-shares into "members" (to cert-eu).
    let reshared = |text: &str, tlp: T, recipients: &[&str], no_reshare: bool| {
        let mut c = with_tlp(bluewire_tests::content(BE, text), tlp);
        c.recipients = recipients.iter().map(|s| s.to_string()).collect();
        c.no_reshare = no_reshare;
        fr.forward(&seal(&be_key, &c), &members, members_head, be_cert.clone())
    };

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |what, by, to, sent, rule, needle: &str| {
        cases.push(Case {
            what,
            by,
            to,
            sent,
            rule,
            needle: needle.to_string(),
        })
    };

    // signature
    let stranger = SigningKey::generate(FR).expect("generate a key");
    add(
        "signed by a key no certificate carries",
        &fr,
        BE,
        seal(&stranger, &fr.content("uncertified key")),
        "signature",
        "unknown signing key",
    );
    let mut bad_sig = fr.seal(&fr.content("bad signature"));
    bad_sig.signature = {
        let mut b = bad_sig.signature.to_vec();
        b[0] ^= 0xff;
        b.into()
    };
    add(
        "altered signature",
        &fr,
        BE,
        bad_sig,
        "signature",
        "does not verify",
    );
    // size
    let mut big = fr.content("too large");
    big.body = Some(pb::content::Body::FreeText(pb::FreeText {
        title: "too large".into(),
        body: "x".repeat(1024 * 1024 + 4096),
    }));
    add(
        "content over 1 MiB",
        &fr,
        BE,
        fr.seal(&big),
        "size",
        "limit",
    );
    // content
    let mut v4 = fr.content("not a UUIDv7");
    v4.id = "2f1d8a0e-4b7c-4c1e-9a51-0d6b3c9f7e21".into();
    add(
        "id not a UUIDv7",
        &fr,
        BE,
        fr.seal(&v4),
        "content",
        "UUIDv7",
    );
    let mut no_title = fr.content("incident without a title");
    no_title.kind = K::IncidentReport as i32;
    add(
        "incident kind with a free-text body",
        &fr,
        BE,
        fr.seal(&no_title),
        "content",
        "incident",
    );
    let mut tlp42 = fr.marking_change(BE, &f_own.id, pb::Tlp::Amber);
    if let Some(pb::content::Body::MarkingChange(m)) = &mut tlp42.body {
        m.marking = Some(pb::Marking {
            tlp: 42,
            ..Default::default()
        });
    }
    add(
        "marking change to TLP 42",
        &fr,
        BE,
        fr.seal(&tlp42),
        "content",
        "TLP 2.0",
    );
    // freshness
    let mut expired = fr.content("expired");
    expired.expires_at_ms = bluewire_tests::now_ms() - 60_000;
    add(
        "expired",
        &fr,
        BE,
        fr.seal(&expired),
        "freshness",
        "expired",
    );
    let mut future = fr.content("from the future");
    future.created_at_ms = bluewire_tests::now_ms() + 3_600_000;
    add(
        "created an hour ahead",
        &fr,
        BE,
        fr.seal(&future),
        "freshness",
        "future",
    );
    // origin
    let mut as_eu = fr.content("claims cert-eu as origin");
    as_eu.origin_org = EU.into();
    as_eu.author = format!("{EU}/analyst");
    add(
        "origin cert-eu, signed by csirt-fr",
        &fr,
        BE,
        fr.seal(&as_eu),
        "origin",
        EU,
    );
    add(
        "csirt-fr's message handed over by cert-eu without attestation",
        &eu,
        BE,
        fr.seal(&fr.content("relayed by cert-eu")),
        "origin",
        FR,
    );
    // author
    for (what, author) in [
        (
            "author of another organisation",
            format!("{EU}/head-of-cert"),
        ),
        ("author without a user", format!("{FR}/")),
        ("author without an organisation", "head-of-cert".to_string()),
        ("empty author", String::new()),
    ] {
        let mut c = fr.content(what);
        c.author = author;
        add(what, &fr, BE, fr.seal(&c), "author", "author");
    }
    // cluster-membership
    add(
        "not a member at the claimed index",
        &fr,
        BE,
        fr.seal(&fr.in_cluster(&members, 0, "before it joined")),
        "cluster-membership",
        "was not a member",
    );
    add(
        "claims the index after it left",
        &fr,
        BE,
        fr.seal(&fr.in_cluster(&former, former_now, "after leaving, current index")),
        "cluster-membership",
        "was not a member",
    );
    add(
        "sent after its membership ended",
        &fr,
        EU,
        fr.seal(&fr.in_cluster(&former, former_head, "after leaving, old index")),
        "cluster-membership",
        "after its membership",
    );
    add(
        "cluster the receiver does not know",
        &fr,
        BE,
        fr.seal(&fr.in_cluster("csirt-fr/nowhere", 0, "unknown cluster")),
        "cluster-membership",
        "unknown",
    );
    // cluster-role
    for to in [BE, EU] {
        add(
            "an observer posts",
            &fr,
            to,
            fr.seal(&fr.in_cluster(&observed, observed_head, "observer posts")),
            "cluster-role",
            "observer",
        );
    }
    // recipients
    let mut to_eu = fr.content("for cert-eu only");
    to_eu.recipients = vec![EU.into()];
    add(
        "explicit recipients without the receiver",
        &fr,
        BE,
        fr.seal(&to_eu),
        "recipients",
        "explicit recipients",
    );
    // levels
    let incident = |text: &str, level: L| {
        let mut c = fr.content(text);
        c.kind = K::IncidentReport as i32;
        c.level = level as i32;
        c.body = Some(pb::content::Body::Incident(pb::IncidentReport {
            title: text.into(),
            description: "crafted by a rogue member".into(),
            ..Default::default()
        }));
        c
    };
    add(
        "operational incident to a technical-only receiver",
        &fr,
        EU,
        fr.seal(&incident("operational incident", L::Operational)),
        "levels",
        "operational",
    );
    add(
        "incident at the political level",
        &fr,
        BE,
        fr.seal(&incident("political incident", L::Political)),
        "levels",
        "political",
    );
    let mut op_in_cluster =
        fr.in_cluster(&members, members_head, "operational in a technical cluster");
    op_in_cluster.level = L::Operational as i32;
    add(
        "level the cluster does not work at",
        &fr,
        BE,
        fr.seal(&op_in_cluster),
        "levels",
        "operational level",
    );
    // tlp
    add(
        "TLP:RED naming nobody",
        &fr,
        BE,
        fr.seal(&with_tlp(fr.content("red, names nobody"), T::Red)),
        "tlp",
        "TLP:RED",
    );
    add(
        "above the cluster's maximum TLP",
        &eu,
        BE,
        eu.seal(&with_tlp(
            eu.in_cluster(&observed, observed_head, "amber in a green cluster"),
            T::Amber,
        )),
        "tlp",
        "TLP:GREEN",
    );
    // classification
    let mut classified = with_tlp(fr.content("classified"), T::Amber);
    classified.marking.as_mut().unwrap().classification = "EU RESTRICTED".into();
    add(
        "classified for a receiver not accredited",
        &fr,
        BE,
        fr.seal(&classified),
        "classification",
        "EU RESTRICTED",
    );
    // scope
    let mut de = fr.content("scoped to DE");
    de.scope_countries = vec!["DE".into()];
    add(
        "scoped to another member state",
        &fr,
        BE,
        fr.seal(&de),
        "scope",
        "DE",
    );
    let mut energy = fr.content("scoped to energy");
    energy.scope_sectors = vec!["energy".into()];
    add(
        "scoped to another sector",
        &fr,
        BE,
        fr.seal(&energy),
        "scope",
        "energy",
    );
    // exercise
    let mut drill = fr.content("exercise, direct");
    drill.marking.as_mut().unwrap().exercise = true;
    add(
        "exercise traffic outside a cluster",
        &fr,
        BE,
        fr.seal(&drill),
        "exercise",
        "exercise",
    );
    let mut drill_in = fr.in_cluster(&members, members_head, "exercise in a real cluster");
    drill_in.marking.as_mut().unwrap().exercise = true;
    add(
        "exercise traffic in a non-exercise cluster",
        &fr,
        BE,
        fr.seal(&drill_in),
        "exercise",
        "exercise",
    );
    // local-policy
    add(
        "forbidden by the receiver's Cedar policy",
        &fr,
        BE,
        fr.seal(&with_tlp(fr.content("amber strict"), T::AmberStrict)),
        "local-policy",
        "no-amber-strict-from-fr",
    );
    // control-authority
    for to in [BE, EU] {
        add(
            "retraction of csirt-be's message by csirt-fr",
            &fr,
            to,
            fr.seal(&fr.retraction(BE, &m_green.id)),
            "control-authority",
            "retract",
        );
        add(
            "csirt-fr lowers csirt-be's marking",
            &fr,
            to,
            fr.seal(&fr.marking_change(BE, &m_amber.id, T::Green)),
            "control-authority",
            "lower",
        );
        add(
            "csirt-fr changes the marking of a message it may not see",
            &fr,
            to,
            fr.seal(&fr.marking_change(BE, &m_red.id, T::Red)),
            "control-authority",
            "",
        );
    }
    // reshare
    add(
        "re-share of TLP:AMBER",
        &fr,
        EU,
        reshared("amber, re-shared", T::Amber, &[], false),
        "reshare",
        "TLP:AMBER",
    );
    add(
        "re-share of TLP:AMBER+STRICT",
        &fr,
        EU,
        reshared("amber strict, re-shared", T::AmberStrict, &[], false),
        "reshare",
        "TLP:AMBER+STRICT",
    );
    add(
        "re-share of TLP:RED",
        &fr,
        EU,
        reshared("red, re-shared", T::Red, &[FR, EU], false),
        "reshare",
        "TLP:RED",
    );
    add(
        "re-share of a no_reshare message",
        &fr,
        EU,
        reshared("no reshare, re-shared", T::Green, &[], true),
        "reshare",
        "forbade",
    );

    // Every case over Deliver, then again over DeliverStream: the same rules, the same
    // refusals (nothing was stored the first time).
    let mut rules_seen = std::collections::BTreeSet::new();
    for over_stream in [false, true] {
        fr.deliver_over_stream(over_stream);
        eu.deliver_over_stream(over_stream);
        let via = if over_stream {
            "DeliverStream"
        } else {
            "Deliver"
        };
        for c in &cases {
            rules_seen.insert(c.rule);
            println!(
                "case: {} ({} -> {}, {}, {via})",
                c.what, c.by.org, c.to, c.rule
            );
            f.check(
                c.by.check_refused(c.to, &c.sent, c.rule, &c.needle)
                    .await
                    .map_err(|e| format!("[{} over {via}] {e}", c.what)),
            );
        }
    }
    fr.deliver_over_stream(false);
    eu.deliver_over_stream(false);
    let every_rule = [
        "signature",
        "size",
        "content",
        "freshness",
        "origin",
        "author",
        "cluster-membership",
        "cluster-role",
        "recipients",
        "levels",
        "tlp",
        "classification",
        "scope",
        "exercise",
        "local-policy",
        "control-authority",
        "reshare",
    ];
    assert!(
        every_rule.iter().all(|r| rules_seen.contains(r)),
        "a rule without a case: {every_rule:?} vs {rules_seen:?}"
    );

    // Lawful counterparts are accepted.
    // A former member's message from before it left, within the default grace.
    for to in [BE, EU] {
        f.check(fr.check_accepted(to, &sealed_before).await);
    }
    await_stored(&fed, &[BE, EU], FR, &published_before.id).await;
    // A re-share of TLP:GREEN.
    f.check(
        fr.check_accepted(EU, &reshared("green, re-shared", T::Green, &[], false))
            .await,
    );
    // csirt-fr retracts its own message.
    for to in [BE, EU] {
        f.check(fr.check_accepted(to, &fr.retraction(FR, &f_own.id)).await);
        f.check(check_retracted(&fed, to, FR, &f_own.id).await);
    }
    // csirt-fr raises csirt-be's GREEN message to AMBER; csirt-be then lowers
    // its own marking to CLEAR: the raise stays in force.
    let raise = with_tlp(fr.marking_change(BE, &m_green.id, T::Amber), T::Amber);
    for to in [BE, EU] {
        f.check(fr.check_accepted(to, &raise).await);
        let tlp = effective_tlp(&fed, to, BE, &m_green.id).await;
        f.ensure(tlp == Ok(T::Amber), || {
            format!(
                "after csirt-fr's raise, {BE}/{} at {to} is {tlp:?}, not AMBER",
                m_green.id
            )
        });
    }
    let lower = publish(&fed, BE, marking_request(&m_green.id, T::Clear)).await;
    await_stored(&fed, &[EU], BE, &lower.id).await;
    await_drained(&fed, BE, &[EU]).await;
    for org in [BE, EU] {
        let tlp = effective_tlp(&fed, org, BE, &m_green.id).await;
        f.ensure(tlp == Ok(T::Amber), || {
            format!(
                "after csirt-be lowered its marking to CLEAR, {BE}/{} at {org} is {tlp:?}: csirt-fr's raise to AMBER should stay in force",
                m_green.id
            )
        });
    }
    // A lowering addressed to a csirt-fr "copy" changes nothing of csirt-be's.
    let sideways = fr.marking_change(FR, &m_amber.id, T::Clear);
    for to in [BE, EU] {
        let r = fr.deliver(to, &sideways).await;
        println!(
            "csirt-fr lowers csirt-fr/{} at {to}: {} {:?}",
            m_amber.id,
            outcome_name(r.outcome),
            r.reason
        );
        let tlp = effective_tlp(&fed, to, BE, &m_amber.id).await;
        f.ensure(tlp == Ok(T::Amber), || {
            format!("{BE}/{} at {to} is {tlp:?}, not AMBER", m_amber.id)
        });
    }
    // csirt-be's messages were not retracted by the rogue.
    for to in [BE, EU] {
        f.ensure(
            get(&fed, to, &format!("{BE}/{}", m_green.id)).await.is_ok(),
            || format!("{BE}/{} is no longer readable at {to}", m_green.id),
        );
    }

    // Every refusal is audited under its rule (checked per case above) and
    // the audit trail still verifies.
    for org in [BE, EU] {
        let v = fed
            .admin(org)
            .audit_verify(pb::AuditVerifyRequest {})
            .await
            .expect("Admin.AuditVerify")
            .into_inner();
        f.ensure(v.ok, || {
            format!("audit trail at {org} does not verify: {v:?}")
        });
    }
    still_flows(&fed, EU, &[BE, FR]).await;
    f.finish("ingress rules");
}

// ---------------------------------------------------------------------------
// The other federation calls.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_federation_calls_answer_only_what_the_caller_may_have() {
    let fed = federation(fast()).await;
    let mut f = Failures::new();
    // "private": csirt-be and cert-eu. "onward": all three.
    let private = create(&fed, BE, "private", HistoryRule::SinceJoin).await.id;
    join(&fed, BE, BE, &private, EU, Role::Member, &[EU]).await;
    let onward = create(&fed, BE, "onward", HistoryRule::SinceJoin).await.id;
    join(&fed, BE, BE, &onward, FR, Role::Member, &[FR]).await;
    join(&fed, BE, BE, &onward, EU, Role::Member, &[FR, EU]).await;

    let green = fed.publish(BE, "green for all").await;
    let red = publish(&fed, BE, marked("red for cert-eu", pb::Tlp::Red, &[EU])).await;
    let amber_fr = publish(
        &fed,
        BE,
        marked("amber for csirt-fr", pb::Tlp::Amber, &[FR]),
    )
    .await;
    let in_private = fed
        .publish_to_cluster(BE, &private, "for the private cluster")
        .await
        .expect("publish into private");
    await_stored(&fed, &[FR, EU], BE, &green.id).await;
    await_stored(&fed, &[FR], BE, &amber_fr.id).await;
    await_stored(&fed, &[EU], BE, &red.id).await;
    await_stored(&fed, &[EU], BE, &in_private.id).await;

    let fr = Rogue::new(&fed, FR);
    let eu = Rogue::new(&fed, EU);
    let be = Rogue::new(&fed, BE);

    // Backfill: only what the caller may receive.
    let ids = |envs: Vec<pb::Envelope>| -> Vec<String> {
        envs.iter().map(|e| origin_and_id(e).1).collect()
    };
    let to_fr = ids(fr.backfill(BE).await.expect("Backfill for csirt-fr"));
    let to_eu = ids(eu.backfill(BE).await.expect("Backfill for cert-eu"));
    for (who, got, want, never) in [
        (
            FR,
            &to_fr,
            vec![&green.id, &amber_fr.id],
            vec![
                (&red.id, "the TLP:RED message for cert-eu"),
                (&in_private.id, "the message of a cluster it is not in"),
            ],
        ),
        (
            EU,
            &to_eu,
            vec![&green.id, &red.id, &in_private.id],
            vec![(&amber_fr.id, "the message for csirt-fr only")],
        ),
    ] {
        for id in want {
            f.ensure(got.contains(id), || {
                format!("Backfill for {who} misses {id}")
            });
        }
        for (id, what) in never {
            f.ensure(!got.contains(id), || {
                format!("Backfill hands {who} {what} ({id})")
            });
        }
    }

    // ClusterLog: not to an organisation that is not in the log.
    for at in [BE, EU] {
        match fr.cluster_log(at, &private).await {
            Err(e) if e.code() == Code::PermissionDenied => {}
            other => f.ensure(false, || {
                format!(
                    "ClusterLog of {private} for csirt-fr at {at}: {:?}, not PERMISSION_DENIED",
                    other
                        .map(|e| e.len())
                        .map_err(|e| (e.code(), e.message().to_string()))
                )
            }),
        }
    }
    f.ensure(eu.cluster_log(BE, &private).await.is_ok(), || {
        "ClusterLog refused to a member".into()
    });

    // ProposeClusterOp: only the caller's own operations.
    let head = fed.cluster(BE, &private).await.unwrap();
    let invite_self = fr.sign_op(
        &private,
        &head.head_hash,
        BE,
        pb::cluster_op::Op::Invite(pb::InviteMember {
            org: FR.into(),
            role: Role::Admin as i32,
            node_cert: node_cert_der(&fed, FR),
        }),
    );
    let captured = signed_op(
        &fed,
        &private,
        &head.head_hash,
        BE,
        pb::cluster_op::Op::Remove(pb::RemoveMember {
            org: EU.into(),
            reason: "coup".into(),
        }),
    );
    for (what, op) in [
        ("an op naming csirt-be, signed by csirt-fr", invite_self),
        ("csirt-be's own signed op, proposed by csirt-fr", captured),
    ] {
        match fr.propose(BE, op).await {
            Err(e) if e.code() == Code::PermissionDenied => {}
            other => f.ensure(false, || {
                format!(
                    "ProposeClusterOp of {what}: {:?}, not PERMISSION_DENIED",
                    other
                        .map(|r| r.entries.len())
                        .map_err(|e| (e.code(), e.message().to_string()))
                )
            }),
        }
    }
    let after = fed.cluster(BE, &private).await.unwrap();
    f.ensure(after.head_hash == head.head_hash, || {
        format!(
            "the log of {private} changed: {} -> {}",
            head.head_index, after.head_index
        )
    });

    // Re-share attestations the calling peer did not make for itself.
    let onward_head = fed.cluster(FR, &onward).await.unwrap().head_index;
    let original = seal(
        &fed.signing_key(BE),
        &bluewire_tests::content(BE, "green, for onward sharing"),
    );
    let by_fr = fr.forward(&original, &onward, onward_head, node_cert_der(&fed, BE));
    // csirt-fr's attestation, handed over by csirt-be.
    f.check(be.check_refused(EU, &by_fr, "origin", FR).await);
    // An attestation naming cert-eu as forwarder, signed by csirt-fr.
    let claims_eu = fr.forward_as(EU, &original, &onward, onward_head, node_cert_der(&fed, BE));
    f.check(fr.check_refused(EU, &claims_eu, "origin", EU).await);
    // The genuine re-share by its forwarder is accepted.
    f.check(fr.check_accepted(EU, &by_fr).await);

    // The refusals are in the audit trail; the node serves everyone still.
    let audit = audit_export(&fed, EU).await;
    f.ensure(
        audit
            .iter()
            .any(|a| a.event == "rejected" && a.peer == BE && a.rule == "origin"),
        || "no audited refusal of csirt-be's forged re-share at cert-eu".into(),
    );
    still_flows(&fed, FR, &[BE, EU]).await;
    f.finish("other federation calls");
}

/// A raise by another organisation that arrives before its target is kept aside: it counts
/// once the target arrives, and only if the raiser may receive the target (the same rule as
/// for a raise of a message already held), without holding up the raiser's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raise_that_arrives_before_its_target_counts_only_if_the_raiser_may_see_it() {
    let fed = federation(FedOptions::default()).await;
    let mut f = Failures::new();
    let be = Rogue::new(&fed, BE);
    let fr = Rogue::new(&fed, FR);

    // csirt-be's GREEN message to everyone, sealed but not delivered yet.
    let open = be.content("raised before it arrived");
    // csirt-be's AMBER message for cert-eu only: csirt-fr may not receive it.
    let mut closed = be.content("for cert-eu only");
    closed.recipients = vec![EU.into()];
    closed.marking = Some(pb::Marking {
        tlp: pb::Tlp::Amber as i32,
        ..Default::default()
    });
    for target in [&open, &closed] {
        let raise = fr.marking_change(BE, &target.id, pb::Tlp::Red);
        // Accepted at once (not RETRY_LATER, which would hold csirt-fr's queue).
        f.check(fr.check_accepted(EU, &raise).await);
        f.ensure(stored(&fed, EU, BE, &target.id).is_none(), || {
            format!("{BE}/{} is at {EU} before it was sent", target.id)
        });
    }
    for target in [&open, &closed] {
        f.check(be.check_accepted(EU, &be.seal(target)).await);
    }
    // The raise of what csirt-fr may receive now counts; the other stays without effect.
    f.ensure(
        effective_tlp(&fed, EU, BE, &open.id).await == Ok(pb::Tlp::Red),
        || {
            format!(
                "csirt-fr's early raise of {BE}/{} did not take effect",
                open.id
            )
        },
    );
    f.ensure(
        effective_tlp(&fed, EU, BE, &closed.id).await == Ok(pb::Tlp::Amber),
        || {
            format!(
                "csirt-fr raised {BE}/{}, which it may not receive",
                closed.id
            )
        },
    );
    // The same raise once the target is held is refused outright.
    let late = fr.marking_change(BE, &closed.id, pb::Tlp::Red);
    f.check(
        fr.check_refused(EU, &late, "control-authority", "may not receive")
            .await,
    );
    f.finish("raises before their target");
}
