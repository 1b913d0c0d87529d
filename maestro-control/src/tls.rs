//! The client configuration of a control connection (`mqtts://` with `--ca`, `--cert`,
//! `--key`); the TLS building blocks are `maestro_process::tls`, re-exported here.

pub use maestro_process::tls::*;
use rustls::ClientConfig;
use std::path::Path;
use std::sync::Arc;

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The rustls configuration of a control connection: trust `ca` (or the system's CAs),
/// and present `cert`/`key` when given. Built once per process.
pub fn control_client_config(
    ca: Option<&Path>,
    cert_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(ca.map(path_str).as_deref())?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_root_certificates(roots);
    let config = match cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates("certificate", &path_str(cert))?,
                private_key(&path_str(key))?,
            )
            .map_err(setup)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
