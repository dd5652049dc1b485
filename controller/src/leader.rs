//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager).

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::options::Options;

/// Leadership as it changes, and the task that keeps the Lease (dropping the receiver releases
/// the Lease).
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    pub task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Starts competing for the Lease. The holder renews it a third of the duration before it
/// expires.
pub async fn elect(client: Client, options: &Options) -> Result<Leadership, LeaseManagerError> {
    let duration = options.lease_duration().as_secs();
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, options.lease_name.clone())
        .with_namespace(options.lease_namespace().to_string())
        .with_identity(options.identity())
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await?;
    let (is_leader, task) = manager.watch().await;
    Ok(Leadership { is_leader, task })
}
