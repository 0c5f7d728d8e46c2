//! The route table: every HTTP route is declared once, as a [`Route`], and both the axum router
//! (`crate::http::router`) and the OpenAPI document at `/v1/openapi.json` ([`document`]) are
//! built from the same list, so neither can list a route the other lacks.
//!
//! A route's method, path and description come from its handler's `#[utoipa::path]`
//! attribute, written beside the handler; the route table of a domain is a list of
//! `Route::new(__path_handler, handler)`. A domain adds a route by adding a handler with its
//! attribute and one line to its list.
//!
//! Every route declares the [`Permission`] it needs (`Route::new(__path_x, Permission::Lease,
//! handler)`, a required argument): the router authenticates each request and checks it before
//! the handler runs (`crate::http::router`), and a test built from this table
//! (`crates/server/tests/auth.rs`) fails if a route's permission is missing or wrong.
//!
//! What it is not: the handlers (each domain's `routes.rs`) or the server (`crate::http`).

use std::collections::BTreeMap;

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use locksmith_api::ErrorBody;
use locksmith_auth::Permission;
use utoipa::openapi::path::{HttpMethod, Operation, Paths};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, Ref,
    RefOr, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

/// The name of the document's bearer-token security scheme.
const BEARER: &str = "bearer";

use crate::app::App;

/// A schema of the document, by name.
type NamedSchema = (String, RefOr<Schema>);

/// One HTTP route: what it serves, and how the OpenAPI document describes it.
pub struct Route {
    /// The methods it answers (usually one).
    pub methods: Vec<HttpMethod>,
    /// Its path, in axum's syntax (`/v1/leases/{id}`, `/v1/locks/{*resource}`).
    pub path: String,
    /// What a request needs to be served: checked before the handler runs.
    pub permission: Permission,
    /// What serves it.
    pub handler: MethodRouter<App>,
    /// Its description in the document.
    pub operation: Operation,
    /// The schemas `operation` refers to.
    schemas: Vec<NamedSchema>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field(
                "methods",
                &self.methods.iter().map(method_name).collect::<Vec<_>>(),
            )
            .field("path", &self.path)
            .field("permission", &self.permission)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The route `doc` describes — its `#[utoipa::path]`'s generated `__path_<handler>` —
    /// served by `handler` at the attribute's method(s) and path to requests that have
    /// `permission`.
    pub fn new<P, H, T>(doc: P, permission: Permission, handler: H) -> Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences + for<'t> utoipa::__dev::Tags<'t>,
        H: Handler<T, App>,
        T: 'static,
    {
        let _ = doc;
        let methods = P::methods();
        let handler = methods.iter().fold(MethodRouter::new(), |router, method| {
            router.on(filter_of(method), handler.clone())
        });
        let mut operation = P::operation();
        let tags = <P as utoipa::__dev::Tags>::tags();
        if !tags.is_empty() {
            operation
                .tags
                .get_or_insert_with(Vec::new)
                .extend(tags.iter().map(ToString::to_string));
        }
        let mut schemas = Vec::new();
        P::schemas(&mut schemas);
        Self {
            methods,
            path: P::path(),
            permission,
            handler,
            operation,
            schemas,
        }
    }

    /// The same route served — and documented — at `path` (FleetLock's protocol endpoints
    /// live under a prefix chosen at start).
    pub fn at(self, path: String) -> Self {
        Self { path, ..self }
    }

    /// The same route with its handler adjusted (e.g. a protocol's own answer to other
    /// methods).
    pub fn map_handler(self, f: impl FnOnce(MethodRouter<App>) -> MethodRouter<App>) -> Self {
        Self {
            handler: f(self.handler),
            ..self
        }
    }

    /// The same route needing `permission` instead (e.g. `/metrics` with `--metrics-auth`).
    pub fn needs(self, permission: Permission) -> Self {
        Self { permission, ..self }
    }

    /// The route's path as OpenAPI writes it: axum's catch-all `{*resource}` is `{resource}`.
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }
}

/// Every (method, path) of `routes`, paths in axum's syntax.
pub fn endpoints(routes: &[Route]) -> Vec<(&'static str, String)> {
    routes
        .iter()
        .flat_map(|r| r.methods.iter().map(|m| (method_name(m), r.path.clone())))
        .collect()
}

/// Every (method, path, permission) of `routes`, paths in axum's syntax.
pub fn permissions(routes: &[Route]) -> Vec<(&'static str, String, Permission)> {
    routes
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(|m| (method_name(m), r.path.clone(), r.permission))
        })
        .collect()
}

/// The method as HTTP spells it.
pub fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

fn filter_of(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

/// The OpenAPI document of `routes`. Every operation that names no `default` answer gets one:
/// an [`ErrorBody`] — every Locksmith API error is one, with a stable code.
pub fn document(routes: &[Route]) -> OpenApi {
    let mut paths = Paths::new();
    let mut schemas: BTreeMap<String, RefOr<Schema>> = BTreeMap::new();
    let error = (ErrorBody::name().into_owned(), ErrorBody::schema());
    let mut error_refs = Vec::new();
    ErrorBody::schemas(&mut error_refs);
    for route in routes {
        let mut operation = route.operation.clone();
        if route.permission != Permission::Anonymous {
            // What the route needs, in the words of the document: a bearer token (its role is
            // in the description; see docs/security.md).
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            let needs = format!(
                "\n\nNeeds a token with the `{}` permission (role {} or above).",
                route.permission,
                route.permission.least_role()
            );
            operation.description = Some(operation.description.unwrap_or_default() + &needs);
        }
        operation
            .responses
            .responses
            .entry("default".to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(
                        "Refused: a JSON error with a stable `error` code and a human `message` \
                         naming the resource, the holder and the next step",
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(error.0.clone())))
                            .build(),
                    )
                    .build()
                    .into()
            });
        paths.add_path_operation(route.openapi_path(), route.methods.clone(), operation);
        schemas.extend(route.schemas.iter().cloned());
    }
    schemas.extend(error_refs);
    schemas.insert(error.0, error.1);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Locksmith")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Ghost-proof locks for fleets: leases with fencing tokens, operators' holds \
                     and breaks, liveness reports, the audit trail, and FleetLock reboot slots.",
                ))
                .license(Some(LicenseBuilder::new().name("Apache-2.0").build())),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(schemas)
                .security_scheme(
                    BEARER,
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some(
                                "A Locksmith token: `lsm_` and 43 base64url characters",
                            ))
                            .build(),
                    ),
                )
                .build(),
        ))
        .build()
}

/// The OpenAPI document as served: built and serialized once, with the router.
#[derive(Debug, Clone)]
pub struct OpenApiDoc(pub axum::body::Bytes);

impl OpenApiDoc {
    /// The serialized [`document`] of `routes`.
    pub fn of(routes: &[Route]) -> Self {
        let json = serde_json::to_vec(&document(routes)).unwrap_or_else(|e| {
            // Our own document always serializes; should it ever not, the answer says so.
            let error = ErrorBody::new(
                locksmith_api::ErrorCode::Internal,
                format!("cannot serialize the OpenAPI document (a bug): {e}"),
            );
            serde_json::to_vec(&error).unwrap_or_default()
        });
        Self(axum::body::Bytes::from(json))
    }
}
