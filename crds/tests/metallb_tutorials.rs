//! MetalLB ≤ 0.12 configurations as its documentation and the tutorials show them
//! (`tests/data/metallb-tutorials/`): the legacy ConfigMap (layer 2 with an address range, BGP
//! with a peer, BGP with advertisements and a community alias) and a Helm `values.yaml` with
//! `configInline:`.
//!
//! * `ferrolbctl validate` (also `--complete`: each is a whole configuration) accepts each
//!   ConfigMap as exported from MetalLB (`metallb-system`) and copied to `ferrolb-system`;
//! * `ferrolbctl migrate` writes the committed `*.migrated.yaml`, which validates to the same
//!   `Config` as the ConfigMap;
//! * the mapping under `configInline:`, on its own, is read as the legacy configuration it is,
//!   and so is a whole `values.yaml` (its `configInline`; the chart's other values are ignored
//!   with a note).
//!
//! The API-server half is `tests/tests/manifests.rs` (`check_metallb_configurations`).

mod common;

use common::{ferrolbctl, read, read_data, user_edit};
use ferrolb_crds::config::Config;

const TUTORIALS_DIR: &str = "metallb-tutorials";

/// Every check on one ConfigMap file of the tutorials directory.
fn check_config_map(file: &str) {
    let exported = read_data(TUTORIALS_DIR, file);
    let copied = user_edit(&exported);
    assert!(copied.contains("namespace: ferrolb-system"), "{copied}");
    for (what, text) in [("exported", &exported), ("copied", &copied)] {
        for args in [&["validate"][..], &["validate", "--complete"][..]] {
            let run = ferrolbctl(args, file, text);
            assert_eq!(
                (run.code, run.stderr.as_str()),
                (0, ""),
                "{file} ({what}): {args:?}"
            );
        }
    }

    let migrated = ferrolbctl(&["migrate"], file, &exported);
    assert_eq!(
        (migrated.code, migrated.stderr.as_str()),
        (0, ""),
        "{file}: migrate"
    );
    let golden = read_data(TUTORIALS_DIR, &file.replace(".yaml", ".migrated.yaml"));
    assert_eq!(migrated.stdout, golden, "{file}: migrate wrote other CRs");
    let check = ferrolbctl(
        &["validate", "--complete"],
        "migrated.yaml",
        &migrated.stdout,
    );
    assert_eq!((check.code, check.stderr.as_str()), (0, ""), "{file}");
    assert_eq!(
        Config::build(&read(&migrated.stdout, "migrated").resources),
        Config::build(&read(&exported, file).resources),
        "{file}: the migrated CRs build another configuration than the ConfigMap"
    );
}

#[test]
fn layer2_configmap() {
    check_config_map("layer2-configmap.yaml");
    let config =
        Config::build(&read(&read_data(TUTORIALS_DIR, "layer2-configmap.yaml"), "cm").resources)
            .expect("valid");
    // 192.168.1.240-192.168.1.250: 11 addresses, every one assignable (a range, not a CIDR).
    let cidrs: Vec<String> = config.pools["default"]
        .addresses
        .iter()
        .flat_map(|a| a.cidrs.iter().map(ToString::to_string))
        .collect();
    assert_eq!(
        cidrs,
        ["192.168.1.240/29", "192.168.1.248/31", "192.168.1.250/32"]
    );
    assert_eq!(config.l2_advertisements.len(), 1);
    assert!(config.bgp_advertisements.is_empty());
}

#[test]
fn bgp_configmap() {
    check_config_map("bgp-configmap.yaml");
}

#[test]
fn bgp_advertisements_configmap() {
    check_config_map("bgp-advertisements-configmap.yaml");
}

/// The mapping under `configInline:` with its indentation removed (what a user saves from the
/// values file).
fn config_inline_block(values: &str) -> String {
    let mut lines = values.lines();
    assert_eq!(lines.next(), Some("configInline:"), "{values}");
    lines
        .map(|line| format!("{}\n", line.strip_prefix("  ").unwrap_or(line)))
        .collect()
}

#[test]
fn helm_config_inline_block_is_the_legacy_configuration() {
    let values = read_data(TUTORIALS_DIR, "helm-values-configinline.yaml");
    let block = config_inline_block(&values);
    assert!(
        block.starts_with("address-pools:\n - name: default\n"),
        "{block}"
    );
    let run = ferrolbctl(&["validate", "--complete"], "config-inline.yaml", &block);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));

    // The same as the ConfigMap that MetalLB's chart renders from it (`data.config` is
    // `toYaml .Values.configInline`; the ConfigMap is named after the release, here `metallb`).
    let indented: String = block.lines().map(|line| format!("    {line}\n")).collect();
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: metallb-system\n  name: metallb\ndata:\n  config: |\n{indented}"
    );
    let from_block = ferrolbctl(&["migrate"], "config-inline.yaml", &block);
    let from_config_map = ferrolbctl(&["migrate"], "config.yaml", &config_map);
    assert_eq!((from_block.code, from_block.stderr.as_str()), (0, ""));
    assert_eq!(
        (from_config_map.code, from_config_map.stderr.as_str()),
        (0, "")
    );
    assert_eq!(from_block.stdout, from_config_map.stdout);
    assert!(
        from_block.stdout.contains("kind: L2Advertisement")
            && from_block.stdout.contains("- 198.51.100.0/24"),
        "{}",
        from_block.stdout
    );
}

/// A whole Helm `values.yaml` is read too: its `configInline` is the legacy configuration (a
/// note says so, naming the document), every other key is ignored with a note. It validates and
/// migrates to exactly what the ConfigMap that MetalLB's chart renders from it gives.
#[test]
fn helm_values_file_is_read_as_its_config_inline() {
    let values = read_data(TUTORIALS_DIR, "helm-values-configinline.yaml");
    let read_as = "note: values.yaml: document 1: Helm values: configInline read as MetalLB's \
                   legacy configuration (its errors name it ConfigMap/config)\n";
    for args in [&["validate"][..], &["validate", "--complete"][..]] {
        let run = ferrolbctl(args, "values.yaml", &values);
        assert_eq!((run.code, run.stderr.as_str()), (0, read_as), "{args:?}");
    }
    let migrated = ferrolbctl(&["migrate"], "values.yaml", &values);
    assert_eq!((migrated.code, migrated.stderr.as_str()), (0, read_as));
    let block = config_inline_block(&values);
    let indented: String = block.lines().map(|line| format!("    {line}\n")).collect();
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: metallb-system\n  name: metallb\ndata:\n  config: |\n{indented}"
    );
    let from_config_map = ferrolbctl(&["migrate"], "config.yaml", &config_map);
    assert_eq!(from_config_map.code, 0, "{}", from_config_map.stderr);
    assert_eq!(migrated.stdout, from_config_map.stdout);
    assert_eq!(
        Config::build(&read(&values, "values.yaml").resources),
        Config::build(&read(&config_map, "config.yaml").resources),
    );

    // A values file as users have it: the chart's other settings around `configInline`. They
    // are ignored, and said to be; the result is the same.
    let full = format!(
        "controller:\n  image: {{tag: v0.12.1}}\nspeaker:\n  tolerateMaster: true\n{values}prometheus:\n  scrapeAnnotations: true\n"
    );
    let run = ferrolbctl(&["migrate"], "values.yaml", &full);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, from_config_map.stdout);
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            "note: values.yaml: document 1: Helm values: ignored (they configure MetalLB's chart, not MetalLB): controller, prometheus, speaker",
            read_as.trim_end(),
        ]
    );

    // An error in `configInline` is the legacy configuration's error, exit 1.
    let broken = values.replace("198.51.100.0/24", "198.51.100.0/33");
    let run = ferrolbctl(&["validate"], "values.yaml", &broken);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "{read_as}ConfigMap/config address-pools[0] \"default\": addresses[0]: \"198.51.100.0/33\" is not a CIDR or an IP range: invalid prefix length \"33\"\n"
        )
    );
    let run = ferrolbctl(&["migrate"], "values.yaml", &broken);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the migrated configuration is invalid:"),
        "{}",
        run.stderr
    );

    // What is not the chart's legacy configuration is refused, naming the document.
    for (text, error) in [
        (
            "configInline: {address-pool: []}\n",
            "values.yaml: document 1: Helm values: configInline: unknown field `address-pool`, expected one of `peers`, `bgp-communities`, `address-pools`, `bfd-profiles`",
        ),
        (
            "configInline: \"address-pools: []\"\n",
            "values.yaml: document 1: Helm values: configInline must be a mapping (address-pools, peers, bgp-communities, bfd-profiles), as MetalLB's chart ≤ 0.12 takes it",
        ),
    ] {
        let run = ferrolbctl(&["validate"], "values.yaml", text);
        assert_eq!((run.code, run.stderr.trim_end()), (1, error), "{text}");
    }
    // Empty: the chart renders no ConfigMap; nothing to validate, and the note says why.
    let run = ferrolbctl(
        &["validate"],
        "values.yaml",
        "configInline: {}\nspeaker: {}\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("values.yaml: document 1: Helm values: configInline is empty: no configuration in this document"),
        "{}",
        run.stderr
    );
}
