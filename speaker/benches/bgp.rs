//! BGP benchmarks (issue #10), in the lab, each against GoBGP measured in the same run. Root
//! only (network namespaces); without root it says so and exits. Not run by CI.
//!
//! ```text
//! cargo build --release -p ferrolb-controller && cargo bench -p ferrolb-speaker --bench bgp
//! ```
//!
//! 1. **Table transfer**: one speaker announces 10 000 host routes to FRR; the time from the
//!    start of the session until all 10 000 are in the router's kernel table (`ip -6 route show
//!    proto bgp` in the router namespace). FerroLB: `bgp::session` tasks in a process of their
//!    own (this benchmark re-executed as `sender`, in node1's namespace). GoBGP: `gobgpd` in
//!    node1's namespace with the same routes injected beforehand (`gobgp mrt inject global`,
//!    untimed: `gobgp global rib add` takes one route per call); the clock starts at `gobgp
//!    neighbor add`. The routes are IPv6 /128s under `2001:db8:ee:1::/112`: 10 000 IPv4 /32s do
//!    not fit in the documentation ranges the lab may use.
//! 2. **Three sessions × 10 000 prefixes**: the same sender with FRR and two passive `gobgpd`
//!    receivers (in node2's and node3's namespaces) as peers. Resident memory and CPU while
//!    idle for [`IDLE_WINDOW`], then a full re-announce (every route gets community
//!    64513:999: FerroLB's route set replaced, as when an advertisement's communities change;
//!    GoBGP's table re-injected with the community) and the CPU it took until every receiver
//!    has the new attributes.
//! 3. **Service → route**: the full lab (API server, release controller and speakers, 3
//!    nodes), one BGPPeer (FRR over IPv4): for each of 100 IPv4 Services (endpoints on every
//!    node, created beforehand) the time from `kubectl apply` returning to its /32 in FRR's
//!    kernel table. The reference is the BGP floor: `gobgp global rib add` of one /32 (gobgpd
//!    in the client's namespace peering with FRR) to the same kernel table.
//!
//! 4. **BFD failover**: the full lab, one BGPPeer with a BFDProfile (100 ms × 3) and a 90 s
//!    hold time (FRR's too), a Service with endpoints on every node: node3's link cut
//!    (`FERROLB_BGP_BENCH_BFD_TRIALS`, default 20, times), the time until the router's kernel
//!    route has no next hop via node3. The anchor, same lab and run: no BFD, hold time 3 s.
//!
//! The environment: `FERROLB_BGP_BENCH_ROUNDS` (table transfers per implementation, default 3),
//! `FERROLB_BGP_BENCH_ROUTES` (10 000), `FERROLB_BGP_BENCH_SERVICES` (100),
//! `FERROLB_BGP_BENCH_ROWS` (default `transfer,three_sessions,service_to_route,bfd_failover`). Raw samples are
//! written as JSON lines to `<target>/bgp-bench/<unix time>.jsonl`; the table is printed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use ferrolb_crds::config::PeerAsn;
use ferrolb_speaker::bgp::codec::{Family, RouteAttributes};
use ferrolb_speaker::bgp::fsm::{Backoff, SessionConfig};
use ferrolb_speaker::bgp::session::{self, PeerConfig, Route, RouteSet, SessionStatus};
use ferrolb_tests::harness::{TestLab, require_root};
use ferrolb_tests::lab::FerrolbBinaries;
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::topology::{
    CLIENT_V4, NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4, ROUTER_LAN_V6, node_addresses,
};
use ferrolb_tests::process::{self, Background};
use ipnet::{IpNet, Ipv6Net};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The community every route gets in the re-announce of row 2.
const REANNOUNCE_COMMUNITY: (u16, u16) = (64513, 999);
/// IPv4 records after the routes in an MRT file (see [`write_mrt`]).
const MRT_PADDING_RECORDS: usize = 100_000;
/// How long row 2 samples the idle sender's CPU.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// Hang guard for every wait (a 10 000-route transfer takes seconds).
const DEADLINE: Duration = Duration::from_secs(180);
/// The AS of the two GoBGP receivers of row 2 and of the reference speaker of row 3.
const RECEIVER_ASN: u32 = 64512;
const CLIENT_ASN: u32 = 64514;
/// The pool of row 3's Services, and the /32s the reference injects (disjoint halves).
const SERVICE_POOL: &str = "203.0.113.0/25";
const REFERENCE_BASE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 128);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "sender") {
        return sender::main(&args[1..]);
    }
    if !require_root("bgp bench") {
        return Ok(());
    }
    let rounds = env_usize("FERROLB_BGP_BENCH_ROUNDS", 3);
    let routes = env_usize("FERROLB_BGP_BENCH_ROUTES", 10_000);
    let services = env_usize("FERROLB_BGP_BENCH_SERVICES", 100);
    let rows = std::env::var("FERROLB_BGP_BENCH_ROWS")
        .unwrap_or_else(|_| "transfer,three_sessions,service_to_route,bfd_failover".into());
    let wants = |row: &str| rows.split(',').any(|r| r.trim() == row);
    let mut report = Report::new()?;
    if wants("transfer") || wants("three_sessions") {
        let lab = TestLab::network("bench_bgp_routes", 3)?.context("not root")?;
        if wants("transfer") {
            table_transfer(&lab, rounds, routes, &mut report)?;
        }
        if wants("three_sessions") {
            three_sessions(&lab, routes, &mut report)?;
        }
    }
    let release_binaries = || -> anyhow::Result<FerrolbBinaries> {
        let release = ferrolb_tests::paths::target_dir().join("release");
        let binaries = FerrolbBinaries {
            controller: release.join("ferrolb-controller"),
            speaker: PathBuf::from(env!("CARGO_BIN_EXE_ferrolb-speaker")),
        };
        if !binaries.controller.exists() {
            bail!(
                "{} is missing: cargo build --release -p ferrolb-controller",
                binaries.controller.display()
            );
        }
        Ok(binaries)
    };
    if wants("bfd_failover") {
        let trials = env_usize("FERROLB_BGP_BENCH_BFD_TRIALS", 20);
        let lab =
            TestLab::start_with("bench_bgp_bfd", 3, release_binaries()?)?.context("not root")?;
        bfd_failover(&lab, trials, &mut report)?;
    }
    if wants("service_to_route") {
        let lab = TestLab::start_with("bench_bgp_services", 3, release_binaries()?)?
            .context("not root")?;
        service_to_route(&lab, services, &mut report)?;
    }
    report.print();
    Ok(())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `i`th benchmark route: `2001:db8:ee:1::<i>/128`.
fn route_prefix(i: usize) -> Ipv6Net {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xee, 1, 0, 0, 0, 0));
    let offset = u128::try_from(i).unwrap_or(u128::MAX);
    Ipv6Net::new(Ipv6Addr::from(base + offset), 128).unwrap_or_default()
}

fn community_value((high, low): (u16, u16)) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

// ---------------------------------------------------------------------------------------------
// The FerroLB sender: `bgp::session` tasks and nothing else, in a process of their own so that
// its memory and CPU can be read from /proc as gobgpd's are.

mod sender {
    use super::*;
    use tokio::signal::unix::{SignalKind, signal};

    /// `sender <routes> <router id> <next hop> <peer asn>@<address:port>...`: announces the
    /// routes to every peer until SIGTERM (then Cease); SIGUSR1 re-announces them all with
    /// [`REANNOUNCE_COMMUNITY`].
    pub fn main(args: &[String]) -> anyhow::Result<()> {
        let [routes, router_id, next_hop, peers @ ..] = args else {
            bail!("usage: sender <routes> <router id> <next hop> <asn>@<address:port>...");
        };
        let routes: usize = routes.parse()?;
        let router_id: Ipv4Addr = router_id.parse()?;
        let next_hop: Ipv6Addr = next_hop.parse()?;
        let peers = peers
            .iter()
            .map(|p| {
                let (asn, address) = p.split_once('@').context("<asn>@<address:port>")?;
                Ok((asn.parse::<u32>()?, address.parse::<SocketAddr>()?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The speaker's runtime (`#[tokio::main]`: multi-threaded).
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(run(routes, router_id, next_hop, peers))
    }

    fn route_set(routes: usize, next_hop: Ipv6Addr, community: Option<u32>) -> RouteSet {
        let route = Route {
            next_hop: IpAddr::V6(next_hop),
            attributes: RouteAttributes {
                communities: community.into_iter().collect(),
                ..RouteAttributes::default()
            },
        };
        let mut set = RouteSet::new();
        for i in 0..routes {
            set.insert(IpNet::V6(route_prefix(i)), route.clone());
        }
        set
    }

    async fn run(
        routes: usize,
        router_id: Ipv4Addr,
        next_hop: Ipv6Addr,
        peers: Vec<(u32, SocketAddr)>,
    ) -> anyhow::Result<()> {
        let (routes_tx, routes_rx) = watch::channel(route_set(routes, next_hop, None));
        let cancel = CancellationToken::new();
        let mut statuses = Vec::new();
        let mut tasks = Vec::new();
        for (asn, address) in peers {
            let (status_tx, status_rx) = watch::channel(SessionStatus::new(address));
            statuses.push(status_rx);
            let peer = PeerConfig {
                session: SessionConfig {
                    local_asn: NODE_ASN,
                    peer_asn: PeerAsn::Fixed(asn),
                    router_id,
                    hold_time: Duration::from_secs(90),
                    keepalive_time: Duration::from_secs(30),
                    passive: false,
                    connect_retry_time: Duration::from_secs(2),
                    families: BTreeSet::from([Family::Ipv6Unicast]),
                    extended_next_hop_ipv4: false,
                    graceful_restart: None,
                    backoff: Backoff::default(),
                },
                address,
                source: None,
                ttl: None,
                md5_key: None,
            };
            tasks.push(tokio::spawn(session::run(
                peer,
                routes_rx.clone(),
                status_tx,
                cancel.clone(),
            )));
        }
        println!("sender: {routes} routes, {} peers", tasks.len());
        let mut terminate = signal(SignalKind::terminate())?;
        let mut reannounce = signal(SignalKind::user_defined1())?;
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = reannounce.recv() => {
                    let community = community_value(REANNOUNCE_COMMUNITY);
                    routes_tx.send_replace(route_set(routes, next_hop, Some(community)));
                    println!("sender: re-announce with community {community}");
                }
            }
        }
        cancel.cancel();
        for task in tasks {
            task.await?;
        }
        drop(statuses);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Process measurements, from /proc.

/// CPU time of `pid` so far: the sum over its threads of the time they ran
/// (`/proc/<pid>/task/*/schedstat`, nanoseconds; `stat`'s utime and stime count in 10 ms
/// ticks, too coarse for FerroLB's sender).
fn cpu_time(pid: i32) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += schedstat
            .split_whitespace()
            .next()
            .context("schedstat")?
            .parse::<u64>()?;
    }
    Ok(Duration::from_nanos(total))
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in KiB.
fn memory_kib(pid: i32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &'static str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} of {pid}"))?;
        Ok(line.split_whitespace().nth(1).context(name)?.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------------------------------------
// Waiting on the lab.

fn wait_for<T>(
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    poll: Duration,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out after {DEADLINE:?}: {what}");
        }
        std::thread::sleep(poll);
    }
}

/// How many benchmark routes the router's kernel table holds.
fn kernel_route_count(router_ns: &str) -> usize {
    netns::ip(router_ns, &["-6", "route", "show", "proto", "bgp"])
        .map(|out| {
            out.lines()
                .filter(|l| l.starts_with("2001:db8:ee:1:"))
                .count()
        })
        .unwrap_or(0)
}

/// The IPv4 /32s of BGP routes in the router's kernel table.
fn kernel_v4_routes(router_ns: &str) -> BTreeSet<Ipv4Addr> {
    netns::ip(router_ns, &["-4", "route", "show", "proto", "bgp"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter_map(|dst| dst.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_kernel_count(router_ns: &str, want: usize) -> anyhow::Result<()> {
    wait_for(
        &format!("{want} benchmark routes in {router_ns}'s kernel table"),
        || (kernel_route_count(router_ns) == want).then_some(()),
        Duration::from_millis(50),
    )
}

// ---------------------------------------------------------------------------------------------
// GoBGP.

/// A gobgpd in namespace `ns`; stopped when dropped.
struct Gobgpd {
    ns: String,
    pid: i32,
}

impl Gobgpd {
    /// Starts gobgpd with `conf` (TOML) and waits for its API.
    fn start(lab: &TestLab, name: &str, ns: &str, conf: &str) -> anyhow::Result<Gobgpd> {
        let dir = lab.run_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let conf_path = dir.join("gobgpd.toml");
        std::fs::write(&conf_path, conf)?;
        let started = Background {
            name,
            ns,
            program: Path::new("gobgpd"),
            args: vec![
                "-f".into(),
                conf_path.display().to_string(),
                "-t".into(),
                "toml".into(),
                "--log-plain".into(),
                "--pprof-disable".into(),
            ],
            env: Default::default(),
            dir: &dir,
        }
        .start()?;
        let gobgpd = Gobgpd {
            ns: ns.to_string(),
            pid: started.pid,
        };
        wait_for(
            &format!("{name}: gobgpd's API"),
            || gobgpd.cli(&["global"]).ok(),
            Duration::from_millis(100),
        )?;
        Ok(gobgpd)
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut gobgp = netns::exec(&self.ns, "gobgp");
        gobgp.args(args);
        Ok(ferrolb_tests::cmd::stdout(gobgp)?)
    }

    /// Adds the routes of an MRT file from [`write_mrt`] to gobgpd's table.
    fn inject(&self, mrt: &Path) -> anyhow::Result<()> {
        let file = mrt.display().to_string();
        self.cli(&["mrt", "inject", "--no-ipv4", "global", &file])?;
        Ok(())
    }

    /// Destinations in the IPv6 unicast table (`Destination: N, Path: M`).
    fn v6_destinations(&self) -> usize {
        self.cli(&["global", "rib", "-a", "ipv6", "summary"])
            .ok()
            .and_then(|out| {
                let (_, rest) = out.split_once("Destination: ")?;
                rest.split(',').next()?.trim().parse().ok()
            })
            .unwrap_or(0)
    }

    /// Whether `prefix`'s path carries `community`.
    fn has_community(&self, prefix: Ipv6Net, community: u32) -> bool {
        self.cli(&["global", "rib", "-a", "ipv6", &prefix.to_string(), "-j"])
            .is_ok_and(|out| out.contains(&community.to_string()))
    }

    fn stop(self) {}
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        process::stop(&[self.pid], Duration::from_secs(5));
    }
}

fn gobgp_global(asn: u32, router_id: Ipv4Addr, listen: Option<IpAddr>) -> String {
    let listen = match listen {
        Some(address) => format!("  port = 179\n  local-address-list = [\"{address}\"]\n"),
        None => "  port = -1\n".to_string(),
    };
    format!("[global.config]\n  as = {asn}\n  router-id = \"{router_id}\"\n{listen}")
}

fn gobgp_neighbor(address: IpAddr, asn: u32, passive: bool) -> String {
    let family = if address.is_ipv4() {
        "ipv4-unicast"
    } else {
        "ipv6-unicast"
    };
    format!(
        "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{address}\"\n    peer-as = {asn}\n  \
         [neighbors.transport.config]\n    passive-mode = {passive}\n  [[neighbors.afi-safis]]\n    \
         [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
    )
}

/// An MRT TABLE_DUMP_V2 file (RFC 6396 §4.3) of the benchmark routes, for `gobgp mrt inject
/// global`: a PEER_INDEX_TABLE with one peer, then one RIB_IPV6_UNICAST record per route with
/// ORIGIN IGP, an empty AS_PATH, MP_REACH_NLRI (GoBGP reads the full form) and, if given, one
/// community. Inject it with `--no-ipv4`.
fn write_mrt(
    path: &Path,
    routes: usize,
    next_hop: Ipv6Addr,
    bgp_id: Ipv4Addr,
    community: Option<u32>,
) -> anyhow::Result<()> {
    fn record(out: &mut Vec<u8>, subtype: u16, body: &[u8]) {
        out.extend(0u32.to_be_bytes()); // timestamp
        out.extend(13u16.to_be_bytes()); // TABLE_DUMP_V2
        out.extend(subtype.to_be_bytes());
        out.extend(u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend(body);
    }
    let mut out = Vec::new();
    let mut peers = Vec::new();
    peers.extend(bgp_id.octets()); // collector BGP ID
    peers.extend(0u16.to_be_bytes()); // view name length
    peers.extend(1u16.to_be_bytes()); // peer count
    peers.push(3); // peer type: IPv6 address, 4-octet AS
    peers.extend(bgp_id.octets());
    peers.extend(next_hop.octets());
    peers.extend(NODE_ASN.to_be_bytes());
    record(&mut out, 1, &peers);
    for i in 0..routes {
        let prefix = route_prefix(i).addr().octets();
        let mut mp_reach = Vec::new();
        mp_reach.extend(2u16.to_be_bytes()); // AFI IPv6
        mp_reach.push(1); // SAFI unicast
        mp_reach.push(16);
        mp_reach.extend(next_hop.octets());
        mp_reach.push(0); // reserved
        mp_reach.push(128);
        mp_reach.extend(prefix);
        let mut attributes = vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x80, 14];
        attributes.push(u8::try_from(mp_reach.len()).unwrap_or(u8::MAX));
        attributes.extend(mp_reach);
        if let Some(community) = community {
            attributes.extend([0xc0, 8, 4]);
            attributes.extend(community.to_be_bytes());
        }
        let mut body = Vec::new();
        body.extend(u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes()); // sequence
        body.push(128);
        body.extend(prefix);
        body.extend(1u16.to_be_bytes()); // entry count
        body.extend(0u16.to_be_bytes()); // peer index
        body.extend(0u32.to_be_bytes()); // originated time
        body.extend(
            u16::try_from(attributes.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        body.extend(attributes);
        record(&mut out, 4, &body);
    }
    // gobgp 3.10's `mrt inject` exits as soon as it has read the file, and the routes still
    // in flight to gobgpd are lost (of 10 000, a few hundred at the end). IPv4 records, which
    // `--no-ipv4` makes it parse and skip, keep it reading until gobgpd has taken them all.
    for i in 0..MRT_PADDING_RECORDS {
        let attributes = [0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 192, 0, 2, 11];
        let mut body = Vec::new();
        body.extend(u32::try_from(routes + i).unwrap_or(u32::MAX).to_be_bytes());
        body.push(32);
        body.extend([203, 0, 113, 1]);
        body.extend(1u16.to_be_bytes());
        body.extend(0u16.to_be_bytes());
        body.extend(0u32.to_be_bytes());
        body.extend(
            u16::try_from(attributes.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        body.extend(attributes);
        record(&mut out, 2, &body); // RIB_IPV4_UNICAST
    }
    std::fs::write(path, out)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The FerroLB sender, started from here.

struct Sender {
    pid: i32,
}

impl Sender {
    fn start(lab: &TestLab, routes: usize, peers: &[(u32, SocketAddr)]) -> anyhow::Result<Sender> {
        let node1 = lab.netlab().topology.ns("node1");
        let (v4, v6) = node_addresses(1);
        let mut args = vec![
            "sender".to_string(),
            routes.to_string(),
            v4.to_string(),
            v6.to_string(),
        ];
        args.extend(
            peers
                .iter()
                .map(|(asn, address)| format!("{asn}@{address}")),
        );
        let exe = std::env::current_exe()?;
        let started = Background {
            name: "ferrolb-sender",
            ns: &node1,
            program: &exe,
            args,
            env: [("RUST_LOG".to_string(), "warn".to_string())].into(),
            dir: lab.run_dir(),
        }
        .start()?;
        Ok(Sender { pid: started.pid })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        process::stop(&[self.pid], Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Row 1: table transfer.

/// From `start`: when FRR had the session from `peer` Established, and when its kernel table
/// had all `routes` (polled every 20 ms).
fn transfer_times(
    lab: &TestLab,
    peer: IpAddr,
    routes: usize,
    start: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    let router = lab.netlab().router();
    let family = if peer.is_ipv4() { "ipv4" } else { "ipv6" };
    let mut established = None;
    wait_for(
        &format!("{routes} routes from {peer} in the router's kernel table"),
        || match established {
            None => {
                let summary = router
                    .vtysh_json(&format!("show bgp {family} unicast summary json"))
                    .ok()?;
                if summary["peers"][peer.to_string()]["state"] == "Established" {
                    established = Some(start.elapsed());
                }
                None
            }
            Some(at) => (kernel_route_count(&router.ns) == routes).then(|| (at, start.elapsed())),
        },
        Duration::from_millis(20),
    )
}

fn table_transfer(
    lab: &TestLab,
    rounds: usize,
    routes: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let router_ns = lab.netlab().topology.router_ns();
    let node1 = lab.netlab().topology.ns("node1");
    let (node1_v4, node1_v6) = node_addresses(1);
    let frr = SocketAddr::new(IpAddr::V6(ROUTER_LAN_V6), 179);
    let mrt = lab.run_dir().join("routes.mrt");
    write_mrt(&mrt, routes, node1_v6, node1_v4, None)?;
    for round in 0..rounds {
        // FerroLB.
        let start = Instant::now();
        let sender = Sender::start(lab, routes, &[(ROUTER_ASN, frr)])?;
        let (established, elapsed) = transfer_times(lab, IpAddr::V6(node1_v6), routes, start)?;
        let cpu = cpu_time(sender.pid)?;
        let (_, peak) = memory_kib(sender.pid)?;
        report.sample("transfer", "ferrolb", json!({"round": round, "routes": routes, "ms": ms(elapsed), "transfer_ms": ms(elapsed - established), "cpu_ms": ms(cpu), "peak_rss_kib": peak}));
        drop(sender);
        wait_kernel_count(&router_ns, 0)?;

        // GoBGP: the table first, then the session.
        let gobgpd = Gobgpd::start(
            lab,
            "gobgp-sender",
            &node1,
            &gobgp_global(NODE_ASN, node1_v4, None),
        )?;
        gobgpd.inject(&mrt)?;
        wait_for(
            "gobgpd: the injected table",
            || (gobgpd.v6_destinations() == routes).then_some(()),
            Duration::from_millis(100),
        )?;
        let cpu_before = cpu_time(gobgpd.pid)?;
        let start = Instant::now();
        gobgpd.cli(&[
            "neighbor",
            "add",
            &ROUTER_LAN_V6.to_string(),
            "as",
            &ROUTER_ASN.to_string(),
        ])?;
        let (established, elapsed) = transfer_times(lab, IpAddr::V6(node1_v6), routes, start)?;
        let cpu = cpu_time(gobgpd.pid)? - cpu_before;
        let (_, peak) = memory_kib(gobgpd.pid)?;
        report.sample("transfer", "gobgp", json!({"round": round, "routes": routes, "ms": ms(elapsed), "transfer_ms": ms(elapsed - established), "cpu_ms": ms(cpu), "peak_rss_kib": peak}));
        gobgpd.stop();
        wait_kernel_count(&router_ns, 0)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Row 2: three sessions.

/// The two GoBGP receivers (node2, node3), passive, peering with node1.
fn receivers(lab: &TestLab) -> anyhow::Result<Vec<(Gobgpd, SocketAddr)>> {
    let (_, node1_v6) = node_addresses(1);
    (2..=3)
        .map(|index| {
            let (v4, v6) = node_addresses(index);
            let conf = gobgp_global(RECEIVER_ASN, v4, Some(IpAddr::V6(v6)))
                + &gobgp_neighbor(IpAddr::V6(node1_v6), NODE_ASN, true);
            let ns = lab.netlab().topology.ns(&format!("node{index}"));
            let gobgpd = Gobgpd::start(lab, &format!("gobgp-receiver{index}"), &ns, &conf)?;
            Ok((gobgpd, SocketAddr::new(IpAddr::V6(v6), 179)))
        })
        .collect()
}

/// For FRR and each receiver: whether it has every route with the re-announce community
/// (first, middle and last prefix checked).
fn reannounced(lab: &TestLab, receivers: &[(Gobgpd, SocketAddr)], routes: usize) -> Vec<bool> {
    let community = community_value(REANNOUNCE_COMMUNITY);
    let wanted = format!("{}:{}", REANNOUNCE_COMMUNITY.0, REANNOUNCE_COMMUNITY.1);
    let probes = [0, routes / 2, routes - 1].map(route_prefix);
    let router = lab.netlab().router();
    let frr = probes.iter().all(|prefix| {
        router
            .vtysh_json(&format!("show bgp ipv6 unicast {prefix} json"))
            .is_ok_and(|v| v["paths"][0]["community"]["string"] == Value::String(wanted.clone()))
    });
    std::iter::once(frr)
        .chain(receivers.iter().map(|(r, _)| {
            probes
                .iter()
                .all(|prefix| r.has_community(*prefix, community))
        }))
        .collect()
}

fn three_sessions(lab: &TestLab, routes: usize, report: &mut Report) -> anyhow::Result<()> {
    let router_ns = lab.netlab().topology.router_ns();
    let node1 = lab.netlab().topology.ns("node1");
    let (node1_v4, node1_v6) = node_addresses(1);
    let receivers = receivers(lab)?;
    let frr = SocketAddr::new(IpAddr::V6(ROUTER_LAN_V6), 179);
    let all_have_routes = |want: usize| {
        wait_kernel_count(&router_ns, want)?;
        wait_for(
            "both receivers have the table",
            || {
                receivers
                    .iter()
                    .all(|(r, _)| r.v6_destinations() == want)
                    .then_some(())
            },
            Duration::from_millis(200),
        )
    };

    let measure = |implementation: &str,
                   pid: i32,
                   reannounce: &dyn Fn() -> anyhow::Result<()>,
                   report: &mut Report|
     -> anyhow::Result<()> {
        // Settle, then idle.
        std::thread::sleep(Duration::from_secs(5));
        let (rss_idle_start, _) = memory_kib(pid)?;
        let cpu_start = cpu_time(pid)?;
        std::thread::sleep(IDLE_WINDOW);
        let idle_cpu = cpu_time(pid)? - cpu_start;
        let (rss_idle, _) = memory_kib(pid)?;
        let cpu_before = cpu_time(pid)?;
        let start = Instant::now();
        reannounce()?;
        // When FRR, and each receiver, first had the new attributes.
        let mut done: Vec<Option<Duration>> = vec![None; 1 + receivers.len()];
        wait_for(
            "every receiver has the re-announced routes",
            || {
                for (at, has) in done.iter_mut().zip(reannounced(lab, &receivers, routes)) {
                    if has && at.is_none() {
                        *at = Some(start.elapsed());
                    }
                }
                done.iter().all(Option::is_some).then_some(())
            },
            Duration::from_millis(50),
        )?;
        let elapsed = start.elapsed();
        let done_ms: Vec<f64> = done.iter().map(|d| ms(d.unwrap_or_default())).collect();
        let cpu = cpu_time(pid)? - cpu_before;
        let (rss_after, peak) = memory_kib(pid)?;
        report.sample(
            "three_sessions",
            implementation,
            json!({
                "routes": routes, "sessions": 3,
                "rss_idle_kib": rss_idle, "rss_idle_start_kib": rss_idle_start,
                "idle_cpu_percent": idle_cpu.as_secs_f64() * 100.0 / IDLE_WINDOW.as_secs_f64(),
                "reannounce_ms": ms(elapsed), "reannounce_each_ms": done_ms, "reannounce_cpu_ms": ms(cpu),
                "rss_after_reannounce_kib": rss_after, "peak_rss_kib": peak,
            }),
        );
        Ok(())
    };

    // FerroLB.
    let peers: Vec<(u32, SocketAddr)> = std::iter::once((ROUTER_ASN, frr))
        .chain(
            receivers
                .iter()
                .map(|(_, address)| (RECEIVER_ASN, *address)),
        )
        .collect();
    let sender = Sender::start(lab, routes, &peers)?;
    all_have_routes(routes)?;
    let pid = sender.pid;
    measure(
        "ferrolb",
        pid,
        &|| {
            process::signal(pid, libc::SIGUSR1);
            Ok(())
        },
        report,
    )?;
    drop(sender);
    all_have_routes(0)?;

    // GoBGP: the same three neighbours in its configuration, then the table.
    let mut conf = gobgp_global(NODE_ASN, node1_v4, None);
    conf.push_str(&gobgp_neighbor(
        IpAddr::V6(ROUTER_LAN_V6),
        ROUTER_ASN,
        false,
    ));
    for (_, address) in &receivers {
        conf.push_str(&gobgp_neighbor(address.ip(), RECEIVER_ASN, false));
    }
    let gobgpd = Gobgpd::start(lab, "gobgp-sender3", &node1, &conf)?;
    let mrt = lab.run_dir().join("routes.mrt");
    write_mrt(&mrt, routes, node1_v6, node1_v4, None)?;
    let mrt_community = lab.run_dir().join("routes-community.mrt");
    write_mrt(
        &mrt_community,
        routes,
        node1_v6,
        node1_v4,
        Some(community_value(REANNOUNCE_COMMUNITY)),
    )?;
    gobgpd.inject(&mrt)?;
    all_have_routes(routes)?;
    measure(
        "gobgp",
        gobgpd.pid,
        &|| gobgpd.inject(&mrt_community),
        report,
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Row 3: Service → route.

const SERVICE_CONFIG_POOL: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: bench, namespace: ferrolb-system}
spec: {addresses: [\"203.0.113.0/25\"]}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: bench, namespace: ferrolb-system}
spec: {ipAddressPools: [bench]}
";

const SERVICE_CONFIG_PEER: &str = "apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: router, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1}
";

fn endpoint_slice(name: &str) -> String {
    let mut yaml = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-bench\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n"
    );
    for index in 1..=3 {
        let _ = writeln!(
            yaml,
            "- addresses: [\"{}\"]\n  nodeName: node{index}\n  conditions: {{ready: true, serving: true}}",
            node_addresses(index).0
        );
    }
    yaml
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: LoadBalancer\n  \
         ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n"
    )
}

fn kubectl_apply(lab: &TestLab, name: &str, yaml: &str) -> anyhow::Result<()> {
    let path = lab.run_dir().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    lab.control_plane()
        .kubectl_output(["apply", "-f", &path.display().to_string()])?;
    Ok(())
}

/// Waits for a /32 in the router's kernel table that `before` did not have; the time it was
/// first seen (polled every 5 ms).
fn new_v4_route(
    router_ns: &str,
    before: &BTreeSet<Ipv4Addr>,
    start: Instant,
) -> anyhow::Result<(Ipv4Addr, Duration)> {
    wait_for(
        "a new /32 in the router's kernel table",
        || {
            let now = kernel_v4_routes(router_ns);
            let elapsed = start.elapsed();
            now.difference(before).next().map(|ip| (*ip, elapsed))
        },
        Duration::from_millis(5),
    )
}

fn service_to_route(lab: &TestLab, services: usize, report: &mut Report) -> anyhow::Result<()> {
    let router_ns = lab.netlab().topology.router_ns();
    let pool: ipnet::Ipv4Net = SERVICE_POOL.parse()?;
    kubectl_apply(
        lab,
        "bench-config",
        &format!("{SERVICE_CONFIG_POOL}---\n{SERVICE_CONFIG_PEER}"),
    )?;
    // The sessions first: the clock is to measure a Service, not the speakers' start.
    let router = lab.netlab().router();
    wait_for(
        "FRR: sessions with the 3 nodes Established",
        || {
            let summary = router
                .vtysh_json("show bgp ipv4 unicast summary json")
                .ok()?;
            let peers = summary["peers"].as_object()?;
            (peers
                .values()
                .filter(|p| p["state"] == "Established")
                .count()
                == 3)
                .then_some(())
        },
        Duration::from_millis(200),
    )?;
    let mut created = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i:03}");
        kubectl_apply(lab, &format!("{name}-endpoints"), &endpoint_slice(&name))?;
        let before = kernel_v4_routes(&router_ns);
        let path = lab.run_dir().join(format!("{name}.yaml"));
        std::fs::write(&path, service(&name))?;
        lab.control_plane()
            .kubectl_output(["apply", "-f", &path.display().to_string()])?;
        let start = Instant::now();
        let (ip, elapsed) = new_v4_route(&router_ns, &before, start)?;
        let assigned = lab.control_plane().kubectl_output([
            "get",
            "service",
            "-n",
            "default",
            &name,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ])?;
        if assigned.trim() != ip.to_string() || !pool.contains(&ip) {
            bail!("{name}: the new route is {ip}, the Service has {assigned:?}");
        }
        report.sample(
            "service_to_route",
            "ferrolb",
            json!({"service": name, "ip": ip.to_string(), "ms": ms(elapsed)}),
        );
        created.push((name, ip));
    }
    // Deleted one at a time: from `kubectl delete` returning until the router's kernel has
    // no route for the IP (every node's path withdrawn).
    for (name, ip) in created {
        lab.control_plane().kubectl_output([
            "delete",
            "service",
            "-n",
            "default",
            &name,
            "--wait=false",
        ])?;
        let start = Instant::now();
        let elapsed = route_gone(&router_ns, ip, start)?;
        report.sample(
            "service_withdraw",
            "ferrolb",
            json!({"service": name, "ip": ip.to_string(), "ms": ms(elapsed)}),
        );
    }

    // The reference: one route at a time from gobgpd in the client's namespace.
    let client_ns = lab.netlab().topology.client_ns();
    let conf = gobgp_global(CLIENT_ASN, CLIENT_V4, None)
        + &gobgp_neighbor(IpAddr::V4(ROUTER_LAN_V4), ROUTER_ASN, false);
    let gobgpd = Gobgpd::start(lab, "gobgp-client", &client_ns, &conf)?;
    wait_for(
        "gobgpd (client) established with FRR",
        || {
            gobgpd
                .cli(&["neighbor", &ROUTER_LAN_V4.to_string(), "-j"])
                .ok()
                .and_then(|out| serde_json::from_str::<Value>(&out).ok())
                .filter(|peer| peer["state"]["session_state"] == 6)
        },
        Duration::from_millis(200),
    )?;
    let mut injected = Vec::new();
    for i in 0..services.min(128) {
        let ip = Ipv4Addr::from(u32::from(REFERENCE_BASE) + u32::try_from(i).unwrap_or(0));
        let before = kernel_v4_routes(&router_ns);
        gobgpd.cli(&[
            "global",
            "rib",
            "add",
            "-a",
            "ipv4",
            &format!("{ip}/32"),
            "nexthop",
            &CLIENT_V4.to_string(),
        ])?;
        let start = Instant::now();
        let (seen, elapsed) = new_v4_route(&router_ns, &before, start)?;
        if seen != ip {
            bail!("reference: expected {ip}, the router installed {seen}");
        }
        report.sample(
            "service_to_route",
            "gobgp",
            json!({"route": ip.to_string(), "ms": ms(elapsed)}),
        );
        injected.push(ip);
    }
    for ip in injected {
        let prefix = format!("{ip}/32");
        gobgpd.cli(&["global", "rib", "del", "-a", "ipv4", &prefix])?;
        let start = Instant::now();
        let elapsed = route_gone(&router_ns, ip, start)?;
        report.sample(
            "service_withdraw",
            "gobgp",
            json!({"route": ip.to_string(), "ms": ms(elapsed)}),
        );
    }
    Ok(())
}

/// Waits until the router's kernel table has no route for `ip`; the time since `start`
/// (polled every 5 ms).
fn route_gone(router_ns: &str, ip: Ipv4Addr, start: Instant) -> anyhow::Result<Duration> {
    wait_for(
        &format!("{ip}/32 gone from the router's kernel table"),
        || (!kernel_v4_routes(router_ns).contains(&ip)).then(|| start.elapsed()),
        Duration::from_millis(5),
    )
}

// ---------------------------------------------------------------------------------------------
// Row 4: BFD failover.

/// The next hops of the router's kernel route for `ip`.
fn kernel_next_hops(router_ns: &str, ip: Ipv4Addr) -> BTreeSet<Ipv4Addr> {
    let out =
        netns::ip(router_ns, &["-4", "route", "show", &format!("{ip}/32")]).unwrap_or_default();
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

fn bfd_config(with_bfd: bool) -> String {
    let bfd = if with_bfd { ", bfdProfile: fast" } else { "" };
    let profile = ferrolb_tests::netlab::router::bfd_profile_manifest("fast");
    format!(
        "{SERVICE_CONFIG_POOL}---
{profile}apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {{name: router, namespace: ferrolb-system}}
spec: {{myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1, holdTime: 90s{bfd}}}
"
    )
}

/// Node3's link to the LAN cut, `trials` times, with BFD (100 ms × 3, hold time 90 s on both
/// sides) and then, as the anchor, without BFD at the lab's 3 s hold time: the time from the
/// cut until the router's kernel route for the Service has no next hop via node3 (polled every
/// 5 ms), then the link restored and node3's path awaited before the next trial.
fn bfd_failover(lab: &TestLab, trials: usize, report: &mut Report) -> anyhow::Result<()> {
    let router_ns = lab.netlab().topology.router_ns();
    let router = lab.netlab().router();
    let node3 = node_addresses(3).0;
    let all: BTreeSet<Ipv4Addr> = (1..=3).map(|i| node_addresses(i).0).collect();
    kubectl_apply(lab, "svc-endpoints", &endpoint_slice("web"))?;
    kubectl_apply(lab, "svc", &service("web"))?;
    for (mode, with_bfd, timers) in [("bfd", true, "30 90"), ("hold_3s", false, "1 3")] {
        router.configure_bgp(&[
            &format!("neighbor nodes4 timers {timers}"),
            &format!("neighbor nodes6 timers {timers}"),
        ])?;
        // New timers apply to new sessions: reset them.
        router.vtysh("clear bgp *")?;
        kubectl_apply(lab, "bench-config", &bfd_config(with_bfd))?;
        let ip: Ipv4Addr = wait_for(
            "the Service's IP",
            || {
                lab.control_plane()
                    .kubectl_output([
                        "get",
                        "service",
                        "-n",
                        "default",
                        "web",
                        "-o",
                        "jsonpath={.status.loadBalancer.ingress[0].ip}",
                    ])
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            },
            Duration::from_millis(200),
        )?;
        for trial in 0..trials {
            wait_for(
                "the route via all three nodes",
                || (kernel_next_hops(&router_ns, ip) == all).then_some(()),
                Duration::from_millis(50),
            )?;
            // Let the sessions (and BFD) settle after the last restore.
            std::thread::sleep(Duration::from_secs(3));
            lab.netlab().set_port("node3", false)?;
            let start = Instant::now();
            let elapsed = wait_for(
                "node3's next hop gone",
                || (!kernel_next_hops(&router_ns, ip).contains(&node3)).then(|| start.elapsed()),
                Duration::from_millis(5),
            )?;
            lab.netlab().set_port("node3", true)?;
            report.sample(
                "bfd_failover",
                mode,
                json!({"trial": trial, "ms": ms(elapsed)}),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report.

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

struct Report {
    samples: Vec<Value>,
    out: PathBuf,
}

impl Report {
    fn new() -> anyhow::Result<Report> {
        let dir = ferrolb_tests::paths::target_dir().join("bgp-bench");
        std::fs::create_dir_all(&dir)?;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs();
        Ok(Report {
            samples: Vec::new(),
            out: dir.join(format!("{stamp}.jsonl")),
        })
    }

    fn sample(&mut self, row: &str, implementation: &str, mut value: Value) {
        value["row"] = json!(row);
        value["implementation"] = json!(implementation);
        println!("{value}");
        let line = format!("{value}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.out)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        self.samples.push(value);
    }

    fn values(&self, row: &str, implementation: &str, field: &str) -> Vec<f64> {
        let mut values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s["row"] == row && s["implementation"] == implementation)
            .filter_map(|s| s[field].as_f64())
            .collect();
        values.sort_by(f64::total_cmp);
        values
    }

    fn print(&self) {
        let quantile = |values: &[f64], q: f64| -> f64 {
            if values.is_empty() {
                return f64::NAN;
            }
            // Nearest rank.
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        let ratio = |ours: f64, theirs: f64| ours / theirs;
        let compared = [
            "transfer",
            "three_sessions",
            "service_to_route",
            "service_withdraw",
        ];
        if self
            .samples
            .iter()
            .any(|s| compared.iter().any(|row| s["row"] == *row))
        {
            println!(
                "\n| what | FerroLB | GoBGP | FerroLB / GoBGP |\n| --- | ---: | ---: | ---: |"
            );
        }
        let row = |label: &str, row: &str, field: &str, q: f64| {
            let (ours, theirs) = (
                self.values(row, "ferrolb", field),
                self.values(row, "gobgp", field),
            );
            if ours.is_empty() && theirs.is_empty() {
                return; // a row not run
            }
            let (ours, theirs) = (quantile(&ours, q), quantile(&theirs, q));
            println!(
                "| {label} | {ours:.1} | {theirs:.1} | {:.2} |",
                ratio(ours, theirs)
            );
        };
        row(
            "10k routes: session start → all in FRR's kernel, median ms",
            "transfer",
            "ms",
            0.5,
        );
        row(
            "10k routes: Established → all in FRR's kernel, median ms",
            "transfer",
            "transfer_ms",
            0.5,
        );
        row(
            "10k routes: sender CPU, median ms",
            "transfer",
            "cpu_ms",
            0.5,
        );
        row(
            "10k routes: sender peak RSS, median KiB",
            "transfer",
            "peak_rss_kib",
            0.5,
        );
        row("3×10k: idle RSS KiB", "three_sessions", "rss_idle_kib", 0.5);
        row(
            "3×10k: idle CPU %",
            "three_sessions",
            "idle_cpu_percent",
            0.5,
        );
        row(
            "3×10k: re-announce until all have it, ms",
            "three_sessions",
            "reannounce_ms",
            0.5,
        );
        row(
            "3×10k: re-announce CPU ms",
            "three_sessions",
            "reannounce_cpu_ms",
            0.5,
        );
        row("3×10k: peak RSS KiB", "three_sessions", "peak_rss_kib", 0.5);
        row(
            "Service (or rib add) → kernel route p50 ms",
            "service_to_route",
            "ms",
            0.5,
        );
        row(
            "Service (or rib add) → kernel route p99 ms",
            "service_to_route",
            "ms",
            0.99,
        );
        row(
            "Service deleted (or rib del) → route gone p50 ms",
            "service_withdraw",
            "ms",
            0.5,
        );
        row(
            "Service deleted (or rib del) → route gone p99 ms",
            "service_withdraw",
            "ms",
            0.99,
        );
        let bfd = self.values("bfd_failover", "bfd", "ms");
        let hold = self.values("bfd_failover", "hold_3s", "ms");
        if !bfd.is_empty() || !hold.is_empty() {
            println!(
                "\n| node cut off → its next hop gone from the router's kernel | trials | p50 ms | p90 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |"
            );
            for (label, values) in [
                ("BFD 100 ms × 3, hold 90 s", &bfd),
                ("no BFD, hold 3 s", &hold),
            ] {
                println!(
                    "| {label} | {} | {:.0} | {:.0} | {:.0} |",
                    values.len(),
                    quantile(values, 0.5),
                    quantile(values, 0.9),
                    quantile(values, 1.0)
                );
            }
        }
        println!("\nraw samples: {}", self.out.display());
    }
}
