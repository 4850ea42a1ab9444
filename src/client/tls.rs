//! TLS for `wss://` and `https://` relays: one rustls configuration shared by the
//! WebSocket and the HTTP client.
//!
//! Trust is the web PKI roots (webpki-roots, compiled in, so the client behaves the
//! same on every machine), plus optionally the certificates of a PEM file given by the
//! user for a private or self-signed relay. A certificate from that file is trusted in
//! two ways: as a CA (a relay certificate it issued is accepted for the names it holds),
//! and pinned (a relay presenting exactly that certificate is accepted). Pinning is what
//! makes the certificate of `openssl req -x509 ...` work: it is marked as a CA, which
//! the web PKI rules refuse as a server's own certificate.
//!
//! The crypto provider is `ring`, chosen explicitly, so rustls never has to pick a
//! process-wide default at run time.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

use super::ClientError;

/// The TLS settings of a client: which relays it trusts.
#[derive(Clone, Debug)]
pub struct Tls {
    config: Arc<ClientConfig>,
}

impl Tls {
    /// Trusts the web PKI roots only: right for a relay with a public certificate.
    pub fn webpki() -> Result<Self, ClientError> {
        Self::build(Vec::new())
    }

    /// Trusts the web PKI roots and every certificate in the PEM file `path`.
    pub fn with_ca_file(path: &Path) -> Result<Self, ClientError> {
        let bad = |detail: String| ClientError::Tls(format!("{}: {detail}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read it ({e})")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
        if certs.is_empty() {
            return Err(bad(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
            ));
        }
        Self::build(certs)
    }

    /// `with_ca_file` when a file is given, else `webpki`.
    pub fn from_option(ca_file: Option<&Path>) -> Result<Self, ClientError> {
        match ca_file {
            Some(path) => Self::with_ca_file(path),
            None => Self::webpki(),
        }
    }

    /// The rustls configuration, for tokio-tungstenite's connector.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    fn build(extra: Vec<CertificateDer<'static>>) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // A certificate that cannot serve as a trust anchor may still be pinned, so
        // unparseable anchors are not an error here.
        roots.add_parsable_certificates(extra.iter().cloned());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let verifier = Arc::new(PinningVerifier {
            webpki,
            pinned: extra,
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
        })
    }

    /// A reqwest client using this configuration (HTTP/1.1, bounded timeouts).
    pub fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        reqwest::Client::builder()
            .use_preconfigured_tls((*self.config).clone())
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))
    }
}

/// The web PKI verifier, plus: a server certificate byte-identical to one the user
/// supplied is accepted. Handshake signatures are always checked by the web PKI code,
/// so a pinned certificate still proves the relay holds its private key.
#[derive(Debug)]
struct PinningVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "whispr-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    #[test]
    fn webpki_roots_build() {
        Tls::webpki().expect("web PKI configuration");
    }

    #[test]
    fn a_missing_ca_file_names_the_file() {
        let err = Tls::with_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = temp_file("empty.pem", "not a certificate\n");
        let err = Tls::with_ca_file(&path).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
