//! Without the FerroLB CRDs the controller stops with an install hint instead of waiting forever.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ferrolb_controller::{Options, run};
use ferrolb_tests::controlplane::{ControlPlane, ControlPlaneConfig};
use tokio_util::sync::CancellationToken;

#[test]
fn missing_crds_stop_the_controller_with_a_hint() {
    if !prerequisites() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("controller-nocrds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let control_plane =
        ControlPlane::start(ControlPlaneConfig::loopback(&dir).expect("config")).expect("start");
    let _stop = StopOnDrop(control_plane.run_dir.clone());
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        let mut options = Options::defaults();
        options.metrics_addr = free_port();
        options.webhook_addr = "127.0.0.1:0".to_string();
        options.identity = Some("nocrds".into());
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            run(clients(&client), options, CancellationToken::new()),
        )
        .await
        .expect("the controller gives up instead of waiting");
        let error = format!("{:#}", outcome.expect_err("no CRDs is an error"));
        assert!(
            error.contains("ipaddresspools.ferrolb.io") && error.contains("config/crd"),
            "{error}"
        );
    });
}
