//! Merkle trees over a batch of envelopes, so an origin signs many messages with one
//! hybrid signature and every envelope stays verifiable on its own.
//!
//! The tree is RFC 9162's (Certificate Transparency 2.0, section 2.1): SHA-256, a leaf is
//! `H(0x00 || data)`, an inner node `H(0x01 || left || right)`, an unbalanced tree splits
//! at the largest power of two below its size, and an inclusion proof lists the siblings
//! from the leaf up. The prefixes keep a leaf from passing for an inner node; the tree size
//! is part of what the origin signs, so a proof cannot be read against another shape.
//! Pure functions: no key, no clock, no I/O.

use aws_lc_rs::digest::{Context, SHA256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Most leaves one signed batch may have; a receiver refuses a proof claiming more.
pub const MAX_LEAVES: u32 = 1 << 16;

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The leaf hash of `data`.
pub fn leaf(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

fn node(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root of a tree over `leaves` (leaf hashes, in order) and every leaf's inclusion
/// proof, siblings from the bottom up. `None` for an empty batch.
pub fn build(leaves: &[Hash]) -> Option<(Hash, Vec<Vec<Hash>>)> {
    match leaves {
        [] => None,
        [one] => Some((*one, vec![Vec::new()])),
        _ => {
            let (left, right) = leaves.split_at(split(leaves.len()));
            let (l_root, mut l_paths) = build(left)?;
            let (r_root, r_paths) = build(right)?;
            for p in &mut l_paths {
                p.push(r_root);
            }
            l_paths.extend(r_paths.into_iter().map(|mut p| {
                p.push(l_root);
                p
            }));
            Some((node(&l_root, &r_root), l_paths))
        }
    }
}

/// Why an inclusion proof does not describe a leaf of a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} of a batch of {leaves}: the index is outside the batch")]
    Index { index: u32, leaves: u32 },
    #[error("a batch of {0} envelopes is over the {MAX_LEAVES}-envelope limit")]
    TooLarge(u32),
    #[error("the proof has {got} hashes, a leaf {index} of {leaves} needs {want}")]
    Length {
        index: u32,
        leaves: u32,
        got: usize,
        want: usize,
    },
    #[error("a hash of the proof is {0} bytes, not 32")]
    HashLength(usize),
}

/// The root that `leaf` at `index` in a tree of `leaves` leaves leads to along `path`
/// (RFC 9162 section 2.1.3.2): the caller then checks a signature over that root. Refuses
/// a proof that does not have exactly the shape such a leaf's proof has.
pub fn root_from_proof(
    leaf: &Hash,
    index: u32,
    leaves: u32,
    path: &[impl AsRef<[u8]>],
) -> Result<Hash, ProofError> {
    if leaves > MAX_LEAVES {
        return Err(ProofError::TooLarge(leaves));
    }
    if index >= leaves {
        return Err(ProofError::Index { index, leaves });
    }
    let want = proof_len(index, leaves);
    if path.len() != want {
        return Err(ProofError::Length {
            index,
            leaves,
            got: path.len(),
            want,
        });
    }
    let (mut f, mut s) = (index, leaves - 1);
    let mut r = *leaf;
    for p in path {
        let p: &Hash = p
            .as_ref()
            .try_into()
            .map_err(|_| ProofError::HashLength(p.as_ref().len()))?;
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    Ok(r)
}

/// How many hashes the inclusion proof of leaf `index` in a tree of `leaves` has.
fn proof_len(index: u32, leaves: u32) -> usize {
    if leaves <= 1 {
        return 0;
    }
    let k = split(leaves as usize) as u32;
    1 + if index < k {
        proof_len(index, k)
    } else {
        proof_len(index - k, leaves - k)
    }
}

/// What the origin signs for a batch: the root and the number of leaves (big-endian), so
/// a proof is always read against the tree that was signed.
pub fn statement(root: &Hash, leaves: u32) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..32].copy_from_slice(root);
    out[32..].copy_from_slice(&leaves.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf(&(i as u64).to_be_bytes())).collect()
    }

    /// RFC 9162's MTH, written straight from its definition, as the reference.
    fn mth(d: &[Hash]) -> Hash {
        match d {
            [one] => *one,
            _ => {
                let k = split(d.len());
                node(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    #[test]
    fn a_leaf_and_a_node_differ_by_their_prefix() {
        assert_ne!(leaf(b"x"), sha256(&[b"x"]));
        let (a, b) = (leaf(b"a"), leaf(b"b"));
        let n = node(&a, &b);
        assert_ne!(
            n,
            leaf(&[a, b].concat()),
            "a leaf cannot pass for an inner node"
        );
        assert_ne!(node(&a, &b), node(&b, &a));
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split(n), k, "n = {n}");
        }
    }

    #[test]
    fn known_shapes() {
        let l = leaves(3);
        let (root, paths) = build(&l).unwrap();
        assert_eq!(root, node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(paths[0], vec![l[1], l[2]]);
        assert_eq!(paths[1], vec![l[0], l[2]]);
        assert_eq!(paths[2], vec![node(&l[0], &l[1])]);
        assert_eq!(build(&[]), None);
        assert_eq!(build(&l[..1]), Some((l[0], vec![vec![]])));
        assert_eq!(root_from_proof(&l[0], 0, 1, &[] as &[Hash]), Ok(l[0]));
    }

    #[test]
    fn statement_binds_the_size() {
        let r = leaf(b"r");
        assert_ne!(statement(&r, 2), statement(&r, 3));
        assert_eq!(&statement(&r, 0x0102_0304)[32..], &[1, 2, 3, 4]);
        assert_eq!(&statement(&r, 7)[..32], &r);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let l = leaves(5);
        let (_, paths) = build(&l).unwrap();
        assert_eq!(
            root_from_proof(&l[0], 5, 5, &paths[0]),
            Err(ProofError::Index {
                index: 5,
                leaves: 5
            })
        );
        assert_eq!(
            root_from_proof(&l[0], 0, MAX_LEAVES + 1, &paths[0]),
            Err(ProofError::TooLarge(MAX_LEAVES + 1))
        );
        let mut long = paths[0].clone();
        long.push(l[0]);
        assert!(matches!(
            root_from_proof(&l[0], 0, 5, &long),
            Err(ProofError::Length {
                got: 4,
                want: 3,
                ..
            })
        ));
        let short: Vec<Vec<u8>> = vec![vec![0; 31], vec![0; 32], vec![0; 32]];
        assert_eq!(
            root_from_proof(&l[0], 0, 5, &short),
            Err(ProofError::HashLength(31))
        );
        // A proof as long as another leaf's is still refused when it is not this one's.
        assert_eq!(proof_len(4, 5), 1);
        assert_eq!(proof_len(0, 5), 3);
        assert_eq!(proof_len(0, MAX_LEAVES), 16);
    }

    proptest! {
        /// Every leaf's proof leads to the root, matching the RFC's definition; any other
        /// leaf, index, size or sibling does not.
        #[test]
        fn every_proof_leads_to_the_root_and_nothing_else_does(n in 1usize..70, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let l = leaves(n);
            let (root, paths) = build(&l).unwrap();
            prop_assert_eq!(root, mth(&l));
            for (i, p) in paths.iter().enumerate() {
                prop_assert_eq!(p.len(), proof_len(i as u32, n as u32));
                prop_assert_eq!(root_from_proof(&l[i], i as u32, n as u32, p), Ok(root));
            }
            let i = pick.index(n);
            let other = leaf(b"not in the batch");
            prop_assert_ne!(root_from_proof(&other, i as u32, n as u32, &paths[i]), Ok(root));
            if n > 1 {
                let j = (i + 1) % n;
                prop_assert_ne!(root_from_proof(&l[i], j as u32, n as u32, &paths[i]), Ok(root));
                let mut bad = paths[i].clone();
                let k = flip.index(bad.len());
                bad[k][0] ^= 1;
                prop_assert_ne!(root_from_proof(&l[i], i as u32, n as u32, &bad), Ok(root));
            }
            // Read against another tree size, a proof may reach the same root (leaf 0 of 9
            // and of 10 share their path): that is why the size is part of the statement.
        }
    }
}
