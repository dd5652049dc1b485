//! MetalLB ≤ 0.12 configurations as its documentation and the tutorials show them
//! (`tests/data/metallb-tutorials/`): the legacy ConfigMap (layer 2 with an address range, BGP
//! with a peer, BGP with advertisements and a community alias) and a Helm `values.yaml` with
//! `configInline:`.
//!
//! * `ferrolbctl validate` (also `--complete`: each is a whole configuration) accepts each
//!   ConfigMap as exported from MetalLB (`metallb-system`) and copied to `ferrolb-system`;
//! * `ferrolbctl migrate` writes the committed `*.migrated.yaml`, which validates to the same
//!   `Config` as the ConfigMap;
//! * the mapping under `configInline:`, on its own, is read as the legacy configuration it is; a
//!   whole `values.yaml` is not (a FerroLB Helm chart is issue #13).
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

/// A whole Helm values file is not configuration `ferrolbctl` reads (no FerroLB chart yet,
/// issue #13): the document is refused, not half-read.
#[test]
fn helm_values_file_is_not_read_whole() {
    let values = read_data(TUTORIALS_DIR, "helm-values-configinline.yaml");
    let run = ferrolbctl(&["validate"], "values.yaml", &values);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("document 1: apiVersion and kind are required"),
        "{}",
        run.stderr
    );
}
