//! The undo record: what one write or truncation overwrote, as laid out in a side file.
//!
//! A record is appended before its write reaches the file, in one `write(2)` with
//! `O_APPEND`, so records from several processes never interleave. A process killed
//! mid-append may still leave a prefix of its record (Linux lets a fatal signal cut a
//! write to a regular file short), and another process may append after that prefix; the
//! torn record's own write never happened, since it comes after the append. So every
//! record starts with [`MAGIC`] and ends with a checksum, and [`decode_all`] skips
//! anything that does not check out, resuming at the next [`MAGIC`].

/// Marks the start of a record.
pub(crate) const MAGIC: [u8; 8] = *b"IDEMUNDO";

/// Bytes before a record's old bytes: magic, offset, old size, written, old-bytes length.
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 4;

/// Bytes after them: the checksum.
const TRAILER_LEN: usize = 8;

/// Most old bytes one record holds; a longer truncation is split into several records.
pub(crate) const OLD_BYTES_MAX: usize = 1 << 20;

/// What one write or truncation did to a file, and how to take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Undo {
    /// Where `old_bytes` go back.
    pub(crate) offset: u64,
    /// The file's size before the change; the file is truncated back to it.
    pub(crate) old_size: u64,
    /// How many bytes the change wrote (a write's length; 0 for a truncation), for the
    /// roll-back's summary.
    pub(crate) written: u64,
    /// The file's bytes from `offset` that the change overwrote or cut off, within
    /// `old_size`.
    pub(crate) old_bytes: Vec<u8>,
}

impl Undo {
    /// The record's bytes as appended to the side file.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.old_bytes.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.old_size.to_le_bytes());
        out.extend_from_slice(&self.written.to_le_bytes());
        let length = u32::try_from(self.old_bytes.len()).expect("old bytes are at most OLD_BYTES_MAX");
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&self.old_bytes);
        let checksum = fnv1a(&out[MAGIC.len()..]);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }
}

/// Every whole record in `bytes`, in the order they were appended, and how many bytes
/// were skipped as torn or unreadable.
pub(crate) fn decode_all(bytes: &[u8]) -> (Vec<Undo>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut at = 0;
    while at < bytes.len() {
        match decode_one(&bytes[at..]) {
            Some((undo, length)) => {
                records.push(undo);
                at += length;
            }
            None => {
                // Resume at the next magic after this position (or the end).
                let next = find_magic(&bytes[at + 1..]).map_or(bytes.len(), |found| at + 1 + found);
                skipped += next - at;
                at = next;
            }
        }
    }
    (records, skipped)
}

/// The record at the start of `bytes` and its length, if one is there whole.
fn decode_one(bytes: &[u8]) -> Option<(Undo, usize)> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let old_length = u32::from_le_bytes(bytes[32..36].try_into().expect("four bytes"));
    let old_length = usize::try_from(old_length).ok().filter(|length| *length <= OLD_BYTES_MAX)?;
    let end = HEADER_LEN + old_length;
    let checksum = bytes.get(end..end + TRAILER_LEN)?;
    if fnv1a(&bytes[MAGIC.len()..end]).to_le_bytes() != checksum {
        return None;
    }
    let undo =
        Undo { offset: word(8), old_size: word(16), written: word(24), old_bytes: bytes[HEADER_LEN..end].to_vec() };
    Some((undo, end + TRAILER_LEN))
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|window| window == MAGIC)
}

/// 64-bit FNV-1a: catches a torn or mixed-up record, and names side files in a journal
/// directory; nothing here is adversarial.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undo(offset: u64, old: &[u8]) -> Undo {
        Undo { offset, old_size: 4096, written: 100, old_bytes: old.to_vec() }
    }

    #[test]
    fn records_read_back_in_order() {
        let (a, b) = (undo(0, b"abc"), undo(4000, b""));
        let bytes = [a.encode(), b.encode()].concat();
        assert_eq!(decode_all(&bytes), (vec![a, b], 0));
    }

    #[test]
    fn a_torn_record_is_skipped_and_a_later_one_still_read() {
        let (a, torn, c) = (undo(1, b"one"), undo(2, b"torn away"), undo(3, b"three"));
        let torn_bytes = torn.encode();
        let cut = &torn_bytes[..torn_bytes.len() - 5];
        let bytes = [a.encode(), cut.to_vec(), c.encode()].concat();
        assert_eq!(decode_all(&bytes), (vec![a, c], cut.len()));
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut bytes = undo(7, b"payload").encode();
        bytes[40] ^= 1;
        assert_eq!(decode_all(&bytes), (vec![], bytes.len()));
    }

    #[test]
    fn a_trailing_prefix_shorter_than_a_header_is_skipped() {
        let a = undo(9, b"x");
        let bytes = [a.encode(), MAGIC[..5].to_vec()].concat();
        assert_eq!(decode_all(&bytes), (vec![a], 5));
    }
}
