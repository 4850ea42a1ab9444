//! TLS termination in the relay: a rustls `ServerConfig` from PEM files (such as the
//! ones the guide's `openssl req -x509` command makes), TLS 1.2 and 1.3 only, reloaded
//! on SIGHUP without touching established connections, and the handshake of one
//! accepted connection with a deadline. `http::serve` runs each connection's handshake
//! in that connection's task, after the connection caps admitted it, so one slow
//! client cannot stall the accept loop and a flood of handshakes cannot take every
//! file descriptor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{require, Config, Invalid};

/// `tls_cert` and `tls_key` come as a pair: the error names the one that was set.
pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        c.tls_cert.is_some() || c.tls_key.is_none(),
        "tls_key",
        "is set without tls_cert: give both (or neither)",
    )?;
    require(
        c.tls_key.is_some() || c.tls_cert.is_none(),
        "tls_cert",
        "is set without tls_key: give both (or neither)",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {detail}")]
    Cert { path: PathBuf, detail: String },
    #[error("TLS key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("TLS certificate {cert} and key {key} do not belong together: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

/// Where the certificate and key live; read again on every reload.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files of `tls_cert` and `tls_key`, when TLS termination is configured.
    pub fn from_config(c: &Config) -> Option<Self> {
        Some(TlsFiles {
            cert: c.tls_cert.clone()?,
            key: c.tls_key.clone()?,
        })
    }

    /// Reads both files and builds a server config (TLS 1.2/1.3, HTTP/1.1 ALPN).
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            detail: pem_detail(&e, "a PEM private key (PKCS#8, PKCS#1 or SEC1)"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Cert {
                path: self.cert.clone(),
                detail: e.to_string(),
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                detail: e.to_string(),
            })?;
        // WebSockets upgrade over HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |detail: String| TlsError::Cert {
        path: path.to_path_buf(),
        detail,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_detail(&e, "a PEM certificate chain")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(pem_detail(&e, "a PEM certificate chain")))?;
    if certs.is_empty() {
        return Err(bad(
            "no CERTIFICATE block found (expected a PEM certificate chain)".into(),
        ));
    }
    Ok(certs)
}

fn pem_detail(e: &rustls::pki_types::pem::Error, expected: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("nothing usable found (expected {expected})")
        }
        other => format!("not {expected}: {other:?}"),
    }
}

/// The current TLS config, swapped whole on reload.
#[derive(Clone)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ReloadableTls {
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let config = files.load()?;
        Ok(ReloadableTls {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again. On error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        if let Ok(mut slot) = self.current.write() {
            *slot = config;
        }
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeFailure {
    TimedOut,
    Failed(std::io::Error),
}

impl ReloadableTls {
    /// The TLS handshake on `io` with the current certificate, within `deadline`.
    /// Each connection runs its own (in its own task), so a slow client delays no other.
    pub async fn handshake<IO>(
        &self,
        io: IO,
        deadline: Duration,
    ) -> Result<TlsStream<IO>, HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(deadline, self.acceptor().accept(io)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(HandshakeFailure::Failed(e)),
            Err(_) => Err(HandshakeFailure::TimedOut),
        }
    }
}
