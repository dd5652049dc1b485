//! Datagram authentication for the membership protocol: pure code, no I/O, no clock (callers
//! pass the time in).
//!
//! Layout of every datagram (big-endian integers):
//!
//! ```text
//! 0      4   5              13             21             29         len-16     len
//! | "FLBm" | 1 | sender nonce | counter      | unix time ms | payload  | tag (16) |
//! ```
//!
//! `tag` is HMAC-SHA256 over everything before it, truncated to 16 bytes, keyed with
//! HMAC-SHA256(secret, [`KEY_LABEL`]) so the raw Secret never keys the MAC directly.
//!
//! Threat model: an attacker on the LAN who does not hold the Secret can see, drop, delay, replay
//! and inject datagrams. Forged or altered datagrams fail the tag. Replays are refused by a
//! per-sender sliding window of 64 counters (IPsec style), and anything older or newer than
//! `max_skew` is refused outright, so the window state can be forgotten after `2 * max_skew`.
//! Not covered: confidentiality (node names and addresses travel in clear; they are not secret in
//! a cluster), denial of service by dropping traffic (indistinguishable from a dead node), and a
//! holder of the Secret (every speaker is trusted alike).

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Magic bytes: tells a membership datagram from stray traffic before any crypto.
pub const MAGIC: [u8; 4] = *b"FLBm";
/// Format version.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 8;
/// Bytes of the truncated HMAC-SHA256 tag.
pub const TAG_LEN: usize = 16;
/// Label mixed into the key derivation (domain separation from other uses of the Secret).
pub const KEY_LABEL: &[u8] = b"ferrolb speaker membership v1 hmac-sha256";
/// Counters remembered below the highest one seen per sender.
const REPLAY_WINDOW: u64 = 64;

/// Why a datagram was refused (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    /// Shorter than header + tag, wrong magic or unknown version.
    #[error("malformed datagram")]
    Malformed,
    /// The tag does not match: wrong key or altered bytes.
    #[error("bad authentication tag")]
    BadTag,
    /// Timestamp further than the allowed clock skew from ours.
    #[error("timestamp outside the allowed clock skew")]
    Stale,
    /// Counter already seen (or below the window) for this sender.
    #[error("replayed datagram")]
    Replayed,
}

impl AuthError {
    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::BadTag => "bad_tag",
            AuthError::Stale => "stale",
            AuthError::Replayed => "replayed",
        }
    }
}

/// Key derived from the shared Secret.
#[derive(Clone)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    /// Derives the MAC key from the Secret's bytes.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = mac_with(secret);
        mac.update(KEY_LABEL);
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self) -> HmacSha256 {
        mac_with(&self.0)
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length (long keys are hashed first).
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

/// Seals outgoing payloads: one per process, with its own nonce and counter.
#[derive(Debug)]
pub struct Sealer {
    key: AuthKey,
    nonce: u64,
    counter: u64,
}

impl Sealer {
    /// `nonce` must differ between processes sharing the Secret (the speaker uses its boot id
    /// mixed with random bits) so that counters restarting at zero are not taken as replays.
    pub fn new(key: AuthKey, nonce: u64) -> Self {
        Self {
            key,
            nonce,
            counter: 0,
        }
    }

    /// Writes the sealed datagram for `payload` into `out` (cleared first).
    pub fn seal(&mut self, payload: &[u8], now_ms: u64, out: &mut Vec<u8>) {
        self.counter = self.counter.wrapping_add(1);
        out.clear();
        out.reserve(HEADER_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(payload);
        let mut mac = self.key.mac();
        mac.update(out);
        let tag = mac.finalize().into_bytes();
        out.extend_from_slice(&tag[..TAG_LEN]);
    }
}

#[derive(Debug, Clone, Copy)]
struct SenderWindow {
    highest: u64,
    /// Bit i set: counter `highest - i` was seen.
    seen: u64,
    last_seen_ms: u64,
}

/// Verifies incoming datagrams and remembers counters per sender nonce.
#[derive(Debug)]
pub struct Opener {
    key: AuthKey,
    max_skew_ms: u64,
    senders: HashMap<u64, SenderWindow>,
}

impl Opener {
    /// `max_skew`: how far a datagram's timestamp may be from our clock (clock skew between
    /// nodes plus transit time).
    pub fn new(key: AuthKey, max_skew: Duration) -> Self {
        Self {
            key,
            max_skew_ms: u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX),
            senders: HashMap::new(),
        }
    }

    /// Checks `datagram` and returns its payload. Never panics, whatever the input.
    pub fn open<'a>(&mut self, datagram: &'a [u8], now_ms: u64) -> Result<&'a [u8], AuthError> {
        if datagram.len() < HEADER_LEN + TAG_LEN || datagram[..4] != MAGIC || datagram[4] != VERSION
        {
            return Err(AuthError::Malformed);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let mut mac = self.key.mac();
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| AuthError::BadTag)?;

        let nonce = be_u64(&signed[5..13]);
        let counter = be_u64(&signed[13..21]);
        let sent_ms = be_u64(&signed[21..29]);
        if sent_ms.abs_diff(now_ms) > self.max_skew_ms {
            return Err(AuthError::Stale);
        }
        self.accept_counter(nonce, counter, now_ms)?;
        Ok(&signed[HEADER_LEN..])
    }

    fn accept_counter(&mut self, nonce: u64, counter: u64, now_ms: u64) -> Result<(), AuthError> {
        if !self.senders.contains_key(&nonce) {
            self.forget_idle(now_ms);
        }
        let window = self.senders.entry(nonce).or_insert(SenderWindow {
            highest: 0,
            seen: 0,
            last_seen_ms: now_ms,
        });
        if counter > window.highest {
            let shift = counter - window.highest;
            window.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                window.seen << shift
            };
            window.seen |= 1;
            window.highest = counter;
        } else {
            let age = window.highest - counter;
            if age >= REPLAY_WINDOW || window.seen & (1 << age) != 0 {
                return Err(AuthError::Replayed);
            }
            window.seen |= 1 << age;
        }
        window.last_seen_ms = now_ms;
        Ok(())
    }

    /// Drops windows of senders silent for more than twice the skew: any datagram they sent
    /// before is now refused as stale, so their counters need not be remembered.
    fn forget_idle(&mut self, now_ms: u64) {
        let horizon = self.max_skew_ms.saturating_mul(2);
        self.senders
            .retain(|_, w| now_ms.saturating_sub(w.last_seen_ms) <= horizon);
    }

    /// Number of senders whose replay window is remembered.
    pub fn remembered_senders(&self) -> usize {
        self.senders.len()
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn pair(secret: &[u8]) -> (Sealer, Opener) {
        (
            Sealer::new(AuthKey::derive(secret), 42),
            Opener::new(AuthKey::derive(secret), Duration::from_secs(10)),
        )
    }

    fn sealed(sealer: &mut Sealer, payload: &[u8], now: u64) -> Vec<u8> {
        let mut out = Vec::new();
        sealer.seal(payload, now, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let (mut sealer, mut opener) = pair(b"s3cret");
        let d = sealed(&mut sealer, b"hello", NOW);
        assert_eq!(d.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(opener.open(&d, NOW), Ok(&b"hello"[..]));
        let empty = sealed(&mut sealer, b"", NOW);
        assert_eq!(opener.open(&empty, NOW), Ok(&b""[..]));
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let (mut sealer, mut opener) = pair(b"s3cret");
        let d = sealed(&mut sealer, b"payload", NOW);
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x01;
            let err = opener.open(&t, NOW).unwrap_err();
            assert!(
                matches!(err, AuthError::BadTag | AuthError::Malformed),
                "byte {i}: {err:?}"
            );
        }
        // The original still opens: failed attempts did not consume its counter.
        assert!(opener.open(&d, NOW).is_ok());
    }

    #[test]
    fn wrong_key_is_rejected() {
        let mut sealer = Sealer::new(AuthKey::derive(b"other"), 7);
        let mut opener = Opener::new(AuthKey::derive(b"s3cret"), Duration::from_secs(10));
        let d = sealed(&mut sealer, b"payload", NOW);
        assert_eq!(opener.open(&d, NOW), Err(AuthError::BadTag));
    }

    #[test]
    fn replay_is_rejected_reordering_within_window_is_not() {
        let (mut sealer, mut opener) = pair(b"s3cret");
        let first = sealed(&mut sealer, b"1", NOW);
        let second = sealed(&mut sealer, b"2", NOW);
        assert!(opener.open(&second, NOW).is_ok());
        assert!(opener.open(&first, NOW).is_ok(), "late but unseen");
        assert_eq!(opener.open(&first, NOW), Err(AuthError::Replayed));
        assert_eq!(opener.open(&second, NOW), Err(AuthError::Replayed));
        // Far below the window: refused even though unseen.
        let old = sealed(&mut sealer, b"old", NOW);
        for _ in 0..REPLAY_WINDOW + 1 {
            let d = sealed(&mut sealer, b"x", NOW);
            assert!(opener.open(&d, NOW).is_ok());
        }
        assert_eq!(opener.open(&old, NOW), Err(AuthError::Replayed));
    }

    #[test]
    fn senders_have_separate_windows() {
        let key = AuthKey::derive(b"s3cret");
        let mut a = Sealer::new(key.clone(), 1);
        let mut b = Sealer::new(key.clone(), 2);
        let mut opener = Opener::new(key, Duration::from_secs(10));
        let da = sealed(&mut a, b"a", NOW);
        let db = sealed(&mut b, b"b", NOW);
        assert!(opener.open(&da, NOW).is_ok());
        assert!(opener.open(&db, NOW).is_ok(), "same counter, other sender");
        assert_eq!(opener.remembered_senders(), 2);
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let (mut sealer, mut opener) = pair(b"s3cret");
        let old = sealed(&mut sealer, b"x", NOW - 10_001);
        assert_eq!(opener.open(&old, NOW), Err(AuthError::Stale));
        let future = sealed(&mut sealer, b"x", NOW + 10_001);
        assert_eq!(opener.open(&future, NOW), Err(AuthError::Stale));
        let edge = sealed(&mut sealer, b"x", NOW - 10_000);
        assert!(opener.open(&edge, NOW).is_ok());
    }

    #[test]
    fn idle_senders_are_forgotten_after_twice_the_skew() {
        let key = AuthKey::derive(b"s3cret");
        let mut a = Sealer::new(key.clone(), 1);
        let mut b = Sealer::new(key.clone(), 2);
        let mut opener = Opener::new(key, Duration::from_secs(10));
        let da = sealed(&mut a, b"a", NOW);
        assert!(opener.open(&da, NOW).is_ok());
        let later = NOW + 20_001;
        let db = sealed(&mut b, b"b", later);
        assert!(opener.open(&db, later).is_ok());
        assert_eq!(opener.remembered_senders(), 1);
        // And the forgotten sender's old datagram is still refused, as stale.
        assert_eq!(opener.open(&da, later), Err(AuthError::Stale));
    }

    #[test]
    fn truncated_datagrams_never_panic() {
        let (mut sealer, mut opener) = pair(b"s3cret");
        let d = sealed(&mut sealer, b"some payload", NOW);
        for len in 0..d.len() {
            assert!(opener.open(&d[..len], NOW).is_err(), "len {len}");
        }
    }
}
