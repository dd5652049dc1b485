//! Bytes → legacy ConfigMap (whole object or inner text) → `Config::build`. Must never panic;
//! every input either parses or gives an error.
#![no_main]

use ferrolb_crds::config::{ClusterResources, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cm) = ferrolb_crds::legacy::parse(text) {
        let resources = ClusterResources {
            legacy: Some(cm),
            ..Default::default()
        };
        if let Err(errors) = Config::build(&resources) {
            // Every error renders as one line.
            for line in errors.lines() {
                assert!(!line.contains('\n'));
            }
        }
    }
    // The multi-document path of `ferrolbctl` too.
    if let Ok((resources, _)) = ClusterResources::from_yaml(text, "fuzz.yaml") {
        let _ = Config::build(&resources);
    }
});
