//! The differential run: every frame through all three implementations (and the speaker's real
//! responder), panics caught, outcomes compared.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::Args;
use crate::common::{Answer, Drop, Wire, answer};
use crate::corpus::{self, Case, Rng};
use crate::ours::Ours;
use crate::pnet_impl::{Pnet, PnetBare};
use crate::smoltcp_impl::Smoltcp;

pub const NAMES: [&str; 3] = [Ours::NAME, Pnet::NAME, Smoltcp::NAME];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Vec<u8>),
    Dropped(Drop),
    Panic(String),
}

impl Outcome {
    fn kind(&self) -> String {
        match self {
            Outcome::Reply(_) => "reply".into(),
            Outcome::Dropped(d) => format!("{d:?}"),
            Outcome::Panic(_) => "PANIC".into(),
        }
    }

    fn accepted(&self) -> Option<bool> {
        match self {
            Outcome::Reply(_) => Some(true),
            Outcome::Dropped(_) => Some(false),
            Outcome::Panic(_) => None,
        }
    }
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Panics inside `guarded` are recorded quietly; any other panic (a harness bug) is reported.
fn install_quiet_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(|g| g.get()) {
            default(info);
            return;
        }
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_owned(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        let at = info
            .location()
            .map(|l| {
                // Keep the path from the crate name on (registry paths are long).
                let file = l.file();
                let short = file
                    .find("pnet")
                    .or_else(|| file.find("smoltcp"))
                    .map_or(file, |i| &file[i..]);
                format!("{short}:{}", l.line())
            })
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg} at {at}"));
    }));
}

fn guarded(f: impl FnOnce() -> Answer) -> Outcome {
    GUARDED.with(|g| g.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(false));
    match result {
        Ok(Ok(bytes)) => Outcome::Reply(bytes),
        Ok(Err(d)) => Outcome::Dropped(d),
        Err(_) => Outcome::Panic(LAST_PANIC.with(|p| p.borrow().clone())),
    }
}

pub fn outcomes(frame: &[u8]) -> [Outcome; 3] {
    [
        guarded(|| answer::<Ours>(frame)),
        guarded(|| answer::<Pnet>(frame)),
        guarded(|| answer::<Smoltcp>(frame)),
    ]
}

#[derive(Default)]
struct Class {
    count: u64,
    examples: Vec<(String, Vec<u8>, [Outcome; 3])>,
}

type PanicLog = BTreeMap<String, (u64, String, Vec<u8>)>;

#[derive(Default)]
struct Stats {
    frames: u64,
    accepted: [u64; 3],
    panics: [u64; 3],
    /// Per implementation, by panic message: count, first origin, first frame.
    panic_examples: [PanicLog; 3],
    /// Accept/reject or reply-bytes disagreements, by outcome signature.
    disagreements: BTreeMap<String, Class>,
    /// Disagreements by outcome signature and explanation (all frames, not just examples).
    explained: BTreeMap<(String, String), (u64, Vec<u8>)>,
    /// All three dropped, for different reasons (a metrics label difference only).
    reason_only: BTreeMap<String, u64>,
    /// pnet without the hand checks: frames where its outcome differs from pnet with them, by
    /// origin (first words), with one example origin.
    bare: BTreeMap<String, (u64, String)>,
    bare_total: u64,
    #[cfg_attr(not(feature = "speaker-responder"), allow(dead_code))]
    /// Frames where ours-through-the-harness and the speaker's real Responder differ.
    real_mismatch: u64,
    #[cfg(feature = "speaker-responder")]
    real: Option<crate::ours::real::Real>,
}

impl Stats {
    fn record(&mut self, group: &str, case: &Case) {
        self.frames += 1;
        let out = outcomes(&case.frame);
        #[cfg(feature = "speaker-responder")]
        {
            let real = self.real.get_or_insert_with(crate::ours::real::Real::new);
            let r = guarded(|| real.answer(&case.frame));
            if r != out[0] {
                self.real_mismatch += 1;
                if self.real_mismatch <= 3 {
                    println!(
                        "  ! harness/real responder mismatch on {}: {:?} vs {:?}",
                        case.origin,
                        out[0].kind(),
                        r.kind()
                    );
                }
            }
        }
        let bare = guarded(|| answer::<PnetBare>(&case.frame));
        if bare.accepted() != out[1].accepted() || (bare.accepted() == Some(true) && bare != out[1]) {
            self.bare_total += 1;
            let key = format!("[{group}] pnet {} / bare {}", out[1].kind(), bare.kind());
            self.bare
                .entry(key)
                .or_insert_with(|| (0, case.origin.clone()))
                .0 += 1;
        }
        for (i, o) in out.iter().enumerate() {
            match o {
                Outcome::Reply(_) => self.accepted[i] += 1,
                Outcome::Panic(msg) => {
                    self.panics[i] += 1;
                    let e = self.panic_examples[i].entry(msg.clone()).or_insert((
                        0,
                        case.origin.clone(),
                        case.frame.clone(),
                    ));
                    e.0 += 1;
                }
                Outcome::Dropped(_) => {}
            }
        }
        let same_accept = out.iter().all(|o| o.accepted() == out[0].accepted());
        let all_rejected = out.iter().all(|o| o.accepted() == Some(false));
        if same_accept && all_rejected {
            if !(out[0] == out[1] && out[1] == out[2]) {
                let sig = out.iter().map(Outcome::kind).collect::<Vec<_>>().join(" / ");
                *self.reason_only.entry(format!("[{group}] {sig}")).or_default() += 1;
            }
            return;
        }
        if same_accept && out[0] == out[1] && out[1] == out[2] {
            return;
        }
        // A real disagreement: accept vs reject, a panic, or different reply bytes.
        let mut sig = out.iter().map(Outcome::kind).collect::<Vec<_>>().join(" / ");
        if same_accept {
            // All replied: which ones agree on the bytes?
            let eq = |a: usize, b: usize| out[a] == out[b];
            sig = format!(
                "all reply, bytes: ours{}pnet, ours{}smoltcp, pnet{}smoltcp",
                if eq(0, 1) { "=" } else { "≠" },
                if eq(0, 2) { "=" } else { "≠" },
                if eq(1, 2) { "=" } else { "≠" }
            );
        }
        let why = match out.iter().find_map(|o| match o {
            Outcome::Panic(msg) => Some(msg),
            _ => None,
        }) {
            Some(msg) => format!("panic: {msg}"),
            None => explain(&case.frame).unwrap_or_else(|| "UNEXPLAINED".into()),
        };
        self.explained
            .entry((why, sig.clone()))
            .or_insert_with(|| (0, case.frame.clone()))
            .0 += 1;
        let key = format!("[{group}] {sig}");
        let class = self.disagreements.entry(key).or_default();
        class.count += 1;
        if class.examples.len() < 4 {
            class
                .examples
                .push((case.origin.clone(), case.frame.clone(), out));
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 2 == 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn run(args: &Args) {
    install_quiet_hook();
    let started = Instant::now();
    let mut stats = Stats::default();

    let seeds = corpus::seeds(&args.seeds_dir);
    let n_seeds = seeds.len();
    for case in &seeds {
        stats.record("seeds", case);
    }
    let unit = corpus::unit_test_frames();
    let n_unit = unit.len();
    for case in &unit {
        stats.record("unit", case);
    }
    let targeted = corpus::targeted();
    let n_targeted = targeted.len();
    for case in &targeted {
        stats.record("targeted", case);
    }
    let small = (stats.frames, stats.accepted, stats.panics);

    let mut rng = Rng::new(args.seed);
    let templates = corpus::templates();
    for _ in 0..args.mutations {
        let (name, template) = &templates[rng.below(templates.len())];
        let (frame, applied) = corpus::mutate(&mut rng, template);
        let case = Case {
            origin: format!("mutated {name}: {}", applied.join(", ")),
            frame,
        };
        stats.record("mutated", &case);
    }
    for _ in 0..args.random {
        let case = Case {
            origin: "random".into(),
            frame: corpus::random_frame(&mut rng),
        };
        stats.record("random", &case);
    }

    let builds = compare_builders(&mut rng, 10_000);

    println!();
    println!("## Differential run");
    println!();
    println!(
        "inputs: {n_seeds} seed frames (from {}), {n_unit} unit-test frames, {n_targeted} targeted, \
         {} mutated + {} random (seed {:#x}); {} frames in {:.1} s",
        args.seeds_dir
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&args.seeds_dir)
            .display(),
        args.mutations,
        args.random,
        args.seed,
        stats.frames,
        started.elapsed().as_secs_f64()
    );
    #[cfg(feature = "speaker-responder")]
    println!(
        "harness 'ours' vs the speaker's real layer2::Responder: {} mismatches",
        stats.real_mismatch
    );
    println!();
    println!("| implementation | frames answered (seeds+unit+targeted) | frames answered (all) | panics |");
    println!("| --- | ---: | ---: | ---: |");
    for (i, name) in NAMES.iter().enumerate() {
        println!(
            "| {name} | {} / {} | {} / {} | {} |",
            small.1[i], small.0, stats.accepted[i], stats.frames, stats.panics[i]
        );
    }
    for (name, log) in NAMES.iter().zip(&stats.panic_examples) {
        for (msg, (count, origin, frame)) in log {
            println!();
            println!("PANIC in {name} ({count}x): {msg}");
            println!("  first on: {origin}");
            println!("  frame: {}", hex(frame));
        }
    }
    println!();
    println!("### Disagreements (accept/reject, panic, or reply bytes), by outcome ours / pnet / smoltcp");
    if stats.disagreements.is_empty() {
        println!("none");
    }
    for (key, class) in &stats.disagreements {
        println!();
        println!("{key}: {} frames", class.count);
        for (origin, frame, out) in &class.examples {
            println!("  e.g. {origin}");
            println!("    frame {}", hex(frame));
            if let Some(why) = explain(frame) {
                println!("    why: {why}");
            }
            if let (Outcome::Reply(a), Outcome::Reply(b)) = (&out[0], &out[2])
                && a != b
            {
                println!("    ours    {}", hex(a));
                println!("    smoltcp {}", hex(b));
            }
            if let (Outcome::Reply(a), Outcome::Reply(b)) = (&out[0], &out[1])
                && a != b
            {
                println!("    ours    {}", hex(a));
                println!("    pnet    {}", hex(b));
            }
        }
    }
    println!();
    println!("### Disagreement classes over all frames (cause / outcome ours / pnet / smoltcp)");
    println!();
    println!("| cause | outcome | frames |");
    println!("| --- | --- | ---: |");
    for ((why, sig), (n, _)) in &stats.explained {
        println!("| {why} | {sig} | {n} |");
    }
    println!();
    println!("One frame of each class:");
    for ((why, sig), (_, frame)) in &stats.explained {
        println!("  {why} ({sig}): {}", hex(frame));
    }
    println!();
    println!("### All rejected, different drop reasons (metric label only)");
    for (sig, n) in &stats.reason_only {
        println!("  {sig}: {n}");
    }
    println!();
    println!(
        "### pnet_packet without the hand checks (src/pnet_impl.rs `HAND CHECK`): {} frames answered \
         differently than with them",
        stats.bare_total
    );
    for (key, (n, origin)) in &stats.bare {
        println!("  {key}: {n} (e.g. {origin})");
    }
    println!();
    println!("### Frames built (gratuitous ARP, ARP reply, solicited/DAD/unsolicited NA)");
    println!("{builds}");
}

/// Why the implementations disagree on `frame`, read by hand (for the report): the first of the
/// known causes, in this order, that the frame has; `None` if it has none of them.
pub fn explain(frame: &[u8]) -> Option<String> {
    const CHECKSUM_FFFF: &str = "checksum sent as 0xffff where 0x0000 is computed";
    const LONG_OPTION: &str = "an option of length >= 32 (pnet computes length * 8 - 2 in u8)";
    const SHORT_PREFIX: &str = "a Prefix Information (type 3) option shorter than 32 bytes in an NS";
    const SHORT_REDIRECT: &str = "a Redirected Header (type 4) option shorter than 48 bytes in an NS";
    const SLLA_LEN: &str = "a source link-layer option of length != 1 (not Ethernet's 8 bytes)";
    const SEVERAL_SLLA: &str = "several Ethernet-sized source link-layer options, first != last";
    if frame.len() < 58 || frame[12..14] != [0x86, 0xdd] {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    let msg = frame.get(54..54 + plen)?;
    let mut causes: Vec<&str> = Vec::new();
    if msg.len() >= 4 && msg[2..4] == [0xff, 0xff] {
        let mut zeroed = msg.to_vec();
        zeroed[2] = 0;
        zeroed[3] = 0;
        let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
        let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
        if corpus::icmpv6_checksum(src, dst, &zeroed) == 0 {
            causes.push(CHECKSUM_FFFF);
        }
    }
    let mut options = msg.get(24..)?;
    let mut sllas: Vec<&[u8]> = Vec::new();
    while options.len() >= 2 {
        let (ty, units) = (options[0], usize::from(options[1]));
        if units == 0 {
            break;
        }
        if units >= 32 {
            causes.push(LONG_OPTION);
        }
        match ty {
            1 if units == 1 && options.len() >= 8 => sllas.push(&options[2..8]),
            1 => causes.push(SLLA_LEN),
            3 if units < 4 => causes.push(SHORT_PREFIX),
            4 if units < 6 => causes.push(SHORT_REDIRECT),
            _ => {}
        }
        if units * 8 > options.len() {
            break;
        }
        options = &options[units * 8..];
    }
    if sllas.len() >= 2 && sllas.first() != sllas.last() {
        causes.push(SEVERAL_SLLA);
    }
    [CHECKSUM_FFFF, LONG_OPTION, SHORT_PREFIX, SHORT_REDIRECT, SLLA_LEN, SEVERAL_SLLA]
        .into_iter()
        .find(|c| causes.contains(c))
        .map(str::to_owned)
}

/// The four frames the speaker sends, built by all three from the same random inputs.
fn compare_builders(rng: &mut Rng, n: usize) -> String {
    let mut differ = [0u64; 3];
    let mut unparsed = [0u64; 3];
    let mut total = 0;
    for _ in 0..n {
        let mut mac = [0u8; 6];
        mac.iter_mut().for_each(|b| *b = rng.byte());
        mac[0] &= 0xfe;
        let peer = [0x02, rng.byte(), rng.byte(), 0, 0, rng.byte()];
        let v4 = Ipv4Addr::from(rng.next_u64() as u32);
        let to4 = Ipv4Addr::from(rng.next_u64() as u32);
        // A unicast target (a multicast one is rightly refused by every parser).
        let v6 = Ipv6Addr::from(
            (0x2001u128 << 112) | (u128::from(rng.next_u64()) << 48) | u128::from(rng.next_u64()),
        );
        let to6 = if rng.chance(4) {
            Ipv6Addr::UNSPECIFIED
        } else {
            Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
        };
        fn all<W: Wire>(
            mac: [u8; 6],
            peer: [u8; 6],
            v4: Ipv4Addr,
            to4: Ipv4Addr,
            v6: Ipv6Addr,
            to6: Ipv6Addr,
        ) -> [Vec<u8>; 5] {
            [
                W::arp_reply(mac, v4, peer, to4),
                W::gratuitous_arp(mac, v4, false),
                W::gratuitous_arp(mac, v4, true),
                W::solicited_na(mac, v6, to6, peer),
                W::unsolicited_na(mac, v6),
            ]
        }
        let o = all::<Ours>(mac, peer, v4, to4, v6, to6);
        let p = all::<Pnet>(mac, peer, v4, to4, v6, to6);
        let s = all::<Smoltcp>(mac, peer, v4, to4, v6, to6);
        for k in 0..5 {
            total += 1;
            differ[0] += u64::from(o[k] != p[k]);
            differ[1] += u64::from(o[k] != s[k]);
            differ[2] += u64::from(p[k] != s[k]);
        }
        // Every frame built by one must parse with every other (checksums included).
        for built in o.iter().chain(p.iter()).chain(s.iter()) {
            unparsed[0] += u64::from(!parses_back::<Ours>(built));
            unparsed[1] += u64::from(!parses_back::<Pnet>(built));
            unparsed[2] += u64::from(!parses_back::<Smoltcp>(built));
        }
    }
    format!(
        "{total} frames ({n} random inputs x 5 kinds): byte differences ours/pnet {}, ours/smoltcp {}, \
         pnet/smoltcp {}; of the {} frames built by all three, rejected by the parser of ours {}, \
         pnet {}, smoltcp {}",
        differ[0],
        differ[1],
        differ[2],
        3 * total,
        unparsed[0],
        unparsed[1],
        unparsed[2]
    )
}

/// A built frame is a well-formed Ethernet/IPv4 ARP packet or a valid NA for `W`'s parser.
fn parses_back<W: Wire>(frame: &[u8]) -> bool {
    let Some(eth) = W::ethernet(frame) else {
        return false;
    };
    match eth.ethertype {
        crate::common::ETHERTYPE_ARP => W::arp(eth.payload).is_some(),
        _ => W::ipv6(eth.payload).is_some_and(|ip| {
            ip.hop_limit == 255
                && matches!(
                    W::ndisc(ip.src, ip.dst, ip.payload),
                    Ok(crate::common::Ndisc::Other)
                )
        }),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn seeds_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../speaker/fuzz/seeds")
    }

    #[test]
    fn seeds_and_unit_frames_get_the_same_answer_from_all_three() {
        install_quiet_hook();
        for case in corpus::seeds(&seeds_dir())
            .into_iter()
            .chain(corpus::unit_test_frames())
        {
            let [o, p, s] = outcomes(&case.frame);
            assert_eq!(o, p, "pnet on {}", case.origin);
            assert_eq!(o, s, "smoltcp on {}", case.origin);
        }
    }

    #[test]
    fn the_four_sent_frames_are_byte_identical() {
        let mut rng = Rng::new(1);
        let report = compare_builders(&mut rng, 500);
        assert!(
            report.contains("ours/pnet 0, ours/smoltcp 0, pnet/smoltcp 0")
                && report.contains("ours 0, pnet 0, smoltcp 0"),
            "{report}"
        );
    }

    #[test]
    fn the_known_classes_are_explained() {
        install_quiet_hook();
        for case in corpus::targeted() {
            let [o, p, s] = outcomes(&case.frame);
            if o != p || o != s {
                assert!(explain(&case.frame).is_some(), "{}", case.origin);
            }
        }
    }
}
