//! A WebSocket session from the client side: challenge, auth, then frames.

use futures::{SinkExt, StreamExt};
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{origin_of, parse_base, ClientError, Tls};
use crate::protocol::{
    auth_signing_bytes, ClientFrame, Codec, Cursor, Encoded, Envelope, Identity, ServerFrame,
    WireEnvelope, NONCE_LEN,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the relay said after a successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub epoch: u64,
    pub window: u32,
}

pub struct WsClient {
    socket: Socket,
    codec: Codec,
    /// When the relay last sent anything (pings included): a connection silent for much
    /// longer than the relay's ping interval is dead even if TCP has not noticed.
    last_seen: Instant,
}

impl WsClient {
    /// Opens `/v1/ws` on `base` without authenticating; returns the challenge too.
    /// `wss://` (or `https://`) trusts the web PKI roots.
    pub async fn open(
        base: &str,
        codec: Codec,
    ) -> Result<(WsClient, ServerFrame, String), ClientError> {
        Self::open_with(base, codec, None).await
    }

    /// [`WsClient::open`] with the given TLS trust for `wss://` (web PKI when `None`).
    /// An HTTP answer instead of the upgrade is `ClientError::UpgradeRefused`.
    pub async fn open_with(
        base: &str,
        codec: Codec,
        tls: Option<&Tls>,
    ) -> Result<(WsClient, ServerFrame, String), ClientError> {
        let mut url = parse_base(base)?;
        let scheme = if matches!(url.scheme(), "https" | "wss") {
            "wss"
        } else {
            "ws"
        };
        let _ = url.set_scheme(scheme);
        url.set_path("/v1/ws");
        let origin = origin_of(&url)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(codec.subprotocol()),
        );
        let connector = match (scheme, tls) {
            ("wss", Some(tls)) => Connector::Rustls(tls.rustls_config()),
            ("wss", None) => Connector::Rustls(Tls::webpki()?.rustls_config()),
            _ => Connector::Plain,
        };
        // Nagle off: chat frames are small and latency is the point.
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(client_buffers()),
            true,
            Some(connector),
        )
        .await
        .map_err(upgrade_error)?;
        let mut client = WsClient {
            socket,
            codec,
            last_seen: Instant::now(),
        };
        let challenge = client.next_frame().await?;
        Ok((client, challenge, origin))
    }

    /// Connects and authenticates as `identity`, resuming after `cursor`.
    pub async fn connect(
        base: &str,
        identity: &Identity,
        cursor: Option<Cursor>,
        codec: Codec,
    ) -> Result<(WsClient, Ready), ClientError> {
        Self::connect_with(base, identity, cursor, codec, None).await
    }

    /// [`WsClient::connect`] with the given TLS trust for `wss://`.
    pub async fn connect_with(
        base: &str,
        identity: &Identity,
        cursor: Option<Cursor>,
        codec: Codec,
        tls: Option<&Tls>,
    ) -> Result<(WsClient, Ready), ClientError> {
        let (mut client, challenge, origin) = Self::open_with(base, codec, tls).await?;
        let ServerFrame::Challenge {
            nonce,
            origin: relay_origin,
            timestamp,
        } = challenge
        else {
            return Err(ClientError::Unexpected(format!(
                "expected a challenge, got {challenge:?}"
            )));
        };
        if relay_origin != origin {
            return Err(ClientError::Unexpected(format!(
                "the relay calls itself {relay_origin}, but we dialled {origin}"
            )));
        }
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| ClientError::Unexpected("challenge nonce is not 32 bytes".into()))?;
        // Sign the relay's own clock reading from the challenge: the nonce already makes
        // the answer single-use, and a client with a skewed clock still gets in.
        let now = timestamp;
        let key = identity.public_key();
        let signature = identity.sign(&auth_signing_bytes(&nonce, &key, now, &origin));
        client
            .send_frame(&ClientFrame::Auth {
                key: key.as_bytes().to_vec(),
                timestamp: now,
                signature: signature.to_bytes().to_vec(),
                cursor,
            })
            .await?;
        match client.next_frame().await? {
            ServerFrame::Ready { epoch, window, .. } => Ok((client, Ready { epoch, window })),
            ServerFrame::Error { code, detail, .. } => Err(ClientError::Refused {
                code,
                detail,
                status: None,
            }),
            other => Err(ClientError::Unexpected(format!(
                "expected ready, got {other:?}"
            ))),
        }
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let msg = match self.codec.encode(frame)? {
            Encoded::Text(t) => Message::text(t),
            Encoded::Binary(b) => Message::binary(b),
        };
        self.send_raw(msg).await
    }

    /// Sends any WebSocket message as is (tests use it for malformed input).
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), ClientError> {
        self.socket
            .send(msg)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))
    }

    pub async fn send(
        &mut self,
        envelope: &Envelope,
        reference: Option<u64>,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Send {
            reference,
            envelope: WireEnvelope::from(envelope),
        })
        .await
    }

    pub async fn ack(&mut self, seq: u64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ack { seq }).await
    }

    /// The next frame from the relay; a close becomes `ClientError::Closed`.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let msg = match self.socket.next().await {
                None => {
                    return Err(ClientError::Closed {
                        code: 1006,
                        reason: "connection ended".into(),
                    })
                }
                Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
                Some(Ok(m)) => m,
            };
            self.last_seen = Instant::now();
            let bytes = match msg {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Err(ClientError::Closed { code, reason });
                }
                _ => continue,
            };
            return Ok(self.codec.decode(&bytes)?);
        }
    }

    /// When the relay last sent a frame of any kind (data, ping, pong, close).
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    pub async fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// Maps a failed handshake: an HTTP answer (the relay or a proxy refused the upgrade)
/// is told apart from a network failure, because the cure differs (poll over HTTP
/// instead of retrying the WebSocket).
fn upgrade_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            // Not the relay's JSON: a proxy's page, whose HTML says nothing useful.
            let detail = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("detail")?.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{} from a proxy, not the relay", response.status()));
            ClientError::UpgradeRefused {
                status: response.status().as_u16(),
                detail,
            }
        }
        other => ClientError::Connect(other.to_string()),
    }
}

/// Small socket buffers: a client (or the load generator, with thousands of sessions)
/// holds little in flight, and tungstenite's default 128 KiB read buffer per connection
/// would dominate its memory.
fn client_buffers() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
}
