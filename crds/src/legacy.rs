//! MetalLB's legacy ConfigMap format (≤ v0.12): `data.config` holding `peers`, `address-pools`,
//! `bgp-communities` and `bfd-profiles`, kebab-case keys, unknown keys rejected.
//!
//! These are plain serde types; [`crate::config::Config::build`] does all semantic validation,
//! so the same rules (and error messages) apply as for the CRDs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde::{Deserialize, Serialize};

/// The YAML under `data.config`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacyConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<LegacyPeer>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bgp_communities: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_pools: Vec<LegacyAddressPool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bfd_profiles: Vec<LegacyBfdProfile>,
}

/// `peers[]`. Required fields are `Option` so that a missing one is reported by the builder
/// together with every other error, not as the first and only serde error.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacyPeer {
    pub my_asn: Option<u32>,
    pub peer_asn: Option<u32>,
    pub peer_address: Option<String>,
    pub source_address: Option<String>,
    pub peer_port: Option<u16>,
    pub hold_time: Option<String>,
    pub keepalive_time: Option<String>,
    pub router_id: Option<String>,
    pub password: Option<String>,
    pub bfd_profile: Option<String>,
    pub ebgp_multihop: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LegacySelector>,
}

/// `node-selectors[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacySelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LegacySelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacySelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl From<&LegacySelector> for LabelSelector {
    /// The Kubernetes selector a legacy `node-selectors[]` entry means (empty lists left out).
    fn from(s: &LegacySelector) -> LabelSelector {
        LabelSelector {
            match_labels: (!s.match_labels.is_empty()).then(|| s.match_labels.clone()),
            match_expressions: (!s.match_expressions.is_empty()).then(|| {
                s.match_expressions
                    .iter()
                    .map(|e| LabelSelectorRequirement {
                        key: e.key.clone(),
                        operator: e.operator.clone(),
                        values: (!e.values.is_empty()).then(|| e.values.clone()),
                    })
                    .collect()
            }),
        }
    }
}

/// `address-pools[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacyAddressPool {
    pub name: Option<String>,
    pub protocol: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub auto_assign: Option<bool>,
    pub avoid_buggy_ips: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bgp_advertisements: Vec<LegacyBgpAdvertisement>,
}

/// `address-pools[].bgp-advertisements[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacyBgpAdvertisement {
    pub aggregation_length: Option<i32>,
    pub aggregation_length_v6: Option<i32>,
    pub localpref: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// `bfd-profiles[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LegacyBfdProfile {
    pub name: Option<String>,
    pub receive_interval: Option<u32>,
    pub transmit_interval: Option<u32>,
    pub detect_multiplier: Option<u32>,
    pub echo_interval: Option<u32>,
    pub echo_mode: Option<bool>,
    pub passive_mode: Option<bool>,
    pub minimum_ttl: Option<u32>,
}

/// A parsed legacy configuration and the ConfigMap it came from (`config` when only the inner
/// text was given).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LegacyConfigMap {
    pub name: String,
    pub namespace: Option<String>,
    pub config: LegacyConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyParseError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("ConfigMap {0:?} has no data.config key")]
    NoConfigKey(String),
    #[error("ConfigMap {name:?} data.config: {detail}")]
    Config { name: String, detail: String },
}

/// The strict YAML options used for every FerroLB input: YAML 1.1 booleans (`yes`, `on`) are
/// not booleans, `017` and `1_000` are not numbers, duplicate keys are errors, and error
/// messages fit on one line.
pub fn strict_yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

/// One-line text of a serde-saphyr error.
pub fn yaml_error_text(error: &serde_saphyr::Error) -> String {
    error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses the inner `data.config` text.
pub fn parse_config_text(text: &str) -> Result<LegacyConfig, String> {
    if text.trim().is_empty() {
        // An empty ConfigMap is a valid, empty configuration (as in MetalLB).
        return Ok(LegacyConfig::default());
    }
    serde_saphyr::from_str_with_options::<LegacyConfig>(text, strict_yaml_options())
        .map_err(|e| yaml_error_text(&e))
}

/// Parses either a whole `kind: ConfigMap` document or just the inner config text.
pub fn parse(text: &str) -> Result<LegacyConfigMap, LegacyParseError> {
    let value: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_saphyr::from_str_with_options(text, strict_yaml_options())
            .map_err(|e| LegacyParseError::Yaml(yaml_error_text(&e)))?
    };
    if value.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
        return from_config_map_value(&value);
    }
    let config = parse_config_text(text).map_err(|detail| LegacyParseError::Config {
        name: "config".into(),
        detail,
    })?;
    Ok(LegacyConfigMap {
        name: "config".into(),
        namespace: None,
        config,
    })
}

/// Extracts and parses `data.config` from a ConfigMap already parsed to a generic value.
pub fn from_config_map_value(
    value: &serde_json::Value,
) -> Result<LegacyConfigMap, LegacyParseError> {
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("config")
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let Some(config_value) = value.get("data").and_then(|d| d.get("config")) else {
        return Err(LegacyParseError::NoConfigKey(name));
    };
    let Some(text) = config_value.as_str() else {
        return Err(LegacyParseError::Config {
            name,
            detail: "data.config must be a string".into(),
        });
    };
    let config = parse_config_text(text).map_err(|detail| LegacyParseError::Config {
        name: name.clone(),
        detail,
    })?;
    Ok(LegacyConfigMap {
        name,
        namespace,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_config_maps_parse() {
        let cm = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: metallb-system\n  name: config\ndata:\n  config: |\n    address-pools:\n    - name: default\n      protocol: layer2\n      addresses:\n      - 172.17.255.1-172.17.255.255 \n",
        )
        .unwrap();
        assert_eq!(
            cm.config.address_pools[0].addresses,
            vec!["172.17.255.1-172.17.255.255".to_string()]
        );
    }

    #[test]
    fn unknown_key_rejected() {
        let err = parse("address-pools:\n- name: a\n  protcol: layer2\n").unwrap_err();
        assert!(err.to_string().contains("protcol"), "{err}");
    }
}

/// Names that a legacy configuration's objects get as CRs (used by [`crate::migrate`] and by
/// [`crate::config::Config::build`], so that a migrated configuration has the same names).
pub mod names {
    use std::net::IpAddr;

    /// A DNS-1123 label made from `name`: lower-cased, anything else than `[a-z0-9-]` turned
    /// into `-`, trimmed of leading/trailing `-`, cut to 63 characters; `unnamed` if nothing is left.
    pub fn dns_label(name: &str) -> String {
        let mapped: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let trimmed: String = mapped.trim_matches('-').chars().take(63).collect();
        let trimmed = trimmed.trim_end_matches('-').to_string();
        if trimmed.is_empty() {
            "unnamed".into()
        } else {
            trimmed
        }
    }

    /// `peer-192-0-2-1`, `peer-2001-db8--1`: readable and stable, unlike MetalLB's `peer1..N`.
    pub fn peer(address: &str) -> String {
        match address.trim().parse::<IpAddr>() {
            Ok(ip) => dns_label(&format!("peer-{}", ip.to_string().replace(['.', ':'], "-"))),
            Err(_) => dns_label(&format!("peer-{address}")),
        }
    }

    /// The `n`-th (1-based) BGP advertisement of a pool: `<pool>-bgp-<n>`.
    pub fn bgp_advertisement(pool: &str, n: usize) -> String {
        format!("{}-bgp-{n}", dns_label(pool))
    }

    /// Makes `name` unique among `taken` by appending `-2`, `-3`, ...
    pub fn unique(name: String, taken: &mut std::collections::BTreeSet<String>) -> String {
        if taken.insert(name.clone()) {
            return name;
        }
        let mut n = 2;
        loop {
            let candidate = format!("{name}-{n}");
            if taken.insert(candidate.clone()) {
                return candidate;
            }
            n += 1;
        }
    }
}
