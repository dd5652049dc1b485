//! The webhook's serving certificate: created, rotated and published by the controller itself,
//! so no cert-manager is needed.
//!
//! The Secret `--webhook-secret` holds a CA (valid 10 years) and a serving certificate signed
//! by it (`--webhook-cert-validity`, one year by default). Every replica runs [`maintain`]:
//! it fills in the Secret (the chart and the manifest declare it empty, so that uninstalling
//! removes it) or creates it if there is none, re-issues the serving certificate when a third of
//! its validity is left or when it lacks one of this replica's `--webhook-host` names, loads it
//! into the TLS server, and writes the CA into the `caBundle` of the
//! ValidatingWebhookConfiguration. Re-issuing keeps the CA, so the API server trusts the old
//! and the new certificate alike and rotation has no window of failed calls. Writes carry the
//! Secret's resourceVersion: when two replicas race, one wins and the other adopts its result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tracing::{info, warn};

/// The annotation with the serving certificate's expiry (RFC 3339), so that rotation needs no
/// X.509 parser.
pub const NOT_AFTER_ANNOTATION: &str = "ferrolb.io/webhook-cert-not-after";
/// The annotation with the names the serving certificate is valid for, comma-separated.
pub const HOSTS_ANNOTATION: &str = "ferrolb.io/webhook-cert-hosts";

const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 3650);
const CA_COMMON_NAME: &str = "ferrolb-webhook-ca";
/// How often the Secret is read again (and the caBundle checked).
const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("a time outside the certificate's range: {0}")]
    Time(String),
    #[error("loading the certificate into TLS: {0}")]
    Load(String),
}

/// The contents of the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    pub not_after: Timestamp,
    pub hosts: BTreeSet<String>,
}

fn offset_time(at: Timestamp) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second())
        .map_err(|error| CertError::Time(error.to_string()))
}

/// The CA's parameters. The issuer of a serving certificate is rebuilt from these and the
/// stored key, so they must not depend on anything but the validity window.
fn ca_params(now: Timestamp) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset_time(now - SignedDuration::from_hours(1))?;
    params.not_after = offset_time(now + CA_VALIDITY)?;
    Ok(params)
}

fn san(host: &str) -> Result<SanType, CertError> {
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.to_string().try_into()?),
    })
}

/// A new CA and a serving certificate for `hosts`.
pub fn generate(
    hosts: &BTreeSet<String>,
    validity: SignedDuration,
    now: Timestamp,
) -> Result<Material, CertError> {
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params(now)?.self_signed(&ca_key)?;
    issue(ca_cert.pem(), ca_key.serialize_pem(), hosts, validity, now)
}

/// A serving certificate for `hosts`, signed by the CA given in PEM.
pub fn issue(
    ca_cert: String,
    ca_key: String,
    hosts: &BTreeSet<String>,
    validity: SignedDuration,
    now: Timestamp,
) -> Result<Material, CertError> {
    let signing_key = KeyPair::from_pem(&ca_key)?;
    let issuer = Issuer::new(ca_params(now)?, signing_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        hosts
            .first()
            .map(String::as_str)
            .unwrap_or("ferrolb-webhook"),
    );
    params.distinguished_name = name;
    params.subject_alt_names = hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let not_after = now + validity;
    params.not_before = offset_time(now - SignedDuration::from_mins(5))?;
    params.not_after = offset_time(not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Material {
        ca_cert,
        ca_key,
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after,
        hosts: hosts.clone(),
    })
}

/// What to do with the Secret's contents.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// Same CA, new serving certificate (expiring, or missing one of our names).
    Reissue,
    /// Nothing usable: a new CA too.
    Create,
}

/// Decides, at `now`, for a replica that serves under `hosts`.
pub fn plan(
    existing: Option<&Material>,
    hosts: &BTreeSet<String>,
    validity: SignedDuration,
    now: Timestamp,
) -> Plan {
    let Some(material) = existing else {
        return Plan::Create;
    };
    let left = material.not_after.duration_since(now);
    if left < validity / 3 || !hosts.is_subset(&material.hosts) {
        Plan::Reissue
    } else {
        Plan::Keep
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

impl Material {
    /// Reads the Secret; `None` when something is missing (it is then created anew).
    pub fn from_secret(secret: &Secret) -> Option<Material> {
        let annotations = secret.metadata.annotations.as_ref()?;
        Some(Material {
            ca_cert: text(secret, CA_CERT_KEY)?,
            ca_key: text(secret, CA_KEY_KEY)?,
            cert: text(secret, CERT_KEY)?,
            key: text(secret, KEY_KEY)?,
            not_after: annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
            hosts: annotations
                .get(HOSTS_ANNOTATION)?
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The Secret holding this material. Written over `existing` (the chart's or the manifest's
    /// empty Secret, or an earlier certificate), it keeps that object's labels, annotations
    /// and type: Helm recognises the object as its own by them, and a Secret's type cannot
    /// change.
    pub fn to_secret(&self, name: &str, namespace: &str, existing: Option<&Secret>) -> Secret {
        let data = [
            (CA_CERT_KEY, &self.ca_cert),
            (CA_KEY_KEY, &self.ca_key),
            (CERT_KEY, &self.cert),
            (KEY_KEY, &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect();
        let mut metadata = existing.map_or_else(ObjectMeta::default, |s| ObjectMeta {
            labels: s.metadata.labels.clone(),
            annotations: s.metadata.annotations.clone(),
            resource_version: s.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        });
        metadata.name = Some(name.to_string());
        metadata.namespace = Some(namespace.to_string());
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(NOT_AFTER_ANNOTATION.to_string(), self.not_after.to_string());
        annotations.insert(
            HOSTS_ANNOTATION.to_string(),
            self.hosts.iter().cloned().collect::<Vec<_>>().join(","),
        );
        Secret {
            metadata,
            type_: Some(
                existing
                    .and_then(|s| s.type_.clone())
                    .unwrap_or_else(|| "kubernetes.io/tls".to_string()),
            ),
            data: Some(data),
            ..Secret::default()
        }
    }

    fn certified_key(&self) -> Result<CertifiedKey, CertError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| CertError::Load(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|e| CertError::Load(e.to_string()))?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| CertError::Load(e.to_string()))?;
        Ok(CertifiedKey::new(chain, signing_key))
    }
}

/// The TLS server's certificate, swapped in place when it is rotated.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertResolver {
    fn set(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(key));
    }

    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Where the certificate lives and where it is published.
#[derive(Debug, Clone)]
pub struct CertSettings {
    pub namespace: String,
    pub secret: String,
    pub webhook_configuration: String,
    pub hosts: BTreeSet<String>,
    pub validity: SignedDuration,
}

/// One round: the Secret made right, the certificate loaded, the caBundle published.
async fn round(
    client: &Client,
    settings: &CertSettings,
    resolver: &CertResolver,
    loaded: &mut Option<Material>,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let existing = secrets.get_opt(&settings.secret).await?;
    let current = existing.as_ref().and_then(Material::from_secret);
    let now = Timestamp::now();
    let material = match plan(current.as_ref(), &settings.hosts, settings.validity, now) {
        Plan::Keep => current,
        plan => {
            let material = match (plan, current) {
                (Plan::Reissue, Some(old)) => {
                    let hosts = old.hosts.union(&settings.hosts).cloned().collect();
                    issue(old.ca_cert, old.ca_key, &hosts, settings.validity, now)?
                }
                _ => generate(&settings.hosts, settings.validity, now)?,
            };
            let secret =
                material.to_secret(&settings.secret, &settings.namespace, existing.as_ref());
            let written = match existing {
                None => secrets.create(&PostParams::default(), &secret).await,
                Some(_) => {
                    secrets
                        .replace(&settings.secret, &PostParams::default(), &secret)
                        .await
                }
            };
            match written {
                Ok(_) => {
                    info!(
                        secret = %settings.secret,
                        not_after = %material.not_after,
                        hosts = ?material.hosts,
                        "wrote the webhook certificate"
                    );
                    Some(material)
                }
                // Another replica wrote first: adopt its certificate on the next round.
                Err(kube::Error::Api(status)) if status.code == 409 => None,
                Err(error) => return Err(error.into()),
            }
        }
    };
    let Some(material) = material else {
        return Ok(());
    };
    if loaded.as_ref() != Some(&material) {
        resolver.set(material.certified_key()?);
        *loaded = Some(material.clone());
    }
    publish_ca_bundle(client, &settings.webhook_configuration, &material.ca_cert).await
}

/// Writes the CA into every webhook of the configuration whose caBundle differs. A missing
/// configuration is not an error: the webhook is optional (the speaker and the controller
/// validate on their own).
async fn publish_ca_bundle(client: &Client, name: &str, ca_cert: &str) -> anyhow::Result<()> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(configuration) = api.get_opt(name).await? else {
        return Ok(());
    };
    let bundle = ByteString(ca_cert.as_bytes().to_vec());
    let webhooks = configuration.webhooks.unwrap_or_default();
    if webhooks
        .iter()
        .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle))
    {
        return Ok(());
    }
    // A JSON patch per entry, guarded by a test of its name, so a concurrent edit of the list
    // fails the patch instead of being overwritten.
    let mut operations = Vec::new();
    for (index, webhook) in webhooks.iter().enumerate() {
        let path = format!("/webhooks/{index}");
        operations
            .push(json!({"op": "test", "path": format!("{path}/name"), "value": webhook.name}));
        operations.push(json!({
            "op": "add",
            "path": format!("{path}/clientConfig/caBundle"),
            "value": bundle,
        }));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(operations))?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    info!(configuration = name, "published the webhook CA bundle");
    Ok(())
}

/// Keeps the certificate right for as long as the controller runs.
pub async fn maintain(client: Client, settings: CertSettings, resolver: Arc<CertResolver>) {
    let mut loaded = None;
    loop {
        if let Err(error) = round(&client, &settings, &resolver, &mut loaded).await {
            warn!(
                %error,
                secret = %settings.secret,
                "maintaining the webhook certificate failed; retrying"
            );
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    const YEAR: SignedDuration = SignedDuration::from_hours(24 * 365);

    #[test]
    fn generated_material_round_trips_through_the_secret_and_loads_into_tls() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let material = generate(
            &hosts(&["ferrolb-webhook-service.ferrolb-system.svc", "192.0.2.2"]),
            YEAR,
            now,
        )
        .unwrap();
        let secret = material.to_secret("s", "ns", None);
        assert_eq!(Material::from_secret(&secret), Some(material.clone()));
        material.certified_key().expect("rustls accepts it");
    }

    #[test]
    fn writing_over_the_charts_empty_secret_keeps_its_metadata_and_type() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let material = generate(&hosts(&["a.svc"]), YEAR, now).unwrap();
        let declared = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "Helm".to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "meta.helm.sh/release-name".to_string(),
                    "ferrolb".to_string(),
                )])),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        assert_eq!(
            Material::from_secret(&declared),
            None,
            "empty: to be filled"
        );
        let written = material.to_secret("s", "ns", Some(&declared));
        assert_eq!(written.type_.as_deref(), Some("Opaque"));
        assert_eq!(written.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(written.metadata.labels, declared.metadata.labels);
        let annotations = written.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["meta.helm.sh/release-name"], "ferrolb");
        assert_eq!(Material::from_secret(&written), Some(material.clone()));
        // A Secret the controller creates itself is a TLS Secret.
        let created = material.to_secret("s", "ns", None);
        assert_eq!(created.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(created.metadata.resource_version, None);
    }

    #[test]
    fn rotation_keeps_the_ca() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let first = generate(&hosts(&["a.svc"]), YEAR, now).unwrap();
        let later = now + SignedDuration::from_hours(24 * 300);
        let second = issue(
            first.ca_cert.clone(),
            first.ca_key.clone(),
            &first.hosts,
            YEAR,
            later,
        )
        .unwrap();
        assert_eq!(second.ca_cert, first.ca_cert);
        assert_ne!(second.cert, first.cert);
        assert_eq!(second.not_after, later + YEAR);
    }

    #[test]
    fn plan_reissues_with_a_third_left_or_a_missing_name() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let material = generate(&hosts(&["a.svc"]), YEAR, now).unwrap();
        assert_eq!(plan(None, &hosts(&["a.svc"]), YEAR, now), Plan::Create);
        assert_eq!(
            plan(Some(&material), &hosts(&["a.svc"]), YEAR, now),
            Plan::Keep
        );
        let late = now + SignedDuration::from_hours(24 * 250);
        assert_eq!(
            plan(Some(&material), &hosts(&["a.svc"]), YEAR, late),
            Plan::Reissue
        );
        assert_eq!(
            plan(Some(&material), &hosts(&["b.svc"]), YEAR, now),
            Plan::Reissue
        );
    }
}
