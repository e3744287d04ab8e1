//! TLS for `wss://`: rustls with the aws-lc-rs provider (the one str0m already builds), chosen
//! explicitly so no process-wide default provider is needed.

use std::io;
use std::sync::Arc;

#[cfg(feature = "server")]
use {
    rustls::pki_types::pem::PemObject,
    rustls::pki_types::{CertificateDer, PrivateKeyDer},
    std::path::Path,
};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(feature = "server")]
/// A TLS server configuration from PEM files: `cert` holds the certificate chain (leaf first),
/// `key` the private key (PKCS#8, PKCS#1 or SEC1), as issued by Let's Encrypt and most CAs.
pub fn server_tls_from_pem_files(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            invalid(format!(
                "cannot read certificates from {}: {e}",
                cert.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("bad certificate PEM in {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(format!(
            "cannot read a private key from {}: {e}",
            key.display()
        ))
    })?;
    server_tls(chain, key)
}

#[cfg(feature = "server")]
/// A TLS server configuration from a certificate chain (leaf first) and its private key.
pub fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<rustls::ServerConfig>> {
    if chain.is_empty() {
        return Err(invalid("no certificate in the chain".into()));
    }
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("certificate and key do not fit together: {e}")))?;
    Ok(Arc::new(config))
}

/// A TLS client configuration trusting `roots`.
pub fn client_tls(roots: rustls::RootCertStore) -> io::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS client configuration trusting the platform's root certificates (on Linux the
/// system's CA bundle, e.g. Debian's `ca-certificates`).
pub fn platform_client_tls() -> io::Result<Arc<rustls::ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no platform root certificates found ({:?}); install ca-certificates or give JoinOptions::tls",
                found.errors
            ),
        ));
    }
    client_tls(roots)
}
