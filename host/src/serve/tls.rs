//! The certificate `medallion serve --tls-cert/--tls-key` presents on both ports.
//!
//! The PostgreSQL side is encrypted by datafusion-postgres, which reads the files itself and,
//! if it cannot use them, logs a warning and serves unencrypted. So the files are loaded here
//! first, with datafusion-postgres's rules (PEM, a PKCS#8 key), and a file it would not take
//! stops the server at start with the reason. The same certificate then serves HTTPS on the
//! HTTP port. rustls comes through pgwire's re-export, so both ports use one rustls, on ring.

use std::sync::Arc;

use anyhow::{bail, Context};
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::pem::PemObject;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer,
};
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::{crypto, ServerConfig};
use datafusion_postgres::pgwire::tokio::TlsAcceptor;

/// The acceptor of HTTPS connections (HTTP/1.1, the only version the HTTP side speaks).
pub fn https(cert: &str, key: &str) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS certificate {cert} (PEM)"))?;
    if certs.is_empty() {
        bail!("the TLS certificate {cert} holds no certificate (expected PEM: BEGIN CERTIFICATE)");
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS key {key} (PEM)"))?;
    if !matches!(key_der, PrivateKeyDer::Pkcs8(_)) {
        // datafusion-postgres would serve the PostgreSQL port unencrypted with it.
        bail!(
            "the TLS key {key} is not PKCS#8 (BEGIN PRIVATE KEY); convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in {key} -out key.pk8.pem`"
        );
    }
    let provider = Arc::new(crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| format!("the TLS certificate {cert} with the key {key}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
