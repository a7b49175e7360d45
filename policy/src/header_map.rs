//! proxy-wasm's serialized header map, read in place.
//!
//! The host hands a filter a whole header map in one buffer: the number of
//! pairs (u32, little-endian), each pair's name and value lengths (u32 each),
//! then every name and value followed by a NUL byte. Reading the pairs as
//! slices of that buffer costs no allocation per header, where the SDK's
//! reader copies every name and value into a `String` and a `Vec` of its own
//! (and panics on a name that is not UTF-8).

/// The pairs of a serialized header map, as slices of `bytes`. A buffer
/// that ends early yields the pairs it holds whole, and one whose table of
/// lengths does not fit yields none — never garbage, an error or a panic: it
/// comes from the host, but is read defensively.
pub fn pairs(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let declared = read_u32(bytes, 0).unwrap_or(0);
    // The names and values start after the table of lengths; a buffer whose
    // table does not fit is malformed, and none of it is read.
    let data_start = declared.checked_mul(8).and_then(|n| n.checked_add(4));
    let (count, mut data) = match data_start {
        Some(start) if start <= bytes.len() => (declared, start),
        _ => (0, 0),
    };
    (0..count).map_while(move |index| {
        let lengths = 4 + index * 8;
        let name_len = read_u32(bytes, lengths)?;
        let value_len = read_u32(bytes, lengths + 4)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        let value_start = data + name_len + 1;
        let value = bytes.get(value_start..value_start.checked_add(value_len)?)?;
        data = value_start + value_len + 1;
        Some((name, value))
    })
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    let word: [u8; 4] = word.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes pairs as the host does.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend((value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend(*name);
            out.push(0);
            out.extend(*value);
            out.push(0);
        }
        out
    }

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
