//! How both binaries run: their API clients and their stop signal.
//!
//! - Two clients per process: watches keep long-lived connections (the watcher has its own idle
//!   timeout), so their client has only a connect timeout; writes get connect *and* read
//!   timeouts, so a hung API server fails a write instead of holding it forever.
//! - SIGTERM or SIGINT cancels one [`CancellationToken`] that every task of the process watches.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// kubectl's copy of the object as last applied: often the biggest part of an object, and read by
/// nothing here.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what a cache never reads: `managedFields` and kubectl's last-applied copy. Every
/// reflector of both binaries runs its objects through this, which keeps a store of 10 000
/// Services several times smaller.
pub fn slim<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// How long connecting to the API server may take.
pub const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may wait for the API server's answer.
pub const API_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The clients a process uses.
#[derive(Clone)]
pub struct ApiClients {
    /// For watches and lists (connect timeout only).
    pub watch: kube::Client,
    /// For writes (connect and read timeouts).
    pub write: kube::Client,
}

/// Both clients from the environment (in-cluster, or `KUBECONFIG`).
pub async fn api_clients() -> Result<ApiClients, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let mut watch = config.clone();
    watch.connect_timeout = Some(API_CONNECT_TIMEOUT);
    let mut write = config;
    write.connect_timeout = Some(API_CONNECT_TIMEOUT);
    write.read_timeout = Some(API_READ_TIMEOUT);
    // The read timeout then counts from the request, not from when a pooled connection idled.
    write.reset_reader_on_write = true;
    Ok(ApiClients {
        watch: kube::Client::try_from(watch)?,
        write: kube::Client::try_from(write)?,
    })
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn cancel_on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        trigger.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn slim_keeps_every_other_annotation() {
        let mut service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web",
                "annotations": {LAST_APPLIED_ANNOTATION: "{...}", "ferrolb.io/address-pool": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
        }))
        .unwrap();
        slim(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        let annotations = service.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["ferrolb.io/address-pool"], "a");
    }
}
