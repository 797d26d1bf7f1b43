//! Your node's feed: `bluewire subscribe` and how a feed item is printed,
//! one line for people or one JSON object for scripts.

use std::io::Write;

use bluewire_node::client::Connection;
use bluewire_node::envelope::{kind_label, level_label, tlp_label};
use bluewire_proto::v1 as pb;
use clap::Args;

use crate::Output;
use crate::args::{KindArg, LevelArg};
use crate::connection::{ConnArgs, status_err};
use crate::output::ts;

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Resume after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Named durable cursor kept by the node; committed after each message printed.
    #[arg(long)]
    pub durable: Option<String>,
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<KindArg>,
    #[arg(long, value_enum, value_delimiter = ',')]
    pub level: Vec<LevelArg>,
    #[arg(long, value_delimiter = ',')]
    pub origin: Vec<String>,
    /// Only messages published to these clusters (comma-separated ids or names).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Print the backlog and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// A feed item's content, its marking in force, and its title and body as
/// people read them.
fn parts(item: &pb::FeedItem) -> (pb::Content, pb::Marking, String, String) {
    let c = item.content.clone().unwrap_or_default();
    let m = item
        .effective_marking
        .clone()
        .or(c.marking.clone())
        .unwrap_or_default();
    let (title, body) = match &c.body {
        Some(pb::content::Body::FreeText(t)) => (t.title.clone(), t.body.clone()),
        Some(pb::content::Body::Incident(i)) => (i.title.clone(), i.description.clone()),
        Some(pb::content::Body::MarkingChange(m)) => (
            format!("marking change for {}/{}", m.target_origin, m.target_id),
            m.reason.clone(),
        ),
        Some(pb::content::Body::Stix(b)) => (bluewire_node::stix::summary(&b.json), b.json.clone()),
        Some(pb::content::Body::Retraction(r)) => (
            format!("retraction of {}/{}", r.target_origin, r.target_id),
            r.reason.clone(),
        ),
        Some(pb::content::Body::Sealed(s)) => (
            "[encrypted end to end: this node holds no key it was encrypted to]".into(),
            format!(
                "encrypted to {}",
                bluewire_node::e2e::recipients(s).join(", ")
            ),
        ),
        Some(_) => (
            bluewire_node::case::summary(&c),
            bluewire_node::case::case_key(&c)
                .map(|k| format!("case {k}"))
                .unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    (c, m, title, body)
}

/// One feed line for people.
pub fn feed_line(item: &pb::FeedItem) -> String {
    let (c, m, title, _) = parts(item);
    let verified = if item.verified {
        format!(
            "verified ({})",
            item.envelope
                .as_ref()
                .map(|e| e.key_id.as_str())
                .unwrap_or("")
        )
    } else {
        "NOT VERIFIED".to_string()
    };
    format!(
        "#{:<5} {}  from {:<11} {:<16} {:<11} {:<8} {}{}{}{}{}{}  [{}]",
        item.seq,
        ts(c.created_at_ms),
        c.origin_org,
        tlp_label(m.tlp),
        level_label(c.level),
        kind_label(c.kind),
        if c.cluster.is_empty() {
            String::new()
        } else {
            format!("[cluster {}] ", c.cluster)
        },
        if m.exercise { "[EXERCISE] " } else { "" },
        if item.end_to_end { "[E2E] " } else { "" },
        if item.suspect.is_empty() {
            ""
        } else {
            "[SUSPECT: key revoked] "
        },
        if m.classification.is_empty() {
            String::new()
        } else {
            format!("[{}] ", m.classification)
        },
        title,
        verified
    )
}

/// One feed item for scripts.
pub fn feed_json(item: &pb::FeedItem) -> serde_json::Value {
    let (c, m, title, body) = parts(item);
    serde_json::json!({
        "seq": item.seq, "id": c.id, "origin": c.origin_org, "author": c.author,
        "created_at_ms": c.created_at_ms, "kind": kind_label(c.kind), "level": level_label(c.level),
        "tlp": tlp_label(m.tlp), "classification": m.classification, "exercise": m.exercise,
        "recipients": c.recipients, "cluster": c.cluster, "cluster_index": c.cluster_index,
        "title": title, "body": body,
        "verified": item.verified, "signer_org": item.signer_org,
        "key_id": item.envelope.as_ref().map(|e| e.key_id.clone()).unwrap_or_default(),
        "received_from": item.received_from, "received_at_ms": item.received_at_ms,
        "end_to_end": item.end_to_end,
        "suspect": item.suspect,
    })
}

/// Why a feed ended early, for a person: a slow subscriber's disconnection says what the
/// node said and the command that resumes without a gap; anything else as usual.
fn ended(conn: &Connection, durable: Option<&str>, s: tonic::Status) -> anyhow::Error {
    match bluewire_node::client::resume_after(&s) {
        Some(seq) => anyhow::anyhow!(
            "the node ended this subscription: {}\n{}",
            s.message(),
            resume_hint(seq, durable)
        ),
        None => status_err(conn, s),
    }
}

/// The command that resumes a subscription after `seq` (with `--durable`, every item printed
/// was committed, so the durable position is `seq`).
fn resume_hint(seq: u64, durable: Option<&str>) -> String {
    match durable {
        Some(name) => format!(
            "resume without a gap: bluewire subscribe --durable {name} (its position is {seq}), \
             with the same filters"
        ),
        None => {
            format!("resume without a gap: bluewire subscribe --after {seq}, with the same filters")
        }
    }
}

pub async fn subscribe(c: &ConnArgs, a: SubscribeArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let req = pb::SubscribeRequest {
        after_seq: a.after,
        durable_name: a.durable.clone().unwrap_or_default(),
        kinds: a.kind.iter().map(|k| pb::Kind::from(*k) as i32).collect(),
        levels: a.level.iter().map(|l| pb::Level::from(*l) as i32).collect(),
        origins: a.origin.clone(),
        no_follow: a.no_follow,
        clusters: a.cluster.clone(),
        // Each batch signature once per stream; put back below, so what is shown is whole.
        envelope_form: pb::EnvelopeForm::SignatureOnce as i32,
    };
    let mut client = conn.client();
    let mut stream = client
        .subscribe(req)
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    let mut n = 0u64;
    let mut last_printed = a.after;
    let mut restorer = bluewire_node::feed::forms::Restorer::default();
    while let Some(mut item) = stream
        .message()
        .await
        .map_err(|s| ended(&conn, a.durable.as_deref(), s))?
    {
        restorer.restore(&mut item).map_err(|e| {
            anyhow::anyhow!("{e}\n{}", resume_hint(last_printed, a.durable.as_deref()))
        })?;
        let line = match out {
            Output::Json => feed_json(&item).to_string(),
            Output::Table => feed_line(&item),
        };
        // A closed pipe (`subscribe | head`) ends the subscription quietly.
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return Ok(());
        }
        if let Some(name) = &a.durable {
            client
                .commit_cursor(pb::CommitCursorRequest {
                    durable_name: name.clone(),
                    seq: item.seq,
                })
                .await
                .map_err(|s| status_err(&conn, s))?;
        }
        last_printed = item.seq;
        n += 1;
        if a.limit.is_some_and(|l| n >= l) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_subscriber_is_told_the_command_that_resumes() {
        assert_eq!(
            resume_hint(41, None),
            "resume without a gap: bluewire subscribe --after 41, with the same filters"
        );
        let h = resume_hint(41, Some("soc-feed"));
        assert!(h.contains("--durable soc-feed (its position is 41)"), "{h}");
        let mut s = tonic::Status::resource_exhausted("subscriber too slow: …");
        s.metadata_mut().insert(
            bluewire_node::client::RESUME_AFTER_SEQ,
            tonic::metadata::MetadataValue::from(41u64),
        );
        assert_eq!(bluewire_node::client::resume_after(&s), Some(41));
        assert_eq!(
            bluewire_node::client::resume_after(&tonic::Status::resource_exhausted("rate")),
            None,
            "a rate limit is not a disconnection"
        );
    }
}
