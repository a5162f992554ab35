//! The outermost tower layer around the gRPC router: request ids, the per-call span and log
//! line, the standard gRPC server metrics, and three transport-level fix-ups.
//!
//! - `x-request-id`: honoured when the client sends a sane one, generated otherwise; put back
//!   on the request (so events record it as their correlation id) and on the response.
//! - One `rpc` span per call (request_id, rpc, method, role, code, duration_ms) around the
//!   handler and the response stream, closed by one "rpc finished" log line: at INFO for
//!   changes, streams and failures; at DEBUG for health checks and for unary reads that
//!   succeeded (what the reader role may call), which metrics count — a log line per Get at
//!   thousands per second is cost without information.
//! - `grpc_server_*` metrics: started on arrival; handled when the response ends — for a
//!   stream, when its trailers go out, with the final status code. A call dropped before it
//!   answered (client gone, or tonic's deadline timer) counts as Canceled, or DeadlineExceeded
//!   when its `grpc-timeout` has passed.
//! - tonic answers a message over the size limit with OUT_OF_RANGE; the gRPC spec says
//!   RESOURCE_EXHAUSTED. Such an answer (OUT_OF_RANGE, tonic's "message length too large"
//!   text, no details — every error of ours carries details) is rewritten to
//!   RESOURCE_EXHAUSTED with ErrorInfo `MESSAGE_TOO_LARGE`; tonic's bare UNIMPLEMENTED (an
//!   unknown method) gets ErrorInfo `UNIMPLEMENTED`.
//! - Streams of other services (health Watch, reflection) never end by themselves: at shutdown
//!   they are ended with UNAVAILABLE like ours.
//! - The method path goes into the request's extensions ([`crate::service::ctx::RpcPath`]):
//!   tonic sets `GrpcMethod` only on clients, and idempotency and events need the RPC. So
//!   does the request's trace id ([`crate::service::ctx::TraceId`], see [`super::trace`]),
//!   after its `traceparent` became the parent of the `rpc` span.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use hyper::body::Bytes;
use prost::Message;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::body::Body;
use tonic::{Code, Status};
use tracing::field::Empty;
use tracing::Instrument;

use crate::auth::{Access, AccessTable, Role};
use crate::error::Error;
use crate::metrics::{GrpcMetrics, RpcLabels};
use crate::service::ctx::parse_grpc_timeout;

/// The correlation header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-supplied request id kept (the same bound the service layer applies).
const MAX_REQUEST_ID: usize = 128;

/// A method known from the descriptor sets this server serves.
struct MethodInfo {
    service: String,
    method: String,
    kind: &'static str,
}

/// Path → method, from the descriptor sets of every service on the router: metric labels come
/// only from here, so a client cannot create series by calling made-up paths.
static METHODS: LazyLock<HashMap<String, MethodInfo>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for encoded in [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
            continue;
        };
        for file in set.file {
            for s in &file.service {
                let service = match file.package() {
                    "" => s.name().to_string(),
                    p => format!("{p}.{}", s.name()),
                };
                for m in &s.method {
                    let kind = match (m.client_streaming(), m.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    out.insert(
                        format!("/{service}/{}", m.name()),
                        MethodInfo {
                            service: service.clone(),
                            method: m.name().to_string(),
                            kind,
                        },
                    );
                }
            }
        }
    }
    out
});

fn labels_for(path: &str) -> RpcLabels {
    match METHODS.get(path) {
        Some(m) => RpcLabels {
            grpc_type: m.kind,
            grpc_service: m.service.as_str(),
            grpc_method: m.method.as_str(),
        },
        None => RpcLabels {
            grpc_type: "unary",
            grpc_service: "unknown",
            grpc_method: "unknown",
        },
    }
}

/// The code names go-grpc-prometheus uses (Go's `codes.Code.String()`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn code_in(headers: &HeaderMap) -> Option<Code> {
    let v = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(v))
}

/// Keeps a sane client id, or generates one; either way the request carries it afterwards.
fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    let v = HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("unset"));
    headers.insert(REQUEST_ID, v.clone());
    v
}

/// Statuses tonic answers by itself, without details, get ours: OUT_OF_RANGE from its size
/// check → RESOURCE_EXHAUSTED + ErrorInfo MESSAGE_TOO_LARGE; UNIMPLEMENTED (a method or an
/// encoding this server does not have) → the same code + ErrorInfo UNIMPLEMENTED.
fn remap_transport_status(headers: &mut HeaderMap, limit: usize) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if !status.details().is_empty() {
        return;
    }
    let mapped = match status.code() {
        Code::OutOfRange if status.message().contains("message length too large") => {
            Error::MessageTooLarge {
                limit,
                message: status.message().to_string(),
            }
        }
        Code::Unimplemented => Error::Unimplemented,
        _ => return,
    };
    if Status::from(mapped).add_header(headers).is_err() {
        tracing::debug!("could not rewrite a transport status");
    }
}

fn shutting_down_status(what: &str) -> Status {
    Error::ShuttingDown {
        what: what.to_string(),
    }
    .into()
}

/// One call's bookkeeping; records exactly once (on finish, or when dropped unfinished).
struct CallRecord {
    metrics: GrpcMetrics,
    labels: RpcLabels,
    started: Instant,
    deadline: Option<Instant>,
    span: tracing::Span,
    quiet: Quiet,
    done: bool,
}

/// When a call's "rpc finished" line is DEBUG rather than INFO.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Health checks: always.
    Always,
    /// Unary reads: when they succeeded.
    IfOk,
    Never,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let name = code_name(code);
        self.metrics.handled(&self.labels, name, elapsed);
        self.span.record("code", name);
        self.span
            .record("duration_ms", elapsed.as_secs_f64() * 1000.0);
        let _entered = self.span.enter();
        let quiet = match self.quiet {
            Quiet::Always => true,
            Quiet::IfOk => code == Code::Ok,
            Quiet::Never => false,
        };
        if quiet {
            tracing::debug!("rpc finished");
        } else {
            tracing::info!("rpc finished");
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let expired = self.deadline.is_some_and(|d| Instant::now() >= d);
        self.finish(if expired {
            Code::DeadlineExceeded
        } else {
            Code::Cancelled
        });
    }
}

/// A response body that records the call when its trailers pass, and can end a stream of
/// another service at shutdown.
struct ObservedBody {
    inner: Body,
    call: Option<CallRecord>,
    end_on_shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    ended_here: bool,
    limit: usize,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended_here {
            return Poll::Ready(None);
        }
        if let Some(stop) = this.end_on_shutdown.as_mut() {
            if stop.as_mut().poll(cx).is_ready() {
                this.ended_here = true;
                let mut trailers = HeaderMap::new();
                let _ =
                    shutting_down_status("reconnect to another replica").add_header(&mut trailers);
                if let Some(mut c) = this.call.take() {
                    c.finish(Code::Unavailable);
                }
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        let polled = {
            let _entered = this.call.as_ref().map(|c| c.span.enter());
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        match polled {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    remap_transport_status(trailers, this.limit);
                    let code = code_in(trailers).unwrap_or(Code::Unknown);
                    if let Some(mut c) = this.call.take() {
                        c.finish(code);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(mut c) = this.call.take() {
                    c.finish(status.code());
                }
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                // A gRPC response always ends with trailers; without them the client sees an
                // error, so count it as one.
                if let Some(mut c) = this.call.take() {
                    c.finish(Code::Unknown);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended_here || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What the layer shares between calls.
struct Shared {
    metrics: GrpcMetrics,
    /// Which RPCs only read (the reader role's), for the log level of their last line.
    access: AccessTable,
    /// Cancelled when streams must end (after the drain delay).
    streams_end: CancellationToken,
    limit: usize,
}

/// Tower layer: see the module docs.
#[derive(Clone)]
pub struct ObserveLayer(Arc<Shared>);

impl ObserveLayer {
    pub fn new(
        metrics: GrpcMetrics,
        streams_end: CancellationToken,
        max_message_bytes: usize,
    ) -> Self {
        Self(Arc::new(Shared {
            metrics,
            access: AccessTable::new(false),
            streams_end,
            limit: max_message_bytes,
        }))
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for Observe<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        req.extensions_mut()
            .insert(crate::service::ctx::RpcPath(path.clone()));
        let labels = labels_for(&path);
        let request_id = ensure_request_id(req.headers_mut());
        let deadline = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|d| started + d);
        let health = path.starts_with("/grpc.health.v1.");
        let quiet = if health {
            Quiet::Always
        } else if labels.grpc_type == "unary"
            && self.shared.access.access(&path) == Access::Needs(Role::Reader)
        {
            Quiet::IfOk
        } else {
            Quiet::Never
        };
        macro_rules! rpc_span {
            ($name:literal) => {
                tracing::info_span!(
                    $name,
                    request_id = request_id.to_str().unwrap_or_default(),
                    rpc = %path,
                    method = labels.grpc_method,
                    role = Empty,
                    principal = Empty,
                    code = Empty,
                    duration_ms = Empty,
                )
            };
        }
        // Health checks (probes every few seconds) get a span of their own name, which the
        // trace exporter leaves out (see `super::trace`).
        let span = if health {
            rpc_span!("rpc_health") // = trace::HEALTH_SPAN
        } else {
            rpc_span!("rpc")
        };
        if let Some(id) = super::trace::adopt(&span, req.headers()) {
            req.extensions_mut()
                .insert(crate::service::ctx::TraceId(id));
        }
        let shared = self.shared.clone();
        shared.metrics.started(&labels);
        let end_on_shutdown = (labels.grpc_type != "unary"
            && !labels.grpc_service.starts_with("lnrs."))
        .then(|| Box::pin(shared.streams_end.clone().cancelled_owned()));
        let mut record = CallRecord {
            metrics: shared.metrics.clone(),
            labels,
            started,
            deadline,
            span: span.clone(),
            quiet,
            done: false,
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = {
            let _entered = span.enter();
            inner.call(req)
        };
        Box::pin(async move {
            let mut resp = match fut.instrument(span).await {
                Ok(r) => r,
                Err(e) => {
                    record.finish(Code::Unknown);
                    return Err(e);
                }
            };
            resp.headers_mut().insert(REQUEST_ID, request_id);
            if resp.headers().contains_key("grpc-status") {
                // Trailers-only answer (every error before the first message): done now.
                remap_transport_status(resp.headers_mut(), shared.limit);
                record.finish(code_in(resp.headers()).unwrap_or(Code::Unknown));
                return Ok(resp);
            }
            Ok(resp.map(|inner| {
                Body::new(ObservedBody {
                    inner,
                    call: Some(record),
                    end_on_shutdown,
                    ended_here: false,
                    limit: shared.limit,
                })
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ERROR_DOMAIN;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn every_served_method_is_known_with_its_type() {
        let l = labels_for("/lnrs.v1.EventService/WatchEvents");
        assert_eq!(
            (l.grpc_type, l.grpc_service, l.grpc_method),
            ("server_stream", "lnrs.v1.EventService", "WatchEvents")
        );
        assert_eq!(
            labels_for("/lnrs.v1.EntityService/GetMeasure").grpc_type,
            "unary"
        );
        assert_eq!(
            labels_for("/grpc.health.v1.Health/Watch").grpc_type,
            "server_stream"
        );
        assert_eq!(
            labels_for("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").grpc_type,
            "bidi_stream"
        );
        let u = labels_for("/made.up/Path");
        assert_eq!((u.grpc_service, u.grpc_method), ("unknown", "unknown"));
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_generated_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let v = ensure_request_id(&mut h);
        assert_eq!(v.len(), 32);
        assert_eq!(h.get(&REQUEST_ID), Some(&v));
        let mut h = HeaderMap::new();
        let v = ensure_request_id(&mut h);
        assert_eq!(h.get(&REQUEST_ID), Some(&v));
    }

    #[test]
    fn only_tonic_size_errors_are_remapped() {
        let mut h = HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        )
        .add_header(&mut h)
        .unwrap();
        remap_transport_status(&mut h, 4);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_error_details().error_info().unwrap().reason,
            "MESSAGE_TOO_LARGE"
        );
        // An OUT_OF_RANGE of ours (with details) stays as it is.
        let mut d = ErrorDetails::new();
        d.set_error_info("START_POSITION_AHEAD", ERROR_DOMAIN, HashMap::new());
        let mut h = HeaderMap::new();
        Status::with_error_details(Code::OutOfRange, "message length too large", d)
            .add_header(&mut h)
            .unwrap();
        remap_transport_status(&mut h, 4);
        assert_eq!(code_in(&h), Some(Code::OutOfRange));
    }
}
