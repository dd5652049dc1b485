//! What the BGP lab tests share (a directory module, so it is not a test target of its own):
//! running session tasks inside a node's namespace, and test logging.

#![allow(dead_code)] // each test file uses a part

use std::thread::JoinHandle;

use ferrolb_speaker::bgp::session::{self, PeerConfig, RouteSet, SessionStatus};
use ferrolb_tests::controlplane::netns::enter_netns;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The sessions, on a thread in namespace `ns` with one current-thread runtime for all of them
/// (a socket is created in the namespace of the thread that creates it; a task that blocked or
/// spun would starve the others, and a router's short hold timer would expire). A panic in a
/// session task fails the joining test.
pub fn start_sessions(
    ns: &str,
    peers: Vec<(PeerConfig, watch::Receiver<RouteSet>)>,
    cancel: CancellationToken,
) -> (Vec<watch::Receiver<SessionStatus>>, JoinHandle<()>) {
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    for (peer, routes) in peers {
        let (tx, rx) = watch::channel(SessionStatus::new(peer.address));
        statuses.push(rx);
        tasks.push((peer, routes, tx));
    }
    let ns = ns.to_string();
    let handle = std::thread::spawn(move || {
        enter_netns(&ns).expect("enter the namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let running: Vec<_> = tasks
                .into_iter()
                .map(|(peer, routes, status)| {
                    tokio::spawn(session::run(peer, routes, status, cancel.clone()))
                })
                .collect();
            for task in running {
                task.await.expect("session task");
            }
        });
    });
    (statuses, handle)
}

/// Test logging (`RUST_LOG` wins over `default`), once per test binary.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.to_string().into()),
        )
        .with_test_writer()
        .try_init();
}
