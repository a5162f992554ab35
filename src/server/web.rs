//! gRPC-Web on the gRPC port: the two outermost layers of the router and what they accept.
//!
//! - `tonic_web::GrpcWebLayer` turns a gRPC-Web call (HTTP/1.1 or HTTP/2, `application/grpc-web`
//!   and `-text`) into a plain gRPC call and its answer back, trailers encoded in the body. It
//!   sits outside the observe and auth layers, so those see plain gRPC: one request id, log
//!   line and `grpc_server_*` count per call whichever way it came, and bearer tokens in the
//!   same `authorization` header. Native gRPC over HTTP/2 passes through untouched.
//! - CORS (tower-http), outside that, only when `grpc_web_cors_origins` names origins: it
//!   answers preflights itself (before auth: browsers send no token on a preflight) and marks
//!   the answers the listed origins may read. No origins: no CORS headers at all.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower::layer::util::Identity;
use tower::util::Either;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, ConfigError, ANY_ORIGIN};

/// Request headers a gRPC-Web client may send across origins: the protocol's own (connect-web,
/// grpc-web and improbable-eng send these), the bearer token, trace context and our request id.
const ALLOWED_HEADERS: [&str; 10] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "authorization",
    "traceparent",
    "tracestate",
    "x-request-id",
    "accept",
];

/// Response headers a cross-origin page may read: the status (in headers for a trailers-only
/// answer), the error details and our request id.
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 3600);

/// The gRPC-Web translation, when `grpc_web` is on.
pub fn grpc_web_layer(cfg: &Config) -> Either<tonic_web::GrpcWebLayer, Identity> {
    match cfg.grpc_web {
        true => Either::Left(tonic_web::GrpcWebLayer::new()),
        false => Either::Right(Identity::new()),
    }
}

/// The CORS layer for the configured origins; none (no CORS headers at all) when there are none.
pub fn cors_layer(cfg: &Config) -> Result<Either<CorsLayer, Identity>, ConfigError> {
    let origins = &cfg.grpc_web_cors_origins;
    if origins.is_empty() {
        return Ok(Either::Right(Identity::new()));
    }
    let allow = if origins.iter().any(|o| o == ANY_ORIGIN) {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                setting: "grpc_web_cors_origins",
                why: e.to_string(),
            })?;
        AllowOrigin::list(values)
    };
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|h| HeaderName::from_static(h))
            .collect::<Vec<_>>()
    };
    Ok(Either::Left(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST])
            .allow_headers(names(&ALLOWED_HEADERS))
            .expose_headers(names(&EXPOSED_HEADERS))
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}
