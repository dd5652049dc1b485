//! `lab up --demo`: the layer2 demo. Needs the real FerroLB controller and speaker.

use crate::controlplane::ControlPlane;
use crate::lab::{Lab, real_binary};

/// Runs the layer2 demo in a lab that is up.
pub fn run(lab: &Lab, control_plane: &ControlPlane) -> anyhow::Result<()> {
    let _ = control_plane;
    if real_binary(&lab.binaries.controller).is_none()
        || real_binary(&lab.binaries.speaker).is_none()
    {
        println!(
            "demo: skipped: the FerroLB controller and speaker are not built or are still stubs \
             (cargo build -p ferrolb-controller -p ferrolb-speaker)"
        );
        return Ok(());
    }
    anyhow::bail!("demo: not implemented yet")
}
