//! Shutdown signals: SIGTERM (systemd stop) and SIGINT (Ctrl-C).

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the relay gracefully");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Forwards every SIGHUP to `reload` (TLS certificate reload) for the process's life.
/// Installing the handler also stops SIGHUP from terminating the relay.
pub async fn forward_reloads(reload: std::sync::Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received");
                    reload.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate reload needs a restart")
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
    }
}
