//! Relaying: carrying an envelope to a member its sender cannot reach, through members
//! that can (store and forward). The sender — the origin, or the forwarder of a re-share:
//! whoever would have delivered it directly — signs a [`pb::RelayInstruction`] naming the
//! one recipient, the envelope (by hash) and a hop limit. Each relay appends itself to the
//! path when it takes the envelope on, keeps it on disk, and hands it to the recipient (or,
//! within the hop limit, to a further relay). The origin's signature is never touched.
//!
//! Pure: these functions decide whether an instruction holds, whether a member may carry a
//! message, and which member to try. The relay and the recipient run the same checks
//! ([`check`], [`may_carry`]), and the sender chooses relays with [`may_carry`] too.
//!
//! Who may carry a message: a member that is itself a permitted recipient of it under the
//! routing rules, or any member when the body is encrypted end to end (it then sees only
//! routing metadata). TLP:RED is carried only encrypted end to end.

use bluewire_proto::v1 as pb;
use prost::Message;

use crate::envelope::{Rejected, check_signature, content_hash};
use crate::known::{self, Known};
use crate::policy::Direction;
use crate::routing::Router;
use crate::signing::SigningKey;

/// Domain-separation context of a relay instruction's signature.
pub const RELAY_CONTEXT: &[u8] = b"bluewire/v1/relay\0";

/// Most relays an instruction may allow.
pub const MAX_HOPS: u32 = 3;

/// A first relay takes on only instructions signed at most this long ago (ms): a former
/// hop cannot replay one to a relay later (the recipient deduplicates anyway).
pub const FRESH_MS: i64 = 10 * 60 * 1000;

/// Nor signed more than this far in the future (ms): clocks differ a little.
pub const SKEW_MS: i64 = 5 * 60 * 1000;

/// How long a relay keeps trying to hand on what it carries (ms), counted from the sender's
/// instruction; then it gives up (the sender still holds its own copy).
pub const MAX_CARRY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The hash a relay instruction binds: the content bytes, then the forwarding attestation's
/// bytes when the envelope is a re-share (the relay field itself is not covered).
pub fn envelope_hash(env: &pb::Envelope) -> String {
    let attestation = env
        .forwarding
        .as_ref()
        .map(|f| f.attestation.as_slice())
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(64 + attestation.len() + 2);
    bytes.extend_from_slice(content_hash(&env.content).as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(content_hash(attestation).as_bytes());
    content_hash(&bytes)
}

/// `env` with `from`'s signed instruction to carry it to `to` through at most `hop_limit`
/// relays (clamped to 1..=[`MAX_HOPS`]); the path starts empty. `sender_cert`: the sender's
/// node certificate, carried along.
pub fn instruct(
    env: &pb::Envelope,
    (from, sender_cert): (&str, &[u8]),
    to: &str,
    hop_limit: u32,
    key: &SigningKey,
    now_ms: i64,
) -> pb::Envelope {
    let instruction = pb::RelayInstruction {
        from_org: from.to_string(),
        to_org: to.to_string(),
        envelope_hash: envelope_hash(env),
        hop_limit: hop_limit.clamp(1, MAX_HOPS),
        at_ms: now_ms,
    }
    .encode_to_vec();
    pb::Envelope {
        relay: Some(pb::Relay {
            signature: key.sign(RELAY_CONTEXT, &instruction),
            instruction,
            key_id: key.key_id().to_string(),
            hops: Vec::new(),
            sender_cert: sender_cert.to_vec(),
        }),
        ..env.clone()
    }
}

/// A relay instruction that verified, with the path as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The sender who signed the instruction (it stands where the handing peer stands
    /// for a direct delivery).
    pub from: String,
    pub to: String,
    pub key_id: String,
    pub hop_limit: u32,
    pub hops: Vec<String>,
    /// When the sender signed it (unix ms).
    pub at_ms: i64,
}

impl Checked {
    /// Whether this node (`me`) is asked to carry the envelope on rather than receive it.
    pub fn carry(&self, me: &str) -> bool {
        self.to != me
    }

    /// "A via B, C" for audit and logs.
    pub fn path(&self) -> String {
        format!("{} via {}", self.from, self.hops.join(", "))
    }
}

/// Verify `env`'s relay instruction, handed over by `peer` to this organisation `me`:
/// signed by a certified key of the sender it names, for exactly this envelope, with a
/// hop limit in range, and a path that holds — the handing peer is its last hop (or, with
/// no hop yet, the sender itself), nobody appears twice, neither the sender nor the
/// recipient is a hop, and `me` is not already on it (a loop).
pub fn check(
    env: &pb::Envelope,
    peer: &str,
    me: &str,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
) -> Result<Checked, Rejected> {
    let Some(r) = &env.relay else {
        return Err(Rejected::Relay("no relay instruction".into()));
    };
    let (signer, pk) =
        lookup(&r.key_id).ok_or_else(|| Rejected::UnknownKey(crate::offline::clip(&r.key_id)))?;
    check_signature(&pk, RELAY_CONTEXT, &r.instruction, &r.signature, &r.key_id)?;
    let i = pb::RelayInstruction::decode(r.instruction.as_slice())
        .map_err(|e| Rejected::Malformed(format!("relay instruction: {e}")))?;
    if i.from_org != signer {
        return Err(Rejected::OriginMismatch {
            claimed: i.from_org,
            signer,
        });
    }
    let bad = |why: String| Err(Rejected::Relay(why));
    if i.envelope_hash != envelope_hash(env) {
        return bad("the relay instruction is for another envelope".into());
    }
    if !crate::pki::is_valid_id(&i.to_org) || i.to_org == i.from_org {
        return bad(format!(
            "the relay instruction names no usable recipient ({:?})",
            crate::offline::clip(&i.to_org)
        ));
    }
    if !(1..=MAX_HOPS).contains(&i.hop_limit) {
        return bad(format!("hop limit {} is outside 1-{MAX_HOPS}", i.hop_limit));
    }
    if r.hops.len() > i.hop_limit as usize {
        return bad(format!(
            "{} hops, over the sender's hop limit of {}",
            r.hops.len(),
            i.hop_limit
        ));
    }
    for (n, h) in r.hops.iter().enumerate() {
        if !crate::pki::is_valid_id(h)
            || *h == i.from_org
            || *h == i.to_org
            || r.hops[..n].contains(h)
        {
            return bad(format!(
                "the path {:?} is not a path from {} to {} (a hop is empty, repeated, or an endpoint)",
                r.hops
                    .iter()
                    .map(|h| crate::offline::clip(h))
                    .collect::<Vec<_>>(),
                i.from_org,
                crate::offline::clip(&i.to_org)
            ));
        }
    }
    let hander = r.hops.last().unwrap_or(&i.from_org);
    if hander != peer {
        return bad(format!(
            "handed over by {peer}, but the path says {} carries it last: a relay hands over only what it took on itself",
            crate::offline::clip(hander)
        ));
    }
    if r.hops.iter().any(|h| h == me) || i.from_org == me {
        return bad(format!(
            "{me} already carried it (a relay loop): {} via {}",
            i.from_org,
            r.hops.join(", ")
        ));
    }
    Ok(Checked {
        from: i.from_org,
        to: i.to_org,
        key_id: r.key_id.clone(),
        hop_limit: i.hop_limit,
        hops: r.hops.clone(),
        at_ms: i.at_ms,
    })
}

/// Whether a relay (this node, `me`) may take one more hop under `c`'s limit, at `now_ms`:
/// a first relay only a fresh instruction (signed within [`FRESH_MS`]), any relay none older
/// than [`MAX_CARRY_MS`] (what it would give up on anyway) or from the future; and `env`
/// with `me` appended to its path, as it is stored and handed on.
pub fn take_on(
    env: &pb::Envelope,
    c: &Checked,
    me: &str,
    now_ms: i64,
) -> Result<pb::Envelope, Rejected> {
    let age = now_ms.saturating_sub(c.at_ms);
    let limit = if c.hops.is_empty() {
        FRESH_MS
    } else {
        MAX_CARRY_MS
    };
    if age > limit || age < -SKEW_MS {
        return Err(Rejected::Relay(format!(
            "the relay instruction was signed at {}: a relay takes on only instructions signed within the last {} s, and at most {} s ahead of its clock",
            crate::clock::rfc3339(c.at_ms),
            limit / 1000,
            SKEW_MS / 1000
        )));
    }
    if c.hops.len() >= c.hop_limit as usize {
        return Err(Rejected::Relay(format!(
            "the sender allowed {} relay hop(s) and the path {} uses them all",
            c.hop_limit,
            c.path()
        )));
    }
    let mut out = env.clone();
    if let Some(r) = out.relay.as_mut() {
        r.hops.push(me.to_string());
    }
    Ok(out)
}

/// Whether `org` may carry `view` (a message as routing sees it: a re-share's forwarded
/// view): its body is encrypted end to end (a relay then sees routing metadata only), or
/// `org` is a permitted recipient under the routing rules. TLP:RED only encrypted end to
/// end, whoever carries it. `Err(Some)`: not decidable yet (this node's view of the
/// cluster is behind).
pub fn may_carry(
    known: &impl Known,
    router: &Router,
    view: &pb::Content,
    org: &str,
    now_ms: i64,
) -> Result<(), CarryRefused> {
    let sealed = matches!(view.body, Some(pb::content::Body::Sealed(_)));
    if sealed {
        return Ok(());
    }
    let red = view.marking.as_ref().map(|m| m.tlp) == Some(pb::Tlp::Red as i32);
    if red {
        return Err(CarryRefused::No(
            "TLP:RED is relayed only encrypted end to end to its recipients (publish --encrypt): it waits for the direct link".into(),
        ));
    }
    let d = known::route(known, router, view, org, Direction::Egress, now_ms);
    if d.retry {
        return Err(CarryRefused::Later(d.reason));
    }
    if !d.allowed {
        return Err(CarryRefused::No(format!(
            "{org} may not see it ({}: {}), and it is not encrypted end to end",
            d.rule, d.reason
        )));
    }
    Ok(())
}

/// Why a member may not carry a message.
#[derive(Debug, Clone, PartialEq)]
pub enum CarryRefused {
    No(String),
    /// Not decidable on this node's view yet.
    Later(String),
}

impl CarryRefused {
    pub fn reason(&self) -> &str {
        match self {
            CarryRefused::No(r) | CarryRefused::Later(r) => r,
        }
    }
}

/// Which members to try as relays toward `to`, best first: those with a working link now
/// (`reachable`, as the caller observed it), never `to`, `me` or anyone already on the
/// `path`; ordered by name so the choice is deterministic.
pub fn candidates<'a>(
    reachable: impl IntoIterator<Item = &'a str>,
    me: &str,
    to: &str,
    path: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = reachable
        .into_iter()
        .filter(|o| *o != me && *o != to && !path.iter().any(|h| h == o))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How messages for a peer travel now, for `bluewire peers` and `policy explain`.
pub fn path_label(connected: bool, via: Option<&str>) -> String {
    match (connected, via) {
        (true, _) => "direct".into(),
        (false, Some(r)) => format!("via {r}"),
        (false, None) => "unreachable".into(),
    }
}

#[cfg(test)]
mod tests;
