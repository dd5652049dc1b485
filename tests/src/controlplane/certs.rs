//! The control plane's PKI, made with the `openssl` CLI (present on every CI image; no extra
//! crate): one CA, the API server's serving certificate, the admin client certificate
//! (`O=system:masters`) and the service-account token signing key pair. All keys are ECDSA P-256:
//! fast to generate and accepted everywhere (ES256 for service-account tokens).

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Paths of everything [`generate`] writes into `<run_dir>/pki/`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    pub fn in_dir(run_dir: &Path) -> Self {
        let dir = run_dir.join("pki");
        Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        }
    }
}

fn openssl(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl: is the openssl CLI installed?")?;
    if !output.status.success() {
        bail!(
            "`openssl {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("path is not UTF-8: {}", path.display()))
}

fn new_ec_key(key: &Path, dir: &Path) -> anyhow::Result<()> {
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            path_str(key)?,
        ],
        dir,
    )
}

/// Issues a certificate for `key`, signed by the CA, with the given extensions.
fn issue(
    pki: &Pki,
    name: &str,
    subject: &str,
    extensions: &str,
    key: &Path,
    cert: &Path,
) -> anyhow::Result<()> {
    let dir = key.parent().unwrap_or(Path::new("."));
    new_ec_key(key, dir)?;
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    fs::write(&ext, extensions).with_context(|| format!("writing {}", ext.display()))?;
    openssl(
        &[
            "req",
            "-new",
            "-key",
            path_str(key)?,
            "-subj",
            subject,
            "-out",
            path_str(&csr)?,
        ],
        dir,
    )?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            path_str(&csr)?,
            "-CA",
            path_str(&pki.ca_cert)?,
            "-CAkey",
            path_str(&pki.ca_key)?,
            "-CAcreateserial",
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            path_str(&ext)?,
            "-out",
            path_str(cert)?,
        ],
        dir,
    )
}

/// The serving certificate's subjectAltName: every name and address a client may dial.
pub fn serving_san(ips: &[IpAddr], dns: &[&str]) -> String {
    let mut entries: Vec<String> = dns.iter().map(|name| format!("DNS:{name}")).collect();
    entries.extend(ips.iter().map(|ip| format!("IP:{ip}")));
    entries.join(",")
}

/// Writes a fresh PKI into `<run_dir>/pki/`. The serving certificate covers `ips` and the usual
/// in-cluster names of the API server.
pub fn generate(run_dir: &Path, ips: &[IpAddr]) -> anyhow::Result<Pki> {
    let pki = Pki::in_dir(run_dir);
    let dir = run_dir.join("pki");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    new_ec_key(&pki.ca_key, &dir)?;
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(&pki.ca_key)?,
            "-subj",
            "/CN=ferrolb-lab-ca",
            "-days",
            "3650",
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out",
            path_str(&pki.ca_cert)?,
        ],
        &dir,
    )?;

    let san = serving_san(
        ips,
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    );
    issue(
        &pki,
        "apiserver",
        "/CN=kube-apiserver",
        &format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        ),
        &pki.serving_key,
        &pki.serving_cert,
    )?;
    issue(
        &pki,
        "admin",
        "/O=system:masters/CN=ferrolb-admin",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        &pki.admin_key,
        &pki.admin_cert,
    )?;

    new_ec_key(&pki.service_account_key, &dir)?;
    openssl(
        &[
            "pkey",
            "-in",
            path_str(&pki.service_account_key)?,
            "-pubout",
            "-out",
            path_str(&pki.service_account_pub)?,
        ],
        &dir,
    )?;
    Ok(pki)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_serving_san_lists_names_then_ips() {
        let ips: Vec<IpAddr> = vec![
            "192.0.2.2".parse().unwrap(),
            "2001:db8:2::2".parse().unwrap(),
        ];
        assert_eq!(
            serving_san(&ips, &["localhost", "kubernetes.default.svc"]),
            "DNS:localhost,DNS:kubernetes.default.svc,IP:192.0.2.2,IP:2001:db8:2::2"
        );
    }
}
