//! The layer2 announcer: one ARP and one NS [`PacketSocket`] per interface in use, each with a
//! task that answers from the shared [`Responder`], and one task per gratuitous burst. It keeps
//! what it announces, diffs it against what it is asked for ([`diff`]) and applies the changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::layer2::diff::{self, Announced, Change};
use crate::layer2::{
    AnnounceTable, Burst, GratuitousSchedule, IfaceInfo, Interfaces, Listen, PacketSocket,
    Responder, Step, announcement_frames, lookup_iface,
};
use crate::metrics::{DropLabels, Metrics};
use crate::wire::Mac;

/// Receive buffer: more than any ARP or NS frame we answer (the kernel filter truncates).
const FRAME_BUFFER: usize = 2048;

struct IfaceSockets {
    info: IfaceInfo,
    arp: Arc<PacketSocket>,
    ns: Arc<PacketSocket>,
    joined: BTreeSet<Mac>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for IfaceSockets {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The running layer2 announcer.
pub struct Layer2Announcer {
    /// What is announced now: IP → interfaces.
    announced: Announced,
    responder: Arc<RwLock<Responder>>,
    ifaces: BTreeMap<String, IfaceSockets>,
    bursts: BTreeMap<(IpAddr, String), JoinHandle<()>>,
    metrics: Metrics,
    schedule: GratuitousSchedule,
}

impl crate::announcer::Announcer for Layer2Announcer {
    type Desired = Announced;
    type Change = Change;

    fn mode(&self) -> &'static str {
        "layer2"
    }

    fn converge(&mut self, desired: &Announced) -> Vec<Change> {
        let changes = diff::diff(&self.announced, desired);
        if !changes.is_empty() {
            diff::apply(&mut self.announced, &changes);
            let announced = self.announced.clone();
            self.apply(&announced, &changes);
        }
        changes
    }

    fn reassert(&mut self) {
        let changes = diff::refresh(&self.announced);
        if !changes.is_empty() {
            info!(
                ips = changes.len(),
                "announcing every owned IP again (gratuitous burst)"
            );
            self.metrics.reasserts.inc();
            let announced = self.announced.clone();
            self.apply(&announced, &changes);
        }
    }

    fn withdraw_all(&mut self) {
        self.announced.clear();
        self.stop();
    }
}

impl Layer2Announcer {
    pub fn new(metrics: Metrics) -> Layer2Announcer {
        Layer2Announcer {
            announced: Announced::new(),
            responder: Arc::new(RwLock::new(Responder::default())),
            ifaces: BTreeMap::new(),
            bursts: BTreeMap::new(),
            metrics,
            schedule: GratuitousSchedule::default(),
        }
    }

    /// What is announced now.
    pub fn announced(&self) -> &Announced {
        &self.announced
    }

    /// Makes the responder serve `announced` (the state after `changes`), opening and closing
    /// sockets as needed, and sends the gratuitous bursts the changes ask for.
    fn apply(&mut self, announced: &Announced, changes: &[Change]) {
        let wanted: BTreeSet<&String> = announced.values().flatten().collect();
        let stale: Vec<String> = self
            .ifaces
            .keys()
            .filter(|name| !wanted.contains(name))
            .cloned()
            .collect();
        for name in stale {
            info!(iface = %name, "closing layer2 sockets");
            self.ifaces.remove(&name);
        }
        for name in wanted {
            if !self.ifaces.contains_key(name) {
                match self.open(name) {
                    Ok(sockets) => {
                        info!(iface = %name, mac = %sockets.info.mac, "layer2 sockets open");
                        self.ifaces.insert(name.clone(), sockets);
                    }
                    Err(err) => warn!(iface = %name, error = %err, "cannot open layer2 sockets"),
                }
            }
        }

        let mut table = AnnounceTable::new();
        for (ip, on) in announced {
            table.announce(*ip, Interfaces::Only(on.clone()));
        }
        // Before the responder answers for a new IP, so that its first answers are counted.
        self.metrics.layer2_ip.set_announced(
            announced
                .iter()
                .filter(|(_, on)| !on.is_empty())
                .map(|(ip, _)| *ip),
        );
        for (name, sockets) in &mut self.ifaces {
            let macs = table.solicited_node_macs(name);
            for mac in macs.difference(&sockets.joined) {
                if let Err(err) = sockets.ns.join_multicast(*mac) {
                    warn!(iface = %name, %mac, error = %err, "cannot join solicited-node group");
                }
            }
            for mac in sockets.joined.difference(&macs) {
                if let Err(err) = sockets.ns.leave_multicast(*mac) {
                    debug!(iface = %name, %mac, error = %err, "cannot leave solicited-node group");
                }
            }
            sockets.joined = macs;
        }
        match self.responder.write() {
            Ok(mut responder) => responder.set_table(table),
            Err(poisoned) => poisoned.into_inner().set_table(table),
        }
        self.metrics
            .ips_owned
            .set(i64::try_from(announced.len()).unwrap_or(i64::MAX));

        self.bursts.retain(|_, task| !task.is_finished());
        for change in changes {
            match change {
                Change::Withdraw { ip } => {
                    let keys: Vec<(IpAddr, String)> = self
                        .bursts
                        .keys()
                        .filter(|(burst_ip, _)| burst_ip == ip)
                        .cloned()
                        .collect();
                    for key in keys {
                        if let Some(task) = self.bursts.remove(&key) {
                            task.abort();
                        }
                    }
                }
                Change::Announce {
                    ip, gratuitous_on, ..
                } => {
                    for name in gratuitous_on {
                        self.start_burst(*ip, name);
                    }
                }
            }
        }
    }

    /// Stops answering and closes every socket.
    fn stop(&mut self) {
        for (_, task) in std::mem::take(&mut self.bursts) {
            task.abort();
        }
        self.ifaces.clear();
        match self.responder.write() {
            Ok(mut responder) => responder.set_table(AnnounceTable::new()),
            Err(poisoned) => poisoned.into_inner().set_table(AnnounceTable::new()),
        }
        self.metrics.ips_owned.set(0);
        self.metrics.layer2_ip.set_announced([]);
    }

    fn open(&self, name: &str) -> std::io::Result<IfaceSockets> {
        let info = lookup_iface(name)?;
        let arp = Arc::new(PacketSocket::open(info.index, Listen::ArpRequests)?);
        let ns = Arc::new(PacketSocket::open(info.index, Listen::NeighborSolicits)?);
        let tasks = [&arp, &ns]
            .into_iter()
            .map(|socket| {
                let span = info_span!("responder", iface = %info.name, listen = ?socket.listen());
                tokio::spawn(
                    answer_loop(
                        info.clone(),
                        Arc::clone(socket),
                        Arc::clone(&self.responder),
                        self.metrics.clone(),
                    )
                    .instrument(span),
                )
            })
            .collect();
        Ok(IfaceSockets {
            info,
            arp,
            ns,
            joined: BTreeSet::new(),
            tasks,
        })
    }

    fn start_burst(&mut self, ip: IpAddr, iface: &str) {
        let Some(sockets) = self.ifaces.get(iface) else {
            return;
        };
        let socket = match ip {
            IpAddr::V4(_) => Arc::clone(&sockets.arp),
            IpAddr::V6(_) => Arc::clone(&sockets.ns),
        };
        let mac = sockets.info.mac;
        let schedule = self.schedule.clone();
        let metrics = self.metrics.clone();
        let name = iface.to_string();
        let span = info_span!("gratuitous", %ip, iface = %iface);
        let task = tokio::spawn(
            async move {
            let start = Instant::now();
            let mut burst = Burst::new(schedule);
            loop {
                match burst.poll(start.elapsed()) {
                    Step::Done => break,
                    Step::WaitUntil(offset) => tokio::time::sleep_until(start + offset).await,
                    Step::Send => {
                        for frame in announcement_frames(mac, ip) {
                            match socket.send(&frame).await {
                                Ok(()) => {
                                    metrics
                                        .gratuitous_sent
                                        .get_or_create(&Metrics::iface(&name))
                                        .inc();
                                    metrics.layer2_ip.gratuitous_sent(ip);
                                }
                                Err(err) => {
                                    warn!(%ip, iface = %name, error = %err, "gratuitous send failed");
                                }
                            }
                        }
                    }
                }
            }
            debug!(%ip, iface = %name, "gratuitous burst done");
        }
            .instrument(span),
        );
        if let Some(previous) = self.bursts.insert((ip, iface.to_string()), task) {
            previous.abort();
        }
    }
}

impl Drop for Layer2Announcer {
    fn drop(&mut self) {
        for task in self.bursts.values() {
            task.abort();
        }
    }
}

async fn answer_loop(
    iface: IfaceInfo,
    socket: Arc<PacketSocket>,
    responder: Arc<RwLock<Responder>>,
    metrics: Metrics,
) {
    let labels = Metrics::iface(&iface.name);
    let mut buf = vec![0u8; FRAME_BUFFER];
    loop {
        let len = match socket.recv(&mut buf).await {
            Ok(len) => len,
            Err(err) => {
                warn!(iface = %iface.name, error = %err, "layer2 receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        metrics.requests_received.get_or_create(&labels).inc();
        let Some(frame) = buf.get(..len) else {
            continue;
        };
        let response = match responder.read() {
            Ok(responder) => responder.respond(&iface, frame),
            Err(poisoned) => poisoned.into_inner().respond(&iface, frame),
        };
        if let Some(ip) = response.announced_target {
            metrics.layer2_ip.request_received(ip);
        }
        match response.reply {
            Ok(reply) => match socket.send(&reply).await {
                Ok(()) => {
                    metrics.responses_sent.get_or_create(&labels).inc();
                    if let Some(ip) = response.announced_target {
                        metrics.layer2_ip.response_sent(ip);
                    }
                }
                Err(err) => warn!(iface = %iface.name, error = %err, "layer2 reply failed"),
            },
            Err(reason) => {
                metrics
                    .dropped
                    .get_or_create(&DropLabels {
                        interface: iface.name.clone(),
                        reason: reason.as_str().to_string(),
                    })
                    .inc();
            }
        }
    }
}
