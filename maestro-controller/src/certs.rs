//! Lab certificates (`maestro-cli certs init DIR`): a certificate authority and a server
//! certificate signed by it, so that TLS with a lab broker takes two commands (make the
//! files, point the broker at them). The server certificate covers `localhost`,
//! `127.0.0.1` and any names given, and may also serve as a client certificate (it has
//! both TLS usages). Keys are ECDSA P-256 (rcgen), written owner-only. It also writes the
//! signing keys of a cluster (`--keys DIR`): `controller.key` and `peer.key` (Ed25519,
//! owner-only) and their public halves `controller.pub` and `peer.pub`
//! ([`maestro_protocol::signing`]). `--keys-only` writes those four alone.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{name:?} is not a host name or an IP address for a certificate: {reason}")]
    Name { name: String, reason: String },
    #[error("cannot make the certificates: {0}")]
    Make(String),
    #[error("{0} exists already (give --force to replace it)")]
    Exists(PathBuf),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// What [`init`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server: PathBuf,
    pub server_key: PathBuf,
    /// The names the server certificate covers.
    pub names: Vec<String>,
    /// The signing keys (`--keys DIR`).
    pub keys: KeyFiles,
}

/// The four files of a keys folder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyFiles {
    pub controller_key: PathBuf,
    pub controller_pub: PathBuf,
    pub peer_key: PathBuf,
    pub peer_pub: PathBuf,
}

impl KeyFiles {
    fn in_dir(dir: &Path) -> Self {
        use maestro_protocol::signing::files;
        KeyFiles {
            controller_key: dir.join(files::CONTROLLER_KEY),
            controller_pub: dir.join(files::CONTROLLER_PUB),
            peer_key: dir.join(files::PEER_KEY),
            peer_pub: dir.join(files::PEER_PUB),
        }
    }

    fn all(&self) -> [&PathBuf; 4] {
        [
            &self.controller_key,
            &self.controller_pub,
            &self.peer_key,
            &self.peer_pub,
        ]
    }
}

/// Writes a cluster's two signing key pairs into `dir` (made if missing). Existing files
/// are kept unless `force`.
pub fn init_keys(dir: &Path, force: bool) -> Result<KeyFiles, CertsError> {
    let files = KeyFiles::in_dir(dir);
    if !force && let Some(existing) = files.all().iter().find(|f| f.exists()) {
        return Err(CertsError::Exists((*existing).clone()));
    }
    std::fs::create_dir_all(dir).map_err(|e| CertsError::Write(dir.to_owned(), e))?;
    write_keys(&files)?;
    Ok(files)
}

fn write_keys(files: &KeyFiles) -> Result<(), CertsError> {
    use maestro_protocol::signing::SigningKey;
    let (controller, peer) = (SigningKey::generate(), SigningKey::generate());
    write(&files.controller_key, &controller.to_pem(), true)?;
    write(
        &files.controller_pub,
        &controller.verifying_key().to_pem(),
        false,
    )?;
    write(&files.peer_key, &peer.to_pem(), true)?;
    write(&files.peer_pub, &peer.verifying_key().to_pem(), false)
}

fn make(e: rcgen::Error) -> CertsError {
    CertsError::Make(e.to_string())
}

/// Writes `ca.pem`, `ca.key`, `server.pem` and `server.key`, and the signing keys
/// ([`init_keys`]), into `dir` (made if missing). Existing files are kept unless `force`.
pub fn init(dir: &Path, extra_names: &[String], force: bool) -> Result<Written, CertsError> {
    let written = Written {
        ca: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        keys: KeyFiles::in_dir(dir),
        names: ["localhost".to_owned(), "127.0.0.1".to_owned()]
            .into_iter()
            .chain(extra_names.iter().cloned())
            .collect(),
    };
    // Every name first, so a bad one writes nothing.
    for name in extra_names {
        check_name(name)?;
    }
    let files = [
        &written.ca,
        &written.ca_key,
        &written.server,
        &written.server_key,
    ];
    if !force
        && let Some(existing) = files
            .into_iter()
            .chain(written.keys.all())
            .find(|f| f.exists())
    {
        return Err(CertsError::Exists(existing.clone()));
    }

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(make)?;
    ca.distinguished_name
        .push(DnType::CommonName, "maestro lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(make)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(make)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(written.names.clone()).map_err(make)?;
    server
        .distinguished_name
        .push(DnType::CommonName, written.names[0].clone());
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_key = KeyPair::generate().map_err(make)?;
    let server_cert = server.signed_by(&server_key, &issuer).map_err(make)?;

    std::fs::create_dir_all(dir).map_err(|e| CertsError::Write(dir.to_owned(), e))?;
    write(&written.ca, &ca_cert.pem(), false)?;
    write(&written.ca_key, &ca_key_pem, true)?;
    write(&written.server, &server_cert.pem(), false)?;
    write(&written.server_key, &server_key.serialize_pem(), true)?;
    write_keys(&written.keys)?;
    Ok(written)
}

/// An IP address, or a DNS name: dot-separated labels of letters, digits and `-` (a
/// leading `*.` for a wildcard).
fn check_name(name: &str) -> Result<(), CertsError> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = |reason: &str| CertsError::Name {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.is_empty() || host.len() > 253 {
        return Err(bad("a name has 1 to 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("every label between dots has 1 to 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad("labels hold letters, digits and inner '-' only"));
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| CertsError::Write(path.to_owned(), e))?;
    if secret {
        // A file that existed (--force) keeps its mode on open: narrow it first.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CertsError::Write(path.to_owned(), e))?;
    }
    file.write_all(text.as_bytes())
        .map_err(|e| CertsError::Write(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_four_files_keeps_them_unless_forced_and_refuses_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let w = init(&dir, &["broker.lab".to_owned()], false).unwrap();
        assert_eq!(w.names, ["localhost", "127.0.0.1", "broker.lab"]);
        for f in [&w.ca, &w.server] {
            let pem = std::fs::read_to_string(f).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        use std::os::unix::fs::PermissionsExt;
        for role in [
            maestro_protocol::Role::Controller,
            maestro_protocol::Role::Worker,
        ] {
            maestro_control::keys::load(&dir, role).unwrap();
        }
        for key in [
            &w.ca_key,
            &w.server_key,
            &w.keys.controller_key,
            &w.keys.peer_key,
        ] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        for public in [&w.keys.controller_pub, &w.keys.peer_pub] {
            let mode = std::fs::metadata(public).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0o044, "{}", public.display());
        }
        // Keys alone: refused over existing ones, written with --force.
        let again = init_keys(&dir, false).unwrap_err().to_string();
        assert!(again.contains("controller.key exists already"), "{again}");
        let k = init_keys(&dir, true).unwrap();
        assert_eq!(k, w.keys);
        let again = init(&dir, &[], false).unwrap_err().to_string();
        assert!(again.contains("ca.pem exists already"), "{again}");
        assert!(init(&dir, &[], true).is_ok());
        let bad = init(&dir, &["no spaces allowed".to_owned()], true)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("\"no spaces allowed\""), "{bad}");
    }
}
