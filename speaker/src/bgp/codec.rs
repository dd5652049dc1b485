//! BGP messages on the wire: a thin, panic-free layer over `netgauze-bgp-pkt`.
//!
//! - In: [`message_len`] frames a TCP byte stream (the 19-byte header says how long a message
//!   is), [`decode`] turns exactly one message into a [`Message`], or into a [`DecodeError`]
//!   that says what the session must do: send which NOTIFICATION (RFC 4271 §6), or, for the
//!   attribute errors RFC 7606 lets a session survive, treat the UPDATE as a withdraw.
//! - Out: builders for what FerroLB sends (OPEN with its capabilities, KEEPALIVE, NOTIFICATION,
//!   UPDATEs packed with many NLRI per message, withdrawals, End-of-RIB) and [`encode`].
//!
//! netgauze parses and writes OPEN and UPDATE, the two messages with real structure. The
//! header, KEEPALIVE, NOTIFICATION and ROUTE-REFRESH are read by hand: they are a few fixed
//! fields, RFC 4271 fixes their lengths per type, and a NOTIFICATION must be read whatever its
//! code (netgauze refuses subcodes it does not know, and a NOTIFICATION is never answered with
//! one). Nothing of netgauze leaks into the state machine: it sees [`OpenParams`],
//! [`Notification`] and [`UpdateSummary`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, ExtendedNextHopEncoding, ExtendedNextHopEncodingCapability,
    FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute,
    PathAttributeValue, UnknownAttribute,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::path_attribute::PathAttributeParsingError;
use netgauze_bgp_pkt::wire::deserializer::update::BgpUpdateMessageParsingError;
use netgauze_bgp_pkt::wire::deserializer::{
    BgpMessageParsingError, BgpParsingContext,
    open::{BgpOpenMessageParsingError, BgpParameterParsingError},
};
use netgauze_iana::address_family::{AddressFamily, AddressType};
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1. We do not advertise the extended message capability (RFC 8654), so this holds
/// both ways.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 6793: the 2-octet "My Autonomous System" of a speaker whose AS does not fit in 16 bits.
pub const AS_TRANS: u16 = 23456;

const MARKER: [u8; 16] = [0xff; 16];

/// Message types (RFC 4271 §4.1, RFC 2918).
mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313 §5).
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header_subcode {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492 §5).
pub mod open_subcode {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608).
pub mod fsm_subcode {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486, RFC 8538, RFC 9384).
pub mod cease_subcode {
    pub const MAXIMUM_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
    pub const BFD_DOWN: u8 = 10;
}

/// The address families FerroLB announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    /// (AFI, SAFI) as on the wire.
    pub const fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (1, 1),
            Family::Ipv6Unicast => (2, 1),
        }
    }

    fn address_type(self) -> AddressType {
        match self {
            Family::Ipv4Unicast => AddressType::Ipv4Unicast,
            Family::Ipv6Unicast => AddressType::Ipv6Unicast,
        }
    }

    fn from_address_type(address_type: AddressType) -> Option<Family> {
        match address_type {
            AddressType::Ipv4Unicast => Some(Family::Ipv4Unicast),
            AddressType::Ipv6Unicast => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (1, 1) => Some(Family::Ipv4Unicast),
            (2, 1) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "IPv4 unicast",
            Family::Ipv6Unicast => "IPv6 unicast",
        })
    }
}

/// A NOTIFICATION, sent or received: any code and subcode, so that one we do not know is still
/// reported as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }

    pub fn hold_timer_expired() -> Self {
        Self::new(error_code::HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    pub fn cease(subcode: u8) -> Self {
        Self::new(error_code::CEASE, subcode, Vec::new())
    }

    pub fn fsm_error(subcode: u8) -> Self {
        Self::new(error_code::FSM, subcode, Vec::new())
    }

    /// OPEN Bad Peer AS; the data is the AS field of the OPEN (RFC 4271 §6.2).
    pub fn bad_peer_as(as_field: u16) -> Self {
        Self::new(
            error_code::OPEN,
            open_subcode::BAD_PEER_AS,
            as_field.to_be_bytes(),
        )
    }

    /// The wire form. Data that would not fit in one message is cut (only an RFC 8203 shutdown
    /// message or echoed bytes could be that long).
    pub fn to_bytes(&self) -> Vec<u8> {
        let data_len = self.data.len().min(MAX_MESSAGE_LEN - HEADER_LEN - 2);
        let len = HEADER_LEN + 2 + data_len;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MARKER);
        // `len` is at most MAX_MESSAGE_LEN, which fits in 16 bits.
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        out.push(message_type::NOTIFICATION);
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data[..data_len]);
        out
    }

    fn code_name(&self) -> &'static str {
        match self.code {
            error_code::MESSAGE_HEADER => "Message Header",
            error_code::OPEN => "OPEN",
            error_code::UPDATE => "UPDATE",
            error_code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            error_code::FSM => "FSM",
            error_code::CEASE => "Cease",
            error_code::ROUTE_REFRESH => "ROUTE-REFRESH",
            _ => "unknown code",
        }
    }

    fn subcode_name(&self) -> Option<&'static str> {
        let name = match (self.code, self.subcode) {
            (error_code::MESSAGE_HEADER, 1) => "Connection Not Synchronized",
            (error_code::MESSAGE_HEADER, 2) => "Bad Message Length",
            (error_code::MESSAGE_HEADER, 3) => "Bad Message Type",
            (error_code::OPEN, 0) => "Unspecific",
            (error_code::OPEN, 1) => "Unsupported Version Number",
            (error_code::OPEN, 2) => "Bad Peer AS",
            (error_code::OPEN, 3) => "Bad BGP Identifier",
            (error_code::OPEN, 4) => "Unsupported Optional Parameter",
            (error_code::OPEN, 6) => "Unacceptable Hold Time",
            (error_code::OPEN, 7) => "Unsupported Capability",
            (error_code::OPEN, 11) => "Role Mismatch",
            (error_code::UPDATE, 1) => "Malformed Attribute List",
            (error_code::UPDATE, 2) => "Unrecognized Well-known Attribute",
            (error_code::UPDATE, 3) => "Missing Well-known Attribute",
            (error_code::UPDATE, 4) => "Attribute Flags Error",
            (error_code::UPDATE, 5) => "Attribute Length Error",
            (error_code::UPDATE, 6) => "Invalid ORIGIN Attribute",
            (error_code::UPDATE, 8) => "Invalid NEXT_HOP Attribute",
            (error_code::UPDATE, 9) => "Optional Attribute Error",
            (error_code::UPDATE, 10) => "Invalid Network Field",
            (error_code::UPDATE, 11) => "Malformed AS_PATH",
            (error_code::HOLD_TIMER_EXPIRED, 0) => return None,
            (error_code::FSM, 0) => "Unspecified Error",
            (error_code::FSM, 1) => "Unexpected Message in OpenSent",
            (error_code::FSM, 2) => "Unexpected Message in OpenConfirm",
            (error_code::FSM, 3) => "Unexpected Message in Established",
            (error_code::CEASE, 1) => "Maximum Number of Prefixes Reached",
            (error_code::CEASE, 2) => "Administrative Shutdown",
            (error_code::CEASE, 3) => "Peer De-configured",
            (error_code::CEASE, 4) => "Administrative Reset",
            (error_code::CEASE, 5) => "Connection Rejected",
            (error_code::CEASE, 6) => "Other Configuration Change",
            (error_code::CEASE, 7) => "Connection Collision Resolution",
            (error_code::CEASE, 8) => "Out of Resources",
            (error_code::CEASE, 9) => "Hard Reset",
            (error_code::CEASE, 10) => "BFD Down",
            (error_code::ROUTE_REFRESH, 1) => "Invalid Message Length",
            _ => return None,
        };
        Some(name)
    }
}

/// "OPEN Bad Peer AS", "Cease Administrative Shutdown", "code 9 subcode 1" for unknown ones.
impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code_name(), self.subcode_name()) {
            ("unknown code", _) => write!(f, "code {} subcode {}", self.code, self.subcode),
            (code, Some(subcode)) => write!(f, "{code} {subcode}"),
            (code, None) if self.subcode == 0 => f.write_str(code),
            (code, None) => write!(f, "{code} subcode {}", self.subcode),
        }
    }
}

/// RFC 4724 graceful restart, as advertised in an OPEN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Seconds the peer keeps our routes after the session drops.
    pub restart_time: u16,
    /// The R bit: the sender has just restarted.
    pub restarting: bool,
    /// Per family: whether the sender kept its forwarding state across the restart (F bit).
    pub families: Vec<(Family, bool)>,
}

/// The capabilities in an OPEN (received), or the ones to put in ours (sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 6793: the real AS number.
    pub four_octet_as: Option<u32>,
    /// RFC 4760 families we know, among those advertised.
    pub multiprotocol: BTreeSet<Family>,
    /// Whether any multiprotocol capability was present (a speaker with none implies IPv4
    /// unicast, RFC 4760 §8).
    pub advertises_multiprotocol: bool,
    /// RFC 2918.
    pub route_refresh: bool,
    /// RFC 8950: IPv4 unicast NLRI with an IPv6 next hop.
    pub extended_next_hop_ipv4: bool,
    /// RFC 4724; designed in, acted on in the graceful restart issue.
    pub graceful_restart: Option<GracefulRestart>,
}

impl Capabilities {
    /// The families the speaker supports (RFC 4760 §8: none advertised means IPv4 unicast).
    pub fn families(&self) -> BTreeSet<Family> {
        if self.advertises_multiprotocol {
            self.multiprotocol.clone()
        } else {
            BTreeSet::from([Family::Ipv4Unicast])
        }
    }
}

/// A received OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenParams {
    /// The 2-octet AS field (AS_TRANS for a 4-octet AS).
    pub as_field: u16,
    /// The peer's AS: the 4-octet AS capability if present, else `as_field`.
    pub asn: u32,
    /// Seconds; 0 or ≥ 3 (the decoder rejects 1 and 2).
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// What the state machine needs to know of a received UPDATE: FerroLB announces and does not
/// install routes, so the content only matters for counters and End-of-RIB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub announced: usize,
    pub withdrawn: usize,
    pub end_of_rib: Option<Family>,
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(OpenParams),
    Update(UpdateSummary),
    Notification(Notification),
    Keepalive,
    /// RFC 2918; a family we do not know is `None` (ignored, RFC 2918 §4).
    RouteRefresh(Option<Family>),
}

/// What decoding depends on, from the OPEN exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// Both sides advertised the 4-octet AS capability: AS_PATH carries 4-octet numbers.
    pub four_octet_as: bool,
}

/// What a session does about a malformed UPDATE attribute (RFC 7606 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateErrorHandling {
    /// Send the NOTIFICATION and reset the session (RFC 4271 §6.3, and RFC 7606 where the
    /// NLRI cannot be located or MP_REACH/MP_UNREACH are broken).
    SessionReset(Notification),
    /// RFC 7606 treat-as-withdraw: the routes of this UPDATE are withdrawn, the session stays.
    /// FerroLB holds no routes from its peers, so it only logs and counts.
    TreatAsWithdraw,
    /// RFC 7606 attribute discard: the attribute is dropped, the session stays.
    AttributeDiscard,
}

/// A message that could not be decoded, with what the session must do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: {reason}")]
    Header {
        reason: String,
        notification: Notification,
    },
    #[error("OPEN: {reason}")]
    Open {
        reason: String,
        notification: Notification,
    },
    #[error("UPDATE: {reason}")]
    Update {
        reason: String,
        handling: UpdateErrorHandling,
    },
    #[error("ROUTE-REFRESH: {reason}")]
    RouteRefresh {
        reason: String,
        notification: Notification,
    },
}

impl DecodeError {
    /// The NOTIFICATION to send before closing, or `None` when the session survives
    /// (RFC 7606 treat-as-withdraw and attribute discard).
    pub fn notification(&self) -> Option<&Notification> {
        match self {
            DecodeError::Header { notification, .. }
            | DecodeError::Open { notification, .. }
            | DecodeError::RouteRefresh { notification, .. } => Some(notification),
            DecodeError::Update { handling, .. } => match handling {
                UpdateErrorHandling::SessionReset(notification) => Some(notification),
                UpdateErrorHandling::TreatAsWithdraw | UpdateErrorHandling::AttributeDiscard => {
                    None
                }
            },
        }
    }

    fn header(subcode: u8, data: impl Into<Vec<u8>>, reason: impl Into<String>) -> Self {
        DecodeError::Header {
            reason: reason.into(),
            notification: Notification::new(error_code::MESSAGE_HEADER, subcode, data),
        }
    }

    fn bad_length(length: u16, reason: impl Into<String>) -> Self {
        Self::header(
            header_subcode::BAD_MESSAGE_LENGTH,
            length.to_be_bytes(),
            reason,
        )
    }

    fn open(subcode: u8, data: impl Into<Vec<u8>>, reason: impl Into<String>) -> Self {
        DecodeError::Open {
            reason: reason.into(),
            notification: Notification::new(error_code::OPEN, subcode, data),
        }
    }

    fn update_reset(subcode: u8, reason: impl Into<String>) -> Self {
        DecodeError::Update {
            reason: reason.into(),
            handling: UpdateErrorHandling::SessionReset(Notification::new(
                error_code::UPDATE,
                subcode,
                Vec::new(),
            )),
        }
    }
}

/// Frames a byte stream: `Ok(None)` until the 19-byte header is there, then the length of the
/// message it starts (which may be more than `buf` holds yet). The header is checked here, so
/// a lying length is refused before anything waits for its bytes (RFC 4271 §6.1).
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[..16] != MARKER {
        return Err(DecodeError::header(
            header_subcode::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
            "the marker is not all ones",
        ));
    }
    let length = u16::from_be_bytes([header[16], header[17]]);
    let kind = header[18];
    // RFC 4271 §4 and RFC 2918 §3: fixed lengths per type.
    let (min, max) = match kind {
        message_type::OPEN => (29, MAX_MESSAGE_LEN),
        message_type::UPDATE => (23, MAX_MESSAGE_LEN),
        message_type::NOTIFICATION => (21, MAX_MESSAGE_LEN),
        message_type::KEEPALIVE => (HEADER_LEN, HEADER_LEN),
        message_type::ROUTE_REFRESH => (23, MAX_MESSAGE_LEN),
        other => {
            return Err(DecodeError::header(
                header_subcode::BAD_MESSAGE_TYPE,
                vec![other],
                format!("unknown message type {other}"),
            ));
        }
    };
    let len = usize::from(length);
    if !(min..=max).contains(&len) {
        return Err(DecodeError::bad_length(
            length,
            format!("length {length} for message type {kind} (allowed {min}..={max})"),
        ));
    }
    Ok(Some(len))
}

/// Decodes exactly one message (`buf` is what [`message_len`] framed).
pub fn decode(buf: &[u8], context: &DecodeContext) -> Result<Message, DecodeError> {
    let Some(len) = message_len(buf)? else {
        return Err(DecodeError::bad_length(
            u16::try_from(buf.len()).unwrap_or(u16::MAX),
            format!("{} bytes is shorter than a header", buf.len()),
        ));
    };
    if buf.len() != len {
        return Err(DecodeError::bad_length(
            u16::try_from(len).unwrap_or(u16::MAX),
            format!("header says {len} bytes, the message has {}", buf.len()),
        ));
    }
    let body = &buf[HEADER_LEN..];
    match buf[18] {
        message_type::KEEPALIVE => Ok(Message::Keepalive),
        message_type::NOTIFICATION => Ok(Message::Notification(Notification::new(
            body[0],
            body[1],
            &body[2..],
        ))),
        message_type::ROUTE_REFRESH => {
            // RFC 7313 §5: any length but 4 octets of body is an error.
            if body.len() != 4 {
                return Err(DecodeError::RouteRefresh {
                    reason: format!("body of {} bytes, expected 4", body.len()),
                    notification: Notification::new(error_code::ROUTE_REFRESH, 1, buf.to_vec()),
                });
            }
            let afi = u16::from_be_bytes([body[0], body[1]]);
            Ok(Message::RouteRefresh(Family::from_afi_safi(afi, body[3])))
        }
        _ => decode_structured(buf, context),
    }
}

fn parsing_context(context: &DecodeContext) -> BgpParsingContext {
    BgpParsingContext::new(
        context.four_octet_as,
        HashMap::new(),
        HashMap::new(),
        // RFC 4271 §6.3: a semantically wrong prefix (multicast...) is logged and ignored.
        false,
        false,
        // RFC 5492 §3: a capability we cannot read is ignored, not an error.
        false,
        // Malformed attributes stop the parse; we classify them ourselves (RFC 7606).
        true,
    )
}

/// OPEN and UPDATE, through netgauze.
fn decode_structured(buf: &[u8], context: &DecodeContext) -> Result<Message, DecodeError> {
    let mut parsing = parsing_context(context);
    let mut reader = SliceReader::new(buf);
    match BgpMessage::parse(&mut reader, &mut parsing) {
        Ok(BgpMessage::Open(open)) => Ok(Message::Open(open_params(&open))),
        Ok(BgpMessage::Update(update)) => summarize_update(&update),
        // The hand-read types never get here; should they, they are answered as unknown.
        Ok(other) => Err(DecodeError::header(
            header_subcode::BAD_MESSAGE_TYPE,
            vec![u8::from(other.get_type())],
            "unexpected message type",
        )),
        Err(error) => Err(classify(error, buf, context)),
    }
}

fn open_params(open: &BgpOpenMessage) -> OpenParams {
    let mut capabilities = Capabilities::default();
    for capability in open.capabilities() {
        match capability {
            BgpCapability::FourOctetAs(four) => capabilities.four_octet_as = Some(four.asn4()),
            BgpCapability::MultiProtocolExtensions(mp) => {
                capabilities.advertises_multiprotocol = true;
                if let Some(family) = Family::from_address_type(mp.address_type()) {
                    capabilities.multiprotocol.insert(family);
                }
            }
            BgpCapability::RouteRefresh | BgpCapability::EnhancedRouteRefresh => {
                capabilities.route_refresh = true;
            }
            BgpCapability::ExtendedNextHopEncoding(encodings) => {
                capabilities.extended_next_hop_ipv4 |= encodings.encodings().iter().any(|e| {
                    e.address_type() == AddressType::Ipv4Unicast
                        && e.next_hop_afi() == AddressFamily::IPv6
                });
            }
            BgpCapability::GracefulRestartCapability(gr) => {
                capabilities.graceful_restart = Some(GracefulRestart {
                    restart_time: gr.time(),
                    restarting: gr.restart(),
                    families: gr
                        .address_families()
                        .iter()
                        .filter_map(|af| {
                            Family::from_address_type(af.address_type())
                                .map(|family| (family, af.forwarding_state()))
                        })
                        .collect(),
                });
            }
            _ => {}
        }
    }
    OpenParams {
        as_field: open.my_as(),
        asn: capabilities
            .four_octet_as
            .unwrap_or(u32::from(open.my_as())),
        hold_time: open.hold_time(),
        router_id: open.bgp_id(),
        capabilities,
    }
}

fn summarize_update(update: &BgpUpdateMessage) -> Result<Message, DecodeError> {
    let mut summary = UpdateSummary {
        announced: update.nlri().len(),
        withdrawn: update.withdraw_routes().len(),
        end_of_rib: update.end_of_rib().and_then(Family::from_address_type),
    };
    let (mut has_origin, mut has_as_path, mut has_next_hop, mut mp_attributes) =
        (false, false, false, 0usize);
    let mut mp_reach_nlri = false;
    for attribute in update.path_attributes() {
        match attribute.value() {
            PathAttributeValue::Origin(_) => has_origin = true,
            PathAttributeValue::AsPath(_) => has_as_path = true,
            PathAttributeValue::NextHop(_) => has_next_hop = true,
            PathAttributeValue::MpReach(reach) => {
                mp_attributes += 1;
                let announced = mp_reach_len(reach);
                mp_reach_nlri |= announced > 0;
                summary.announced += announced;
            }
            PathAttributeValue::MpUnreach(unreach) => {
                mp_attributes += 1;
                summary.withdrawn += mp_unreach_len(unreach);
            }
            // RFC 4271 §6.3: a well-known (not optional) attribute we do not recognize resets
            // the session with Unrecognized Well-known Attribute, the attribute as Data. RFC
            // 7606 leaves this case as it was: nothing can be known about such an attribute.
            PathAttributeValue::UnknownAttribute(unknown) if !attribute.optional() => {
                return Err(DecodeError::Update {
                    reason: format!(
                        "unrecognized well-known attribute (type code {})",
                        unknown.code()
                    ),
                    handling: UpdateErrorHandling::SessionReset(Notification::new(
                        error_code::UPDATE,
                        update_subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                        raw_attribute(attribute, unknown),
                    )),
                });
            }
            _ => {}
        }
    }
    // RFC 7606 §3 g: more than one MP_REACH/MP_UNREACH resets the session (a repeated MP_REACH
    // and MP_UNREACH pair is legal; two of the same kind is not, but counting both is simpler
    // and no implementation sends the pair together with a second one).
    if mp_attributes > 2 {
        return Err(DecodeError::update_reset(
            update_subcode::MALFORMED_ATTRIBUTE_LIST,
            "more than one MP_REACH_NLRI or MP_UNREACH_NLRI",
        ));
    }
    // RFC 7606 §3 d: a missing well-known attribute makes an UPDATE with NLRI a withdraw.
    let announces = !update.nlri().is_empty() || mp_reach_nlri;
    let missing_next_hop = !update.nlri().is_empty() && !has_next_hop;
    if announces && (!has_origin || !has_as_path || missing_next_hop) {
        return Err(DecodeError::Update {
            reason: "a well-known mandatory attribute is missing".to_string(),
            handling: UpdateErrorHandling::TreatAsWithdraw,
        });
    }
    Ok(Message::Update(summary))
}

/// An unknown attribute as it was on the wire: flags, type code, length, value.
fn raw_attribute(attribute: &PathAttribute, unknown: &UnknownAttribute) -> Vec<u8> {
    let value = unknown.value();
    let flags = (u8::from(attribute.optional()) << 7)
        | (u8::from(attribute.transitive()) << 6)
        | (u8::from(attribute.partial()) << 5)
        | (u8::from(attribute.extended_length()) << 4);
    let mut raw = vec![flags, unknown.code()];
    if attribute.extended_length() {
        raw.extend(u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        raw.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    }
    raw.extend_from_slice(value);
    raw
}

fn mp_reach_len(reach: &MpReach) -> usize {
    match reach {
        MpReach::Ipv4Unicast { nlri, .. } => nlri.len(),
        MpReach::Ipv6Unicast { nlri, .. } => nlri.len(),
        // Other families are counted as one: only "is there any" matters here.
        _ => 1,
    }
}

fn mp_unreach_len(unreach: &MpUnreach) -> usize {
    match unreach {
        MpUnreach::Ipv4Unicast { nlri } => nlri.len(),
        MpUnreach::Ipv6Unicast { nlri } => nlri.len(),
        _ => 0,
    }
}

/// netgauze's parse error → what the session does.
fn classify(error: BgpMessageParsingError, buf: &[u8], context: &DecodeContext) -> DecodeError {
    let reason = error.to_string();
    let length = u16::try_from(buf.len()).unwrap_or(u16::MAX);
    match error {
        BgpMessageParsingError::ConnectionNotSynchronized { .. } => DecodeError::header(
            header_subcode::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
            reason,
        ),
        BgpMessageParsingError::UndefinedBgpMessageType { code, .. } => {
            DecodeError::header(header_subcode::BAD_MESSAGE_TYPE, vec![code], reason)
        }
        BgpMessageParsingError::Parse(_)
        | BgpMessageParsingError::BadMessageLength { .. }
        | BgpMessageParsingError::UnparseableBytes { .. } => {
            DecodeError::bad_length(length, reason)
        }
        BgpMessageParsingError::BgpOpenMessageParsingError(open) => classify_open(open, reason),
        BgpMessageParsingError::BgpUpdateMessageParsingError(update) => {
            classify_update(&update, reason, buf, context)
        }
        // Read by hand above; kept total so a future netgauze path cannot panic or hang.
        BgpMessageParsingError::BgpNotificationMessageParsingError(_)
        | BgpMessageParsingError::BgpRouteRefreshMessageParsingError(_) => {
            DecodeError::bad_length(length, reason)
        }
    }
}

/// RFC 4271 §6.2.
fn classify_open(error: BgpOpenMessageParsingError, reason: String) -> DecodeError {
    match error {
        // The data is the largest version we support.
        BgpOpenMessageParsingError::UnsupportedVersionNumber { .. } => DecodeError::open(
            open_subcode::UNSUPPORTED_VERSION_NUMBER,
            4u16.to_be_bytes(),
            reason,
        ),
        BgpOpenMessageParsingError::UnacceptableHoldTime { time, .. } => DecodeError::open(
            open_subcode::UNACCEPTABLE_HOLD_TIME,
            time.to_be_bytes(),
            reason,
        ),
        BgpOpenMessageParsingError::InvalidBgpId { bgp_id, .. } => {
            DecodeError::open(open_subcode::BAD_BGP_IDENTIFIER, bgp_id.octets(), reason)
        }
        BgpOpenMessageParsingError::ParameterError(
            BgpParameterParsingError::UndefinedParameterType { code, .. },
        ) => DecodeError::open(
            open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
            vec![code],
            reason,
        ),
        BgpOpenMessageParsingError::Parse(_) | BgpOpenMessageParsingError::ParameterError(_) => {
            DecodeError::open(open_subcode::UNSPECIFIC, Vec::new(), reason)
        }
    }
}

/// RFC 4271 §6.3 subcodes, RFC 7606 §7 handling per attribute.
fn classify_update(
    error: &BgpUpdateMessageParsingError,
    reason: String,
    buf: &[u8],
    context: &DecodeContext,
) -> DecodeError {
    use UpdateErrorHandling::{AttributeDiscard, TreatAsWithdraw};
    use update_subcode as sub;
    let body = &buf[HEADER_LEN..];
    let attribute = match error {
        // netgauze reports a byte shortage at the UPDATE level both when the Withdrawn Routes
        // or Total Path Attribute Length runs past the message (the NLRI cannot be located:
        // reset) and when an attribute's header is cut short by the end of the attribute list
        // (RFC 7606 §4: treat-as-withdraw). The outer lengths tell the two apart.
        BgpUpdateMessageParsingError::Parse(_) if nlri_is_locatable(body) => {
            return DecodeError::Update {
                reason,
                handling: TreatAsWithdraw,
            };
        }
        BgpUpdateMessageParsingError::Parse(_) => {
            return DecodeError::update_reset(sub::MALFORMED_ATTRIBUTE_LIST, reason);
        }
        // RFC 7606 §5.3: a malformed NLRI field cannot be withdrawn: reset.
        BgpUpdateMessageParsingError::Ipv4PrefixError(_)
        | BgpUpdateMessageParsingError::InvalidIpv4UnicastNetwork { .. } => {
            return DecodeError::update_reset(sub::INVALID_NETWORK_FIELD, reason);
        }
        BgpUpdateMessageParsingError::PathAttributeError(attribute) => attribute,
    };
    // (RFC 4271 subcode when the session resets, RFC 7606 handling when it may survive.)
    let (subcode, lenient) = match attribute {
        // RFC 7606 §4: an attribute running past the Total Attribute Length, or too few
        // octets left for an attribute header: treat-as-withdraw.
        PathAttributeParsingError::Parse(_) => {
            (sub::MALFORMED_ATTRIBUTE_LIST, Some(TreatAsWithdraw))
        }
        // RFC 7606 §7.11: the NLRI themselves are broken.
        PathAttributeParsingError::MpReachErrorError(_)
        | PathAttributeParsingError::MpUnreachErrorError(_) => {
            (sub::OPTIONAL_ATTRIBUTE_ERROR, None)
        }
        // netgauze's only complaint about an attribute it does not know: its length runs past
        // the attribute list (RFC 7606 §4: treat-as-withdraw).
        PathAttributeParsingError::UnknownAttributeError(_) => {
            (sub::MALFORMED_ATTRIBUTE_LIST, Some(TreatAsWithdraw))
        }
        // RFC 7606 §3 c.
        PathAttributeParsingError::InvalidPathAttribute { .. } => {
            (sub::ATTRIBUTE_FLAGS_ERROR, Some(TreatAsWithdraw))
        }
        PathAttributeParsingError::OriginError(_) => {
            (sub::INVALID_ORIGIN_ATTRIBUTE, Some(TreatAsWithdraw))
        }
        PathAttributeParsingError::AsPathError(_) => {
            (sub::MALFORMED_AS_PATH, Some(TreatAsWithdraw))
        }
        PathAttributeParsingError::NextHopError(_) => {
            (sub::INVALID_NEXT_HOP_ATTRIBUTE, Some(TreatAsWithdraw))
        }
        PathAttributeParsingError::MultiExitDiscriminatorError(_)
        | PathAttributeParsingError::LocalPreferenceError(_)
        | PathAttributeParsingError::CommunitiesError(_)
        | PathAttributeParsingError::ExtendedCommunitiesError(_)
        | PathAttributeParsingError::ExtendedCommunitiesErrorIpv6(_)
        | PathAttributeParsingError::LargeCommunitiesError(_)
        | PathAttributeParsingError::OriginatorError(_)
        | PathAttributeParsingError::ClusterListError(_)
        | PathAttributeParsingError::OnlyToCustomerError(_) => {
            (sub::OPTIONAL_ATTRIBUTE_ERROR, Some(TreatAsWithdraw))
        }
        // RFC 7606 §7.6, §7.7; AIGP (RFC 7311 §4), BGP-LS (RFC 9552 §8.2.2), Prefix-SID
        // (RFC 8669 §6): discard the attribute.
        PathAttributeParsingError::AtomicAggregateError(_)
        | PathAttributeParsingError::AggregatorError(_)
        | PathAttributeParsingError::AigpError(_)
        | PathAttributeParsingError::BgpLsError(_)
        | PathAttributeParsingError::SegmentIdentifierParsingError(_) => {
            (sub::OPTIONAL_ATTRIBUTE_ERROR, Some(AttributeDiscard))
        }
    };
    // RFC 7606 §4: the lenient handlings need the NLRI to be located (through the Total
    // Attribute Length) and parsed; otherwise the RFC 4271 reset applies.
    match lenient {
        Some(handling) if nlri_is_locatable(body) => DecodeError::Update { reason, handling },
        _ => {
            // RFC 4271 §6.3: these subcodes carry the erroneous attribute (type, length and
            // value) as Data.
            let data = match subcode {
                sub::ATTRIBUTE_FLAGS_ERROR
                | sub::ATTRIBUTE_LENGTH_ERROR
                | sub::INVALID_ORIGIN_ATTRIBUTE
                | sub::INVALID_NEXT_HOP_ATTRIBUTE
                | sub::OPTIONAL_ATTRIBUTE_ERROR => {
                    erroneous_attribute(body, context).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            DecodeError::Update {
                reason,
                handling: UpdateErrorHandling::SessionReset(Notification::new(
                    error_code::UPDATE,
                    subcode,
                    data,
                )),
            }
        }
    }
}

/// An UPDATE body's Withdrawn Routes, Path Attributes and NLRI fields, when the two outer
/// lengths fit in the message.
fn update_fields(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    fn take_u16(buf: &[u8]) -> Option<(usize, &[u8])> {
        let (len, rest) = buf.split_first_chunk::<2>()?;
        Some((usize::from(u16::from_be_bytes(*len)), rest))
    }
    let (withdrawn_len, rest) = take_u16(body)?;
    let (withdrawn, rest) = rest.split_at_checked(withdrawn_len)?;
    let (attributes_len, rest) = take_u16(rest)?;
    let (attributes, nlri) = rest.split_at_checked(attributes_len)?;
    Some((withdrawn, attributes, nlri))
}

/// The first path attribute that netgauze refuses when it parses it on its own, as it is on
/// the wire (flags, type, length, value; cut where the attribute list ends): netgauze's
/// errors say what is wrong but not where each attribute starts. `None` if every attribute
/// parses (or the list cannot be located).
fn erroneous_attribute(body: &[u8], context: &DecodeContext) -> Option<Vec<u8>> {
    let (_, mut rest, _) = update_fields(body)?;
    while !rest.is_empty() {
        let flags = rest[0];
        let (header_len, value_len) = if flags & 0x10 != 0 {
            (4, rest.get(2..4).map(|l| u16::from_be_bytes([l[0], l[1]])))
        } else {
            (3, rest.get(2).map(|l| u16::from(*l)))
        };
        let Some(value_len) = value_len else {
            // Not even a whole header: this is the broken one.
            return Some(rest.to_vec());
        };
        let end = header_len + usize::from(value_len);
        let Some(raw) = rest.get(..end) else {
            return Some(rest.to_vec());
        };
        let mut parsing = parsing_context(context);
        if PathAttribute::parse(&mut SliceReader::new(raw), &mut parsing).is_err() {
            return Some(raw.to_vec());
        }
        rest = &rest[end..];
    }
    None
}

/// Checks an UPDATE body's outer lengths and its two prefix fields: true when the Withdrawn
/// Routes and the path attributes fit in the message as their lengths say, and every prefix of
/// the Withdrawn Routes and NLRI fields is at most /32 and fits. What the attributes contain is
/// not looked at (RFC 7606 §4 relies on the Total Attribute Length alone).
fn nlri_is_locatable(body: &[u8]) -> bool {
    fn prefixes_fit(mut field: &[u8]) -> bool {
        while let Some((&bits, rest)) = field.split_first() {
            let bytes = usize::from(bits).div_ceil(8);
            if bits > 32 || rest.len() < bytes {
                return false;
            }
            field = &rest[bytes..];
        }
        true
    }
    update_fields(body)
        .is_some_and(|(withdrawn, _, nlri)| prefixes_fit(withdrawn) && prefixes_fit(nlri))
}

/// A message that could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(usize),
    #[error("{0} is not a unicast prefix")]
    NotUnicast(String),
    #[error("cannot write the message: {0}")]
    Write(String),
}

/// Typed message → bytes.
pub fn encode(message: &BgpMessage) -> Result<Vec<u8>, EncodeError> {
    let len = message.len();
    if len > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong(len));
    }
    let mut out = Vec::with_capacity(len);
    message
        .write(&mut out)
        .map_err(|error| EncodeError::Write(error.to_string()))?;
    Ok(out)
}

/// KEEPALIVE: the header alone.
pub fn keepalive() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    out.push(message_type::KEEPALIVE);
    out
}

/// What we put in our OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOpen {
    pub asn: u32,
    /// Seconds: 0 or ≥ 3 (the configuration guarantees it).
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    /// `four_octet_as` is ignored: we always advertise our real AS (RFC 6793 §3).
    pub capabilities: Capabilities,
}

/// OPEN with our capabilities, each in one Capabilities parameter. A 4-octet AS puts AS_TRANS
/// in the 2-octet field so that a 2-octet-only peer sees a consistent OPEN (RFC 6793 §4.1).
pub fn open(local: &LocalOpen) -> BgpMessage {
    let caps = &local.capabilities;
    let mut capabilities = Vec::new();
    for family in &caps.multiprotocol {
        capabilities.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(family.address_type()),
        ));
    }
    if caps.route_refresh {
        capabilities.push(BgpCapability::RouteRefresh);
    }
    if caps.extended_next_hop_ipv4 {
        capabilities.push(BgpCapability::ExtendedNextHopEncoding(
            ExtendedNextHopEncodingCapability::new(vec![ExtendedNextHopEncoding::new(
                AddressType::Ipv4Unicast,
                AddressFamily::IPv6,
            )]),
        ));
    }
    if let Some(gr) = &caps.graceful_restart {
        let families: Vec<GracefulRestartAddressFamily> = gr
            .families
            .iter()
            .map(|(family, forwarding)| {
                GracefulRestartAddressFamily::new(*forwarding, family.address_type())
            })
            .collect();
        capabilities.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                gr.restarting,
                false,
                gr.restart_time & 0x0fff,
                families,
            ),
        ));
    }
    capabilities.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
        local.asn,
    )));
    let as_field = u16::try_from(local.asn).unwrap_or(AS_TRANS);
    BgpMessage::Open(BgpOpenMessage::new(
        as_field,
        local.hold_time,
        local.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(capabilities)],
    ))
}

/// What the UPDATE builders depend on, from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateContext {
    pub local_asn: u32,
    /// iBGP (same AS): empty AS_PATH, LOCAL_PREF sent.
    pub internal: bool,
    /// Negotiated 4-octet AS; without it AS_PATH is 2-octet with AS_TRANS, plus AS4_PATH.
    pub four_octet_as: bool,
}

/// The attributes shared by the prefixes of one UPDATE (ORIGIN is always IGP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAttributes {
    /// Sent on iBGP sessions only (RFC 4271 §5.1.5).
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    /// (global administrator, local data 1, local data 2), RFC 8092.
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// The IPv6 next hop of an MP_REACH (RFC 2545 §3: global, and link-local on a shared link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6NextHop {
    pub global: Ipv6Addr,
    pub link_local: Option<Ipv6Addr>,
}

fn attribute(
    optional: bool,
    transitive: bool,
    value: PathAttributeValue,
    value_len: usize,
) -> Result<PathAttribute, EncodeError> {
    // MP attributes always use two length octets, so the overhead of a message does not
    // change with the number of NLRI it packs.
    let extended_length = value_len > 255
        || matches!(
            value,
            PathAttributeValue::MpReach(_) | PathAttributeValue::MpUnreach(_)
        );
    PathAttribute::from(optional, transitive, false, extended_length, value)
        .map_err(|(_, why)| EncodeError::Write(why.to_string()))
}

/// ORIGIN, AS_PATH (and AS4_PATH), NEXT_HOP (IPv4 NLRI field only), LOCAL_PREF (iBGP),
/// COMMUNITIES, LARGE_COMMUNITIES; in type order, the MP attribute slotted in by the caller.
fn common_attributes(
    context: &UpdateContext,
    attributes: &RouteAttributes,
    next_hop: Option<Ipv4Addr>,
) -> Result<(Vec<PathAttribute>, Vec<PathAttribute>), EncodeError> {
    let mut before_mp = vec![attribute(
        false,
        true,
        PathAttributeValue::Origin(Origin::IGP),
        1,
    )?];
    let mut after_mp = Vec::new();
    let sequence = if context.internal {
        Vec::new()
    } else {
        vec![context.local_asn]
    };
    let as_path = if context.four_octet_as {
        AsPath::as4_path_segments(segments4(&sequence))
    } else {
        let two_octet: Vec<u16> = sequence
            .iter()
            .map(|asn| u16::try_from(*asn).unwrap_or(AS_TRANS))
            .collect();
        let segments: Vec<As2PathSegment> = if two_octet.is_empty() {
            Vec::new()
        } else {
            vec![As2PathSegment::new(
                AsPathSegmentType::AsSequence,
                two_octet,
            )]
        };
        // RFC 6793 §4.2.2: an AS that does not fit goes in AS4_PATH too.
        if sequence.iter().any(|asn| u16::try_from(*asn).is_err()) {
            after_mp.push(attribute(
                true,
                true,
                PathAttributeValue::As4Path(As4Path::new(segments4(&sequence))),
                2 + 4 * sequence.len(),
            )?);
        }
        AsPath::as2_path_segments(segments)
    };
    before_mp.push(attribute(
        false,
        true,
        PathAttributeValue::AsPath(as_path),
        2 + 4 * sequence.len(),
    )?);
    if let Some(next_hop) = next_hop {
        before_mp.push(attribute(
            false,
            true,
            PathAttributeValue::NextHop(NextHop::new(next_hop)),
            4,
        )?);
    }
    if let (true, Some(local_pref)) = (context.internal, attributes.local_pref) {
        before_mp.push(attribute(
            false,
            true,
            PathAttributeValue::LocalPreference(LocalPreference::new(local_pref)),
            4,
        )?);
    }
    if !attributes.communities.is_empty() {
        let communities: Vec<Community> = attributes
            .communities
            .iter()
            .map(|c| Community::new(*c))
            .collect();
        before_mp.push(attribute(
            true,
            true,
            PathAttributeValue::Communities(Communities::new(communities)),
            4 * attributes.communities.len(),
        )?);
    }
    if !attributes.large_communities.is_empty() {
        let large: Vec<LargeCommunity> = attributes
            .large_communities
            .iter()
            .map(|(global, one, two)| LargeCommunity::new(*global, *one, *two))
            .collect();
        after_mp.push(attribute(
            true,
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(large)),
            12 * attributes.large_communities.len(),
        )?);
    }
    Ok((before_mp, after_mp))
}

fn segments4(sequence: &[u32]) -> Vec<As4PathSegment> {
    if sequence.is_empty() {
        Vec::new()
    } else {
        vec![As4PathSegment::new(
            AsPathSegmentType::AsSequence,
            sequence.to_vec(),
        )]
    }
}

/// Bytes of one prefix in an NLRI field: length octet plus the significant octets.
fn prefix_cost(prefix_len: u8) -> usize {
    1 + usize::from(prefix_len).div_ceil(8)
}

/// Cuts `items` into runs that each fit in a message of `base_len` plus their costs.
fn pack<T: Copy>(items: &[T], cost: impl Fn(&T) -> usize, base_len: usize) -> Vec<Vec<T>> {
    let room = MAX_MESSAGE_LEN.saturating_sub(base_len);
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut used = 0;
    for item in items {
        let item_cost = cost(item);
        if used + item_cost > room && !current.is_empty() {
            runs.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(*item);
        used += item_cost;
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

fn checked(message: BgpMessage) -> Result<BgpMessage, EncodeError> {
    match message.len() {
        len if len > MAX_MESSAGE_LEN => Err(EncodeError::TooLong(len)),
        _ => Ok(message),
    }
}

fn ipv4_nlri(prefixes: &[Ipv4Net]) -> Result<Vec<Ipv4UnicastAddress>, EncodeError> {
    prefixes
        .iter()
        .map(|p| {
            Ipv4Unicast::from_net(p.trunc())
                .map(Ipv4UnicastAddress::new_no_path_id)
                .map_err(|_| EncodeError::NotUnicast(p.to_string()))
        })
        .collect()
}

fn ipv6_nlri(prefixes: &[Ipv6Net]) -> Result<Vec<Ipv6UnicastAddress>, EncodeError> {
    prefixes
        .iter()
        .map(|p| {
            Ipv6Unicast::from_net(p.trunc())
                .map(|n| Ipv6UnicastAddress::new(None, n))
                .map_err(|_| EncodeError::NotUnicast(p.to_string()))
        })
        .collect()
}

/// UPDATEs announcing IPv4 prefixes with equal attributes, as many per message as fit. An
/// IPv4 next hop uses the NLRI field and NEXT_HOP; an IPv6 next hop (RFC 8950, only when the
/// peer advertised extended next hop) uses MP_REACH_NLRI.
pub fn announce_ipv4(
    context: &UpdateContext,
    attributes: &RouteAttributes,
    next_hop: IpAddr,
    prefixes: &[Ipv4Net],
) -> Result<Vec<BgpMessage>, EncodeError> {
    let nlri = ipv4_nlri(prefixes)?;
    let cost = |a: &Ipv4UnicastAddress| prefix_cost(a.network().address().prefix_len());
    match next_hop {
        IpAddr::V4(next_hop) => {
            let (mut attrs, after) = common_attributes(context, attributes, Some(next_hop))?;
            attrs.extend(after);
            let build = |nlri: Vec<Ipv4UnicastAddress>| {
                BgpMessage::Update(BgpUpdateMessage::new(vec![], attrs.clone(), nlri))
            };
            let base = build(Vec::new()).len();
            pack(&nlri, cost, base)
                .into_iter()
                .map(|run| checked(build(run)))
                .collect()
        }
        IpAddr::V6(global) => {
            let (before, after) = common_attributes(context, attributes, None)?;
            let build = |nlri: Vec<Ipv4UnicastAddress>| -> Result<BgpMessage, EncodeError> {
                let reach = MpReach::Ipv4Unicast {
                    next_hop: IpAddr::V6(global),
                    next_hop_local: None,
                    nlri: nlri.into(),
                };
                let mut attrs = before.clone();
                attrs.push(attribute(
                    true,
                    false,
                    PathAttributeValue::MpReach(reach),
                    0,
                )?);
                attrs.extend(after.iter().cloned());
                Ok(BgpMessage::Update(BgpUpdateMessage::new(
                    vec![],
                    attrs,
                    vec![],
                )))
            };
            let base = build(Vec::new())?.len();
            pack(&nlri, cost, base)
                .into_iter()
                .map(|run| build(run).and_then(checked))
                .collect()
        }
    }
}

/// UPDATEs announcing IPv6 prefixes in MP_REACH_NLRI (RFC 4760, RFC 2545).
pub fn announce_ipv6(
    context: &UpdateContext,
    attributes: &RouteAttributes,
    next_hop: Ipv6NextHop,
    prefixes: &[Ipv6Net],
) -> Result<Vec<BgpMessage>, EncodeError> {
    let nlri = ipv6_nlri(prefixes)?;
    let (before, after) = common_attributes(context, attributes, None)?;
    let build = |nlri: Vec<Ipv6UnicastAddress>| -> Result<BgpMessage, EncodeError> {
        let reach = MpReach::Ipv6Unicast {
            next_hop_global: next_hop.global,
            next_hop_local: next_hop.link_local,
            nlri: nlri.into(),
        };
        let mut attrs = before.clone();
        attrs.push(attribute(
            true,
            false,
            PathAttributeValue::MpReach(reach),
            0,
        )?);
        attrs.extend(after.iter().cloned());
        Ok(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            attrs,
            vec![],
        )))
    };
    let base = build(Vec::new())?.len();
    let cost = |a: &Ipv6UnicastAddress| prefix_cost(a.network().address().prefix_len());
    pack(&nlri, cost, base)
        .into_iter()
        .map(|run| build(run).and_then(checked))
        .collect()
}

/// UPDATEs withdrawing IPv4 prefixes (the Withdrawn Routes field).
pub fn withdraw_ipv4(prefixes: &[Ipv4Net]) -> Result<Vec<BgpMessage>, EncodeError> {
    let nlri = ipv4_nlri(prefixes)?;
    let build = |withdrawn: Vec<Ipv4UnicastAddress>| {
        BgpMessage::Update(BgpUpdateMessage::new(withdrawn, vec![], vec![]))
    };
    let base = build(Vec::new()).len();
    let cost = |a: &Ipv4UnicastAddress| prefix_cost(a.network().address().prefix_len());
    pack(&nlri, cost, base)
        .into_iter()
        .map(|run| checked(build(run)))
        .collect()
}

/// UPDATEs withdrawing IPv6 prefixes (MP_UNREACH_NLRI).
pub fn withdraw_ipv6(prefixes: &[Ipv6Net]) -> Result<Vec<BgpMessage>, EncodeError> {
    let nlri = ipv6_nlri(prefixes)?;
    let build = |nlri: Vec<Ipv6UnicastAddress>| -> Result<BgpMessage, EncodeError> {
        let unreach = MpUnreach::Ipv6Unicast { nlri: nlri.into() };
        Ok(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            vec![attribute(
                true,
                false,
                PathAttributeValue::MpUnreach(unreach),
                0,
            )?],
            vec![],
        )))
    };
    let base = build(Vec::new())?.len();
    let cost = |a: &Ipv6UnicastAddress| prefix_cost(a.network().address().prefix_len());
    pack(&nlri, cost, base)
        .into_iter()
        .map(|run| build(run).and_then(checked))
        .collect()
}

/// End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an empty MP_UNREACH_NLRI for the
/// others.
pub fn end_of_rib(family: Family) -> Result<BgpMessage, EncodeError> {
    let attributes = match family {
        Family::Ipv4Unicast => Vec::new(),
        Family::Ipv6Unicast => vec![attribute(
            true,
            false,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                nlri: Vec::new().into(),
            }),
            0,
        )?],
    };
    Ok(BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        attributes,
        vec![],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn ebgp4() -> UpdateContext {
        UpdateContext {
            local_asn: 4_200_000_001,
            internal: false,
            four_octet_as: true,
        }
    }

    fn local_open() -> LocalOpen {
        LocalOpen {
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: "192.0.2.11".parse().unwrap(),
            capabilities: Capabilities {
                multiprotocol: BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]),
                advertises_multiprotocol: true,
                route_refresh: true,
                extended_next_hop_ipv4: true,
                graceful_restart: Some(GracefulRestart {
                    restart_time: 120,
                    restarting: false,
                    families: vec![(Family::Ipv4Unicast, true)],
                }),
                ..Capabilities::default()
            },
        }
    }

    fn roundtrip(message: &BgpMessage, context: &DecodeContext) -> Message {
        let bytes = encode(message).unwrap();
        assert_eq!(message_len(&bytes).unwrap(), Some(bytes.len()));
        decode(&bytes, context).unwrap()
    }

    /// The bytes of an UPDATE whose body is `body`.
    fn update_bytes(body: &[u8]) -> Vec<u8> {
        let mut out = MARKER.to_vec();
        out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        out.push(message_type::UPDATE);
        out.extend_from_slice(body);
        out
    }

    /// An UPDATE with one attribute and the NLRI 192.0.2.0/24.
    fn update_with_attribute(flags: u8, kind: u8, value: &[u8]) -> Vec<u8> {
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 1];
        attrs.extend_from_slice(&[flags, kind, value.len() as u8]);
        attrs.extend_from_slice(value);
        let mut body = vec![0, 0];
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        body.extend_from_slice(&[24, 192, 0, 2]);
        update_bytes(&body)
    }

    #[test]
    fn open_carries_our_capabilities_and_as_trans() {
        let message = open(&local_open());
        let BgpMessage::Open(ref raw) = message else {
            panic!("not an OPEN")
        };
        assert_eq!(raw.my_as(), AS_TRANS);
        let Message::Open(params) = roundtrip(&message, &DecodeContext::default()) else {
            panic!("not an OPEN")
        };
        assert_eq!(params.asn, 4_200_000_001);
        assert_eq!(params.as_field, AS_TRANS);
        assert_eq!(params.hold_time, 90);
        assert_eq!(params.router_id, Ipv4Addr::new(192, 0, 2, 11));
        let caps = params.capabilities;
        assert_eq!(caps.four_octet_as, Some(4_200_000_001));
        assert_eq!(
            caps.families(),
            BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast])
        );
        assert!(caps.route_refresh && caps.extended_next_hop_ipv4);
        assert_eq!(
            caps.graceful_restart,
            Some(GracefulRestart {
                restart_time: 120,
                restarting: false,
                families: vec![(Family::Ipv4Unicast, true)],
            })
        );
    }

    #[test]
    fn a_two_octet_as_goes_in_the_as_field() {
        let mut local = local_open();
        local.asn = 64512;
        let BgpMessage::Open(raw) = open(&local) else {
            panic!("not an OPEN")
        };
        assert_eq!(raw.my_as(), 64512);
    }

    #[test]
    fn an_open_without_multiprotocol_means_ipv4_unicast() {
        let caps = Capabilities::default();
        assert_eq!(caps.families(), BTreeSet::from([Family::Ipv4Unicast]));
    }

    #[test]
    fn keepalive_and_notification_bytes() {
        let keepalive = keepalive();
        assert_eq!(keepalive.len(), 19);
        assert_eq!(encode(&BgpMessage::KeepAlive).unwrap(), keepalive);
        assert_eq!(
            decode(&keepalive, &DecodeContext::default()).unwrap(),
            Message::Keepalive
        );
        let bad_peer_as = Notification::bad_peer_as(65010);
        let bytes = bad_peer_as.to_bytes();
        assert_eq!(&bytes[16..], &[0, 23, 3, 2, 2, 0xfd, 0xf2]);
        assert_eq!(
            decode(&bytes, &DecodeContext::default()).unwrap(),
            Message::Notification(bad_peer_as.clone())
        );
        assert_eq!(bad_peer_as.to_string(), "OPEN Bad Peer AS");
    }

    #[test]
    fn notification_names() {
        let cases = [
            (Notification::hold_timer_expired(), "Hold Timer Expired"),
            (
                Notification::cease(cease_subcode::ADMINISTRATIVE_SHUTDOWN),
                "Cease Administrative Shutdown",
            ),
            (
                Notification::fsm_error(fsm_subcode::UNEXPECTED_IN_OPEN_CONFIRM),
                "FSM Unexpected Message in OpenConfirm",
            ),
            (Notification::new(3, 11, vec![]), "UPDATE Malformed AS_PATH"),
            (Notification::new(6, 99, vec![]), "Cease subcode 99"),
            (Notification::new(42, 1, vec![]), "code 42 subcode 1"),
        ];
        for (notification, name) in cases {
            assert_eq!(notification.to_string(), name);
        }
    }

    #[test]
    fn ipv4_update_carries_every_attribute() {
        let context = UpdateContext {
            local_asn: 64512,
            internal: true,
            four_octet_as: true,
        };
        let attributes = RouteAttributes {
            local_pref: Some(150),
            communities: vec![(64512 << 16) | 100],
            large_communities: vec![(4_200_000_001, 1, 2)],
        };
        let messages = announce_ipv4(
            &context,
            &attributes,
            "10.0.0.1".parse().unwrap(),
            &[v4("192.0.2.10/32"), v4("203.0.113.128/25")],
        )
        .unwrap();
        assert_eq!(messages.len(), 1);
        let BgpMessage::Update(update) = &messages[0] else {
            panic!("not an UPDATE")
        };
        assert_eq!(update.nlri().len(), 2);
        let kinds: Vec<_> = update
            .path_attributes()
            .iter()
            .map(|a| a.path_attribute_type())
            .collect();
        use netgauze_bgp_pkt::iana::PathAttributeType as T;
        assert_eq!(
            kinds,
            vec![
                Ok(T::Origin),
                Ok(T::AsPath),
                Ok(T::NextHop),
                Ok(T::LocalPreference),
                Ok(T::Communities),
                Ok(T::LargeCommunities)
            ]
        );
        let summary = roundtrip(
            &messages[0],
            &DecodeContext {
                four_octet_as: true,
            },
        );
        assert_eq!(
            summary,
            Message::Update(UpdateSummary {
                announced: 2,
                withdrawn: 0,
                end_of_rib: None
            })
        );
    }

    #[test]
    fn local_pref_is_for_ibgp_only() {
        let attributes = RouteAttributes {
            local_pref: Some(150),
            ..RouteAttributes::default()
        };
        let messages = announce_ipv4(
            &ebgp4(),
            &attributes,
            "10.0.0.1".parse().unwrap(),
            &[v4("192.0.2.10/32")],
        )
        .unwrap();
        let BgpMessage::Update(update) = &messages[0] else {
            panic!("not an UPDATE")
        };
        assert!(
            update
                .path_attributes()
                .iter()
                .all(|a| !matches!(a.value(), PathAttributeValue::LocalPreference(_)))
        );
        // eBGP: our AS is the path.
        let as_path = update
            .path_attributes()
            .iter()
            .find_map(|a| match a.value() {
                PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => Some(s.clone()),
                _ => None,
            });
        assert_eq!(as_path.unwrap()[0].as_numbers(), &[4_200_000_001]);
    }

    #[test]
    fn a_two_octet_session_gets_as_trans_and_as4_path() {
        let context = UpdateContext {
            four_octet_as: false,
            ..ebgp4()
        };
        let messages = announce_ipv4(
            &context,
            &RouteAttributes::default(),
            "10.0.0.1".parse().unwrap(),
            &[v4("192.0.2.10/32")],
        )
        .unwrap();
        let BgpMessage::Update(update) = &messages[0] else {
            panic!("not an UPDATE")
        };
        let values: Vec<_> = update.path_attributes().iter().map(|a| a.value()).collect();
        let as_path = values.iter().find_map(|v| match v {
            PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) => Some(s[0].as_numbers()),
            _ => None,
        });
        assert_eq!(as_path, Some(&[AS_TRANS][..]));
        let as4_path = values.iter().find_map(|v| match v {
            PathAttributeValue::As4Path(p) => Some(p.segments()[0].as_numbers()),
            _ => None,
        });
        assert_eq!(as4_path, Some(&[4_200_000_001][..]));
        let decoded = roundtrip(&messages[0], &DecodeContext::default());
        assert!(matches!(
            decoded,
            Message::Update(UpdateSummary { announced: 1, .. })
        ));
    }

    #[test]
    fn ipv4_over_an_ipv6_session_uses_mp_reach_with_an_ipv6_next_hop() {
        let messages = announce_ipv4(
            &ebgp4(),
            &RouteAttributes::default(),
            "2001:db8::11".parse().unwrap(),
            &[v4("192.0.2.10/32")],
        )
        .unwrap();
        let BgpMessage::Update(update) = &messages[0] else {
            panic!("not an UPDATE")
        };
        assert!(update.nlri().is_empty());
        let reach = update
            .path_attributes()
            .iter()
            .find_map(|a| match a.value() {
                PathAttributeValue::MpReach(MpReach::Ipv4Unicast { next_hop, nlri, .. }) => {
                    Some((*next_hop, nlri.len()))
                }
                _ => None,
            });
        assert_eq!(reach, Some(("2001:db8::11".parse().unwrap(), 1)));
        let decoded = roundtrip(
            &messages[0],
            &DecodeContext {
                four_octet_as: true,
            },
        );
        assert!(matches!(
            decoded,
            Message::Update(UpdateSummary { announced: 1, .. })
        ));
    }

    #[test]
    fn ipv6_update_and_withdraw() {
        let next_hop = Ipv6NextHop {
            global: "2001:db8::11".parse().unwrap(),
            link_local: Some("fe80::11".parse().unwrap()),
        };
        let messages = announce_ipv6(
            &ebgp4(),
            &RouteAttributes {
                communities: vec![1],
                ..RouteAttributes::default()
            },
            next_hop,
            &[v6("2001:db8:2::100/128"), v6("2001:db8:ee::/64")],
        )
        .unwrap();
        let context = DecodeContext {
            four_octet_as: true,
        };
        assert_eq!(
            roundtrip(&messages[0], &context),
            Message::Update(UpdateSummary {
                announced: 2,
                withdrawn: 0,
                end_of_rib: None
            })
        );
        let withdrawals = withdraw_ipv6(&[v6("2001:db8:2::100/128")]).unwrap();
        assert_eq!(
            roundtrip(&withdrawals[0], &context),
            Message::Update(UpdateSummary {
                announced: 0,
                withdrawn: 1,
                end_of_rib: None
            })
        );
        let withdrawals = withdraw_ipv4(&[v4("192.0.2.10/32")]).unwrap();
        assert_eq!(
            roundtrip(&withdrawals[0], &context),
            Message::Update(UpdateSummary {
                announced: 0,
                withdrawn: 1,
                end_of_rib: None
            })
        );
    }

    #[test]
    fn end_of_rib_for_both_families() {
        for family in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            let message = end_of_rib(family).unwrap();
            let decoded = roundtrip(&message, &DecodeContext::default());
            assert_eq!(
                decoded,
                Message::Update(UpdateSummary {
                    announced: 0,
                    withdrawn: 0,
                    end_of_rib: Some(family)
                }),
                "{family}"
            );
        }
        assert_eq!(
            encode(&end_of_rib(Family::Ipv4Unicast).unwrap())
                .unwrap()
                .len(),
            23
        );
    }

    #[test]
    fn many_prefixes_are_packed_into_few_full_messages() {
        // 10 000 /32s: 5 bytes each, about 800 per 4096-byte message.
        let prefixes: Vec<Ipv4Net> = (0..10_000u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())
            .collect();
        let attributes = RouteAttributes {
            communities: vec![1, 2, 3],
            large_communities: vec![(1, 2, 3)],
            ..RouteAttributes::default()
        };
        for next_hop in ["10.0.0.1", "2001:db8::1"] {
            let messages =
                announce_ipv4(&ebgp4(), &attributes, next_hop.parse().unwrap(), &prefixes).unwrap();
            assert!(
                messages.len() <= 13,
                "{next_hop}: {} messages",
                messages.len()
            );
            let mut total = 0;
            for message in &messages {
                let bytes = encode(message).unwrap();
                assert!(bytes.len() <= MAX_MESSAGE_LEN);
                let Message::Update(summary) = decode(
                    &bytes,
                    &DecodeContext {
                        four_octet_as: true,
                    },
                )
                .unwrap() else {
                    panic!("not an UPDATE")
                };
                total += summary.announced;
            }
            assert_eq!(total, prefixes.len());
            // Every message but the last is full: another prefix would not have fitted.
            for message in &messages[..messages.len() - 1] {
                assert!(encode(message).unwrap().len() + 5 > MAX_MESSAGE_LEN);
            }
        }
        let v6: Vec<Ipv6Net> = (0..3_000u128)
            .map(|i| Ipv6Net::new(Ipv6Addr::from((0x2001_0db8u128 << 96) + i), 128).unwrap())
            .collect();
        let next_hop = Ipv6NextHop {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None,
        };
        let messages = announce_ipv6(&ebgp4(), &attributes, next_hop, &v6).unwrap();
        assert!(
            messages
                .iter()
                .all(|m| encode(m).unwrap().len() <= MAX_MESSAGE_LEN)
        );
        assert!(withdraw_ipv6(&v6).unwrap().len() >= 2);
    }

    #[test]
    fn a_multicast_prefix_is_refused() {
        let error = withdraw_ipv4(&[v4("224.0.0.0/4")]).unwrap_err();
        assert!(matches!(error, EncodeError::NotUnicast(_)));
    }

    /// Malformed input → the NOTIFICATION RFC 4271 §6 asks for, or RFC 7606 leniency.
    #[test]
    fn malformed_messages_get_the_right_notification() {
        let ctx = DecodeContext {
            four_octet_as: true,
        };
        let mut bad_marker = keepalive();
        bad_marker[3] = 0;
        let mut short_length = keepalive();
        short_length[17] = 10;
        let mut bad_type = keepalive();
        bad_type[18] = 9;
        let mut long_keepalive = keepalive();
        long_keepalive[17] = 20;
        long_keepalive.push(0);
        let mut bad_version = encode(&open(&local_open())).unwrap();
        bad_version[19] = 3;
        let mut hold_one = encode(&open(&local_open())).unwrap();
        hold_one[22..24].copy_from_slice(&1u16.to_be_bytes());
        let mut zero_id = encode(&open(&local_open())).unwrap();
        zero_id[24..28].copy_from_slice(&[0, 0, 0, 0]);
        let mut bad_refresh = vec![0xff; 16];
        bad_refresh.extend_from_slice(&[0, 24, 5, 0, 1, 0, 1, 0]);
        let origin_5 = update_with_attribute(0x40, 1, &[5]);
        let large_short = update_with_attribute(0xc0, 32, &[0, 0]);
        let aggregator_short = update_with_attribute(0xc0, 7, &[0, 0]);
        // A /33 in the NLRI field: the NLRI cannot be parsed.
        let with_nlri = |mut bytes: Vec<u8>| {
            let last = bytes.len() - 4;
            bytes[last] = 33;
            bytes
        };
        let nlri_overrun = with_nlri(update_with_attribute(0x40, 5, &[0, 0, 0, 100]));
        // ORIGIN 5 would be treat-as-withdraw, but not with an unparseable NLRI (RFC 7606 §4).
        let origin_5_nlri_overrun = with_nlri(origin_5.clone());
        // (input, expected NOTIFICATION (code, subcode) or None when the session survives)
        type Case = (&'static str, Vec<u8>, Option<(u8, u8)>);
        let cases: Vec<Case> = vec![
            ("marker not all ones", bad_marker, Some((1, 1))),
            ("length below the header", short_length, Some((1, 2))),
            ("unknown type", bad_type, Some((1, 3))),
            ("KEEPALIVE of 20 bytes", long_keepalive, Some((1, 2))),
            ("OPEN version 3", bad_version, Some((2, 1))),
            ("OPEN hold time 1", hold_one, Some((2, 6))),
            ("OPEN BGP identifier 0.0.0.0", zero_id, Some((2, 3))),
            ("ROUTE-REFRESH of 5 bytes", bad_refresh, Some((7, 1))),
            ("ORIGIN 5: treat-as-withdraw", origin_5, None),
            (
                "short LARGE_COMMUNITIES: treat-as-withdraw",
                large_short,
                None,
            ),
            (
                "short AGGREGATOR: attribute discard",
                aggregator_short,
                None,
            ),
            ("NLRI prefix /33", nlri_overrun, Some((3, 10))),
            (
                "ORIGIN 5 and NLRI prefix /33",
                origin_5_nlri_overrun,
                Some((3, 6)),
            ),
            (
                "attribute length overruns the attributes: treat-as-withdraw (RFC 7606 §4)",
                update_bytes(&[0, 0, 0, 3, 0x40, 1, 5]),
                None,
            ),
            (
                "attribute length overruns, and so does the NLRI",
                update_bytes(&[0, 0, 0, 3, 0x40, 1, 5, 24, 10]),
                Some((3, 6)),
            ),
            (
                "withdrawn length overruns the message",
                update_bytes(&[0, 9, 0, 0]),
                Some((3, 1)),
            ),
            (
                "an unknown attribute running past the attribute list: treat-as-withdraw \
                 (RFC 7606 §4)",
                update_with_attribute(0xc0, 99, &[]).splice_attribute_len(40),
                None,
            ),
            (
                "two octets of a last attribute header: treat-as-withdraw (RFC 7606 §4)",
                update_with_trailing(&[0xc0, 99]),
                None,
            ),
            (
                "one octet of a last attribute header: treat-as-withdraw (RFC 7606 §4)",
                update_with_trailing(&[0xc0]),
                None,
            ),
        ];
        for (name, bytes, expected) in cases {
            let framed = message_len(&bytes);
            let error = match framed {
                Err(error) => error,
                Ok(_) => decode(&bytes, &ctx).expect_err(name),
            };
            let got = error.notification().map(|n| (n.code, n.subcode));
            assert_eq!(got, expected, "{name}: {error}");
        }
    }

    /// What [`update_with_attribute`] built, with the last attribute's length octet changed.
    trait SpliceAttributeLen {
        fn splice_attribute_len(self, len: u8) -> Vec<u8>;
    }

    impl SpliceAttributeLen for Vec<u8> {
        fn splice_attribute_len(mut self, len: u8) -> Vec<u8> {
            // The NLRI (4 bytes) follows the last attribute; its length octet precedes its value.
            let at = self.len() - 4 - 1;
            self[at] = len;
            self
        }
    }

    /// An UPDATE with ORIGIN, AS_PATH, NEXT_HOP, then `trailing` bytes in the attribute list,
    /// and the NLRI 192.0.2.0/24.
    fn update_with_trailing(trailing: &[u8]) -> Vec<u8> {
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 1];
        attrs.extend_from_slice(trailing);
        let mut body = vec![0, 0];
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        body.extend_from_slice(&[24, 192, 0, 2]);
        update_bytes(&body)
    }

    /// RFC 4271 §6.3: Attribute Flags, Attribute Length, Invalid ORIGIN, Invalid NEXT_HOP and
    /// Optional Attribute errors carry the erroneous attribute (found by the lab test with an
    /// MP_REACH_NLRI holding an IPv6 /129: the NOTIFICATION had no data).
    #[test]
    fn reset_notifications_carry_the_erroneous_attribute() {
        let ctx = DecodeContext {
            four_octet_as: true,
        };
        // ORIGIN, AS_PATH, then MP_REACH_NLRI (IPv6 unicast, next hop 2001:db8::1) with a /129.
        let mut mp_reach_value = vec![0, 2, 1, 16, 0x20, 0x01, 0x0d, 0xb8];
        mp_reach_value.extend_from_slice(&[0; 11]);
        mp_reach_value.extend_from_slice(&[1, 0, 129]);
        mp_reach_value.extend_from_slice(&[0x20; 17]);
        let mut mp_reach = vec![0x80, 14, mp_reach_value.len() as u8];
        mp_reach.extend_from_slice(&mp_reach_value);
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0];
        attrs.extend_from_slice(&mp_reach);
        let mut body = vec![0, 0];
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        let error = decode(&update_bytes(&body), &ctx).unwrap_err();
        let notification = error.notification().expect("a reset");
        assert_eq!((notification.code, notification.subcode), (3, 9), "{error}");
        assert_eq!(notification.data, mp_reach, "{error}");

        // ORIGIN 5 with an unparseable NLRI: reset, Invalid ORIGIN, the ORIGIN attribute.
        let mut bytes = update_with_attribute(0x40, 5, &[0, 0, 0, 100]);
        let last = bytes.len() - 4;
        bytes[last] = 33;
        bytes[23..27].copy_from_slice(&[0x40, 1, 1, 5]);
        let error = decode(&bytes, &ctx).unwrap_err();
        let notification = error.notification().expect("a reset");
        assert_eq!((notification.code, notification.subcode), (3, 6), "{error}");
        assert_eq!(notification.data, [0x40, 1, 1, 5], "{error}");

        // Malformed Attribute List carries nothing.
        let error = decode(&update_bytes(&[0, 9, 0, 0]), &ctx).unwrap_err();
        assert_eq!(error.notification().map(|n| n.data.len()), Some(0));
    }

    /// RFC 4271 §6.3: an attribute with the Optional bit clear and a type code we do not know
    /// resets the session with 3/2 and the attribute as Data; the same code with the Optional
    /// bit set is carried along (an unknown optional attribute is not an error).
    #[test]
    fn unrecognized_well_known_attribute_resets_with_3_2() {
        let ctx = DecodeContext::default();
        let error = decode(&update_with_attribute(0x40, 200, &[1, 2, 3]), &ctx).unwrap_err();
        let notification = error.notification().expect("a reset");
        assert_eq!((notification.code, notification.subcode), (3, 2), "{error}");
        assert_eq!(notification.data, [0x40, 200, 3, 1, 2, 3], "{error}");
        assert!(error.to_string().contains("type code 200"), "{error}");

        let optional = decode(&update_with_attribute(0xc0, 200, &[1, 2, 3]), &ctx);
        assert!(matches!(optional, Ok(Message::Update(_))), "{optional:?}");
    }

    #[test]
    fn missing_well_known_attributes_make_a_withdraw() {
        // NLRI with ORIGIN only.
        let mut body = vec![0, 0, 0, 4, 0x40, 1, 1, 0];
        body.extend_from_slice(&[24, 192, 0, 2]);
        let error = decode(&update_bytes(&body), &DecodeContext::default()).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Update {
                handling: UpdateErrorHandling::TreatAsWithdraw,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_notification_is_still_read() {
        let notification = Notification::new(200, 7, b"bye".to_vec());
        let decoded = decode(&notification.to_bytes(), &DecodeContext::default()).unwrap();
        assert_eq!(decoded, Message::Notification(notification));
    }

    #[test]
    fn framing_waits_for_a_header() {
        let bytes = keepalive();
        for len in 0..HEADER_LEN {
            assert_eq!(message_len(&bytes[..len]).unwrap(), None);
        }
        assert!(decode(&bytes[..10], &DecodeContext::default()).is_err());
    }

    fn seeds() -> Vec<Vec<u8>> {
        let ctx = ebgp4();
        let attributes = RouteAttributes {
            local_pref: Some(100),
            communities: vec![1],
            large_communities: vec![(1, 2, 3)],
        };
        let mut seeds = vec![
            encode(&open(&local_open())).unwrap(),
            keepalive(),
            Notification::cease(2).to_bytes(),
            encode(&end_of_rib(Family::Ipv6Unicast).unwrap()).unwrap(),
        ];
        for message in announce_ipv4(
            &ctx,
            &attributes,
            "2001:db8::1".parse().unwrap(),
            &[v4("192.0.2.0/24"), v4("198.51.100.7/32")],
        )
        .unwrap()
        .iter()
        .chain(
            announce_ipv4(
                &ctx,
                &attributes,
                "10.0.0.1".parse().unwrap(),
                &[v4("192.0.2.0/24")],
            )
            .unwrap()
            .iter(),
        )
        .chain(withdraw_ipv6(&[v6("2001:db8::/64")]).unwrap().iter())
        {
            seeds.push(encode(message).unwrap());
        }
        seeds
    }

    /// Decodes as the session would: frame, then decode; must return, never panic.
    fn feed(bytes: &[u8], four_octet_as: bool) {
        let ctx = DecodeContext { four_octet_as };
        if let Ok(Some(len)) = message_len(bytes)
            && let Some(message) = bytes.get(..len)
        {
            let _ = decode(message, &ctx);
        }
        let _ = decode(bytes, &ctx);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            asn4: bool,
        ) {
            feed(&bytes, asn4);
            // With a valid header in front, the body reaches the message parsers.
            for kind in 1..=5u8 {
                let mut framed = MARKER.to_vec();
                framed.extend_from_slice(&((HEADER_LEN + bytes.len()) as u16).to_be_bytes());
                framed.push(kind);
                framed.extend_from_slice(&bytes);
                feed(&framed, asn4);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            seed in 0usize..9,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
            asn4: bool,
        ) {
            let seeds = seeds();
            let mut bytes = seeds[seed % seeds.len()].clone();
            for (at, value) in flips {
                let at = at % bytes.len();
                // Keep the marker mostly intact so the mutation reaches the parsers.
                if at >= 16 {
                    bytes[at] = value;
                }
            }
            feed(&bytes, asn4);
            // The same, cut short, with the header's length fixed up to match.
            let cut = HEADER_LEN + cut % (bytes.len() - HEADER_LEN + 1);
            let mut short = bytes[..cut].to_vec();
            short[16..18].copy_from_slice(&(cut as u16).to_be_bytes());
            feed(&short, asn4);
        }
    }
}
