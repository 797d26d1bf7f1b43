//! Marking changes and retractions: signed control messages about an earlier
//! message, identified by the target's (origin, id). Owns the rules "only the
//! origin retracts", "the origin may raise or lower its marking; anyone else
//! may only raise it, and only for a message it may see", and what feeds,
//! queries and delivery see afterwards. The same [`authority`] check runs at
//! the publishing node and at every receiver.
//!
//! A raise by another organisation is kept per raising organisation and never
//! replaces what the origin said: the marking in force is the strictest of the
//! origin's current marking and every raise in force. Of each organisation's
//! marking changes the latest (by `created_at_ms`, then id) counts, and of the
//! origin's retractions the first, so every node reaches the same standing
//! whatever order control messages arrive in.
//!
//! Never alters stored envelope bytes: effects are annotations kept beside the
//! message, keyed by its (origin, id).

use bluewire_proto::v1::{Content, Kind, Marking, content::Body};
use prost::Message;
use tracing::{info, warn};

use crate::envelope::Rejected;
use crate::store::{AnnotationRecord, Keep, Store, StoreError};

/// Annotation kind of the origin's retraction (value: the reason).
pub const RETRACTED: &str = "retracted";

/// Annotation kind of one organisation's marking change (value: an encoded `Marking`).
pub fn marking_kind(org: &str) -> String {
    format!("marking/{org}")
}

/// Annotation kind of a raise by `org` that arrived before its target: it counts only once
/// the target is here and the raise passes [`authority`] against it (see [`settle`]).
fn pending_kind(org: &str) -> String {
    format!("pending-marking/{org}")
}

/// What an authorised control message does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Record its effect on the target.
    Apply,
    /// A raise by another organisation for a message this node does not hold (yet): keep it
    /// aside and judge it when the target arrives, without holding up the sender's queue.
    Pending,
}

/// Is `new` at least as restrictive as `old`?
pub fn is_raise(old: &Marking, new: &Marking) -> bool {
    new.tlp >= old.tlp
        && (old.classification.is_empty() || old.classification == new.classification)
        && (new.exercise == old.exercise)
}

/// The stricter of two markings: the higher TLP, `a`'s classification if it
/// has one (else `b`'s), `a`'s exercise flag.
fn strictest(a: Marking, b: &Marking) -> Marking {
    Marking {
        tlp: a.tlp.max(b.tlp),
        classification: if a.classification.is_empty() {
            b.classification.clone()
        } else {
            a.classification
        },
        exercise: a.exercise,
    }
}

/// What control messages have made of a stored message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Standing {
    /// Why its origin retracted it, if it did (only the origin's retraction counts).
    pub retracted: Option<String>,
    /// The marking the origin has in force (the signed one unless it changed it since).
    pub origin_marking: Option<Marking>,
    /// The marking in force: the strictest of the origin's and every raise by others.
    pub marking: Option<Marking>,
}

/// The standing of `content` given its annotations. Pure.
pub fn standing_from(content: &Content, annotations: &[(String, AnnotationRecord)]) -> Standing {
    let own = marking_kind(&content.origin_org);
    let decode = |r: &AnnotationRecord| Marking::decode(r.value.as_slice()).ok();
    let retracted = annotations
        .iter()
        .find(|(k, _)| k == RETRACTED)
        .map(|(_, r)| String::from_utf8_lossy(&r.value).into_owned());
    let origin_marking = annotations
        .iter()
        .find(|(k, _)| *k == own)
        .and_then(|(_, r)| decode(r))
        .or_else(|| content.marking.clone());
    // Another organisation's marking counts only where it is stricter than the signed one;
    // one at the signed marking withdraws its raise.
    let signed = content.marking.clone().unwrap_or_default();
    let marking = annotations
        .iter()
        .filter(|(k, _)| k.starts_with("marking/") && *k != own)
        .filter_map(|(_, r)| decode(r))
        .filter(|raise| {
            raise.tlp > signed.tlp
                || (signed.classification.is_empty() && !raise.classification.is_empty())
        })
        .fold(origin_marking.clone(), |acc, raise| {
            Some(strictest(acc.unwrap_or_default(), &raise))
        });
    Standing {
        retracted,
        origin_marking,
        marking,
    }
}

/// The retraction and marking in force for a stored message, from one store read. A store
/// that cannot be read gives the signed content's own standing (and a warning).
pub fn standing(store: &Store, content: &Content) -> Standing {
    let annotations = store
        .annotations(&content.origin_org, &content.id)
        .unwrap_or_else(|e| {
            warn!(error = %e, msg.id = %content.id, "reading a message's annotations failed");
            Vec::new()
        });
    standing_from(content, &annotations)
}

/// The target a control message names: (origin, id). A control message signed
/// before targets named their origin (empty `target_origin`) is about the
/// signer's own message.
pub fn target_of(control: &Content) -> Option<(&str, &str)> {
    let (origin, id) = match &control.body {
        Some(Body::Retraction(r)) => (&r.target_origin, &r.target_id),
        Some(Body::MarkingChange(m)) => (&m.target_origin, &m.target_id),
        _ => return None,
    };
    let origin = if origin.is_empty() {
        &control.origin_org
    } else {
        origin
    };
    Some((origin.as_str(), id.as_str()))
}

/// May the signer of `control` say it? Pure, and decided only on what does
/// not change with time or arrival order (the target's signed content, the
/// organisations' certified profiles), so every node reaches the same verdict;
/// the same check runs at the publishing node and at every receiver.
/// `target` is the target's content when this node holds it; `may_see` says
/// whether the signer is in the target's audience (why not, if not). The
/// control message's own routing has already checked that its signer may
/// publish in its cluster.
pub fn authority(
    control: &Content,
    target: Option<&Content>,
    may_see: impl FnOnce(&Content) -> Result<(), String>,
) -> Result<Effect, Rejected> {
    let signer = control.origin_org.as_str();
    let Some((target_origin, target_id)) = target_of(control) else {
        return Ok(Effect::Apply);
    };
    let deny = |why: String| Err(Rejected::Control(why));
    match &control.body {
        Some(Body::Retraction(_)) if target_origin != signer => deny(format!(
            "only the origin ({target_origin}) can retract its message {target_id}; \
             {signer} speaks only for its own messages"
        )),
        Some(Body::MarkingChange(m)) if target_origin != signer => {
            let Some(target) = target else {
                return Ok(Effect::Pending);
            };
            if control.cluster != target.cluster {
                return deny(format!(
                    "a marking change travels in its target's cluster ({}), not {}",
                    if target.cluster.is_empty() {
                        "none"
                    } else {
                        &target.cluster
                    },
                    if control.cluster.is_empty() {
                        "none"
                    } else {
                        &control.cluster
                    }
                ));
            }
            if let Err(why) = may_see(target) {
                return deny(format!(
                    "{signer} may not receive {target_origin}/{target_id} ({why}), so it \
                     cannot change its marking"
                ));
            }
            let signed = target.marking.clone().unwrap_or_default();
            let new = m.marking.clone().unwrap_or_default();
            if !is_raise(&signed, &new) {
                return deny(format!(
                    "only the origin ({target_origin}) can lower the marking of {target_id}; \
                     {signer} can only raise it"
                ));
            }
            Ok(Effect::Apply)
        }
        _ => Ok(Effect::Apply),
    }
}

/// At the publishing node, for a control message whose target this node
/// holds: aim it at the target's audience — same cluster, level, scope,
/// recipients (plus the target's origin, so it learns of a raise), under the
/// target's signed marking (which passed every rule when it was published,
/// so raises never make the origin's own control messages unroutable).
pub fn aim(content: &mut Content, target: &Content, cluster_index: u64) {
    content.cluster = target.cluster.clone();
    content.recipients = target.recipients.clone();
    if !content.recipients.is_empty()
        && target.origin_org != content.origin_org
        && !content.recipients.contains(&target.origin_org)
    {
        content.recipients.push(target.origin_org.clone());
    }
    content.scope_sectors = target.scope_sectors.clone();
    content.scope_countries = target.scope_countries.clone();
    content.level = target.level;
    content.marking = target.marking.clone();
    content.cluster_index = cluster_index;
}

/// After a control message passed [`authority`] and was stored (here or
/// received): record its effect on the target.
pub async fn apply(store: &Store, content: &Content, effect: Effect) -> Result<(), StoreError> {
    let kind = Kind::try_from(content.kind).unwrap_or(Kind::Unspecified);
    let (annotation, value, keep) = match (&content.body, kind) {
        (Some(Body::Retraction(r)), Kind::Retraction) => (
            RETRACTED.to_string(),
            r.reason.clone().into_bytes(),
            Keep::Earliest,
        ),
        // A pending raise keeps the whole control message, to be judged again with
        // [`authority`] once its target arrives.
        (Some(Body::MarkingChange(_)), Kind::MarkingChange) if effect == Effect::Pending => (
            pending_kind(&content.origin_org),
            content.encode_to_vec(),
            Keep::Latest,
        ),
        (Some(Body::MarkingChange(m)), Kind::MarkingChange) => (
            marking_kind(&content.origin_org),
            m.marking.clone().unwrap_or_default().encode_to_vec(),
            Keep::Latest,
        ),
        _ => return Ok(()),
    };
    let Some((target_origin, target_id)) = target_of(content) else {
        return Ok(());
    };
    let record = AnnotationRecord {
        at_ms: content.created_at_ms,
        by_id: content.id.clone(),
        value,
    };
    if store
        .annotate(target_origin, target_id, annotation, record, keep)
        .await?
    {
        info!(msg.id = %target_id, msg.origin = %target_origin, by = %content.origin_org, kind = crate::envelope::kind_label(content.kind), ?effect, "control message recorded");
    }
    Ok(())
}

/// The pending raises of `annotations` that now count for `content`: each
/// judged with [`authority`] against it, exactly as if it had arrived after
/// its target. Pure.
pub fn settled(
    content: &Content,
    annotations: &[(String, AnnotationRecord)],
    may_see: impl Fn(&Content, &str) -> Result<(), String>,
) -> Vec<(String, AnnotationRecord)> {
    annotations
        .iter()
        .filter(|(kind, _)| kind.starts_with("pending-marking/"))
        .filter_map(|(_, r)| {
            let control = Content::decode(r.value.as_slice()).ok()?;
            let Some(Body::MarkingChange(m)) = &control.body else {
                return None;
            };
            if target_of(&control) != Some((&content.origin_org, &content.id)) {
                return None;
            }
            let ok = authority(&control, Some(content), |t| may_see(t, &control.origin_org));
            (ok == Ok(Effect::Apply)).then(|| {
                (
                    marking_kind(&control.origin_org),
                    AnnotationRecord {
                        at_ms: r.at_ms,
                        by_id: r.by_id.clone(),
                        value: m.marking.clone().unwrap_or_default().encode_to_vec(),
                    },
                )
            })
        })
        .collect()
}

/// A message was just stored: raises of it that arrived before it now count if
/// they pass the same authority rule (see [`settled`]). A pending raise that
/// does not pass stays aside, without effect.
pub async fn settle(
    store: &Store,
    content: &Content,
    may_see: impl Fn(&Content, &str) -> Result<(), String>,
) -> Result<(), StoreError> {
    let annotations = store.annotations(&content.origin_org, &content.id)?;
    if !annotations.iter().any(|(k, _)| k.starts_with("pending-")) {
        return Ok(());
    }
    for (kind, record) in settled(content, &annotations, may_see) {
        store
            .annotate(&content.origin_org, &content.id, kind, record, Keep::Latest)
            .await?;
    }
    Ok(())
}

/// `cargo mutants -f node/src/markings.rs -- --lib` leaves one mutant alive, which is
/// equivalent: `&&` → `||` in `standing_from`'s raise filter admits the origin's own record
/// and non-marking kinds as raises, but the origin's record is already the base (so the
/// strictest is unchanged) and other kinds' values never decode as a `Marking`.
#[cfg(test)]
mod tests {
    use super::*;
    use bluewire_proto::v1::{MarkingChange, Retraction};

    fn m(tlp: i32, class: &str) -> Marking {
        Marking {
            tlp,
            classification: class.into(),
            exercise: false,
        }
    }

    fn target(origin: &str, tlp: i32) -> Content {
        Content {
            id: "t".into(),
            origin_org: origin.into(),
            marking: Some(m(tlp, "")),
            ..Default::default()
        }
    }

    fn change(signer: &str, target_origin: &str, tlp: i32) -> Content {
        Content {
            id: "c".into(),
            origin_org: signer.into(),
            kind: Kind::MarkingChange as i32,
            body: Some(Body::MarkingChange(MarkingChange {
                target_id: "t".into(),
                target_origin: target_origin.into(),
                marking: Some(m(tlp, "")),
                reason: String::new(),
            })),
            ..Default::default()
        }
    }

    fn retraction(signer: &str, target_origin: &str) -> Content {
        Content {
            id: "r".into(),
            origin_org: signer.into(),
            kind: Kind::Retraction as i32,
            body: Some(Body::Retraction(Retraction {
                target_id: "t".into(),
                target_origin: target_origin.into(),
                reason: "wrong".into(),
            })),
            ..Default::default()
        }
    }

    fn rec(at_ms: i64, value: Vec<u8>) -> AnnotationRecord {
        AnnotationRecord {
            at_ms,
            by_id: String::new(),
            value,
        }
    }

    fn visible(_: &Content) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn raising_and_lowering() {
        assert!(is_raise(&m(2, ""), &m(3, "")));
        assert!(is_raise(&m(2, ""), &m(2, "EU RESTRICTED")));
        assert!(!is_raise(&m(3, ""), &m(2, "")));
        assert!(!is_raise(&m(2, "EU RESTRICTED"), &m(2, "")));
        assert!(!is_raise(&m(2, "EU RESTRICTED"), &m(3, "NATO")));
        let mut ex = m(3, "");
        ex.exercise = true;
        assert!(!is_raise(&m(2, ""), &ex), "the exercise flag never changes");
    }

    #[test]
    fn only_the_origin_retracts() {
        let r = authority(&retraction("fr", "be"), None, visible);
        assert!(matches!(r, Err(Rejected::Control(_))), "{r:?}");
        assert_eq!(r.unwrap_err().rule(), "control-authority");
        assert_eq!(
            authority(&retraction("be", "be"), None, visible),
            Ok(Effect::Apply)
        );
        // Signed before targets named their origin: about the signer's own message.
        let legacy = retraction("fr", "");
        assert_eq!(target_of(&legacy), Some(("fr", "t")));
        assert_eq!(authority(&legacy, None, visible), Ok(Effect::Apply));
        assert_eq!(target_of(&target("be", 2)), None);
    }

    #[test]
    fn the_origin_changes_its_marking_either_way_others_only_raise_what_they_see() {
        let t = target("be", 3);
        assert_eq!(
            authority(&change("be", "be", 2), Some(&t), visible),
            Ok(Effect::Apply)
        );
        assert_eq!(
            authority(&change("be", "be", 2), None, visible),
            Ok(Effect::Apply)
        );
        assert_eq!(
            authority(&change("fr", "be", 4), Some(&t), visible),
            Ok(Effect::Apply)
        );
        assert_eq!(
            authority(&change("fr", "be", 3), Some(&t), visible),
            Ok(Effect::Apply)
        );
        let lower = authority(&change("fr", "be", 2), Some(&t), visible);
        assert!(matches!(lower, Err(Rejected::Control(ref w)) if w.contains("only the origin")));
        let unseen = authority(
            &change("fr", "be", 4),
            Some(&t),
            |_| Err("not named".into()),
        );
        assert!(matches!(unseen, Err(Rejected::Control(ref w)) if w.contains("not named")));
        // Before the target arrives a raise waits aside, to be judged when it does.
        assert_eq!(
            authority(&change("fr", "be", 4), None, visible),
            Ok(Effect::Pending)
        );
        // A raise travels in its target's cluster.
        let mut elsewhere = change("fr", "be", 4);
        elsewhere.cluster = "be/other".into();
        let r = authority(&elsewhere, Some(&t), visible);
        assert!(
            matches!(r, Err(Rejected::Control(ref w)) if w.contains("travels in its target's cluster"))
        );
    }

    #[tokio::test]
    async fn the_standing_is_read_from_the_store_under_the_messages_origin_and_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let t = target("be", 2);
        assert_eq!(standing(&store, &t), standing_from(&t, &[]));
        let raise = change("fr", "be", 4);
        apply(&store, &raise, Effect::Apply).await.expect("apply");
        apply(&store, &retraction("be", "be"), Effect::Apply)
            .await
            .expect("apply");
        let s = standing(&store, &t);
        assert_eq!(s.marking.map(|m| m.tlp), Some(4));
        assert_eq!(s.retracted.as_deref(), Some("wrong"));
        // Another origin's message with the same id is untouched.
        let other = target("eu", 2);
        assert_eq!(standing(&store, &other), standing_from(&other, &[]));
    }

    #[test]
    fn a_raise_at_the_signed_marking_withdraws_it() {
        let t = target("be", 2);
        let a = [
            (marking_kind("be"), rec(2, m(1, "").encode_to_vec())),
            (marking_kind("fr"), rec(3, m(2, "").encode_to_vec())),
        ];
        assert_eq!(standing_from(&t, &a).marking, Some(m(1, "")));
        let raised = [
            a[0].clone(),
            (marking_kind("fr"), rec(3, m(3, "").encode_to_vec())),
        ];
        assert_eq!(standing_from(&t, &raised).marking, Some(m(3, "")));
        let classified = [
            a[0].clone(),
            (
                marking_kind("fr"),
                rec(3, m(2, "EU RESTRICTED").encode_to_vec()),
            ),
        ];
        assert_eq!(
            standing_from(&t, &classified).marking,
            Some(m(2, "EU RESTRICTED"))
        );
    }

    #[test]
    fn a_raise_is_measured_against_the_signed_marking_whatever_arrived_before() {
        // The origin's later changes do not make an earlier raise legal or illegal:
        // every node judges it the same, whatever order they arrive in.
        let t = target("be", 3);
        assert_eq!(
            authority(&change("eu", "be", 3), Some(&t), visible),
            Ok(Effect::Apply)
        );
        let r = authority(&change("eu", "be", 2), Some(&t), visible);
        assert!(r.is_err());
    }

    #[test]
    fn standing_is_the_strictest_of_the_origin_and_every_raise() {
        let t = target("be", 3);
        let s = standing_from(&t, &[]);
        assert_eq!(s.marking, Some(m(3, "")));
        assert_eq!(s.origin_marking, Some(m(3, "")));
        assert_eq!(s.retracted, None);
        // The origin lowers to GREEN; fr's raise to AMBER+STRICT still stands.
        let a = [
            (marking_kind("be"), rec(2, m(2, "").encode_to_vec())),
            (
                marking_kind("fr"),
                rec(1, m(4, "EU RESTRICTED").encode_to_vec()),
            ),
            (RETRACTED.to_string(), rec(3, b"wrong".to_vec())),
        ];
        let s = standing_from(&t, &a);
        assert_eq!(s.origin_marking, Some(m(2, "")));
        assert_eq!(s.marking, Some(m(4, "EU RESTRICTED")));
        assert_eq!(s.retracted.as_deref(), Some("wrong"));
        // Without raises the origin's lowering is what is in force.
        let s = standing_from(&t, &a[..1]);
        assert_eq!(s.marking, Some(m(2, "")));
        // The origin's own classification wins over a raise's.
        let mut tc = target("be", 2);
        if let Some(m) = tc.marking.as_mut() {
            m.classification = "A".into();
        }
        let s = standing_from(&tc, &a[1..2]);
        assert_eq!(s.marking, Some(m(4, "A")));
    }

    #[test]
    fn pending_raises_count_once_the_target_is_here_and_they_pass_the_same_rule() {
        let t = target("be", 3);
        let pending = |c: &Content| {
            (
                pending_kind(&c.origin_org),
                rec(c.created_at_ms, c.encode_to_vec()),
            )
        };
        let mut elsewhere = change("xx", "be", 5);
        elsewhere.cluster = "be/other".into();
        let mut other_target = change("yy", "be", 5);
        if let Some(Body::MarkingChange(m)) = &mut other_target.body {
            m.target_id = "another".into();
        }
        let a = [
            pending(&change("fr", "be", 5)),
            pending(&change("eu", "be", 4)), // may not see it
            pending(&change("zz", "be", 2)), // a lowering
            pending(&elsewhere),             // in another cluster
            pending(&other_target),          // about another message
            (
                pending_kind("qq"),
                rec(1, b"not a control message".to_vec()),
            ),
            (marking_kind("ww"), rec(1, m(4, "").encode_to_vec())),
        ];
        let ok = settled(&t, &a, |_, org| {
            if org == "eu" {
                Err("not a member".into())
            } else {
                Ok(())
            }
        });
        let kinds: Vec<_> = ok.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, vec!["marking/fr"]);
        assert_eq!(
            Marking::decode(ok[0].1.value.as_slice()).ok(),
            Some(m(5, ""))
        );
        // Pending raises never count by themselves.
        assert_eq!(standing_from(&t, &a).marking, Some(m(4, "")));
    }

    #[test]
    fn aim_follows_the_target_under_its_signed_marking() {
        let mut t = target("be", 3);
        t.cluster = "be/x".into();
        t.recipients = vec!["fr".into()];
        t.scope_sectors = vec!["health".into()];
        t.scope_countries = vec!["BE".into()];
        t.level = 2;
        let mut c = change("be", "be", 5);
        aim(&mut c, &t, 7);
        assert_eq!(
            (c.cluster.as_str(), c.level, c.cluster_index),
            ("be/x", 2, 7)
        );
        assert_eq!(c.recipients, vec!["fr".to_string()]);
        assert_eq!(
            (c.scope_sectors.clone(), c.scope_countries.clone()),
            (t.scope_sectors.clone(), t.scope_countries.clone())
        );
        assert_eq!(c.marking, t.marking, "the signed marking, never a raise");
        assert_eq!(target_of(&c), Some(("be", "t")));
        // Another organisation's raise of a message for named recipients also reaches
        // the origin.
        let mut c = change("fr", "be", 5);
        aim(&mut c, &t, 7);
        assert_eq!(c.recipients, vec!["fr".to_string(), "be".to_string()]);
        // Not when the target goes to everyone.
        t.recipients.clear();
        let mut c = change("fr", "be", 5);
        aim(&mut c, &t, 7);
        assert!(c.recipients.is_empty());
    }
}
