//! Microbenchmark: ns per received frame of parse + policy + reply build, per implementation.

use std::hint::black_box;
use std::time::Instant;

use crate::Args;
use crate::common::{self, CLIENT_MAC, CLIENT4, OUR_MAC, VIP4, VIP6, Wire, answer};
use crate::corpus;
use crate::ours::Ours;
use crate::pnet_impl::Pnet;
use crate::smoltcp_impl::Smoltcp;

/// ns/op of `iters` calls, median and min over `runs` runs (after one warm-up run).
fn measure(runs: usize, iters: u64, mut f: impl FnMut() -> usize) -> (f64, f64) {
    let mut per_run = Vec::with_capacity(runs);
    for run in 0..=runs {
        let start = Instant::now();
        let mut sink = 0usize;
        for _ in 0..iters {
            sink = sink.wrapping_add(f());
        }
        black_box(sink);
        let ns = start.elapsed().as_nanos() as f64 / iters as f64;
        if run > 0 {
            per_run.push(ns);
        }
    }
    per_run.sort_by(f64::total_cmp);
    (per_run[per_run.len() / 2], per_run[0])
}

fn frame_bench<W: Wire>(runs: usize, iters: u64, frame: &[u8]) -> (f64, f64) {
    measure(runs, iters, || match answer::<W>(black_box(frame)) {
        Ok(reply) => reply.len(),
        Err(_) => 1,
    })
}

pub fn run(args: &Args) {
    let arp = corpus::arp_frame(
        common::BROADCAST,
        CLIENT_MAC,
        &corpus::arp_payload(common::ARP_REQUEST, CLIENT_MAC, CLIENT4, [0; 6], VIP4),
    );
    let ns = corpus::multicast_ns(&corpus::lladdr_option(1, CLIENT_MAC));
    let dad = corpus::ns_frame(
        common::ipv6_multicast_mac(common::solicited_node(VIP6)),
        std::net::Ipv6Addr::UNSPECIFIED,
        common::solicited_node(VIP6),
        VIP6,
        &[],
    );
    let mut bad_csum = ns.clone();
    let last = bad_csum.len() - 1;
    bad_csum[last] ^= 1;
    let (runs, iters) = (args.runs, args.iters);

    println!();
    println!("## Microbenchmark");
    println!();
    println!(
        "ns per frame: parse + checks + reply built into a new Vec (the speaker's `Responder::answer` \
         path without the announce-table lookup); median (min) of {runs} runs of {iters} frames, \
         after a warm-up run."
    );
    println!();
    println!("| operation | ours | pnet_packet | smoltcp |");
    println!("| --- | ---: | ---: | ---: |");
    let cell = |(med, min): (f64, f64)| format!("{med:.0} ({min:.0})");
    let rows: [(&str, &[u8]); 4] = [
        ("ARP request -> reply", &arp),
        ("NS (SLLA) -> solicited NA", &ns),
        ("NS (DAD) -> NA to all-nodes", &dad),
        ("NS, bad checksum -> drop", &bad_csum),
    ];
    for (name, frame) in rows {
        println!(
            "| {name} | {} | {} | {} |",
            cell(frame_bench::<Ours>(runs, iters, frame)),
            cell(frame_bench::<Pnet>(runs, iters, frame)),
            cell(frame_bench::<Smoltcp>(runs, iters, frame)),
        );
    }
    let g = |w: fn() -> Vec<u8>| cell(measure(runs, iters, || w().len()));
    println!(
        "| gratuitous ARP (build) | {} | {} | {} |",
        g(|| Ours::gratuitous_arp(OUR_MAC, black_box(VIP4), true)),
        g(|| Pnet::gratuitous_arp(OUR_MAC, black_box(VIP4), true)),
        g(|| Smoltcp::gratuitous_arp(OUR_MAC, black_box(VIP4), true)),
    );
    println!(
        "| unsolicited NA (build) | {} | {} | {} |",
        g(|| Ours::unsolicited_na(OUR_MAC, black_box(VIP6))),
        g(|| Pnet::unsolicited_na(OUR_MAC, black_box(VIP6))),
        g(|| Smoltcp::unsolicited_na(OUR_MAC, black_box(VIP6))),
    );
    #[cfg(feature = "speaker-responder")]
    {
        let real = crate::ours::real::Real::new();
        let r = |frame: &[u8]| {
            cell(measure(runs, iters, || match real.answer(black_box(frame)) {
                Ok(reply) => reply.len(),
                Err(_) => 1,
            }))
        };
        println!();
        println!(
            "The speaker's real `layer2::Responder::answer` (with its BTreeMap announce table and \
             interface-name check): ARP {} ns, NS (SLLA) {} ns.",
            r(&arp),
            r(&ns)
        );
    }
}
