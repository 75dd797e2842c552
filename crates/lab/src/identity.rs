//! Workload identity in the lab, done as a cluster does it: one mesh root with an
//! intermediate CA per cluster (`isthmus create-cacerts`, kept in `DIR/cacerts`), a
//! service-account token issuer per cluster (its key in `DIR/issuers`, its public keys
//! named in mesh.yaml), and for each pod what a kubelet mounts into it: a projected
//! token for audience `istio-ca` and the mesh's root certificate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use isthmus_ca::{CA_AUDIENCE, TokenIssuer};

use crate::LabError;
use crate::controller::PROXY_UID;
use crate::runtime::PodKey;

/// The `iss` of the lab's tokens (a kubelet's default issuer).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// How long a pod's token is valid. The lab does not rotate tokens as a kubelet does
/// (at 80 % of their life); a week outlasts any lab.
pub const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The control plane's TLS port: xDS and the CA (Istio's 15012).
pub const SECURE_XDS_PORT: u16 = 15012;

/// Where the lab keeps its CA material.
pub(crate) fn cacerts_dir(dir: &Path) -> PathBuf {
    dir.join("cacerts")
}

/// The JWKS of `cluster`'s token issuer, relative to the lab directory (mesh.yaml's).
pub(crate) fn jwks_file(cluster: &str) -> String {
    format!("issuers/{cluster}-jwks.json")
}

/// Makes what is missing: the root and each cluster's intermediate, each cluster's
/// token issuer and its JWKS.
pub(crate) fn prepare(dir: &Path, clusters: &[String]) -> Result<(), LabError> {
    let cacerts = cacerts_dir(dir);
    let missing: Vec<String> = clusters
        .iter()
        .filter(|c| !cacerts.join(c.as_str()).join("ca-key.pem").exists())
        .cloned()
        .collect();
    if !missing.is_empty() {
        isthmus_ca::create_cacerts(&cacerts, &missing)?;
    }
    for cluster in clusters {
        let issuer = issuer(dir, cluster)?;
        let jwks = dir.join(jwks_file(cluster));
        std::fs::write(&jwks, issuer.jwks()).map_err(|e| LabError::io("write", jwks, e))?;
    }
    Ok(())
}

fn issuer(dir: &Path, cluster: &str) -> Result<TokenIssuer, LabError> {
    let key = dir.join("issuers").join(format!("{cluster}-key.pem"));
    Ok(TokenIssuer::load_or_create(&key, ISSUER)?)
}

/// A pod's mounted secrets: its token and the mesh's root.
pub(crate) struct PodSecrets {
    pub token: PathBuf,
    pub root_cert: PathBuf,
}

/// Writes the pod's token (for its service account) and the mesh's root where only the
/// proxy's uid can read them, as a kubelet mounts them.
pub(crate) fn mount_pod_secrets(
    dir: &Path,
    key: &PodKey,
    service_account: &str,
) -> Result<PodSecrets, LabError> {
    let secrets = dir.join("secrets");
    let pod_dir = secrets
        .join(&key.cluster)
        .join(&key.namespace)
        .join(&key.name);
    std::fs::create_dir_all(&pod_dir).map_err(|e| LabError::io("create", &pod_dir, e))?;
    // The lab directory must let the proxy's uid pass (not list): a fresh temporary
    // directory is closed to it.
    let mode = std::fs::metadata(dir)
        .map_err(|e| LabError::io("read", dir, e))?
        .permissions()
        .mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))
            .map_err(|e| LabError::io("open up", dir, e))?;
    }
    let passable =
        |d: &Path| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if !dir
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
        .all(passable)
    {
        return Err(LabError::ClosedDirectory { path: pod_dir });
    }
    // The proxy's uid walks down to its own directory; nothing above it is listable.
    for d in pod_dir.ancestors().take_while(|d| d.starts_with(&secrets)) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| LabError::io("open up", d, e))?;
    }
    let token = issuer(dir, &key.cluster)?.issue(
        &key.namespace,
        service_account,
        &key.name,
        CA_AUDIENCE,
        TOKEN_TTL,
    );
    let root = std::fs::read(cacerts_dir(dir).join("root-cert.pem"))
        .map_err(|e| LabError::io("read", cacerts_dir(dir).join("root-cert.pem"), e))?;
    let out = PodSecrets {
        token: pod_dir.join("istio-token"),
        root_cert: pod_dir.join("root-cert.pem"),
    };
    for (path, bytes, mode) in [
        (&out.token, token.as_bytes(), 0o600),
        (&out.root_cert, root.as_slice(), 0o644),
    ] {
        std::fs::write(path, bytes)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| LabError::io("write", path, e))?;
    }
    let uid = Some(nix::unistd::Uid::from_raw(PROXY_UID));
    let gid = Some(nix::unistd::Gid::from_raw(PROXY_UID));
    for path in [&pod_dir, &out.token, &out.root_cert] {
        nix::unistd::chown(path.as_path(), uid, gid)
            .map_err(|e| LabError::io("hand to the proxy's uid", path, e.into()))?;
    }
    Ok(out)
}

/// Removes a pod's secrets when the pod goes.
pub(crate) fn unmount_pod_secrets(dir: &Path, key: &PodKey) {
    let _ = std::fs::remove_dir_all(
        dir.join("secrets")
            .join(&key.cluster)
            .join(&key.namespace)
            .join(&key.name),
    );
}
