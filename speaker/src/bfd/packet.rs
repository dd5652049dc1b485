//! The BFD Control packet (RFC 5880 §4.1, §4.2): a zero-copy view, [`ControlPacketView`], and
//! its meaning, [`ControlPacket`], in the shape of `crate::wire` (smoltcp's `wire`).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```
//!
//! [`ControlPacket::parse`] makes the reception checks of RFC 5880 §6.8.6 that need nothing but
//! the datagram, in the RFC's order, each failure its own [`ParseError`] variant. Unlike
//! `wire::Error`, which is deliberately a unit struct because a malformed ARP or NDP frame is
//! only ever dropped, a rejected BFD packet is worth telling apart: a peer that sends
//! authenticated packets, or the wrong version, never brings the session up, and the operator
//! needs the counter to say why. The checks that need the session (your discriminator names a
//! session of ours; the TTL of RFC 5881 §5 / RFC 5883 §5) belong to the session and the driver.
//!
//! Authentication (the A bit and the Authentication Section, RFC 5880 §4.2–§4.4, §6.7) is not
//! implemented: a packet with the A bit set is rejected with
//! [`ParseError::AuthenticationNotSupported`], which §6.8.6 asks of a session without
//! authentication anyway ("If the A bit is set and no authentication is in use ... discarded").

use std::fmt;
use std::time::Duration;

/// The protocol version this module reads and writes (RFC 5880 §4.1).
pub const VERSION: u8 = 1;
/// Length of the mandatory section, and of every packet we send (no Authentication Section).
pub const MANDATORY_LEN: usize = 24;
/// The smallest length field a packet with the A bit may carry: the mandatory section plus the
/// Auth Type and Auth Len octets (RFC 5880 §6.8.6).
pub const MIN_AUTHENTICATED_LEN: usize = MANDATORY_LEN + 2;

mod field {
    use std::ops::Range;

    /// Version (3 bits) and Diag (5 bits).
    pub const VERS_DIAG: usize = 0;
    /// Sta (2 bits) and the flags P F C A D M.
    pub const STA_FLAGS: usize = 1;
    pub const DETECT_MULT: usize = 2;
    pub const LENGTH: usize = 3;
    pub const MY_DISCRIMINATOR: Range<usize> = 4..8;
    pub const YOUR_DISCRIMINATOR: Range<usize> = 8..12;
    pub const DESIRED_MIN_TX: Range<usize> = 12..16;
    pub const REQUIRED_MIN_RX: Range<usize> = 16..20;
    pub const REQUIRED_MIN_ECHO_RX: Range<usize> = 20..24;
    /// First octet of the Authentication Section, present when the A bit is set.
    pub const AUTH_TYPE: usize = 24;
}

const FLAG_POLL: u8 = 0x20;
const FLAG_FINAL: u8 = 0x10;
const FLAG_CONTROL_PLANE_INDEPENDENT: u8 = 0x08;
const FLAG_AUTHENTICATION_PRESENT: u8 = 0x04;
const FLAG_DEMAND: u8 = 0x02;
const FLAG_MULTIPOINT: u8 = 0x01;

/// The session state as carried in the Sta field, and as kept by the session (RFC 5880 §4.1,
/// §6.2). Two bits, all four values defined: no unknown value can arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    /// The state in the low two bits of `bits`.
    pub const fn from_bits(bits: u8) -> State {
        match bits & 0x03 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    pub const fn bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The Diag field: the sender's reason for its last state change (RFC 5880 §4.1).
///
/// Unknown codes (9..=31) are preserved, not rejected. The field is informational (§6.8.6 does
/// not look at it) and IANA's registry grows (RFC 6428 added 9, Mis-Connectivity Defect):
/// refusing a packet for a code we do not know would keep a session with a newer peer down for
/// nothing, while `Unknown(code)` still shows the number in status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// 0
    NoDiagnostic,
    /// 1: no packet from the peer for a Detection Time.
    ControlDetectionTimeExpired,
    /// 2
    EchoFunctionFailed,
    /// 3: the peer said Down (or AdminDown) while we were Init or Up.
    NeighborSignaledSessionDown,
    /// 4
    ForwardingPlaneReset,
    /// 5
    PathDown,
    /// 6
    ConcatenatedPathDown,
    /// 7: the session was disabled (RFC 5880 §6.8.16).
    AdministrativelyDown,
    /// 8
    ReverseConcatenatedPathDown,
    /// A code RFC 5880 does not define; only the low 5 bits are ever sent.
    Unknown(u8),
}

impl From<u8> for Diagnostic {
    /// The code in the low five bits of `raw` (the width of the field).
    fn from(raw: u8) -> Diagnostic {
        match raw & 0x1f {
            0 => Diagnostic::NoDiagnostic,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            other => Diagnostic::Unknown(other),
        }
    }
}

impl From<Diagnostic> for u8 {
    fn from(diagnostic: Diagnostic) -> u8 {
        match diagnostic {
            Diagnostic::NoDiagnostic => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Unknown(other) => other & 0x1f,
        }
    }
}

impl fmt::Display for Diagnostic {
    /// The RFC 5880 §4.1 names, as status and logs show them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Diagnostic::NoDiagnostic => "No Diagnostic",
            Diagnostic::ControlDetectionTimeExpired => "Control Detection Time Expired",
            Diagnostic::EchoFunctionFailed => "Echo Function Failed",
            Diagnostic::NeighborSignaledSessionDown => "Neighbor Signaled Session Down",
            Diagnostic::ForwardingPlaneReset => "Forwarding Plane Reset",
            Diagnostic::PathDown => "Path Down",
            Diagnostic::ConcatenatedPathDown => "Concatenated Path Down",
            Diagnostic::AdministrativelyDown => "Administratively Down",
            Diagnostic::ReverseConcatenatedPathDown => "Reverse Concatenated Path Down",
            Diagnostic::Unknown(code) => return write!(f, "unknown diagnostic {code}"),
        };
        f.write_str(name)
    }
}

/// Why a datagram is not an acceptable BFD Control packet: one variant per check of RFC 5880
/// §6.8.6 that the datagram alone decides, so that each can be counted ([`ParseError::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("datagram of {len} bytes is shorter than a BFD Control packet ({MANDATORY_LEN} bytes)")]
    Truncated { len: usize },
    #[error("BFD version {0}, only version 1 is supported")]
    UnsupportedVersion(u8),
    #[error("length field {length} is below the minimum {minimum} (24, or 26 with the A bit set)")]
    LengthBelowMinimum { length: u8, minimum: u8 },
    #[error("length field {length} is longer than the {datagram}-byte datagram")]
    LengthExceedsDatagram { length: u8, datagram: usize },
    #[error("detect multiplier is 0")]
    ZeroDetectMultiplier,
    #[error("multipoint (M) bit set: point-to-multipoint BFD is not supported")]
    Multipoint,
    #[error("my discriminator is 0")]
    ZeroMyDiscriminator,
    #[error("your discriminator is 0 in state {state}: only allowed in Down or AdminDown")]
    ZeroYourDiscriminator { state: State },
    #[error(
        "authentication (A) bit set, auth type {auth_type}: BFD authentication is not implemented"
    )]
    AuthenticationNotSupported { auth_type: u8 },
}

impl ParseError {
    /// A stable, metric-label-friendly name of the variant.
    pub const fn label(&self) -> &'static str {
        match self {
            ParseError::Truncated { .. } => "truncated",
            ParseError::UnsupportedVersion(_) => "unsupported_version",
            ParseError::LengthBelowMinimum { .. } => "length_below_minimum",
            ParseError::LengthExceedsDatagram { .. } => "length_exceeds_datagram",
            ParseError::ZeroDetectMultiplier => "zero_detect_multiplier",
            ParseError::Multipoint => "multipoint",
            ParseError::ZeroMyDiscriminator => "zero_my_discriminator",
            ParseError::ZeroYourDiscriminator { .. } => "zero_your_discriminator",
            ParseError::AuthenticationNotSupported { .. } => "authentication_not_supported",
        }
    }
}

/// A view of a BFD Control packet's mandatory section. The getters read the raw fields, valid
/// or not (the tests build invalid packets with the setters); [`ControlPacket::parse`] judges
/// them.
#[derive(Debug, Clone)]
pub struct ControlPacketView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ControlPacketView<T> {
    /// Wraps a buffer without checking its length (for emission into [`MANDATORY_LEN`] bytes).
    pub const fn new_unchecked(buffer: T) -> ControlPacketView<T> {
        ControlPacketView { buffer }
    }

    /// Wraps an untrusted buffer; afterwards no getter panics.
    pub fn new_checked(buffer: T) -> Result<ControlPacketView<T>, ParseError> {
        let view = ControlPacketView::new_unchecked(buffer);
        view.check_len()?;
        Ok(view)
    }

    /// The mandatory section is present. What the length field says is checked by `parse`.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < MANDATORY_LEN {
            return Err(ParseError::Truncated { len });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERS_DIAG] >> 5
    }

    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic::from(self.buffer.as_ref()[field::VERS_DIAG])
    }

    pub fn state(&self) -> State {
        State::from_bits(self.buffer.as_ref()[field::STA_FLAGS] >> 6)
    }

    fn flag(&self, flag: u8) -> bool {
        self.buffer.as_ref()[field::STA_FLAGS] & flag != 0
    }

    pub fn poll(&self) -> bool {
        self.flag(FLAG_POLL)
    }

    pub fn final_(&self) -> bool {
        self.flag(FLAG_FINAL)
    }

    pub fn control_plane_independent(&self) -> bool {
        self.flag(FLAG_CONTROL_PLANE_INDEPENDENT)
    }

    pub fn authentication_present(&self) -> bool {
        self.flag(FLAG_AUTHENTICATION_PRESENT)
    }

    pub fn demand(&self) -> bool {
        self.flag(FLAG_DEMAND)
    }

    pub fn multipoint(&self) -> bool {
        self.flag(FLAG_MULTIPOINT)
    }

    pub fn detect_multiplier(&self) -> u8 {
        self.buffer.as_ref()[field::DETECT_MULT]
    }

    /// The Length field: the whole BFD packet in bytes, Authentication Section included.
    pub fn length(&self) -> u8 {
        self.buffer.as_ref()[field::LENGTH]
    }

    pub fn my_discriminator(&self) -> u32 {
        self.be32(field::MY_DISCRIMINATOR.start)
    }

    pub fn your_discriminator(&self) -> u32 {
        self.be32(field::YOUR_DISCRIMINATOR.start)
    }

    /// Desired Min TX Interval, in microseconds.
    pub fn desired_min_tx_us(&self) -> u32 {
        self.be32(field::DESIRED_MIN_TX.start)
    }

    /// Required Min RX Interval, in microseconds.
    pub fn required_min_rx_us(&self) -> u32 {
        self.be32(field::REQUIRED_MIN_RX.start)
    }

    /// Required Min Echo RX Interval, in microseconds.
    pub fn required_min_echo_rx_us(&self) -> u32 {
        self.be32(field::REQUIRED_MIN_ECHO_RX.start)
    }

    /// The Auth Type octet, if the buffer holds one (it exists only with the A bit set).
    pub fn auth_type(&self) -> Option<u8> {
        self.buffer.as_ref().get(field::AUTH_TYPE).copied()
    }

    fn be32(&self, at: usize) -> u32 {
        let bytes = self.buffer.as_ref();
        u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ControlPacketView<T> {
    /// Version and Diag share an octet: set both.
    pub fn set_version_and_diagnostic(&mut self, version: u8, diagnostic: Diagnostic) {
        self.buffer.as_mut()[field::VERS_DIAG] = (version << 5) | u8::from(diagnostic);
    }

    /// Writes the Sta field and clears every flag; set the flags after it.
    pub fn set_state(&mut self, state: State) {
        self.buffer.as_mut()[field::STA_FLAGS] = state.bits() << 6;
    }

    fn set_flag(&mut self, flag: u8, value: bool) {
        let octet = &mut self.buffer.as_mut()[field::STA_FLAGS];
        if value {
            *octet |= flag;
        } else {
            *octet &= !flag;
        }
    }

    pub fn set_poll(&mut self, value: bool) {
        self.set_flag(FLAG_POLL, value);
    }

    pub fn set_final(&mut self, value: bool) {
        self.set_flag(FLAG_FINAL, value);
    }

    pub fn set_control_plane_independent(&mut self, value: bool) {
        self.set_flag(FLAG_CONTROL_PLANE_INDEPENDENT, value);
    }

    pub fn set_authentication_present(&mut self, value: bool) {
        self.set_flag(FLAG_AUTHENTICATION_PRESENT, value);
    }

    pub fn set_demand(&mut self, value: bool) {
        self.set_flag(FLAG_DEMAND, value);
    }

    pub fn set_multipoint(&mut self, value: bool) {
        self.set_flag(FLAG_MULTIPOINT, value);
    }

    pub fn set_detect_multiplier(&mut self, value: u8) {
        self.buffer.as_mut()[field::DETECT_MULT] = value;
    }

    pub fn set_length(&mut self, value: u8) {
        self.buffer.as_mut()[field::LENGTH] = value;
    }

    pub fn set_my_discriminator(&mut self, value: u32) {
        self.buffer.as_mut()[field::MY_DISCRIMINATOR].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_your_discriminator(&mut self, value: u32) {
        self.buffer.as_mut()[field::YOUR_DISCRIMINATOR].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_desired_min_tx_us(&mut self, value: u32) {
        self.buffer.as_mut()[field::DESIRED_MIN_TX].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_required_min_rx_us(&mut self, value: u32) {
        self.buffer.as_mut()[field::REQUIRED_MIN_RX].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_required_min_echo_rx_us(&mut self, value: u32) {
        self.buffer.as_mut()[field::REQUIRED_MIN_ECHO_RX].copy_from_slice(&value.to_be_bytes());
    }
}

/// The meaning of an acceptable BFD Control packet.
///
/// Version, the A bit and the M bit are not fields: [`ControlPacket::parse`] accepts only
/// version 1 with both bits clear, and [`ControlPacket::emit`] always writes exactly that, so a
/// field could only ever hold one value, or make `emit` write a packet every receiver drops.
/// The intervals stay in the wire's microseconds, so that parse and emit are exact inverses;
/// the `Duration` getters are for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: State,
    /// P: the sender asks for a packet with F set (a Poll Sequence, RFC 5880 §6.5).
    pub poll: bool,
    /// F: the answer to a packet with P set.
    pub final_: bool,
    /// C: the sender's BFD keeps working when its control plane does not (ours does not).
    pub control_plane_independent: bool,
    /// D: the sender asks us to stop sending periodic packets (Demand mode, §6.6).
    pub demand: bool,
    /// Never 0 in a parsed packet.
    pub detect_multiplier: u8,
    /// Never 0 in a parsed packet.
    pub my_discriminator: u32,
    /// 0 only while the sender is Down or AdminDown and has not heard from us.
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    /// 0: the sender does not loop Echo packets back (we never send any).
    pub required_min_echo_rx_us: u32,
}

impl ControlPacket {
    /// Parses an untrusted UDP payload with the checks of RFC 5880 §6.8.6 that belong to the
    /// packet, in the RFC's order. Bytes past the Length field are ignored. Never panics.
    pub fn parse(datagram: &[u8]) -> Result<ControlPacket, ParseError> {
        let view = ControlPacketView::new_checked(datagram)?;
        let version = view.version();
        if version != VERSION {
            return Err(ParseError::UnsupportedVersion(version));
        }
        let length = view.length();
        let minimum = if view.authentication_present() {
            MIN_AUTHENTICATED_LEN
        } else {
            MANDATORY_LEN
        };
        if usize::from(length) < minimum {
            return Err(ParseError::LengthBelowMinimum {
                length,
                // Both minimums are below 256.
                minimum: minimum as u8,
            });
        }
        if usize::from(length) > datagram.len() {
            return Err(ParseError::LengthExceedsDatagram {
                length,
                datagram: datagram.len(),
            });
        }
        if view.detect_multiplier() == 0 {
            return Err(ParseError::ZeroDetectMultiplier);
        }
        if view.multipoint() {
            return Err(ParseError::Multipoint);
        }
        if view.my_discriminator() == 0 {
            return Err(ParseError::ZeroMyDiscriminator);
        }
        let state = view.state();
        if view.your_discriminator() == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(ParseError::ZeroYourDiscriminator { state });
        }
        if view.authentication_present() {
            // The length checks above guarantee the Auth Type octet is in the datagram.
            return Err(ParseError::AuthenticationNotSupported {
                auth_type: view.auth_type().unwrap_or(0),
            });
        }
        Ok(ControlPacket {
            diagnostic: view.diagnostic(),
            state,
            poll: view.poll(),
            final_: view.final_(),
            control_plane_independent: view.control_plane_independent(),
            demand: view.demand(),
            detect_multiplier: view.detect_multiplier(),
            my_discriminator: view.my_discriminator(),
            your_discriminator: view.your_discriminator(),
            desired_min_tx_us: view.desired_min_tx_us(),
            required_min_rx_us: view.required_min_rx_us(),
            required_min_echo_rx_us: view.required_min_echo_rx_us(),
        })
    }

    /// The length of what `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        MANDATORY_LEN
    }

    /// Writes the packet: version 1, A and M clear, length 24. `view` must hold at least
    /// [`MANDATORY_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, view: &mut ControlPacketView<T>) {
        view.set_version_and_diagnostic(VERSION, self.diagnostic);
        view.set_state(self.state);
        view.set_poll(self.poll);
        view.set_final(self.final_);
        view.set_control_plane_independent(self.control_plane_independent);
        view.set_demand(self.demand);
        view.set_detect_multiplier(self.detect_multiplier);
        view.set_length(MANDATORY_LEN as u8);
        view.set_my_discriminator(self.my_discriminator);
        view.set_your_discriminator(self.your_discriminator);
        view.set_desired_min_tx_us(self.desired_min_tx_us);
        view.set_required_min_rx_us(self.required_min_rx_us);
        view.set_required_min_echo_rx_us(self.required_min_echo_rx_us);
    }

    /// The packet as the UDP payload to send.
    pub fn to_bytes(&self) -> [u8; MANDATORY_LEN] {
        let mut bytes = [0u8; MANDATORY_LEN];
        self.emit(&mut ControlPacketView::new_unchecked(&mut bytes[..]));
        bytes
    }

    pub fn desired_min_tx(&self) -> Duration {
        micros(self.desired_min_tx_us)
    }

    pub fn required_min_rx(&self) -> Duration {
        micros(self.required_min_rx_us)
    }

    pub fn required_min_echo_rx(&self) -> Duration {
        micros(self.required_min_echo_rx_us)
    }
}

fn micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

/// A duration in the wire's unit: whole microseconds, saturating at `u32::MAX` (about 71
/// minutes, far above any sensible BFD interval).
pub fn duration_to_micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    // An Up packet with diag 0, P set, detect mult 3, my discriminator 0x11223344, your
    // discriminator 0x55667788, desired min TX 300 ms (0x000493e0 µs), required min RX 300 ms,
    // required min echo RX 0. Written from the RFC 5880 §4.1 layout by hand: 0x20 = version 1,
    // diag 0; 0xe0 = state 3 (0b11 << 6) | P (0x20); 0x03; length 0x18 = 24.
    static PACKET_BYTES: [u8; 24] = [
        0x20, 0xe0, 0x03, 0x18, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x00, 0x04, 0x93,
        0xe0, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00, 0x00, 0x00,
    ];

    fn packet() -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::NoDiagnostic,
            state: State::Up,
            poll: true,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_multiplier: 3,
            my_discriminator: 0x1122_3344,
            your_discriminator: 0x5566_7788,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    /// PACKET_BYTES with one patch applied.
    fn patched(at: usize, value: u8) -> Vec<u8> {
        let mut bytes = PACKET_BYTES.to_vec();
        bytes[at] = value;
        bytes
    }

    #[test]
    fn test_deconstruct() {
        let view = ControlPacketView::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(view.version(), 1);
        assert_eq!(view.diagnostic(), Diagnostic::NoDiagnostic);
        assert_eq!(view.state(), State::Up);
        assert!(view.poll());
        assert!(!view.final_());
        assert!(!view.control_plane_independent());
        assert!(!view.authentication_present());
        assert!(!view.demand());
        assert!(!view.multipoint());
        assert_eq!(view.detect_multiplier(), 3);
        assert_eq!(view.length(), 24);
        assert_eq!(view.my_discriminator(), 0x1122_3344);
        assert_eq!(view.your_discriminator(), 0x5566_7788);
        assert_eq!(view.desired_min_tx_us(), 300_000);
        assert_eq!(view.required_min_rx_us(), 300_000);
        assert_eq!(view.required_min_echo_rx_us(), 0);
        assert_eq!(view.auth_type(), None);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 24];
        let mut view = ControlPacketView::new_unchecked(&mut bytes);
        view.set_version_and_diagnostic(1, Diagnostic::NoDiagnostic);
        view.set_state(State::Up);
        view.set_poll(true);
        view.set_final(false);
        view.set_control_plane_independent(false);
        view.set_authentication_present(false);
        view.set_demand(false);
        view.set_multipoint(false);
        view.set_detect_multiplier(3);
        view.set_length(24);
        view.set_my_discriminator(0x1122_3344);
        view.set_your_discriminator(0x5566_7788);
        view.set_desired_min_tx_us(300_000);
        view.set_required_min_rx_us(300_000);
        view.set_required_min_echo_rx_us(0);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        assert_eq!(ControlPacket::parse(&PACKET_BYTES), Ok(packet()));
    }

    #[test]
    fn test_emit() {
        let mut bytes = vec![0xa5; packet().buffer_len()];
        packet().emit(&mut ControlPacketView::new_unchecked(&mut bytes[..]));
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
        assert_eq!(packet().to_bytes(), PACKET_BYTES);
    }

    #[test]
    fn every_flag_has_its_own_bit() {
        // (flag setter, the Sta/flags octet it gives on state AdminDown)
        type Setter = fn(&mut ControlPacketView<[u8; 24]>, bool);
        let cases: [(Setter, u8); 6] = [
            (ControlPacketView::set_poll, 0x20),
            (ControlPacketView::set_final, 0x10),
            (ControlPacketView::set_control_plane_independent, 0x08),
            (ControlPacketView::set_authentication_present, 0x04),
            (ControlPacketView::set_demand, 0x02),
            (ControlPacketView::set_multipoint, 0x01),
        ];
        for (set, octet) in cases {
            let mut view = ControlPacketView::new_unchecked([0u8; 24]);
            set(&mut view, true);
            assert_eq!(view.clone().into_inner()[1], octet);
            set(&mut view, false);
            assert_eq!(view.into_inner()[1], 0);
        }
        let with_final = ControlPacket {
            poll: false,
            final_: true,
            control_plane_independent: true,
            demand: true,
            state: State::Init,
            diagnostic: Diagnostic::ReverseConcatenatedPathDown,
            ..packet()
        };
        let bytes = with_final.to_bytes();
        assert_eq!(bytes[0], 0x28, "version 1, diag 8");
        assert_eq!(bytes[1], 0x80 | 0x10 | 0x08 | 0x02, "Init, F, C, D");
        assert_eq!(ControlPacket::parse(&bytes), Ok(with_final));
    }

    #[test]
    fn every_state_and_diagnostic_round_trips() {
        for bits in 0..4u8 {
            assert_eq!(State::from_bits(bits).bits(), bits);
        }
        for code in 0..32u8 {
            let diagnostic = Diagnostic::from(code);
            assert_eq!(u8::from(diagnostic), code);
            assert_eq!(matches!(diagnostic, Diagnostic::Unknown(_)), code > 8);
        }
        // An unknown code is data, not an error.
        let parsed = ControlPacket::parse(&patched(0, 0x20 | 9)).unwrap();
        assert_eq!(parsed.diagnostic, Diagnostic::Unknown(9));
        assert_eq!(parsed.diagnostic.to_string(), "unknown diagnostic 9");
        assert_eq!(
            Diagnostic::ControlDetectionTimeExpired.to_string(),
            "Control Detection Time Expired"
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..PACKET_BYTES.len() {
            assert_eq!(
                ControlPacket::parse(&PACKET_BYTES[..len]),
                Err(ParseError::Truncated { len }),
                "len {len}"
            );
        }
    }

    #[test]
    fn bytes_past_the_length_field_are_ignored() {
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0xff; 8]);
        assert_eq!(ControlPacket::parse(&padded), Ok(packet()));
        // A length field above 24 without the A bit is allowed as long as the datagram has it.
        padded[3] = 32;
        assert_eq!(ControlPacket::parse(&padded), Ok(packet()));
    }

    /// Each §6.8.6 check, with the error it gives and the message an operator reads.
    #[test]
    fn each_reception_check_has_its_own_error() {
        let mut authenticated = PACKET_BYTES.to_vec();
        authenticated[1] |= 0x04; // A
        authenticated[3] = 24 + 2 + 3; // Auth Type, Auth Len, a 1-octet key id and 2 more
        authenticated.extend_from_slice(&[1, 5, 1, b'h', b'i']); // Simple Password
        let mut authenticated_short = PACKET_BYTES.to_vec();
        authenticated_short[1] |= 0x04;
        authenticated_short.extend_from_slice(&[1, 5]);
        // Your discriminator 0 while Up.
        let mut no_your_discriminator = PACKET_BYTES.to_vec();
        no_your_discriminator[8..12].fill(0);

        let cases: Vec<(&str, Vec<u8>, ParseError, &str)> = vec![
            (
                "version 0",
                patched(0, 0x00),
                ParseError::UnsupportedVersion(0),
                "BFD version 0, only version 1 is supported",
            ),
            (
                "version 2",
                patched(0, 0x40),
                ParseError::UnsupportedVersion(2),
                "BFD version 2, only version 1 is supported",
            ),
            (
                "length 23",
                patched(3, 23),
                ParseError::LengthBelowMinimum {
                    length: 23,
                    minimum: 24,
                },
                "length field 23 is below the minimum 24 (24, or 26 with the A bit set)",
            ),
            (
                "A bit with length 24",
                patched(1, 0xe0 | 0x04),
                ParseError::LengthBelowMinimum {
                    length: 24,
                    minimum: 26,
                },
                "length field 24 is below the minimum 26 (24, or 26 with the A bit set)",
            ),
            (
                "length 25 in a 24-byte datagram",
                patched(3, 25),
                ParseError::LengthExceedsDatagram {
                    length: 25,
                    datagram: 24,
                },
                "length field 25 is longer than the 24-byte datagram",
            ),
            (
                "A bit, auth section cut off",
                {
                    let mut bytes = authenticated_short.clone();
                    bytes[3] = 29;
                    bytes
                },
                ParseError::LengthExceedsDatagram {
                    length: 29,
                    datagram: 26,
                },
                "length field 29 is longer than the 26-byte datagram",
            ),
            (
                "detect multiplier 0",
                patched(2, 0),
                ParseError::ZeroDetectMultiplier,
                "detect multiplier is 0",
            ),
            (
                "multipoint",
                patched(1, 0xe0 | 0x01),
                ParseError::Multipoint,
                "multipoint (M) bit set: point-to-multipoint BFD is not supported",
            ),
            (
                "my discriminator 0",
                {
                    let mut bytes = PACKET_BYTES.to_vec();
                    bytes[4..8].fill(0);
                    bytes
                },
                ParseError::ZeroMyDiscriminator,
                "my discriminator is 0",
            ),
            (
                "your discriminator 0 while Up",
                no_your_discriminator.clone(),
                ParseError::ZeroYourDiscriminator { state: State::Up },
                "your discriminator is 0 in state Up: only allowed in Down or AdminDown",
            ),
            (
                "your discriminator 0 while Init",
                {
                    let mut bytes = no_your_discriminator.clone();
                    bytes[1] = 0x80;
                    bytes
                },
                ParseError::ZeroYourDiscriminator { state: State::Init },
                "your discriminator is 0 in state Init: only allowed in Down or AdminDown",
            ),
            (
                "authenticated (simple password)",
                authenticated,
                ParseError::AuthenticationNotSupported { auth_type: 1 },
                "authentication (A) bit set, auth type 1: BFD authentication is not implemented",
            ),
            (
                "authenticated, minimal section",
                {
                    let mut bytes = authenticated_short;
                    bytes[3] = 26;
                    bytes
                },
                ParseError::AuthenticationNotSupported { auth_type: 1 },
                "authentication (A) bit set, auth type 1: BFD authentication is not implemented",
            ),
        ];
        for (name, bytes, error, message) in cases {
            assert_eq!(ControlPacket::parse(&bytes), Err(error), "{name}");
            assert_eq!(error.to_string(), message, "{name}");
        }
        assert_eq!(
            ParseError::Truncated { len: 3 }.to_string(),
            "datagram of 3 bytes is shorter than a BFD Control packet (24 bytes)"
        );
        // Your discriminator 0 is how a session starts: fine in Down and AdminDown.
        for sta in [0x00, 0x40] {
            let mut bytes = no_your_discriminator.clone();
            bytes[1] = sta;
            let parsed = ControlPacket::parse(&bytes).unwrap();
            assert_eq!(parsed.your_discriminator, 0);
        }
    }

    #[test]
    fn checks_run_in_the_rfc_order() {
        // Version 2 and detect multiplier 0 and M set: the version is reported.
        let mut bytes = patched(0, 0x40);
        bytes[1] |= 0x01;
        bytes[2] = 0;
        assert_eq!(
            ControlPacket::parse(&bytes),
            Err(ParseError::UnsupportedVersion(2))
        );
        // Detect multiplier 0 and M set: the multiplier comes first.
        bytes[0] = 0x20;
        assert_eq!(
            ControlPacket::parse(&bytes),
            Err(ParseError::ZeroDetectMultiplier)
        );
    }

    #[test]
    fn labels_are_distinct() {
        let errors = [
            ParseError::Truncated { len: 0 },
            ParseError::UnsupportedVersion(0),
            ParseError::LengthBelowMinimum {
                length: 0,
                minimum: 24,
            },
            ParseError::LengthExceedsDatagram {
                length: 0,
                datagram: 0,
            },
            ParseError::ZeroDetectMultiplier,
            ParseError::Multipoint,
            ParseError::ZeroMyDiscriminator,
            ParseError::ZeroYourDiscriminator { state: State::Up },
            ParseError::AuthenticationNotSupported { auth_type: 0 },
        ];
        let labels: std::collections::BTreeSet<_> = errors.iter().map(ParseError::label).collect();
        assert_eq!(labels.len(), errors.len());
    }

    #[test]
    fn durations_in_microseconds() {
        assert_eq!(packet().desired_min_tx(), Duration::from_millis(300));
        assert_eq!(duration_to_micros(Duration::from_millis(300)), 300_000);
        assert_eq!(duration_to_micros(Duration::from_nanos(1_999)), 1);
        assert_eq!(duration_to_micros(Duration::from_secs(5_000)), u32::MAX);
    }

    fn state() -> impl Strategy<Value = State> {
        (0..4u8).prop_map(State::from_bits)
    }

    prop_compose! {
        /// Any packet `parse` accepts.
        fn valid_packet()(
            diagnostic in (0..32u8).prop_map(Diagnostic::from),
            state in state(),
            flags in any::<[bool; 4]>(),
            detect_multiplier in 1..=u8::MAX,
            my_discriminator in 1..=u32::MAX,
            your_discriminator in any::<u32>(),
            intervals in any::<[u32; 3]>(),
        ) -> ControlPacket {
            let [poll, final_, control_plane_independent, demand] = flags;
            let your_discriminator = if matches!(state, State::Down | State::AdminDown) {
                your_discriminator
            } else {
                your_discriminator.max(1)
            };
            ControlPacket {
                diagnostic,
                state,
                poll,
                final_,
                control_plane_independent,
                demand,
                detect_multiplier,
                my_discriminator,
                your_discriminator,
                desired_min_tx_us: intervals[0],
                required_min_rx_us: intervals[1],
                required_min_echo_rx_us: intervals[2],
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn emit_then_parse_is_the_identity(packet in valid_packet()) {
            let bytes = packet.to_bytes();
            prop_assert_eq!(ControlPacket::parse(&bytes), Ok(packet));
        }

        #[test]
        fn parse_then_emit_gives_the_same_mandatory_section(
            bytes in proptest::collection::vec(any::<u8>(), 24..64),
        ) {
            if let Ok(packet) = ControlPacket::parse(&bytes) {
                // Everything but the length (we never send an extension past 24 bytes).
                let mut expected = bytes[..24].to_vec();
                expected[3] = 24;
                prop_assert_eq!(&packet.to_bytes()[..], &expected[..]);
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = ControlPacket::parse(&bytes);
            if let Ok(view) = ControlPacketView::new_checked(&bytes[..]) {
                // Every getter of a checked view is safe, whatever the fields say.
                let _ = (view.version(), view.diagnostic(), view.state(), view.length());
                let _ = (view.my_discriminator(), view.your_discriminator(), view.auth_type());
                let _ = (view.desired_min_tx_us(), view.required_min_rx_us());
                let _ = view.required_min_echo_rx_us();
            }
        }

        #[test]
        fn mutated_packets_never_panic(
            flips in proptest::collection::vec((0..32usize, any::<u8>()), 1..6),
            len in 0..32usize,
        ) {
            let mut bytes = PACKET_BYTES.to_vec();
            bytes.resize(32, 0);
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes.truncate(len);
            let _ = ControlPacket::parse(&bytes);
        }
    }
}
