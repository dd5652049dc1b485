//! `ferrolbctl` as docs/configuration.md ("ferrolbctl") and docs/migration.md (steps 2 and 3)
//! describe it, run as the built binary: `-` reads stdin (alone or among files, in both
//! commands, the way the documented `kubectl get cm ... -o jsonpath='{.data.config}' |
//! ferrolbctl migrate -` pipes it), messages call it `stdin`, and every row of the exit-code
//! tables: `validate` 0 (warnings printed as `warning: ...`), 1 (one line per error, document
//! errors first), 2 (unreadable, or not YAML with file, line and column); `migrate` 0 (written
//! and valid), 1 (an invalid input document, or a result that is invalid, after `the migrated
//! configuration is invalid:`), 2 (unreadable, not YAML).
//!
//! The per-case exit codes with files are also in `config_cases.rs`; this file adds stdin, the
//! rows that had no test, and docs/migration.md's transcripts (each `$ ferrolbctl ...` block
//! run as written, in a directory holding the files it names, must print what it shows).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// A fresh directory with `files` written into it, for `ferrolbctl` to run in (so that messages
/// name the files as given).
fn work_dir(files: &[(&str, &str)]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferrolbctl-cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("writing an input file");
    }
    dir
}

/// Runs `ferrolbctl ARGS` in a directory holding `files`, with `stdin` on its standard input.
fn ferrolbctl(args: &[&str], files: &[(&str, &str)], stdin: &str) -> Run {
    let dir = work_dir(files);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolbctl"))
        .current_dir(&dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ferrolbctl");
    // A command that does not read stdin may exit before the write: that is not an error here.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let output = child.wait_with_output().expect("running ferrolbctl");
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        code: output.status.code().expect("ferrolbctl exited with a code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A legacy ConfigMap around `inner` (the text of its `data.config`).
fn config_map(inner: &str) -> String {
    let indented: String = inner.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config, namespace: metallb-system}}\ndata:\n  config: |\n{indented}"
    )
}

/// What `kubectl get cm -n metallb-system config -o jsonpath='{.data.config}'` prints for the
/// docs' renamed-pool example: a layer2 pool whose name is not a DNS-1123 label, a bgp pool and
/// a peer.
const LEGACY_TEXT: &str = "peers:
- {peer-address: 203.0.113.1, peer-asn: 64512, my-asn: 64513}
address-pools:
- name: Office_LAN
  protocol: layer2
  addresses: [192.0.2.240-192.0.2.250]
- name: routed
  protocol: bgp
  addresses: [203.0.113.128/25]
";

const RENAME_NOTE: &str = "address-pools[0] \"Office_LAN\": pool \"Office_LAN\" is named \"office-lan\" (Services that name the pool in an annotation must be updated)";

fn pool(name: &str, addresses: &str) -> String {
    format!(
        "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: ferrolb-system}}\nspec: {{addresses: [{addresses}]}}\n"
    )
}

#[test]
fn migrate_reads_the_data_config_text_from_stdin() {
    let piped = ferrolbctl(&["migrate", "-"], &[], LEGACY_TEXT);
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert_eq!(
        piped.stderr_lines(),
        [format!("note: stdin: document 1: {RENAME_NOTE}")]
    );
    // The same objects as from the ConfigMap file it was taken from.
    let from_file = ferrolbctl(
        &["migrate", "cm.yaml"],
        &[("cm.yaml", &config_map(LEGACY_TEXT))],
        "",
    );
    assert_eq!(from_file.code, 0, "{}", from_file.stderr);
    assert_eq!(
        from_file.stderr_lines(),
        [format!("note: cm.yaml: document 1: {RENAME_NOTE}")]
    );
    assert_eq!(piped.stdout, from_file.stdout);
    for expected in [
        "kind: IPAddressPool\nmetadata:\n  name: office-lan\n",
        "kind: BGPAdvertisement\nmetadata:\n  name: routed-bgp-1\n",
        "kind: BGPPeer\nmetadata:\n  name: peer-203-0-113-1\n",
    ] {
        assert!(piped.stdout.contains(expected), "{}", piped.stdout);
    }
    // And what it wrote validates, piped again (the documented `migrate ... && validate`).
    let check = ferrolbctl(&["validate", "--complete", "-"], &[], &piped.stdout);
    assert_eq!((check.code, check.stderr.as_str()), (0, ""));
}

#[test]
fn validate_reads_stdin_as_one_file_among_others() {
    let on_stdin = pool("lan", "192.0.2.0/28");
    // Alone: valid.
    let run = ferrolbctl(&["validate", "-"], &[], &on_stdin);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    // With a file: one configuration, so the overlap between them is found.
    let run = ferrolbctl(
        &["validate", "other.yaml", "-"],
        &[("other.yaml", &pool("office", "192.0.2.8/29"))],
        &on_stdin,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr_lines(),
        [
            "IPAddressPool/lan: spec.addresses[0]: CIDR 192.0.2.0/28 overlaps with 192.0.2.8/29 of pool \"office\""
        ]
    );
    // Document errors name stdin by name.
    let run = ferrolbctl(
        &["validate", "-"],
        &[],
        "apiVersion: ferrolb.io/v1beta1\nkind: AddressPool\nmetadata: {name: p}\n",
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr_lines(),
        ["stdin: document 1: unknown kind \"AddressPool\" for apiVersion ferrolb.io/v1beta1"]
    );
}

/// Exit 0 with warnings: a `passwordSecret` (cannot be checked offline) and a pool name that
/// matches nothing, each a `warning:` line; `--complete` makes the dangling name an error, not
/// the Secret.
#[test]
fn validate_warnings_exit_0_unless_complete() {
    let snippet = "apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: tor, namespace: ferrolb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1, passwordSecret: {name: tor-md5}}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: ferrolb-system}
spec: {ipAddressPools: [lan]}
";
    let secret_warning =
        "warning: BGPPeer/tor: spec.passwordSecret: Secret \"tor-md5\" cannot be checked offline";
    let run = ferrolbctl(&["validate", "-"], &[], snippet);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr_lines(),
        [
            secret_warning,
            "warning: L2Advertisement/lan: spec.ipAddressPools[0]: unknown IPAddressPool \"lan\"",
        ]
    );
    let run = ferrolbctl(&["validate", "--complete", "-"], &[], snippet);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stderr_lines(),
        [
            secret_warning,
            "L2Advertisement/lan: spec.ipAddressPools[0]: unknown IPAddressPool \"lan\"",
        ]
    );
}

/// One document per kind of document error the exit table lists, after a document with a
/// configuration error: every document error is printed, one line each, before the
/// configuration error, and the exit code is 1. `migrate` stops at the document errors (no
/// output).
const DOCUMENT_AND_CONFIGURATION_ERRORS: &str = "apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: bad, namespace: ferrolb-system}
spec: {addresses: [192.0.2.0/33]}
---
apiVersion: ferrolb.io/v1beta1
kind: AddressPool
metadata: {name: unknown-kind}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: typo, namespace: ferrolb-system}
spec: {addresses: [198.51.100.0/24], autoassign: true}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: wrong-type, namespace: ferrolb-system}
spec: {addresses: [198.51.100.0/24], autoAssign: yes}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: out-of-range, namespace: ferrolb-system}
spec: {aggregationLength: 4294967296}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config, namespace: metallb-system}
data:
  config: |
    address-pools: [
";

#[test]
fn validate_prints_document_errors_first_then_configuration_errors() {
    let run = ferrolbctl(
        &["validate", "broken.yaml"],
        &[("broken.yaml", DOCUMENT_AND_CONFIGURATION_ERRORS)],
        "",
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr_lines(),
        [
            "broken.yaml: document 2: unknown kind \"AddressPool\" for apiVersion ferrolb.io/v1beta1",
            "broken.yaml: document 3: IPAddressPool/typo: unknown field `autoassign`, expected one of `addresses`, `autoAssign`, `avoidBuggyIPs`, `serviceAllocation`",
            "broken.yaml: document 4: IPAddressPool/wrong-type: invalid type: string \"yes\", expected a boolean",
            "broken.yaml: document 5: BGPAdvertisement/out-of-range: invalid value: integer `4294967296`, expected i32",
            "broken.yaml: document 6: ConfigMap \"config\" data.config: unclosed bracket '[' at line 1, column 16",
            "IPAddressPool/bad: spec.addresses[0]: \"192.0.2.0/33\" is not a CIDR or an IP range: invalid prefix length \"33\"",
        ]
    );
    // The same from stdin, named so.
    let piped = ferrolbctl(&["validate", "-"], &[], DOCUMENT_AND_CONFIGURATION_ERRORS);
    assert_eq!(piped.code, 1);
    assert_eq!(piped.stderr, run.stderr.replace("broken.yaml: ", "stdin: "));
}

#[test]
fn migrate_exit_1_for_an_invalid_input_document_writes_nothing() {
    let run = ferrolbctl(&["migrate", "-"], &[], DOCUMENT_AND_CONFIGURATION_ERRORS);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    // The document errors; the configuration is not looked at.
    assert_eq!(run.stderr_lines().len(), 5, "{}", run.stderr);
    assert!(
        run.stderr_lines()
            .iter()
            .all(|line| line.starts_with("stdin: document ")),
        "{}",
        run.stderr
    );
}

/// A legacy ConfigMap that parses but is invalid (overlapping pools): `migrate` writes the CRs,
/// then says the result is invalid, with the errors, and exits 1.
#[test]
fn migrate_exit_1_for_an_invalid_result_after_saying_so() {
    let inner = "address-pools:
- {name: a, protocol: layer2, addresses: [192.0.2.0/24]}
- {name: b, protocol: layer2, addresses: [192.0.2.128/25]}
";
    let run = ferrolbctl(&["migrate", "-"], &[], &config_map(inner));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout.matches("kind: IPAddressPool\n").count(), 2);
    assert_eq!(
        run.stderr_lines(),
        [
            "the migrated configuration is invalid:",
            "IPAddressPool/b: spec.addresses[0]: CIDR 192.0.2.128/25 overlaps with 192.0.2.0/24 of pool \"a\"",
        ]
    );
}

#[test]
fn exit_2_when_input_cannot_be_read_or_is_not_yaml() {
    for command in ["validate", "migrate"] {
        // Not YAML, on stdin: named, with line and column.
        let run = ferrolbctl(&[command, "-"], &[], "address-pools: [\n");
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
        assert_eq!(
            run.stderr_lines(),
            ["error: stdin: unclosed bracket '[' at line 1, column 16"],
            "{command}"
        );
        assert_eq!(run.stdout, "");
        // A missing file, even next to a good one.
        let run = ferrolbctl(
            &[command, "good.yaml", "missing.yaml"],
            &[("good.yaml", &pool("lan", "192.0.2.0/28"))],
            "",
        );
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
        assert_eq!(run.stdout, "");
        assert!(
            run.stderr.starts_with("error: missing.yaml: "),
            "{command}: {}",
            run.stderr
        );
        // A directory is not readable as a file either.
        let run = ferrolbctl(&[command, "."], &[], "");
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: .: "), "{}", run.stderr);
    }
}

#[test]
fn migrate_exit_0_writes_valid_crs() {
    let run = ferrolbctl(
        &["migrate", "-"],
        &[],
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan, namespace: metallb-system}\nspec: {addresses: [192.0.2.240-192.0.2.250]}\n",
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(
        run.stdout,
        "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: lan\n  namespace: ferrolb-system\nspec:\n  addresses:\n  - 192.0.2.240-192.0.2.250\n  autoAssign: true\n  avoidBuggyIPs: false\n"
    );
}

// ---------------------------------------------------------------------------------------------
// docs/migration.md's transcripts.

fn workspace_file(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first fenced block of `language` after `marker` in `doc`.
fn block_after<'a>(doc: &'a str, marker: &str, language: &str) -> &'a str {
    let (_, after) = doc
        .split_once(marker)
        .unwrap_or_else(|| panic!("{marker:?} not found"));
    after
        .split_once(&format!("```{language}\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("no {language} block after {marker:?}"))
}

/// The ```text blocks of `doc` that start with `$ ferrolbctl`, as (command, expected output)
/// steps, in order.
fn transcripts(doc: &str) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String)> = Vec::new();
    for block in doc.split("```text\n").skip(1) {
        let block = block.split_once("```").map_or(block, |(inside, _)| inside);
        if !block.starts_with("$ ferrolbctl") {
            continue;
        }
        for line in block.lines() {
            match line.strip_prefix("$ ") {
                Some(command) => steps.push((command.to_string(), String::new())),
                None => {
                    let (_, output) = steps.last_mut().expect("a command first");
                    output.push_str(line);
                    output.push('\n');
                }
            }
        }
    }
    steps
}

/// Every `$ ferrolbctl ...` transcript of docs/migration.md, run with `sh` (ferrolbctl on PATH,
/// stderr and stdout together as a terminal shows them) in one directory holding the files the
/// transcripts name, as the text describes them: the worked example's MetalLB export (its YAML
/// block), `config/samples/layer2-pool.yaml`, the legacy sample in `metallb-system`, the
/// renamed-pool ConfigMap, and a Helm values file (the tutorial's, with chart settings around
/// `configInline`).
#[test]
fn migration_md_transcripts_print_what_they_show() {
    let doc = workspace_file("docs/migration.md");
    let export = block_after(
        &doc,
        "as a `kubectl get -o yaml` export would contain it:",
        "yaml",
    );
    let legacy_sample = workspace_file("config/samples/legacy-configmap.yaml")
        .replace("namespace: ferrolb-system", "namespace: metallb-system");
    let values = format!(
        "controller:\n  image: {{tag: v0.12.1}}\nspeaker:\n  tolerateMaster: true\n{}",
        workspace_file("tests/data/metallb-tutorials/helm-values-configinline.yaml")
    );
    let dir = work_dir(&[
        ("metallb-export.yaml", export),
        ("metallb-configmap.yaml", &legacy_sample),
        ("metallb-legacy-bgp.yaml", &config_map(LEGACY_TEXT)),
        ("values.yaml", &values),
    ]);
    std::fs::create_dir_all(dir.join("config/samples")).expect("config/samples");
    std::fs::write(
        dir.join("config/samples/layer2-pool.yaml"),
        workspace_file("config/samples/layer2-pool.yaml"),
    )
    .expect("copying the layer2 sample");

    let binary = PathBuf::from(env!("CARGO_BIN_EXE_ferrolbctl"));
    let path = format!(
        "{}:{}",
        binary.parent().expect("the binary's directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let steps = transcripts(&doc);
    assert!(steps.len() >= 6, "{steps:#?}");
    for (command, expected) in &steps {
        let output = Command::new("sh")
            .current_dir(&dir)
            .env("PATH", &path)
            .arg("-c")
            .arg(format!("exec 2>&1; {command}"))
            .output()
            .expect("running sh");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected.as_str(),
            "docs/migration.md: `{command}`"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
