//! The HTTP transport: the listener (`serve`), the router built from the route table
//! ([`router`]), body and query extraction, and how an [`ApiError`] is sent. What each route
//! does is its domain's (`crate::domains`); this module knows none of them.

mod auth;
mod error;
pub(crate) mod extract;
mod serve;

pub use crate::request::ApiError;
pub(crate) use serve::serve;

use axum::{Extension, Router};
use locksmith_auth::Permission;

use crate::app::App;
use crate::routing::{OpenApiDoc, Route};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router of `routes` — every route the server has, each from the table, so that the
/// OpenAPI document served at `/v1/openapi.json` (made here, from the same list) describes
/// exactly what is served. Anything else is a JSON `not_found` or `method_not_allowed`.
///
/// Each route but the anonymous ones is wrapped in the check of its permission
/// (`auth::authorize`): the request is authenticated and its principal put in its extensions
/// before the handler runs, or it is answered 401 / 403.
pub(crate) fn router(app: App, routes: Vec<Route>) -> Router {
    let doc = OpenApiDoc::of(&routes);
    let router = routes.into_iter().fold(Router::new(), |router, route| {
        let handler = match route.permission {
            Permission::Anonymous => route.handler,
            needed => route.handler.layer(axum::middleware::from_fn_with_state(
                (app.clone(), needed),
                auth::authorize,
            )),
        };
        router.route(&route.path, handler)
    });
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(Extension(doc))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(app)
}
