//! The speaker daemon: starts every task in one place, then runs the decision loop.
//!
//! ```text
//!   watches (10 kinds) ──wake──┐        membership ──live set, rejoins──┐
//!   rtnetlink (links, addrs) ──┤        stall watchdog ──stalls─────────┤
//!   5 s tick ──────────────────┴──► decision loop ◄─────────────────────┘
//!                                     │ engine::decide (pure)
//!                                     ├──► layer2 announcer (sockets, bursts)
//!                                     ├──► bgp announcer
//!                                     └──► status task ──(timeouts)──► API server
//! ```
//!
//! The decision loop reads only memory (reflector stores, the live set, the host's interfaces)
//! and hands the status task the newest desired status without waiting: an API server that is
//! away, hung or slow delays status and Events, never a failover. Every task runs on one
//! [`TaskTracker`] and stops on one [`CancellationToken`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrolb_crds::config::Config;
use ferrolb_crds::runtime::ApiClients;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn};

use crate::announcer::Announcer;
use crate::bgp;
use crate::cluster::Stores;
use crate::election::NodeName;
use crate::eligibility::EligibilityOptions;
use crate::engine::{self, Inputs, Live};
use crate::layer2::diff::Change;
use crate::layer2::{Layer2Announcer, interfaces};
use crate::liveness::{Liveness, MembershipSettings};
use crate::membership::LiveSet;
use crate::metrics::Metrics;
use crate::status::{self, PodOwner, StatusEvent, StatusHandle, StatusWriter};
use crate::view::ServiceKey;
use crate::{http, stall};

/// How often the plan is recomputed without any event (the interfaces are also watched).
pub const RESCAN_PERIOD: Duration = Duration::from_secs(5);
/// How long leaving the membership may take on shutdown.
const LEAVE_DEADLINE: Duration = Duration::from_secs(1);
/// How long the status task may take to remove this node's objects on shutdown.
const STATUS_STOP_DEADLINE: Duration = Duration::from_secs(2);
/// Wake-ups closer together than this are coalesced into one pass.
const COALESCE: Duration = Duration::from_millis(50);
/// How long the first pass waits for the status task's adoption of older objects (only to
/// tell a restart from a takeover in Events).
const ADOPT_WAIT: Duration = Duration::from_secs(6);

/// What the daemon is told by its flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub namespace: String,
    /// The legacy MetalLB ConfigMap's name in `namespace`.
    pub config_map: String,
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
    pub spread: bool,
    /// `None`: membership off (every node counts as live).
    pub membership: Option<MembershipSettings>,
    /// A stall longer than this makes the speaker announce its IPs again (the membership's
    /// suspicion timeout: after it, the others may have declared this node down).
    pub stall_threshold: Duration,
    pub metrics_addr: std::net::SocketAddr,
    /// The speaker's Pod, owner of its status objects.
    pub pod: Option<PodOwner>,
}

/// Set once the first decision is applied (for `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs the speaker until `cancel`; then leaves the membership, withdraws everything, removes
/// this node's status objects and waits for every task (the caller bounds the whole stop).
pub async fn run(
    settings: Settings,
    clients: ApiClients,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let (metrics, registry) = Metrics::new();
    let readiness = Readiness::default();

    let addr = settings.metrics_addr;
    let serve = http::serve(addr, registry, readiness.clone(), cancel.clone());
    tracker.spawn(async move {
        if let Err(err) = serve.await {
            warn!(%addr, error = %err, "metrics/health server failed");
        }
    });

    let liveness = match &settings.membership {
        None => Liveness::off(),
        Some(membership) => Liveness::start(
            &tracker,
            &cancel,
            clients.watch.clone(),
            membership.clone(),
            metrics.membership_probe_rtt.handle(),
        ),
    };

    let (stalls_tx, stalls) = watch::channel(0u64);
    tracker.spawn(stall::watch_for_stalls(
        settings.stall_threshold,
        stalls_tx,
        cancel.clone(),
    ));

    let host_changed = Arc::new(Notify::new());
    match interfaces::Changes::subscribe() {
        Ok(mut changes) => {
            let notify = Arc::clone(&host_changed);
            let cancel = cancel.clone();
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        event = changes.next() => match event {
                            Ok(()) => notify.notify_one(),
                            Err(err) => {
                                warn!(error = %err, "rtnetlink subscription failed: interfaces are rescanned every {RESCAN_PERIOD:?} only");
                                return;
                            }
                        },
                    }
                }
            });
        }
        Err(err) => warn!(
            error = %err,
            "cannot subscribe to link and address changes: interfaces are rescanned every {RESCAN_PERIOD:?} only"
        ),
    }

    let wake = Arc::new(Notify::new());
    let stores = Stores::start(
        &tracker,
        &cancel,
        &clients.watch,
        &settings.namespace,
        &settings.config_map,
        &wake,
    );

    let writer = StatusWriter::new(
        clients.write.clone(),
        &settings.namespace,
        &settings.node_name,
        settings.pod.clone(),
    );
    let (status, adopted) = status::spawn(
        &tracker,
        cancel.clone(),
        writer,
        metrics.clone(),
        STATUS_STOP_DEADLINE,
    );
    tracker.close();

    let result = tokio::select! {
        ready = stores.wait_ready() => ready,
        _ = cancel.cancelled() => Ok(()),
    };
    if result.is_ok() && !cancel.is_cancelled() {
        info!(node = %settings.node_name, "caches synced");
        let announced_before = tokio::time::timeout(ADOPT_WAIT, adopted)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut decisions = DecisionLoop {
            layer2: Layer2Announcer::new(metrics.clone()),
            bgp: bgp::Announcer::new(
                settings.node_name.clone(),
                settings.membership.as_ref().and_then(|m| m.host_ip),
                tracker.clone(),
                cancel.clone(),
            )
            .with_reporting(bgp::report::Reporting {
                node: settings.node_name.clone(),
                status: status.clone(),
                metrics: metrics.clone(),
            }),
            settings: settings.clone(),
            config: None,
            metrics,
            status,
            owners: BTreeMap::new(),
            announce_failed: BTreeSet::new(),
            membership_counted: Default::default(),
            announced_series: BTreeSet::new(),
            last_live: None,
            announced_before,
            liveness: liveness.clone(),
        };
        decisions
            .run(&stores, &wake, &host_changed, stalls, &readiness, &cancel)
            .await;
        // Leave first: the others drop this node at once and the new owners start announcing
        // while this one still answers, so there is no gap.
        info!("stopping: leaving the membership, then withdrawing every announcement");
        liveness.leave(LEAVE_DEADLINE).await;
        decisions.layer2.withdraw_all();
        // BGP sessions with graceful restart end without a NOTIFICATION: the routers keep
        // the routes through the restart (RFC 4724).
        decisions.bgp.shut_down();
    } else {
        liveness.leave(LEAVE_DEADLINE).await;
    }
    cancel.cancel();
    tracker.wait().await;
    result
}

/// The decision loop's state.
struct DecisionLoop {
    settings: Settings,
    /// The last valid configuration.
    config: Option<Config>,
    layer2: Layer2Announcer,
    bgp: bgp::Announcer,
    metrics: Metrics,
    status: StatusHandle,
    /// Last known layer2 owner per IP, to emit Events only on change.
    owners: BTreeMap<IpAddr, Option<NodeName>>,
    /// IPs this node owns but cannot answer (no advertised interface here), reported once.
    announce_failed: BTreeSet<IpAddr>,
    /// The membership counters already added to the metrics.
    membership_counted: crate::membership::MembershipStats,
    /// The `announced` series currently exported.
    announced_series: BTreeSet<crate::metrics::AnnouncedLabels>,
    liveness: Liveness,
    /// The live set of the previous pass, to notice speakers that join.
    last_live: Option<LiveSet>,
    /// Services an earlier run of this node announced (its status objects): announcing them
    /// again after a restart is not an owner change, so no Event (consumed by the first pass).
    announced_before: BTreeSet<ServiceKey>,
}

impl DecisionLoop {
    async fn run(
        &mut self,
        stores: &Stores,
        wake: &Notify,
        host_changed: &Notify,
        mut stalls: watch::Receiver<u64>,
        readiness: &Readiness,
        cancel: &CancellationToken,
    ) {
        let mut live_changes = self.liveness.live.clone();
        let mut rejoins = self.liveness.rejoins();
        let mut tick = tokio::time::interval(RESCAN_PERIOD);
        let mut reassert = false;
        loop {
            self.pass(stores, std::mem::take(&mut reassert));
            readiness.set();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => tokio::time::sleep(COALESCE).await,
                _ = host_changed.notified() => tokio::time::sleep(COALESCE).await,
                _ = tick.tick() => {}
                _ = live_changes.changed() => {}
                changed = stalls.changed() => reassert = changed.is_ok(),
                changed = rejoins.changed() => {
                    if changed.is_ok() {
                        warn!("the other speakers declared this one down: announcing its IPs again");
                        reassert = true;
                    }
                }
            }
        }
    }

    /// One decision: read the state, decide, converge every announcer, publish the status.
    fn pass(&mut self, stores: &Stores, reassert: bool) {
        match stores.config() {
            Ok(Ok(config)) => {
                if self.config.as_ref() != Some(&config) {
                    info!(
                        pools = config.pools.len(),
                        l2_advertisements = config.l2_advertisements.len(),
                        bgp_advertisements = config.bgp_advertisements.len(),
                        "configuration loaded"
                    );
                }
                self.config = Some(config);
            }
            Ok(Err(errors)) => {
                self.metrics.config_invalid.inc();
                warn!(errors = ?errors.lines(), "configuration invalid: keeping the last valid one");
            }
            Err(err) => {
                self.metrics.config_invalid.inc();
                warn!(error = %err, "legacy ConfigMap invalid: keeping the last valid configuration");
            }
        }
        let view = stores.view(
            self.config.clone().unwrap_or_default(),
            self.settings.lb_class.as_deref(),
        );
        self.liveness.set_seed_ips(stores.node_ips());
        if let Some(stats) = self.liveness.stats() {
            self.metrics
                .record_membership(&self.membership_counted, &stats);
            self.metrics.record_membership_states(&stats);
            self.membership_counted = stats;
        }
        let live = self.liveness.current();
        let members = live.as_ref().map_or(view.nodes.len(), BTreeSet::len);
        self.metrics
            .membership_size
            .set(i64::try_from(members).unwrap_or(i64::MAX));
        let host = interfaces::scan().unwrap_or_else(|err| {
            warn!(error = %err, "cannot read interfaces");
            Vec::new()
        });
        let node = self.settings.node_name.as_str();
        let plan = engine::decide(&Inputs {
            view: &view,
            local: node,
            live: live.as_ref().map_or(Live::All, Live::Only),
            host: &host,
            options: engine::Options {
                eligibility: EligibilityOptions {
                    ignore_exclude_lb: self.settings.ignore_exclude_lb,
                },
                spread: self.settings.spread,
            },
        });

        self.metrics
            .layer2_ips_expected
            .set(i64::try_from(plan.layer2.expected.len()).unwrap_or(i64::MAX));

        for change in self.layer2.converge(&plan.layer2.desired()) {
            match change {
                Change::Announce {
                    ip,
                    interfaces,
                    gratuitous_on,
                } => {
                    let services: Vec<String> = plan
                        .layer2
                        .announce
                        .get(&ip)
                        .map(|a| a.services.iter().map(ToString::to_string).collect())
                        .unwrap_or_default();
                    info_span!("announce", %ip, %node, mode = "layer2").in_scope(|| {
                        info!(?services, ?interfaces, ?gratuitous_on, "announcing");
                    });
                }
                Change::Withdraw { ip } => {
                    let reason = plan.layer2.skipped.get(&ip).map_or("gone", |r| r.as_str());
                    info_span!("withdraw", %ip, %node, mode = "layer2").in_scope(|| {
                        info!(reason, "withdrawing");
                    });
                }
            }
        }
        for (ip, reason) in &plan.layer2.skipped {
            debug!(%ip, %reason, mode = "layer2", "not announcing");
        }
        let labels = view.nodes.get(node).map(|n| n.labels.clone());
        self.bgp.set_context(bgp::Context::new(
            &view.config,
            labels.unwrap_or_default(),
            &host,
        ));
        self.bgp.converge(&plan.bgp.announce);

        // A speaker that (re)joined may have answered for our IPs while cut off from us; and
        // after a stall or a rejoin of our own, ours may have been taken over meanwhile.
        let joined = match (&self.last_live, &live) {
            (Some(before), Some(now)) => now.iter().any(|n| !before.contains(n)),
            _ => false,
        };
        self.last_live = live;
        if joined || reassert {
            self.layer2.reassert();
            self.bgp.reassert();
        }

        self.publish_status(stores, &plan.layer2, &plan.bgp);
    }

    /// `announced{service,ip,protocol,node}`: one series per IP this node announces (layer2:
    /// answered on at least one interface; BGP: carried by at least one session).
    fn update_announced_metric(
        &mut self,
        layer2_plan: &crate::layer2::planner::Plan,
        layer2: &BTreeMap<ServiceKey, BTreeSet<String>>,
        bgp_plan: &bgp::Plan,
        bgp: &BTreeMap<ServiceKey, BTreeSet<String>>,
    ) {
        let node = &self.settings.node_name;
        let mut series = BTreeSet::new();
        let mut add = |services: &BTreeSet<ServiceKey>,
                       ip: &IpAddr,
                       protocol: &str,
                       on: &BTreeMap<ServiceKey, BTreeSet<String>>| {
            for service in services.iter().filter(|s| on.contains_key(*s)) {
                series.insert(crate::metrics::AnnouncedLabels {
                    service: service.to_string(),
                    ip: ip.to_string(),
                    protocol: protocol.to_string(),
                    node: node.clone(),
                });
            }
        };
        let answered = self.layer2.announced();
        for (ip, announcement) in &layer2_plan.announce {
            if answered.get(ip).is_some_and(|on| !on.is_empty()) {
                add(&announcement.services, ip, "layer2", layer2);
            }
        }
        for (ip, announcement) in &bgp_plan.announce {
            add(&announcement.services, ip, "bgp", bgp);
        }
        for gone in self.announced_series.difference(&series) {
            self.metrics.announced.remove(gone);
        }
        for labels in &series {
            self.metrics.announced.get_or_create(labels).set(1);
        }
        self.announced_series = series;
    }

    /// Hands the status task what the status objects should say and the Events to record.
    fn publish_status(
        &mut self,
        stores: &Stores,
        plan: &crate::layer2::planner::Plan,
        bgp_plan: &bgp::Plan,
    ) {
        let announced = self.layer2.announced();
        let mut layer2: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
        for (ip, announcement) in &plan.announce {
            let Some(on) = announced.get(ip).filter(|on| !on.is_empty()) else {
                continue;
            };
            for key in &announcement.services {
                layer2
                    .entry(key.clone())
                    .or_default()
                    .extend(on.iter().cloned());
            }
        }
        let bgp = self.bgp.advertised_to(&bgp_plan.announce);
        self.update_announced_metric(plan, &layer2, bgp_plan, &bgp);
        self.status.publish_services(layer2, bgp);

        let node = self.settings.node_name.as_str();
        let mut failed = BTreeSet::new();
        for (ip, announcement) in &plan.announce {
            if announcement.interfaces.is_empty() {
                // Elected, but none of the advertisements' interfaces is on this host: the
                // interfaces do not take part in the election (MetalLB), so say why the IP is
                // not answered, once per failure.
                failed.insert(*ip);
                if !self.announce_failed.contains(ip) {
                    warn!(%ip, %node, "elected, but none of the L2Advertisement's interfaces is on this host: not announced");
                    self.status.event(StatusEvent::announce_failed(
                        node,
                        *ip,
                        stores.service_refs(&announcement.services),
                    ));
                }
                continue;
            }
            let was_ours = self
                .owners
                .get(ip)
                .and_then(|o| o.as_ref())
                .map(NodeName::as_str)
                == Some(node);
            let restarted_owner = !announcement.services.is_empty()
                && announcement.services.is_subset(&self.announced_before);
            if !was_ours && !restarted_owner {
                self.status.event(StatusEvent::takeover(
                    node,
                    *ip,
                    "layer2",
                    stores.service_refs(&announcement.services),
                ));
            }
        }
        self.owners = plan.owners.clone();
        self.announce_failed = failed;
        self.announced_before.clear();
    }
}
