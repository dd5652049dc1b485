//! End to end: the layer2 responder on real AF_PACKET sockets, checked by the real Linux
//! neighbour code of a client namespace with `arping`, `ndisc6`, `ping` and `ip neigh`.
//!
//! Topology (two private namespaces, prefix `fsp-<pid>-`, nothing in the root namespace):
//! ```text
//!  ns srv                                ns cli
//!  eth0 02:00:00:00:0f:01 ─── veth ───  p0 ┐
//!  eth1 02:00:00:00:0f:02 ─── veth ───  p1 ┴ br0  192.0.2.200/24, 2001:db8:2::200/64
//! ```
//! Responder 1 runs on srv/eth0, responder 2 on srv/eth1 (each in a thread that `setns`es into
//! srv). The VIPs 192.0.2.240 and 2001:db8:2::240 are configured on no interface: every answer
//! comes from the responder. Needs root; skips (printing why) when not root, fails under `CI`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrolb_speaker::layer2::{
    AnnounceTable, Burst, DropReason, GratuitousSchedule, Interfaces, Listen, PacketSocket,
    Responder, Step, announcement_frames, lookup_iface,
};
use ferrolb_speaker::wire::{Mac, solicited_node};
use ferrolb_tests::controlplane::netns::enter_netns;

const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);
const NOT_OURS4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 241);
const MAC1: Mac = Mac([0x02, 0, 0, 0, 0x0f, 0x01]);
const MAC2: Mac = Mac([0x02, 0, 0, 0, 0x0f, 0x02]);

fn vip6() -> Ipv6Addr {
    "2001:db8:2::240".parse().unwrap()
}

fn not_ours6() -> Ipv6Addr {
    "2001:db8:2::241".parse().unwrap()
}

/// Skips (returns false) when the test cannot run here; panics instead under CI.
fn can_run() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_owned());
    }
    for tool in ["ip", "bridge", "arping", "ndisc6", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            missing.push(format!("`{tool}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("l2_netns needs {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI is set: not skipping)");
    }
    // Written to the real stderr: libtest captures `eprintln!` of passing tests, and a skip must
    // be visible.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    false
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|err| panic!("{args:?}: {err}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The two namespaces; deleted on drop, including when a check panics.
struct Lab {
    srv: String,
    cli: String,
}

impl Lab {
    fn up() -> Lab {
        let prefix = format!("fsp-{}", std::process::id());
        let lab = Lab {
            srv: format!("{prefix}-srv"),
            cli: format!("{prefix}-cli"),
        };
        lab.delete();
        must(&["ip", "netns", "add", &lab.srv]);
        must(&["ip", "netns", "add", &lab.cli]);
        let (srv, cli) = (lab.srv.as_str(), lab.cli.as_str());
        // Created inside srv with the peer moved straight into cli: never in the root namespace.
        for (eth, port, mac) in [("eth0", "p0", MAC1), ("eth1", "p1", MAC2)] {
            must(&[
                "ip",
                "-n",
                srv,
                "link",
                "add",
                eth,
                "address",
                &mac.to_string(),
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                cli,
            ]);
            must(&["ip", "-n", srv, "link", "set", eth, "up"]);
        }
        must(&[
            "ip",
            "-n",
            cli,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        must(&[
            "ip",
            "-n",
            cli,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        must(&[
            "ip",
            "netns",
            "exec",
            cli,
            "sysctl",
            "-qw",
            "net.ipv6.conf.br0.accept_dad=0",
        ]);
        for port in ["p0", "p1"] {
            must(&["ip", "-n", cli, "link", "set", port, "master", "br0"]);
            must(&["ip", "-n", cli, "link", "set", port, "up"]);
        }
        must(&[
            "ip",
            "-n",
            cli,
            "addr",
            "add",
            "192.0.2.200/24",
            "dev",
            "br0",
        ]);
        must(&[
            "ip",
            "-n",
            cli,
            "addr",
            "add",
            "2001:db8:2::200/64",
            "dev",
            "br0",
            "nodad",
        ]);
        must(&["ip", "-n", cli, "link", "set", "br0", "up"]);
        must(&["ip", "-n", cli, "link", "set", "lo", "up"]);
        lab.wait_until_forwarding();
        lab
    }

    /// Frames sent before br0 has carrier and its ports forward are lost, which would turn the
    /// first probe of every check into a flake.
    fn wait_until_forwarding(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let link = text(&run(&["ip", "-n", &self.cli, "-o", "link", "show", "br0"]));
            let ports = text(&run(&["bridge", "-n", &self.cli, "link", "show"]));
            let forwarding = ports.matches("state forwarding").count();
            if link.contains("state UP") && forwarding == 2 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bridge not forwarding:\n{link}\n{ports}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn delete(&self) {
        for ns in [&self.srv, &self.cli] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                let _ = run(&["ip", "netns", "del", ns]);
            }
        }
    }

    fn in_cli(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.cli.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// The client's neighbour entry for `ip` on br0 (`ip neigh` line), or "".
    fn neigh(&self, ip: &str) -> String {
        text(&run(&[
            "ip", "-n", &self.cli, "neigh", "show", ip, "dev", "br0",
        ]))
    }

    fn wait_for_neigh(&self, ip: &str, mac: Mac, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let line = self.neigh(ip);
            if line.contains(&format!("lladdr {mac}")) || Instant::now() > deadline {
                return line;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Every frame a responder did not answer, with the reason.
type DropLog = Mutex<Vec<(DropReason, Vec<u8>)>>;

enum Cmd {
    SetTable(AnnounceTable),
    Gratuitous,
    Stop,
}

/// A responder running in its own thread inside namespace `ns` on `iface`.
struct ResponderThread {
    commands: tokio::sync::mpsc::UnboundedSender<Cmd>,
    drops: Arc<DropLog>,
    handle: Option<JoinHandle<()>>,
}

impl ResponderThread {
    fn start(ns: &str, iface: &str, table: AnnounceTable) -> ResponderThread {
        let (commands, rx) = tokio::sync::mpsc::unbounded_channel();
        let drops = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (ns, iface, thread_drops) = (ns.to_owned(), iface.to_owned(), drops.clone());
        let handle = std::thread::spawn(move || {
            enter_netns(&ns).expect("enter the server's netns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(serve(&iface, table, rx, thread_drops, ready_tx));
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("responder did not start");
        ResponderThread {
            commands,
            drops,
            handle: Some(handle),
        }
    }

    fn send(&self, cmd: Cmd) {
        self.commands.send(cmd).expect("responder thread gone");
    }

    /// Whether a request for `ip` was dropped for `reason` (ARP target at frame bytes 38..42,
    /// NS target at 62..78).
    fn dropped(&self, reason: DropReason, ip: IpAddr) -> bool {
        let (at, octets) = match ip {
            IpAddr::V4(v4) => (38, v4.octets().to_vec()),
            IpAddr::V6(v6) => (62, v6.octets().to_vec()),
        };
        self.drops.lock().unwrap().iter().any(|(why, frame)| {
            *why == reason && frame.get(at..at + octets.len()) == Some(&octets[..])
        })
    }
}

impl ResponderThread {
    /// Every reason a frame was dropped for, with counts.
    fn drop_reasons(&self) -> std::collections::BTreeMap<DropReason, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for (why, _) in self.drops.lock().unwrap().iter() {
            *counts.entry(*why).or_default() += 1;
        }
        counts
    }
}

impl Drop for ResponderThread {
    fn drop(&mut self) {
        let _ = self.commands.send(Cmd::Stop);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The responder loop a speaker task will run: answer, count drops, send gratuitous bursts.
async fn serve(
    iface_name: &str,
    table: AnnounceTable,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Cmd>,
    drops: Arc<DropLog>,
    ready: mpsc::Sender<()>,
) {
    let iface = lookup_iface(iface_name).expect("lookup iface");
    let arp = PacketSocket::open(iface.index, Listen::ArpRequests).expect("arp socket");
    let ndp = PacketSocket::open(iface.index, Listen::NeighborSolicits).expect("ndp socket");
    let mut responder = Responder::new(AnnounceTable::new());
    let set_table = |responder: &mut Responder, table: AnnounceTable| {
        for mac in responder.table().solicited_node_macs(&iface.name) {
            ndp.leave_multicast(mac).expect("leave");
        }
        for mac in table.solicited_node_macs(&iface.name) {
            ndp.join_multicast(mac).expect("join");
        }
        responder.set_table(table);
    };
    set_table(&mut responder, table);
    ready.send(()).expect("ready");

    let (mut arp_buf, mut ndp_buf) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut burst: Option<(tokio::time::Instant, Burst)> = None;
    loop {
        let mut wake = None;
        if let Some((started, schedule)) = &mut burst {
            match schedule.poll(started.elapsed()) {
                Step::Send => {
                    let ips: Vec<IpAddr> = responder.table().ips_on(&iface.name).collect();
                    for ip in ips {
                        let socket = if ip.is_ipv4() { &arp } else { &ndp };
                        for frame in announcement_frames(iface.mac, ip) {
                            socket.send(&frame).await.expect("send gratuitous");
                        }
                    }
                    continue;
                }
                Step::WaitUntil(at) => wake = Some(*started + at),
                Step::Done => burst = None,
            }
        }
        let sleep = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now));
        tokio::select! {
            received = arp.recv(&mut arp_buf) => {
                let len = received.expect("recv arp");
                reply(&responder, &iface, &arp, &arp_buf[..len], &drops).await;
            }
            received = ndp.recv(&mut ndp_buf) => {
                let len = received.expect("recv ndp");
                reply(&responder, &iface, &ndp, &ndp_buf[..len], &drops).await;
            }
            cmd = commands.recv() => match cmd {
                Some(Cmd::SetTable(table)) => set_table(&mut responder, table),
                Some(Cmd::Gratuitous) => {
                    burst = Some((tokio::time::Instant::now(), Burst::new(GratuitousSchedule::default())));
                }
                Some(Cmd::Stop) | None => return,
            },
            () = sleep, if wake.is_some() => {}
        }
    }
}

async fn reply(
    responder: &Responder,
    iface: &ferrolb_speaker::layer2::IfaceInfo,
    socket: &PacketSocket,
    frame: &[u8],
    drops: &DropLog,
) {
    match responder.answer(iface, frame) {
        Ok(answer) => socket.send(&answer).await.expect("send reply"),
        Err(why) => drops.lock().unwrap().push((why, frame.to_vec())),
    }
}

fn owning_vips() -> AnnounceTable {
    let mut table = AnnounceTable::new();
    table.announce(IpAddr::V4(VIP4), Interfaces::All);
    table.announce(IpAddr::V6(vip6()), Interfaces::All);
    table
}

#[test]
fn layer2_responder_against_the_linux_neighbour_code() {
    if !can_run() {
        return;
    }
    let lab = Lab::up();
    let first = ResponderThread::start(&lab.srv, "eth0", owning_vips());
    let second = ResponderThread::start(&lab.srv, "eth1", AnnounceTable::new());
    let mac1 = MAC1.to_string();

    // arping: two requests, two replies from responder 1's MAC.
    let out = lab.in_cli(&[
        "arping",
        "-c",
        "2",
        "-w",
        "5",
        "-I",
        "br0",
        &VIP4.to_string(),
    ]);
    let said = text(&out);
    assert!(out.status.success(), "arping failed:\n{said}");
    assert_eq!(
        said.to_lowercase()
            .matches(&format!("reply from {VIP4} [{mac1}]"))
            .count(),
        2,
        "arping:\n{said}"
    );

    // ndisc6: the NA carries responder 1's MAC, so its checksum and hop limit were accepted.
    let out = lab.in_cli(&[
        "ndisc6",
        "-1",
        "-r",
        "3",
        "-w",
        "1000",
        &vip6().to_string(),
        "br0",
    ]);
    let said = text(&out);
    assert!(out.status.success(), "ndisc6 failed:\n{said}");
    assert!(said.to_lowercase().contains(&mac1), "ndisc6:\n{said}");

    // The kernel's own resolution (ping) ends in a neighbour entry with responder 1's MAC.
    // Nothing answers the ICMP echo itself; only the neighbour entry matters.
    let _ = lab.in_cli(&["ping", "-c", "1", "-W", "1", &VIP4.to_string()]);
    let _ = lab.in_cli(&["ping", "-6", "-c", "1", "-W", "1", &vip6().to_string()]);
    for ip in [VIP4.to_string(), vip6().to_string()] {
        let line = lab.wait_for_neigh(&ip, MAC1, Duration::from_secs(2));
        assert!(
            line.contains(&format!("lladdr {mac1}")),
            "neigh {ip}: {line:?}"
        );
        assert!(
            ["REACHABLE", "STALE", "DELAY", "PROBE"]
                .iter()
                .any(|s| line.contains(s)),
            "neigh {ip}: {line:?}"
        );
    }

    // IPs nobody announces get no answer, and the responder says why.
    let out = lab.in_cli(&[
        "arping",
        "-c",
        "1",
        "-w",
        "2",
        "-I",
        "br0",
        &NOT_OURS4.to_string(),
    ]);
    assert!(
        !out.status.success(),
        "arping {NOT_OURS4} got a reply:\n{}",
        text(&out)
    );
    let out = lab.in_cli(&[
        "ndisc6",
        "-1",
        "-r",
        "1",
        "-w",
        "500",
        &not_ours6().to_string(),
        "br0",
    ]);
    assert!(
        !out.status.success(),
        "ndisc6 {} got a reply:\n{}",
        not_ours6(),
        text(&out)
    );
    assert!(
        first.dropped(DropReason::NotOwner, IpAddr::V4(NOT_OURS4)),
        "ARP for {NOT_OURS4} not seen"
    );
    assert!(
        first.dropped(DropReason::NotOwner, IpAddr::V6(not_ours6())),
        "NS for {} not seen",
        not_ours6()
    );

    // Takeover: responder 1 stops, responder 2 announces; its gratuitous burst must move the
    // client's existing entries to MAC2 without the client asking.
    first.send(Cmd::SetTable(AnnounceTable::new()));
    second.send(Cmd::SetTable(owning_vips()));
    second.send(Cmd::Gratuitous);
    for ip in [VIP4.to_string(), vip6().to_string()] {
        let line = lab.wait_for_neigh(&ip, MAC2, Duration::from_secs(4));
        assert!(
            line.contains(&format!("lladdr {MAC2}")),
            "after takeover, neigh {ip}: {line:?}"
        );
    }
    // The solicited-node group for the v6 VIP is what responder 2 joined.
    assert_eq!(
        owning_vips()
            .solicited_node_macs("eth1")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![Mac::ipv6_multicast(solicited_node(vip6()))]
    );

    // And asking again now gets responder 2's answer.
    let out = lab.in_cli(&[
        "arping",
        "-c",
        "1",
        "-w",
        "3",
        "-I",
        "br0",
        &VIP4.to_string(),
    ]);
    let said = text(&out).to_lowercase();
    assert!(
        said.contains(&format!("[{MAC2}]")),
        "arping after takeover:\n{said}"
    );

    // The kernel BPF filters let only ARP requests and NSs through: the ARP replies, NAs, MLD
    // reports and ICMP echoes on the wire never reached userspace. (Responder 2's gratuitous
    // ARP *request* reaches responder 1 through the bridge, and is dropped as Gratuitous.)
    for (name, responder) in [("first", &first), ("second", &second)] {
        let reasons = responder.drop_reasons();
        assert!(
            !reasons.contains_key(&DropReason::NotRequest)
                && !reasons.contains_key(&DropReason::Malformed),
            "{name} responder saw frames the kernel filter should have dropped: {reasons:?}"
        );
    }
    assert!(first.drop_reasons().contains_key(&DropReason::Gratuitous));

    drop(first);
    drop(second);
    drop(lab);
}
