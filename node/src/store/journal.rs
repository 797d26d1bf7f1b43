//! The store's journal: every commit's writes, appended to a file before the commit returns,
//! so that a commit costs one `write` (and, with `[store] sync = "always"`, one `fdatasync`)
//! instead of a redb transaction. redb takes the journal's writes later, in large
//! transactions; the files a transaction has covered are then deleted. What is left at a
//! start is replayed.
//!
//! Owns: the file format (segment files `journal-GENERATION.jnl`, each a header and then
//! frames), encoding and decoding frames, telling a torn tail from damage, and listing,
//! creating, appending to and removing segment files.
//!
//! It must never: return a frame whose checksum does not match; read past a damaged frame as if
//! nothing happened (a damaged frame followed by more data is [`JournalError::Damaged`], not a
//! torn tail); accept frames out of commit order; decide when to apply or what a write means
//! (that is the store's).
//!
//! # Format
//!
//! A segment starts with [`MAGIC`] and its generation (u64, little-endian). Then frames:
//!
//! ```text
//! len: u32   crc: u32 (CRC-32 of len and the payload)   payload: len bytes
//! payload = commit: u64, then per write:
//!   kind: u8 (0 remove, 1 insert)   table: u8 length + UTF-8 name
//!   key: u32 length + bytes         value (inserts only): u32 length + bytes
//! ```
//!
//! All integers little-endian. Commits are numbered from 1 and follow on one from the next
//! across segments in generation order.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The first bytes of every segment.
pub(super) const MAGIC: &[u8; 8] = b"BWJRNL01";
const HEADER_LEN: usize = MAGIC.len() + 8;
/// Frame header: payload length and its CRC-32.
const FRAME_HEAD: usize = 8;
/// A frame's payload holds at least its commit number.
const MIN_PAYLOAD: usize = 8;

/// One write of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Write {
    pub table: String,
    pub key: Bytes,
    /// `None`: the key is removed.
    pub value: Option<Bytes>,
}

/// One commit, as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    pub commit: u64,
    pub writes: Vec<Write>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum JournalError {
    #[error("journal I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal segment {path} is damaged at byte {at} ({why}) and more follows it: the commits \
         after that point cannot be trusted. Restore the data directory from a backup, or move \
         the segment aside to start without what it holds (acknowledged messages may then be \
         missing)"
    )]
    Damaged {
        path: PathBuf,
        at: usize,
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encode one commit's writes as a frame. A table name is at most 255 bytes (the store's
/// names are constants well under that).
pub(super) fn encode_frame<'a>(
    commit: u64,
    writes: impl IntoIterator<Item = (&'a str, &'a [u8], Option<&'a [u8]>)>,
) -> Vec<u8> {
    let mut frame = vec![0u8; FRAME_HEAD];
    frame.extend_from_slice(&commit.to_le_bytes());
    for (table, key, value) in writes {
        debug_assert!(table.len() <= usize::from(u8::MAX));
        frame.push(u8::from(value.is_some()));
        frame.push(table.len() as u8);
        frame.extend_from_slice(table.as_bytes());
        frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
        frame.extend_from_slice(key);
        if let Some(v) = value {
            frame.extend_from_slice(&(v.len() as u32).to_le_bytes());
            frame.extend_from_slice(v);
        }
    }
    let payload_len = (frame.len() - FRAME_HEAD) as u32;
    frame[..4].copy_from_slice(&payload_len.to_le_bytes());
    let crc = checksum(&frame[..4], &frame[FRAME_HEAD..]);
    frame[4..FRAME_HEAD].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// A frame's checksum: over its length field too, so a damaged length is caught as damage.
fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// Where decoding a segment's frames stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tail {
    /// Every byte was part of a whole frame.
    Clean,
    /// The last frame is incomplete or unwritten (a crash while appending): it was never
    /// acknowledged, and is dropped. `at`: where it starts.
    Torn { at: usize },
    /// A frame that fails its checksum or does not parse, with more data after it.
    Damaged { at: usize, why: String },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

/// The writes of a payload whose checksum matched, or why it does not parse.
fn decode_payload(payload: &[u8]) -> Result<Frame, String> {
    let commit = u64_at(payload, 0).ok_or("no commit number")?;
    let mut writes = Vec::new();
    let mut i = MIN_PAYLOAD;
    let take = |i: &mut usize, n: usize, what: &str| -> Result<&[u8], String> {
        let s = payload
            .get(*i..i.saturating_add(n))
            .ok_or_else(|| format!("{what} runs past the frame"))?;
        *i += n;
        Ok(s)
    };
    while i < payload.len() {
        let head = take(&mut i, 2, "a write's header")?;
        let (kind, name_len) = (head[0], usize::from(head[1]));
        if kind > 1 {
            return Err(format!("unknown write kind {kind}"));
        }
        let table = std::str::from_utf8(take(&mut i, name_len, "a table name")?)
            .map_err(|_| "a table name that is not UTF-8".to_string())?
            .to_string();
        let key_len = u32_at(payload, i).ok_or("a key length runs past the frame")? as usize;
        i += 4;
        let key = Bytes::copy_from_slice(take(&mut i, key_len, "a key")?);
        let value = if kind == 1 {
            let len = u32_at(payload, i).ok_or("a value length runs past the frame")? as usize;
            i += 4;
            Some(Bytes::copy_from_slice(take(&mut i, len, "a value")?))
        } else {
            None
        };
        writes.push(Write { table, key, value });
    }
    Ok(Frame { commit, writes })
}

/// The whole frames at the start of `bytes` (a segment after its header), in order, and
/// where they stop.
pub(super) fn decode_frames(bytes: &[u8]) -> (Vec<Frame>, Tail) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        // Zeros to the end: space the file system allocated for an append that never landed.
        if rest.iter().all(|&b| b == 0) {
            return (frames, Tail::Torn { at });
        }
        let (Some(len), Some(crc)) = (u32_at(bytes, at), u32_at(bytes, at + 4)) else {
            return (frames, Tail::Torn { at });
        };
        let len = len as usize;
        let end = at.saturating_add(FRAME_HEAD).saturating_add(len);
        let Some(payload) = bytes.get(at + FRAME_HEAD..end) else {
            // Runs past the end of the file: the append was cut short.
            return (frames, Tail::Torn { at });
        };
        let bad = if len < MIN_PAYLOAD {
            Some(format!(
                "a frame of {len} bytes, less than its commit number"
            ))
        } else if checksum(&bytes[at..at + 4], payload) != crc {
            Some("checksum mismatch".to_string())
        } else {
            None
        };
        let decoded = match bad {
            Some(why) => Err(why),
            None => decode_payload(payload),
        };
        match decoded {
            Ok(frame) => frames.push(frame),
            Err(why) => {
                // The last frame of the file, cut short or half written: torn. Anything after
                // it means this frame was once whole: damage.
                return if end >= bytes.len() {
                    (frames, Tail::Torn { at })
                } else {
                    (frames, Tail::Damaged { at, why })
                };
            }
        }
        at = end;
    }
    (frames, Tail::Clean)
}

/// The path of segment `generation` in `dir`.
pub(super) fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation:020}.jnl"))
}

/// The generations of the segments in `dir`, oldest first.
pub(super) fn segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut gens = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let name = entry.map_err(io_err(dir))?.file_name();
        if let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|r| r.strip_suffix(".jnl"))
            .and_then(|g| g.parse::<u64>().ok())
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Every whole frame, in commit order, and where the newest segment's torn tail starts.
pub(super) type Replayed = (Vec<Frame>, Option<(PathBuf, usize)>);

/// What the segments in `dir` hold, in commit order: every whole frame, up to a torn tail in
/// the newest segment. Damage anywhere, a torn tail in a segment that is not the newest, a
/// segment whose header does not match its name, or commits out of order, is an error.
pub(super) fn replay(dir: &Path) -> Result<Replayed, JournalError> {
    let gens = segments(dir)?;
    let mut frames: Vec<Frame> = Vec::new();
    let mut torn = None;
    for (i, &g) in gens.iter().enumerate() {
        let path = segment_path(dir, g);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let newest = i + 1 == gens.len();
        let damaged = |at: usize, why: String| JournalError::Damaged {
            path: path.clone(),
            at,
            why,
        };
        let header = [&MAGIC[..], &g.to_le_bytes()].concat();
        if bytes.len() < HEADER_LEN {
            // The newest segment, created just before a crash, its header never written whole.
            if newest && (bytes.iter().all(|&b| b == 0) || header.starts_with(&bytes)) {
                torn = Some((path.clone(), 0));
                continue;
            }
            return Err(damaged(0, "a segment shorter than its header".into()));
        }
        if bytes[..HEADER_LEN] != header[..] {
            return Err(damaged(
                0,
                "not a journal segment of this generation".into(),
            ));
        }
        let (found, tail) = decode_frames(&bytes[HEADER_LEN..]);
        for f in found {
            if let Some(last) = frames.last()
                && f.commit != last.commit + 1
            {
                return Err(damaged(
                    HEADER_LEN,
                    format!(
                        "commit {} after commit {}: the commits in between are missing",
                        f.commit, last.commit
                    ),
                ));
            }
            frames.push(f);
        }
        match tail {
            Tail::Clean => {}
            Tail::Torn { at } if newest => torn = Some((path.clone(), HEADER_LEN + at)),
            Tail::Torn { at } => {
                return Err(damaged(
                    HEADER_LEN + at,
                    "an incomplete frame in a segment a later one follows".into(),
                ));
            }
            Tail::Damaged { at, why } => return Err(damaged(HEADER_LEN + at, why)),
        }
    }
    Ok((frames, torn))
}

/// The segment commits are appended to.
#[derive(Debug)]
pub(super) struct Segment {
    path: PathBuf,
    file: File,
    generation: u64,
    bytes: u64,
}

impl Segment {
    /// Create segment `generation` in `dir` (it must not exist) and write its header. With
    /// `durable`, the header and the directory entry are synced before it is used.
    pub(super) fn create(dir: &Path, generation: u64, durable: bool) -> Result<Self, JournalError> {
        let path = segment_path(dir, generation);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&generation.to_le_bytes());
        file.write_all(&header).map_err(io_err(&path))?;
        if durable {
            file.sync_data().map_err(io_err(&path))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(Self {
            path,
            file,
            generation,
            bytes: HEADER_LEN as u64,
        })
    }

    /// Append one frame with one `write` (the kernel has it when this returns; it survives the
    /// process, not a power cut, until [`Segment::sync`]).
    pub(super) fn append(&mut self, frame: &[u8]) -> Result<(), JournalError> {
        self.file.write_all(frame).map_err(io_err(&self.path))?;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// `fdatasync` the segment.
    #[cfg(test)]
    pub(super) fn sync(&self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// A second handle on the file, to sync it without holding up appends.
    pub(super) fn sync_handle(&self) -> Result<File, JournalError> {
        self.file.try_clone().map_err(io_err(&self.path))
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes in the segment, its header included.
    pub(super) fn len(&self) -> u64 {
        self.bytes
    }
}

/// Delete the segments of `dir` older than generation `below`.
pub(super) fn remove_below(dir: &Path, below: u64) -> Result<usize, JournalError> {
    let mut n = 0;
    for g in segments(dir)? {
        if g < below {
            let path = segment_path(dir, g);
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(table: &str, key: &[u8], value: Option<&[u8]>) -> Write {
        Write {
            table: table.into(),
            key: Bytes::copy_from_slice(key),
            value: value.map(Bytes::copy_from_slice),
        }
    }

    fn frame_of(commit: u64, writes: &[Write]) -> Vec<u8> {
        encode_frame(
            commit,
            writes
                .iter()
                .map(|w| (w.table.as_str(), w.key.as_ref(), w.value.as_deref())),
        )
    }

    fn sample() -> Vec<Frame> {
        vec![
            Frame {
                commit: 1,
                writes: vec![
                    w("messages", &7u64.to_le_bytes(), Some(b"hello")),
                    w("meta", b"next_seq", Some(&8u64.to_le_bytes())),
                ],
            },
            Frame {
                commit: 2,
                writes: vec![
                    w("outbox_blocks", b"peer\x00", None),
                    w("ids", b"", Some(b"")),
                ],
            },
            Frame {
                commit: 3,
                writes: vec![],
            },
        ]
    }

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| frame_of(f.commit, &f.writes))
            .collect()
    }

    #[test]
    fn frames_decode_to_what_was_encoded() {
        let frames = sample();
        let bytes = encoded(&frames);
        assert_eq!(decode_frames(&bytes), (frames, Tail::Clean));
        assert_eq!(decode_frames(&[]), (vec![], Tail::Clean));
    }

    #[test]
    fn a_frame_cut_anywhere_is_a_torn_tail_and_the_frames_before_it_stand() {
        let frames = sample();
        let bytes = encoded(&frames);
        let first = frame_of(1, &frames[0].writes).len();
        for cut in first + 1..first + frame_of(2, &frames[1].writes).len() {
            let (got, tail) = decode_frames(&bytes[..cut]);
            assert_eq!(got, frames[..1], "cut at {cut}");
            assert_eq!(tail, Tail::Torn { at: first }, "cut at {cut}");
        }
    }

    #[test]
    fn zeros_after_the_last_frame_are_a_torn_tail() {
        let frames = sample();
        let mut bytes = encoded(&frames);
        let end = bytes.len();
        bytes.extend_from_slice(&[0; 4096]);
        assert_eq!(
            decode_frames(&bytes),
            (frames.clone(), Tail::Torn { at: end })
        );
        // A frame whose bytes never landed, its length and checksum written: torn too.
        let mut half = encoded(&frames[..1]);
        let at = half.len();
        let second = frame_of(2, &frames[1].writes);
        half.extend_from_slice(&second[..FRAME_HEAD]);
        half.extend(std::iter::repeat_n(0, second.len() - FRAME_HEAD));
        assert_eq!(
            decode_frames(&half),
            (frames[..1].to_vec(), Tail::Torn { at })
        );
    }

    #[test]
    fn a_damaged_frame_with_data_after_it_is_damage_not_a_torn_tail() {
        let frames = sample();
        let bytes = encoded(&frames);
        let at = frame_of(1, &frames[0].writes).len();
        // One bit flipped inside the second frame's payload, or its checksum.
        for flip in [at + FRAME_HEAD + 3, at + 5] {
            let mut bad = bytes.clone();
            bad[flip] ^= 0x10;
            let (got, tail) = decode_frames(&bad);
            assert_eq!(got, frames[..1]);
            assert!(
                matches!(tail, Tail::Damaged { at: a, ref why } if a == at && why.contains("checksum")),
                "{tail:?}"
            );
        }
        // The same flip in the last frame: torn (it may be a half-written append).
        let last = bytes.len() - frame_of(3, &frames[2].writes).len();
        let mut bad = bytes.clone();
        bad[last + FRAME_HEAD] ^= 1;
        assert_eq!(
            decode_frames(&bad),
            (frames[..2].to_vec(), Tail::Torn { at: last })
        );
    }

    /// A frame around `payload` with a checksum that matches.
    fn raw_frame(payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_le_bytes();
        [&len[..], &checksum(&len, payload).to_le_bytes(), payload].concat()
    }

    #[test]
    fn a_damaged_length_is_damage_when_it_stays_inside_the_file() {
        let frames = sample();
        let bytes = encoded(&frames);
        let at = frame_of(1, &frames[0].writes).len();
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let (got, tail) = decode_frames(&bad);
        assert_eq!(got, frames[..1]);
        assert!(
            matches!(tail, Tail::Damaged { at: a, .. } if a == at),
            "{tail:?}"
        );
    }

    #[test]
    fn a_payload_that_checks_out_but_does_not_parse_is_refused() {
        // A frame shorter than a commit number, then another frame: damage.
        let mut bytes = raw_frame(&[1u8, 2, 3]);
        bytes.extend(frame_of(9, &[]));
        assert!(matches!(
            decode_frames(&bytes).1,
            Tail::Damaged { at: 0, .. }
        ));
        // A write of unknown kind; a key running past the frame.
        for payload in [
            [&1u64.to_le_bytes()[..], &[7, 0, 0, 0, 0, 0]].concat(),
            [&1u64.to_le_bytes()[..], &[1, 1, b't', 200, 0, 0, 0, 1]].concat(),
        ] {
            let mut bytes = raw_frame(&payload);
            bytes.extend(frame_of(9, &[]));
            let (got, tail) = decode_frames(&bytes);
            assert!(got.is_empty());
            assert!(matches!(tail, Tail::Damaged { at: 0, .. }), "{tail:?}");
        }
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn append_all(seg: &mut Segment, frames: &[Frame]) {
        for f in frames {
            seg.append(&frame_of(f.commit, &f.writes)).unwrap();
        }
    }

    #[test]
    fn segments_replay_in_generation_order_and_are_removed_below_a_generation() {
        let d = dir();
        let frames = sample();
        let mut a = Segment::create(d.path(), 4, true).unwrap();
        append_all(&mut a, &frames[..2]);
        let mut b = Segment::create(d.path(), 11, false).unwrap();
        append_all(&mut b, &frames[2..]);
        b.sync().unwrap();
        assert_eq!(b.generation(), 11);
        assert_eq!(
            b.len(),
            (HEADER_LEN + frame_of(3, &frames[2].writes).len()) as u64
        );
        // Not a segment: ignored.
        std::fs::write(d.path().join("journal-x.jnl"), b"junk").unwrap();
        std::fs::write(d.path().join("bluewire.redb"), b"").unwrap();
        assert_eq!(segments(d.path()).unwrap(), vec![4, 11]);
        assert_eq!(replay(d.path()).unwrap(), (frames.clone(), None));
        assert!(
            Segment::create(d.path(), 11, false).is_err(),
            "an existing segment is never reopened for writing"
        );
        assert_eq!(remove_below(d.path(), 11).unwrap(), 1);
        assert_eq!(segments(d.path()).unwrap(), vec![11]);
        assert_eq!(replay(d.path()).unwrap(), (frames[2..].to_vec(), None));
    }

    #[test]
    fn replay_stops_at_a_torn_tail_only_in_the_newest_segment() {
        let d = dir();
        let frames = sample();
        let mut a = Segment::create(d.path(), 1, false).unwrap();
        append_all(&mut a, &frames[..1]);
        let second = frame_of(2, &frames[1].writes);
        a.append(&second[..second.len() - 1]).unwrap();
        let path = segment_path(d.path(), 1);
        let at = HEADER_LEN + frame_of(1, &frames[0].writes).len();
        assert_eq!(
            replay(d.path()).unwrap(),
            (frames[..1].to_vec(), Some((path.clone(), at)))
        );
        // A later segment makes the same cut damage.
        let mut b = Segment::create(d.path(), 2, false).unwrap();
        append_all(&mut b, &frames[2..]);
        let e = replay(d.path()).unwrap_err();
        assert!(
            matches!(e, JournalError::Damaged { at: a, .. } if a == at),
            "{e}"
        );
        assert!(e.to_string().contains("backup"), "{e}");
    }

    #[test]
    fn replay_refuses_commits_out_of_order_and_foreign_files() {
        let d = dir();
        let frames = sample();
        let mut a = Segment::create(d.path(), 1, false).unwrap();
        append_all(&mut a, &frames[1..2]);
        let mut b = Segment::create(d.path(), 2, false).unwrap();
        append_all(&mut b, &frames[..1]);
        let e = replay(d.path()).unwrap_err();
        assert!(e.to_string().contains("commit 1 after commit 2"), "{e}");
        // A gap: commits missing between two segments.
        std::fs::remove_file(segment_path(d.path(), 2)).unwrap();
        let mut c = Segment::create(d.path(), 2, false).unwrap();
        append_all(
            &mut c,
            &frames[..1]
                .iter()
                .map(|f| Frame {
                    commit: 4,
                    ..f.clone()
                })
                .collect::<Vec<_>>(),
        );
        let e = replay(d.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("commit 4 after commit 2: the commits in between are missing"),
            "{e}"
        );
        std::fs::remove_file(segment_path(d.path(), 2)).unwrap();
        // A segment whose header names another generation (a file renamed by hand).
        std::fs::rename(segment_path(d.path(), 1), segment_path(d.path(), 5)).unwrap();
        let e = replay(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a journal segment"), "{e}");
        std::fs::write(segment_path(d.path(), 5), b"BWJRNL01").unwrap();
        std::fs::write(segment_path(d.path(), 6), [0u8; 3]).unwrap();
        let e = replay(d.path()).unwrap_err();
        assert!(e.to_string().contains("shorter than its header"), "{e}");
    }

    #[test]
    fn a_segment_that_is_only_its_header_replays_empty_and_damage_names_its_offset() {
        let d = dir();
        let frames = sample();
        // Closed before anything was appended to it, with a newer segment after it.
        drop(Segment::create(d.path(), 1, true).unwrap());
        let mut b = Segment::create(d.path(), 2, false).unwrap();
        append_all(&mut b, &frames);
        b.sync().unwrap();
        assert_eq!(replay(d.path()).unwrap(), (frames.clone(), None));
        // A flipped byte in the second frame's payload, a frame after it: damage, at the
        // second frame's offset in the file.
        let path = segment_path(d.path(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = HEADER_LEN + frame_of(1, &frames[0].writes).len();
        bytes[at + FRAME_HEAD + 9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = replay(d.path()).unwrap_err();
        assert!(
            matches!(&e, JournalError::Damaged { at: a, why, .. } if *a == at && why.contains("checksum")),
            "{e}"
        );
    }

    #[test]
    fn a_newest_segment_whose_header_never_landed_is_a_torn_tail() {
        let d = dir();
        let frames = sample();
        let mut a = Segment::create(d.path(), 1, false).unwrap();
        append_all(&mut a, &frames);
        for partial in [&b""[..], b"BWJR", &[0u8; 5]] {
            std::fs::write(segment_path(d.path(), 2), partial).unwrap();
            let (got, torn) = replay(d.path()).unwrap();
            assert_eq!(got, frames);
            assert_eq!(torn, Some((segment_path(d.path(), 2), 0)));
        }
    }
}
