//! FerroLB's speaker/src/wire vs pnet_packet vs smoltcp::wire: differential tests and
//! microbenchmarks of the two operations the layer2 responder does (ARP request -> reply,
//! Neighbor Solicitation -> Neighbor Advertisement) and the two announcements it sends
//! (gratuitous ARP, unsolicited NA). See README.md.
//!
//! Usage: `cargo run --release -- [diff|bench|all] [--mutations N] [--random N] [--seed S]
//!         [--runs R] [--iters N]`

// Our wire module, compiled from the speaker's sources unchanged.
#[allow(dead_code, unused_imports)]
#[path = "../../../speaker/src/wire/mod.rs"]
mod wire;

// The speaker's real responder (it uses only `crate::wire` and std).
#[cfg(feature = "speaker-responder")]
#[allow(dead_code)]
#[path = "../../../speaker/src/layer2/responder.rs"]
mod responder;

mod bench;
mod common;
mod corpus;
mod diff;
mod ours;
mod pnet_impl;
mod smoltcp_impl;

use std::path::PathBuf;

pub struct Args {
    pub mode: String,
    pub mutations: u64,
    pub random: u64,
    pub seed: u64,
    pub runs: usize,
    pub iters: u64,
    pub seeds_dir: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        mode: "all".into(),
        mutations: 3_000_000,
        random: 1_000_000,
        seed: 0x0005_eedf_311b,
        runs: 15,
        iters: 500_000,
        seeds_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../speaker/fuzz/seeds"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> u64 {
            let v = it.next().unwrap_or_else(|| panic!("{name} needs a value"));
            let v = v.replace('_', "");
            if let Some(hex) = v.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).expect("number")
            } else {
                v.parse().expect("number")
            }
        };
        match a.as_str() {
            "diff" | "bench" | "all" => args.mode = a,
            "--mutations" => args.mutations = num("--mutations"),
            "--random" => args.random = num("--random"),
            "--seed" => args.seed = num("--seed"),
            "--runs" => args.runs = num("--runs") as usize,
            "--iters" => args.iters = num("--iters"),
            "--seeds-dir" => args.seeds_dir = PathBuf::from(it.next().expect("dir")),
            other => panic!("unknown argument {other:?}"),
        }
    }
    args
}

/// Whether arithmetic overflow panics in this build (profile `checked`) or wraps (`release`).
pub fn overflow_checks() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let x: u8 = std::hint::black_box(255);
    let overflowed = std::panic::catch_unwind(|| std::hint::black_box(x + 1)).is_err();
    std::panic::set_hook(hook);
    overflowed
}

fn main() {
    let args = parse_args();
    println!(
        "wire-compare: ours (speaker/src/wire) vs pnet_packet 0.35 vs smoltcp 0.14 (wire only); \
         profile: {}, overflow checks: {}",
        if cfg!(debug_assertions) {
            "debug assertions ON"
        } else {
            "release"
        },
        overflow_checks(),
    );
    if args.mode == "diff" || args.mode == "all" {
        diff::run(&args);
    }
    if args.mode == "bench" || args.mode == "all" {
        bench::run(&args);
    }
}
