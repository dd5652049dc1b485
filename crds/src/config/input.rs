//! Multi-document YAML (as `kubectl apply -f` takes it) → typed configuration objects.
//!
//! Used by `ferrolbctl` and the table tests. Dispatches on `apiVersion`/`kind`:
//! `ferrolb.io/v1beta1` kinds, the same kinds under `metallb.io/v1beta1|v1beta2` (same field
//! names), a `v1` ConfigMap with `data.config` (MetalLB's legacy format), just the text of
//! that `data.config` (a mapping with only legacy keys), or a Helm `values.yaml` of MetalLB's
//! chart ≤ 0.12 (a mapping with a `configInline` key and no `apiVersion`/`kind`): its
//! `configInline` is the legacy configuration, the other values are ignored with a note. Any
//! other Kubernetes object (a
//! Deployment, a Service, a Secret, a Namespace, ...) is not ours: it is kept as it is
//! ([`ParsedInput::others`]), so that `ferrolbctl validate` can list what it skipped and
//! `ferrolbctl migrate` can pass it through. Unknown kinds in the FerroLB or MetalLB groups, and
//! documents without `apiVersion`/`kind`, are errors naming the document.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ClusterResources;
use crate::legacy::{self, LegacyConfigMap};
use crate::v1beta1;

/// Which API an object was written against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceApi {
    FerroLb,
    /// `metallb.io/<version>`
    MetalLb(String),
    /// Core `v1` (the legacy ConfigMap).
    Core,
}

/// One configuration object read from a file.
#[derive(Debug, Clone, PartialEq)]
pub enum InputObject {
    IPAddressPool(v1beta1::IPAddressPool),
    L2Advertisement(v1beta1::L2Advertisement),
    BGPAdvertisement(v1beta1::BGPAdvertisement),
    BGPPeer(v1beta1::BGPPeer),
    BFDProfile(v1beta1::BFDProfile),
    Community(v1beta1::Community),
    Legacy(LegacyConfigMap),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputDocument {
    /// `file.yaml: document 2`
    pub location: String,
    pub api: SourceApi,
    pub object: InputObject,
}

/// The result of reading one file: the documents that were understood, and one error line per
/// document that was not (unknown kind, wrong types, unknown fields, ...).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedInput {
    pub documents: Vec<InputDocument>,
    pub errors: Vec<String>,
    /// Documents that were skipped on purpose (status objects), one line each.
    pub notes: Vec<String>,
    /// Objects of other APIs and kinds, unchanged, with their location and `Kind/name`.
    pub others: Vec<OtherObject>,
}

/// A Kubernetes object that is not FerroLB or MetalLB configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherObject {
    /// `file.yaml: document 2`
    pub location: String,
    /// `apps/v1 Deployment/web`
    pub what: String,
    pub value: Value,
}

/// Parses multi-document YAML. `Err` only when the text is not YAML at all (`ferrolbctl` exit 2).
pub fn parse_documents(text: &str, source: &str) -> Result<ParsedInput, String> {
    let values: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, legacy::strict_yaml_options())
            .map_err(|e| format!("{source}: {}", legacy::yaml_error_text(&e)))?;
    let mut out = ParsedInput::default();
    for (i, value) in values.into_iter().enumerate() {
        let location = format!("{source}: document {}", i + 1);
        let mut notes = Vec::new();
        let parsed = parse_document(value, &location, &mut notes);
        out.notes
            .extend(notes.into_iter().map(|note| format!("{location}: {note}")));
        match parsed {
            Ok(Some(document)) => out.documents.push(document),
            Ok(None) => {}
            Err(DocumentError::Skipped(note)) => out.notes.push(format!("{location}: {note}")),
            Err(DocumentError::Other { what, value }) => out.others.push(OtherObject {
                location,
                what,
                value,
            }),
            Err(DocumentError::Invalid(e)) => out.errors.push(format!("{location}: {e}")),
        }
    }
    Ok(out)
}

/// Top-level keys of a legacy configuration (`data.config`).
const LEGACY_KEYS: [&str; 4] = ["peers", "bgp-communities", "address-pools", "bfd-profiles"];

/// The key of MetalLB's Helm chart (≤ 0.12) whose value the chart renders, as YAML, into the
/// legacy ConfigMap's `data.config`.
const HELM_CONFIG_INLINE: &str = "configInline";

enum DocumentError {
    Skipped(String),
    /// Not ours (another API group or kind): kept unchanged.
    Other {
        what: String,
        value: Value,
    },
    Invalid(String),
}

/// One document; `notes` gets what the user should know about it (without the location).
fn parse_document(
    mut value: Value,
    location: &str,
    notes: &mut Vec<String>,
) -> Result<Option<InputDocument>, DocumentError> {
    if value.is_null() {
        return Ok(None);
    }
    let Some(map) = value.as_object() else {
        return Err(DocumentError::Invalid(
            "not a mapping (expected a Kubernetes object)".into(),
        ));
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if api_version.is_empty()
        && kind.is_empty()
        && !map.is_empty()
        && map.keys().all(|k| LEGACY_KEYS.contains(&k.as_str()))
    {
        // Just the text of a legacy ConfigMap's `data.config` (what `kubectl get cm config
        // -o jsonpath='{.data.config}'` prints).
        let config = serde_json::from_value(value)
            .map_err(|e| DocumentError::Invalid(format!("legacy configuration: {e}")))?;
        let cm = LegacyConfigMap {
            name: "config".into(),
            namespace: None,
            config,
        };
        return Ok(Some(InputDocument {
            location: location.into(),
            api: SourceApi::Core,
            object: InputObject::Legacy(cm),
        }));
    }
    if api_version.is_empty() && kind.is_empty() && map.contains_key(HELM_CONFIG_INLINE) {
        return helm_values(map, location, notes);
    }
    if api_version.is_empty() || kind.is_empty() {
        return Err(DocumentError::Invalid(
            "apiVersion and kind are required".into(),
        ));
    }
    let api = match api_version.as_str() {
        v1beta1::API_VERSION => SourceApi::FerroLb,
        "metallb.io/v1beta1" | "metallb.io/v1beta2" => {
            SourceApi::MetalLb(api_version["metallb.io/".len()..].to_string())
        }
        "v1" => SourceApi::Core,
        _ if api_version.starts_with("ferrolb.io/") || api_version.starts_with("metallb.io/") => {
            return Err(DocumentError::Invalid(format!(
                "unknown apiVersion {api_version:?} (kind {kind})"
            )));
        }
        _ => {
            return Err(DocumentError::Other {
                what: format!("{api_version} {kind}/{name}"),
                value,
            });
        }
    };
    let what = format!("{kind}/{name}");
    if api != SourceApi::Core
        && let Some(key) = map.keys().find(|k| {
            !matches!(
                k.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            )
        })
    {
        return Err(DocumentError::Invalid(format!(
            "{what}: unknown top-level field `{key}`"
        )));
    }
    if api == SourceApi::Core {
        return match kind.as_str() {
            "ConfigMap" if value.get("data").and_then(|d| d.get("config")).is_some() => {
                let cm = legacy::from_config_map_value(&value)
                    .map_err(|e| DocumentError::Invalid(e.to_string()))?;
                Ok(Some(InputDocument {
                    location: location.into(),
                    api,
                    object: InputObject::Legacy(cm),
                }))
            }
            _ => Err(DocumentError::Other {
                what: format!("v1 {what}"),
                value,
            }),
        };
    }
    // MetalLB objects have FerroLB's field names: read them as FerroLB objects.
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "apiVersion".into(),
            Value::String(v1beta1::API_VERSION.into()),
        );
        // Server-populated fields that a `kubectl get -o yaml` dump carries.
        obj.remove("status");
        // No spec means `spec: {}` for these kinds (as the CRDs default it).
        if crate::crdgen::OPTIONAL_SPEC_KINDS.contains(&kind.as_str())
            && obj.get("spec").is_none_or(Value::is_null)
        {
            obj.insert("spec".into(), Value::Object(serde_json::Map::new()));
        }
    }
    let object = match kind.as_str() {
        "IPAddressPool" => InputObject::IPAddressPool(typed(value, &what)?),
        "L2Advertisement" => InputObject::L2Advertisement(typed(value, &what)?),
        "BGPAdvertisement" => InputObject::BGPAdvertisement(typed(value, &what)?),
        "BGPPeer" => InputObject::BGPPeer(typed(value, &what)?),
        "BFDProfile" => InputObject::BFDProfile(typed(value, &what)?),
        "Community" => InputObject::Community(typed(value, &what)?),
        "ServiceL2Status" | "ServiceBGPStatus" | "BGPSessionState" | "ConfigurationState" => {
            return Err(DocumentError::Skipped(format!(
                "{what} is status, not configuration: skipped"
            )));
        }
        _ => {
            return Err(DocumentError::Invalid(format!(
                "unknown kind {kind:?} for apiVersion {api_version}"
            )));
        }
    };
    Ok(Some(InputDocument {
        location: location.into(),
        api,
        object,
    }))
}

const EMPTY_CONFIG_INLINE: &str = "Helm values: configInline is empty: no configuration in this \
     document (the chart then uses the ConfigMap named by existingConfigMap: give that instead)";

/// A Helm `values.yaml` of MetalLB's chart ≤ 0.12: `configInline` is the legacy configuration
/// (the chart writes `toYaml .Values.configInline` into the ConfigMap's `data.config`, so it is
/// read exactly as that text is); every other key configures the chart, not MetalLB, and is
/// ignored with a note.
fn helm_values(
    map: &serde_json::Map<String, Value>,
    location: &str,
    notes: &mut Vec<String>,
) -> Result<Option<InputDocument>, DocumentError> {
    let ignored: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|key| *key != HELM_CONFIG_INLINE)
        .collect();
    if !ignored.is_empty() {
        notes.push(format!(
            "Helm values: ignored (they configure MetalLB's chart, not MetalLB): {}",
            ignored.join(", ")
        ));
    }
    let config = match &map[HELM_CONFIG_INLINE] {
        // The chart then renders no ConfigMap and MetalLB reads `existingConfigMap`.
        Value::Null => {
            notes.push(EMPTY_CONFIG_INLINE.into());
            return Ok(None);
        }
        Value::Object(inline) if inline.is_empty() => {
            notes.push(EMPTY_CONFIG_INLINE.into());
            return Ok(None);
        }
        inline @ Value::Object(_) => serde_json::from_value(inline.clone()).map_err(|e| {
            DocumentError::Invalid(format!("Helm values: {HELM_CONFIG_INLINE}: {e}"))
        })?,
        _ => {
            return Err(DocumentError::Invalid(format!(
                "Helm values: {HELM_CONFIG_INLINE} must be a mapping (address-pools, peers, \
                 bgp-communities, bfd-profiles), as MetalLB's chart ≤ 0.12 takes it"
            )));
        }
    };
    notes.push(format!(
        "Helm values: {HELM_CONFIG_INLINE} read as MetalLB's legacy configuration (its errors name it ConfigMap/config)"
    ));
    Ok(Some(InputDocument {
        location: location.into(),
        api: SourceApi::Core,
        object: InputObject::Legacy(LegacyConfigMap {
            name: "config".into(),
            namespace: None,
            config,
        }),
    }))
}

fn typed<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, DocumentError> {
    serde_json::from_value(value).map_err(|e| DocumentError::Invalid(format!("{what}: {e}")))
}

impl ClusterResources {
    /// Adds one object. Errors when a second legacy ConfigMap is added (MetalLB reads one).
    pub fn add(&mut self, object: InputObject) -> Result<(), String> {
        match object {
            InputObject::IPAddressPool(o) => self.ip_address_pools.push(o),
            InputObject::L2Advertisement(o) => self.l2_advertisements.push(o),
            InputObject::BGPAdvertisement(o) => self.bgp_advertisements.push(o),
            InputObject::BGPPeer(o) => self.bgp_peers.push(o),
            InputObject::BFDProfile(o) => self.bfd_profiles.push(o),
            InputObject::Community(o) => self.communities.push(o),
            InputObject::Legacy(cm) => {
                if let Some(existing) = &self.legacy {
                    return Err(format!(
                        "ConfigMap/{}: a legacy configuration was already given (ConfigMap/{}); only one is read",
                        cm.name, existing.name
                    ));
                }
                self.legacy = Some(cm);
            }
        }
        Ok(())
    }

    /// Reads multi-document YAML straight into resources: `Err` for text that is not YAML,
    /// otherwise the resources and one line per document error.
    pub fn from_yaml(text: &str, source: &str) -> Result<(ClusterResources, Vec<String>), String> {
        let parsed = parse_documents(text, source)?;
        let mut resources = ClusterResources::default();
        let mut errors = parsed.errors;
        for document in parsed.documents {
            if let Err(e) = resources.add(document.object) {
                errors.push(format!("{}: {e}", document.location));
            }
        }
        Ok((resources, errors))
    }
}
