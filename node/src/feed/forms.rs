//! How much of its signed envelope a feed item carries ([`pb::EnvelopeForm`]): the node's side
//! ([`Shaper`]) and the subscriber's ([`Restorer`], which puts a left-out signature back).
//!
//! Every envelope of a signed batch carries the same 3,373-byte hybrid signature, three
//! quarters of a 1 KiB message's envelope. A subscriber that verifies envelopes itself can
//! ask for each signature once (`SIGNATURE_ONCE`); one that relies on its node's verification
//! can ask for no envelope at all (`NONE`). Pure: no store, no clock.
//!
//! It must never: leave a signature out of an item unless the previous item sent on the same
//! stream carried (or stood for) exactly those bytes.

use bluewire_proto::v1 as pb;

/// The node's side: shapes the items of one subscription, in the order they are sent.
#[derive(Debug)]
pub struct Shaper {
    form: pb::EnvelopeForm,
    /// The signature of the previous item sent (SIGNATURE_ONCE).
    last: Option<bytes::Bytes>,
}

impl Shaper {
    /// For a subscription asking for `form` (an unknown value is the whole envelope).
    pub fn new(form: i32) -> Shaper {
        Shaper {
            form: pb::EnvelopeForm::try_from(form).unwrap_or(pb::EnvelopeForm::Whole),
            last: None,
        }
    }

    /// Shapes `item`, the next one sent on the stream.
    pub fn shape(&mut self, item: &mut pb::FeedItem) {
        match self.form {
            pb::EnvelopeForm::Whole => {}
            pb::EnvelopeForm::None => item.envelope = None,
            pb::EnvelopeForm::SignatureOnce => {
                let Some(env) = item.envelope.as_mut() else {
                    return;
                };
                if !env.signature.is_empty() && self.last.as_deref() == Some(&env.signature[..]) {
                    env.signature = bytes::Bytes::new();
                    item.signature_as_previous = true;
                } else {
                    // A copy: the signature is a view of the whole stored envelope, which a
                    // long-lived subscription must not keep (a message of up to 1 MiB).
                    self.last = Some(bytes::Bytes::copy_from_slice(&env.signature));
                }
            }
        }
    }
}

/// The subscriber's side of `SIGNATURE_ONCE`: puts each left-out signature back, so every
/// envelope it hands on is whole and verifies on its own.
#[derive(Debug, Default)]
pub struct Restorer {
    last: Option<bytes::Bytes>,
}

impl Restorer {
    /// Restores `item`, the next one read from the stream. `Err` says what does not add up:
    /// the stream is not one this restorer has followed from its start.
    pub fn restore(&mut self, item: &mut pb::FeedItem) -> Result<(), String> {
        let Some(env) = item.envelope.as_mut() else {
            if item.signature_as_previous {
                return Err(format!(
                    "feed item {} has no envelope and says its signature is the previous item's",
                    item.seq
                ));
            }
            return Ok(());
        };
        if item.signature_as_previous {
            if !env.signature.is_empty() {
                return Err(format!(
                    "feed item {} has a signature and says it is the previous item's",
                    item.seq
                ));
            }
            // The node never leaves out an empty signature: there is nothing to put back.
            let Some(last) = self.last.as_ref().filter(|l| !l.is_empty()) else {
                return Err(format!(
                    "feed item {} refers to the previous item's signature, but none came before \
                     it on this stream: restore a stream from its first item",
                    item.seq
                ));
            };
            env.signature = last.clone();
            item.signature_as_previous = false;
        } else {
            // A copy: the signature is a view of the whole item it came in.
            self.last = Some(bytes::Bytes::copy_from_slice(&env.signature));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, signature: &[u8]) -> pb::FeedItem {
        pb::FeedItem {
            seq,
            envelope: Some(pb::Envelope {
                content: format!("content {seq}").into_bytes().into(),
                signature: signature.to_vec().into(),
                ..Default::default()
            }),
            verified: true,
            ..Default::default()
        }
    }

    /// Items of two batches (signatures A, A, A, B, B) then A again.
    fn stream() -> Vec<pb::FeedItem> {
        [b"A", b"A", b"A", b"B", b"B", b"A"]
            .iter()
            .zip(1..)
            .map(|(s, seq)| item(seq, &s[..]))
            .collect()
    }

    fn shaped(form: pb::EnvelopeForm) -> Vec<pb::FeedItem> {
        let mut shaper = Shaper::new(form as i32);
        let mut items = stream();
        for i in &mut items {
            shaper.shape(i);
        }
        items
    }

    #[test]
    fn whole_changes_nothing() {
        assert_eq!(shaped(pb::EnvelopeForm::Whole), stream());
        // An unknown form from a newer subscriber is the safe default.
        let mut shaper = Shaper::new(99);
        let mut items = stream();
        for i in &mut items {
            shaper.shape(i);
        }
        assert_eq!(items, stream());
    }

    #[test]
    fn none_drops_only_the_envelope() {
        for (got, want) in shaped(pb::EnvelopeForm::None).into_iter().zip(stream()) {
            assert_eq!(got.envelope, None);
            assert_eq!(
                pb::FeedItem {
                    envelope: None,
                    ..want
                },
                got
            );
        }
    }

    #[test]
    fn signature_once_leaves_out_each_repeat_and_keeps_each_change() {
        let items = shaped(pb::EnvelopeForm::SignatureOnce);
        let sigs: Vec<(&[u8], bool)> = items
            .iter()
            .map(|i| {
                (
                    &i.envelope.as_ref().unwrap().signature[..],
                    i.signature_as_previous,
                )
            })
            .collect();
        assert_eq!(
            sigs,
            vec![
                (&b"A"[..], false),
                (&b""[..], true),
                (&b""[..], true),
                (&b"B"[..], false),
                (&b""[..], true),
                (&b"A"[..], false),
            ]
        );
        // Everything else is untouched.
        for (got, want) in items.iter().zip(stream()) {
            assert_eq!(got.seq, want.seq);
            assert_eq!(
                got.envelope.as_ref().unwrap().content,
                want.envelope.unwrap().content
            );
        }
    }

    #[test]
    fn an_unsigned_envelope_is_never_said_to_repeat_a_signature() {
        let mut shaper = Shaper::new(pb::EnvelopeForm::SignatureOnce as i32);
        let mut a = item(1, b"");
        let mut b = item(2, b"");
        shaper.shape(&mut a);
        shaper.shape(&mut b);
        assert!(!a.signature_as_previous && !b.signature_as_previous);
        // An item without an envelope passes through and changes nothing for the next.
        let mut shaper = Shaper::new(pb::EnvelopeForm::SignatureOnce as i32);
        let mut first = item(1, b"A");
        let mut bare = pb::FeedItem::default();
        let mut next = item(3, b"A");
        shaper.shape(&mut first);
        shaper.shape(&mut bare);
        shaper.shape(&mut next);
        assert_eq!(bare, pb::FeedItem::default());
        assert!(next.signature_as_previous);
    }

    #[test]
    fn a_restorer_gives_back_every_envelope_whole() {
        let mut restorer = Restorer::default();
        let mut items = shaped(pb::EnvelopeForm::SignatureOnce);
        for i in &mut items {
            restorer.restore(i).unwrap();
        }
        assert_eq!(items, stream());
        // Whole and NONE streams pass through unchanged.
        for form in [pb::EnvelopeForm::Whole, pb::EnvelopeForm::None] {
            let mut restorer = Restorer::default();
            let mut items = shaped(form);
            let want = items.clone();
            for i in &mut items {
                restorer.restore(i).unwrap();
            }
            assert_eq!(items, want);
        }
    }

    #[test]
    fn a_restorer_refuses_what_does_not_add_up() {
        // Joined mid-stream: nothing to put back.
        let items = shaped(pb::EnvelopeForm::SignatureOnce);
        let mut late = items[1].clone();
        let err = Restorer::default().restore(&mut late).unwrap_err();
        assert!(err.contains("none came before"), "{err}");
        // A repeat that also carries a signature.
        let mut r = Restorer::default();
        r.restore(&mut items[0].clone()).unwrap();
        let mut both = item(2, b"X");
        both.signature_as_previous = true;
        let err = r.restore(&mut both).unwrap_err();
        assert!(err.contains("has a signature"), "{err}");
        // After an unsigned envelope, a repeat has nothing to repeat.
        let mut r = Restorer::default();
        r.restore(&mut item(1, b"")).unwrap();
        let mut repeat = item(2, b"");
        repeat.signature_as_previous = true;
        let err = r.restore(&mut repeat).unwrap_err();
        assert!(err.contains("none came before"), "{err}");
        // The flag on an item without an envelope.
        let mut bare = pb::FeedItem {
            seq: 3,
            signature_as_previous: true,
            ..Default::default()
        };
        let err = Restorer::default().restore(&mut bare).unwrap_err();
        assert!(err.contains("no envelope"), "{err}");
    }
}
