//! Validated Kubernetes label selectors (matchLabels + matchExpressions), checked once at build
//! time so that matching can never fail later.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: BTreeSet<String>,
}

/// A label selector. The empty selector matches everything (Kubernetes semantics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub requirements: Vec<Requirement>,
}

/// Why a selector is invalid; the field it is about is given as a relative path
/// (`matchExpressions[0].values`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub field: String,
    pub detail: String,
}

impl Selector {
    /// Validates a Kubernetes `LabelSelector`. `camel` chooses the field spelling in errors
    /// (`matchExpressions` for CRs, `match-expressions` for the legacy ConfigMap).
    pub fn from_label_selector(
        selector: &LabelSelector,
        camel: bool,
    ) -> Result<Selector, Vec<SelectorError>> {
        let (labels_field, exprs_field) = if camel {
            ("matchLabels", "matchExpressions")
        } else {
            ("match-labels", "match-expressions")
        };
        let mut errors = Vec::new();
        let match_labels = selector.match_labels.clone().unwrap_or_default();
        for (key, value) in &match_labels {
            if let Err(detail) = validate_key(key) {
                errors.push(SelectorError {
                    field: format!("{labels_field}.{key}"),
                    detail,
                });
            }
            if let Err(detail) = validate_value(value) {
                errors.push(SelectorError {
                    field: format!("{labels_field}.{key}"),
                    detail,
                });
            }
        }
        let mut requirements = Vec::new();
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let here = format!("{exprs_field}[{i}]");
            if let Err(detail) = validate_key(&expr.key) {
                errors.push(SelectorError {
                    field: format!("{here}.key"),
                    detail,
                });
            }
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    errors.push(SelectorError {
                        field: format!("{here}.operator"),
                        detail: format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    });
                    continue;
                }
            };
            let raw_values = expr.values.clone().unwrap_or_default();
            let mut values = BTreeSet::new();
            for (j, value) in raw_values.iter().enumerate() {
                if let Err(detail) = validate_value(value) {
                    errors.push(SelectorError {
                        field: format!("{here}.values[{j}]"),
                        detail,
                    });
                }
                if !values.insert(value.clone()) {
                    errors.push(SelectorError {
                        field: format!("{here}.values[{j}]"),
                        detail: format!("duplicate value {value:?}"),
                    });
                }
            }
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => errors.push(SelectorError {
                    field: format!("{here}.values"),
                    detail: format!("operator {} needs at least one value", expr.operator),
                }),
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    errors.push(SelectorError {
                        field: format!("{here}.values"),
                        detail: format!("operator {} takes no values", expr.operator),
                    })
                }
                _ => {}
            }
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
                values,
            });
        }
        if errors.is_empty() {
            Ok(Selector {
                match_labels,
                requirements,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether `labels` satisfy every term (AND). The empty selector matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r.operator {
                Operator::In => labels.get(&r.key).is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => labels.get(&r.key).is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => labels.contains_key(&r.key),
                Operator::DoesNotExist => !labels.contains_key(&r.key),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.requirements.is_empty()
    }

    /// Back to the Kubernetes type (for `migrate`).
    pub fn to_label_selector(&self) -> LabelSelector {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        LabelSelector {
            match_labels: (!self.match_labels.is_empty()).then(|| self.match_labels.clone()),
            match_expressions: (!self.requirements.is_empty()).then(|| {
                self.requirements
                    .iter()
                    .map(|r| LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: format!("{:?}", r.operator),
                        values: (!r.values.is_empty()).then(|| r.values.iter().cloned().collect()),
                    })
                    .collect()
            }),
        }
    }
}

/// `[prefix/]name`: prefix a DNS-1123 subdomain, name ≤ 63 of `[A-Za-z0-9._-]`, alphanumeric ends.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "label key {key:?}: prefix must be a DNS-1123 subdomain"
        ));
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!("label key {key:?} is not a valid label name"));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!("label value {value:?} is not valid"))
    }
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// DNS-1123 label: ≤ 63 of `[a-z0-9-]`, alphanumeric ends.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching() {
        let sel = Selector::from_label_selector(
            &LabelSelector {
                match_labels: Some(labels(&[("rack", "a")])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["x".into()]),
                }]),
            },
            true,
        )
        .unwrap();
        assert!(sel.matches(&labels(&[("rack", "a")])));
        assert!(sel.matches(&labels(&[("rack", "a"), ("zone", "y")])));
        assert!(!sel.matches(&labels(&[("rack", "a"), ("zone", "x")])));
        assert!(!sel.matches(&labels(&[("rack", "b")])));
        assert!(Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn invalid() {
        let err = Selector::from_label_selector(
            &LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "In".into(),
                    values: None,
                }]),
            },
            true,
        )
        .unwrap_err();
        assert_eq!(err[0].field, "matchExpressions[0].values");
    }
}
