//! The fault schedule: pure, and a function of the seed alone, so that one command line replays
//! a run. The generator is our own splitmix64 on purpose: `rand`'s small generators promise no
//! stable output across versions, and a seed printed today must replay the same faults later.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A kind of fault the tool injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The node's switch port down, then up.
    LinkDown,
    /// The speaker SIGKILLed, then started again.
    SpeakerKill,
    /// The speaker stopped with SIGTERM, then started again.
    SpeakerTerm,
    /// The speaker frozen with SIGSTOP, then SIGCONT.
    SpeakerFreeze,
    /// kube-apiserver frozen with SIGSTOP, then SIGCONT.
    ApiServerFreeze,
    /// The controller leader SIGKILLed, then started again (within the Lease: it takes its
    /// Lease back).
    ControllerKill,
    /// The controller leader SIGKILLed and kept down past its Lease, so that the standby
    /// takes over; then started again (as the standby).
    ControllerFailover,
    /// The membership port (UDP 7946) dropped between two groups of nodes (nftables).
    MembershipPartition,
    /// A share of every frame dropped on a node's port, both ways, ARP and NDP included
    /// (nftables `netdev` hooks: the kernel has no `tc netem`, so no delay either).
    PacketLoss,
    /// The API server unreachable from every node: its packets silently dropped (nftables),
    /// so the speakers' connections hang rather than fail.
    ApiServerBlackhole,
    /// A pool overlapping the run's pool applied (invalid), then deleted: bad configuration
    /// must cost no address and no announcement.
    ConfigInvalid,
    /// A second pool, its L2Advertisement and a Service from it created, then deleted.
    PoolAdded,
    /// The run's pool widened by a second range each family, then put back: nothing moves.
    PoolWidened,
    /// A pool of its own with a Service from it, then the pool narrowed to exclude the
    /// Service's addresses: it must get new ones, with an Event naming the old. Then deleted.
    PoolNarrowed,
    /// An ETP Local Service switched to Cluster, then back.
    EtpSwitch,
    /// An ETP Local Service's endpoints moved to other nodes, then back.
    EndpointsMove,
    /// The lab router's FRR daemons stopped, then started again (see [`super::bgp`]).
    RouterRestart,
    /// The router resets its BGP sessions with one node (`clear bgp <address>`).
    BgpSessionReset,
    /// BFD between the router and one node dropped both ways (nftables on the router), so
    /// BFD takes the node's sessions down; then let through again.
    BfdLoss,
}

impl FaultKind {
    pub const ALL: [FaultKind; 19] = [
        FaultKind::LinkDown,
        FaultKind::SpeakerKill,
        FaultKind::SpeakerTerm,
        FaultKind::SpeakerFreeze,
        FaultKind::ApiServerFreeze,
        FaultKind::ControllerKill,
        FaultKind::ControllerFailover,
        FaultKind::MembershipPartition,
        FaultKind::PacketLoss,
        FaultKind::ApiServerBlackhole,
        FaultKind::ConfigInvalid,
        FaultKind::PoolAdded,
        FaultKind::PoolWidened,
        FaultKind::PoolNarrowed,
        FaultKind::EtpSwitch,
        FaultKind::EndpointsMove,
        FaultKind::RouterRestart,
        FaultKind::BgpSessionReset,
        FaultKind::BfdLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::LinkDown => "link-down",
            FaultKind::SpeakerKill => "speaker-kill",
            FaultKind::SpeakerTerm => "speaker-term",
            FaultKind::SpeakerFreeze => "speaker-freeze",
            FaultKind::ApiServerFreeze => "apiserver-freeze",
            FaultKind::ControllerKill => "controller-kill",
            FaultKind::ControllerFailover => "controller-failover",
            FaultKind::MembershipPartition => "membership-partition",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::ApiServerBlackhole => "apiserver-blackhole",
            FaultKind::ConfigInvalid => "config-invalid",
            FaultKind::PoolAdded => "pool-added",
            FaultKind::PoolWidened => "pool-widened",
            FaultKind::PoolNarrowed => "pool-narrowed",
            FaultKind::EtpSwitch => "etp-switch",
            FaultKind::EndpointsMove => "endpoints-move",
            FaultKind::RouterRestart => "router-restart",
            FaultKind::BgpSessionReset => "bgp-session-reset",
            FaultKind::BfdLoss => "bfd-loss",
        }
    }

    /// Whether the fault takes a node's speaker off the wire, so that its addresses must move
    /// (the recovery time is then a failover).
    pub fn silences_a_speaker(self) -> bool {
        matches!(
            self,
            FaultKind::LinkDown
                | FaultKind::SpeakerKill
                | FaultKind::SpeakerTerm
                | FaultKind::SpeakerFreeze
        )
    }

    /// Whether the fault is aimed at BGP (the router or its sessions; see [`super::bgp`]).
    pub fn is_bgp(self) -> bool {
        matches!(
            self,
            FaultKind::RouterRestart | FaultKind::BgpSessionReset | FaultKind::BfdLoss
        )
    }

    /// How long the fault is held, at most (a draw picks within it).
    fn hold_range(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            // Longer than detection, so the addresses move.
            FaultKind::LinkDown => (ms(2_000), ms(6_000)),
            FaultKind::SpeakerKill | FaultKind::SpeakerTerm => (ms(500), ms(3_000)),
            // The 0.1–5 s: short ones must not move anything, long ones must.
            FaultKind::SpeakerFreeze => (ms(100), ms(5_000)),
            FaultKind::ApiServerFreeze => (ms(1_000), ms(10_000)),
            FaultKind::ControllerKill => (ms(500), ms(3_000)),
            // Past the Lease (the lab's 15 s, the manifest's default) and the standby's retry.
            FaultKind::ControllerFailover => (ms(20_000), ms(25_000)),
            FaultKind::MembershipPartition => (ms(2_000), ms(8_000)),
            FaultKind::PacketLoss => (ms(2_000), ms(10_000)),
            // Past the speakers' API timeouts, so their watches must reconnect.
            FaultKind::ApiServerBlackhole => (ms(2_000), ms(20_000)),
            // Long enough for the controller and the speakers to act on the change.
            FaultKind::ConfigInvalid
            | FaultKind::PoolAdded
            | FaultKind::PoolWidened
            | FaultKind::PoolNarrowed
            | FaultKind::EtpSwitch
            | FaultKind::EndpointsMove => (ms(2_000), ms(8_000)),
            // Longer than the speakers' first reconnect delays (1 s, doubling).
            FaultKind::RouterRestart => (ms(1_000), ms(5_000)),
            // The reset is a moment; the hold is the rest before the heal (a no-op).
            FaultKind::BgpSessionReset => (ms(500), ms(2_000)),
            // Longer than BFD's detection (300 ms) so the sessions go down.
            FaultKind::BfdLoss => (ms(1_000), ms(6_000)),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {text:?}; known: {}", names.join(", "))
            })
    }
}

/// What a node fault is aimed at. Owners are resolved when the step runs: aiming at the node
/// that answers for a Service is what makes a fault exercise a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The node that answers for the `n`-th Service's IPv4 address.
    OwnerOf(usize),
    /// The `n`-th node (0-based).
    Node(usize),
    /// Nodes `0..n` on one side of a partition, the others on the other.
    Split(usize),
    /// Not aimed at a node (the API server, the controller).
    Cluster,
}

/// One fault: what, at whom, for how long, and how long the lab rests afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub index: usize,
    pub kind: FaultKind,
    pub target: Target,
    pub hold: Duration,
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, and its output is fixed by its definition.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.next_u64() % (span + 1))
    }
}

/// The first `count` steps of the schedule for `seed`, drawing kinds from `kinds` (in the order
/// given; an empty list means all), for a lab of `nodes` nodes and `services` Services.
pub fn schedule(
    seed: u64,
    count: usize,
    kinds: &[FaultKind],
    nodes: usize,
    services: usize,
) -> Vec<Step> {
    let kinds = if kinds.is_empty() {
        &FaultKind::ALL[..]
    } else {
        kinds
    };
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|index| {
            let kind = kinds[rng.below(kinds.len())];
            let target = match kind {
                FaultKind::ApiServerFreeze
                | FaultKind::ControllerKill
                | FaultKind::ControllerFailover
                | FaultKind::ApiServerBlackhole
                | FaultKind::ConfigInvalid
                | FaultKind::PoolAdded
                | FaultKind::PoolWidened
                | FaultKind::PoolNarrowed
                | FaultKind::EtpSwitch
                | FaultKind::EndpointsMove
                | FaultKind::RouterRestart => Target::Cluster,
                FaultKind::MembershipPartition => Target::Split(1 + rng.below(nodes.max(2) - 1)),
                // BGP is announced from every eligible node: any node will do.
                FaultKind::BgpSessionReset | FaultKind::BfdLoss => Target::Node(rng.below(nodes)),
                // Mostly at an owner (a failover), sometimes at any node.
                _ if rng.below(4) == 0 => Target::Node(rng.below(nodes)),
                _ => Target::OwnerOf(rng.below(services)),
            };
            let (low, high) = kind.hold_range();
            Step {
                index,
                kind,
                target,
                hold: rng.between(low, high),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule() {
        let a = schedule(42, 50, &[], 3, 6);
        assert_eq!(a, schedule(42, 50, &[], 3, 6));
        assert_ne!(a, schedule(43, 50, &[], 3, 6));
        // The generator is fixed by its definition (splitmix64's published first output).
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn steps_stay_within_their_kind_and_the_lab() {
        for step in schedule(7, 500, &[], 3, 6) {
            let (low, high) = step.kind.hold_range();
            assert!(step.hold >= low && step.hold <= high, "{step:?}");
            match step.target {
                Target::Node(n) => assert!(n < 3),
                Target::OwnerOf(s) => assert!(s < 6),
                Target::Split(n) => assert!((1..3).contains(&n), "{step:?}"),
                Target::Cluster => assert!(!step.kind.silences_a_speaker()),
            }
        }
    }

    #[test]
    fn the_fault_list_limits_the_kinds() {
        let only = [FaultKind::SpeakerKill, FaultKind::LinkDown];
        let steps = schedule(1, 100, &only, 3, 6);
        assert!(steps.iter().all(|s| only.contains(&s.kind)));
        assert!(steps.iter().any(|s| s.kind == FaultKind::LinkDown));
        assert_eq!("speaker-freeze".parse(), Ok(FaultKind::SpeakerFreeze));
        assert!("meteor".parse::<FaultKind>().is_err());
    }
}
