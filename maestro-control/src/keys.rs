//! The keys folder (`--keys DIR`, `MAESTRO_KEYS`): each process loads only the two files
//! its role needs (see [`maestro_protocol::signing`]):
//!
//! | role               | signs with       | checks with      |
//! |--------------------|------------------|------------------|
//! | controller (CLI)   | `controller.key` | `peer.pub`       |
//! | worker, inspector  | `peer.key`       | `controller.pub` |
//!
//! A private key that its group or others can read is refused, with the reason.
//!
//! A controller given no folder looks for one remembered for its control URL
//! (`$XDG_CONFIG_HOME/maestro/keys/HOST-PORT`, else `~/.config/maestro/keys/HOST-PORT`):
//! `docker-compose/build` leaves the compose cluster's controller keys there, so the host's
//! `maestro-cli` commands that cluster without a flag.

use crate::url::ControlUrl;
use maestro_protocol::Role;
use maestro_protocol::signing::{KeyError, SigningKey, VerifyingKey, files};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A process's keys: its own private key and the public key it trusts.
#[derive(Debug)]
pub struct Keys {
    pub own: SigningKey,
    pub trusted: VerifyingKey,
    /// Where they were loaded from (for messages).
    pub folder: PathBuf,
}

/// A keys folder that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(
        "{path}: missing; a {role} needs {own} and {trusted} in its keys folder (`maestro-cli certs init DIR` writes them)"
    )]
    Missing {
        path: PathBuf,
        role: Role,
        own: &'static str,
        trusted: &'static str,
    },
    #[error(
        "{path}: its group or others can read this private key (mode {mode:04o}); only its owner may: chmod 600 {path}"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: KeyError },
}

/// The files `role` loads: its private key and the public key it checks with.
pub fn files_for(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Controller => (files::CONTROLLER_KEY, files::PEER_PUB),
        Role::Worker | Role::Inspector => (files::PEER_KEY, files::CONTROLLER_PUB),
    }
}

/// Loads what `role` needs from `dir`.
pub fn load(dir: &Path, role: Role) -> Result<Keys, KeysError> {
    let (own_name, trusted_name) = files_for(role);
    let read = |name: &'static str, private: bool| -> Result<(PathBuf, String), KeysError> {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KeysError::Missing {
                path: path.clone(),
                role,
                own: own_name,
                trusted: trusted_name,
            },
            _ => KeysError::Read {
                path: path.clone(),
                reason: e.to_string(),
            },
        })?;
        if private {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeysError::Readable { path, mode });
            }
        }
        let text = std::fs::read_to_string(&path).map_err(|e| KeysError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok((path, text))
    };
    let (own_path, own_text) = read(own_name, true)?;
    let own = SigningKey::from_pem(&own_text).map_err(|source| KeysError::Key {
        path: own_path,
        source,
    })?;
    let (trusted_path, trusted_text) = read(trusted_name, false)?;
    let trusted = VerifyingKey::from_pem(&trusted_text).map_err(|source| KeysError::Key {
        path: trusted_path,
        source,
    })?;
    if role != Role::Controller && dir.join(files::CONTROLLER_KEY).exists() {
        tracing::warn!(folder = %dir.display(),
            "the keys folder also holds controller.key, which a {role} does not use: whoever can read it can command the cluster; give peers a folder with only {} and {}",
            files::PEER_KEY, files::CONTROLLER_PUB);
    }
    Ok(Keys {
        own,
        trusted,
        folder: dir.to_owned(),
    })
}

/// Where a controller's keys for `url` are remembered (see the module docs), whether or
/// not the folder exists. `None` without a home folder.
pub fn remembered_dir(url: &ControlUrl) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    let host = match url.host.as_str() {
        "localhost" | "::1" | "[::1]" => "127.0.0.1",
        other => other,
    };
    Some(
        base.join("maestro")
            .join("keys")
            .join(format!("{host}-{}", url.port)),
    )
}

/// Remembers `dir`'s controller keys for `url` ([`remembered_dir`]): checks them, then
/// copies `controller.key` (owner-only) and `peer.pub` there. Returns the folder.
pub fn remember(dir: &Path, url: &ControlUrl) -> Result<PathBuf, KeysError> {
    load(dir, Role::Controller)?;
    let to = remembered_dir(url).ok_or_else(|| KeysError::Read {
        path: PathBuf::from("~/.config"),
        reason: "neither XDG_CONFIG_HOME nor HOME is set".into(),
    })?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| KeysError::Read {
            path,
            reason: e.to_string(),
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&to)
        .map_err(io(&to))?;
    for (name, mode) in [(files::CONTROLLER_KEY, 0o600), (files::PEER_PUB, 0o644)] {
        let (from, target) = (dir.join(name), to.join(name));
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&target)
            .map_err(io(&target))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(&target))?;
        file.write_all(&bytes).map_err(io(&target))?;
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn each_role_loads_its_own_pair_and_refuses_readable_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (controller, peer) = (SigningKey::generate(), SigningKey::generate());
        write(
            dir.path(),
            files::CONTROLLER_KEY,
            &controller.to_pem(),
            0o600,
        );
        write(
            dir.path(),
            files::CONTROLLER_PUB,
            &controller.verifying_key().to_pem(),
            0o644,
        );
        write(dir.path(), files::PEER_KEY, &peer.to_pem(), 0o600);
        write(
            dir.path(),
            files::PEER_PUB,
            &peer.verifying_key().to_pem(),
            0o644,
        );
        let c = load(dir.path(), Role::Controller).unwrap();
        assert_eq!(c.own.verifying_key(), controller.verifying_key());
        assert_eq!(c.trusted, peer.verifying_key());
        let w = load(dir.path(), Role::Worker).unwrap();
        assert_eq!(w.own.verifying_key(), peer.verifying_key());
        assert_eq!(w.trusted, controller.verifying_key());

        std::fs::set_permissions(
            dir.path().join(files::PEER_KEY),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let e = load(dir.path(), Role::Inspector).unwrap_err().to_string();
        assert!(e.contains("peer.key") && e.contains("0640"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        // The controller does not read peer.key: unaffected.
        assert!(load(dir.path(), Role::Controller).is_ok());

        std::fs::remove_file(dir.path().join(files::PEER_PUB)).unwrap();
        let e = load(dir.path(), Role::Controller).unwrap_err().to_string();
        assert!(e.contains("peer.pub: missing"), "{e}");
        assert!(
            e.contains("controller needs controller.key and peer.pub"),
            "{e}"
        );

        write(dir.path(), files::CONTROLLER_KEY, "not a key", 0o600);
        write(dir.path(), files::PEER_PUB, "x", 0o644);
        let e = load(dir.path(), Role::Controller).unwrap_err().to_string();
        assert!(e.contains("controller.key") && e.contains("PKCS#8"), "{e}");
    }

    #[test]
    fn the_remembered_folder_is_per_control_url() {
        let url: ControlUrl = "mqtt://localhost:1883".parse().unwrap();
        let dir = remembered_dir(&url);
        if let Some(dir) = dir {
            assert!(dir.ends_with("maestro/keys/127.0.0.1-1883"), "{dir:?}");
        }
        let other: ControlUrl = "mqtt://10.0.0.5:2883".parse().unwrap();
        if let Some(dir) = remembered_dir(&other) {
            assert!(dir.ends_with("maestro/keys/10.0.0.5-2883"), "{dir:?}");
        }
    }
}
