//! Who a wire connection acts as: the auth frame (op 6) that names its token right after the
//! preamble, and the watch that closes the connection once that token stops working.
//!
//! With authentication on, a connection starts as nobody: its first frame must be an auth
//! frame; any other frame is answered 401 `unauthenticated` and the connection is closed, and
//! so is one whose auth frame names no working token. Once authenticated, every request acts
//! as the token's principal and is checked as HTTP checks a route (`Permission::Lease`, then
//! what it touches, in `domains::leases::ops`).
//!
//! Revocation: the connection re-checks its token on every change to the token table
//! (`Engine::token_changes`, sent once the change is durable) and, for a token that expires,
//! once a second — so a revoked or expired token's connection is closed within a second. A
//! token with no expiry costs no timer: only a change to the table can end it.
//!
//! With `--auth off` the connection acts as the lab principal from the start, and an auth frame
//! is answered 200 and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use locksmith_api::frame::{Auth, Authenticated};
use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_auth::{AuthError, Principal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::AuthMode;
use crate::app::App;
use crate::request::{ApiError, decode as parse, unauthenticated};
use crate::tls::PeerIdentity;

/// How often a connection whose token expires looks whether it has.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// A connection's principal, and the task that watches its token.
pub(super) struct Standing {
    /// Who its requests act as; `None`: nobody yet (authentication on, no auth frame).
    principal: Option<Arc<Principal>>,
    /// What the connection's TLS session proves (mutual TLS: the node its certificate names).
    peer: Arc<PeerIdentity>,
    /// Resolves once the token stops working, with the 401 that says why. A task of its own,
    /// so that the connection's loop polls only this handle: waiting on the token table's
    /// changes there would register with a watch every connection shares, once per turn of
    /// the loop.
    watch: Option<JoinHandle<ApiError>>,
}

impl Drop for Standing {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch {
            watch.abort();
        }
    }
}

/// What an auth frame did.
pub(super) enum Authenticating {
    /// Authenticated (or, with `--auth off`, nothing to do): the answer to send.
    Done(Authenticated),
    /// Refused; the connection stays as it was (and open).
    Refused(ApiError),
    /// Refused; the connection closes after this answer.
    Closing(ApiError),
}

impl Standing {
    /// A new connection's standing: the lab principal with `--auth off`, else nobody.
    pub(super) fn new(app: &App, peer: Arc<PeerIdentity>) -> Self {
        Self {
            principal: app.authenticate(None, Some(&peer)).ok().map(Arc::new),
            peer,
            watch: None,
        }
    }

    /// Who the connection's requests act as, if anyone.
    pub(super) fn principal(&self) -> Option<&Arc<Principal>> {
        self.principal.as_ref()
    }

    /// The refusal of a request sent before the connection authenticated; the connection
    /// closes after it.
    pub(super) fn not_authenticated() -> ApiError {
        ApiError::from(ErrorBody::new(
            ErrorCode::Unauthenticated,
            "this connection has not authenticated: send an auth frame (op 6, body \
             {\"token\": \"lsm_…\"}) right after the preamble (WireClient::with_token; the CLI \
             reads --token, $LOCKSMITH_TOKEN or --token-file)",
        ))
    }

    /// Carries out an auth frame with `body`.
    pub(super) fn authenticate(&mut self, app: &App, body: &[u8]) -> Authenticating {
        if app.settings.auth == AuthMode::Off {
            // Accepted and ignored: every request already acts as the lab principal.
            return match &self.principal {
                Some(p) => Authenticating::Done(Authenticated {
                    principal: Principal::clone(p),
                }),
                None => Authenticating::Closing(unauthenticated(&AuthError::Missing)),
            };
        }
        if let Some(p) = &self.principal {
            return Authenticating::Refused(ApiError::from(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "this connection is authenticated already, as token {} ({}); one \
                     connection acts for one token: open another connection for another token",
                    p.token, p.name
                ),
            )));
        }
        // Subscribed before the token is looked up, so that no change between the two is
        // missed.
        let mut changes = app.engine.token_changes();
        changes.borrow_and_update();
        let authenticated = parse::<Auth>(body)
            .and_then(|auth| app.authenticate(Some(&auth.token), Some(&self.peer)));
        let principal = match authenticated {
            Ok(principal) => principal,
            Err(refused) => return Authenticating::Closing(refused),
        };
        let expires = app
            .engine
            .tokens()
            .get(&principal.token)
            .is_some_and(|record| record.expires_at_ms.is_some());
        let answer = Authenticated {
            principal: principal.clone(),
        };
        let principal = Arc::new(principal);
        self.watch = Some(tokio::spawn(watch_token(
            app.clone(),
            principal.clone(),
            changes,
            expires,
        )));
        self.principal = Some(principal);
        Authenticating::Done(answer)
    }

    /// Resolves once the connection's token stops working, with the 401 that says why; never
    /// for a connection with no token to watch.
    pub(super) async fn stopped_working(&mut self) -> ApiError {
        if let Some(watch) = self.watch.as_mut()
            && let Ok(why) = watch.await
        {
            self.watch = None;
            return why;
        }
        std::future::pending().await
    }
}

/// Watches `who`'s token: looks at it on every change to the token table and, if it expires,
/// every second; resolves once it no longer works, with the 401 that says why.
async fn watch_token(
    app: App,
    who: Arc<Principal>,
    changes: watch::Receiver<u64>,
    expires: bool,
) -> ApiError {
    let mut tick = expires.then(|| {
        let mut tick = tokio::time::interval(EXPIRY_CHECK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    });
    // `None` once the engine is gone (its sender dropped): nothing changes any more.
    let mut changes = Some(changes);
    loop {
        if !app.token_live(&who.token) {
            return refusal(&app, &who);
        }
        let changed = async {
            match changes.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let ticked = async {
            match tick.as_mut() {
                Some(tick) => {
                    tick.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            still = changed => {
                if !still {
                    changes = None;
                }
            }
            () = ticked => {}
        }
    }
}

/// The 401 that closes `who`'s connection: its token was revoked, or expired.
fn refusal(app: &App, who: &Principal) -> ApiError {
    let revoked = app
        .engine
        .tokens()
        .get(&who.token)
        .is_none_or(|record| record.revoked_at_ms.is_some());
    let (id, name) = (who.token.clone(), who.name.clone());
    let why = if revoked {
        AuthError::Revoked { id, name }
    } else {
        AuthError::Expired { id, name }
    };
    let mut refused = unauthenticated(&why);
    refused.0.message = format!(
        "{}: this connection is closed; reconnect with a token that works",
        refused.0.message
    );
    refused
}
