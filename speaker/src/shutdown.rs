//! SIGTERM/SIGINT → a `watch` channel every task listens to, so the stop is ordered: the main
//! loop withdraws and deletes its status objects, then the HTTP server stops.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::info;

/// A sender that turns true on the first SIGTERM or SIGINT, and its receiver.
pub fn on_signal() -> std::io::Result<(watch::Sender<bool>, watch::Receiver<bool>)> {
    let (sender, receiver) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let trigger = sender.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
        let _ = trigger.send(true);
    });
    Ok((sender, receiver))
}

/// Resolves once `receiver` is true (or its sender is gone).
pub async fn stopped(receiver: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, before any other await.
    let _ = receiver.wait_for(|stop| *stop).await.map(|_| ());
}
