//! The speakers' membership Secret (`ferrolb-memberlist`, key `secretkey`): the shared key that
//! authenticates every membership datagram between speakers. The leader creates it with a random
//! key when it is missing, as MetalLB's controller does, so that a plain `kubectl apply` of the
//! manifests gives authenticated membership without a manual step. An existing Secret is never
//! changed: rotating the key is the operator's decision (all speakers must change it together).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::info;

/// Name of the Secret and the key inside it, shared with the speaker.
pub use ferrolb_crds::cluster::{
    MEMBERSHIP_SECRET_KEY as SECRET_KEY, MEMBERSHIP_SECRET_NAME as SECRET_NAME,
};
/// Random bytes in a generated key (256 bits).
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MembershipSecretError {
    #[error("reading random bytes for the membership key: {0}")]
    Random(#[source] std::io::Error),
    #[error("creating Secret {namespace}/{SECRET_NAME}: {source}")]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading Secret {namespace}/{SECRET_NAME}: {source}")]
    Get {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// Creates the membership Secret in `namespace` unless it exists. Returns whether it created it.
pub async fn ensure(client: &Client, namespace: &str) -> Result<bool, MembershipSecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let existing =
        secrets
            .get_opt(SECRET_NAME)
            .await
            .map_err(|source| MembershipSecretError::Get {
                namespace: namespace.to_string(),
                source,
            })?;
    if existing.is_some() {
        return Ok(false);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "ferrolb".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            ByteString(random_key()?.into_bytes()),
        )])),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = SECRET_NAME, %namespace, "created the speakers' membership Secret");
            Ok(true)
        }
        // Another replica (or the operator) created it first: theirs stands.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(MembershipSecretError::Create {
            namespace: namespace.to_string(),
            source,
        }),
    }
}

/// A new key as hex text (printable, like the `openssl rand -base64 32` the docs suggest for a
/// hand-made Secret; the speaker derives its HMAC key from whatever bytes the Secret holds).
fn random_key() -> Result<String, MembershipSecretError> {
    let mut bytes = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .map_err(MembershipSecretError::Random)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_256_bit_hex_and_differ() {
        let a = random_key().unwrap();
        let b = random_key().unwrap();
        assert_eq!(a.len(), 2 * KEY_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn hex_encodes_every_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }
}
