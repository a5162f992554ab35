//! TLS and mTLS (rustls through tonic): turns the `tls_cert` / `tls_key` / `tls_client_ca`
//! settings into a tonic `ServerTlsConfig`, and checks them at start-up so a bad file fails
//! with an error naming its setting instead of at the first handshake.
//!
//! With `tls_client_ca`, every client must present a certificate that chains to it (mTLS);
//! without it, the server authenticates itself only.

use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{ConfigError, TlsConfig};

/// How long a client may take to finish the TLS handshake: a connection that opens and stalls
/// must not hold a slot for ever.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn read_pem(setting: &'static str, path: &Path, marker: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Invalid {
        setting,
        why: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(ConfigError::Invalid {
            setting,
            why: format!("{} holds no PEM {marker}", path.display()),
        });
    }
    Ok(bytes)
}

/// The tonic TLS configuration for these settings.
pub fn server_config(tls: &TlsConfig) -> Result<ServerTlsConfig, ConfigError> {
    let cert = read_pem("tls_cert", &tls.cert, "CERTIFICATE")?;
    let key = read_pem("tls_key", &tls.key, "PRIVATE KEY")?;
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca {
        let ca = read_pem("tls_client_ca", ca, "CERTIFICATE")?;
        config = config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false);
    }
    Ok(config)
}

/// Builds the rustls configuration once, so a key that does not match its certificate, or a
/// file that is not what it says, fails start-up with the setting named.
pub fn check(tls: &TlsConfig) -> Result<(), ConfigError> {
    let config = server_config(tls)?;
    tonic::transport::Server::builder()
        .tls_config(config)
        .map(|_| ())
        .map_err(|e| {
            let why = format!(
                "{} and {} do not form a usable TLS identity{}: {}",
                tls.cert.display(),
                tls.key.display(),
                if tls.client_ca.is_some() {
                    " (or tls_client_ca is not a usable CA)"
                } else {
                    ""
                },
                chain(&e)
            );
            ConfigError::Invalid {
                setting: "tls_cert",
                why,
            }
        })
}

/// An error and its sources ("transport error: invalid key: …").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
