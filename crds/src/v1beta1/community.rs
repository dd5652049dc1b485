//! `Community`: names for BGP community values.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigStatus;

/// Aliases for BGP communities, usable by name in BGPAdvertisement `communities`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    namespaced,
    category = "ferrolb",
    status = "ConfigStatus",
    derive = "PartialEq",
    doc = "Community defines names for BGP community values, which BGPAdvertisements can use instead of the numbers. Same fields as MetalLB's metallb.io/v1beta1 Community.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunitySpec {
    /// The aliases. Names must be unique across all Community objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".to_owned()]))]
    pub communities: Vec<CommunityAlias>,
}

/// One name for one BGP community value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityAlias {
    /// The alias, used in BGPAdvertisement `communities`.
    pub name: String,

    /// The community: `A:B` (standard, 16-bit numbers) or `large:A:B:C` (large, 32-bit
    /// numbers).
    pub value: String,
}
