//! The order of the store's keys on their encoded bytes, without decoding them.
//!
//! redb orders a table by its key type's `Key::compare` on the encoded keys, and the overlay
//! uses the same function. For a string, redb's `compare` checks that both sides are UTF-8 on
//! every comparison: at the origin at 1,000 msg/s, `from_utf8` was 2.7 % of its `perf` samples
//! and the comparisons 2.2 % more, mostly in the outbox's `(&str, u64)` keys (BENCHMARKS.md,
//! "Keys compared as bytes"). A string's order is its bytes' order (UTF-8 keeps the order of
//! code points, and `str`'s `Ord` compares bytes), so [`Key::order`] compares the bytes,
//! element by element for a tuple, in redb's encoding of it.
//!
//! Owns: [`Key`] and its implementations for every key type a table of the store has.
//!
//! It must never: order two keys otherwise than redb's own `compare` does (a table's B-tree
//! and the overlay would disagree with the pages redb wrote); panic on bytes that are not a
//! key of the type (a damaged page): a tuple that does not split compares by its bytes, and a
//! number of the wrong width by that element's bytes.

use std::cmp::Ordering;

/// A table's key type: redb's, with its order computed on the encoded bytes.
pub(in crate::store) trait Key: redb::Key {
    /// The same order as redb's `compare` for this type.
    fn order(a: &[u8], b: &[u8]) -> Ordering {
        <Self as redb::Key>::compare(a, b)
    }
}

impl Key for u64 {
    fn order(a: &[u8], b: &[u8]) -> Ordering {
        match (<[u8; 8]>::try_from(a), <[u8; 8]>::try_from(b)) {
            (Ok(a), Ok(b)) => u64::from_le_bytes(a).cmp(&u64::from_le_bytes(b)),
            _ => a.cmp(b),
        }
    }
}

impl Key for &[u8] {}

impl Key for &str {
    fn order(a: &[u8], b: &[u8]) -> Ordering {
        a.cmp(b)
    }
}

impl Key for (&str, &str) {
    fn order(a: &[u8], b: &[u8]) -> Ordering {
        match (split::<1>(a), split::<1>(b)) {
            (Some(([a0], a1)), Some(([b0], b1))) => a0.cmp(b0).then_with(|| a1.cmp(b1)),
            _ => a.cmp(b),
        }
    }
}

impl Key for (&str, u64) {
    fn order(a: &[u8], b: &[u8]) -> Ordering {
        match (split::<1>(a), split::<1>(b)) {
            (Some(([a0], a1)), Some(([b0], b1))) => {
                a0.cmp(b0).then_with(|| <u64 as Key>::order(a1, b1))
            }
            _ => a.cmp(b),
        }
    }
}

impl Key for (&str, u64, u32) {
    fn order(a: &[u8], b: &[u8]) -> Ordering {
        match (split::<2>(a), split::<2>(b)) {
            (Some(([a0, a1], a2)), Some(([b0, b1], b2))) => a0
                .cmp(b0)
                .then_with(|| <u64 as Key>::order(a1, b1))
                .then_with(
                    || match (<[u8; 4]>::try_from(a2), <[u8; 4]>::try_from(b2)) {
                        (Ok(a), Ok(b)) => u32::from_le_bytes(a).cmp(&u32::from_le_bytes(b)),
                        _ => a2.cmp(b2),
                    },
                ),
            _ => a.cmp(b),
        }
    }
}

/// A variable-width tuple's encoding, as redb writes it (the lengths of all elements but the
/// last, each a little-endian u32, then the elements), split into its first `N` elements and
/// the last; `None` if the bytes do not add up.
fn split<const N: usize>(data: &[u8]) -> Option<([&[u8]; N], &[u8])> {
    let mut offset = N * 4;
    let mut parts = [&data[..0]; N];
    for (i, part) in parts.iter_mut().enumerate() {
        let len = u32::from_le_bytes(data.get(i * 4..i * 4 + 4)?.try_into().ok()?) as usize;
        *part = data.get(offset..offset.checked_add(len)?)?;
        offset += len;
    }
    Some((parts, data.get(offset..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::Value;

    /// `order` agrees with redb's `compare` on two encoded keys.
    fn agrees<K: Key>(a: &[u8], b: &[u8]) {
        assert_eq!(
            K::order(a, b),
            <K as redb::Key>::compare(a, b),
            "{a:?} against {b:?}"
        );
    }

    /// redb's encoding of a key of type `K`.
    macro_rules! enc {
        ($k:ty, $v:expr) => {
            AsRef::<[u8]>::as_ref(&<$k as Value>::as_bytes(&$v)).to_vec()
        };
    }

    /// Strings that share prefixes, are empty, or are not ASCII (where a code point's bytes
    /// and its order must still agree).
    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[ab]{0,3}", "[a-zé€𝄞]{0,4}", any::<String>(),]
    }

    proptest! {
        #[test]
        fn strings_order_as_redb_orders_them(x in text(), y in text()) {
            agrees::<&str>(&enc!(&str, x.as_str()), &enc!(&str, y.as_str()));
        }

        #[test]
        fn pairs_of_strings_order_as_redb_orders_them(
            x in (text(), text()),
            y in (text(), text()),
        ) {
            type K<'a> = (&'a str, &'a str);
            agrees::<K>(
                &enc!(K, (x.0.as_str(), x.1.as_str())),
                &enc!(K, (y.0.as_str(), y.1.as_str())),
            );
        }

        #[test]
        fn seqs_order_as_redb_orders_them(x in any::<u64>(), y in any::<u64>()) {
            agrees::<u64>(&enc!(u64, x), &enc!(u64, y));
        }

        #[test]
        fn a_string_and_a_seq_order_as_redb_orders_them(
            x in (text(), any::<u64>()),
            y in (text(), prop_oneof![any::<u64>(), 0..3u64]),
        ) {
            type K<'a> = (&'a str, u64);
            let a = enc!(K, (x.0.as_str(), x.1));
            agrees::<K>(&a, &enc!(K, (y.0.as_str(), y.1)));
            agrees::<K>(&a, &enc!(K, (x.0.as_str(), y.1)));
        }

        #[test]
        fn a_string_a_seq_and_a_version_order_as_redb_orders_them(
            x in (text(), prop_oneof![any::<u64>(), 0..3u64], any::<u32>()),
            y in (text(), prop_oneof![any::<u64>(), 0..3u64], any::<u32>()),
        ) {
            type K<'a> = (&'a str, u64, u32);
            let a = enc!(K, (x.0.as_str(), x.1, x.2));
            agrees::<K>(&a, &enc!(K, (y.0.as_str(), y.1, y.2)));
            agrees::<K>(&a, &enc!(K, (x.0.as_str(), y.1, y.2)));
            agrees::<K>(&a, &enc!(K, (x.0.as_str(), x.1, y.2)));
        }

        /// Bytes that are no key of the type compare without a panic, as bytes.
        #[test]
        fn damaged_keys_compare_by_their_bytes(
            a in proptest::collection::vec(any::<u8>(), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let _ = <(&str, u64, u32) as Key>::order(&a, &b);
            let _ = <(&str, &str) as Key>::order(&a, &b);
            let _ = <u64 as Key>::order(&a, &b);
            prop_assert_eq!(<(&str, u64) as Key>::order(&a, &a), Ordering::Equal);
            prop_assert_eq!(<(&str, u64) as Key>::order(&a, &b), <(&str, u64) as Key>::order(&b, &a).reverse());
        }
    }

    #[test]
    fn a_tuple_whose_lengths_do_not_add_up_is_not_split() {
        assert_eq!(split::<1>(&[9, 0, 0, 0, b'a']), None);
        assert_eq!(split::<1>(&[1, 0]), None);
        assert_eq!(
            split::<1>(&[1, 0, 0, 0, b'a', b'b']),
            Some(([&b"a"[..]], &b"b"[..]))
        );
    }
}
