//! When and what to announce unasked after this node becomes the owner of an IP: a pure schedule,
//! driven by a clock the caller owns (tests pass `Duration`s; the speaker passes
//! `Instant::now() - started`).
//!
//! # Why 0, 200 ms, 500 ms, 1 s, 2 s
//! - **0 ms**: clients keep sending to the old owner's MAC until told otherwise; every
//!   millisecond counts, so the first burst goes out at once.
//! - **200 ms, 500 ms**: cover the loss of a single frame (a busy switch, a port that only just
//!   became forwarding and still learns MACs) well before a client would give up.
//! - **1 s, 2 s**: the old owner keeps answering ARP until it learns it lost (membership
//!   timeouts), and one of its replies can flip a client back to the old MAC. Linux ignores an
//!   ordinary ARP update within `locktime` (default 1 s) of the previous one, so an old-owner
//!   reply right after our announcement is ignored but one a second later is not; the 1 s and
//!   2 s rounds re-teach clients after that window. Some stacks apply the lock to gratuitous ARP
//!   as well, which is why MetalLB repeats every 1.1 s for 5 s (its issue #172); we front-load
//!   the same number of rounds into 2 s.
//!
//! An optional periodic refresh afterwards re-teaches hosts that expired or flushed their entry
//! without asking (or that never accepted gratuitous ARP into an empty cache).
//!
//! Each IPv4 round is two frames — the request and the reply form — because hosts differ in which
//! one they honour; each IPv6 round is one unsolicited NA with Override set.

use std::net::IpAddr;
use std::time::Duration;

use crate::wire::Mac;
use crate::wire::build::{GratuitousArpForm, gratuitous_arp, unsolicited_na};

/// The default burst: offsets from the moment the node became the owner.
pub const DEFAULT_OFFSETS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// A schedule was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("a gratuitous schedule needs at least one send")]
    Empty,
    #[error("gratuitous send offsets must be strictly increasing")]
    NotIncreasing,
    #[error("the gratuitous refresh period must be greater than zero")]
    ZeroRefresh,
}

/// When to send: a burst of offsets, then optionally every `refresh` forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GratuitousSchedule {
    offsets: Vec<Duration>,
    refresh: Option<Duration>,
}

impl Default for GratuitousSchedule {
    fn default() -> GratuitousSchedule {
        GratuitousSchedule {
            offsets: DEFAULT_OFFSETS.to_vec(),
            refresh: None,
        }
    }
}

impl GratuitousSchedule {
    pub fn new(
        offsets: Vec<Duration>,
        refresh: Option<Duration>,
    ) -> Result<GratuitousSchedule, ScheduleError> {
        if offsets.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if offsets.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(ScheduleError::NotIncreasing);
        }
        if refresh == Some(Duration::ZERO) {
            return Err(ScheduleError::ZeroRefresh);
        }
        Ok(GratuitousSchedule { offsets, refresh })
    }

    /// The default burst followed by a periodic refresh.
    pub fn with_refresh(period: Duration) -> Result<GratuitousSchedule, ScheduleError> {
        GratuitousSchedule::new(DEFAULT_OFFSETS.to_vec(), Some(period))
    }

    pub fn offsets(&self) -> &[Duration] {
        &self.offsets
    }

    pub fn refresh(&self) -> Option<Duration> {
        self.refresh
    }

    /// The offset of the `n`-th send (0-based); `None` once the schedule is over.
    pub fn nth(&self, n: usize) -> Option<Duration> {
        if let Some(offset) = self.offsets.get(n) {
            return Some(*offset);
        }
        let period = self.refresh?;
        let last = *self.offsets.last()?;
        let rounds = u32::try_from(n + 1 - self.offsets.len()).ok()?;
        last.checked_add(period.checked_mul(rounds)?)
    }
}

/// What the announcing task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send one round of [`announcement_frames`] now.
    Send,
    /// Nothing due; poll again at this offset from the start.
    WaitUntil(Duration),
    /// The schedule is over.
    Done,
}

/// Progress through a schedule for one announcement.
#[derive(Debug, Clone)]
pub struct Burst {
    schedule: GratuitousSchedule,
    next: usize,
}

impl Burst {
    pub fn new(schedule: GratuitousSchedule) -> Burst {
        Burst { schedule, next: 0 }
    }

    /// Call with the time elapsed since ownership began. Returns `Send` at most once per call;
    /// if several sends are overdue (the task was descheduled) they collapse into one, because
    /// back-to-back copies of the same announcement teach nothing new.
    pub fn poll(&mut self, elapsed: Duration) -> Step {
        let Some(due) = self.schedule.nth(self.next) else {
            return Step::Done;
        };
        if elapsed < due {
            return Step::WaitUntil(due);
        }
        self.next += 1;
        while self.schedule.nth(self.next).is_some_and(|at| at <= elapsed) {
            self.next += 1;
        }
        Step::Send
    }
}

/// One round of unsolicited announcements of `ip` from `iface_mac`.
pub fn announcement_frames(iface_mac: Mac, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => vec![
            gratuitous_arp(iface_mac, v4, GratuitousArpForm::Request),
            gratuitous_arp(iface_mac, v4, GratuitousArpForm::Reply),
        ],
        IpAddr::V6(v6) => vec![unsolicited_na(iface_mac, v6)],
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Drives a burst with a fake clock that jumps to each requested time; returns send times.
    fn run(mut burst: Burst, horizon: Duration) -> Vec<Duration> {
        let mut now = Duration::ZERO;
        let mut sent = Vec::new();
        loop {
            match burst.poll(now) {
                Step::Send => sent.push(now),
                Step::WaitUntil(at) if at <= horizon => {
                    assert!(at > now, "wait must move time forward");
                    now = at;
                }
                Step::WaitUntil(_) | Step::Done => return sent,
            }
        }
    }

    #[test]
    fn default_burst_sends_at_the_documented_offsets_then_stops() {
        let mut burst = Burst::new(GratuitousSchedule::default());
        assert_eq!(
            run(burst.clone(), Duration::from_secs(3600)),
            DEFAULT_OFFSETS.to_vec()
        );
        assert_eq!(burst.poll(Duration::from_secs(10)), Step::Send);
        assert_eq!(burst.poll(Duration::from_secs(10)), Step::Done);
    }

    #[test]
    fn refresh_continues_after_the_burst() {
        let schedule = GratuitousSchedule::with_refresh(Duration::from_secs(60)).unwrap();
        let sent = run(Burst::new(schedule), Duration::from_secs(200));
        let mut expected = DEFAULT_OFFSETS.to_vec();
        expected.extend([ms(62_000), ms(122_000), ms(182_000)]);
        assert_eq!(sent, expected);
    }

    #[test]
    fn overdue_sends_collapse_into_one() {
        let mut burst = Burst::new(GratuitousSchedule::default());
        assert_eq!(burst.poll(ms(0)), Step::Send);
        // Woken late, at 1.5 s: the 200 ms, 500 ms and 1 s rounds are one send.
        assert_eq!(burst.poll(ms(1500)), Step::Send);
        assert_eq!(burst.poll(ms(1500)), Step::WaitUntil(ms(2000)));
        assert_eq!(burst.poll(ms(2000)), Step::Send);
        assert_eq!(burst.poll(ms(2000)), Step::Done);
    }

    #[test]
    fn early_poll_waits() {
        let mut burst = Burst::new(GratuitousSchedule::new(vec![ms(100)], None).unwrap());
        assert_eq!(burst.poll(ms(0)), Step::WaitUntil(ms(100)));
        assert_eq!(burst.poll(ms(99)), Step::WaitUntil(ms(100)));
        assert_eq!(burst.poll(ms(100)), Step::Send);
        assert_eq!(burst.poll(ms(100_000)), Step::Done);
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        assert_eq!(
            GratuitousSchedule::new(vec![], None),
            Err(ScheduleError::Empty)
        );
        assert_eq!(
            GratuitousSchedule::new(vec![ms(5), ms(5)], None),
            Err(ScheduleError::NotIncreasing)
        );
        assert_eq!(
            GratuitousSchedule::new(vec![ms(0)], Some(Duration::ZERO)),
            Err(ScheduleError::ZeroRefresh)
        );
    }

    #[test]
    fn ipv4_round_is_request_and_reply_form_ipv6_round_one_na() {
        let mac = Mac([0x02, 0, 0, 0, 0, 0xf0]);
        let vip = Ipv4Addr::new(192, 0, 2, 240);
        let frames = announcement_frames(mac, IpAddr::V4(vip));
        let operations: Vec<ArpOperation> = frames
            .iter()
            .map(|frame| {
                let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
                assert!(eth.dst_addr().is_broadcast());
                let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
                assert_eq!(
                    (arp.sender_ip, arp.target_ip, arp.sender_mac),
                    (vip, vip, mac)
                );
                arp.operation
            })
            .collect();
        assert_eq!(operations, vec![ArpOperation::Request, ArpOperation::Reply]);

        let vip6: Ipv6Addr = "2001:db8:2::240".parse().unwrap();
        assert_eq!(
            announcement_frames(mac, IpAddr::V6(vip6)),
            vec![unsolicited_na(mac, vip6)]
        );
    }
}
