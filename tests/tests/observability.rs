//! What an operator monitors FerroLB with (issue #16): the alert rules
//! `config/prometheus/rules.yaml`, their promtool unit tests `config/prometheus/rules_test.yaml`
//! and the Grafana dashboard `config/grafana/ferrolb.json`.
//!
//! * `promtool check rules` and `promtool test rules` pass (promtool is in Debian's
//!   `prometheus` package; without it these tests skip, or FAIL when `CI` is set);
//! * every alert has a `severity` and `summary`, `description` and `runbook_url` annotations, its
//!   runbook anchor is a heading of `docs/operations.md` (GitHub's anchor rules), and the unit
//!   tests have a case where it fires and one where it must not;
//! * every metric the rules and the dashboard's queries use is documented in
//!   `docs/operations.md`'s metric tables, and every dashboard query is valid PromQL;
//! * in the lab ([`e2e_prometheus_fires_the_alerts_in_the_lab`]; root, skipped otherwise, FAILS
//!   when `CI` is set) a real Prometheus inside the client's namespace scrapes the real
//!   controller and speakers with these rules loaded (their `for:` shortened): nothing fires in
//!   the healthy lab; an exhausted pool makes the pool-exhausted and the pending alert fire; a
//!   node cut off makes the membership-partitioned alert fire (and clear when it is back); every
//!   dashboard query runs, and every metric it queries is exported by the live controller or a
//!   speaker. The healthy lab has a layer2 Service and a BGP Service advertised by every node
//!   over BGP sessions with BFD. Families that get their first series with an event (the client
//!   library writes nothing for an empty family) get that event first: a junk BFD datagram, ARP
//!   requests for an unused address, and a status write that RBAC refuses, each asserted to be
//!   counted.
//!
//! Run (as root): `cargo test -p ferrolb-tests --test observability -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_tests::harness::{TestLab, eventually_ok, require_root};
use ferrolb_tests::l2probe::{self, L2Probe};
use ferrolb_tests::netlab::netns;
use ferrolb_tests::netlab::router::bfd_profile_manifest;
use ferrolb_tests::netlab::topology::{CONTROL_PLANE_V4, NODE_ASN, ROUTER_ASN, ROUTER_LAN_V4};
use ferrolb_tests::paths;
use ferrolb_tests::process::Background;
use serde::Deserialize;
use serde_json::Value;

const RULES: &str = "config/prometheus/rules.yaml";
const RULES_TEST: &str = "config/prometheus/rules_test.yaml";
const DASHBOARD: &str = "config/grafana/ferrolb.json";
const OPERATIONS: &str = "docs/operations.md";
/// Where every `runbook_url` points: the runbooks in docs/operations.md (one base for all rules;
/// rules.yaml says so in its header).
const RUNBOOK_BASE: &str = "https://github.com/ferrolb/ferrolb/blob/main/docs/operations.md#";
const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];
/// The scrape jobs rules.yaml assumes.
const CONTROLLER_JOB: &str = "ferrolb-controller";
const SPEAKER_JOB: &str = "ferrolb-speaker";
const CONTROLLER_METRICS_PORT: u16 = 7472;

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

fn workspace(path: &str) -> PathBuf {
    paths::workspace_root().join(path)
}

fn read(path: &str) -> String {
    let path = workspace(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Prometheus program on `PATH`; `None` (the test skips with a printed reason) when it is not
/// installed, a panic instead when `CI` is set.
fn prometheus_tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|dirs| {
        std::env::split_paths(&dirs)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{test}: CI is set and `{name}` is not installed (Debian package `prometheus`)"
        );
        eprintln!("SKIPPED {test}: `{name}` is not on PATH (Debian package `prometheus`)");
    }
    found
}

/// Runs a command; panics with its output unless it succeeds. Returns stdout and stderr.
fn run_ok(mut command: Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

// ---------------------------------------------------------------------------------------------
// The files, parsed.

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_duration: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn rules() -> Vec<Rule> {
    let file: RuleFile = serde_saphyr::from_str(&read(RULES)).expect("rules.yaml parses");
    assert!(!file.groups.is_empty(), "rules.yaml has no groups");
    file.groups
        .into_iter()
        .inspect(|group| assert!(!group.rules.is_empty(), "group {} is empty", group.name))
        .flat_map(|group| group.rules)
        .collect()
}

fn alerts() -> Vec<(String, Rule)> {
    rules()
        .into_iter()
        .filter_map(|rule| Some((rule.alert.clone()?, rule)))
        .collect()
}

#[derive(Debug, Deserialize)]
struct UnitTests {
    tests: Vec<UnitTest>,
}

#[derive(Debug, Deserialize)]
struct UnitTest {
    name: String,
    #[serde(default)]
    alert_rule_test: Vec<AlertCase>,
}

#[derive(Debug, Deserialize)]
struct AlertCase {
    alertname: String,
    eval_time: String,
    #[serde(default)]
    exp_alerts: Vec<Value>,
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel of the dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, query) for every query target of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |target| {
                    Some((title.clone(), target["expr"].as_str()?.to_string()))
                })
        })
        .collect()
}

/// A dashboard query with Grafana's interval variables replaced, as Prometheus gets it.
fn as_prometheus_sees_it(query: &str, rate_interval: &str, interval: &str) -> String {
    query
        .replace("$__rate_interval", rate_interval)
        .replace("$__interval", interval)
}

// ---------------------------------------------------------------------------------------------
// Metric names: crude PromQL parsing and docs/operations.md's tables.

/// The `ferrolb_*` and `process_*` identifiers in a PromQL expression (string literals, i.e.
/// label values, skipped).
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut text = String::with_capacity(promql.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in promql.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                text.push(' ');
            }
            None if matches!(c, '"' | '\'' | '`') => {
                quote = Some(c);
                text.push(' ');
            }
            None => text.push(c),
        }
    }
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("ferrolb_") || token.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// A histogram's series name (`_bucket`, `_sum`, `_count`) as its family name, if `histograms`
/// has that family.
fn family_name(name: &str, histograms: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && histograms.contains(base)
        {
            return base.to_string();
        }
    }
    name.to_string()
}

/// Metric names known from some source, with the histogram families among them.
#[derive(Debug, Default)]
struct Known {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
}

impl Known {
    /// The names in `names` that are not known (histogram series by their family).
    fn missing<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        names
            .into_iter()
            .map(|name| family_name(name, &self.histograms))
            .filter(|name| !self.names.contains(name))
            .collect()
    }
}

fn is_metric_name(text: &str) -> bool {
    (text.starts_with("ferrolb_") || text.starts_with("process_"))
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The metrics documented in docs/operations.md's "## Metrics" section: the first cell of each
/// table row (its second cell is the type), and the `process_*` names listed in backticks.
fn documented_metrics(markdown: &str) -> Known {
    let mut known = Known::default();
    let section = markdown
        .lines()
        .skip_while(|line| line.trim() != "## Metrics")
        .skip(1)
        .take_while(|line| !line.starts_with("## "));
    for line in section {
        if line.trim_start().starts_with('|') {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next().unwrap_or_default().trim_matches('`');
            if is_metric_name(name) {
                known.names.insert(name.to_string());
                if cells.next() == Some("histogram") {
                    known.histograms.insert(name.to_string());
                }
            }
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("process_") && is_metric_name(span) {
                known.names.insert(span.to_string());
            }
        }
    }
    known
}

/// The metrics in a text exposition: `# TYPE` and `# HELP` names (counters also with `_total`),
/// sample names, histogram families.
fn exported_metrics(exposition: &str) -> Known {
    let mut known = Known::default();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), kind) = (words.next(), words.next()) else {
                continue;
            };
            known.names.insert(name.to_string());
            match kind {
                Some("counter") if !name.ends_with("_total") => {
                    known.names.insert(format!("{name}_total"));
                }
                Some("histogram") => {
                    known.histograms.insert(name.to_string());
                }
                _ => {}
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(name) = rest.split_whitespace().next() {
                known.names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            known.names.insert(name.to_string());
        }
    }
    known
}

// ---------------------------------------------------------------------------------------------
// Markdown anchors, as GitHub makes them.

/// GitHub's anchor for a heading's text: lower case, punctuation other than `-` and `_`
/// removed (inline code's backticks too), spaces to `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Every heading anchor of a Markdown page (outside fenced code; a repeated heading gets `-1`,
/// `-2`, ... as on GitHub).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.bytes().take_while(|b| *b == b'#').count();
        let Some(text) = line.get(hashes..).and_then(|t| t.strip_prefix(' ')) else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let anchor = github_anchor(text);
        let count = seen.entry(anchor.clone()).or_insert(0);
        out.insert(if *count == 0 {
            anchor
        } else {
            format!("{anchor}-{count}")
        });
        *count += 1;
    }
    out
}

/// The targets of Markdown links `](target)` on a page.
fn link_targets(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| Some(rest.split_once(')')?.0.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Static checks.

#[test]
fn promtool_checks_the_rules() {
    let Some(promtool) = prometheus_tool("promtool", "promtool_checks_the_rules") else {
        return;
    };
    let mut check = Command::new(promtool);
    check.arg("check").arg("rules").arg(workspace(RULES));
    let out = run_ok(check, "promtool check rules");
    println!("{out}");
    let alerts = alerts().len();
    assert!(
        out.contains(&format!("SUCCESS: {alerts} rules found")),
        "promtool saw another number of rules than the {alerts} alerts parsed here:\n{out}"
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let Some(promtool) = prometheus_tool("promtool", "promtool_unit_tests_pass") else {
        return;
    };
    let mut test = Command::new(promtool);
    test.arg("test").arg("rules").arg(workspace(RULES_TEST));
    println!("{}", run_ok(test, "promtool test rules"));
}

#[test]
fn every_alert_has_severity_annotations_and_a_runbook_anchor() {
    let alerts = alerts();
    assert!(!alerts.is_empty());
    let names: BTreeSet<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "alert names repeat");
    let headings = anchors(&read(OPERATIONS));
    for (name, rule) in &alerts {
        assert!(rule.record.is_none(), "{name}: both alert and record");
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            severity.is_some_and(|s| SEVERITIES.contains(&s)),
            "{name}: severity {severity:?} is not one of {SEVERITIES:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule.annotations
                    .get(key)
                    .is_some_and(|v| !v.trim().is_empty()),
                "{name}: no {key} annotation"
            );
        }
        let url = &rule.annotations["runbook_url"];
        let anchor = url.strip_prefix(RUNBOOK_BASE).unwrap_or_else(|| {
            panic!("{name}: runbook_url {url} does not start with {RUNBOOK_BASE}")
        });
        assert_eq!(
            anchor,
            name.to_lowercase(),
            "{name}: the runbook is the heading named like the alert"
        );
        assert!(
            headings.contains(anchor),
            "{name}: {OPERATIONS} has no heading with anchor #{anchor}"
        );
        if let Some(duration) = &rule.for_duration {
            assert!(
                duration.ends_with(['s', 'm', 'h']),
                "{name}: for: {duration}"
            );
        }
    }
}

#[test]
fn links_in_operations_md_resolve() {
    let page = read(OPERATIONS);
    let own = anchors(&page);
    let mut broken = Vec::new();
    for target in link_targets(&page) {
        if target.contains("://") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
        let file_anchors = if file.is_empty() {
            own.clone()
        } else {
            let path = workspace("docs").join(file);
            match fs::read_to_string(&path) {
                Ok(text) => anchors(&text),
                Err(_) => {
                    broken.push(format!("{target}: no file {}", path.display()));
                    continue;
                }
            }
        };
        if !anchor.is_empty() && !file_anchors.contains(anchor) {
            broken.push(format!("{target}: no such heading"));
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in {OPERATIONS}: {broken:#?}"
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_promtool_case() {
    let tests: UnitTests =
        serde_saphyr::from_str(&read(RULES_TEST)).expect("rules_test.yaml parses");
    let mut fires: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut quiet: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for test in &tests.tests {
        for case in &test.alert_rule_test {
            let at = format!("{} @ {}", test.name, case.eval_time);
            let cases = if case.exp_alerts.is_empty() {
                &mut quiet
            } else {
                &mut fires
            };
            cases.entry(case.alertname.clone()).or_default().push(at);
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().map(|(name, _)| name).collect();
    for name in &names {
        println!(
            "{name}: fires in {:?}; must not in {:?}",
            fires.get(name),
            quiet.get(name)
        );
    }
    let tested: BTreeSet<&String> = fires.keys().chain(quiet.keys()).collect();
    let unknown: Vec<&&String> = tested.iter().filter(|n| !names.contains(**n)).collect();
    assert!(
        unknown.is_empty(),
        "tests for alerts that do not exist: {unknown:?}"
    );
    let no_fire: Vec<&String> = names.iter().filter(|n| !fires.contains_key(*n)).collect();
    let no_quiet: Vec<&String> = names.iter().filter(|n| !quiet.contains_key(*n)).collect();
    assert!(no_fire.is_empty(), "no case where these fire: {no_fire:?}");
    assert!(
        no_quiet.is_empty(),
        "no case where these must not fire: {no_quiet:?}"
    );
}

#[test]
fn rules_and_dashboard_use_only_documented_metrics() {
    let documented = documented_metrics(&read(OPERATIONS));
    assert!(
        documented.names.contains("ferrolb_leader")
            && documented.names.contains("ferrolb_speaker_announced")
            && documented.names.contains("process_resident_memory_bytes"),
        "the metric tables of {OPERATIONS} were not found: {:?}",
        documented.names
    );
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, rule) in alerts() {
        let used = metric_names(&rule.expr);
        assert!(!used.is_empty(), "{name} uses no FerroLB metric");
        for metric in documented.missing(&used) {
            missing
                .entry(metric)
                .or_default()
                .insert(format!("alert {name}"));
        }
    }
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    for (title, query) in &queries {
        let used = metric_names(query);
        assert!(
            !used.is_empty(),
            "panel {title:?}: {query} uses no FerroLB metric"
        );
        for metric in documented.missing(&used) {
            missing
                .entry(metric)
                .or_default()
                .insert(format!("panel {title:?}"));
        }
    }
    println!(
        "{} alerts and {} dashboard queries checked against {} documented metrics",
        alerts().len(),
        queries.len(),
        documented.names.len()
    );
    assert!(
        missing.is_empty(),
        "used but not documented in {OPERATIONS}'s metric tables: {missing:#?}"
    );
}

#[test]
fn dashboard_is_well_formed_and_its_queries_are_valid_promql() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no `datasource` variable of type datasource (prometheus)"
    );
    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?}: no id"));
        assert!(ids.insert(id), "panel id {id} repeats ({title:?})");
        if panel["type"] == "row" {
            rows.push(title.to_string());
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?}: datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title:?}: a target's datasource"
            );
        }
    }
    println!("rows: {rows:?}");
    for wanted in [
        "Controller health",
        "Address pools",
        "Announcements",
        "Failovers",
        "Membership",
        "Layer2 traffic",
        "BGP and BFD",
    ] {
        assert!(rows.iter().any(|r| r == wanted), "no row {wanted:?}");
    }

    // Valid PromQL: every query as a recording rule, checked by promtool.
    let Some(promtool) = prometheus_tool(
        "promtool",
        "dashboard_is_well_formed_and_its_queries_are_valid_promql (PromQL part)",
    ) else {
        return;
    };
    let mut file = String::from("groups:\n- name: dashboard\n  rules:\n");
    let queries = dashboard_queries(&dashboard);
    for (i, (_, query)) in queries.iter().enumerate() {
        let expr = as_prometheus_sees_it(query, "1m", "1m");
        let quoted = serde_json::to_string(&expr).expect("a string");
        file.push_str(&format!(
            "  - record: dashboard:query{i}\n    expr: {quoted}\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("ferrolb-dashboard-{}.yaml", std::process::id()));
    fs::write(&path, file).expect("write the dashboard's queries");
    let mut check = Command::new(promtool);
    check.arg("check").arg("rules").arg(&path);
    let out = run_ok(check, "promtool check rules (the dashboard's queries)");
    let _ = fs::remove_file(&path);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

#[test]
fn parsers_of_this_file_work() {
    assert_eq!(
        github_anchor("Runbook: my Service is `<pending>`"),
        "runbook-my-service-is-pending"
    );
    assert_eq!(
        github_anchor("Runbook: failover is slow (or does not happen)"),
        "runbook-failover-is-slow-or-does-not-happen"
    );
    assert_eq!(github_anchor("FerroLBConfigStale"), "ferrolbconfigstale");
    let page = "# A\n## B c\n```\n# not a heading\n```\n## B c\n";
    assert_eq!(
        anchors(page),
        BTreeSet::from(["a".to_string(), "b-c".to_string(), "b-c-1".to_string()])
    );
    assert_eq!(
        metric_names(
            "sum by (le) (rate(ferrolb_x_seconds_bucket{job=~\"ferrolb_y\"}[5m])) / process_open_fds"
        ),
        BTreeSet::from([
            "ferrolb_x_seconds_bucket".to_string(),
            "process_open_fds".to_string()
        ])
    );
    let exposition = "# HELP ferrolb_a A.\n# TYPE ferrolb_a counter\nferrolb_a_total 1\n\
                      # TYPE ferrolb_h_seconds histogram\nferrolb_h_seconds_bucket{le=\"1\"} 0\n# EOF\n";
    let known = exported_metrics(exposition);
    assert!(known.names.contains("ferrolb_a_total"));
    assert!(
        known
            .missing(&["ferrolb_h_seconds_count".to_string()])
            .is_empty()
    );
    assert_eq!(
        known.missing(&["ferrolb_b".to_string()]),
        BTreeSet::from(["ferrolb_b".to_string()])
    );
    let documented = documented_metrics(
        "## Metrics\n| `ferrolb_r_seconds` | histogram | — | x |\nSee `process_open_fds`.\n## Next\n| `ferrolb_no` | gauge |\n",
    );
    assert_eq!(
        documented.names,
        BTreeSet::from([
            "ferrolb_r_seconds".to_string(),
            "process_open_fds".to_string()
        ])
    );
    assert!(documented.histograms.contains("ferrolb_r_seconds"));
}

// ---------------------------------------------------------------------------------------------
// The lab: a real Prometheus, the real controller and speakers.

/// Every `for:` of the rules in the lab copy. The real ones (minutes) would make the test wait
/// for minutes; the shortened ones still exercise the same rule evaluation (pending, then
/// firing), and are longer than the lab's scrape and evaluation interval.
const LAB_FOR: &str = "5s";
/// Scrape and rule evaluation interval of the lab's Prometheus.
const LAB_INTERVAL: &str = "1s";
/// Prometheus listens on the client namespace's loopback only.
const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";
/// How long the healthy lab is watched for alerts (several `for` periods).
const HEALTHY_WATCH: Duration = Duration::from_secs(30);
/// Hang guards (not speed assertions) for the alerts to fire or clear.
const ALERT_TIMEOUT: Duration = Duration::from_secs(180);
/// The fault of case (a): a pool with a single address, and two Services that ask for it.
const TINY_POOL_IP: &str = "192.0.2.230";
/// The node cut off in case (b).
const CUT_NODE: &str = "node3";
/// The BGP half of the healthy lab: a pool only `web-bgp` asks for, advertised to the lab
/// router over a session with BFD from every node.
const BGP_POOL: &str = "203.0.113.128/28";
/// The BFD port (single hop).
const BFD_PORT: u16 = 3784;
/// An address on the LAN that nobody has: ARP requests for it are dropped by the speakers.
const UNUSED_LAN_IP: &str = "192.0.2.250";

/// The rules with every `for:` replaced by `for_duration`; panics unless every rule that has a
/// `for` got the new one.
fn with_short_for(rules_yaml: &str, for_duration: &str) -> String {
    let mut replaced = 0;
    let mut out = String::with_capacity(rules_yaml.len());
    for line in rules_yaml.lines() {
        let body = line.trim_start();
        if body.starts_with("for: ") {
            let indent = &line[..line.len() - body.len()];
            out.push_str(&format!("{indent}for: {for_duration}"));
            replaced += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let with_for = alerts()
        .iter()
        .filter(|(_, rule)| rule.for_duration.is_some())
        .count();
    assert_eq!(
        replaced, with_for,
        "for: lines replaced vs rules with a for"
    );
    out
}

/// The lab's Prometheus configuration: the controller and every speaker, under the job names the
/// rules assume, scraped and evaluated every [`LAB_INTERVAL`].
fn prometheus_config(lab: &TestLab) -> String {
    let speakers: Vec<String> = lab
        .netlab()
        .topology
        .nodes()
        .map(|node| format!("\"{}:{}\"", node.ipv4, l2probe::SPEAKER_METRICS_PORT))
        .collect();
    format!(
        "global:
  scrape_interval: {LAB_INTERVAL}
  scrape_timeout: {LAB_INTERVAL}
  evaluation_interval: {LAB_INTERVAL}
rule_files: [rules.yaml]
scrape_configs:
- job_name: {CONTROLLER_JOB}
  static_configs: [{{targets: [\"{CONTROL_PLANE_V4}:{CONTROLLER_METRICS_PORT}\"]}}]
- job_name: {SPEAKER_JOB}
  static_configs: [{{targets: [{}]}}]
",
        speakers.join(", ")
    )
}

/// One alert as Prometheus's `/api/v1/alerts` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ActiveAlert {
    name: String,
    state: String,
    labels: BTreeMap<String, String>,
}

impl ActiveAlert {
    fn firing(&self) -> bool {
        self.state == "firing"
    }

    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

impl fmt::Display for ActiveAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname" && *k != "severity")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(f, "{}{{{}}} {}", self.name, labels.join(","), self.state)
    }
}

/// The lab's Prometheus, reached with curl inside the namespace it runs in.
struct Prometheus {
    ns: String,
}

impl Prometheus {
    /// `GET <path>` with URL-encoded query parameters: the `data` of a successful answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut curl = netns::exec(&self.ns, "curl");
        curl.args(["-sS", "--max-time", "5", "-G"]);
        for (key, value) in params {
            curl.arg("--data-urlencode").arg(format!("{key}={value}"));
        }
        curl.arg(format!("http://{PROMETHEUS_ADDR}{path}"));
        let out = ferrolb_tests::cmd::stdout(curl).map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&out).map_err(|e| format!("{path}: {e}: {out}"))?;
        if answer["status"] != "success" {
            return Err(format!("{path} {params:?}: {answer}"));
        }
        Ok(answer["data"].clone())
    }

    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", promql)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    fn alerts(&self) -> Result<Vec<ActiveAlert>, String> {
        let data = self.api("/api/v1/alerts", &[])?;
        let mut alerts: Vec<ActiveAlert> = data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|alert| {
                let labels: BTreeMap<String, String> = alert["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                ActiveAlert {
                    name: labels.get("alertname").cloned().unwrap_or_default(),
                    state: alert["state"].as_str().unwrap_or_default().to_string(),
                    labels,
                }
            })
            .collect();
        alerts.sort();
        Ok(alerts)
    }

    /// Waits until `alert` fires for every label set in `wanted` (each a list of label
    /// pairs); returns every firing alert of that name.
    fn wait_firing(&self, alert: &str, wanted: &[&[(&str, &str)]]) -> Vec<ActiveAlert> {
        eventually_ok(
            &format!("alert {alert} fires for {wanted:?}"),
            ALERT_TIMEOUT,
            || {
                let alerts = self.alerts()?;
                let firing: Vec<ActiveAlert> = alerts
                    .iter()
                    .filter(|a| a.name == alert && a.firing())
                    .cloned()
                    .collect();
                let all = wanted.iter().all(|labels| {
                    firing
                        .iter()
                        .any(|a| labels.iter().all(|(k, v)| a.label(k) == *v))
                });
                if all {
                    Ok(firing)
                } else {
                    Err(format!("active: {}", describe(&alerts)))
                }
            },
        )
    }
}

fn describe(alerts: &[ActiveAlert]) -> String {
    if alerts.is_empty() {
        return "none".to_string();
    }
    alerts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A node cut off at its switch port, reconnected on drop (also when the test panics).
struct CutOff<'a> {
    lab: &'a TestLab,
    node: &'a str,
}

impl<'a> CutOff<'a> {
    fn new(lab: &'a TestLab, node: &'a str) -> CutOff<'a> {
        lab.netlab()
            .set_port(node, false)
            .unwrap_or_else(|e| panic!("cutting {node} off: {e}"));
        CutOff { lab, node }
    }
}

impl Drop for CutOff<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.lab.netlab().set_port(self.node, true) {
            eprintln!("reconnecting {}: {err}", self.node);
        }
    }
}

/// An IPv4 Service `default/<name>` (from `pool` if given) and an EndpointSlice with a ready
/// endpoint on each node.
fn ipv4_service_manifest(name: &str, pool: Option<&str>, nodes: &[&str]) -> String {
    let annotations = pool.map_or(String::new(), |pool| {
        format!("  annotations: {{ferrolb.io/address-pool: {pool}}}\n")
    });
    let mut yaml = format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
{annotations}spec:
  type: LoadBalancer
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
"
    );
    if nodes.is_empty() {
        return yaml;
    }
    yaml.push_str(&format!(
        "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-e2e
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
"
    ));
    for node in nodes {
        let index: u8 = node.trim_start_matches("node").parse().unwrap_or(1);
        yaml.push_str(&format!(
            "- addresses: [\"192.0.2.{}\"]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true}}\n",
            10 + index
        ));
    }
    yaml
}

/// The BGP half of the healthy lab: pool `e2e-bgp` (no autoAssign), a BGPAdvertisement for it,
/// a BFDProfile with the lab router's timers, a BGPPeer to the router's IPv4 address that uses
/// it, and the Service `web-bgp` from that pool with an endpoint on every node.
fn bgp_manifest(nodes: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: e2e-bgp, namespace: ferrolb-system}}
spec:
  addresses: [\"{BGP_POOL}\"]
  autoAssign: false
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: e2e-bgp, namespace: ferrolb-system}}
spec:
  ipAddressPools: [e2e-bgp]
---
{}apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {{name: router-v4, namespace: ferrolb-system}}
spec: {{myASN: {NODE_ASN}, peerASN: {ROUTER_ASN}, peerAddress: \"{ROUTER_LAN_V4}\", bfdProfile: e2e-bfd}}
",
        bfd_profile_manifest("e2e-bfd")
    );
    yaml.push_str(&ipv4_service_manifest("web-bgp", Some("e2e-bgp"), nodes));
    yaml
}

/// The controller's ClusterRole without `services/status` while it lives, restored on drop (also
/// when the test panics): the API server refuses the controller's status writes.
struct StatusWritesRefused<'a> {
    probe: &'a L2Probe<'a>,
    original: std::path::PathBuf,
}

impl<'a> StatusWritesRefused<'a> {
    fn new(probe: &'a L2Probe<'a>) -> StatusWritesRefused<'a> {
        let mut role: Value = serde_json::from_str(&probe.kubectl(&[
            "get",
            "clusterrole",
            "ferrolb-controller",
            "-o",
            "json",
        ]))
        .expect("the controller's ClusterRole as JSON");
        if let Some(metadata) = role["metadata"].as_object_mut() {
            for key in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
            ] {
                metadata.remove(key);
            }
        }
        let dir = probe.lab().run_dir();
        let original = dir.join("controller-clusterrole.json");
        fs::write(&original, role.to_string()).expect("save the ClusterRole");
        let rules = role["rules"].as_array_mut().expect("rules");
        let before = rules.len();
        rules.retain(|rule| {
            !rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "services/status"))
        });
        assert_eq!(rules.len() + 1, before, "one rule grants services/status");
        let refused = dir.join("controller-clusterrole-refused.json");
        fs::write(&refused, role.to_string()).expect("write the refused ClusterRole");
        probe.kubectl(&["replace", "-f", &refused.display().to_string()]);
        StatusWritesRefused { probe, original }
    }
}

impl Drop for StatusWritesRefused<'_> {
    fn drop(&mut self) {
        let restored = self.probe.lab().control_plane().kubectl_output([
            "replace",
            "-f",
            &self.original.display().to_string(),
        ]);
        if let Err(err) = restored {
            eprintln!("restoring the controller's ClusterRole: {err:#}");
        }
    }
}

/// The pool with one address (no autoAssign) and two IPv4 Services that ask for it.
fn tiny_pool_manifest() -> String {
    let mut yaml = format!(
        "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {{name: tiny, namespace: ferrolb-system}}
spec:
  addresses: [\"{TINY_POOL_IP}/32\"]
  autoAssign: false
"
    );
    for service in ["tiny-1", "tiny-2"] {
        yaml.push_str(&ipv4_service_manifest(service, Some("tiny"), &[]));
    }
    yaml
}

/// A live `/metrics`, fetched from inside `ns`.
fn scrape(ns: &str, url: &str) -> String {
    let mut curl = netns::exec(ns, "curl");
    curl.args(["-sS", "--max-time", "5", url]);
    ferrolb_tests::cmd::stdout(curl).unwrap_or_else(|e| panic!("scraping {url}: {e}"))
}

#[test]
fn e2e_prometheus_fires_the_alerts_in_the_lab() {
    const TEST: &str = "e2e_prometheus_fires_the_alerts_in_the_lab";
    if !require_root(TEST) {
        return;
    }
    let Some(prometheus_bin) = prometheus_tool("prometheus", TEST) else {
        return;
    };
    let started = Instant::now();
    let Some(lab) = TestLab::start(TEST, 3).expect("lab up") else {
        return;
    };
    eprintln!("lab up after {:?}", started.elapsed());
    let probe = L2Probe::new(&lab);
    let topology = &lab.netlab().topology;
    let nodes: Vec<String> = topology.nodes().map(|n| n.name.clone()).collect();
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();

    // A healthy lab: membership formed, a layer2 Service answered by one node, and a BGP
    // Service that every node advertises to the router over a session with BFD (so that the
    // healthy check also covers the BGP, BFD and "two announcers" rules, and the BGP and BFD
    // metric families exist for the dashboard check).
    probe.wait_for_membership_secret();
    probe.wait_for_members(3, Duration::from_secs(60));
    probe.apply("web", &l2probe::manifest("web", false, &node_refs));
    probe.apply("web-bgp", &bgp_manifest(&node_refs));
    let (v4, v6) = probe.service_ips("web", l2probe::ASSIGN_TIMEOUT);
    let client = topology.client_ns();
    let owner_mac =
        probe.wait_single_answerer_from(&client, std::net::IpAddr::V4(v4), Duration::from_secs(60));
    probe.wait_single_answerer_from(&client, std::net::IpAddr::V6(v6), Duration::from_secs(60));
    eprintln!(
        "Service default/web: {v4}, {v6}, answered by {}",
        probe.node_of_mac(&owner_mac)
    );

    // Prometheus in the client's namespace. The rules are loaded once every target has been
    // scraped: Prometheus applies its targets only some seconds after it starts (its scrape
    // manager takes target updates every 5 s) while rule evaluation starts at once, and with
    // no data yet FerroLBNoControllerLeader (`or vector(0)`: none scraped counts as no leader)
    // would fire within the shortened `for`. The real `for: 1m` outlasts that start.
    let dir = lab.run_dir().join("prometheus");
    fs::create_dir_all(dir.join("data")).expect("prometheus directory");
    fs::write(dir.join("prometheus.yml"), prometheus_config(&lab)).expect("prometheus.yml");
    fs::write(dir.join("rules.yaml"), "groups: []\n").expect("empty rules");
    let process = Background {
        name: "prometheus",
        ns: &client,
        program: &prometheus_bin,
        args: vec![
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={PROMETHEUS_ADDR}"),
            "--storage.tsdb.retention.time=1h".to_string(),
        ],
        env: BTreeMap::new(),
        dir: lab.run_dir(),
    }
    .start()
    .expect("start prometheus");
    eprintln!("prometheus: {process} in {client}");
    let prometheus = Prometheus { ns: client.clone() };
    let targets = 1 + nodes.len();
    eventually_ok(
        &format!("Prometheus scrapes all {targets} targets"),
        Duration::from_secs(60),
        || {
            let data = prometheus.api("/api/v1/targets", &[])?;
            let active = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let up = active.iter().filter(|t| t["health"] == "up").count();
            if active.len() == targets && up == targets {
                Ok(())
            } else {
                Err(format!("{up} of {} targets up: {active:?}", active.len()))
            }
        },
    );
    let speakers = nodes.len();
    eventually_ok(
        &format!("{speakers} BGP sessions Established and BFD Up, web-bgp advertised by all"),
        Duration::from_secs(90),
        || {
            let count = |promql: &str| -> Result<usize, String> {
                Ok(prometheus
                    .query(promql)?
                    .first()
                    .and_then(|s| s["value"][1].as_str()?.parse().ok())
                    .unwrap_or(0))
            };
            let sessions = count("count(ferrolb_speaker_bgp_session_up == 1)")?;
            let bfd = count("count(ferrolb_speaker_bfd_session_up == 1)")?;
            let advertised = count(
                "count(ferrolb_speaker_announced{protocol=\"bgp\",service=\"default/web-bgp\"} == 1)",
            )?;
            if sessions == speakers && bfd == speakers && advertised == speakers {
                Ok(())
            } else {
                Err(format!(
                    "sessions up {sessions}, BFD up {bfd}, nodes advertising web-bgp {advertised}"
                ))
            }
        },
    );

    // The rules, `for:` shortened, loaded with a reload (SIGHUP).
    fs::write(
        dir.join("rules.yaml"),
        with_short_for(&read(RULES), LAB_FOR),
    )
    .expect("rules");
    ferrolb_tests::process::signal(process.pid, libc::SIGHUP);
    let rules_loaded = Instant::now();
    eventually_ok(
        "Prometheus loaded and evaluated both rule groups",
        Duration::from_secs(30),
        || {
            let data = prometheus.api("/api/v1/rules", &[])?;
            let groups = data["groups"].as_array().cloned().unwrap_or_default();
            let evaluated = groups
                .iter()
                .filter(|g| {
                    g["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001-"))
                })
                .count();
            let loaded: usize = groups
                .iter()
                .map(|g| g["rules"].as_array().map_or(0, Vec::len))
                .sum();
            if groups.len() == 2 && evaluated == 2 && loaded == alerts().len() {
                Ok(())
            } else {
                Err(format!(
                    "{evaluated} of {} groups evaluated, {loaded} rules",
                    groups.len()
                ))
            }
        },
    );

    // Healthy: nothing fires, watched for several `for` periods; and nothing fired since the
    // rules were loaded (Prometheus's own ALERTS series, between the polls too).
    let watch_start = Instant::now();
    let mut firing_seen = BTreeSet::new();
    let mut pending_seen = BTreeSet::new();
    while watch_start.elapsed() < HEALTHY_WATCH {
        for alert in prometheus.alerts().expect("alerts") {
            if alert.firing() {
                firing_seen.insert(alert.to_string());
            } else {
                pending_seen.insert(alert.to_string());
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let since_rules = rules_loaded.elapsed().as_secs() + 5;
    let ever_fired: BTreeSet<String> = prometheus
        .query(&format!(
            "max_over_time(ALERTS{{alertstate=\"firing\"}}[{since_rules}s])"
        ))
        .expect("ALERTS")
        .iter()
        .map(|series| {
            series["metric"]["alertname"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    // Why an alert was pending (riding out a blip is what `for` is for): failed scrapes, or
    // scrapes of different targets at different moments (during the first seconds).
    let failed_scrapes: Vec<String> = prometheus
        .query(&format!(
            "count_over_time(up[{since_rules}s]) - sum_over_time(up[{since_rules}s]) > 0"
        ))
        .expect("failed scrapes")
        .iter()
        .map(|s| {
            let instance = s["metric"]["instance"].as_str().unwrap_or("?");
            let failed = s["value"][1].as_str().unwrap_or("?");
            format!("{instance}: {failed}")
        })
        .collect();
    eprintln!(
        "healthy lab, watched {HEALTHY_WATCH:?}: firing {firing_seen:?}, pending (not firing) \
         {pending_seen:?}, ALERTS firing since the rules were loaded: {ever_fired:?}; \
         failed scrapes since then: {failed_scrapes:?}"
    );
    assert!(
        firing_seen.is_empty() && ever_fired.is_empty(),
        "alerts fired in the healthy lab: {firing_seen:?} / {ever_fired:?}"
    );

    // (a) An exhausted pool: one address, two Services asking for it.
    probe.apply("tiny", &tiny_pool_manifest());
    let fault_a = Instant::now();
    let holders = eventually_ok(
        &format!("one of tiny-1 and tiny-2 holds {TINY_POOL_IP}, the other nothing"),
        l2probe::ASSIGN_TIMEOUT,
        || {
            let ips: Vec<String> = ["tiny-1", "tiny-2"]
                .iter()
                .map(|svc| {
                    probe.kubectl(&[
                        "get",
                        "service",
                        "-n",
                        "default",
                        svc,
                        "-o",
                        "jsonpath={.status.loadBalancer.ingress[*].ip}",
                    ])
                })
                .collect();
            let held = ips.iter().filter(|ip| ip.trim() == TINY_POOL_IP).count();
            let empty = ips.iter().filter(|ip| ip.trim().is_empty()).count();
            if held == 1 && empty == 1 {
                Ok(ips)
            } else {
                Err(format!("ingress IPs: {ips:?}"))
            }
        },
    );
    eprintln!("tiny pool: tiny-1, tiny-2 ingress {holders:?}");
    let exhausted = prometheus.wait_firing(
        "FerroLBPoolExhausted",
        &[&[("pool", "tiny"), ("family", "IPv4")]],
    );
    eprintln!(
        "(a) FerroLBPoolExhausted firing {:?} after the pool was applied: {}",
        fault_a.elapsed(),
        describe(&exhausted)
    );
    assert_eq!(
        exhausted.len(),
        1,
        "only tiny's IPv4 family is exhausted (its IPv6 family has no addresses, e2e has room): {}",
        describe(&exhausted)
    );
    let pending =
        prometheus.wait_firing("FerroLBServicePending", &[&[("reason", "no_ip_available")]]);
    eprintln!(
        "(a) FerroLBServicePending firing {:?} after the pool was applied: {}",
        fault_a.elapsed(),
        describe(&pending)
    );

    // (b) A node cut off: the others see two members of three speaker targets.
    let cut_at = Instant::now();
    let cut = CutOff::new(&lab, CUT_NODE);
    eprintln!("(b) {CUT_NODE} cut off (its switch port down)");
    let others: Vec<String> = topology
        .nodes()
        .filter(|n| n.name != CUT_NODE)
        .map(|n| format!("{}:{}", n.ipv4, l2probe::SPEAKER_METRICS_PORT))
        .collect();
    let wanted: Vec<[(&str, &str); 1]> =
        others.iter().map(|i| [("instance", i.as_str())]).collect();
    let wanted: Vec<&[(&str, &str)]> = wanted.iter().map(|w| &w[..]).collect();
    let partitioned = prometheus.wait_firing("FerroLBMembershipPartitioned", &wanted);
    eprintln!(
        "(b) FerroLBMembershipPartitioned firing {:?} after the cut: {}",
        cut_at.elapsed(),
        describe(&partitioned)
    );
    drop(cut);
    let healed_at = Instant::now();
    eventually_ok(
        &format!("FerroLBMembershipPartitioned clears once {CUT_NODE} is back"),
        ALERT_TIMEOUT,
        || {
            let alerts = prometheus.alerts()?;
            if alerts
                .iter()
                .any(|a| a.name == "FerroLBMembershipPartitioned")
            {
                Err(format!("active: {}", describe(&alerts)))
            } else {
                Ok(())
            }
        },
    );
    eprintln!(
        "(b) {CUT_NODE} reconnected; partition alert cleared after {:?}; active now: {}",
        healed_at.elapsed(),
        describe(&prometheus.alerts().expect("alerts"))
    );

    // The dashboard against the live binaries. prometheus-client writes no HELP/TYPE lines for
    // a labelled family without series, so families whose first series comes with an event
    // are given that event first (each also a behaviour check):
    // - a BFD packet that is not from a neighbour one hop away (TTL 64, not 255) must be
    //   dropped and counted (`ferrolb_speaker_bfd_packets_dropped_total`);
    let node1 = topology.nodes().next().expect("a node");
    let node1_instance = format!("{}:{}", node1.ipv4, l2probe::SPEAKER_METRICS_PORT);
    let mut junk = netns::exec(&client, "bash");
    junk.arg("-c").arg(format!(
        "printf 'not bfd' > /dev/udp/{}/{BFD_PORT}",
        node1.ipv4
    ));
    ferrolb_tests::cmd::run(junk).expect("send a junk BFD datagram to node1");
    let dropped = eventually_ok(
        "node1 counts the junk BFD datagram as dropped",
        Duration::from_secs(30),
        || {
            let result = prometheus.query(&format!(
                "ferrolb_speaker_bfd_packets_dropped_total{{instance=\"{node1_instance}\"}} > 0"
            ))?;
            let reasons: Vec<String> = result
                .iter()
                .filter_map(|s| Some(s["metric"]["reason"].as_str()?.to_string()))
                .collect();
            if reasons.is_empty() {
                Err("no BFD drop counted".to_string())
            } else {
                Ok(reasons)
            }
        },
    );
    eprintln!("BFD datagram with TTL 64 from the client: dropped on node1, reason {dropped:?}");
    // - ARP requests for an address nobody announces reach every speaker that listens on the
    //   LAN (the owners of web's IPs), which must not answer and must count them as `not_owner`
    //   (`ferrolb_speaker_layer2_requests_dropped_total`).
    let not_owner = || -> Result<f64, String> {
        Ok(prometheus
            .query("sum(ferrolb_speaker_layer2_requests_dropped_total{reason=\"not_owner\"})")?
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse().ok())
            .unwrap_or(0.0))
    };
    let before = not_owner().expect("not_owner drops before");
    let mut arping = netns::exec(&client, "arping");
    arping.args(["-c", "2", "-w", "3", "-I", "eth0", UNUSED_LAN_IP]);
    let answered = ferrolb_tests::cmd::run(arping).is_ok();
    assert!(!answered, "something answered ARP for {UNUSED_LAN_IP}");
    let after = eventually_ok(
        &format!("the 2 ARP requests for {UNUSED_LAN_IP} counted as not_owner drops"),
        Duration::from_secs(30),
        || {
            let now = not_owner()?;
            if now >= before + 2.0 {
                Ok(now)
            } else {
                Err(format!("not_owner drops {before} before, {now} now"))
            }
        },
    );
    eprintln!("layer2 not_owner drops: {before} before the ARP requests, {after} after");
    // - a reconcile whose write the API server refuses (the controller's ClusterRole without
    //   services/status for the moment) must be counted as `kind="kube"`, and the Service must
    //   get its address once the permission is back.
    let refused = StatusWritesRefused::new(&probe);
    probe.apply("refused", &ipv4_service_manifest("refused", None, &[]));
    eventually_ok(
        "the refused status write counted in ferrolb_reconcile_errors_total{kind=\"kube\"}",
        Duration::from_secs(60),
        || {
            let result = prometheus.query("ferrolb_reconcile_errors_total{kind=\"kube\"} > 0")?;
            if result.is_empty() {
                Err("not counted yet".to_string())
            } else {
                Ok(())
            }
        },
    );
    drop(refused);
    let refused_ip = eventually_ok(
        "Service refused gets its address once the controller may write status again",
        l2probe::ASSIGN_TIMEOUT,
        || {
            let ip = probe.kubectl(&[
                "get",
                "service",
                "-n",
                "default",
                "refused",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ]);
            if ip.trim().is_empty() {
                Err("no address yet".to_string())
            } else {
                Ok(ip)
            }
        },
    );
    eprintln!("Service refused: {refused_ip} after the ClusterRole was restored");

    // Every dashboard query runs; every metric it queries is exported by the controller or a
    // speaker (all of them: only the owner of an IP has its layer2 series, only node3 saw its
    // BGP session flap while it was cut off).
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    let mut query_errors = Vec::new();
    let mut with_data = 0;
    for (title, query) in &queries {
        match prometheus.query(&as_prometheus_sees_it(query, "15s", "5s")) {
            Ok(result) if !result.is_empty() => with_data += 1,
            Ok(_) => {}
            Err(err) => query_errors.push(format!("{title}: {err}")),
        }
    }
    eprintln!(
        "dashboard: {} queries run against the lab's Prometheus, {with_data} with data now",
        queries.len()
    );
    assert!(
        query_errors.is_empty(),
        "dashboard queries failed: {query_errors:#?}"
    );
    let mut exported = exported_metrics(&scrape(
        &client,
        &format!("http://{CONTROL_PLANE_V4}:{CONTROLLER_METRICS_PORT}/metrics"),
    ));
    for node in topology.nodes() {
        let speaker = exported_metrics(&scrape(
            &client,
            &format!(
                "http://{}:{}/metrics",
                node.ipv4,
                l2probe::SPEAKER_METRICS_PORT
            ),
        ));
        exported.names.extend(speaker.names);
        exported.histograms.extend(speaker.histograms);
    }
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, query)| metric_names(query))
        .collect();
    let missing = exported.missing(&used);
    eprintln!(
        "dashboard: {} metrics queried, {} names exported by the controller and the {} \
         speakers; not exported: {missing:?}",
        used.len(),
        exported.names.len(),
        nodes.len()
    );
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the binaries do not export: {missing:?}"
    );
    eprintln!("{TEST}: done after {:?}", started.elapsed());
}
