//! The validating admission webhook (`POST /validate`, HTTPS), served by every controller
//! replica, leader or not.
//!
//! * [`review`]: the decision, pure.
//! * [`cert`]: the serving certificate: created, rotated and published (caBundle) here.
//!
//! Each request lists the configuration objects afresh (a handful of small lists; config writes
//! are rare), so a standby answers from the same facts as the leader. When the API server cannot
//! be read, the write is allowed with a warning: the controller and the speakers validate the
//! configuration again on their own, and the webhook's `failurePolicy: Ignore` makes the same
//! choice when the controller is down (docs/configuration.md, "Admission webhook").

pub mod cert;
pub mod review;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use ferrolb_crds::config::ClusterResources;
use ferrolb_crds::v1beta1::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement,
};
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use cert::CertResolver;
use review::{ConfigObject, Verdict};

/// What the handler needs.
pub struct WebhookState {
    pub client: Client,
    /// The configuration namespace.
    pub namespace: String,
    /// The legacy ConfigMap's name (its pools count as existing ones).
    pub config_map: String,
}

async fn list<K>(client: &Client, namespace: &str) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// The configuration objects as they are now. A legacy ConfigMap that does not parse counts as
/// absent here: its own error is the controller's to report.
async fn existing(state: &WebhookState) -> Result<ClusterResources, kube::Error> {
    let (client, ns) = (&state.client, state.namespace.as_str());
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns);
    let legacy = config_maps
        .get_opt(&state.config_map)
        .await?
        .and_then(|map| ferrolb_crds::cluster::legacy_config_map(&map).ok());
    Ok(ClusterResources {
        ip_address_pools: list::<IPAddressPool>(client, ns).await?,
        l2_advertisements: list::<L2Advertisement>(client, ns).await?,
        bgp_advertisements: list::<BGPAdvertisement>(client, ns).await?,
        bgp_peers: list::<BGPPeer>(client, ns).await?,
        bfd_profiles: list::<BFDProfile>(client, ns).await?,
        communities: list::<Community>(client, ns).await?,
        legacy,
        // Secrets are the speaker's business: a passwordSecret is checked there (a warning here).
        secrets: None,
    })
}

async fn decide(state: &WebhookState, request: &AdmissionRequest<DynamicObject>) -> Verdict {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::default();
    }
    let Some(object) = &request.object else {
        return Verdict::default();
    };
    let json = match serde_json::to_value(object) {
        Ok(json) => json,
        Err(error) => {
            return Verdict {
                denied: Some(format!("the object cannot be read: {error}")),
                warnings: Vec::new(),
            };
        }
    };
    if request.kind.group.is_empty() && request.kind.kind == "Service" {
        return match serde_json::from_value::<Service>(json) {
            Ok(service) => review::review_service(&service),
            Err(_) => Verdict::default(),
        };
    }
    let Some(parsed) = ConfigObject::from_json(&request.kind.kind, json) else {
        return Verdict::default();
    };
    let object = match parsed {
        Ok(object) => object,
        Err(error) => {
            return Verdict {
                denied: Some(format!("{}/{}: {error}", request.kind.kind, request.name)),
                warnings: Vec::new(),
            };
        }
    };
    let object_namespace = request.namespace.clone().unwrap_or_default();
    match existing(state).await {
        Ok(resources) => {
            review::review_config(&resources, object, &object_namespace, &state.namespace)
        }
        Err(error) => {
            warn!(%error, "cannot read the configuration: allowing the write unchecked");
            Verdict {
                denied: None,
                warnings: vec![format!(
                    "FerroLB could not check this against the other configuration objects \
                     ({error}); the controller reports any problem in the ConfigValid condition"
                )],
            }
        }
    }
}

async fn validate(
    State(state): State<Arc<WebhookState>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => {
            return Json(AdmissionResponse::invalid(error.to_string()).into_review());
        }
    };
    let span = info_span!(
        "admission",
        kind = %request.kind.kind,
        object = %request.name,
        namespace = request.namespace.as_deref().unwrap_or(""),
    );
    let verdict = decide(&state, &request).instrument(span.clone()).await;
    let mut response = AdmissionResponse::from(&request);
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    if let Some(reason) = verdict.denied {
        span.in_scope(|| info!(%reason, "refused"));
        response = response.deny(reason);
    }
    Json(response.into_review())
}

/// TLS connections, handshaken off the accept loop so a slow client cannot stall others.
struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): wait for axum's graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send((tls, peer)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}

/// Serves `/validate` on `addr` until `shutdown`, with the certificate `resolver` holds (a
/// handshake before the first one is loaded fails, and the API server applies the failure
/// policy).
pub async fn serve(
    addr: SocketAddr,
    state: Arc<WebhookState>,
    resolver: Arc<CertResolver>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(addr = %local, "serving the admission webhook on /validate");
    let connections = accept_loop(listener, acceptor, shutdown.clone());
    let router = Router::new()
        .route("/validate", post(validate))
        .with_state(state);
    axum::serve(TlsListener { connections, local }, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
