//! One copy of a batch signature on disk. Every envelope of a batch its origin signed at once
//! ([`crate::envelope::seal_batch`]) carries the same 3,373-byte hybrid signature: the store
//! keeps it once in the `signatures` table, keyed by its SHA-256, and the message record
//! holds the envelope without it plus that digest. Reading puts it back, so callers get the
//! envelope byte for byte as it was given to the store.
//!
//! Works on the encoded bytes (the top-level protobuf fields of an `Envelope`), never
//! re-encoding anything: a signature is taken out only when putting it back yields exactly
//! the original bytes; anything else is stored whole, as before.

use super::Result;

/// `Envelope.signature`'s field number, and `Envelope.batch`'s.
const SIGNATURE_FIELD: u64 = 2;
const BATCH_FIELD: u64 = 6;

/// A top-level field: its number, where it starts (its key), where its value starts, where
/// it ends.
struct Field {
    number: u64,
    wire_type: u64,
    start: usize,
    value: usize,
    end: usize,
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The top-level fields of an encoded message; `None` when it does not parse.
fn fields(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let (key, n) = varint(bytes.get(i..)?)?;
        i += n;
        let value = i;
        i = match key & 7 {
            0 => i + varint(bytes.get(i..)?)?.1,
            1 => i.checked_add(8)?,
            2 => {
                let (len, n) = varint(bytes.get(i..)?)?;
                (i + n).checked_add(usize::try_from(len).ok()?)?
            }
            5 => i.checked_add(4)?,
            _ => return None,
        };
        if i > bytes.len() {
            return None;
        }
        out.push(Field {
            number: key >> 3,
            wire_type: key & 7,
            start,
            value,
            end: i,
        });
    }
    Some(out)
}

/// `envelope` (without a signature field) with `signature` put back where an encoder puts
/// field 2: before the first field numbered above it.
pub(super) fn splice(envelope: &[u8], signature: &[u8]) -> Option<Vec<u8>> {
    let at = fields(envelope)?
        .iter()
        .find(|f| f.number > SIGNATURE_FIELD)
        .map_or(envelope.len(), |f| f.start);
    let mut out = Vec::with_capacity(envelope.len() + signature.len() + 3);
    out.extend_from_slice(&envelope[..at]);
    put_varint(&mut out, (SIGNATURE_FIELD << 3) | 2);
    put_varint(&mut out, signature.len() as u64);
    out.extend_from_slice(signature);
    out.extend_from_slice(&envelope[at..]);
    Some(out)
}

/// Whether encoded envelope bytes carry a signature field (or do not parse as fields): such
/// bytes cannot take a signature handed over apart.
pub(super) fn carries_signature(envelope: &[u8]) -> bool {
    fields(envelope).is_none_or(|f| f.iter().any(|f| f.number == SIGNATURE_FIELD))
}

/// For an envelope of a signed batch: (the envelope without its signature, the signature),
/// when putting it back gives exactly `envelope` again. `None`: store it whole.
pub(super) fn split(envelope: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let fields = fields(envelope)?;
    if !fields.iter().any(|f| f.number == BATCH_FIELD) {
        return None;
    }
    let mut signatures = fields.iter().filter(|f| f.number == SIGNATURE_FIELD);
    let sig = signatures.next()?;
    // Only a length-delimited signature is taken apart (prost refuses any other, but these
    // bytes are checked here on their own).
    if signatures.next().is_some() || sig.wire_type != 2 {
        return None;
    }
    let signature = &envelope[sig.value..sig.end];
    // The length prefix: what follows the key up to the value proper.
    let (len, n) = varint(&envelope[sig.value..])?;
    if usize::try_from(len).ok()? != sig.end.checked_sub(sig.value)?.checked_sub(n)? || len == 0 {
        return None;
    }
    let signature = &signature[n..];
    let mut rest = Vec::with_capacity(envelope.len() - (sig.end - sig.start));
    rest.extend_from_slice(&envelope[..sig.start]);
    rest.extend_from_slice(&envelope[sig.end..]);
    (splice(&rest, signature)?.as_slice() == envelope).then_some((rest, signature))
}

/// The key a signature is kept under.
pub(super) fn digest(signature: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signature)
        .as_ref()
        .to_vec()
}

/// Signatures this thread read lately, each checked against its digest when read. A page
/// of a batch's messages costs one lookup, not one per message; keyed by content, so an
/// entry is never stale.
const RECENT_MAX: usize = 8;

/// (digest, signature), oldest first.
type Recent = std::collections::VecDeque<(Vec<u8>, bytes::Bytes)>;

thread_local! {
    static RECENT: std::cell::RefCell<Recent> = const { std::cell::RefCell::new(Recent::new()) };
}

/// Empties this thread's [`RECENT`] signatures (tests of a damaged signatures table).
#[cfg(test)]
pub(super) fn forget_recent() {
    RECENT.with(|r| r.borrow_mut().clear());
}

/// Put the signature `reference` names back into `envelope` (message `seq`), reading it with
/// `lookup`. A reference to no signature is corruption, never an envelope served without one.
pub(super) fn restore(
    seq: u64,
    envelope: Vec<u8>,
    reference: &[u8],
    lookup: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<u8>> {
    if reference.is_empty() {
        return Ok(envelope);
    }
    let signature = signature_for(seq, reference, lookup)?;
    splice(&envelope, &signature).ok_or_else(|| {
        super::corrupt(
            "message",
            seq,
            "its envelope bytes do not parse as protobuf fields",
        )
    })
}

/// The signature `reference` names (message `seq`'s), read with `lookup` unless this thread
/// read it lately, and checked against its digest. A reference to no signature is
/// corruption.
pub(super) fn signature_for(
    seq: u64,
    reference: &[u8],
    lookup: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>>,
) -> Result<bytes::Bytes> {
    let corrupt = |detail: String| super::corrupt("message", seq, detail);
    let recent = RECENT.with(|r| {
        r.borrow()
            .iter()
            .find(|(d, _)| d.as_slice() == reference)
            .map(|(_, s)| s.clone())
    });
    let signature = match recent {
        Some(s) => s,
        None => {
            let signature = lookup(reference)?.ok_or_else(|| {
                corrupt(format!(
                    "its batch signature {} is not in the signatures table",
                    hex::encode(reference)
                ))
            })?;
            if digest(&signature) != reference {
                return Err(corrupt(format!(
                    "the signature stored under {} has another digest",
                    hex::encode(reference)
                )));
            }
            let signature = bytes::Bytes::from(signature);
            RECENT.with(|r| {
                let mut r = r.borrow_mut();
                if r.len() == RECENT_MAX {
                    r.pop_front();
                }
                r.push_back((reference.to_vec(), signature.clone()));
            });
            signature
        }
    };
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope;
    use crate::signing::SigningKey;
    use crate::store::StoreError;
    use bluewire_proto::v1 as pb;
    use proptest::prelude::*;
    use prost::Message as _;

    proptest! {
        /// Any bytes at all (a signature field of another wire type, lengths past the end,
        /// non-minimal varints): `split` never panics, and what it takes apart splices back
        /// to exactly the input.
        #[test]
        fn split_never_panics_and_always_gives_the_bytes_back(
            bytes in proptest::collection::vec(any::<u8>(), 0..96),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            // With and without a batch field, so both paths run.
            let mut with_batch = bytes.clone();
            with_batch.extend_from_slice(&[0x32, tail.len() as u8]);
            with_batch.extend_from_slice(&tail);
            for b in [&bytes, &with_batch] {
                if let Some((rest, signature)) = split(b) {
                    let back = splice(&rest, signature);
                    prop_assert_eq!(back.as_deref(), Some(b.as_slice()));
                }
            }
        }
    }

    #[test]
    fn a_signature_field_of_another_wire_type_is_left_whole() {
        // Field 2 as a fixed32 (wire type 5) whose "length" varint runs past the field,
        // then a batch field: found by a review, it used to underflow.
        let bytes = [0x32, 0x00, 0x15, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        assert!(split(&bytes).is_none());
        let bytes = [0x15, 0x80, 0x80, 0x80, 0x80, 0x32, 0x00];
        assert!(split(&bytes).is_none());
    }

    fn batch(n: usize) -> Vec<pb::Envelope> {
        let key = SigningKey::generate("csirt-be").unwrap();
        envelope::seal_batch(
            &key,
            (0..n)
                .map(|i| {
                    pb::Content {
                        id: envelope::new_id(),
                        origin_org: "csirt-be".into(),
                        author: format!("csirt-be/u{i}"),
                        ..Default::default()
                    }
                    .encode_to_vec()
                })
                .collect(),
        )
    }

    #[test]
    fn a_batch_envelope_splits_and_splices_back_byte_for_byte() {
        for env in batch(3) {
            let bytes = env.encode_to_vec();
            let (rest, sig) = split(&bytes).expect("a batch envelope splits");
            assert_eq!(sig, &env.signature[..]);
            assert_eq!(rest.len(), bytes.len() - sig.len() - 3);
            let back = pb::Envelope::decode(rest.as_slice()).unwrap();
            assert!(back.signature.is_empty());
            assert_eq!(back.batch, env.batch);
            assert_eq!(splice(&rest, sig).unwrap(), bytes);
            let d = digest(sig);
            let restored = restore(7, rest, &d, |k| {
                assert_eq!(k, d.as_slice());
                Ok(Some(sig.to_vec()))
            })
            .unwrap();
            assert_eq!(restored, bytes);
        }
    }

    #[test]
    fn anything_else_is_stored_whole() {
        // A lone envelope (no batch proof) keeps its signature inline.
        let lone = batch(1).pop().unwrap();
        assert!(lone.batch.is_none());
        assert!(split(&lone.encode_to_vec()).is_none());
        // Bytes that are not an envelope, or a signature in an unusual place.
        assert!(split(b"\xff\xff").is_none());
        assert!(split(&[]).is_none());
        let env = batch(2).remove(0);
        let mut odd = env.clone();
        odd.signature = bytes::Bytes::new();
        let mut bytes = odd.encode_to_vec();
        bytes.extend_from_slice(&[0x12, 2, 1, 2]); // signature field after the batch proof
        assert!(split(&bytes).is_none(), "not where an encoder puts it");
        let mut twice = env.encode_to_vec();
        twice.extend_from_slice(&[0x12, 1, 9]);
        assert!(split(&twice).is_none(), "two signature fields");
        let mut empty = odd.encode_to_vec();
        empty.splice(0..0, [0x12, 0]);
        assert!(split(&empty).is_none(), "an empty signature");
    }

    #[test]
    fn a_missing_or_wrong_signature_is_corruption() {
        let env = batch(2).remove(1);
        let bytes = env.encode_to_vec();
        let (rest, sig) = split(&bytes).unwrap();
        let d = digest(sig);
        let e = restore(9, rest.clone(), &d, |_| Ok(None)).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("not in the signatures table"), "{e}");
        let e = restore(9, rest.clone(), &d, |_| Ok(Some(b"other".to_vec()))).unwrap_err();
        assert!(e.to_string().contains("another digest"), "{e}");
        // No reference: the envelope as it is.
        assert_eq!(
            restore(9, bytes.clone(), &[], |_| unreachable!()).unwrap(),
            bytes
        );
    }
}
