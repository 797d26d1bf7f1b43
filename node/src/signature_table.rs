//! A batch's signature once per Deliver call, not once per envelope (issue #12).
//!
//! Every envelope of a sealed batch carries the same ~3.3 KB hybrid signature, two thirds
//! of its bytes. To a receiver whose Hello lists [`FEATURE`], the sender moves each distinct
//! signature into `DeliverRequest.signatures` and leaves a reference in its place
//! ([`share`]); the receiver puts every signature back ([`restore`]) before it checks
//! anything, so what it verifies and stores is the envelope exactly as sealed. A receiver
//! that does not list the feature gets whole envelopes, as before.
//!
//! It must never: accept a table that does not add up (a reference out of range, an
//! envelope with both a signature and a reference, references that are not one per
//! envelope, an entry nobody refers to): such a call is refused whole, with the reason.
//! Pure.

use bluewire_proto::v1::Envelope;
use bytes::Bytes;

/// The Hello feature that says a node restores signatures from the call's table.
pub const FEATURE: &str = "signature-table";

/// Move each envelope's signature into a table of distinct signatures, in order of first
/// use; the references are 1-based positions. Envelopes without a signature keep 0 (none
/// to share).
pub fn share(envelopes: &mut [Envelope]) -> (Vec<Bytes>, Vec<u32>) {
    let mut table: Vec<Bytes> = Vec::new();
    let mut refs = Vec::with_capacity(envelopes.len());
    for env in envelopes.iter_mut() {
        if env.signature.is_empty() {
            refs.push(0);
            continue;
        }
        // A batch's envelopes travel together: its signature is most often the last one, and
        // most often the very same bytes (one allocation shared by the batch), not a copy.
        let at = match table.iter().rposition(|s| same(s, &env.signature)) {
            Some(i) => i,
            None => {
                table.push(std::mem::take(&mut env.signature));
                table.len() - 1
            }
        };
        env.signature.clear();
        // The table holds at most one entry per envelope, and a call's envelopes are
        // bounded by `limits.max_batch`, far below u32::MAX.
        refs.push(u32::try_from(at + 1).unwrap_or(u32::MAX));
    }
    (table, refs)
}

/// Whether two signatures are the same bytes: most often the very same allocation (a batch's
/// envelopes share one), checked first, before the bytes are compared.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// Put the signatures of `table` back into `envelopes` as `refs` says, or say what does not
/// add up.
pub fn restore(envelopes: &mut [Envelope], table: Vec<Bytes>, refs: &[u32]) -> Result<(), String> {
    if refs.is_empty() {
        return if table.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} signatures sent without references to them",
                table.len()
            ))
        };
    }
    if refs.len() != envelopes.len() {
        return Err(format!(
            "{} signature references for {} envelopes: there must be one per envelope",
            refs.len(),
            envelopes.len()
        ));
    }
    let mut used = vec![false; table.len()];
    for (i, (env, &r)) in envelopes.iter().zip(refs).enumerate() {
        if r == 0 {
            continue;
        }
        let Some(slot) = usize::try_from(r - 1).ok().filter(|&s| s < table.len()) else {
            return Err(format!(
                "envelope {i} refers to signature {r}, but the call carries {}",
                table.len()
            ));
        };
        if !env.signature.is_empty() {
            return Err(format!(
                "envelope {i} carries a signature and refers to signature {r}: one or the other"
            ));
        }
        used[slot] = true;
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(format!(
            "signature {} of the call is referred to by no envelope",
            unused + 1
        ));
    }
    for (env, &r) in envelopes.iter_mut().zip(refs) {
        if r > 0 {
            // Checked above: 1 ≤ r ≤ table.len().
            env.signature.clone_from(&table[(r - 1) as usize]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(content: u8, signature: &[u8]) -> Envelope {
        Envelope {
            content: vec![content].into(),
            signature: signature.to_vec().into(),
            key_id: "org-a/k1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn shared_signatures_come_back_exactly_and_each_travels_once() {
        let original = vec![
            env(1, b"sig-A"),
            env(2, b"sig-A"),
            env(3, b"sig-B"),
            env(4, b""),
            env(5, b"sig-A"),
        ];
        let mut wire = original.clone();
        let (table, refs) = share(&mut wire);
        assert_eq!(table, vec![b"sig-A".to_vec(), b"sig-B".to_vec()]);
        assert_eq!(refs, vec![1, 1, 2, 0, 1]);
        assert!(wire.iter().all(|e| e.signature.is_empty()));
        restore(&mut wire, table, &refs).unwrap();
        assert_eq!(wire, original);
    }

    /// A sealed batch of nine 1 KiB messages: 41,799 bytes with every envelope carrying the
    /// signature, 14,802 with it once (BENCHMARKS.md).
    #[test]
    fn a_sealed_batch_travels_in_about_a_third_of_the_bytes() {
        use bluewire_proto::v1::{DeliverRequest, FreeText, content::Body};
        use prost::Message as _;

        let contents: Vec<Vec<u8>> = (0..9)
            .map(|i| {
                let mut c = crate::outbound::tests::message(0, None);
                c.body = Some(Body::FreeText(FreeText {
                    title: format!("m{i}"),
                    body: "x".repeat(1024),
                }));
                c.encode_to_vec()
            })
            .collect();
        let sealed = crate::envelope::seal_batch(crate::cluster::tests::key(0), contents);
        let whole = DeliverRequest {
            envelopes: sealed.clone(),
            ..Default::default()
        };
        let mut envelopes = sealed.clone();
        let (signatures, signature_refs) = share(&mut envelopes);
        assert_eq!(signatures.len(), 1, "one batch, one signature");
        let shared = DeliverRequest {
            envelopes,
            signatures,
            signature_refs,
        };
        let (w, s) = (whole.encoded_len(), shared.encoded_len());
        assert!(s * 100 < w * 40, "{s} bytes shared against {w} whole");
        let mut back = shared.envelopes.clone();
        restore(&mut back, shared.signatures, &shared.signature_refs).unwrap();
        assert_eq!(back, sealed);
    }

    #[test]
    fn a_call_without_a_table_is_left_alone() {
        let mut envs = vec![env(1, b"own")];
        restore(&mut envs, Vec::new(), &[]).unwrap();
        assert_eq!(envs, vec![env(1, b"own")]);
        // An envelope may keep its own signature beside shared ones (reference 0).
        let mut envs = vec![env(1, b"own"), env(2, b"")];
        restore(&mut envs, vec![Bytes::from_static(b"shared")], &[0, 1]).unwrap();
        assert_eq!(envs, vec![env(1, b"own"), env(2, b"shared")]);
    }

    #[test]
    fn a_table_that_does_not_add_up_is_refused_with_the_reason() {
        let sig = || vec![Bytes::from_static(b"sig")];
        // (envelopes, signature table, references, what the refusal says)
        type Case = (Vec<Envelope>, Vec<Bytes>, Vec<u32>, &'static str);
        let cases: Vec<Case> = vec![
            (vec![env(1, b"")], sig(), vec![], "without references"),
            (
                vec![env(1, b""), env(2, b"")],
                sig(),
                vec![1],
                "one per envelope",
            ),
            (vec![env(1, b"")], sig(), vec![2], "refers to signature 2"),
            (vec![env(1, b"own")], sig(), vec![1], "one or the other"),
            (
                vec![env(1, b"")],
                vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                vec![1],
                "signature 2 of the call is referred to by no envelope",
            ),
            (
                vec![env(1, b"own")],
                sig(),
                vec![0],
                "referred to by no envelope",
            ),
        ];
        for (mut envs, table, refs, why) in cases {
            let before = envs.clone();
            let err = restore(&mut envs, table, &refs).unwrap_err();
            assert!(err.contains(why), "{err} (expected: {why})");
            assert_eq!(envs, before, "nothing changed on a refusal");
        }
    }
}
