//! The CRDs of `config/crd/` on the real kube-apiserver v1.36 (loopback control plane, no root),
//! against what docs/configuration.md says of them:
//!
//! * `single_object_rules_on_the_real_api_server`: every rule the document says the API server
//!   enforces ("Differences to be aware of" and the per-kind field tables): the ranges, `peerASN`
//!   XOR `dynamicASN`, `peerAddress` XOR `interface`, `password` XOR `passwordSecret`,
//!   `ebgpMultiHop` only for eBGP, keepalive ≤ hold, `serviceSelectors` only with the default
//!   aggregation lengths, unique Community aliases within an object, required fields, unknown
//!   fields refused (strict decoding), immutable `enableGracefulRestart` and status fields. For
//!   each, an object breaking it is refused (`kubectl create --dry-run=server`, or an update for
//!   the immutable ones) with exactly the documented error, and a valid neighbour (the same object
//!   at the edge of the rule) is accepted. Then every `x-kubernetes-validations` rule and every
//!   OpenAPI bound (`minimum`, `maximum`, `minItems`, `enum`, `pattern`, list-map keys) in the
//!   `spec` of the CRDs the server serves must have been seen refusing something: a new rule
//!   without a case here fails the test.
//! * `printer_columns_on_the_real_api_server`: `kubectl get` of each kind prints the columns the
//!   documents list (docs/configuration.md, and the header lines docs/operations.md shows), with
//!   the values of a created object in them, and `kubectl get ferrolb` lists every kind.
//!
//! Needs the binaries of `cargo xtask controlplane build`: without them the tests skip, or FAIL
//! when `CI` is set.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use ferrolb_tests::controlplane::{self, ControlPlane, ControlPlaneConfig, FERROLB_NAMESPACE};
use ferrolb_tests::harness::{StopControlPlane, require};
use ferrolb_tests::paths;
use serde_json::Value;

/// A control plane with the CRDs of `config/crd/` installed and the FerroLB namespace created;
/// `None` when the binaries are missing (skip).
fn start(test: &str) -> Option<(ControlPlane, StopControlPlane, PathBuf)> {
    if !require(
        controlplane::binaries()
            .map(|_| ())
            .map_err(|missing| missing.to_string()),
    ) {
        return None;
    }
    let run_dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&run_dir);
    let stop = StopControlPlane(run_dir.clone());
    let control_plane = ControlPlane::start(
        ControlPlaneConfig::loopback(&run_dir).expect("loopback control-plane config"),
    )
    .expect("starting the control plane");
    let crds = control_plane
        .install_crds(&paths::workspace_root().join("config/crd"))
        .expect("installing the CRDs");
    assert_eq!(crds.len(), 9, "{crds:?}");
    control_plane
        .create_namespace(FERROLB_NAMESPACE)
        .expect("creating the FerroLB namespace");
    Some((control_plane, stop, run_dir))
}

/// After a passing test: stops the control plane and removes its run directory.
fn finish(run_dir: &Path) {
    let _ = controlplane::stop(run_dir);
    let _ = fs::remove_dir_all(run_dir);
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// `kubectl ARGS` as admin with `stdin` on its standard input.
fn kubectl(control_plane: &ControlPlane, args: &[&str], stdin: &str) -> Run {
    let mut command = control_plane.kubectl(args);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let description = format!("{command:?}");
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("{description}: {error}"));
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let output: Output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{description}: {error}"));
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Like [`kubectl`], panicking unless it succeeds without a warning; returns stdout.
fn kubectl_ok(control_plane: &ControlPlane, args: &[&str], stdin: &str) -> String {
    let run = kubectl(control_plane, args, stdin);
    assert!(
        run.success && !run.stderr.contains("Warning:"),
        "kubectl {args:?} failed or warned:\n{}\n{stdin}",
        run.stderr
    );
    run.stdout
}

fn object(kind: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {FERROLB_NAMESPACE}}}\n{body}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Single-object rules.

/// How the API server refuses an object.
#[derive(Clone)]
enum Refusal {
    /// `The <Kind> "<name>" is invalid: <details>`: these field errors, usually one (the
    /// server's note that it skipped the CEL rules because of one aside).
    Invalid(Vec<String>),
    /// Strict decoding: `unknown field "<path>"`.
    UnknownField(&'static str),
}

struct Case {
    kind: &'static str,
    /// What breaks the rule (the document's words), for messages.
    what: &'static str,
    /// The object's body after `metadata` (`spec: {...}`), breaking one rule...
    bad: String,
    refusal: Refusal,
    /// ... and its valid neighbour: the same at the edge of the rule.
    good: String,
}

fn case(kind: &'static str, what: &'static str, bad: &str, refusal: Refusal, good: &str) -> Case {
    Case {
        kind,
        what,
        bad: bad.to_string(),
        refusal,
        good: good.to_string(),
    }
}

fn invalid(detail: impl Into<String>) -> Refusal {
    Refusal::Invalid(vec![detail.into()])
}

/// A duration that is not a Go duration: the pattern's error, and the CEL rule of the field
/// failing to convert it (the server evaluates both).
fn not_a_duration(field: &str, value: &str, rule_message: &str) -> Refusal {
    Refusal::Invalid(vec![
        format!(
            "spec.{field}: Invalid value: \"{value}\": spec.{field} in body should match '{DURATION_PATTERN}'"
        ),
        format!(
            "spec.{field}: Invalid value: \"string\": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: {rule_message}"
        ),
    ])
}

/// An OpenAPI bound's error for the value at `path`.
fn below(path: &str, value: &str, minimum: &str) -> Refusal {
    invalid(format!(
        "{path}: Invalid value: {value}: {path} in body should be greater than or equal to {minimum}"
    ))
}

fn above(path: &str, value: &str, maximum: &str) -> Refusal {
    invalid(format!(
        "{path}: Invalid value: {value}: {path} in body should be less than or equal to {maximum}"
    ))
}

const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// A BGPPeer spec: the eBGP session of the docs plus `extra` fields.
fn peer(extra: &str) -> String {
    format!("spec: {{myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1{extra}}}")
}

/// `field: value` as the range cases write it: below/above the bound and at it.
fn range_cases(
    kind: &'static str,
    what: &'static str,
    spec: impl Fn(&str) -> String,
    path: &str,
    (minimum, maximum): (i64, i64),
) -> Vec<Case> {
    let (under, over) = ((minimum - 1).to_string(), (maximum + 1).to_string());
    vec![
        Case {
            kind,
            what,
            bad: spec(&under),
            refusal: below(path, &under, &minimum.to_string()),
            good: spec(&minimum.to_string()),
        },
        Case {
            kind,
            what,
            bad: spec(&over),
            refusal: above(path, &over, &maximum.to_string()),
            good: spec(&maximum.to_string()),
        },
    ]
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        // IPAddressPool: `spec.addresses` required, ≥ 1 item.
        case(
            "IPAddressPool",
            "spec required",
            "",
            invalid("spec: Required value"),
            "spec: {addresses: [192.0.2.0/24]}",
        ),
        case(
            "IPAddressPool",
            "addresses required",
            "spec: {autoAssign: false}",
            invalid("spec.addresses: Required value"),
            "spec: {autoAssign: false, addresses: [192.0.2.0/24]}",
        ),
        case(
            "IPAddressPool",
            "addresses: at least 1 item",
            "spec: {addresses: []}",
            invalid(
                "spec.addresses: Invalid value: 0: spec.addresses in body should have at least 1 items",
            ),
            "spec: {addresses: [192.0.2.0/32]}",
        ),
        // L2Advertisement: preferredNodeSelectors {weight 1..100, preference}.
        case(
            "L2Advertisement",
            "preference required",
            "spec: {preferredNodeSelectors: [{weight: 50}]}",
            invalid("spec.preferredNodeSelectors[0].preference: Required value"),
            "spec: {preferredNodeSelectors: [{weight: 50, preference: {matchLabels: {rack: a}}}]}",
        ),
        // BGPAdvertisement: serviceSelectors only with the default aggregation lengths.
        case(
            "BGPAdvertisement",
            "serviceSelectors with aggregationLength 24",
            "spec: {aggregationLength: 24, serviceSelectors: [{matchLabels: {app: web}}]}",
            invalid(
                "spec.serviceSelectors: Forbidden: serviceSelectors cannot be used together with a non-default aggregationLength or aggregationLengthV6",
            ),
            "spec: {aggregationLength: 32, serviceSelectors: [{matchLabels: {app: web}}]}",
        ),
        case(
            "BGPAdvertisement",
            "serviceSelectors with aggregationLengthV6 64",
            "spec: {aggregationLengthV6: 64, serviceSelectors: [{matchLabels: {app: web}}]}",
            invalid(
                "spec.serviceSelectors: Forbidden: serviceSelectors cannot be used together with a non-default aggregationLength or aggregationLengthV6",
            ),
            "spec: {aggregationLengthV6: 64, serviceSelectors: []}",
        ),
        // BGPPeer: exactly one of peerASN / dynamicASN, of peerAddress / interface.
        case(
            "BGPPeer",
            "peerASN and dynamicASN",
            &peer(", dynamicASN: external"),
            invalid("spec.dynamicASN: Forbidden: peerASN and dynamicASN are mutually exclusive"),
            "spec: {myASN: 64500, dynamicASN: external, peerAddress: 192.0.2.1}",
        ),
        case(
            "BGPPeer",
            "neither peerASN nor dynamicASN",
            "spec: {myASN: 64500, peerAddress: 192.0.2.1}",
            invalid("spec: Required value: one of peerASN and dynamicASN is required"),
            "spec: {myASN: 64500, dynamicASN: internal, peerAddress: 192.0.2.1}",
        ),
        case(
            "BGPPeer",
            "dynamicASN internal | external",
            "spec: {myASN: 64500, dynamicASN: both, peerAddress: 192.0.2.1}",
            invalid(
                "spec.dynamicASN: Unsupported value: \"both\": supported values: \"internal\", \"external\"",
            ),
            "spec: {myASN: 64500, dynamicASN: external, peerAddress: 192.0.2.2}",
        ),
        case(
            "BGPPeer",
            "peerAddress and interface",
            &peer(", interface: eth0"),
            invalid("spec.interface: Forbidden: peerAddress and interface are mutually exclusive"),
            // Accepted by the API server; FerroLB refuses `interface` itself, with its reason.
            "spec: {myASN: 64500, peerASN: 64501, interface: eth0}",
        ),
        case(
            "BGPPeer",
            "neither peerAddress nor interface",
            "spec: {myASN: 64500, peerASN: 64501}",
            invalid("spec: Required value: one of peerAddress and interface is required"),
            &peer(""),
        ),
        case(
            "BGPPeer",
            "password and passwordSecret",
            &peer(", password: secret, passwordSecret: {name: tor-md5}"),
            invalid(
                "spec.passwordSecret: Forbidden: password and passwordSecret are mutually exclusive",
            ),
            &peer(", passwordSecret: {name: tor-md5}"),
        ),
        case(
            "BGPPeer",
            "password and passwordSecret with a namespace",
            &peer(", password: secret, passwordSecret: {name: tor-md5, namespace: ferrolb-system}"),
            invalid(
                "spec.passwordSecret: Forbidden: password and passwordSecret are mutually exclusive",
            ),
            &peer(", password: secret"),
        ),
        case(
            "BGPPeer",
            "myASN required",
            "spec: {peerASN: 64501, peerAddress: 192.0.2.1}",
            invalid("spec.myASN: Required value"),
            &peer(""),
        ),
        case(
            "BGPPeer",
            "ebgpMultiHop only for eBGP",
            "spec: {myASN: 64500, peerASN: 64500, peerAddress: 192.0.2.1, ebgpMultiHop: true}",
            invalid(
                "spec.ebgpMultiHop: Forbidden: ebgpMultiHop cannot be set for an iBGP session (peerASN equal to myASN)",
            ),
            &peer(", ebgpMultiHop: true"),
        ),
        case(
            "BGPPeer",
            "ebgpMultiHop false with iBGP",
            "spec: {myASN: 64500, peerASN: 64500, peerAddress: 192.0.2.1, ebgpMultiHop: true}",
            invalid(
                "spec.ebgpMultiHop: Forbidden: ebgpMultiHop cannot be set for an iBGP session (peerASN equal to myASN)",
            ),
            "spec: {myASN: 64500, peerASN: 64500, peerAddress: 192.0.2.1, ebgpMultiHop: false}",
        ),
        // holdTime: 0 or ≥ 3s, not rounded (2.5s is refused at apply); keepalive ≤ hold.
        case(
            "BGPPeer",
            "holdTime below 3s",
            &peer(", holdTime: 2s"),
            invalid("spec.holdTime: Invalid value: \"2s\": holdTime must be 0 or at least 3s"),
            &peer(", holdTime: 3s"),
        ),
        case(
            "BGPPeer",
            "holdTime 2.5s (not rounded)",
            &peer(", holdTime: 2.5s"),
            invalid("spec.holdTime: Invalid value: \"2.5s\": holdTime must be 0 or at least 3s"),
            &peer(", holdTime: \"0\""),
        ),
        case(
            "BGPPeer",
            "holdTime a Go duration",
            &peer(", holdTime: \"90\""),
            not_a_duration("holdTime", "90", "holdTime must be 0 or at least 3s"),
            &peer(", holdTime: 1m30s"),
        ),
        case(
            "BGPPeer",
            "keepaliveTime a Go duration",
            &peer(", keepaliveTime: 30 s"),
            invalid(format!(
                "spec.keepaliveTime: Invalid value: \"30 s\": spec.keepaliveTime in body should match '{DURATION_PATTERN}'"
            )),
            &peer(", keepaliveTime: 30s"),
        ),
        case(
            "BGPPeer",
            "keepaliveTime ≤ holdTime",
            &peer(", holdTime: 9s, keepaliveTime: 10s"),
            invalid(
                "spec.keepaliveTime: Invalid value: keepaliveTime must not be longer than holdTime",
            ),
            &peer(", holdTime: 9s, keepaliveTime: 9s"),
        ),
        // connectTime 1s..65535s.
        case(
            "BGPPeer",
            "connectTime at least 1s",
            &peer(", connectTime: 500ms"),
            invalid(
                "spec.connectTime: Invalid value: \"500ms\": connectTime must be between 1s and 65535s",
            ),
            &peer(", connectTime: 1s"),
        ),
        case(
            "BGPPeer",
            "connectTime at most 65535s",
            &peer(", connectTime: 65536s"),
            invalid(
                "spec.connectTime: Invalid value: \"65536s\": connectTime must be between 1s and 65535s",
            ),
            &peer(", connectTime: 65535s"),
        ),
        case(
            "BGPPeer",
            "connectTime a Go duration",
            &peer(", connectTime: 1d"),
            not_a_duration(
                "connectTime",
                "1d",
                "connectTime must be between 1s and 65535s",
            ),
            &peer(", connectTime: 18h"),
        ),
        // Community: name and value required, names unique within the object.
        case(
            "Community",
            "alias names unique within one object",
            "spec: {communities: [{name: gold, value: \"64500:1\"}, {name: gold, value: \"64500:2\"}]}",
            invalid("spec.communities[1]: Duplicate value: {\"name\":\"gold\"}"),
            "spec: {communities: [{name: gold, value: \"64500:1\"}, {name: silver, value: \"64500:2\"}]}",
        ),
        case(
            "Community",
            "value required",
            "spec: {communities: [{name: gold}]}",
            invalid("spec.communities[0].value: Required value"),
            "spec: {communities: [{name: gold, value: \"large:64500:1:2\"}]}",
        ),
        case(
            "Community",
            "name required",
            "spec: {communities: [{value: \"64500:1\"}]}",
            invalid("spec.communities[0].name: Required value"),
            "spec: {communities: [{name: g, value: \"64500:1\"}]}",
        ),
        // The status kinds: `spec` is empty.
        case(
            "ServiceL2Status",
            "empty spec",
            "spec: {node: a}",
            invalid("spec: Invalid value: \"node\": spec.node in body is a forbidden property"),
            "spec: {}",
        ),
        // Unknown fields, strict decoding (kubectl's default field validation).
        case(
            "IPAddressPool",
            "unknown spec field",
            "spec: {addresses: [192.0.2.0/24], autoassign: false}",
            Refusal::UnknownField("spec.autoassign"),
            "spec: {addresses: [192.0.2.0/24], autoAssign: false}",
        ),
        case(
            "IPAddressPool",
            "unknown nested field",
            "spec: {addresses: [192.0.2.0/24], serviceAllocation: {priorty: 5}}",
            Refusal::UnknownField("spec.serviceAllocation.priorty"),
            "spec: {addresses: [192.0.2.0/24], serviceAllocation: {priority: 5}}",
        ),
        case(
            "L2Advertisement",
            "unknown spec field",
            "spec: {ipAddressPool: [lan]}",
            Refusal::UnknownField("spec.ipAddressPool"),
            "spec: {ipAddressPools: [lan]}",
        ),
        case(
            "BGPAdvertisement",
            "unknown spec field",
            "spec: {localpref: 100}",
            Refusal::UnknownField("spec.localpref"),
            "spec: {localPref: 100}",
        ),
        case(
            "BGPPeer",
            "unknown spec field",
            &peer(", peerAsn: 64501"),
            Refusal::UnknownField("spec.peerAsn"),
            &peer(", peerPort: 1179"),
        ),
        case(
            "BFDProfile",
            "unknown spec field",
            "spec: {echoIntervall: 50}",
            Refusal::UnknownField("spec.echoIntervall"),
            "spec: {echoInterval: 50}",
        ),
        case(
            "Community",
            "unknown field in a list item",
            "spec: {communities: [{name: g, value: \"64500:1\", alias: x}]}",
            Refusal::UnknownField("spec.communities[0].alias"),
            "spec: {communities: [{name: g, value: \"64500:2\"}]}",
        ),
        case(
            "BGPPeer",
            "unknown top-level field",
            &format!("{}\nspecs: {{}}", peer("")),
            Refusal::UnknownField("specs"),
            &peer(""),
        ),
    ];
    // The ranges of the tables.
    cases.extend(range_cases(
        "L2Advertisement",
        "preferredNodeSelectors weight 1..100",
        |w| format!("spec: {{preferredNodeSelectors: [{{weight: {w}, preference: {{}}}}]}}"),
        "spec.preferredNodeSelectors[0].weight",
        (1, 100),
    ));
    cases.extend(range_cases(
        "BGPAdvertisement",
        "aggregationLength 1..32",
        |v| format!("spec: {{aggregationLength: {v}}}"),
        "spec.aggregationLength",
        (1, 32),
    ));
    cases.extend(range_cases(
        "BGPAdvertisement",
        "aggregationLengthV6 1..128",
        |v| format!("spec: {{aggregationLengthV6: {v}}}"),
        "spec.aggregationLengthV6",
        (1, 128),
    ));
    cases.extend(range_cases(
        "BGPAdvertisement",
        "localPref uint32",
        |v| format!("spec: {{localPref: {v}}}"),
        "spec.localPref",
        (0, 4_294_967_295),
    ));
    for field in ["myASN", "peerASN", "localASN"] {
        cases.extend(range_cases(
            "BGPPeer",
            "ASNs 1..4294967295",
            move |v| {
                let mut fields = vec![
                    ("myASN", "64500".to_string()),
                    ("peerASN", "64501".to_string()),
                ];
                match fields.iter_mut().find(|(name, _)| *name == field) {
                    Some((_, value)) => *value = v.to_string(),
                    None => fields.push((field, v.to_string())),
                }
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}"))
                    .collect();
                format!("spec: {{{}, peerAddress: 192.0.2.1}}", fields.join(", "))
            },
            &format!("spec.{field}"),
            (1, 4_294_967_295),
        ));
    }
    cases.extend(range_cases(
        "BGPPeer",
        "peerPort 1..16384",
        |v| peer(&format!(", peerPort: {v}")),
        "spec.peerPort",
        (1, 16384),
    ));
    for (field, range) in [
        ("receiveInterval", (10, 60000)),
        ("transmitInterval", (10, 60000)),
        ("echoInterval", (10, 60000)),
        ("detectMultiplier", (2, 255)),
        ("minimumTtl", (1, 254)),
    ] {
        cases.extend(range_cases(
            "BFDProfile",
            "BFD ranges",
            move |v| format!("spec: {{{field}: {v}}}"),
            &format!("spec.{field}"),
            range,
        ));
    }
    cases
}

/// The field errors of a refusal (`The Kind "name" is invalid: ...`, one or a `* ` list), without
/// the server's note that it did not evaluate the CEL rules.
fn field_errors<'a>(stderr: &'a str, kind: &str, name: &str) -> Option<Vec<&'a str>> {
    let rest = stderr
        .trim_end()
        .strip_prefix(&format!("The {kind} \"{name}\" is invalid: "))?;
    let errors: Vec<&str> = if rest.starts_with('\n') {
        rest.lines()
            .filter_map(|line| line.strip_prefix("* "))
            .collect()
    } else {
        vec![rest]
    };
    Some(
        errors
            .into_iter()
            .filter(|e| !e.contains("some validation rules were not checked"))
            .collect(),
    )
}

/// Refused with exactly `refusal`; returns the server's message.
fn assert_refused(
    control_plane: &ControlPlane,
    verb: &[&str],
    kind: &str,
    name: &str,
    what: &str,
    refusal: &Refusal,
    stdin: &str,
) -> String {
    let run = kubectl(control_plane, verb, stdin);
    assert!(
        !run.success,
        "{kind} ({what}) was accepted:\n{stdin}\n{}",
        run.stdout
    );
    match refusal {
        Refusal::Invalid(details) => {
            let errors = field_errors(&run.stderr, kind, name);
            let details: Vec<&str> = details.iter().map(String::as_str).collect();
            assert_eq!(
                errors,
                Some(details),
                "{kind} ({what}): the server said:\n{}",
                run.stderr
            );
        }
        Refusal::UnknownField(path) => {
            let expected = format!(
                "Error from server (BadRequest): error when creating \"STDIN\": {kind} in version \"v1beta1\" cannot be handled as a {kind}: strict decoding error: unknown field \"{path}\""
            );
            assert_eq!(
                run.stderr.trim_end(),
                expected,
                "{kind} ({what}): the server said:\n{}",
                run.stderr
            );
        }
    }
    run.stderr
}

/// `[0]`, `[12]` → `[]`: array positions do not matter for coverage (a regex's `[0-9]` stays).
fn without_indexes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with(']') {
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// What the API server must have refused something for: every CEL rule's message and every
/// OpenAPI bound (as the server words it) in the `spec` and `status` schemas of the served
/// CRDs, as (Kind, text). Standard schemas (label selectors, conditions) carry none of these.
fn obligations(control_plane: &ControlPlane) -> BTreeSet<(String, String)> {
    let json = kubectl_ok(control_plane, &["get", "crd", "-o", "json"], "");
    let list: Value = serde_json::from_str(&json).expect("CRD list");
    let mut out = BTreeSet::new();
    for crd in list["items"].as_array().expect("items") {
        if crd["spec"]["group"] != "ferrolb.io" {
            continue;
        }
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for part in ["spec", "status"] {
            walk(&schema["properties"][part], part, &kind, &mut out);
        }
    }
    out
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map(|n| format!("{}", n as i64))
        .unwrap_or_else(|| value.to_string())
}

fn walk(schema: &Value, path: &str, kind: &str, out: &mut BTreeSet<(String, String)>) {
    let mut add = |text: String| {
        out.insert((kind.to_string(), text));
    };
    // Writes through the status subresource name the field relative to `status` in the bound's
    // wording (`status.flaps: Invalid value: -1: flaps in body should be ...`).
    let body = path.strip_prefix("status.").unwrap_or(path);
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        add(rule["message"].as_str().expect("rule message").to_string());
    }
    if let Some(minimum) = schema.get("minimum") {
        add(format!(
            "{body} in body should be greater than or equal to {}",
            number(minimum)
        ));
    }
    if let Some(maximum) = schema.get("maximum") {
        add(format!(
            "{body} in body should be less than or equal to {}",
            number(maximum)
        ));
    }
    if let Some(minimum) = schema.get("minItems") {
        add(format!(
            "{body} in body should have at least {} items",
            number(minimum)
        ));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        add(format!("{body} in body should match '{pattern}'"));
    }
    if schema.get("enum").is_some() {
        add(format!("{path}: Unsupported value"));
    }
    if schema["x-kubernetes-list-type"] == "map" && path != "status.conditions" {
        add(format!("{path}[]: Duplicate value"));
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            walk(property, &format!("{path}.{name}"), kind, out);
        }
    }
    if schema.get("items").is_some() {
        walk(&schema["items"], &format!("{path}[]"), kind, out);
    }
}

#[test]
fn single_object_rules_on_the_real_api_server() {
    let Some((control_plane, _stop, run_dir)) = start("crd-rules") else {
        return;
    };
    let create = ["create", "--dry-run=server", "-f", "-"];
    // Every refusal, with the object it refused (for the coverage check).
    let mut refused: Vec<(String, String)> = Vec::new();

    let cases = cases();
    let mut neighbours = String::new();
    let mut expected_created = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("{}-{i}", case.kind.to_lowercase());
        let stderr = assert_refused(
            &control_plane,
            &create,
            case.kind,
            &name,
            case.what,
            &case.refusal,
            &object(case.kind, &name, &case.bad),
        );
        refused.push((case.kind.to_string(), stderr));
        neighbours.push_str("---\n");
        neighbours.push_str(&object(case.kind, &name, &case.good));
        expected_created.push(format!(
            "{}.ferrolb.io/{name} created (server dry run)",
            case.kind.to_lowercase()
        ));
    }
    // Every valid neighbour at once.
    let created = kubectl_ok(&control_plane, &create, &neighbours);
    assert_eq!(
        created.lines().collect::<Vec<_>>(),
        expected_created,
        "valid neighbours"
    );
    eprintln!(
        "{} objects refused with the documented error, their {} neighbours accepted",
        cases.len(),
        expected_created.len()
    );

    // Unknown fields are refused because kubectl asks for strict field validation (its default,
    // `--validate=strict`); without it the server drops the field with a warning, so a typo
    // falls back to the default.
    let typo = object(
        "IPAddressPool",
        "typo",
        "spec: {addresses: [192.0.2.0/24], autoassign: false}",
    );
    let run = kubectl(
        &control_plane,
        &[
            "create",
            "--validate=warn",
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "json",
        ],
        &typo,
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "Warning: unknown field \"spec.autoassign\""
    );
    let stored: Value = serde_json::from_str(&run.stdout).expect("object");
    assert_eq!(stored["spec"]["autoAssign"], true, "{stored}");

    // An advertisement without spec is stored as with `spec: {}`: for L2Advertisement that is
    // `{}`, BGPAdvertisement gets its defaults filled in.
    for (kind, stored_spec) in [
        ("L2Advertisement", serde_json::json!({})),
        (
            "BGPAdvertisement",
            serde_json::json!({"aggregationLength": 32, "aggregationLengthV6": 128, "localPref": 0}),
        ),
    ] {
        for body in ["", "spec: {}"] {
            let json = kubectl_ok(
                &control_plane,
                &["create", "--dry-run=server", "-f", "-", "-o", "json"],
                &object(kind, "no-spec", body),
            );
            let stored: Value = serde_json::from_str(&json).expect("object");
            assert_eq!(stored["spec"], stored_spec, "{kind} {body:?}: {stored}");
        }
    }

    refused.extend(check_immutable_graceful_restart(&control_plane));
    refused.extend(check_immutable_status(&control_plane));
    refused.extend(check_status_bounds(&control_plane));

    // Coverage: every rule and bound of the served CRDs refused something above.
    let seen: Vec<(String, String)> = refused
        .iter()
        .map(|(kind, stderr)| (kind.clone(), without_indexes(stderr)))
        .collect();
    let obligations = obligations(&control_plane);
    assert!(obligations.len() >= 40, "{obligations:#?}");
    let uncovered: Vec<&(String, String)> = obligations
        .iter()
        .filter(|(kind, text)| {
            !seen
                .iter()
                .any(|(seen_kind, stderr)| seen_kind == kind && stderr.contains(text.as_str()))
        })
        .collect();
    assert!(
        uncovered.is_empty(),
        "rules of config/crd with no case in this test: {uncovered:#?}"
    );
    eprintln!(
        "all {} rules and bounds of the served CRDs covered",
        obligations.len()
    );
    drop(control_plane);
    finish(&run_dir);
}

/// `enableGracefulRestart` cannot be changed after creation, either way, nor by removing it (it
/// defaults to `false`); the rest of such a BGPPeer can.
fn check_immutable_graceful_restart(control_plane: &ControlPlane) -> Vec<(String, String)> {
    let mut refused = Vec::new();
    let message = "enableGracefulRestart cannot be changed after creation";
    for (name, created, change, value) in [
        (
            "gr-on",
            true,
            r#"{"spec":{"enableGracefulRestart":false}}"#,
            "false",
        ),
        (
            "gr-on",
            true,
            r#"{"spec":{"enableGracefulRestart":null}}"#,
            "false",
        ),
        (
            "gr-off",
            false,
            r#"{"spec":{"enableGracefulRestart":true}}"#,
            "true",
        ),
        (
            "gr-unset",
            false,
            r#"{"spec":{"enableGracefulRestart":true}}"#,
            "true",
        ),
    ] {
        let extra = match name {
            "gr-unset" => String::new(),
            _ => format!(", enableGracefulRestart: {created}"),
        };
        let exists = kubectl(
            control_plane,
            &["get", "bgppeer", "-n", FERROLB_NAMESPACE, name],
            "",
        )
        .success;
        if !exists {
            kubectl_ok(
                control_plane,
                &["create", "-f", "-"],
                &object("BGPPeer", name, &peer(&extra)),
            );
        }
        let patch = [
            "patch",
            "bgppeer",
            "-n",
            FERROLB_NAMESPACE,
            name,
            "--dry-run=server",
            "--type=merge",
            "-p",
        ];
        let mut args = patch.to_vec();
        args.push(change);
        let stderr = assert_refused(
            control_plane,
            &args,
            "BGPPeer",
            name,
            "enableGracefulRestart changed",
            &invalid(format!(
                "spec.enableGracefulRestart: Invalid value: {value}: {message}"
            )),
            "",
        );
        refused.push(("BGPPeer".to_string(), stderr));
        // The neighbour: another field changed, enableGracefulRestart kept.
        let mut args = patch.to_vec();
        args.push(r#"{"spec":{"holdTime":"30s"}}"#);
        kubectl_ok(control_plane, &args, "");
    }
    refused
}

/// ServiceL2Status and ServiceBGPStatus: `status.node`, `serviceName` and `serviceNamespace`
/// cannot be changed to another value once set (written through the status subresource, as the
/// speaker does); the other status fields can. The rule compares old and new values, so it
/// does not stop a field from being removed, or set again after that: the tables say so.
fn check_immutable_status(control_plane: &ControlPlane) -> Vec<(String, String)> {
    let mut refused = Vec::new();
    for (kind, resource, name, other) in [
        (
            "ServiceL2Status",
            "servicel2status",
            "l2-immutable",
            r#"{"status":{"interfaces":[{"name":"eth1"}]}}"#,
        ),
        (
            "ServiceBGPStatus",
            "servicebgpstatus",
            "bgp-immutable",
            r#"{"status":{"peers":["tor-b"]}}"#,
        ),
    ] {
        kubectl_ok(
            control_plane,
            &["create", "-f", "-"],
            &object(kind, name, "spec: {}"),
        );
        let patch = |change: &str, dry_run: bool| -> Vec<String> {
            let mut args: Vec<String> = [
                "patch",
                resource,
                "-n",
                FERROLB_NAMESPACE,
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                change,
            ]
            .map(str::to_string)
            .to_vec();
            if dry_run {
                args.push("--dry-run=server".to_string());
            }
            args
        };
        let run_patch = |change: &str, dry_run: bool| {
            let args = patch(change, dry_run);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl_ok(control_plane, &args, "")
        };
        // Unset → set is allowed (the speaker creates the object, then writes its status).
        run_patch(
            r#"{"status":{"node":"node-a","serviceName":"web","serviceNamespace":"default"}}"#,
            false,
        );
        for (field, value) in [
            ("node", "node-b"),
            ("serviceName", "api"),
            ("serviceNamespace", "prod"),
        ] {
            let args = patch(&format!(r#"{{"status":{{"{field}":"{value}"}}}}"#), true);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let stderr = assert_refused(
                control_plane,
                &args,
                kind,
                name,
                "immutable status field changed",
                &invalid(format!(
                    "status.{field}: Invalid value: \"{value}\": {field} is immutable"
                )),
                "",
            );
            refused.push((kind.to_string(), stderr));
        }
        // The neighbours: the same value again, another field changed.
        run_patch(r#"{"status":{"node":"node-a"}}"#, true);
        run_patch(other, true);
        // What the rule does not stop: removing the field, or the whole status, and then
        // setting another value.
        run_patch(r#"{"status":{"node":null}}"#, false);
        run_patch(r#"{"status":{"node":"node-b"}}"#, false);
        run_patch(r#"{"status":null}"#, false);
        run_patch(r#"{"status":{"serviceName":"api"}}"#, false);
        let json = kubectl_ok(
            control_plane,
            &["get", resource, "-n", FERROLB_NAMESPACE, name, "-o", "json"],
            "",
        );
        let stored: Value = serde_json::from_str(&json).expect("object");
        assert_eq!(
            stored["status"],
            serde_json::json!({"serviceName": "api"}),
            "{stored}"
        );
    }
    refused
}

/// BGPSessionState's counters are never negative (written through the status subresource).
fn check_status_bounds(control_plane: &ControlPlane) -> Vec<(String, String)> {
    let name = "session-bounds";
    kubectl_ok(
        control_plane,
        &["create", "-f", "-"],
        &object("BGPSessionState", name, "spec: {}"),
    );
    let mut refused = Vec::new();
    for field in ["prefixesSent", "flaps"] {
        let patch = |value: i64| {
            format!(r#"{{"status":{{"node":"node1","peer":"tor-a","{field}":{value}}}}}"#)
        };
        let args = |change: &str| -> Vec<String> {
            [
                "patch",
                "bgpsessionstate",
                "-n",
                FERROLB_NAMESPACE,
                name,
                "--subresource=status",
                "--type=merge",
                "--dry-run=server",
                "-p",
                change,
            ]
            .map(str::to_string)
            .to_vec()
        };
        let bad = args(&patch(-1));
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        let stderr = assert_refused(
            control_plane,
            &bad,
            "BGPSessionState",
            name,
            "negative counter",
            &invalid(format!(
                "status.{field}: Invalid value: -1: {field} in body should be greater than or equal to 0"
            )),
            "",
        );
        refused.push(("BGPSessionState".to_string(), stderr));
        let good = args(&patch(0));
        let good: Vec<&str> = good.iter().map(String::as_str).collect();
        kubectl_ok(control_plane, &good, "");
    }
    refused
}

// ---------------------------------------------------------------------------------------------
// Printer columns and `kubectl explain`.

/// A `kubectl get` table: the header's column names and each row's cells, cut at the columns'
/// offsets (kubectl left-aligns every cell under its header, three spaces apart; names such as
/// `AUTO ASSIGN` have single spaces).
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn column_starts(header: &str) -> Vec<usize> {
    let bytes = header.as_bytes();
    (0..bytes.len())
        .filter(|&i| {
            bytes[i] != b' ' && (i == 0 || (i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' '))
        })
        .collect()
}

fn cells(line: &str, starts: &[usize]) -> Vec<String> {
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts
                .get(i + 1)
                .copied()
                .unwrap_or(line.len())
                .min(line.len());
            line.get(start.min(end)..end)
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .collect()
}

fn table(text: &str) -> Table {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let starts = column_starts(header);
    Table {
        columns: cells(header, &starts),
        rows: lines.map(|line| cells(line, &starts)).collect(),
    }
}

impl Table {
    fn cell(&self, row: &str, column: &str) -> &str {
        let index = self
            .columns
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.columns));
        let row = self
            .rows
            .iter()
            .find(|r| r[0] == row)
            .unwrap_or_else(|| panic!("no row {row}"));
        &row[index]
    }
}

/// docs/configuration.md's "`kubectl get <plural>` shows A, B and C (`-o wide` adds D and E)"
/// sentences, as (plural, columns, wide-only columns), column names in kubectl's upper case;
/// `Assigned IPv4/IPv6` is two columns.
fn documented_columns(doc: &str) -> Vec<(String, Vec<String>, Vec<String>)> {
    let text = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let list = |items: &str| -> Vec<String> {
        items
            .trim_start_matches("only ")
            .replace(" and ", ", ")
            .split(", ")
            .flat_map(|item| match item.split_once('/') {
                // `Assigned IPv4/IPv6`: the words before the last one are shared.
                Some((first, second)) => {
                    let prefix = first.rsplit_once(' ').map_or("", |(p, _)| p);
                    vec![first.to_string(), format!("{prefix} {second}")]
                }
                None => vec![item.to_string()],
            })
            .map(|column| column.trim().to_uppercase())
            .collect()
    };
    let mut out = Vec::new();
    for part in text.split("`kubectl get ").skip(1) {
        let Some((plural, rest)) = part.split_once("` shows ") else {
            continue;
        };
        if plural.contains(' ') {
            continue;
        }
        let end = rest.find(['.', '(']).expect("end of the column list");
        let columns = list(rest[..end].trim());
        let wide = rest[end..]
            .strip_prefix("(`-o wide` adds ")
            .and_then(|wide| wide.split_once(')'))
            .map(|(wide, _)| list(wide))
            .unwrap_or_default();
        out.push((plural.to_string(), columns, wide));
    }
    out
}

/// The column names of the header line in docs/operations.md's block that starts with
/// `starts_with` (a `# ` comment prefix removed), and the line after it if there is one.
fn operations_table<'a>(doc: &'a str, starts_with: &str) -> (Vec<String>, Option<&'a str>) {
    let mut lines = doc
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .skip_while(|line| !line.starts_with(starts_with));
    let header = lines.next().expect("the documented header line");
    let starts = column_starts(header);
    let row = lines
        .next()
        .filter(|line| !line.starts_with("```") && !line.contains("kubectl"));
    (cells(header, &starts), row)
}

/// A `kubectl get` duration (`5m`, `5m1s`, `2d3h`) in seconds.
fn human_seconds(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("duration {text:?}"));
        number.clear();
        total += value
            * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                'y' => 365 * 86400,
                _ => panic!("duration {text:?}"),
            };
    }
    assert!(number.is_empty(), "duration {text:?}");
    total
}

const PRINTED: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: prod, namespace: ferrolb-system}
spec: {addresses: [192.0.2.0/24, \"2001:db8::/120\"], autoAssign: false}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: ferrolb-system}
spec: {ipAddressPools: [prod], interfaces: [eth0], nodeSelectors: [{matchLabels: {rack: a}}]}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: external, namespace: ferrolb-system}
spec: {ipAddressPools: [prod], peers: [tor-a, tor-b]}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: tor-a, namespace: ferrolb-system}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1, bfdProfile: fast, ebgpMultiHop: true}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: any-external, namespace: ferrolb-system}
spec: {myASN: 64500, dynamicASN: external, peerAddress: 192.0.2.2}
---
apiVersion: ferrolb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: ferrolb-system}
spec: {receiveInterval: 100, transmitInterval: 200, detectMultiplier: 4}
---
apiVersion: ferrolb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: ferrolb-system}
spec: {communities: [{name: no-advertise, value: \"65535:65282\"}]}
---
apiVersion: ferrolb.io/v1beta1
kind: ServiceL2Status
metadata: {name: l2-web, namespace: ferrolb-system}
spec: {}
---
apiVersion: ferrolb.io/v1beta1
kind: ServiceBGPStatus
metadata: {name: bgp-web, namespace: ferrolb-system}
spec: {}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPSessionState
metadata: {name: session-p4gs6, namespace: ferrolb-system}
spec: {}
";

/// `kubectl get` prints the documented columns with the created objects' values in them;
/// `kubectl get ferrolb` lists every kind; `kubectl explain <kind>.spec` and `.status` list the
/// fields of the document's tables, and no others.
#[test]
fn printer_columns_on_the_real_api_server() {
    let Some((control_plane, _stop, run_dir)) = start("crd-columns") else {
        return;
    };
    let configuration = fs::read_to_string(paths::workspace_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let operations = fs::read_to_string(paths::workspace_root().join("docs/operations.md"))
        .expect("docs/operations.md");

    kubectl_ok(&control_plane, &["create", "-f", "-"], PRINTED);
    // Established five minutes ago, as in docs/operations.md's row.
    let five_minutes_ago = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(300))
    .strftime("%Y-%m-%dT%H:%M:%SZ")
    .to_string();
    for (resource, name, status) in [
        (
            "ipaddresspool",
            "prod",
            r#"{"status":{"assignedIPv4":2,"assignedIPv6":1,"availableIPv4":252,"availableIPv6":255}}"#.to_string(),
        ),
        (
            "servicel2status",
            "l2-web",
            r#"{"status":{"node":"node-a","serviceName":"web","serviceNamespace":"default","interfaces":[{"name":"eth0"}]}}"#.to_string(),
        ),
        (
            "servicebgpstatus",
            "bgp-web",
            r#"{"status":{"node":"node-a","serviceName":"web","serviceNamespace":"default","peers":["tor-a","tor-b"]}}"#.to_string(),
        ),
        (
            "bgpsessionstate",
            "session-p4gs6",
            format!(
                r#"{{"status":{{"node":"node1","peer":"router-v4","peerAddress":"192.0.2.1:179","bgpState":"Established","bfdState":"Up","establishedTime":"{five_minutes_ago}","prefixesSent":1,"flaps":0}}}}"#
            ),
        ),
    ] {
        kubectl_ok(
            &control_plane,
            &[
                "patch",
                resource,
                "-n",
                FERROLB_NAMESPACE,
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ],
            "",
        );
    }

    let get = |plural: &str, wide: bool| -> Table {
        let mut args = vec!["get", plural, "-n", FERROLB_NAMESPACE];
        if wide {
            args.extend(["-o", "wide"]);
        }
        table(&kubectl_ok(&control_plane, &args, ""))
    };

    // The columns docs/configuration.md lists, for every kind.
    let documented = documented_columns(&configuration);
    let plurals: BTreeSet<&str> = documented.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        plurals,
        BTreeSet::from([
            "bfdprofiles",
            "bgpadvertisements",
            "bgppeers",
            "bgpsessionstates",
            "communities",
            "ipaddresspools",
            "l2advertisements",
            "servicebgpstatuses",
            "servicel2statuses",
        ]),
        "docs/configuration.md should list the columns of every kind"
    );
    for (plural, columns, wide) in &documented {
        let mut expected = vec!["NAME".to_string()];
        expected.extend(columns.iter().cloned());
        assert_eq!(get(plural, false).columns, expected, "kubectl get {plural}");
        // `-o wide` adds the documented ones (each where the CRD puts it: compare as sets).
        let printed_wide: BTreeSet<String> = get(plural, true).columns.into_iter().collect();
        let expected_wide: BTreeSet<String> = expected.iter().chain(wide.iter()).cloned().collect();
        assert_eq!(printed_wide, expected_wide, "kubectl get {plural} -o wide");
    }

    // docs/operations.md's header lines, and its BGPSessionState row.
    let pools = get("ipaddresspools", false);
    assert_eq!(
        operations_table(&operations, "NAME   ADDRESSES").0,
        pools.columns,
        "docs/operations.md: IPAddressPool status"
    );
    let (columns, row) = operations_table(&operations, "NAME            NODE");
    let sessions = get("bgpsessionstates", false);
    assert_eq!(
        columns, sessions.columns,
        "docs/operations.md: bgpsessionstates"
    );
    let documented_row = cells(
        row.expect("the documented row"),
        &column_starts(
            operations
                .lines()
                .filter_map(|line| line.strip_prefix("# "))
                .find(|line| line.starts_with("NAME            NODE"))
                .expect("header"),
        ),
    );
    for (column, value) in columns.iter().zip(&documented_row) {
        let printed = sessions.cell("session-p4gs6", column);
        if column == "UPTIME" {
            // A duration since establishedTime (5 minutes ago), printed as `kubectl get` does.
            let seconds = human_seconds(printed);
            assert!((300..3600).contains(&seconds), "UPTIME {printed}");
            assert_eq!(human_seconds(value), 300, "the documented {value}");
        } else {
            assert_eq!(printed, value, "bgpsessionstates {column}");
        }
    }

    // Values of the created objects.
    for (plural, row, column, value) in [
        (
            "ipaddresspools",
            "prod",
            "ADDRESSES",
            r#"["192.0.2.0/24","2001:db8::/120"]"#,
        ),
        ("ipaddresspools", "prod", "AUTO ASSIGN", "false"),
        ("ipaddresspools", "prod", "ASSIGNED IPV4", "2"),
        ("ipaddresspools", "prod", "ASSIGNED IPV6", "1"),
        ("ipaddresspools", "prod", "AVAILABLE IPV4", "252"),
        ("ipaddresspools", "prod", "AVAILABLE IPV6", "255"),
        ("l2advertisements", "lan", "IPADDRESSPOOLS", r#"["prod"]"#),
        ("l2advertisements", "lan", "INTERFACES", r#"["eth0"]"#),
        (
            "bgpadvertisements",
            "external",
            "PEERS",
            r#"["tor-a","tor-b"]"#,
        ),
        ("bgppeers", "tor-a", "ADDRESS", "192.0.2.1"),
        ("bgppeers", "tor-a", "ASN", "64501"),
        ("bgppeers", "tor-a", "MY ASN", "64500"),
        ("bgppeers", "tor-a", "BFD PROFILE", "fast"),
        ("bgppeers", "any-external", "ASN", ""),
        ("bfdprofiles", "fast", "PASSIVE MODE", "false"),
        ("bfdprofiles", "fast", "TRANSMIT INTERVAL", "200"),
        ("bfdprofiles", "fast", "RECEIVE INTERVAL", "100"),
        ("bfdprofiles", "fast", "MULTIPLIER", "4"),
        ("servicel2statuses", "l2-web", "SERVICE", "web"),
        (
            "servicel2statuses",
            "l2-web",
            "SERVICE NAMESPACE",
            "default",
        ),
        ("servicel2statuses", "l2-web", "NODE", "node-a"),
        ("servicebgpstatuses", "bgp-web", "NODE", "node-a"),
        (
            "servicebgpstatuses",
            "bgp-web",
            "PEERS",
            r#"["tor-a","tor-b"]"#,
        ),
    ] {
        assert_eq!(
            get(plural, false).cell(row, column),
            value,
            "{plural} {row} {column}"
        );
    }
    for (row, column, value) in [
        ("tor-a", "MULTI HOPS", "true"),
        ("any-external", "DYNAMIC ASN", "external"),
        ("any-external", "INTERFACE", ""),
    ] {
        assert_eq!(
            get("bgppeers", true).cell(row, column),
            value,
            "bgppeers -o wide {row} {column}"
        );
    }
    assert_eq!(
        get("l2advertisements", true).cell("lan", "NODE SELECTORS"),
        r#"[{"matchLabels":{"rack":"a"}}]"#
    );

    // `kubectl get ferrolb` lists every kind (category `ferrolb`).
    let all = kubectl_ok(
        &control_plane,
        &["get", "ferrolb", "-n", FERROLB_NAMESPACE, "-o", "name"],
        "",
    );
    let kinds: BTreeSet<&str> = all
        .lines()
        .filter_map(|line| line.split_once(".ferrolb.io/").map(|(kind, _)| kind))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "bfdprofile",
            "bgpadvertisement",
            "bgppeer",
            "bgpsessionstate",
            "community",
            "ipaddresspool",
            "l2advertisement",
            "servicebgpstatus",
            "servicel2status",
        ]),
        "{all}"
    );

    check_explain(&control_plane, &configuration);
    drop(control_plane);
    finish(&run_dir);
}

/// `kubectl explain <plural>.spec` (and `.status`) lists exactly the top-level fields of the
/// kind's table in docs/configuration.md (`status.conditions` aside where the table says it is
/// written by the controller).
fn check_explain(control_plane: &ControlPlane, doc: &str) {
    let sections: Vec<(&str, &str)> = doc
        .split("\n## ")
        .skip(1)
        .filter_map(|section| section.split_once('\n'))
        .collect();
    let mut checked = 0;
    for (title, body) in sections {
        let plural = match title.trim() {
            "IPAddressPool" => "ipaddresspools",
            "L2Advertisement" => "l2advertisements",
            "BGPAdvertisement" => "bgpadvertisements",
            "BGPPeer" => "bgppeers",
            "BFDProfile" => "bfdprofiles",
            "Community" => "communities",
            "ServiceL2Status" => "servicel2statuses",
            "ServiceBGPStatus" => "servicebgpstatuses",
            "BGPSessionState" => "bgpsessionstates",
            _ => continue,
        };
        for part in ["spec", "status"] {
            // Every `spec.x...` named in the first cell of a table row: its top-level field.
            let documented: BTreeSet<String> = body
                .lines()
                .filter(|line| line.starts_with("| `"))
                .filter_map(|line| line.split('|').nth(1))
                .flat_map(|cell| cell.split('`').skip(1).step_by(2))
                .filter_map(|path| path.strip_prefix(&format!("{part}.")))
                .map(|path| {
                    path.split(['.', '['])
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            let explained =
                kubectl_ok(control_plane, &["explain", &format!("{plural}.{part}")], "");
            let fields: BTreeSet<String> = explained
                .lines()
                .filter_map(|line| line.strip_prefix("  "))
                .filter(|line| !line.starts_with(' '))
                .filter_map(|line| line.split_once('\t').map(|(field, _)| field.to_string()))
                .collect();
            assert_eq!(
                documented, fields,
                "docs/configuration.md's {title} table vs kubectl explain {plural}.{part}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 18, "every kind's spec and status");
}
