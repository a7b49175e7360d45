//! proxy-wasm's serialized header map, read in place.
//!
//! The host hands a filter a whole header map in one buffer: the number of
//! pairs (u32, little-endian), each pair's name and value lengths (u32 each),
//! then every name and value followed by a NUL byte. Reading the pairs as
//! slices of that buffer costs no allocation per header, where the SDK's
//! reader copies every name and value into a `String` and a `Vec` of its own
//! (and panics on a name that is not UTF-8).

use std::ops::Range;

/// The pairs of a serialized header map, as slices of `bytes`. A buffer
/// that ends early yields the pairs it holds whole, and one whose table of
/// lengths does not fit yields none — never garbage, an error or a panic: it
/// comes from the host, but is read defensively.
pub fn pairs(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let (data, spans) = spans(bytes);
    spans.map_while(move |(name, value)| Some((data.get(name)?, data.get(value)?)))
}

/// The pairs as text, when every name and value is UTF-8 — as good as
/// always: the names and values are checked in one pass over the buffer's
/// text (they are separated by NUL bytes, which end no multi-byte character),
/// instead of one check per string. `None` if any is not UTF-8; read those
/// with [`pairs`].
pub fn text_pairs(bytes: &[u8]) -> Option<impl Iterator<Item = (&str, &str)>> {
    let (data, spans) = spans(bytes);
    let text = std::str::from_utf8(data).ok()?;
    Some(spans.map_while(move |(name, value)| Some((text.get(name)?, text.get(value)?))))
}

/// `pairs` serialized as the host hands them over: what [`pairs`] reads
/// (for tests and tools; a name or value over 4 GiB is cut to it).
pub fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let len = |bytes: &[u8]| u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = u32::try_from(pairs.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes()
        .to_vec();
    for (name, value) in pairs {
        out.extend(len(name));
        out.extend(len(value));
    }
    for (name, value) in pairs {
        out.extend(*name);
        out.push(0);
        out.extend(*value);
        out.push(0);
    }
    out
}

/// How many pairs the buffer says it holds (those that fit may be fewer).
pub fn declared_len(bytes: &[u8]) -> usize {
    spans(bytes).1.len()
}

/// The buffer's names and values region, and each pair's name and value
/// as ranges of it.
fn spans(
    bytes: &[u8],
) -> (
    &[u8],
    impl ExactSizeIterator<Item = (Range<usize>, Range<usize>)>,
) {
    let declared = read_u32(bytes, 0).unwrap_or(0);
    // The names and values start after the table of lengths; a buffer whose
    // table does not fit is malformed, and none of it is read.
    let data_start = declared.checked_mul(8).and_then(|n| n.checked_add(4));
    let (count, data) = match data_start.and_then(|start| bytes.get(start..)) {
        Some(data) => (declared, data),
        None => (0, &[][..]),
    };
    let mut at = 0usize;
    let spans = (0..count).map(move |index| {
        let lengths = 4 + index * 8;
        // A length the table cannot give, or one that overflows, makes an
        // empty range past the data, which reads as nothing.
        let past = usize::MAX..usize::MAX;
        let (Some(name_len), Some(value_len)) =
            (read_u32(bytes, lengths), read_u32(bytes, lengths + 4))
        else {
            return (past.clone(), past);
        };
        let name = at..at.saturating_add(name_len);
        let value_start = name.end.saturating_add(1);
        let value = value_start..value_start.saturating_add(value_len);
        at = value.end.saturating_add(1);
        (name, value)
    });
    (data, spans)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    let word: [u8; 4] = word.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_read_in_order_without_their_terminators() {
        let map: [(&[u8], &[u8]); 3] = [
            (b":path", b"/v1/telemetry"),
            (b"x-empty", b""),
            (b"x-bytes", b"\xff\xfe"),
        ];
        let bytes = serialize(&map);
        assert_eq!(pairs(&bytes).collect::<Vec<_>>(), map.to_vec());
    }

    #[test]
    fn text_pairs_are_the_pairs_when_all_are_utf8_and_none_otherwise() {
        let map: [(&[u8], &[u8]); 3] = [
            (b":path", b"/v1/telemetry"),
            (b"x-name", "caf\u{e9}".as_bytes()),
            (b"x-empty", b""),
        ];
        let bytes = serialize(&map);
        let text: Vec<(&str, &str)> = text_pairs(&bytes).unwrap().collect();
        assert_eq!(
            text,
            [
                (":path", "/v1/telemetry"),
                ("x-name", "caf\u{e9}"),
                ("x-empty", "")
            ]
        );
        assert_eq!(declared_len(&bytes), 3);
        let bytes = serialize(&[(b"x-ok", b"1"), (b"x-bytes", b"\xff")]);
        assert!(text_pairs(&bytes).is_none());
        assert_eq!(pairs(&bytes).count(), 2);
    }

    #[test]
    fn an_empty_or_truncated_buffer_yields_what_it_holds() {
        assert_eq!(pairs(&[]).count(), 0);
        assert_eq!(pairs(&[1, 0]).count(), 0);
        let map: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"bc", b"23")];
        let bytes = serialize(&map);
        for cut in 0..bytes.len() {
            // Whatever is read of a cut buffer is the map's first pairs, intact.
            let read: Vec<_> = pairs(&bytes[..cut]).collect();
            assert_eq!(read, map[..read.len()].to_vec(), "cut at {cut}");
            // A pair is read only once its value is whole.
            let needed = 4 + 16 + 4 + 1 + 2 + 2;
            assert!(read.len() < 2 || cut >= needed, "cut at {cut}: {read:?}");
        }
        assert_eq!(pairs(&bytes).collect::<Vec<_>>(), map.to_vec());
    }

    #[test]
    fn lengths_beyond_the_buffer_end_the_pairs() {
        let mut bytes = serialize(&[(b"a", b"1")]);
        bytes[0] = 200; // claims 200 pairs, whose table of lengths cannot fit
        assert_eq!(pairs(&bytes).count(), 0);
        let mut bytes = serialize(&[(b"a", b"1")]);
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes()); // a huge value length
        assert_eq!(pairs(&bytes).count(), 0);
    }
}
