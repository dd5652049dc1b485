//! The admission webhook against a real kube-apiserver v1.36 + etcd (loopback, no root), driven
//! by `kubectl apply` as a user would.
//!
//! The controller runs as a process with the ServiceAccount and RBAC of `config/rbac/`, and the
//! shipped `config/webhook/validating-webhook.yaml` is installed with one change: its
//! `clientConfig` is a `url` to that process instead of the Service (the loopback control plane
//! has no kube-proxy to route a Service). The controller creates its certificate and fills in
//! the caBundle itself.
//!
//! * Cross-object errors (an overlapping pool, conflicting localPrefs) and a config object
//!   outside the FerroLB namespace are refused, naming the objects, the field and the reason.
//! * A reference to an object not created yet only warns: a valid configuration applies in any
//!   order. Deprecated MetalLB annotations on a Service warn.
//! * The certificate is re-issued when it nears expiry, keeping the CA, and the webhook serves the
//!   new one.
//! * With no controller running, writes are not blocked (`failurePolicy: Ignore`), and the broken
//!   configuration written meanwhile does not block the write that fixes it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ferrolb_tests::controlplane::ControlPlane;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

const SECRET: &str = ferrolb_crds::cluster::WEBHOOK_SECRET_NAME;
const CONFIGURATION: &str = ferrolb_crds::cluster::WEBHOOK_CONFIGURATION_NAME;
const NOT_AFTER: &str = ferrolb_controller::webhook::cert::NOT_AFTER_ANNOTATION;

/// The shipped configuration, pointed at `https://127.0.0.1:<port>/validate`.
fn install_webhook_configuration(control_plane: &ControlPlane, port: u16) {
    let shipped = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/webhook/validating-webhook.yaml"
    ))
    .expect("config/webhook/validating-webhook.yaml");
    let mut configuration: serde_json::Value =
        serde_saphyr::from_str(&shipped).expect("the shipped webhook configuration parses");
    for webhook in configuration["webhooks"].as_array_mut().expect("webhooks") {
        assert_eq!(webhook["failurePolicy"], "Ignore", "the documented choice");
        webhook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}/validate")});
    }
    let path = control_plane.run_dir.join("webhook.json");
    fs::write(&path, configuration.to_string()).expect("write");
    control_plane
        .kubectl_output(["apply", "-f", &path.display().to_string()])
        .expect("install the webhook configuration");
}

struct Controller {
    _process: KillOnDrop,
}

fn start_controller(kubeconfig: &Path, dir: &Path, port: u16, name: &str) -> Controller {
    let child = spawn_controller(
        kubeconfig,
        &dir.join(format!("{name}.log")),
        "info",
        &[
            "--identity",
            name,
            "--metrics-addr",
            "127.0.0.1:0",
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--webhook-host",
            "127.0.0.1",
        ],
    );
    Controller {
        _process: KillOnDrop(child),
    }
}

/// `kubectl apply` of `yaml`: (succeeded, stdout + stderr).
fn apply(control_plane: &ControlPlane, name: &str, yaml: &str, extra: &[&str]) -> (bool, String) {
    let path: PathBuf = control_plane.run_dir.join(format!("{name}.yaml"));
    fs::write(&path, yaml).expect("write manifest");
    let path = path.display().to_string();
    let mut args = vec!["apply", "-f", path.as_str()];
    args.extend_from_slice(extra);
    let output = control_plane.kubectl(args).output().expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn advertisement(name: &str, local_pref: u32) -> String {
    format!(
        r#"apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: {name}
  namespace: {CONFIG_NAMESPACE}
spec:
  ipAddressPools: [a]
  localPref: {local_pref}
"#
    )
}

/// Objects that refer to each other, each before the one it refers to.
fn any_order() -> String {
    format!(
        r#"apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata:
  name: l2-later
  namespace: {CONFIG_NAMESPACE}
spec:
  ipAddressPools: [later]
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata:
  name: router
  namespace: {CONFIG_NAMESPACE}
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 192.0.2.1
  bfdProfile: fast
---
apiVersion: ferrolb.io/v1beta1
kind: BFDProfile
metadata:
  name: fast
  namespace: {CONFIG_NAMESPACE}
spec: {{}}
---
{}"#,
        pool("later", CONFIG_NAMESPACE, "203.0.113.0/28")
    )
}

const DEPRECATED_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: apps
  annotations:
    metallb.universe.tf/address-pool: a
spec:
  type: LoadBalancer
  ports: [{port: 80}]
"#;

/// Whether every needle is in the text.
fn all_in(text: &str, needles: &[&str]) -> bool {
    needles.iter().all(|needle| text.contains(needle))
}

fn pool(name: &str, namespace: &str, cidr: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  addresses: [{cidr}]\n"
    )
}

/// Waits until the webhook answers: a server-side dry run of an overlapping pool is refused.
/// (A dry run persists nothing, so the probe cannot leave a broken pool behind while the
/// webhook is not answering yet and `failurePolicy: Ignore` lets it through.)
async fn wait_until_refusing(control_plane: &ControlPlane, what: &str) -> String {
    eventually(what, Duration::from_secs(60), || async {
        let (ok, text) = apply(
            control_plane,
            "probe",
            &pool("probe", CONFIG_NAMESPACE, "192.0.2.4/30"),
            &["--dry-run=server"],
        );
        (!ok && text.contains("denied the request")).then_some(text)
    })
    .await
}

async fn secret(client: &Client) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
    api.get(SECRET).await.expect("the webhook Secret")
}

fn data(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().expect("data")[key].0.clone()).expect("PEM text")
}

/// The certificate the webhook presents, in PEM (`openssl s_client`).
fn served_certificate(port: u16) -> Option<String> {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    Some(text[begin..end].to_string())
}

#[test]
fn webhook_refuses_bad_configuration_at_apply() {
    if !prerequisites() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let (control_plane, _stop) = start_control_plane("webhook");
    runtime().block_on(async {
        let client = control_plane.client().await.expect("client");
        let kubeconfig = controller_kubeconfig(&control_plane).await;
        let port = free_port().port();
        install_webhook_configuration(&control_plane, port);
        let controller = start_controller(&kubeconfig, &control_plane.run_dir, port, "webhook-a");

        // The controller made its certificate and published its CA in both webhooks.
        let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        eventually("the caBundle", Duration::from_secs(30), || async {
            let configuration = webhooks.get(CONFIGURATION).await.ok()?;
            let all = configuration.webhooks?;
            all.iter()
                .all(|w| w.client_config.ca_bundle.is_some())
                .then_some(())
        })
        .await;
        let first = secret(&client).await;
        let bundle = webhooks
            .get(CONFIGURATION)
            .await
            .expect("get")
            .webhooks
            .expect("webhooks")[0]
            .client_config
            .ca_bundle
            .clone()
            .expect("caBundle");
        assert_eq!(
            String::from_utf8(bundle.0).expect("PEM"),
            data(&first, "ca.crt")
        );

        let (ok, text) = apply(
            &control_plane,
            "a",
            &pool("a", CONFIG_NAMESPACE, "192.0.2.0/28"),
            &[],
        );
        assert!(ok, "a valid pool applies: {text}");
        wait_until_refusing(&control_plane, "the webhook to refuse an overlap").await;

        // An overlapping pool: refused, with both pools, the field and the reason.
        let (ok, text) = apply(
            &control_plane,
            "b",
            &pool("b", CONFIG_NAMESPACE, "192.0.2.8/29"),
            &[],
        );
        assert!(!ok, "an overlapping pool must be refused: {text}");
        let needles = [
            "config.ferrolb.io",
            "denied the request",
            "IPAddressPool/b",
            "spec.addresses[0]",
            "overlaps with",
            "of pool \"a\"",
        ];
        assert!(all_in(&text, &needles), "{needles:?} expected in: {text}");

        // A configuration object outside the FerroLB namespace would be ignored: refused.
        control_plane
            .create_namespace("elsewhere")
            .expect("namespace");
        let (ok, text) = apply(
            &control_plane,
            "elsewhere",
            &pool("x", "elsewhere", "198.51.100.0/28"),
            &[],
        );
        assert!(!ok, "{text}");
        assert!(
            all_in(&text, &["IPAddressPool/x", "elsewhere", CONFIG_NAMESPACE]),
            "{text}"
        );

        // Two advertisements of pool a to every peer with different localPrefs: refused.
        let (ok, text) = apply(&control_plane, "ad1", &advertisement("ad1", 100), &[]);
        assert!(ok, "{text}");
        let (ok, text) = apply(&control_plane, "ad2", &advertisement("ad2", 200), &[]);
        assert!(!ok, "{text}");
        assert!(
            all_in(&text, &["BGPAdvertisement/ad2", "localPref", "ad1"]),
            "{text}"
        );

        // Any order: every reference to something not there yet only warns.
        let (ok, text) = apply(&control_plane, "any-order", &any_order(), &[]);
        assert!(ok, "a valid configuration applies in any order: {text}");
        assert!(
            text.contains("Warning:") && text.contains("later"),
            "{text}"
        );
        assert!(
            text.contains("fast"),
            "the BFDProfile not there yet warns: {text}"
        );

        // An accepted but ignored field warns.
        let ignored = format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata:\n  name: echo\n  \
             namespace: {CONFIG_NAMESPACE}\nspec:\n  echoInterval: 50\n"
        );
        let (ok, text) = apply(&control_plane, "echo", &ignored, &[]);
        assert!(ok, "{text}");
        assert!(
            all_in(
                &text,
                &["Warning:", "BFDProfile/echo", "echoInterval is ignored"]
            ),
            "{text}"
        );

        // Services are never refused; MetalLB's deprecated annotations warn.
        control_plane.create_namespace("apps").expect("namespace");
        let (ok, text) = apply(&control_plane, "service", DEPRECATED_SERVICE, &[]);
        assert!(ok, "{text}");
        let needles = [
            "Warning:",
            "metallb.universe.tf/address-pool",
            "use ferrolb.io/address-pool",
        ];
        assert!(all_in(&text, &needles), "{text}");

        // Rotation: a certificate with little time left is re-issued under the same CA, and the
        // webhook presents the new one.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), CONFIG_NAMESPACE);
        let soon = (Timestamp::now() + SignedDuration::from_hours(1)).to_string();
        secrets
            .patch(
                SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {NOT_AFTER: soon}}})),
            )
            .await
            .expect("age the certificate");
        let rotated = eventually(
            "the certificate to be re-issued",
            Duration::from_secs(60),
            || async {
                let now = secret(&client).await;
                (data(&now, "tls.crt") != data(&first, "tls.crt")).then_some(now)
            },
        )
        .await;
        assert_eq!(
            data(&rotated, "ca.crt"),
            data(&first, "ca.crt"),
            "rotation keeps the CA"
        );
        let new_cert = data(&rotated, "tls.crt");
        eventually(
            "the webhook to serve the new certificate",
            Duration::from_secs(30),
            || async { (served_certificate(port)?.trim() == new_cert.trim()).then_some(()) },
        )
        .await;
        wait_until_refusing(
            &control_plane,
            "the webhook to refuse with the new certificate",
        )
        .await;

        // No controller: writes are not blocked (failurePolicy: Ignore) ...
        drop(controller);
        let (ok, text) = apply(
            &control_plane,
            "b",
            &pool("b", CONFIG_NAMESPACE, "192.0.2.8/29"),
            &[],
        );
        assert!(
            ok,
            "with the controller down the write goes through: {text}"
        );
        // ... and the configuration broken meanwhile does not block its fix, or other writes.
        let _controller = start_controller(&kubeconfig, &control_plane.run_dir, port, "webhook-b");
        wait_until_refusing(&control_plane, "the restarted webhook").await;
        let (ok, text) = apply(
            &control_plane,
            "c",
            &pool("c", CONFIG_NAMESPACE, "198.51.100.16/28"),
            &[],
        );
        assert!(ok, "an unrelated valid pool applies: {text}");
        let (ok, text) = apply(
            &control_plane,
            "b",
            &pool("b", CONFIG_NAMESPACE, "192.0.2.16/29"),
            &[],
        );
        assert!(ok, "the fix applies: {text}");
    });
}
