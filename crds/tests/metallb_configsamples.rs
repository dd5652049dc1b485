//! MetalLB v0.16's `configsamples/` (FerroLB's versions of them in
//! `tests/data/metallb-v0.16-configsamples/`, see the README there): for every sample,
//!
//! * `ferrolbctl validate` accepts the file as MetalLB wrote it and as a migrating user edits it
//!   (`apiVersion: ferrolb.io/v1beta1`, `namespace: ferrolb-system`);
//! * `ferrolbctl migrate` of the MetalLB file writes exactly the objects of the edited file, so both
//!   build the same `Config`; objects that are not configuration pass through unchanged.
//!
//! `FERROLB_METALLB_CONFIGSAMPLES=<metallb checkout>/configsamples` runs the same checks on
//! MetalLB's own files (`metallb_originals`). The API-server half is
//! `tests/tests/manifests.rs` (`check_metallb_configurations`).

mod common;

use std::path::{Path, PathBuf};

use common::{Run, ferrolbctl, read, read_data, user_edit};
use ferrolb_crds::config::Config;

/// What FerroLB makes of a sample.
#[derive(Debug, Clone, Copy)]
enum Expected {
    /// Valid; any warning is about a reference to an object that is not in the file.
    Valid,
    /// Refused, with an error line containing this text.
    Refused(&'static str),
}

use Expected::{Refused, Valid};

/// Every file of MetalLB v0.16.1's `configsamples/`, and what FerroLB makes of it.
const SAMPLES: [(&str, Expected); 18] = [
    ("bgpadv_selectspool_by_label.yaml", Valid),
    ("bgpadv_selectspool_by_list.yaml", Valid),
    ("bgpadvertisement_communities_localpref.yaml", Valid),
    ("bgpadvertisement_community_alias.yaml", Valid),
    ("bgpadvertisement_with_node_selector.yaml", Valid),
    ("bgppeer_simple.yaml", Valid),
    ("bgppeer_with_bfdprofile.yaml", Valid),
    ("bgppeer_with_session_options.yaml", Valid),
    // The speaker peers in the default VRF only; ignoring `vrf` would peer in the wrong table.
    (
        "bgppeer_with_vrf.yaml",
        Refused("spec.vrf: VRF \"blue\" is not supported"),
    ),
    ("bgppeer_withsecret.yaml", Valid),
    ("deployment_bgp.yaml", Valid),
    ("deployment_l2.yaml", Valid),
    ("ipaddresspool_simple.yaml", Valid),
    ("ipaddresspool_with_selector.yaml", Valid),
    ("l2adv_selects_pools_by_list.yaml", Valid),
    ("l2adv_with_node_selector.yaml", Valid),
    ("simple_pool_adv_bgp.yaml", Valid),
    ("simple_pool_adv_l2.yaml", Valid),
];

const ORIGINALS_VARIABLE: &str = "FERROLB_METALLB_CONFIGSAMPLES";

const SAMPLES_DIR: &str = "metallb-v0.16-configsamples";

fn check_validate(what: &str, run: &Run, expected: Expected) {
    match expected {
        Valid => {
            assert_eq!(run.code, 0, "{what}: validate refused it:\n{}", run.stderr);
            for line in run.stderr.lines() {
                let dangling = line.starts_with("warning: ")
                    && (line.contains(": unknown ") || line.ends_with("cannot be checked offline"));
                let skipped = line.starts_with("skipped: ")
                    && line.ends_with("(not FerroLB or MetalLB configuration)");
                assert!(dangling || skipped, "{what}: unexpected output: {line}");
            }
        }
        Refused(error) => {
            assert_eq!(run.code, 1, "{what}: validate accepted it:\n{}", run.stderr);
            assert!(
                run.stderr.lines().any(|line| line.contains(error)),
                "{what}: no error containing {error:?}:\n{}",
                run.stderr
            );
        }
    }
}

/// Every check on one sample; `name` is its file name, `metallb` its text as MetalLB wrote it.
fn check_sample(name: &str, metallb: &str, expected: Expected) {
    let edited = user_edit(metallb);
    assert!(
        !edited.contains("metallb"),
        "{name}: the edit left a MetalLB name:\n{edited}"
    );
    check_validate(
        &format!("{name} (edited)"),
        &ferrolbctl(&["validate"], name, &edited),
        expected,
    );
    check_validate(
        &format!("{name} (as MetalLB wrote it)"),
        &ferrolbctl(&["validate"], name, metallb),
        expected,
    );

    let migrated = ferrolbctl(&["migrate"], name, metallb);
    let expected_code = match expected {
        Valid => 0,
        Refused(_) => 1,
    };
    assert_eq!(
        migrated.code, expected_code,
        "{name}: migrate:\n{}",
        migrated.stderr
    );
    assert!(
        !migrated.stdout.contains("metallb"),
        "{name}: migrate left a MetalLB name:\n{}",
        migrated.stdout
    );
    let from_edit = read(&edited, "edited");
    let from_migrate = read(&migrated.stdout, "migrated");
    assert_eq!(
        from_migrate.objects, from_edit.objects,
        "{name}: migrate wrote other objects than the user's edit:\n{}",
        migrated.stdout
    );
    assert_eq!(
        from_migrate.others, from_edit.others,
        "{name}: passed-through objects"
    );
    assert_eq!(
        Config::build_with_warnings(&from_migrate.resources),
        Config::build_with_warnings(&from_edit.resources),
        "{name}: the two build different configurations"
    );
}

macro_rules! sample_tests {
    ($($test:ident: $file:literal),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                let expected = SAMPLES
                    .iter()
                    .find(|(name, _)| *name == $file)
                    .map(|(_, expected)| *expected)
                    .expect("the sample is in SAMPLES");
                check_sample($file, &read_data(SAMPLES_DIR, $file), expected);
            }
        )+
    };
}

sample_tests!(
    bgpadv_selectspool_by_label: "bgpadv_selectspool_by_label.yaml",
    bgpadv_selectspool_by_list: "bgpadv_selectspool_by_list.yaml",
    bgpadvertisement_communities_localpref: "bgpadvertisement_communities_localpref.yaml",
    bgpadvertisement_community_alias: "bgpadvertisement_community_alias.yaml",
    bgpadvertisement_with_node_selector: "bgpadvertisement_with_node_selector.yaml",
    bgppeer_simple: "bgppeer_simple.yaml",
    bgppeer_with_bfdprofile: "bgppeer_with_bfdprofile.yaml",
    bgppeer_with_session_options: "bgppeer_with_session_options.yaml",
    bgppeer_with_vrf: "bgppeer_with_vrf.yaml",
    bgppeer_withsecret: "bgppeer_withsecret.yaml",
    deployment_bgp: "deployment_bgp.yaml",
    deployment_l2: "deployment_l2.yaml",
    ipaddresspool_simple: "ipaddresspool_simple.yaml",
    ipaddresspool_with_selector: "ipaddresspool_with_selector.yaml",
    l2adv_selects_pools_by_list: "l2adv_selects_pools_by_list.yaml",
    l2adv_with_node_selector: "l2adv_with_node_selector.yaml",
    simple_pool_adv_bgp: "simple_pool_adv_bgp.yaml",
    simple_pool_adv_l2: "simple_pool_adv_l2.yaml",
);

fn yaml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

/// No sample goes untested: the directory holds exactly the files of the table.
#[test]
fn every_sample_has_an_expectation() {
    let table: Vec<String> = SAMPLES.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(yaml_files(&common::data_dir(SAMPLES_DIR)), table);
}

/// The edit changes what docs/configuration.md says, and keeps everything else byte for byte.
#[test]
fn user_edit_changes_api_version_and_namespace_only() {
    let metallb = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: p\n  namespace: metallb-system  \n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    assert_eq!(
        user_edit(metallb),
        "apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata:\n  name: p\n  namespace: ferrolb-system  \n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
    );
}

/// MetalLB's own files, when a checkout is at hand (they are not committed, see the README of
/// the samples directory): the same checks and expectations, by file name.
#[test]
fn metallb_originals() {
    let Some(dir) = std::env::var_os(ORIGINALS_VARIABLE).map(PathBuf::from) else {
        eprintln!("SKIP: {ORIGINALS_VARIABLE} is not set (a MetalLB configsamples/ directory)");
        return;
    };
    let files = yaml_files(&dir);
    let table: Vec<String> = SAMPLES.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(files, table, "{}: other files than v0.16's", dir.display());
    for (name, expected) in SAMPLES {
        let text = std::fs::read_to_string(dir.join(name)).expect("reading a MetalLB sample");
        // MetalLB's sample names its VRF "red".
        let expected = match expected {
            Refused(_) if name == "bgppeer_with_vrf.yaml" => {
                Refused("spec.vrf: VRF \"red\" is not supported")
            }
            other => other,
        };
        check_sample(name, &text, expected);
        eprintln!("{name}: as expected ({expected:?})");
    }
}
