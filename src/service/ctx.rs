//! Request context extraction: the RPC name, the caller, the AIP-155 idempotency key and a
//! fingerprint of the request, the correlation id (x-request-id), and the caller's deadline
//! (grpc-timeout). The transport ([`crate::server`]) puts the method path and the
//! authenticated principal into each request's extensions as [`RpcPath`] and [`Principal`].
//!
//! Who the caller is: the token's principal when the auth layer checked one, else the client
//! certificate's subject under mTLS, else [`ANONYMOUS`].

use std::time::{Duration, Instant};

use tonic::Request;

use crate::app::RequestCtx;
use crate::domain::validate::validate_text_id;
use crate::error::Error;

/// The full method path of a request ("/lnrs.v1.EntityService/DeleteMeasure"), from its URI.
/// tonic sets `GrpcMethod` only on the client side, so the server inserts this itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcPath(pub String);

/// The W3C trace id of a request (32 lowercase hex digits), put into its extensions by the
/// transport: from its `traceparent`, or the trace the server started for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceId(pub String);

/// The principal of requests when auth is off.
pub const ANONYMOUS: &str = "anonymous";

/// The caller of a request whose bearer token was checked (absent when auth is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// The context of a request; `request_id` is the message's idempotency key ("" = none).
pub fn ctx<T: prost::Message>(req: &Request<T>, request_id: &str) -> Result<RequestCtx, Error> {
    let fingerprint = blake3::hash(&req.get_ref().encode_to_vec());
    ctx_with(req, request_id, fingerprint)
}

/// The context of a client-streaming call: its request id comes from its first message and
/// its fingerprint from what identifies the upload (the stream itself cannot be re-encoded).
pub fn ctx_with<T>(
    req: &Request<T>,
    request_id: &str,
    fingerprint: blake3::Hash,
) -> Result<RequestCtx, Error> {
    let idempotency_key = if request_id.is_empty() {
        None
    } else {
        validate_text_id("request_id", request_id).map_err(|v| Error::from(vec![v]))?;
        Some(request_id.to_string())
    };
    let header_id = req
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string);
    Ok(RequestCtx {
        request_fingerprint: fingerprint.to_hex().to_string(),
        request_id: idempotency_key.clone().or(header_id),
        idempotency_key,
        rpc: rpc_name(req),
        principal: principal(req),
        peer: req.remote_addr().map(|a| a.to_string()),
        deadline: deadline(req),
        trace_id: req.extensions().get::<TraceId>().map(|t| t.0.clone()),
    })
}

/// Who is asking (see the module docs): a token wins over a certificate.
pub fn principal<T>(req: &Request<T>) -> String {
    if let Some(p) = req.extensions().get::<Principal>() {
        return p.0.clone();
    }
    req.peer_certs()
        .and_then(|chain| {
            chain
                .first()
                .map(|leaf| crate::tls::certificate_principal(leaf))
        })
        .unwrap_or_else(|| ANONYMOUS.to_string())
}

/// "/lnrs.v1.EntityService/DeleteMeasure".
pub fn rpc_name<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<RpcPath>()
        .map(|p| p.0.clone())
        .unwrap_or_default()
}

/// The caller's deadline from the `grpc-timeout` header.
pub fn deadline<T>(req: &Request<T>) -> Option<Instant> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(v).map(|d| Instant::now() + d)
}

/// Parses the gRPC wire format: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }
}
