//! Marking changes and retractions: origin-signed control messages about an
//! earlier message, applied by every node that stores them. Owns the rules
//! "a marking can be raised by anyone who received the message, lowered only
//! by its origin" and "only the origin retracts", and what feeds, queries
//! and delivery see afterwards. Never alters stored envelope bytes: effects
//! are annotations kept beside the message.

use bluewire_proto::v1::{Content, Kind, Marking, content::Body};
use prost::Message;
use tracing::{info, warn};

use crate::server::NodeState;

pub const RETRACTED: &str = "retracted";
pub const MARKING: &str = "marking";

/// Is `new` at least as restrictive as `old`?
pub fn is_raise(old: &Marking, new: &Marking) -> bool {
    new.tlp >= old.tlp
        && (old.classification.is_empty() || old.classification == new.classification)
        && (new.exercise == old.exercise)
}

fn stored_content(state: &NodeState, id: &str) -> Option<Content> {
    let m = state.store.get_by_id(id).ok().flatten()?;
    let env = bluewire_proto::v1::Envelope::decode(m.envelope.as_slice()).ok()?;
    Content::decode(env.content.as_slice()).ok()
}

/// What the origin's control messages have made of a stored message, read in one go.
#[derive(Debug, Default)]
pub struct Standing {
    /// Why its origin retracted it, if it did (only the origin's retraction counts).
    pub retracted: Option<String>,
    /// The marking in force (the signed one unless changed since).
    pub marking: Option<Marking>,
}

/// The retraction and marking in force for a stored message, from one store read.
pub fn standing(state: &NodeState, content: &Content) -> Standing {
    let [retracted, marking] = state
        .store
        .annotations(&content.id, [RETRACTED, MARKING])
        .unwrap_or_default();
    Standing {
        retracted: retracted.and_then(|v| retraction_by_origin(&v, content)),
        marking: match marking {
            Some(bytes) => Marking::decode(bytes.as_slice()).ok(),
            None => content.marking.clone(),
        },
    }
}

/// The marking in force for a stored message.
pub fn effective_marking(state: &NodeState, content: &Content) -> Option<Marking> {
    match state.store.annotation(&content.id, MARKING) {
        Ok(Some(bytes)) => Marking::decode(bytes.as_slice()).ok(),
        _ => content.marking.clone(),
    }
}

/// Why a stored message is retracted, if it is (only its origin's
/// retraction counts).
pub fn retraction(state: &NodeState, content: &Content) -> Option<String> {
    let v = state
        .store
        .annotation(&content.id, RETRACTED)
        .ok()
        .flatten()?;
    retraction_by_origin(&v, content)
}

/// The reason in a stored retraction annotation ("ORIGIN\nREASON"), if ORIGIN is the
/// message's origin.
fn retraction_by_origin(annotation: &[u8], content: &Content) -> Option<String> {
    let text = String::from_utf8_lossy(annotation);
    let (origin, reason) = text.split_once('\n').unwrap_or((&text, ""));
    (origin == content.origin_org).then(|| reason.to_string())
}

/// At the publishing node: check authority and aim the control message at
/// the target's audience (same cluster, recipients and level).
pub fn prepare(state: &NodeState, content: &mut Content) -> Result<(), String> {
    let target_id = match &content.body {
        Some(Body::Retraction(r)) => r.target_id.clone(),
        Some(Body::MarkingChange(m)) => m.target_id.clone(),
        _ => return Ok(()),
    };
    let target = stored_content(state, &target_id)
        .ok_or_else(|| format!("no message {target_id} on this node to change"))?;
    let current = effective_marking(state, &target).unwrap_or_default();
    match &content.body {
        Some(Body::Retraction(_)) if target.origin_org != content.origin_org => {
            return Err(format!(
                "only the origin ({}) can retract {target_id}",
                target.origin_org
            ));
        }
        Some(Body::MarkingChange(m)) => {
            let new = m.marking.clone().unwrap_or_default();
            if target.origin_org != content.origin_org && !is_raise(&current, &new) {
                return Err(format!(
                    "only the origin ({}) can lower a marking; {} can only raise it",
                    target.origin_org, content.origin_org
                ));
            }
        }
        _ => {}
    }
    content.cluster = target.cluster.clone();
    content.recipients = target.recipients.clone();
    content.level = target.level;
    // The control message itself carries the stricter of the two markings.
    let mut marking = current.clone();
    if let Some(Body::MarkingChange(m)) = &content.body
        && let Some(new) = &m.marking
        && new.tlp > marking.tlp
    {
        marking.tlp = new.tlp;
    }
    content.marking = Some(marking);
    if let Some(c) = state.cluster(&content.cluster) {
        content.cluster_index = c.head_index;
    }
    Ok(())
}

/// After a verified control message is stored (here or received): apply it.
pub async fn apply(state: &NodeState, content: &Content) {
    let kind = Kind::try_from(content.kind).unwrap_or(Kind::Unspecified);
    match (&content.body, kind) {
        (Some(Body::Retraction(r)), Kind::Retraction) => {
            let value = format!("{}\n{}", content.origin_org, r.reason).into_bytes();
            if let Err(e) = state.store.annotate(&r.target_id, RETRACTED, value).await {
                warn!(error = %e, "recording a retraction failed");
                return;
            }
            info!(msg.id = %r.target_id, by = %content.origin_org, "message retracted by its origin");
        }
        (Some(Body::MarkingChange(m)), Kind::MarkingChange) => {
            let Some(new) = m.marking.clone() else { return };
            let Some(target) = stored_content(state, &m.target_id) else {
                warn!(msg.id = %m.target_id, "marking change for a message this node does not hold; ignored");
                return;
            };
            let current = effective_marking(state, &target).unwrap_or_default();
            if target.origin_org != content.origin_org && !is_raise(&current, &new) {
                warn!(msg.id = %m.target_id, by = %content.origin_org, "refused a marking change that would lower a marking set by another organisation");
                return;
            }
            if let Err(e) = state
                .store
                .annotate(&m.target_id, MARKING, new.encode_to_vec())
                .await
            {
                warn!(error = %e, "recording a marking change failed");
                return;
            }
            info!(msg.id = %m.target_id, by = %content.origin_org, "marking changed");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(tlp: i32, class: &str) -> Marking {
        Marking {
            tlp,
            classification: class.into(),
            exercise: false,
        }
    }

    #[test]
    fn raising_and_lowering() {
        assert!(is_raise(&m(2, ""), &m(3, "")));
        assert!(is_raise(&m(2, ""), &m(2, "EU RESTRICTED")));
        assert!(!is_raise(&m(3, ""), &m(2, "")));
        assert!(!is_raise(&m(2, "EU RESTRICTED"), &m(2, "")));
    }
}
