//! The sticky canary split: a device's bucket is a hash of its id and the
//! rollout's salt, so every Envoy replica puts it in the same bucket, and a
//! device in the canary at weight `w` stays there at any weight above `w`.

/// Buckets a rollout divides devices into: weights are in basis points.
pub const BUCKETS: u32 = 10_000;

/// A 64-bit hash that is the same on every platform and in every release:
/// FNV-1a over the parts (each followed by a separator byte, so `("ab","c")`
/// and `("a","bc")` differ), then the SplitMix64 finaliser to spread the bits.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &byte in *part {
            h = (h ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        h = (h ^ 0xff).wrapping_mul(PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The bucket (0..10,000) of a device in a rollout.
pub fn bucket(salt: &str, device_id: &str) -> u32 {
    (stable_hash(&[salt.as_bytes(), device_id.as_bytes()]) % u64::from(BUCKETS)) as u32
}

/// Whether a share in basis points is none (for serde's `skip_serializing_if`).
pub fn is_zero(basis_points: &u32) -> bool {
    *basis_points == 0
}

/// Whether a bucket is in the canary at a weight in basis points.
pub fn in_canary(bucket: u32, weight_basis_points: u32) -> bool {
    bucket < weight_basis_points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_separated() {
        assert_ne!(stable_hash(&[b"a", b"bc"]), stable_hash(&[b"ab", b"c"]));
        assert_ne!(bucket("salt", "device-1"), bucket("salt2", "device-1"));
    }

    #[test]
    fn buckets_are_pinned_across_releases() {
        // Every replica, and every release of the filter and the server, must
        // put a device in the same bucket: these values may never change.
        assert_eq!(bucket("salt", "device-1"), PINNED[0]);
        assert_eq!(bucket("ingest-eu-canary", "sensor-000042"), PINNED[1]);
        assert_eq!(stable_hash(&[b""]), PINNED_EMPTY);
    }

    const PINNED: [u32; 2] = [9126, 7827];
    const PINNED_EMPTY: u64 = 5_705_415_379_283_624_141;
}
