//! Threat-intelligence service: STIX 2.1 bundles published through the node, object by
//! object. Owns idempotent import (an object this organisation already published at the same
//! version into the same cluster is skipped), per-object refusals, splitting objects into one
//! message per TLP (an object marked stricter than the request travels under its own
//! marking, so routing follows the strictest marking of what a message carries) and per
//! size, and the rule that a member does not republish as its own what another shared with
//! it under AMBER or stricter. The checks themselves are [`crate::stix`]'s, the publishing
//! [`crate::outbound`]'s, so every routing and marking rule applies unchanged.

use std::collections::{BTreeMap, HashMap};

use bluewire_proto::v1 as pb;
use serde_json::Value;

use crate::envelope::Rejected;
use crate::outbound::{self, OutboundError};
use crate::state::NodeState;
use crate::stix;

/// Most objects, and JSON bytes of objects, in one message (the signed content must stay
/// under the 1 MiB envelope limit once the node adds markings).
const CHUNK_OBJECTS: usize = 1_000;
const CHUNK_BYTES: usize = 640 * 1024;

/// One import at a time per process: two imports of the same object cannot both find it
/// unpublished and both publish it.
static IMPORTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two STIX timestamps naming the same instant (`.000Z` and `Z` are one version).
fn same_version(a: &str, b: &str) -> bool {
    match (stix::timestamp_ms(a), stix::timestamp_ms(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Why an object is not published: None to publish it, Some(None) to skip it (already
/// there), Some(Some(reason)) to refuse it.
fn held(
    st: &NodeState,
    v: &stix::Version,
    cluster: &str,
) -> Result<Option<Option<String>>, OutboundError> {
    let store_err = |source| OutboundError::Store {
        what: "read the STIX index",
        source,
    };
    for (seq, origin, version) in st.store.stix_versions(&v.id).map_err(store_err)? {
        let Some(m) = st.store.get_by_seq(seq).map_err(store_err)? else {
            continue;
        };
        let own = origin == st.org();
        // Only the same version in the same cluster can make an own entry count: decode
        // nothing else.
        if own && !(same_version(&version, &v.version) && m.cluster == cluster) {
            continue;
        }
        // Retracted messages no longer count.
        let Some(item) = crate::feed::item_for(st, m.clone()).map_err(OutboundError::Lookup)?
        else {
            continue;
        };
        if own {
            return Ok(Some(None));
        }
        let content = item.content.unwrap_or_default();
        let tlp = item
            .effective_marking
            .or(content.marking)
            .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
            .unwrap_or_default();
        let restricted = content.no_reshare
            || tlp >= pb::Tlp::AmberStrict
            // AMBER stays in the cluster it was shared in; without a cluster, the origin
            // chose its audience itself.
            || (tlp == pb::Tlp::Amber && (content.cluster.is_empty() || content.cluster != cluster));
        if restricted {
            return Ok(Some(Some(format!(
                "{origin} shared this object with you ({} {}): republishing it as your own would widen its audience; re-share their message instead if its marking allows (bluewire reshare {origin}/{} --to CLUSTER)",
                crate::envelope::tlp_label(tlp as i32),
                if content.cluster.is_empty() {
                    "without a cluster".to_string()
                } else {
                    format!("in {}", content.cluster)
                },
                content.id
            ))));
        }
    }
    Ok(None)
}

/// Publish the acceptable, not yet published objects of `r.bundle`.
pub async fn import(
    st: &NodeState,
    user: &str,
    r: pb::ImportStixRequest,
) -> Result<pb::ImportStixResponse, OutboundError> {
    let invalid =
        |e: String| OutboundError::Invalid(Rejected::Invalid(format!("STIX bundle refused: {e}")));
    let bundle = stix::parse(&r.bundle).map_err(invalid)?;
    let objects = stix::bundle_objects(&bundle).map_err(invalid)?;
    let tlp = r
        .marking
        .as_ref()
        .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
        .unwrap_or_default();
    if tlp == pb::Tlp::Unspecified {
        return Err(invalid("the message has no TLP: give one (--tlp)".into()));
    }
    let cluster = if r.cluster.is_empty() {
        String::new()
    } else {
        st.resolve_cluster(&r.cluster)
            .map(|c| c.id.clone())
            .map_err(OutboundError::from)?
    };
    let _one_at_a_time = IMPORTING.lock().await;
    let mut out = pb::ImportStixResponse::default();
    let mut groups: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
    let mut seen: HashMap<(String, String), &Value> = HashMap::new();
    let refuse = |out: &mut pb::ImportStixResponse, index: usize, o: &Value, reason: String| {
        out.refused.push(pb::StixRefusal {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            id: o
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            reason,
        });
    };
    for (index, o) in objects.iter().enumerate() {
        let v = match stix::check_object_from(o, tlp, st.org()) {
            Ok(v) => v,
            Err(reason) => {
                refuse(&mut out, index, o, reason);
                continue;
            }
        };
        match seen.get(&(v.id.clone(), v.version.clone())) {
            Some(earlier) if *earlier == o => {
                out.objects_skipped += 1;
                continue;
            }
            Some(_) => {
                refuse(
                    &mut out,
                    index,
                    o,
                    format!(
                        "the request holds {} at version {} twice with different content: keep one",
                        v.id, v.version
                    ),
                );
                continue;
            }
            None => {
                seen.insert((v.id.clone(), v.version.clone()), o);
            }
        }
        // Routing follows the message's TLP: an object marked stricter goes in a message
        // of its own marking.
        let own = o
            .as_object()
            .and_then(stix::object_tlp)
            .unwrap_or(tlp)
            .max(tlp);
        if own == pb::Tlp::Red && r.recipients.is_empty() {
            refuse(
                &mut out,
                index,
                o,
                "it is marked TLP:RED, which goes only to named recipients: import it with --to ORG,…".into(),
            );
            continue;
        }
        match held(st, &v, &cluster)? {
            Some(None) => out.objects_skipped += 1,
            Some(Some(reason)) => refuse(&mut out, index, o, reason),
            None => groups.entry(own as i32).or_default().push(o.clone()),
        }
    }
    for (group_tlp, objects) in groups {
        for chunk in chunks(objects) {
            let n = chunk.len() as u32;
            let json = serde_json::json!({
                "type": "bundle",
                "id": format!("bundle--{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid()),
                "objects": chunk,
            })
            .to_string();
            let request = pb::PublishRequest {
                kind: pb::Kind::StixBundle as i32,
                level: r.level,
                marking: r.marking.clone().map(|m| pb::Marking {
                    tlp: group_tlp,
                    ..m
                }),
                recipients: r.recipients.clone(),
                cluster: r.cluster.clone(),
                no_reshare: r.no_reshare,
                body: Some(pb::publish_request::Body::Stix(pb::StixBundle { json })),
                ..Default::default()
            };
            out.published
                .push(outbound::publish(st, user, request).await?);
            out.objects_published += n;
        }
    }
    Ok(out)
}

/// Split `objects` under the object and byte limits of one message.
pub fn chunks(objects: Vec<Value>) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for o in objects {
        let n = o.to_string().len();
        if !cur.is_empty() && (cur.len() >= CHUNK_OBJECTS || bytes + n > CHUNK_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += n;
        cur.push(o);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
