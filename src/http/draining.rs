//! Once shutdown began, the routes that start work (sends, uploads, WebSocket upgrades)
//! and the readiness check answer 503 "the relay is shutting down" before their
//! handler runs: one layer ([`refuse_when_draining`]) instead of a check in each
//! handler. Reads (polls, downloads) and liveness still answer: they start nothing the
//! drain would have to wait for.
//!
//! The accept loop stops at shutdown, so what meets this layer is a request already on
//! a connection: one being read when the token was cancelled, or the next one on a
//! keep-alive connection before hyper's graceful shutdown closes it.

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, RelayError};

/// The answer of a route while the relay drains, in the route's own error shape.
pub(crate) type Refusal = fn() -> Response;

/// The native routes' refusal: 503 `{"error": "unavailable", "detail": ...}`.
pub(crate) fn native_refusal() -> Response {
    ApiError::from(RelayError::ShuttingDown).into_response()
}

#[derive(Clone)]
struct Draining {
    shutdown: CancellationToken,
    refusal: Refusal,
}

/// `route`, answering `refusal()` instead of running once `shutdown` is cancelled.
/// Applied as a route layer, so a method the route does not serve is still 405.
pub(crate) fn refuse_when_draining<S>(
    route: MethodRouter<S>,
    shutdown: &CancellationToken,
    refusal: Refusal,
) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let draining = Draining {
        shutdown: shutdown.clone(),
        refusal,
    };
    route.route_layer(middleware::from_fn_with_state(draining, refuse))
}

async fn refuse(State(draining): State<Draining>, request: Request, next: Next) -> Response {
    if draining.shutdown.is_cancelled() {
        return (draining.refusal)();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    async fn answer(router: &Router, method: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri("/work")
            .body(Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(request).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_handler_runs_until_shutdown_then_the_refusal_answers() {
        let shutdown = CancellationToken::new();
        let route = refuse_when_draining(post(|| async { "done" }), &shutdown, native_refusal);
        let router = Router::new().route("/work", route);
        assert_eq!(
            answer(&router, "POST").await,
            (StatusCode::OK, "done".into())
        );
        shutdown.cancel();
        assert_eq!(
            answer(&router, "POST").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"unavailable","detail":"the relay is shutting down"}"#.into()
            )
        );
        assert_eq!(
            answer(&router, "GET").await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "a method the route does not serve is not work it would start"
        );
    }
}
