//! TLS termination in the relay: a rustls `ServerConfig` from PEM files (such as the
//! ones the guide's `openssl req -x509` command makes), TLS 1.2 and 1.3 only, reloaded
//! on SIGHUP without touching established connections, and an axum `Listener` that
//! runs handshakes concurrently so one slow client cannot stall the accept loop.

use axum::serve::Listener;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for axum to pick them up.
const ACCEPT_QUEUE: usize = 1024;

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

/// A listener that yields connections whose TLS handshake completed.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run in their own tasks.
    pub fn new(tcp: TcpListener, tls: ReloadableTls) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, incoming) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(tcp, tls, tx));
        Ok(TlsListener {
            incoming,
            local_addr,
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: ReloadableTls,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = tx.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = tls.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let _ = tx.send((tls_stream, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(pair) => pair,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
