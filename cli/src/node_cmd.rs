//! Operator commands about the node itself: status, peers, rejections and
//! metrics.

use bluewire_proto::v1 as pb;

use crate::Output;
use crate::connection::{ConnArgs, status_err};
use crate::output::{table, ts};

fn peer_rows(peers: &[pb::PeerStatus]) -> Vec<Vec<String>> {
    peers
        .iter()
        .map(|p| {
            vec![
                p.org.clone(),
                if p.functions.is_empty() {
                    "-".into()
                } else {
                    p.functions.join(",")
                },
                p.endpoint.clone(),
                if p.connected {
                    "up".into()
                } else if p.consecutive_failures > 0 {
                    "down".into()
                } else {
                    "idle".into()
                },
                if p.path.is_empty() {
                    "-".into()
                } else {
                    p.path.clone()
                },
                p.outbox_depth.to_string(),
                p.relay_depth.to_string(),
                p.delivered.to_string(),
                if p.kx_group.is_empty() {
                    "-".into()
                } else {
                    p.kx_group.clone()
                },
                ts(p.last_success_ms),
                p.last_error.clone(),
            ]
        })
        .collect()
}

fn peers_json(peers: &[pb::PeerStatus]) -> serde_json::Value {
    serde_json::Value::Array(
        peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "org": p.org, "endpoint": p.endpoint, "connected": p.connected,
                    "outbox_depth": p.outbox_depth, "delivered": p.delivered,
                    "consecutive_failures": p.consecutive_failures, "last_error": p.last_error,
                    "last_success_ms": p.last_success_ms, "kx_group": p.kx_group,
                    "functions": p.functions, "path": p.path, "relay_depth": p.relay_depth,
                })
            })
            .collect(),
    )
}

const PEER_HEADERS: [&str; 11] = [
    "PEER",
    "FUNCTIONS",
    "ENDPOINT",
    "LINK",
    "PATH",
    "OUTBOX",
    "CARRYING",
    "DELIVERED",
    "KX",
    "LAST OK",
    "LAST ERROR",
];

pub async fn status(c: &ConnArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let s = conn
        .admin()
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "org": s.org, "version": s.version, "listen": s.listen, "messages": s.messages,
                "last_seq": s.last_seq, "rejected": s.rejected, "started_at_ms": s.started_at_ms,
                "peers": peers_json(&s.peers),
            })
        ),
        Output::Table => {
            println!(
                "node {} v{} on {} — {} messages (last seq {}), {} rejected, up since {}",
                s.org,
                s.version,
                s.listen,
                s.messages,
                s.last_seq,
                s.rejected,
                ts(s.started_at_ms)
            );
            table(&PEER_HEADERS, &peer_rows(&s.peers));
        }
    }
    Ok(())
}

pub async fn peers(c: &ConnArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let p = conn
        .admin()
        .peers(pb::PeersRequest {})
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!("{}", peers_json(&p.peers)),
        Output::Table => table(&PEER_HEADERS, &peer_rows(&p.peers)),
    }
    Ok(())
}

pub async fn rejections(c: &ConnArgs, limit: u32, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .admin()
        .rejections(pb::RejectionsRequest { limit })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(
                r.rejections
                    .iter()
                    .map(|x| serde_json::json!({"at_ms": x.at_ms, "from": x.from_peer, "id": x.id, "reason": x.reason}))
                    .collect()
            )
        ),
        Output::Table => table(
            &["AT", "FROM", "ID", "REASON"],
            &r.rejections
                .iter()
                .map(|x| vec![ts(x.at_ms), x.from_peer.clone(), x.id.clone(), x.reason.clone()])
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

pub async fn metrics(c: &ConnArgs) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let m = conn
        .admin()
        .metrics(pb::MetricsRequest {})
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    print!("{}", m.text);
    Ok(())
}
