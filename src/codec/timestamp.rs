//! Payloads of the `MessagePack` timestamp extension (type -1), big-endian as the spec says,
//! and of replikv's date extension (type 1): the signed days since 1970-01-01 as a
//! big-endian `i32` (4 bytes, so a date is stored in 6).

/// The payload for `secs` and `nanos` since the Unix epoch, in its smallest form:
/// 4 bytes (seconds only), 8 bytes (30-bit nanos + 34-bit seconds) or 12 bytes.
#[must_use]
pub fn encode_timestamp(secs: i64, nanos: u32) -> Vec<u8> {
    if secs >= 0 && secs >> 34 == 0 {
        let packed = (u64::from(nanos) << 34) | secs as u64;
        if packed >> 32 == 0 {
            return (packed as u32).to_be_bytes().to_vec();
        }
        return packed.to_be_bytes().to_vec();
    }
    let mut out = nanos.to_be_bytes().to_vec();
    out.extend_from_slice(&secs.to_be_bytes());
    out
}

/// Seconds and nanoseconds from a timestamp payload; `None` if it is malformed.
#[must_use]
pub fn decode_timestamp(payload: &[u8]) -> Option<(i64, u32)> {
    let (secs, nanos) = match payload.len() {
        4 => (i64::from(u32::from_be_bytes(payload.try_into().ok()?)), 0),
        8 => {
            let packed = u64::from_be_bytes(payload.try_into().ok()?);
            ((packed & ((1 << 34) - 1)) as i64, (packed >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(payload[4..].try_into().ok()?),
            u32::from_be_bytes(payload[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    (nanos < 1_000_000_000).then_some((secs, nanos))
}

/// The payload of replikv's date extension for `days` since 1970-01-01.
#[must_use]
pub fn encode_date(days: i32) -> [u8; 4] {
    days.to_be_bytes()
}

/// The days since 1970-01-01 of a date payload; `None` if it is not 4 bytes.
#[must_use]
pub fn decode_date(payload: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(payload.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_width_is_chosen_by_the_value() {
        assert_eq!(encode_timestamp(1_700_000_000, 0).len(), 4);
        assert_eq!(encode_timestamp(1_700_000_000, 5).len(), 8);
        assert_eq!(encode_timestamp(-1, 0).len(), 12);
        assert_eq!(encode_timestamp(1 << 40, 0).len(), 12);
    }

    proptest! {
        #[test]
        fn timestamps_round_trip(secs in -(1i64 << 45)..(1i64 << 45), nanos in 0u32..1_000_000_000) {
            prop_assert_eq!(decode_timestamp(&encode_timestamp(secs, nanos)), Some((secs, nanos)));
        }

        #[test]
        fn dates_round_trip(days: i32) {
            prop_assert_eq!(decode_date(&encode_date(days)), Some(days));
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decode_timestamp(&bytes);
            let _ = decode_date(&bytes);
        }
    }
}
