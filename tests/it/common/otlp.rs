//! An in-process OpenTelemetry collector: a tonic server of the published OTLP/gRPC trace
//! service protos (`opentelemetry-proto`) on 127.0.0.1:0, handing every exported span to a
//! callback. The trace tests keep the spans; lnrs-bench (which includes this file with
//! `#[path]`) counts them.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
pub use opentelemetry_proto::tonic::trace::v1::Span;

type OnSpans = Arc<dyn Fn(Vec<Span>) + Send + Sync>;

struct Collector(OnSpans);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = req
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect();
        (self.0)(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a collector that passes each export's spans to `on_spans`; serves until the
/// runtime ends. Returns its endpoint URL (for `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub async fn serve(
    on_spans: impl Fn(Vec<Span>) + Send + Sync + 'static,
) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = TraceServiceServer::new(Collector(Arc::new(on_spans)));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    Ok(format!("http://{addr}"))
}

/// Lower-case hex of an id (trace and span ids as `traceparent` writes them).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
