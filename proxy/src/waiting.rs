//! Start-up while the HSM cannot be used, for the native format and the sidecar's
//! variables with an admin listener (what the kubelet runs, probing `/healthz` and
//! `/readyz`): instead of exiting, as nginx does and as hsmgate does for an nginx
//! configuration or without an admin listener (where nobody could see that it is not
//! ready), hsmgate stays up, alive and not ready, and starts once its keys open.
//!
//! A process that exits is restarted (the kubelet's back-off, systemd's
//! `Restart=on-failure`), and each start logs in again: with a wrong PIN, every restart
//! spends one of the few attempts after which an HSM locks the user PIN. So, when
//! opening the keys fails with a signer error (module, token, session, login, key):
//! - the admin listener answers (`/healthz` 200, `/readyz` 503 with the reason,
//!   `/metrics`), so the pod is alive and not ready rather than crash-looping;
//! - an HSM that is down or hangs is tried again with a back-off (1 s doubling to 30 s):
//!   the proxy starts once it answers, without a restart;
//! - a refusal that retrying cannot mend (a wrong, locked or expired PIN; a key that is
//!   not the certificate's) is not tried again until a reload (SIGHUP) re-reads the
//!   configuration and the PIN, so the PIN is tried once per process, not once per
//!   restart.
//!
//! Other errors (the configuration, a certificate, a port taken) still end the process
//! at once: retrying them cannot help and a restart loop spends nothing. A stop signal
//! ends the wait (exit 0).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hsmgate_signer::SignerError;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;

use crate::conn::bind_admin;
use crate::control::Control;
use crate::error::ProxyError;
use crate::generation::ConfigSource;
use crate::keys::KeyDefaults;
use crate::proxy::Proxy;

/// The first wait before trying an HSM again, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Attempts given up as hung that are retried by themselves: each leaves a thread in
/// the hung call (until the HSM answers), so their number is bounded; past it, only a
/// reload tries again.
const HUNG_RETRIES: u32 = 10;

/// The proxy, built from `source` once its keys open (see the module's docs), or `None`
/// when a stop signal came first. The build runs on a blocking thread.
pub async fn start(
    source: ConfigSource,
    defaults: KeyDefaults,
    control: &mut mpsc::Receiver<Control>,
    metrics: Option<PrometheusHandle>,
) -> Result<Option<Proxy>, ProxyError> {
    // The admin listener, bound first and handed to each attempt, so that it stays open
    // (answering probes) from the first attempt to the proxy that starts. An nginx
    // configuration never waits: its build binds its own, without reading the file twice.
    let address = (source.is_native())
        .then(|| source.load().ok().and_then(|(site, _)| site.admin))
        .flatten();
    let admin = address.map(bind_admin).transpose()?;
    let (mut failed, mut admin) = match build(&source, &defaults, admin).await {
        Ok(proxy) => return Ok(Some(proxy)),
        // Without an admin listener nobody could see that it is not ready: it exits.
        Err((e, Some(admin))) if signer_error(&e).is_some() => (e, Some(admin)),
        Err((e, _)) => return Err(e),
    };
    let why = Arc::new(Mutex::new(String::new()));
    let server = match &admin {
        Some(socket) => {
            let listener = socket
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std);
            let listener = listener.map_err(|source| ProxyError::Io {
                what: "admin listener".into(),
                source,
            })?;
            if let Ok(addr) = socket.local_addr() {
                tracing::info!(
                    address = %addr,
                    "admin listening (/healthz /readyz /metrics /status) while waiting to start"
                );
            }
            let serve = crate::admin::serve_waiting(listener, Arc::clone(&why), metrics);
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    let mut delay = FIRST_RETRY;
    let mut hung_attempts = 0;
    loop {
        let reason = failed.to_string();
        let signer = signer_error(&failed);
        hung_attempts += u32::from(signer.is_some_and(hung));
        let permanent = signer.is_none_or(refused);
        let retry = !permanent && hung_attempts < HUNG_RETRIES;
        match (retry, permanent) {
            (true, _) => tracing::error!(
                error = %reason,
                retry_in = ?delay,
                "cannot start: the HSM cannot be used; alive and not ready (/readyz), trying again"
            ),
            (false, true) => tracing::error!(
                error = %reason,
                "cannot start: the key was refused; alive and not ready (/readyz), not trying \
                 again (a wrong PIN would be counted against it) until a reload (SIGHUP) or a restart"
            ),
            (false, false) => tracing::error!(
                error = %reason,
                attempts = hung_attempts,
                "cannot start: the HSM hangs; alive and not ready (/readyz), not trying again \
                 by itself (each hung attempt holds a thread) until a reload (SIGHUP) or a restart"
            ),
        }
        *why.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        let woken = tokio::select! {
            () = tokio::time::sleep(delay), if retry => None,
            message = control.recv() => Some(message),
        };
        match woken {
            None => delay = (delay * 2).min(LAST_RETRY),
            Some(Some(Control::Reload)) => (delay, hung_attempts) = (FIRST_RETRY, 0),
            Some(Some(Control::Reopen)) => continue,
            Some(Some(Control::Stop | Control::Terminate | Control::Quit) | None) => {
                tracing::info!("stopped before starting");
                if let Some(server) = server {
                    server.abort();
                }
                return Ok(None);
            }
        }
        match build(&source, &defaults, admin.take()).await {
            Ok(proxy) => {
                if let Some(server) = server {
                    server.abort();
                    let _ = server.await;
                }
                tracing::info!("the keys opened: starting");
                return Ok(Some(proxy));
            }
            Err((e, socket)) => {
                admin = socket;
                failed = e;
            }
        }
    }
}

/// Build the proxy on a blocking thread; on failure the admin listener comes back.
async fn build(
    source: &ConfigSource,
    defaults: &KeyDefaults,
    admin: Option<std::net::TcpListener>,
) -> Result<Proxy, (ProxyError, Option<std::net::TcpListener>)> {
    let (source, defaults) = (source.clone(), defaults.clone());
    // The listener goes to the build by a clone, so a failed build gives it back.
    let kept = admin.as_ref().and_then(|a| a.try_clone().ok());
    let built =
        tokio::task::spawn_blocking(move || Proxy::from_source_with_admin(source, defaults, admin))
            .await;
    match built {
        Ok(Ok(proxy)) => Ok(proxy),
        Ok(Err(e)) => Err((e, kept)),
        Err(join) => Err((
            ProxyError::Invalid(format!("start-up panicked: {join}")),
            kept,
        )),
    }
}

/// Whether a member refused the key for good (a wrong PIN, another key): trying the
/// group again would try that member's PIN again, so only a reload does.
fn refused(e: &SignerError) -> bool {
    match e {
        SignerError::NoMemberStarted { members, .. } => members.iter().any(refused),
        e => e.is_permanent(),
    }
}

/// Whether the HSM did not answer in time (a start-up given up as hung).
fn hung(e: &SignerError) -> bool {
    match e {
        SignerError::Timeout { .. } | SignerError::StartTimeout { .. } => true,
        SignerError::NoMemberStarted { members, .. } => members.iter().any(hung),
        _ => false,
    }
}

/// The signer error a start-up failed with, if it is one (possibly at a `file:line`).
fn signer_error(e: &ProxyError) -> Option<&SignerError> {
    match e {
        ProxyError::Signer(s) => Some(s),
        ProxyError::At { source, .. } => signer_error(source),
        _ => None,
    }
}
