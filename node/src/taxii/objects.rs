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
const STEP: usize = 16;
/// Most messages one request reads: a sparse query over a large store answers `more` with a
/// position to go on from instead of scanning it all at once.
pub const SCAN_BUDGET: usize = 20_000;

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
    /// The organisations whose identities open the collection (members ever, or this
    /// organisation and its configured peers), and when the collection began.
    pub orgs: Vec<String>,
    pub created_ms: i64,
}

/// When the federation collection began, as its identities' `date_added`.
const FEDERATION_EPOCH_MS: i64 = 1_767_225_600_000;

/// The UUID part of a deterministic STIX id: collection ids are the same on every node.
fn collection_id(cluster: &str) -> String {
    let id = stix::export::stix_id("taxii-collection", "", cluster);
    id.rsplit_once("--")
        .map(|(_, u)| u.to_string())
        .unwrap_or(id)
}

impl Collection {
    pub fn federation(orgs: Vec<String>) -> Collection {
        Collection {
            id: collection_id(""),
            cluster: String::new(),
            title: "federation".into(),
            description:
                "Messages published without a cluster: to configured peers and named recipients"
                    .into(),
            can_write: true,
            exercise: false,
            orgs,
            created_ms: FEDERATION_EPOCH_MS,
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
            orgs: c.members.keys().cloned().collect(),
            created_ms: c.created_at_ms,
        }
    }

    /// The objects that open the collection (position 0): Bluewire's identity and extension
    /// definition, and the identity of each organisation its objects are created by.
    fn preamble(&self) -> Vec<Value> {
        let mut v = stix::export::preamble();
        v.extend(self.orgs.iter().map(|o| stix::export::identity(o)));
        v
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

/// A stored message as the feed shows it, when it is in the collection (not another
/// cluster's, retracted, or a local re-share copy).
fn in_collection(
    st: &NodeState,
    coll: &Collection,
    m: crate::store::StoredMessage,
) -> Result<Option<pb::FeedItem>, String> {
    if m.reshare {
        return Ok(None);
    }
    let Some(item) = crate::feed::item_for(st, m).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let in_cluster = match &item.forwarded {
        Some(f) => f.to_cluster.as_str(),
        None => item
            .content
            .as_ref()
            .map(|c| c.cluster.as_str())
            .unwrap_or(""),
    };
    Ok((in_cluster == coll.cluster).then_some(item))
}

/// A feed message of the collection as STIX objects, or None when it is not in it.
fn message_objects(
    st: &NodeState,
    coll: &Collection,
    m: crate::store::StoredMessage,
) -> Result<Option<(i64, Vec<Value>)>, String> {
    let added = m.received_at_ms;
    let Some(item) = in_collection(st, coll, m)? else {
        return Ok(None);
    };
    let Some(content) = item.content.as_ref() else {
        return Ok(None);
    };
    let tlp = item
        .effective_marking
        .as_ref()
        .or(content.marking.as_ref())
        .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
        .unwrap_or_default();
    Ok(Some((added, stix::export::objects(content, tlp))))
}

/// Which messages are in the collection, as far as this request has looked.
type Visible = HashMap<u64, bool>;

/// The versions of `id` this collection holds: from the store's STIX index (bundle objects
/// may have several, from several messages), or the one at hand (in message `seq`).
fn versions_of(
    st: &NodeState,
    coll: &Collection,
    (id, own, seq): (&str, &str, u64),
    cache: &mut HashMap<String, Vec<String>>,
    visible: &mut Visible,
) -> Result<Vec<String>, String> {
    // Bluewire makes one object per message: one version, by construction.
    if stix::export::is_bluewire_id(id) {
        return Ok(vec![own.to_string()]);
    }
    if let Some(v) = cache.get(id) {
        return Ok(v.clone());
    }
    let indexed = st.store.stix_versions(id).map_err(|e| e.to_string())?;
    // The usual case: the message at hand is the only one holding the object.
    if indexed.iter().all(|(s, ..)| *s == seq) {
        return Ok(vec![own.to_string()]);
    }
    let mut out = Vec::new();
    for (s, _, version) in indexed {
        let shown = match visible.get(&s) {
            Some(v) => *v,
            None => {
                let v = match st.store.get_by_seq(s).map_err(|e| e.to_string())? {
                    Some(m) => in_collection(st, coll, m)?.is_some(),
                    None => false,
                };
                visible.insert(s, v);
                v
            }
        };
        if shown {
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
    let mut versions: HashMap<String, Vec<String>> = HashMap::new();
    let mut visible = Visible::new();
    select(
        (coll.created_ms, coll.preamble()),
        |after| {
            let batch = st
                .store
                .read_after(after, STEP)
                .map_err(|e| e.to_string())?;
            batch
                .into_iter()
                .map(|m| {
                    let seq = m.seq;
                    // Not even decoded when added_after leaves it out.
                    if q.added_after.is_some_and(|a| m.received_at_ms <= a) {
                        return Ok((seq, None));
                    }
                    Ok((seq, message_objects(st, coll, m)?))
                })
                .collect()
        },
        |id, own, seq| versions_of(st, coll, (id, own, seq), &mut versions, &mut visible),
        q,
        SCAN_BUDGET,
    )
}

/// A collection read from a position: the preamble at sequence 0, then messages in store
/// order, each a (sequence, its (date added, objects) when it is in the collection). Pure:
/// `read_after(seq)` gives the next messages after `seq` (none at the end), `versions(id,
/// own)` the versions of an object the collection holds.
pub fn select<E>(
    preamble: (i64, Vec<Value>),
    mut read_after: impl FnMut(u64) -> Result<Vec<(u64, Option<(i64, Vec<Value>)>)>, E>,
    mut versions: impl FnMut(&str, &str, u64) -> Result<Vec<String>, E>,
    q: &Query,
    budget: usize,
) -> Result<Page, E> {
    let mut page = Page::default();
    let start = q.next.unwrap_or(Cursor { seq: 0, index: 0 });
    let mut take = |cursor: Cursor, added: i64, o: Value, page: &mut Page| -> Result<bool, E> {
        if cursor < start || !q.admits(&o) {
            return Ok(true);
        }
        if !matches!(q.versions, super::query::Versions::All) {
            let id = o.get("id").and_then(Value::as_str).unwrap_or("");
            let own = stix::version_of(&o);
            if !q.admits_version(&own, &versions(id, &own, cursor.seq)?) {
                return Ok(true);
            }
        }
        if page.entries.len() >= q.limit {
            page.more = true;
            page.next = Some(cursor);
            return Ok(false);
        }
        page.entries.push(Entry {
            date_added_ms: added,
            object: o,
        });
        Ok(true)
    };
    let (added, objects) = preamble;
    if start.seq == 0 && q.added_after.is_none_or(|a| added > a) {
        for (i, o) in objects.into_iter().enumerate() {
            let cursor = Cursor {
                seq: 0,
                index: u32::try_from(i).unwrap_or(u32::MAX),
            };
            if !take(cursor, added, o, &mut page)? {
                return Ok(page);
            }
        }
    }
    let mut after = start.seq.saturating_sub(1);
    let mut read = 0usize;
    loop {
        if read >= budget {
            // Out of budget: say where to go on from (nothing of `after` was skipped).
            page.more = true;
            page.next = Some(Cursor {
                seq: after + 1,
                index: 0,
            });
            return Ok(page);
        }
        let batch = read_after(after)?;
        let Some((last, _)) = batch.last() else {
            return Ok(page);
        };
        after = *last;
        read += batch.len();
        for (seq, message) in batch {
            let Some((added, objects)) = message else {
                continue;
            };
            if q.added_after.is_some_and(|a| added <= a) {
                continue;
            }
            for (i, o) in objects.into_iter().enumerate() {
                let cursor = Cursor {
                    seq,
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                };
                if !take(cursor, added, o, &mut page)? {
                    return Ok(page);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taxii::query;
    use proptest::prelude::*;

    const ALL: &[&str] = query::OBJECT_PARAMS;

    fn obj(seq: u64, i: usize) -> Value {
        json!({"type": "indicator", "id": format!("indicator--{seq}-{i}"), "modified": "2026-01-01T00:00:00.000Z"})
    }

    /// An in-memory store: (seq, date added, objects or None when not in the collection).
    type Store = Vec<(u64, i64, Option<Vec<Value>>)>;

    fn run(store: &Store, q: &Query) -> Page {
        run_with(store, q, usize::MAX)
    }

    fn run_with(store: &Store, q: &Query, budget: usize) -> Page {
        select(
            (5, vec![json!({"type": "identity", "id": "identity--p"})]),
            |after| {
                Ok::<_, ()>(
                    store
                        .iter()
                        .filter(|(s, ..)| *s > after)
                        .take(3)
                        .map(|(s, a, o)| (*s, o.clone().map(|o| (*a, o))))
                        .collect(),
                )
            },
            |_, own, _| Ok(vec![own.to_string()]),
            q,
            budget,
        )
        .expect("in memory")
    }

    fn ids(p: &Page) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| e.object["id"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn pages_filters_and_positions() {
        let store: Store = vec![
            (1, 10, Some(vec![obj(1, 0), obj(1, 1)])),
            (2, 20, None),
            (3, 30, Some(vec![obj(3, 0)])),
        ];
        let q = query::parse(Some("limit=2"), ALL, 100, 100).expect("q");
        let p = run(&store, &q);
        assert_eq!(ids(&p), ["identity--p", "indicator--1-0"]);
        assert!(p.more);
        assert_eq!(p.next, Some(Cursor { seq: 1, index: 1 }));
        let q2 = query::parse(
            Some(&format!(
                "limit=2&next={}",
                Cursor { seq: 1, index: 1 }.token()
            )),
            ALL,
            100,
            100,
        )
        .expect("q");
        let p2 = run(&store, &q2);
        assert_eq!(ids(&p2), ["indicator--1-1", "indicator--3-0"]);
        assert!(!p2.more && p2.next.is_none());
        assert_eq!(p2.entries[1].date_added_ms, 30);
        // added_after skips the preamble and what was added before.
        let after =
            query::parse(Some("added_after=1970-01-01T00:00:00.015Z"), ALL, 100, 100).expect("q");
        assert_eq!(ids(&run(&store, &after)), ["indicator--3-0"]);
        // A page that ends exactly at the end says no more.
        let exact = query::parse(Some("limit=4"), ALL, 100, 100).expect("q");
        let p = run(&store, &exact);
        assert_eq!((p.entries.len(), p.more), (4, false));
        // match[type] and versions.
        let t = query::parse(Some("match[type]=identity"), ALL, 100, 100).expect("q");
        assert_eq!(ids(&run(&store, &t)), ["identity--p"]);
        // A scan out of budget says where to go on from, and going on loses nothing.
        let none = query::parse(Some("match[type]=malware"), ALL, 100, 100).expect("q");
        let p = run_with(&store, &none, 1);
        assert!(p.entries.is_empty() && p.more);
        assert_eq!(p.next, Some(Cursor { seq: 4, index: 0 }));
        let all = query::parse(Some("limit=100"), ALL, 100, 100).expect("q");
        let mut got = ids(&run_with(&store, &all, 1));
        let mut next = run_with(&store, &all, 1).next;
        while let Some(n) = next {
            let q = Query {
                next: Some(n),
                ..all.clone()
            };
            let p = run_with(&store, &q, 1);
            got.extend(ids(&p));
            next = p.next;
        }
        assert_eq!(got, ids(&run(&store, &all)));
    }

    proptest! {
        /// Paging while messages keep arriving: whatever the page size and however many
        /// messages arrive between pages, every object present when the paging ends is
        /// returned exactly once, in store order.
        #[test]
        fn paging_is_exactly_once_while_messages_arrive(
            initial in proptest::collection::vec((any::<bool>(), 0usize..4), 0..12),
            arrivals in proptest::collection::vec(proptest::collection::vec((any::<bool>(), 0usize..4), 0..4), 0..12),
            limit in 1usize..7,
        ) {
            let mut store: Store = Vec::new();
            let push = |store: &mut Store, (inside, n): (bool, usize)| {
                let seq = store.len() as u64 + 1;
                let objects = inside.then(|| (0..n).map(|i| obj(seq, i)).collect());
                store.push((seq, seq as i64, objects));
            };
            for m in initial {
                push(&mut store, m);
            }
            let mut seen = Vec::new();
            let mut next: Option<Cursor> = None;
            let mut arrivals = arrivals.into_iter();
            for _ in 0..1000 {
                let q = Query { limit, next, ..query::parse(None, ALL, 100, 100).expect("q") };
                let p = run(&store, &q);
                seen.extend(ids(&p));
                if !p.more {
                    break;
                }
                next = p.next;
                for m in arrivals.next().unwrap_or_default() {
                    push(&mut store, m);
                }
            }
            // Everything that arrived after the last page is not expected yet.
            let mut want = vec!["identity--p".to_string()];
            for (_, _, o) in &store {
                for o in o.iter().flatten() {
                    want.push(o["id"].as_str().unwrap_or("").to_string());
                }
            }
            let got: std::collections::HashSet<&String> = seen.iter().collect();
            prop_assert_eq!(got.len(), seen.len(), "an object came twice: {:?}", seen);
            prop_assert_eq!(&seen[..], &want[..seen.len()]);
            prop_assert_eq!(seen.len(), want.len());
        }
    }
}
