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
use crate::store::{AnnotationRecord, Keep, Store};

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
    let marking = annotations
        .iter()
        .filter(|(k, _)| k.starts_with("marking/") && *k != own)
        .filter_map(|(_, r)| decode(r))
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

/// The target a control message names: (origin, id).
pub fn target_of(control: &Content) -> Option<(&str, &str)> {
    match &control.body {
        Some(Body::Retraction(r)) => Some((&r.target_origin, &r.target_id)),
        Some(Body::MarkingChange(m)) => Some((&m.target_origin, &m.target_id)),
        _ => None,
    }
}

/// May the signer of `control` say it? Pure; the same check at the publishing
/// node and at every receiver. `target` is the target's content and standing
/// when this node holds it; `may_see` answers whether the routing rules let
/// the signer receive the target (why not, if not).
pub fn authority(
    control: &Content,
    target: Option<(&Content, &Standing)>,
    may_see: impl FnOnce(&Content) -> Result<(), String>,
) -> Result<Effect, Rejected> {
    let signer = control.origin_org.as_str();
    let deny = |why: String| Err(Rejected::Control(why));
    match &control.body {
        Some(Body::Retraction(r)) => {
            if r.target_origin != signer {
                return deny(format!(
                    "only the origin ({}) can retract its message {}; {signer} speaks only for its own messages",
                    r.target_origin, r.target_id
                ));
            }
            Ok(Effect::Apply)
        }
        Some(Body::MarkingChange(m)) => {
            if m.target_origin == signer {
                return Ok(Effect::Apply);
            }
            let Some((target, standing)) = target else {
                return Ok(Effect::Pending);
            };
            if let Err(why) = may_see(target) {
                return deny(format!(
                    "{signer} may not receive {}/{} ({why}), so it cannot change its marking",
                    m.target_origin, m.target_id
                ));
            }
            let base = standing.origin_marking.clone().unwrap_or_default();
            let new = m.marking.clone().unwrap_or_default();
            if !is_raise(&base, &new) {
                return deny(format!(
                    "only the origin ({}) can lower the marking of {}; {signer} can only raise it",
                    m.target_origin, m.target_id
                ));
            }
            Ok(Effect::Apply)
        }
        _ => Ok(Effect::Apply),
    }
}

/// At the publishing node, for a control message whose target this node
/// holds: aim it at the target's audience (same cluster, recipients and
/// level), carrying the stricter of the target's marking and the new one.
pub fn aim(content: &mut Content, target: &Content, standing: &Standing, cluster_index: u64) {
    content.cluster = target.cluster.clone();
    content.recipients = target.recipients.clone();
    content.scope_sectors = target.scope_sectors.clone();
    content.scope_countries = target.scope_countries.clone();
    content.level = target.level;
    let mut marking = standing.marking.clone().unwrap_or_default();
    if let Some(Body::MarkingChange(m)) = &content.body
        && let Some(new) = &m.marking
        && new.tlp > marking.tlp
    {
        marking.tlp = new.tlp;
    }
    content.marking = Some(marking);
    content.cluster_index = cluster_index;
}

/// After a control message passed [`authority`] and was stored (here or
/// received): record its effect on the target.
pub async fn apply(store: &Store, content: &Content, effect: Effect) {
    let kind = Kind::try_from(content.kind).unwrap_or(Kind::Unspecified);
    let (annotation, value, keep, target_origin, target_id) = match (&content.body, kind) {
        (Some(Body::Retraction(r)), Kind::Retraction) => (
            RETRACTED.to_string(),
            r.reason.clone().into_bytes(),
            Keep::Earliest,
            &r.target_origin,
            &r.target_id,
        ),
        (Some(Body::MarkingChange(m)), Kind::MarkingChange) => (
            match effect {
                Effect::Apply => marking_kind(&content.origin_org),
                Effect::Pending => pending_kind(&content.origin_org),
            },
            m.marking.clone().unwrap_or_default().encode_to_vec(),
            Keep::Latest,
            &m.target_origin,
            &m.target_id,
        ),
        _ => return,
    };
    let record = AnnotationRecord {
        at_ms: content.created_at_ms,
        by_id: content.id.clone(),
        value,
    };
    match store
        .annotate(target_origin, target_id, annotation, record, keep)
        .await
    {
        Ok(true) => {
            info!(msg.id = %target_id, msg.origin = %target_origin, by = %content.origin_org, kind = kind.as_str_name(), "control message applied")
        }
        Ok(false) => {}
        Err(e) => warn!(error = %e, msg.id = %target_id, "recording a control message failed"),
    }
}

/// The pending raises of `annotations` that now count for `content`: each by an
/// organisation `may_see` lets receive it, at or above the origin's marking. Pure.
pub fn settled(
    content: &Content,
    annotations: &[(String, AnnotationRecord)],
    may_see: impl Fn(&Content, &str) -> Result<(), String>,
) -> Vec<(String, AnnotationRecord)> {
    let base = standing_from(content, annotations)
        .origin_marking
        .unwrap_or_default();
    annotations
        .iter()
        .filter_map(|(kind, r)| {
            let org = kind.strip_prefix("pending-marking/")?;
            let new = Marking::decode(r.value.as_slice()).ok()?;
            let ok =
                org != content.origin_org && is_raise(&base, &new) && may_see(content, org).is_ok();
            ok.then(|| (marking_kind(org), r.clone()))
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
) {
    let Ok(annotations) = store.annotations(&content.origin_org, &content.id) else {
        return;
    };
    if !annotations.iter().any(|(k, _)| k.starts_with("pending-")) {
        return;
    }
    for (kind, record) in settled(content, &annotations, may_see) {
        if let Err(e) = store
            .annotate(&content.origin_org, &content.id, kind, record, Keep::Latest)
            .await
        {
            warn!(error = %e, msg.id = %content.id, "recording a pending raise failed");
        }
    }
}

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
        assert!(authority(&retraction("be", "be"), None, visible).is_ok());
    }

    #[test]
    fn the_origin_changes_its_marking_either_way_others_only_raise_what_they_see() {
        let t = target("be", 3);
        let s = standing_from(&t, &[]);
        assert!(authority(&change("be", "be", 2), Some((&t, &s)), visible).is_ok());
        assert!(authority(&change("be", "be", 2), None, visible).is_ok());
        assert!(authority(&change("fr", "be", 4), Some((&t, &s)), visible).is_ok());
        assert!(authority(&change("fr", "be", 3), Some((&t, &s)), visible).is_ok());
        let lower = authority(&change("fr", "be", 2), Some((&t, &s)), visible);
        assert!(matches!(lower, Err(Rejected::Control(ref w)) if w.contains("only the origin")));
        let unseen = authority(&change("fr", "be", 4), Some((&t, &s)), |_| {
            Err("not a member".into())
        });
        assert!(matches!(unseen, Err(Rejected::Control(ref w)) if w.contains("not a member")));
        // Before the target arrives a raise waits aside; the origin's own change applies.
        let early = authority(&change("fr", "be", 4), None, visible);
        assert_eq!(early, Ok(Effect::Pending));
        assert_eq!(
            authority(&change("be", "be", 2), None, visible),
            Ok(Effect::Apply)
        );
        assert_eq!(
            authority(&change("fr", "be", 4), Some((&t, &s)), visible),
            Ok(Effect::Apply)
        );
    }

    #[test]
    fn a_raise_by_another_is_measured_against_the_origins_marking_not_other_raises() {
        // fr raised to RED; eu may still "raise" to AMBER+STRICT relative to the origin's AMBER.
        let t = target("be", 3);
        let raised = [(marking_kind("fr"), rec(1, m(5, "").encode_to_vec()))];
        let s = standing_from(&t, &raised);
        assert_eq!(s.marking.as_ref().map(|m| m.tlp), Some(5));
        assert!(authority(&change("eu", "be", 4), Some((&t, &s)), visible).is_ok());
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
        let a = [
            (pending_kind("fr"), rec(1, m(5, "").encode_to_vec())),
            (pending_kind("eu"), rec(1, m(4, "").encode_to_vec())),
            (pending_kind("xx"), rec(1, m(2, "").encode_to_vec())), // a lowering
            (pending_kind("be"), rec(1, m(5, "").encode_to_vec())), // not a raise by another
            (pending_kind("yy"), rec(1, b"not a marking".to_vec())),
            (marking_kind("zz"), rec(1, m(4, "").encode_to_vec())),
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
        assert_eq!(ok[0].1, a[0].1);
        // Pending raises never count by themselves.
        assert_eq!(standing_from(&t, &a).marking, Some(m(4, "")));
    }

    #[test]
    fn aim_follows_the_target_and_keeps_the_stricter_marking() {
        let mut t = target("be", 3);
        t.cluster = "be/x".into();
        t.recipients = vec!["fr".into()];
        t.scope_sectors = vec!["health".into()];
        t.scope_countries = vec!["BE".into()];
        t.level = 2;
        let s = standing_from(&t, &[]);
        let mut c = change("be", "be", 5);
        aim(&mut c, &t, &s, 7);
        assert_eq!(
            (c.cluster.as_str(), c.level, c.cluster_index),
            ("be/x", 2, 7)
        );
        assert_eq!(c.recipients, vec!["fr".to_string()]);
        assert_eq!(
            (c.scope_sectors.clone(), c.scope_countries.clone()),
            (t.scope_sectors.clone(), t.scope_countries.clone())
        );
        assert_eq!(c.marking.as_ref().map(|m| m.tlp), Some(5));
        let mut c = change("be", "be", 2);
        aim(&mut c, &t, &s, 7);
        assert_eq!(c.marking.as_ref().map(|m| m.tlp), Some(3));
        assert_eq!(target_of(&c), Some(("be", "t")));
    }
}
