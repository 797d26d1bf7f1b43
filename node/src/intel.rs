//! Threat-intelligence service: STIX 2.1 bundles published through the node, object by
//! object. Owns idempotent import (an object this organisation already published at the
//! same version is skipped) and per-object refusals; the checks themselves are
//! [`crate::stix`]'s, the publishing [`crate::outbound`]'s, so every routing and marking rule
//! applies unchanged.

use bluewire_proto::v1 as pb;
use serde_json::Value;

use crate::envelope::Rejected;
use crate::outbound::{self, OutboundError};
use crate::state::NodeState;
use crate::stix;

/// Publish the acceptable, not yet published objects of `r.bundle` as one message.
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
    let mut out = pb::ImportStixResponse::default();
    let mut keep: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (index, o) in objects.iter().enumerate() {
        let v = match stix::check_object(o, tlp) {
            Ok(v) => v,
            Err(reason) => {
                out.refused.push(pb::StixRefusal {
                    index: index as u32,
                    id: o
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    reason,
                });
                continue;
            }
        };
        if !seen.insert((v.id.clone(), v.version.clone())) {
            out.objects_skipped += 1;
            continue;
        }
        let published = st
            .store
            .stix_versions(&v.id)
            .map_err(|source| OutboundError::Store {
                what: "read the STIX index",
                source,
            })?
            .iter()
            .any(|(_, origin, version)| origin == st.org() && *version == v.version);
        if published {
            out.objects_skipped += 1;
        } else {
            keep.push(o.clone());
        }
    }
    if keep.is_empty() {
        return Ok(out);
    }
    out.objects_published = keep.len() as u32;
    let json = serde_json::json!({
        "type": "bundle",
        "id": format!("bundle--{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid()),
        "objects": keep,
    })
    .to_string();
    let request = pb::PublishRequest {
        kind: pb::Kind::StixBundle as i32,
        level: r.level,
        marking: r.marking,
        recipients: r.recipients,
        cluster: r.cluster,
        no_reshare: r.no_reshare,
        body: Some(pb::publish_request::Body::Stix(pb::StixBundle { json })),
        ..Default::default()
    };
    out.published = Some(outbound::publish(st, user, request).await?);
    Ok(out)
}
