//! The BGP announcer: one [`session`] task per BGPPeer that applies to this node, each fed the
//! routes it should carry through its `watch` channel.
//!
//! On every [`converge`](crate::announcer::Announcer::converge) the announcer
//!
//! 1. computes the sessions this node should have: every BGPPeer of the configuration whose
//!    `nodeSelectors` admit this node (none = every node) and that it can reach (an address
//!    target; unnumbered peers are skipped with a warning), with the local address of the
//!    session's family as next hop;
//! 2. starts the missing ones and cancels the ones no longer wanted, or whose parameters
//!    changed (the task sends a Cease, Administrative Shutdown, and ends);
//! 3. computes each session's [`RouteSet`] ([`routes_for`]) and sends it on its watch (only when
//!    it changed). A `watch` send never waits, so the decision loop never blocks here.
//!
//! Families, kept simple: an IPv4 peer carries the IPv4 routes, an IPv6 peer the IPv6 ones;
//! with `dualStackAddressFamily` a session carries both, each with the node's address of the
//! route's family as next hop. Next hop = the peer's `sourceAddress` if it has that family,
//! else this host's address in the peer's subnet, else `HOST_IP`, else the first global address
//! of the family on an up interface. The connection is bound to `sourceAddress` only when it
//! is configured and this host has it (MetalLB: "used only if present on the node"; otherwise
//! the kernel picks the source, which on a directly connected peer is the address in its
//! subnet, i.e. the next hop).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ferrolb_crds::config::{
    BfdProfile, BgpAdvertisement, Community, Config, Peer, PeerAsn, PeerPassword, PeerTarget,
};
use ipnet::IpNet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::Announcement;
use super::codec::{Family, RouteAttributes};
use super::fsm::{SessionConfig, State};
use super::report::{self, Reporting};
use super::session::{self, Md5Key, PeerConfig, Route, RouteSet, SessionStatus};
use crate::bfd;
use crate::layer2::interfaces::HostIface;
use crate::view::ServiceKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the announcer needs to know besides the plan, refreshed by the decision loop before
/// every `converge`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The BGPPeers, by name.
    pub peers: BTreeMap<String, Peer>,
    pub advertisements: Vec<BgpAdvertisement>,
    /// This Node's labels (for the peers' `nodeSelectors`).
    pub node_labels: BTreeMap<String, String>,
    /// This host's interfaces (for the session's local address).
    pub host: Vec<HostIface>,
    /// The BFDProfiles, by name (a BGPPeer's `bfdProfile`).
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
}

impl Context {
    pub fn new(config: &Config, node_labels: BTreeMap<String, String>, host: &[HostIface]) -> Self {
        Self {
            peers: config.peers.clone(),
            advertisements: config.bgp_advertisements.clone(),
            node_labels,
            host: host.to_vec(),
            bfd_profiles: config.bfd_profiles.clone(),
        }
    }
}

/// A change the announcer made, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    SessionStarted { peer: String },
    SessionStopped { peer: String },
    Routes { peer: String, prefixes: usize },
}

/// One running session.
struct Running {
    config: PeerConfig,
    /// The BFD session bound to it (its `bfdProfile`), if any.
    bfd: Option<bfd::PeerSettings>,
    routes: watch::Sender<RouteSet>,
    status: watch::Receiver<SessionStatus>,
    cancel: CancellationToken,
    /// Set before `cancel` when the speaker stops (see [`Announcer::shut_down`]).
    graceful_stop: Arc<AtomicBool>,
    last_state: State,
}

/// The BGP announcer (see the module documentation).
pub struct Announcer {
    node: String,
    host_ip: Option<IpAddr>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    context: Context,
    sessions: BTreeMap<String, Running>,
    /// Peers already warned about (password from a Secret, unnumbered), not to repeat it
    /// every pass.
    warned: BTreeSet<String>,
    /// Where each session is reported (status objects, Events, metrics); none in unit tests.
    reporting: Option<Reporting>,
    /// Sessions started so far: each one's reports carry its number.
    generation: u64,
    /// The BFD sessions, created with the first BGPPeer that has a `bfdProfile`.
    bfd: Option<bfd::Sessions>,
}

impl Drop for Announcer {
    /// Sessions not stopped yet end with a Cease (their tokens are their own).
    fn drop(&mut self) {
        for running in self.sessions.values() {
            running.cancel.cancel();
        }
    }
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("node", &self.node)
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for Announcer {
    /// No sessions until a context is given; tasks on a tracker of their own.
    fn default() -> Self {
        Self::new(
            String::new(),
            None,
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }
}

impl Announcer {
    /// Sessions run on `tracker`; they stop through [`Self::shut_down`], `withdraw_all`, a
    /// changed configuration or dropping the announcer. `cancel` stops the BFD receive tasks.
    pub fn new(
        node: String,
        host_ip: Option<IpAddr>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            node,
            host_ip,
            tracker,
            cancel,
            context: Context::default(),
            sessions: BTreeMap::new(),
            warned: BTreeSet::new(),
            reporting: None,
            generation: 0,
            bfd: None,
        }
    }

    /// Reports every session from now on: its `BGPSessionState`, Events and metrics.
    pub fn with_reporting(mut self, reporting: Reporting) -> Self {
        self.reporting = Some(reporting);
        self
    }

    /// Service → the BGPPeers its IPs are advertised to from this node under `desired`
    /// (what the `ServiceBGPStatus` objects list): the running sessions that carry at least
    /// one of its prefixes.
    pub fn advertised_to(
        &self,
        desired: &BTreeMap<IpAddr, Announcement>,
    ) -> BTreeMap<ServiceKey, BTreeSet<String>> {
        let mut out: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
        for (name, running) in &self.sessions {
            let Some(peer) = self.context.peers.get(name) else {
                continue;
            };
            let routes = running.routes.borrow();
            for (ip, announcement) in desired {
                let carried = routes.routes().keys().any(|prefix| prefix.contains(ip));
                if !carried || !self.advertises(peer, announcement) {
                    continue;
                }
                for service in &announcement.services {
                    out.entry(service.clone()).or_default().insert(name.clone());
                }
            }
        }
        out
    }

    /// Whether one of the announcement's BGPAdvertisements is for `peer`.
    fn advertises(&self, peer: &Peer, announcement: &Announcement) -> bool {
        self.context
            .advertisements
            .iter()
            .filter(|ad| announcement.advertisements.contains(&ad.name))
            .any(|ad| ad.peers.is_empty() || ad.peers.contains(&peer.name))
    }

    /// The configuration, node labels and interfaces the next `converge` uses.
    pub fn set_context(&mut self, context: Context) {
        self.context = context;
    }

    /// The sessions' statuses, by peer name.
    pub fn statuses(&self) -> BTreeMap<String, SessionStatus> {
        self.sessions
            .iter()
            .map(|(name, s)| (name.clone(), s.status.borrow().clone()))
            .collect()
    }

    /// Whether one of this host's interfaces has `ip`.
    fn host_has(&self, ip: &IpAddr) -> bool {
        self.context
            .host
            .iter()
            .flat_map(|i| i.addresses.iter())
            .any(|a| a.ip == *ip)
    }

    /// The local address of family `v4` for a session to `peer` (see the module documentation).
    fn local_address(&self, peer: &Peer, v4: bool) -> Option<IpAddr> {
        let family = |ip: &IpAddr| ip.is_ipv4() == v4;
        if let Some(source) = peer
            .source_address
            .filter(family)
            .filter(|ip| self.host_has(ip))
        {
            return Some(source);
        }
        let usable: Vec<&HostIface> = self.context.host.iter().filter(|i| i.usable()).collect();
        if let PeerTarget::Address(target) = peer.target
            && let Some(addr) = usable
                .iter()
                .flat_map(|i| i.addresses.iter())
                .find(|a| family(&a.ip) && a.same_subnet(target))
        {
            return Some(addr.ip);
        }
        if let Some(host_ip) = self.host_ip.filter(family) {
            return Some(host_ip);
        }
        usable
            .iter()
            .flat_map(|i| i.addresses.iter())
            .map(|a| a.ip)
            .find(|ip| family(ip) && is_global(ip))
    }

    /// The session this node should have with `peer`, or why not (`None` after a warning).
    fn peer_config(&mut self, peer: &Peer) -> Option<PeerConfig> {
        let PeerTarget::Address(address) = peer.target else {
            if self.warned.insert(format!("{}/unnumbered", peer.name)) {
                warn!(peer = %peer.name, "unnumbered BGP peers (interface) are not supported: skipped");
            }
            return None;
        };
        let v4_local = self.local_address(peer, true);
        let mut families = BTreeSet::from([family_of(&address)]);
        if peer.dual_stack_address_family {
            families.extend([Family::Ipv4Unicast, Family::Ipv6Unicast]);
        }
        let router_id = peer
            .router_id
            .or(match v4_local {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            })
            .or(match self.host_ip {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => None,
            })
            .unwrap_or_else(|| router_id_from_name(&self.node));
        // A session the user asked to protect with TCP-MD5 never starts without the key: the
        // router would refuse it anyway, and an unkeyed attempt is what the key is there to stop.
        let md5_key = match &peer.password {
            None => None,
            Some(PeerPassword::Plain(password))
            | Some(PeerPassword::Secret {
                password: Some(password),
                ..
            }) => match Md5Key::new(password.as_bytes()) {
                Ok(key) => Some(key),
                Err(err) => {
                    if self.warned.insert(format!("{}/md5", peer.name)) {
                        warn!(peer = %peer.name, error = %err, "unusable TCP-MD5 password: session not started");
                    }
                    return None;
                }
            },
            Some(PeerPassword::Secret { name, .. }) => {
                // Only without Secrets to look in (a valid configuration in the speaker has the
                // password): not started.
                if self.warned.insert(format!("{}/secret", peer.name)) {
                    warn!(peer = %peer.name, secret = %name, "the passwordSecret's password is not known: session not started");
                }
                return None;
            }
        };
        // Validation refuses a localASN other than myASN: the OPEN carries myASN.
        let mut session = SessionConfig::from_peer(peer, router_id, families);
        session.local_asn = peer.my_asn;
        // MetalLB: the source address is used only if this node has it (a BGPPeer shared by
        // several nodes names one node's address).
        let source = peer.source_address.filter(|ip| {
            let present = self.host_has(ip);
            if !present && self.warned.insert(format!("{}/source", peer.name)) {
                info!(peer = %peer.name, source = %ip, "sourceAddress is not on this node: the kernel picks the source");
            }
            present
        });
        Some(PeerConfig {
            session,
            address: SocketAddr::new(address, peer.peer_port),
            source,
            ttl: peer.ebgp_multihop.then_some(255),
            md5_key,
        })
    }

    /// The routes for `peer` under `desired`.
    fn routes(
        &self,
        peer: &Peer,
        config: &PeerConfig,
        desired: &BTreeMap<IpAddr, Announcement>,
    ) -> RouteSet {
        let next_hops = NextHops {
            v4: self.local_address(peer, true),
            v6: self.local_address(peer, false),
        };
        routes_for(
            peer,
            &config.session.families,
            next_hops,
            &self.context.advertisements,
            desired,
        )
    }

    /// The BFD session a peer's `bfdProfile` asks for: to the peer's address, from its
    /// `sourceAddress` if the session binds it, multihop with `ebgpMultiHop` (RFC 5883) and
    /// single hop otherwise (RFC 5881).
    fn bfd_settings(&mut self, peer: &Peer, config: &PeerConfig) -> Option<bfd::PeerSettings> {
        let name = peer.bfd_profile.as_ref()?;
        let Some(profile) = self.context.bfd_profiles.get(name) else {
            // The configuration refuses a dangling bfdProfile; a profile removed since is
            // reported by the validation that refused it.
            if self.warned.insert(format!("{}/bfd/{name}", peer.name)) {
                warn!(peer = %peer.name, profile = %name, "BFDProfile not found: BGP without BFD");
            }
            return None;
        };
        Some(bfd::PeerSettings {
            name: peer.name.clone(),
            peer: config.address.ip(),
            local: config.source,
            multihop: peer.ebgp_multihop,
            minimum_ttl: profile.minimum_ttl,
            config: bfd::SessionConfig::from_profile(profile),
        })
    }

    /// Starts a BFD session (and, the first time, the BFD sockets); `None` when it cannot be
    /// started, and then the BGP session runs without it.
    fn start_bfd(
        &mut self,
        settings: bfd::PeerSettings,
        cancel: &CancellationToken,
        silent_stop: &Arc<AtomicBool>,
    ) -> Option<watch::Receiver<bfd::Status>> {
        let metrics = self.reporting.as_ref().map(|r| r.metrics.clone());
        let (tracker, parent) = (self.tracker.clone(), self.cancel.clone());
        let sessions = self
            .bfd
            .get_or_insert_with(|| bfd::Sessions::new(tracker, parent, metrics));
        let peer = settings.name.clone();
        match sessions.start(settings, cancel.clone(), silent_stop.clone()) {
            Ok(status) => Some(status),
            Err(error) => {
                warn!(%peer, %error, "BFD session not started: BGP without BFD");
                None
            }
        }
    }

    /// The speaker stops (SIGTERM): every session ends, and those with graceful restart
    /// negotiated end without a NOTIFICATION, so the routers keep our routes until the
    /// restarted speaker sends them again (RFC 4724). The others get a Cease, as in
    /// [`withdraw_all`](crate::announcer::Announcer::withdraw_all).
    pub fn shut_down(&mut self) {
        for running in self.sessions.values() {
            running.graceful_stop.store(true, Ordering::SeqCst);
        }
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
    }

    fn stop(&mut self, name: &str) -> Option<Change> {
        let running = self.sessions.remove(name)?;
        running.cancel.cancel();
        info!(peer = %name, address = %running.config.address, mode = "bgp", "BGP session stopped (Cease)");
        Some(Change::SessionStopped {
            peer: name.to_string(),
        })
    }

    /// Logs the sessions whose state changed to or from Established.
    fn log_session_states(&mut self) {
        for (name, running) in &mut self.sessions {
            if !running.status.has_changed().unwrap_or(false) {
                continue;
            }
            let status = running.status.borrow_and_update().clone();
            let was_up = running.last_state == State::Established;
            let is_up = status.state == State::Established;
            if is_up && !was_up {
                info!(peer = %name, address = %status.peer, prefixes = status.prefixes_sent, mode = "bgp", "BGP session established");
            } else if was_up && !is_up {
                warn!(peer = %name, address = %status.peer, error = ?status.last_error, mode = "bgp", "BGP session down");
            }
            running.last_state = status.state;
        }
    }
}

/// This node's next hops for one session, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextHops {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

/// What one session carries: for each IP of `desired` and each of its BGPAdvertisements that
/// names `peer` in `peers` (or names none), the IP's prefix at the advertisement's aggregation
/// length, with the node's next hop of the prefix's family, the advertisement's communities and
/// large communities, and its LOCAL_PREF on iBGP sessions only. Prefixes of a family the
/// session does not carry, or without a next hop of their family, are left out. When several
/// advertisements give the same prefix, their communities add up and the highest LOCAL_PREF
/// wins.
pub fn routes_for(
    peer: &Peer,
    families: &BTreeSet<Family>,
    next_hops: NextHops,
    advertisements: &[BgpAdvertisement],
    desired: &BTreeMap<IpAddr, Announcement>,
) -> RouteSet {
    let ibgp = match peer.peer_asn {
        PeerAsn::Fixed(asn) => asn == peer.my_asn,
        PeerAsn::Internal => true,
        PeerAsn::External => false,
    };
    let mut routes: BTreeMap<IpNet, Route> = BTreeMap::new();
    for (ip, announcement) in desired {
        if !families.contains(&family_of(ip)) {
            continue;
        }
        let Some(next_hop) = (if ip.is_ipv4() {
            next_hops.v4
        } else {
            next_hops.v6
        }) else {
            continue;
        };
        for ad in advertisements
            .iter()
            .filter(|ad| announcement.advertisements.contains(&ad.name))
            .filter(|ad| ad.peers.is_empty() || ad.peers.contains(&peer.name))
        {
            let length = if ip.is_ipv4() {
                ad.aggregation_length.min(32)
            } else {
                ad.aggregation_length_v6.min(128)
            };
            let Ok(prefix) = IpNet::new(*ip, length) else {
                continue;
            };
            let route = routes.entry(prefix.trunc()).or_insert_with(|| Route {
                next_hop,
                attributes: RouteAttributes::default(),
            });
            let attributes = &mut route.attributes;
            for community in &ad.communities {
                match *community {
                    Community::Legacy(a, b) => {
                        let value = (u32::from(a) << 16) | u32::from(b);
                        if !attributes.communities.contains(&value) {
                            attributes.communities.push(value);
                        }
                    }
                    Community::Large(a, b, c) => {
                        if !attributes.large_communities.contains(&(a, b, c)) {
                            attributes.large_communities.push((a, b, c));
                        }
                    }
                }
            }
            if ibgp && let Some(pref) = ad.local_pref {
                attributes.local_pref = Some(attributes.local_pref.map_or(pref, |p| p.max(pref)));
            }
        }
    }
    let mut set = RouteSet::new();
    for (prefix, mut route) in routes {
        route.attributes.communities.sort_unstable();
        route.attributes.large_communities.sort_unstable();
        set.insert(prefix, route);
    }
    set
}

fn family_of(ip: &IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }
}

/// Not loopback, not link-local, not unspecified.
fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// A stable router ID for a node without any IPv4 address (FNV-1a of its name).
fn router_id_from_name(node: &str) -> Ipv4Addr {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in node.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    Ipv4Addr::from(hash.max(1))
}

impl crate::announcer::Announcer for Announcer {
    type Desired = BTreeMap<IpAddr, Announcement>;
    type Change = Change;

    fn mode(&self) -> &'static str {
        "bgp"
    }

    fn converge(&mut self, desired: &Self::Desired) -> Vec<Change> {
        let mut changes = Vec::new();
        self.log_session_states();
        let peers: Vec<Peer> = self
            .context
            .peers
            .values()
            .filter(|peer| {
                peer.node_selectors.is_empty()
                    || peer
                        .node_selectors
                        .iter()
                        .any(|s| s.matches(&self.context.node_labels))
            })
            .cloned()
            .collect();
        let mut wanted: BTreeMap<String, (Peer, PeerConfig, Option<bfd::PeerSettings>)> =
            BTreeMap::new();
        for peer in peers {
            if let Some(config) = self.peer_config(&peer) {
                let bfd = self.bfd_settings(&peer, &config);
                wanted.insert(peer.name.clone(), (peer, config, bfd));
            }
        }
        let gone: Vec<String> = self
            .sessions
            .iter()
            .filter(|(name, running)| {
                wanted
                    .get(*name)
                    .is_none_or(|(_, c, b)| *c != running.config || *b != running.bfd)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            changes.extend(self.stop(&name));
        }
        for (name, (peer, config, bfd_settings)) in wanted {
            let routes = self.routes(&peer, &config, desired);
            if let Some(running) = self.sessions.get(&name) {
                if *running.routes.borrow() != routes {
                    let prefixes = routes.len();
                    running.routes.send_replace(routes);
                    info!(peer = %name, prefixes, mode = "bgp", "routes changed");
                    changes.push(Change::Routes {
                        peer: name,
                        prefixes,
                    });
                }
                continue;
            }
            let prefixes = routes.len();
            let (routes_tx, routes_rx) = watch::channel(routes);
            let (status_tx, status_rx) = watch::channel(SessionStatus::new(config.address));
            // Not a child of the speaker's token: SIGTERM cancels that at once, and a session
            // must end through `stop` or `shut_down`, which says whether it ends gracefully
            // (graceful restart) or with a Cease. Dropping the announcer stops them all.
            let cancel = CancellationToken::new();
            info!(
                peer = %name, address = %config.address, router_id = %config.session.router_id,
                families = ?config.session.families, md5 = config.md5_key.is_some(), prefixes,
                mode = "bgp", "starting BGP session"
            );
            self.generation += 1;
            if let Some(reporting) = &self.reporting {
                self.tracker.spawn(report::run(
                    name.clone(),
                    self.generation,
                    status_rx.clone(),
                    reporting.clone(),
                ));
            }
            let graceful_stop = Arc::new(AtomicBool::new(false));
            let bfd_status = bfd_settings
                .clone()
                .and_then(|settings| self.start_bfd(settings, &cancel, &graceful_stop));
            self.tracker.spawn(session::run_with_bfd(
                config.clone(),
                routes_rx,
                bfd_status,
                status_tx,
                session::Stop {
                    cancel: cancel.clone(),
                    graceful: graceful_stop.clone(),
                },
            ));
            self.sessions.insert(
                name.clone(),
                Running {
                    config,
                    bfd: bfd_settings,
                    routes: routes_tx,
                    status: status_rx,
                    cancel,
                    graceful_stop,
                    last_state: State::Idle,
                },
            );
            changes.push(Change::SessionStarted { peer: name });
        }
        changes
    }

    /// Nothing to do: BGP routes are state held by the peer for as long as the session lives,
    /// not announcements that a cache forgets or another node overrides. A node that was cut
    /// off either kept its sessions (the routes are still there) or lost them, and then the
    /// session sends the whole table again when it comes back up.
    fn reassert(&mut self) {}

    fn withdraw_all(&mut self) {
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(name: &str, address: &str, my_asn: u32, peer_asn: u32) -> Peer {
        Peer {
            name: name.into(),
            my_asn,
            peer_asn: PeerAsn::Fixed(peer_asn),
            local_asn: None,
            target: PeerTarget::Address(address.parse().unwrap()),
            source_address: None,
            peer_port: 179,
            hold_time: Duration::from_secs(90),
            keepalive_time: Duration::from_secs(30),
            connect_time: None,
            router_id: None,
            node_selectors: Vec::new(),
            password: None,
            bfd_profile: None,
            ebgp_multihop: false,
            enable_graceful_restart: false,
            dual_stack_address_family: false,
        }
    }

    fn ad(name: &str, peers: &[&str], v4_len: u8, communities: Vec<Community>) -> BgpAdvertisement {
        BgpAdvertisement {
            name: name.into(),
            pools: vec!["p".into()],
            aggregation_length: v4_len,
            aggregation_length_v6: 128,
            local_pref: Some(200),
            communities,
            node_selectors: Vec::new(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
            service_selectors: Vec::new(),
        }
    }

    fn desired(entries: &[(&str, &[&str])]) -> BTreeMap<IpAddr, Announcement> {
        entries
            .iter()
            .map(|(ip, ads)| {
                (
                    ip.parse().unwrap(),
                    Announcement {
                        services: BTreeSet::new(),
                        advertisements: ads.iter().map(|a| a.to_string()).collect(),
                    },
                )
            })
            .collect()
    }

    const HOPS: NextHops = NextHops {
        v4: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11))),
        v6: None,
    };

    #[test]
    fn prefixes_communities_and_peers() {
        let ads = [
            ad("all", &[], 32, vec![Community::Legacy(64513, 100)]),
            ad("agg", &["r2"], 24, vec![Community::Large(1, 2, 3)]),
        ];
        let want = desired(&[
            ("203.0.113.130", &["all"]),
            ("203.0.113.131", &["all", "agg"]),
            ("2001:db8:ee::1", &["all"]),
        ]);
        let v4 = BTreeSet::from([Family::Ipv4Unicast]);
        let r1 = routes_for(
            &peer("r1", "192.0.2.1", 64513, 64512),
            &v4,
            HOPS,
            &ads,
            &want,
        );
        let prefixes: Vec<String> = r1.routes().keys().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["203.0.113.130/32", "203.0.113.131/32"]);
        let route = &r1.routes()[&"203.0.113.130/32".parse::<IpNet>().unwrap()];
        assert_eq!(route.next_hop, HOPS.v4.unwrap());
        assert_eq!(route.attributes.communities, [(64513 << 16) | 100]);
        assert_eq!(route.attributes.local_pref, None, "eBGP: no LOCAL_PREF");

        let r2 = routes_for(
            &peer("r2", "192.0.2.1", 64513, 64512),
            &v4,
            HOPS,
            &ads,
            &want,
        );
        let agg = &r2.routes()[&"203.0.113.0/24".parse::<IpNet>().unwrap()];
        assert_eq!(agg.attributes.large_communities, [(1, 2, 3)]);
        assert_eq!(r2.len(), 3);
    }

    #[test]
    fn local_pref_on_ibgp_only_and_families() {
        let ads = [ad("all", &[], 32, Vec::new())];
        let want = desired(&[("203.0.113.130", &["all"]), ("2001:db8:ee::1", &["all"])]);
        let both = BTreeSet::from([Family::Ipv4Unicast, Family::Ipv6Unicast]);
        let hops = NextHops {
            v6: Some("2001:db8:2::11".parse().unwrap()),
            ..HOPS
        };
        let ibgp = routes_for(
            &peer("r", "192.0.2.1", 64512, 64512),
            &both,
            hops,
            &ads,
            &want,
        );
        assert_eq!(ibgp.len(), 2);
        for route in ibgp.routes().values() {
            assert_eq!(route.attributes.local_pref, Some(200));
        }
        let v6 = routes_for(
            &peer("r", "2001:db8:2::1", 64512, 64512),
            &BTreeSet::from([Family::Ipv6Unicast]),
            hops,
            &ads,
            &want,
        );
        assert_eq!(v6.len(), 1);
        assert_eq!(
            v6.routes().values().next().unwrap().next_hop,
            hops.v6.unwrap()
        );
        // No next hop of the family: nothing.
        let none = routes_for(
            &peer("r", "2001:db8:2::1", 64512, 64512),
            &BTreeSet::from([Family::Ipv6Unicast]),
            HOPS,
            &ads,
            &want,
        );
        assert!(none.is_empty());
    }

    #[test]
    fn source_address_only_when_this_node_has_it() {
        use crate::layer2::interfaces::tests::iface;
        let mut announcer = Announcer::default();
        let mut p = peer("r", "192.0.2.1", 64513, 64512);
        p.source_address = Some("192.0.2.12".parse().unwrap());
        announcer.set_context(Context {
            host: vec![iface("eth0", &[("192.0.2.11", 24)])],
            ..Context::default()
        });
        let config = announcer.peer_config(&p).unwrap();
        assert_eq!(config.source, None, "another node's address: not bound");
        assert_eq!(
            announcer.local_address(&p, true),
            Some("192.0.2.11".parse().unwrap()),
            "next hop: this host's address in the peer's subnet"
        );
        announcer.set_context(Context {
            host: vec![iface("eth0", &[("192.0.2.11", 24), ("192.0.2.12", 32)])],
            ..Context::default()
        });
        let config = announcer.peer_config(&p).unwrap();
        assert_eq!(config.source, p.source_address);
        assert_eq!(announcer.local_address(&p, true), p.source_address);
    }

    #[tokio::test]
    async fn sessions_follow_the_configuration() {
        use crate::announcer::Announcer as _;
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut announcer = Announcer::new(
            "node1".into(),
            Some("127.0.0.1".parse().unwrap()),
            tracker.clone(),
            cancel.clone(),
        );
        let mut selected = peer("sel", "127.0.0.1", 64513, 64512);
        selected.node_selectors = vec![
            ferrolb_crds::config::Selector::from_label_selector(
                &serde_json::from_str(r#"{"matchLabels":{"zone":"a"}}"#).unwrap(),
                true,
            )
            .unwrap(),
        ];
        selected.peer_port = 1;
        let mut all = peer("all", "127.0.0.1", 64513, 64512);
        all.peer_port = 1;
        let context = |peers: Vec<Peer>, zone: &str| Context {
            peers: peers.into_iter().map(|p| (p.name.clone(), p)).collect(),
            advertisements: vec![ad("ad", &[], 32, Vec::new())],
            node_labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            host: Vec::new(),
            bfd_profiles: BTreeMap::new(),
        };
        let want = desired(&[("203.0.113.130", &["ad"])]);
        announcer.set_context(context(vec![selected.clone(), all.clone()], "b"));
        let changes = announcer.converge(&want);
        assert_eq!(changes, [Change::SessionStarted { peer: "all".into() }]);
        assert!(announcer.converge(&want).is_empty(), "nothing changed");
        announcer.set_context(context(vec![selected, all], "a"));
        assert_eq!(
            announcer.converge(&want),
            [Change::SessionStarted { peer: "sel".into() }]
        );
        assert_eq!(
            announcer.converge(&BTreeMap::new()),
            [
                Change::Routes {
                    peer: "all".into(),
                    prefixes: 0
                },
                Change::Routes {
                    peer: "sel".into(),
                    prefixes: 0
                }
            ]
        );
        announcer.set_context(context(Vec::new(), "a"));
        assert_eq!(announcer.converge(&want).len(), 2, "both stopped");
        assert!(announcer.sessions.is_empty());
        announcer.withdraw_all();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the stopped sessions end");
    }
}
