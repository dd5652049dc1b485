//! Property tests of the membership datagram authentication: arbitrary bytes never panic and
//! never open; any single-bit change of a sealed datagram is refused; sealed datagrams open once.

use std::time::Duration;

use ferrolb_speaker::membership::auth::{AuthError, AuthKey, Opener, Sealer};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000_000;

fn opener() -> Opener {
    Opener::new(AuthKey::derive(b"prop secret"), Duration::from_secs(30))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        prop_assert!(opener().open(&bytes, NOW).is_err());
    }

    #[test]
    fn any_bit_flip_is_refused(
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut sealer = Sealer::new(AuthKey::derive(b"prop secret"), 9);
        let mut datagram = Vec::new();
        sealer.seal(&payload, NOW, &mut datagram);
        let i = position.index(datagram.len());
        datagram[i] ^= 1 << bit;
        let err = opener().open(&datagram, NOW).unwrap_err();
        prop_assert!(matches!(err, AuthError::BadTag | AuthError::Malformed));
    }

    #[test]
    fn sealed_opens_exactly_once(payload in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let mut sealer = Sealer::new(AuthKey::derive(b"prop secret"), 9);
        let mut datagram = Vec::new();
        sealer.seal(&payload, NOW, &mut datagram);
        let mut opener = opener();
        prop_assert_eq!(opener.open(&datagram, NOW), Ok(&payload[..]));
        prop_assert_eq!(opener.open(&datagram, NOW), Err(AuthError::Replayed));
    }
}
