//! gRPC-Web on the gRPC port, spoken by hand over HTTP/1.1 (hyper's client, frames built
//! here): a unary answer with its trailers in the body, a WatchEvents server stream that
//! delivers a delete's event, errors in the trailers-only form, the calls counted by the
//! observe layer, CORS only for the configured origins, bearer tokens enforced, HTTP/1.1
//! refused when gRPC-Web is off, and HTTP/1.1 inside the server's own TLS (ALPN) with the mTLS
//! client certificate still naming the principal.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lnrs::config::{Config, TokenEntry};
use lnrs::pb;
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{data_dir_with_reference, reason, test_config};
use crate::production::OwnServer;

const ORIGIN: &str = "https://app.example.org";
const OTHER_ORIGIN: &str = "https://elsewhere.example.org";
const READER: &str = "reader-token-0123456789";
const EDITOR: &str = "editor-token-0123456789";
/// Bound on any one step (a hung server fails the test instead of hanging it).
const STEP: Duration = Duration::from_secs(30);

/// A server with its metrics listener (production's `OwnServer`), on a copy of the reference
/// database.
struct WebServer {
    addr: SocketAddr,
    metrics: SocketAddr,
    server: OwnServer,
    _tmp: tempfile::TempDir,
}

impl WebServer {
    async fn start(tune: impl FnOnce(&mut Config)) -> WebServer {
        Self::start_with(tune, channel).await
    }

    /// `ready` is how to reach the server for the health check (TLS needs its own channel).
    async fn start_with(
        tune: impl FnOnce(&mut Config),
        ready: impl FnOnce(SocketAddr) -> Channel,
    ) -> WebServer {
        let tmp = data_dir_with_reference();
        let mut cfg = test_config(tmp.path());
        tune(&mut cfg);
        let server = OwnServer::start(cfg, true).await;
        crate::common::wait_serving(&ready(server.addr), "").await;
        WebServer {
            addr: server.addr,
            metrics: server.metrics.expect("metrics listener"),
            server,
            _tmp: tmp,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// Sends one HTTP/1.1 request on a fresh connection; the response body is left to read.
async fn http1(addr: SocketAddr, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    http1_over(tcp, req).await
}

/// One HTTP/1.1 request over an already open connection (plain TCP or TLS).
async fn http1_over<IO>(io: IO, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    tokio::time::timeout(STEP, sender.send_request(req))
        .await
        .expect("response within the step bound")
}

/// A gRPC-Web call as connect-web and grpc-web send it: POST, binary protobuf, one data frame.
fn web_request(path: &str, msg: &[u8], headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(msg.len() as u32);
    body.put_slice(msg);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "lnrs.test")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-user-agent", "lnrs-it");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body.freeze())).unwrap()
}

/// One frame of a gRPC-Web response body.
#[derive(Debug)]
enum WebFrame {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// Takes every complete frame off the front of `buf`.
fn take_frames(buf: &mut BytesMut) -> Vec<WebFrame> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        let flag = buf.get_u8();
        buf.advance(4);
        let payload = buf.split_to(len).freeze();
        out.push(match flag & 0x80 {
            0 => WebFrame::Data(payload),
            _ => WebFrame::Trailers(parse_trailers(&payload)),
        });
    }
    out
}

/// A gRPC-Web response body read frame by frame, as a server stream arrives: frames that came
/// in the same chunk wait their turn instead of being dropped.
struct WebFrames {
    body: Incoming,
    buf: BytesMut,
    ready: std::collections::VecDeque<WebFrame>,
}

impl WebFrames {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            ready: Default::default(),
        }
    }

    /// The next frame, within the step bound; panics if the body ends first.
    async fn next(&mut self) -> WebFrame {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return f;
            }
            let frame = tokio::time::timeout(STEP, self.body.frame())
                .await
                .expect("a frame within the step bound")
                .expect("the body ended before the trailers")
                .expect("a good frame");
            if let Ok(d) = frame.into_data() {
                self.buf.extend_from_slice(&d);
                self.ready.extend(take_frames(&mut self.buf));
            }
        }
    }
}

/// `name: value\r\n` lines, as the gRPC-Web spec writes trailers into the body.
fn parse_trailers(block: &[u8]) -> HeaderMap {
    let text = std::str::from_utf8(block).expect("trailers are text");
    let mut h = HeaderMap::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').expect("name: value");
        h.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    h
}

/// A whole (unary) gRPC-Web response: status, headers, frames.
async fn read_all(resp: Response<Incoming>) -> (StatusCode, HeaderMap, Vec<WebFrame>) {
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("body within the step bound")
        .expect("body")
        .to_bytes();
    let mut buf = BytesMut::from(&bytes[..]);
    let frames = take_frames(&mut buf);
    assert!(buf.is_empty(), "a partial frame at the end: {buf:?}");
    (parts.status, parts.headers, frames)
}

/// The gRPC status of a response: from the trailers frame, or from the headers of a
/// trailers-only answer.
fn grpc_status(headers: &HeaderMap, frames: &[WebFrame]) -> tonic::Status {
    let trailers = frames.iter().find_map(|f| match f {
        WebFrame::Trailers(t) => Some(t),
        WebFrame::Data(_) => None,
    });
    tonic::Status::from_header_map(trailers.unwrap_or(headers))
        .expect("a grpc-status in the trailers or the headers")
}

fn data<M: Message + Default>(frames: &[WebFrame]) -> Vec<M> {
    frames
        .iter()
        .filter_map(|f| match f {
            WebFrame::Data(d) => Some(M::decode(d.clone()).expect("decodes")),
            WebFrame::Trailers(_) => None,
        })
        .collect()
}

fn list_measures(page_size: i32) -> pb::ListMeasuresRequest {
    pb::ListMeasuresRequest {
        page_size,
        ..Default::default()
    }
}

const LIST_MEASURES: &str = "/lnrs.v1.EntityService/ListMeasures";

/// The value of the `grpc_server_handled_total` series of `method` with `code`, if any.
async fn handled(metrics: SocketAddr, method: &str, code: &str) -> Option<f64> {
    let req = Request::get("/metrics")
        .header("host", "lnrs.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = http1(metrics, req).await.expect("scrape");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let method = format!("grpc_method=\"{method}\"");
    let code = format!("grpc_code=\"{code}\"");
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .find(|l| l.contains(&method) && l.contains(&code))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http1_answers_unary_calls_with_trailers_in_the_body() {
    let s = WebServer::start(|_| {}).await;
    let native = pb::entity_service_client::EntityServiceClient::new(channel(s.addr))
        .list_measures(list_measures(3))
        .await
        .unwrap()
        .into_inner();

    let resp = http1(
        s.addr,
        web_request(
            LIST_MEASURES,
            &list_measures(3).encode_to_vec(),
            &[("origin", ORIGIN), ("x-request-id", "web-unary-1")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let (status, headers, frames) = read_all(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc-web+proto");
    assert_eq!(
        headers["x-request-id"], "web-unary-1",
        "the observe layer saw the call"
    );
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "no CORS headers without configured origins: {headers:?}"
    );
    assert!(
        matches!(frames.last(), Some(WebFrame::Trailers(_))),
        "the trailers come last, in the body: {frames:?}"
    );
    assert_eq!(grpc_status(&headers, &frames).code(), Code::Ok);
    let pages: Vec<pb::ListMeasuresResponse> = data(&frames);
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].measures.len(), 3);
    assert_eq!(pages[0], native, "the same page as over native gRPC");

    // An error before the first message: the trailers-only form, status in the headers, with
    // the ErrorInfo details a browser can decode.
    let missing = pb::GetMeasureRequest {
        measure_id: 999_999,
    };
    let resp = http1(
        s.addr,
        web_request(
            "/lnrs.v1.EntityService/GetMeasure",
            &missing.encode_to_vec(),
            &[],
        ),
    )
    .await
    .unwrap();
    let (status, headers, frames) = read_all(resp).await;
    assert_eq!(status, StatusCode::OK);
    let st = grpc_status(&headers, &frames);
    assert_eq!(st.code(), Code::NotFound, "{st:?}");
    assert_eq!(reason(&st), "NOT_FOUND");

    // Counted under their own method and code, like native calls (the native ListMeasures
    // above is the other OK).
    assert_eq!(handled(s.metrics, "ListMeasures", "OK").await, Some(2.0));
    assert_eq!(
        handled(s.metrics, "GetMeasure", "NotFound").await,
        Some(1.0)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_streams_over_grpc_web_and_delivers_a_delete() {
    let mut s = WebServer::start(|_| {}).await;
    let mut entity = pb::entity_service_client::EntityServiceClient::new(channel(s.addr));
    let page = entity
        .list_measures(list_measures(1))
        .await
        .unwrap()
        .into_inner();
    let victim = page.measures[0].measure_id;

    let watch = pb::WatchEventsRequest {
        kinds: vec![pb::EventKind::EntityDeleted as i32],
        entity_types: vec!["measure".into()],
        ..Default::default()
    };
    let resp = http1(
        s.addr,
        web_request(
            "/lnrs.v1.EventService/WatchEvents",
            &watch.encode_to_vec(),
            &[],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut frames = WebFrames::new(resp.into_body());
    let mut next_message = async || -> pb::WatchEventsResponse {
        match frames.next().await {
            WebFrame::Data(d) => pb::WatchEventsResponse::decode(d).unwrap(),
            WebFrame::Trailers(t) => panic!("the stream ended: {t:?}"),
        }
    };
    use pb::watch_events_response::Item;
    let first = next_message().await;
    assert!(
        matches!(first.item, Some(Item::CaughtUp(_))),
        "caught up first: {first:?}"
    );

    let deleted = entity
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: victim,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let outcome = deleted.outcome.unwrap();
    let event = loop {
        match next_message().await.item {
            Some(Item::Event(e)) => break e,
            Some(Item::Heartbeat(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(event.seq, outcome.event_seq);
    assert_eq!(event.kind, pb::EventKind::EntityDeleted as i32);
    assert_eq!(event.entity_id, victim.to_string());

    // At shutdown the stream ends like a native one: UNAVAILABLE in the gRPC-Web trailers
    // (with the last seq it sent), then the server finishes.
    let _ = s.server.stop.take().expect("running").send(());
    let trailers = loop {
        if let WebFrame::Trailers(t) = frames.next().await {
            break t;
        }
    };
    let st = tonic::Status::from_header_map(&trailers).expect("a status");
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert_eq!(
        crate::common::error_meta(&st, "last_seq"),
        Some(event.seq.to_string()),
        "resume point of the last event sent"
    );
    tokio::time::timeout(STEP, s.server.task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// A browser's preflight for a gRPC-Web call from `origin`.
fn preflight(origin: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(LIST_MEASURES)
        .header("host", "lnrs.test")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    // None configured: no CORS headers, for the preflight or the call.
    let s = WebServer::start(|_| {}).await;
    let resp = http1(s.addr, preflight(ORIGIN)).await.unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        resp.headers()
    );
    s.stop().await;

    // One configured, with tokens on: its preflight is answered before auth (browsers send no
    // token on a preflight) and allows what gRPC-Web clients send; another origin gets nothing.
    let s = WebServer::start(|c| {
        c.grpc_web_cors_origins = vec![ORIGIN.into()];
        c.tokens = vec![TokenEntry::new(READER, "reader")];
    })
    .await;
    let resp = http1(s.addr, preflight(ORIGIN)).await.unwrap();
    let h = resp.headers();
    assert!(resp.status().is_success(), "{:?}", resp.status());
    assert_eq!(header(h, "access-control-allow-origin"), ORIGIN);
    assert!(header(h, "access-control-allow-methods").contains("POST"));
    let allowed = header(h, "access-control-allow-headers");
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allowed.contains(name), "{name} not in {allowed}");
    }
    let resp = http1(s.addr, preflight(OTHER_ORIGIN)).await.unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        resp.headers()
    );

    // The call itself: the allowed origin may read the answer and its gRPC headers.
    let bearer = format!("Bearer {READER}");
    let resp = http1(
        s.addr,
        web_request(
            LIST_MEASURES,
            &list_measures(2).encode_to_vec(),
            &[("origin", ORIGIN), ("authorization", &bearer)],
        ),
    )
    .await
    .unwrap();
    let (status, headers, frames) = read_all(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), ORIGIN);
    let exposed = header(&headers, "access-control-expose-headers");
    for name in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    assert_eq!(grpc_status(&headers, &frames).code(), Code::Ok);
    s.stop().await;

    // "*": any origin.
    let s = WebServer::start(|c| c.grpc_web_cors_origins = vec!["*".into()]).await;
    let resp = http1(s.addr, preflight(OTHER_ORIGIN)).await.unwrap();
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), "*");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_enforced_for_grpc_web() {
    let s = WebServer::start(|c| {
        c.tokens = vec![
            TokenEntry::new(READER, "reader"),
            TokenEntry::new(EDITOR, "editor"),
        ]
    })
    .await;
    let call = |path: &'static str, msg: Vec<u8>, token: Option<&'static str>| {
        let addr = s.addr;
        async move {
            let bearer = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = bearer
                .as_deref()
                .map(|b| vec![("authorization", b)])
                .unwrap_or_default();
            let resp = http1(addr, web_request(path, &msg, &headers))
                .await
                .unwrap();
            let (_, headers, frames) = read_all(resp).await;
            grpc_status(&headers, &frames)
        }
    };
    let list = list_measures(1).encode_to_vec();
    let st = call(LIST_MEASURES, list.clone(), None).await;
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    let st = call(
        LIST_MEASURES,
        list.clone(),
        Some("not-a-configured-token-00"),
    )
    .await;
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    let st = call(LIST_MEASURES, list, Some(READER)).await;
    assert_eq!(st.code(), Code::Ok, "{st:?}");

    let delete = pb::DeleteMeasureRequest {
        measure_id: 1,
        request_id: String::new(),
    }
    .encode_to_vec();
    let path = "/lnrs.v1.EntityService/DeleteMeasure";
    let st = call(path, delete.clone(), Some(READER)).await;
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    // The editor gets past auth: whatever the answer, it is not an auth refusal.
    let st = call(path, delete, Some(EDITOR)).await;
    assert!(
        !matches!(st.code(), Code::Unauthenticated | Code::PermissionDenied),
        "{st:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_is_refused_when_grpc_web_is_off() {
    let s = WebServer::start(|c| c.grpc_web = false).await;
    let got = http1(
        s.addr,
        web_request(LIST_MEASURES, &list_measures(1).encode_to_vec(), &[]),
    )
    .await;
    assert!(
        got.is_err(),
        "an HTTP/2-only port answered HTTP/1.1: {got:?}"
    );
    // Native gRPC is unaffected.
    pb::entity_service_client::EntityServiceClient::new(channel(s.addr))
        .list_measures(list_measures(1))
        .await
        .unwrap();
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 inside the server's own TLS
// ---------------------------------------------------------------------------------------------

const CREATE_HABITAT: &str = "/lnrs.v1.EntityService/CreateHabitat";

/// A TLS client that offers only HTTP/1.1 in ALPN, as fetch under Node and `curl --http1.1`
/// do, with the client certificate of `pki` if `identity`.
async fn tls_http1(
    addr: SocketAddr,
    pki: &crate::production::Pki,
    identity: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    let pem_certs = |pem: &str| {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(&pki.ca) {
        roots.add(cert).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = if identity {
        let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap();
        builder
            .with_client_auth_cert(pem_certs(&pki.client_cert), key)
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(STEP, connector.connect(name, tcp))
        .await
        .expect("handshake within the step bound")
}

fn tls_channel(addr: SocketAddr, pki: &crate::production::Pki) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(pki.client(Some((&pki.client_cert, &pki.client_key))))
        .unwrap()
        .connect_lazy()
}

/// tonic's own TLS acceptor offered only `h2`, so an HTTP/1.1-only client failed the handshake
/// (`no_application_protocol`). Ours offers `http/1.1` too while gRPC-Web is on, and the client
/// certificate still reaches the request: the write's event names its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http1_inside_tls_keeps_the_client_certificate_identity() {
    let pki = crate::production::pki();
    let s = WebServer::start_with(
        |c| c.tls = Some(pki.tls(true)),
        |addr| tls_channel(addr, &pki),
    )
    .await;

    // A client that connects and never starts its handshake must not hold up the others: each
    // handshake runs on its own task (a serial accept loop would stall every step below).
    let _stalled = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls = tls_http1(s.addr, &pki, true).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let name = "Web over TLS meadow";
    let resp = http1_over(
        tls,
        web_request(
            CREATE_HABITAT,
            &crate::common::ops::new_habitat(name).encode_to_vec(),
            &[],
        ),
    )
    .await
    .expect("HTTP/1.1 inside TLS");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let (status, headers, frames) = read_all(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(grpc_status(&headers, &frames).code(), Code::Ok);
    let created: Vec<pb::CreateHabitatResponse> = data(&frames);
    let id = created[0].habitat.as_ref().unwrap().habitat_id;

    // The event of that write, read over native gRPC on the same TLS port, names the client
    // certificate's subject as its principal: the identity survived our acceptor.
    let page = pb::event_service_client::EventServiceClient::new(tls_channel(s.addr, &pki))
        .list_events(pb::ListEventsRequest {
            page_size: 1000,
            kinds: vec![pb::EventKind::EntityCreated as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let event = page
        .events
        .iter()
        .find(|e| e.entity_id == id.to_string())
        .expect("the create's event");
    assert_eq!(event.principal, "CN=lnrs-client");

    // mTLS still holds for HTTP/1.1: without a certificate the request does not get through.
    let refused = match tls_http1(s.addr, &pki, false).await {
        Err(_) => true,
        Ok(io) => http1_over(
            io,
            web_request(LIST_MEASURES, &list_measures(1).encode_to_vec(), &[]),
        )
        .await
        .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    s.stop().await;

    // With gRPC-Web off, ALPN offers h2 alone: HTTP/1.1 is refused at the handshake, and native
    // gRPC over TLS still works.
    let s = WebServer::start_with(
        |c| {
            c.tls = Some(pki.tls(true));
            c.grpc_web = false;
        },
        |addr| tls_channel(addr, &pki),
    )
    .await;
    let refused = tls_http1(s.addr, &pki, true).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("NoApplicationProtocol")
                || e.to_string().contains("no_application_protocol")),
        "HTTP/1.1 offered with gRPC-Web off: {:?}",
        refused.map(|t| t.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    );
    s.stop().await;
}
