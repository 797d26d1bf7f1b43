//! What this node knows, as the pure decision functions see it: CA-certified
//! signing keys, profiles and cluster states, and the messages it holds with
//! their standing. A read-only trait, so that ingress and outbound decisions
//! are pure functions of (message, knowledge, time) — the running node
//! implements it over its store and caches, tests over plain maps. Also the
//! one place that builds a routing [`Context`]. Must never write anything or
//! reach the network.

use std::sync::Arc;

use bluewire_proto::v1::Content;

use crate::cluster::ClusterState;
use crate::markings::Standing;
use crate::pki::OrgProfile;
use crate::policy::Direction;
use crate::routing::{Context, Decision, Router};

/// Read-only knowledge a decision may consult.
pub trait Known {
    /// This node's organisation.
    fn me(&self) -> &str;
    /// A CA-certified signing key by id: (organisation, raw public key).
    fn key(&self, key_id: &str) -> Option<(String, Vec<u8>)>;
    /// This node's verified view of a cluster.
    fn cluster(&self, id: &str) -> Option<Arc<ClusterState>>;
    /// An organisation's CA-asserted profile: from the cluster's log when given, else from
    /// any certificate this node has verified.
    fn profile(&self, org: &str, cluster: Option<&ClusterState>) -> Option<Arc<OrgProfile>>;
    /// A message this node holds, with what control messages made of it; an
    /// error when the store cannot be read.
    fn held(&self, origin: &str, id: &str) -> Result<Option<(Content, Standing)>, String>;
    /// What control messages this node holds made of `content`, whether or not the
    /// message itself is held here.
    fn standing(&self, content: &Content) -> Result<Standing, String>;
    /// This organisation's certified decryption keys the node holds (the current one first,
    /// then those retired by `pki rotate`): a body encrypted end to end to this organisation
    /// is opened and validated with the one it was encrypted to.
    fn decryptors(&self) -> &[crate::e2e::RecipientKey] {
        &[]
    }
    /// Did a certificate of this organisation, as this node knows them (its current one and
    /// those it had before), certify key `key_id`?
    fn certified_own_key(&self, _key_id: &str) -> bool {
        false
    }
    /// From when (unix ms) signing key `key_id` is not trusted: its certificate was revoked
    /// (from its stated compromise time, else from the revocation). None: trusted.
    fn key_distrusted_since(&self, _key_id: &str) -> Option<i64> {
        None
    }
    /// Batch signatures this node already verified (a cache: a check on the same bytes is
    /// skipped, never decided differently). None: verify every envelope in full.
    fn verified_batches(&self) -> Option<&crate::envelope::VerifiedBatches> {
        None
    }
}

/// Why an envelope signed with `key_id` is refused on arrival: its certificate is revoked.
/// Whatever the content says its creation time is (the key's holder chooses it), nothing new
/// signed with a revoked key is accepted. None: trusted.
pub fn refuse_signer(known: &impl Known, key_id: &str) -> Option<String> {
    let since = known.key_distrusted_since(key_id)?;
    Some(format!(
        "signed with key {key_id}, whose certificate was revoked (not trusted since {}): nothing new signed with it is accepted",
        crate::clock::rfc3339(since)
    ))
}

/// Is every signing key `org`'s certificate (as this node knows it) certifies distrusted
/// (its certificate revoked)? False for an organisation this node knows no keys of.
pub fn org_revoked(known: &impl Known, org: &str) -> bool {
    known.profile(org, None).is_some_and(|p| {
        !p.signing_keys.is_empty()
            && p.signing_keys
                .iter()
                .all(|k| known.key_distrusted_since(&k.key_id).is_some())
    })
}

/// Why a held message `c`, signed with `key_id` and stored here at `received_at_ms`, is
/// suspect: created, or received, at or after the time from which its key is not trusted
/// (a stated compromise, else the revocation). What it signed and this node held before
/// then stays trusted. None: nothing against it.
pub fn suspect(
    known: &impl Known,
    key_id: &str,
    c: &Content,
    received_at_ms: i64,
) -> Option<String> {
    let since = known.key_distrusted_since(key_id)?;
    (c.created_at_ms >= since || received_at_ms >= since).then(|| {
        format!(
            "signed with key {key_id}, whose certificate was revoked: not trusted for what it signed since {}; this was created at {} and received at {}",
            crate::clock::rfc3339(since),
            crate::clock::rfc3339(c.created_at_ms),
            crate::clock::rfc3339(received_at_ms)
        )
    })
}

/// The routing decision for one (message, recipient) with what `known` knows
/// of the cluster and profiles, at `now_ms`.
pub fn route(
    known: &impl Known,
    router: &Router,
    content: &Content,
    recipient: &str,
    direction: Direction,
    now_ms: i64,
) -> Decision {
    let cluster = if content.cluster.is_empty() {
        None
    } else {
        known.cluster(&content.cluster)
    };
    let rp = known.profile(recipient, cluster.as_deref());
    let op = known.profile(&content.origin_org, cluster.as_deref());
    router.decide(
        content,
        Context {
            direction,
            recipient,
            recipient_profile: rp.as_deref(),
            origin_profile: op.as_deref(),
            cluster: cluster.as_deref(),
            now_ms,
        },
    )
}

/// Is `org` in `target`'s audience (see [`Router::audience`])? Its origin
/// always is. Depends on no clock and no arrival order.
pub fn in_audience(
    known: &impl Known,
    router: &Router,
    target: &Content,
    org: &str,
) -> Result<(), String> {
    if target.origin_org == org {
        return Ok(());
    }
    let cluster = if target.cluster.is_empty() {
        None
    } else {
        known.cluster(&target.cluster)
    };
    let profile = known.profile(org, cluster.as_deref());
    router.audience(target, org, profile.as_deref())
}

/// The crisis-workflow rules for a workflow message (see [`crate::case`]): the signer's
/// certified functions and levels allow it, and it follows the case and the step it names as
/// far as `known` holds them. The same call at the origin and at every receiver.
pub fn workflow(known: &impl Known, router: &Router, c: &Content) -> Result<(), String> {
    if !crate::case::is_case_message(c) {
        return Ok(());
    }
    let cluster = if c.cluster.is_empty() {
        None
    } else {
        known.cluster(&c.cluster)
    };
    let signer = known.profile(&c.origin_org, cluster.as_deref());
    crate::case::authority(c, signer.as_deref())?;
    // Mandatory recipients among the members when the step was sent (its cluster index).
    for (org, why) in mandatory_recipients(cluster.as_deref(), c) {
        in_audience(known, router, c, &org).map_err(|refusal| {
            format!(
                "{org} must receive this step ({why}), but it could not: {refusal}; the step is refused rather than silently narrowed"
            )
        })?;
    }
    let held = |r: Option<(&str, &str)>| -> Result<Option<Content>, String> {
        match r {
            Some((o, i)) if (o, i) != (c.origin_org.as_str(), c.id.as_str()) => {
                Ok(known.held(o, i)?.map(|h| h.0))
            }
            _ => Ok(None),
        }
    };
    let case = held(crate::case::case_of(c))?;
    let prev = held(crate::case::previous(c))?;
    crate::case::follows(c, case.as_ref(), prev.as_ref())
}

/// The organisations `c` must reach (see [`crate::case::mandatory`]), among the members of
/// its cluster at the log index it claims.
pub fn mandatory_recipients(
    cluster: Option<&ClusterState>,
    c: &Content,
) -> Vec<(String, &'static str)> {
    let Some(cl) = cluster.filter(|_| crate::case::is_case_message(c)) else {
        return Vec::new();
    };
    let at = c.cluster_index;
    let members: Vec<(&str, &crate::pki::OrgProfile)> = cl
        .members
        .values()
        .filter(|m| {
            m.periods
                .iter()
                .any(|(from, end)| *from <= at && end.is_none_or(|(e, _)| at < e))
        })
        .map(|m| (m.org.as_str(), &*m.profile))
        .collect();
    crate::case::mandatory(c, &members)
}

/// An in-memory [`Known`] for unit tests of the pure decisions: what a node
/// knows, as plain maps.
#[cfg(test)]
pub(crate) mod testkit {
    use std::collections::HashMap;
    use std::sync::Arc;

    use bluewire_proto::v1::Content;

    use super::Known;
    use crate::cluster::ClusterState;
    use crate::cluster::tests::{ORGS, key};
    use crate::markings::{Standing, standing_from};
    use crate::pki::{Level, OrgProfile};
    use crate::store::AnnotationRecord;

    /// A held message and its annotations.
    pub(crate) type Held = (Content, Vec<(String, AnnotationRecord)>);

    #[derive(Default)]
    pub(crate) struct Memory {
        pub me: String,
        pub keys: HashMap<String, (String, Vec<u8>)>,
        pub clusters: HashMap<String, Arc<ClusterState>>,
        pub profiles: HashMap<String, OrgProfile>,
        /// (origin, id) → content and its annotations.
        pub held: HashMap<(String, String), Held>,
        /// (origin, id) → annotations of a message not held here (a control message that
        /// arrived before its target, a re-share whose original is not kept).
        pub annotated: HashMap<(String, String), Vec<(String, AnnotationRecord)>>,
        /// key id → from when it is not trusted (its certificate revoked).
        pub distrusted: HashMap<String, i64>,
        /// This organisation's decryption keys (current first, then retired ones).
        pub decryptors: Vec<crate::e2e::RecipientKey>,
        /// Key ids this organisation's certificates certified (see `certified_own_key`).
        pub own_keys: Vec<String>,
    }

    impl Memory {
        /// `me` among the cluster fixture's five organisations, all certified for the
        /// technical and operational levels, every signing key known.
        pub(crate) fn new(me: &str) -> Self {
            let mut m = Memory {
                me: me.to_string(),
                ..Default::default()
            };
            for (i, org) in ORGS.iter().enumerate() {
                let k = key(i);
                m.keys
                    .insert(k.key_id().to_string(), (org.to_string(), k.public_key()));
                m.profiles.insert(org.to_string(), profile(org));
            }
            m
        }

        pub(crate) fn with_cluster(mut self, c: &ClusterState) -> Self {
            self.clusters.insert(c.id.clone(), Arc::new(c.clone()));
            self
        }

        pub(crate) fn hold(&mut self, c: &Content, annotations: Vec<(String, AnnotationRecord)>) {
            self.held.insert(
                (c.origin_org.clone(), c.id.clone()),
                (c.clone(), annotations),
            );
        }
    }

    pub(crate) fn profile(org: &str) -> OrgProfile {
        OrgProfile {
            org: org.into(),
            country: "BE".into(),
            org_type: "csirt".into(),
            levels: vec![Level::Technical, Level::Operational],
            sectors: vec![],
            accreditations: vec![],
            endpoint: "https://127.0.0.1:7443".into(),
            signing_keys: vec![],
            encryption_keys: vec![],
            functions: Vec::new(),
        }
    }

    impl Known for Memory {
        fn me(&self) -> &str {
            &self.me
        }
        fn key(&self, key_id: &str) -> Option<(String, Vec<u8>)> {
            self.keys.get(key_id).cloned()
        }
        fn cluster(&self, id: &str) -> Option<Arc<ClusterState>> {
            self.clusters.get(id).cloned()
        }
        fn profile(&self, org: &str, cluster: Option<&ClusterState>) -> Option<Arc<OrgProfile>> {
            cluster
                .and_then(|c| c.members.get(org))
                .map(|m| m.profile.clone())
                .or_else(|| self.profiles.get(org).cloned().map(Arc::new))
        }
        fn held(&self, origin: &str, id: &str) -> Result<Option<(Content, Standing)>, String> {
            Ok(self
                .held
                .get(&(origin.to_string(), id.to_string()))
                .map(|(c, a)| (c.clone(), standing_from(c, a))))
        }
        fn standing(&self, content: &Content) -> Result<Standing, String> {
            let key = (content.origin_org.clone(), content.id.clone());
            let annotations = self
                .held
                .get(&key)
                .map(|h| &h.1)
                .or_else(|| self.annotated.get(&key))
                .cloned()
                .unwrap_or_default();
            Ok(standing_from(content, &annotations))
        }
        fn key_distrusted_since(&self, key_id: &str) -> Option<i64> {
            self.distrusted.get(key_id).copied()
        }
        fn decryptors(&self) -> &[crate::e2e::RecipientKey] {
            &self.decryptors
        }
        fn certified_own_key(&self, key_id: &str) -> bool {
            self.own_keys.iter().any(|k| k == key_id)
        }
    }
}
