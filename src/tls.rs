//! TLS and mTLS (rustls, ring): turns the `tls_cert` / `tls_key` / `tls_client_ca` settings
//! into the rustls server configuration the server's own acceptor uses (`server::conn`), and
//! checks them at start-up so a bad file fails with an error naming its setting instead of at
//! the first handshake.
//!
//! Our own acceptor, not tonic's: tonic's offers only `h2` in ALPN and cannot be told
//! otherwise, so an HTTP/1.1-only gRPC-Web client (fetch under Node, `curl --http1.1`) failed
//! the handshake. Here ALPN offers `h2` and, when gRPC-Web is on, `http/1.1`.
//!
//! With `tls_client_ca`, every client must present a certificate that chains to it (mTLS);
//! without it, the server authenticates itself only. A client certificate's subject is the
//! principal of requests that carry no token ([`certificate_principal`]); the certificate
//! reaches requests through tonic's `TlsConnectInfo`, which its `peer_certs` reads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use x509_parser::asn1_rs::ToDer;
use x509_parser::x509::AttributeTypeAndValue;

use crate::config::{ConfigError, TlsConfig};

/// How long a client may take to finish the TLS handshake: a connection that opens and stalls
/// must not hold a slot for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

fn invalid(
    setting: &'static str,
    path: &Path,
    what: &str,
    e: impl std::fmt::Display,
) -> ConfigError {
    ConfigError::Invalid {
        setting,
        why: format!("{} {what}: {e}", path.display()),
    }
}

/// Every certificate in a PEM file (a chain, or a CA bundle).
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_pem(setting, path, "CERTIFICATE")?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(setting, path, "holds an unreadable certificate", e))
}

/// The rustls server configuration for these settings. `http1` adds `http/1.1` to ALPN next to
/// `h2` (gRPC-Web from clients that speak only HTTP/1.1).
pub fn server_config(tls: &TlsConfig, http1: bool) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = certificates("tls_cert", &tls.cert)?;
    let key_pem = read_pem("tls_key", &tls.key, "PRIVATE KEY")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid("tls_key", &tls.key, "holds no usable private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls_cert", &tls.cert, "cannot be served", e))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls_client_ca", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid("tls_client_ca", ca, "is not a usable CA", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| invalid("tls_client_ca", ca, "is not a usable CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| ConfigError::Invalid {
            setting: "tls_cert",
            why: format!(
                "{} and {} do not form a usable TLS identity: {e}",
                tls.cert.display(),
                tls.key.display()
            ),
        })?;
    config.alpn_protocols = alpn(http1);
    Ok(Arc::new(config))
}

/// The protocols offered, preferred first: HTTP/2 (gRPC), then HTTP/1.1 if gRPC-Web is on.
fn alpn(http1: bool) -> Vec<Vec<u8>> {
    let mut protocols = vec![b"h2".to_vec()];
    if http1 {
        protocols.push(b"http/1.1".to_vec());
    }
    protocols
}

/// Builds the rustls configuration once, so a key that does not match its certificate, or a
/// file that is not what it says, fails start-up with the setting named.
pub fn check(tls: &TlsConfig) -> Result<(), ConfigError> {
    server_config(tls, true).map(|_| ())
}

/// The principal of a client known by its certificate: the subject as an RFC 4514 string, most
/// significant part last ("CN=alice,O=Example,C=GB"). rustls has verified the chain already; a
/// certificate whose subject is empty or unreadable is still one stable principal, "cert-" and
/// 12 hex digits of a hash of its DER.
pub fn certificate_principal(der: &[u8]) -> String {
    subject(der).unwrap_or_else(|| format!("cert-{}", &blake3::hash(der).to_hex()[..12]))
}

fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    // RFC 4514 writes the RDNs in reverse order of the encoding.
    (!rdns.is_empty()).then(|| rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// RFC 4514 section 3: the attribute types written by name; others by dotted OID.
const SHORT_NAMES: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// `type=value`, the value escaped; a value that is not a string is `#` and the hex of its DER.
fn attribute(a: &AttributeTypeAndValue) -> String {
    let oid = a.attr_type().to_id_string();
    let key = SHORT_NAMES
        .iter()
        .find(|(o, _)| *o == oid)
        .map_or(oid.clone(), |(_, name)| name.to_string());
    let value = match a.as_str() {
        Ok(s) => escape(s),
        Err(_) => {
            let der = a.attr_value().to_der_vec().unwrap_or_default();
            format!(
                "#{}",
                der.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
    };
    format!("{key}={value}")
}

/// RFC 4514 section 2.4 escaping, plus control characters as `\XX` (the string ends up in
/// logs and terminals).
fn escape(s: &str) -> String {
    let last = s.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subjects_are_rfc_4514_strings() {
        use rcgen::DnType;
        let der = cert(&[
            (DnType::CountryName, "GB"),
            (DnType::OrganizationName, "Natural England"),
            (DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            certificate_principal(&der),
            "CN=alice,O=Natural England,C=GB"
        );
        let der = cert(&[(DnType::CommonName, " #a,b+c\"d\\e<f>g; ")]);
        assert_eq!(
            certificate_principal(&der),
            r#"CN=\ #a\,b\+c\"d\\e\<f\>g\;\ "#
        );
        let der = cert(&[(DnType::CustomDnType(vec![2, 5, 4, 5]), "x\ny")]);
        assert_eq!(certificate_principal(&der), "2.5.4.5=x\\0ay");
    }

    #[test]
    fn an_empty_subject_is_known_by_a_hash_of_the_certificate() {
        let der = cert(&[]);
        let p = certificate_principal(&der);
        assert!(p.starts_with("cert-") && p.len() == 17, "{p}");
        assert_eq!(p, certificate_principal(&der), "stable");
        assert!(certificate_principal(b"not a certificate").starts_with("cert-"));
    }
}
