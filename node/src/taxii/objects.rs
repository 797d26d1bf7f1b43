//! A collection's objects, as TAXII serves them: the node's feed items of one cluster (or of
//! no cluster) in store order, each turned into its STIX objects, filtered by a [`Query`] and
//! cut into pages at a [`Cursor`].

use std::collections::HashMap;

use bluewire_proto::v1 as pb;
use serde_json::{Value, json};

use super::query::{Cursor, Query};
use super::{STIX_MEDIA, stix};
use crate::cluster::ClusterState;
use crate::state::NodeState;

/// Messages read from the store per step of a scan.
const STEP: usize = 256;

/// A TAXII collection: a cluster this organisation is a member of, or the federation feed.
#[derive(Debug, Clone)]
pub struct Collection {
    pub id: String,
    /// The cluster id ("" for the federation feed).
    pub cluster: String,
    pub title: String,
    pub description: String,
    pub can_write: bool,
    pub exercise: bool,
}

/// The UUID part of a deterministic STIX id: collection ids are the same on every node.
fn collection_id(cluster: &str) -> String {
    let id = stix::export::stix_id("taxii-collection", "", cluster);
    id.rsplit_once("--")
        .map(|(_, u)| u.to_string())
        .unwrap_or(id)
}

impl Collection {
    pub fn federation() -> Collection {
        Collection {
            id: collection_id(""),
            cluster: String::new(),
            title: "federation".into(),
            description:
                "Messages published without a cluster: to configured peers and named recipients"
                    .into(),
            can_write: true,
            exercise: false,
        }
    }

    pub fn of_cluster(c: &ClusterState, me: &str) -> Collection {
        Collection {
            id: collection_id(&c.id),
            cluster: c.id.clone(),
            title: c.id.clone(),
            description: if c.purpose.is_empty() {
                format!("The need-to-know cluster {}", c.id)
            } else {
                c.purpose.clone()
            },
            can_write: c
                .role_of(me)
                .is_some_and(|r| r != pb::ClusterRole::Observer),
            exercise: c.exercise,
        }
    }

    /// The collection resource (section 5.2).
    pub fn resource(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "can_read": true,
            "can_write": self.can_write,
            "media_types": [STIX_MEDIA],
        })
    }
}

/// One object in a collection, where it sits and when this node added it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub date_added_ms: i64,
    pub object: Value,
}

impl Entry {
    /// The object's version: `modified`, `created`, or (cyber-observables) when it was added.
    pub fn version(&self) -> String {
        let v = stix::version_of(&self.object);
        if v.is_empty() {
            stix::export::timestamp(self.date_added_ms)
        } else {
            v
        }
    }

    /// A manifest record (section 5.6).
    pub fn manifest(&self) -> Value {
        json!({
            "id": self.object.get("id").and_then(Value::as_str).unwrap_or(""),
            "date_added": stix::export::timestamp(self.date_added_ms),
            "version": self.version(),
            "media_type": STIX_MEDIA,
        })
    }
}

/// A page of entries, whether more follow, and where the next page starts.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub more: bool,
    pub next: Option<Cursor>,
}

/// A feed message of the collection as STIX objects, or None when it is not in it (another
/// cluster, retracted, a local re-share copy).
fn message_objects(
    st: &NodeState,
    coll: &Collection,
    m: crate::store::StoredMessage,
) -> Result<Option<(i64, Vec<Value>)>, String> {
    if m.reshare {
        return Ok(None);
    }
    let added = m.received_at_ms;
    let item = crate::feed::item_for(st, m).map_err(|e| e.to_string())?;
    let Some(item) = item else { return Ok(None) };
    let in_cluster = match &item.forwarded {
        Some(f) => f.to_cluster.as_str(),
        None => item
            .content
            .as_ref()
            .map(|c| c.cluster.as_str())
            .unwrap_or(""),
    };
    if in_cluster != coll.cluster {
        return Ok(None);
    }
    let Some(content) = item.content.as_ref() else {
        return Ok(None);
    };
    let tlp = item
        .effective_marking
        .as_ref()
        .or(content.marking.as_ref())
        .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
        .unwrap_or_default();
    let mut objects = stix::export::objects(content, tlp);
    // Each message also names its origin: the identity its objects are created by.
    objects.insert(0, stix::export::identity(&content.origin_org));
    Ok(Some((added, objects)))
}

/// The versions of `id` this collection holds: from the store's STIX index (bundle objects
/// may have several, from several messages), or the one at hand.
fn versions_of(
    st: &NodeState,
    coll: &Collection,
    id: &str,
    own: &str,
    cache: &mut HashMap<String, Vec<String>>,
) -> Result<Vec<String>, String> {
    if let Some(v) = cache.get(id) {
        return Ok(v.clone());
    }
    let indexed = st.store.stix_versions(id).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (seq, _, version) in indexed {
        let Some(m) = st.store.get_by_seq(seq).map_err(|e| e.to_string())? else {
            continue;
        };
        if message_objects(st, coll, m)?.is_some() {
            out.push(version);
        }
    }
    if out.is_empty() {
        out.push(own.to_string());
    }
    cache.insert(id.to_string(), out.clone());
    Ok(out)
}

/// One page of the collection's objects passing `q`.
pub fn page(st: &NodeState, coll: &Collection, q: &Query) -> Result<Page, String> {
    let mut page = Page::default();
    let start = q.next.unwrap_or(Cursor { seq: 1, index: 0 });
    let mut after = start.seq.saturating_sub(1);
    let mut versions: HashMap<String, Vec<String>> = HashMap::new();
    // Identities repeat in every message: serve each once per page.
    let mut identities: std::collections::HashSet<String> = Default::default();
    loop {
        let batch = st
            .store
            .read_after(after, STEP)
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            return Ok(page);
        };
        after = last.seq;
        for m in batch {
            let seq = m.seq;
            if q.added_after.is_some_and(|a| m.received_at_ms <= a) {
                continue;
            }
            let Some((added, objects)) = message_objects(st, coll, m)? else {
                continue;
            };
            for (i, o) in objects.into_iter().enumerate() {
                let cursor = Cursor {
                    seq,
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                };
                if cursor < start || !q.admits(&o) {
                    continue;
                }
                let id = o
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if o.get("type").and_then(Value::as_str) == Some("identity")
                    && q.ids.is_empty()
                    && !identities.insert(id.clone())
                {
                    continue;
                }
                let version = stix::version_of(&o);
                if !matches!(q.versions, super::query::Versions::All) {
                    let all = versions_of(st, coll, &id, &version, &mut versions)?;
                    if !q.admits_version(&version, &all) {
                        continue;
                    }
                }
                if page.entries.len() >= q.limit {
                    page.more = true;
                    page.next = Some(cursor);
                    return Ok(page);
                }
                page.entries.push(Entry {
                    date_added_ms: added,
                    object: o,
                });
            }
        }
    }
}
