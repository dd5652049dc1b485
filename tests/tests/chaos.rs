//! The chaos smoke run (issue #14): three minutes of faults from a fixed seed in a 3-node lab,
//! with every invariant checked after each fault. Fails on any violation and prints the replay
//! command. The long soak is `cargo xtask lab chaos` (docs/reliability.md).

use ferrolb_tests::chaos::{self, ChaosOptions};

#[test]
fn e2e_chaos_smoke_run_has_no_violations() {
    let options = ChaosOptions {
        minutes: 3.0,
        seed: 2,
        // A hang guard, not the soak's 1 s: the default test run asserts no wall-clock bound.
        client_follows_within: std::time::Duration::from_secs(10),
        ..ChaosOptions::default()
    };
    let Some(report) = chaos::run(&options).expect("the chaos run") else {
        return;
    };
    let text = chaos::render(&options, &report);
    println!("{text}");
    let violations: Vec<String> = report.violations().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{} violations; replay with `{}`:\n{}",
        violations.len(),
        options.replay_command(),
        violations.join("\n")
    );
    assert!(report.faults.len() >= 6, "too few faults ran: {text}");
    assert!(
        report.faults.iter().any(|f| f.recovery.is_some()),
        "no fault measured a recovery: {text}"
    );
}
