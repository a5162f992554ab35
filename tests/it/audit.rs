//! Audit: every event says who made the change — the bearer token's name (never the token), the
//! mTLS client certificate's subject, or `anonymous` with auth off — together with the request id
//! and the client's address, in ListEvents, WatchEvents and `lnrs watch` (table and --json).
//! Token names that cannot be used stop start-up with an error naming the setting.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{data_dir_with_reference, events_after, test_config, wait_serving};
use crate::common::{ops, ChildServer, TestServer};
use crate::production::{pki, serve_fails};
use lnrs::pb;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

/// An editor token with a name in the tokens file.
const ALICE: &str = "alice-secret-7f3a9c2e5b81";
/// An editor token without a name (the old two-column format).
const UNNAMED: &str = "unnamed-secret-4d6b0a9e17c3";
/// An admin token named in `LNRS_TOKENS`.
const BOB: &str = "bob-secret-8e2c5a7f0b94";

/// `msg` with `token` as its bearer token and `request_id` as its x-request-id.
fn call<T>(msg: T, token: Option<&str>, request_id: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r.metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    r
}

fn entity(ch: &Channel) -> pb::entity_service_client::EntityServiceClient<Channel> {
    pb::entity_service_client::EntityServiceClient::new(ch.clone())
}

fn events(ch: &Channel) -> pb::event_service_client::EventServiceClient<Channel> {
    pb::event_service_client::EventServiceClient::new(ch.clone())
}

/// The event `seq`, through ListEvents with `token`.
async fn listed(ch: &Channel, token: Option<&str>, seq: u64) -> pb::Event {
    let req = pb::ListEventsRequest {
        start_after_seq: seq - 1,
        page_size: 1,
        ..Default::default()
    };
    let page = events(ch)
        .list_events(call(req, token, "audit-list"))
        .await
        .unwrap()
        .into_inner();
    page.events
        .into_iter()
        .find(|e| e.seq == seq)
        .unwrap_or_else(|| panic!("no event {seq}"))
}

/// The event `seq`, through WatchEvents with `token` (bounded in time).
async fn watched(ch: &Channel, token: Option<&str>, seq: u64) -> pb::Event {
    let req = pb::WatchEventsRequest {
        start_after_seq: Some(seq - 1),
        ..Default::default()
    };
    let mut stream = events(ch)
        .watch_events(call(req, token, "audit-watch"))
        .await
        .unwrap()
        .into_inner();
    let first = async {
        loop {
            match stream.message().await.unwrap().and_then(|m| m.item) {
                Some(pb::watch_events_response::Item::Event(e)) => return e,
                Some(_) => continue,
                None => panic!("the stream ended before event {seq}"),
            }
        }
    };
    let e = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("event within 30 s");
    assert_eq!(e.seq, seq);
    e
}

/// Asserts `e` is attributed to `principal`, request `request_id`, from a loopback address.
fn assert_origin(e: &pb::Event, principal: &str, request_id: &str) {
    assert_eq!(e.principal, principal, "{e:?}");
    assert_eq!(e.request_id, request_id, "{e:?}");
    let peer: SocketAddr = e
        .peer
        .parse()
        .unwrap_or_else(|_| panic!("peer {:?} is not an address", e.peer));
    assert!(peer.ip().is_loopback() && peer.port() != 0, "{peer}");
}

/// Panics if any of the tokens appears in `text` (`what` says where it was found).
fn assert_no_secret(what: &str, text: &str) {
    for t in [ALICE, UNNAMED, BOB] {
        assert!(!text.contains(t), "a token appears in {what}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tokens_are_recorded_by_name_with_request_id_and_peer() {
    let tmp = data_dir_with_reference();
    let tokens = tmp.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# token role [name]\n{ALICE} editor alice\n{UNNAMED} editor\n"),
    )
    .unwrap();
    let env_tokens = format!("{BOB}:admin:bob");
    let s = ChildServer::start(
        tmp.path(),
        "127.0.0.1:0",
        &["--tokens-file", tokens.to_str().unwrap()],
        &[
            ("LNRS_TOKENS", &env_tokens),
            ("LNRS_LOG", "debug"),
            ("LNRS_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let ch = s.channel.clone();

    // alice creates and deletes a habitat; the delete carries an AIP-155 request_id, which is
    // the request id its event records.
    let created = entity(&ch)
        .create_habitat(call(
            ops::new_habitat("audited"),
            Some(ALICE),
            "audit-create-1",
        ))
        .await
        .unwrap()
        .into_inner();
    let delete = pb::DeleteHabitatRequest {
        habitat_id: created.habitat.unwrap().habitat_id,
        request_id: "audit-delete-1".into(),
    };
    let deleted = entity(&ch)
        .delete_habitat(call(delete, Some(ALICE), "audit-delete-header"))
        .await
        .unwrap()
        .into_inner();
    let delete_seq = deleted.outcome.unwrap().event_seq;
    let bob_seq = entity(&ch)
        .create_habitat(call(ops::new_habitat("by bob"), Some(BOB), "audit-bob"))
        .await
        .unwrap()
        .into_inner()
        .event_seq;
    let unnamed_seq = entity(&ch)
        .create_habitat(call(
            ops::new_habitat("by nobody"),
            Some(UNNAMED),
            "audit-unnamed",
        ))
        .await
        .unwrap()
        .into_inner()
        .event_seq;

    let create = listed(&ch, Some(ALICE), created.event_seq).await;
    assert_origin(&create, "alice", "audit-create-1");
    let del = listed(&ch, Some(ALICE), delete_seq).await;
    assert_eq!(del.kind, pb::EventKind::EntityDeleted as i32);
    assert_origin(&del, "alice", "audit-delete-1");
    assert_eq!(
        watched(&ch, Some(BOB), delete_seq).await,
        del,
        "WatchEvents shows what ListEvents shows"
    );
    assert_origin(&listed(&ch, Some(BOB), bob_seq).await, "bob", "audit-bob");
    // A token without a name is known by a stable hash, never by itself.
    let unnamed = listed(&ch, Some(UNNAMED), unnamed_seq).await;
    assert!(
        unnamed.principal.starts_with("token-") && unnamed.principal.len() == 18,
        "{unnamed:?}"
    );
    assert_origin(&unnamed, &unnamed.principal.clone(), "audit-unnamed");
    let all = events_after_with(&ch, ALICE, created.event_seq - 1).await;
    // create, the delete's pre-delete snapshot and the delete, bob's and the unnamed create.
    assert_eq!(all.len(), 5, "{all:?}");
    let snap = all
        .iter()
        .find(|e| e.kind == pb::EventKind::SnapshotCreated as i32)
        .expect("the pre-delete snapshot's event");
    assert_origin(snap, "alice", "audit-delete-1");
    assert_no_secret("the events", &format!("{all:?}"));

    // The CLI prints who, in the table and in --json.
    let srv = format!("http://{}", s.addr);
    let from = delete_seq.to_string();
    let watch = ["watch", "--from", &from, "--limit", "1", "--token", ALICE];
    let table = crate::cli::lnrs(&srv, &watch, None).await.ok();
    assert!(
        table.stdout.starts_with(&format!("{delete_seq:>6}")) && table.stdout.contains("by alice"),
        "{}",
        table.stdout
    );
    let json = crate::cli::lnrs(&srv, &[&watch[..], &["--json"]].concat(), None)
        .await
        .ok()
        .json();
    assert_eq!(json["seq"], delete_seq, "{json}");
    assert_eq!(json["principal"], "alice", "{json}");
    assert_eq!(json["request_id"], "audit-delete-1", "{json}");
    assert_eq!(json["peer"], del.peer, "{json}");
    assert_no_secret("`lnrs watch`", &format!("{}{json}", table.stdout));

    // The debug log has every request, and no token.
    s.signal(libc::SIGTERM);
    let (status, _, log) = s.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("audit-delete-header"),
        "the log has the requests:\n{log}"
    );
    assert_no_secret("the server log", &log);
}

/// Every event after `after`, through ListEvents with `token`.
async fn events_after_with(ch: &Channel, token: &str, after: u64) -> Vec<pb::Event> {
    let req = pb::ListEventsRequest {
        start_after_seq: after,
        page_size: 1000,
        ..Default::default()
    };
    events(ch)
        .list_events(call(req, Some(token), "audit-all"))
        .await
        .unwrap()
        .into_inner()
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_the_principal_is_anonymous() {
    let s = TestServer::start().await;
    let seq = entity(&s.channel)
        .create_habitat(call(ops::new_habitat("anonymous"), None, "audit-anon"))
        .await
        .unwrap()
        .into_inner()
        .event_seq;
    let e = events_after(&s.channel, seq - 1).await.remove(0);
    assert_origin(&e, "anonymous", "audit-anon");
    assert_eq!(watched(&s.channel, None, seq).await, e);
    s.stop().await;
}

/// A server with TLS (and mTLS: every client presents a certificate) from `cfg`, and a channel
/// to it that presents the test PKI's client certificate ("CN=lnrs-client").
struct TlsServer {
    channel: Channel,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), lnrs::server::ServeError>>,
}

impl TlsServer {
    async fn start(cfg: lnrs::config::Config, client: tonic::transport::ClientTlsConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lnrs::server::run(listener, cfg, async {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(client)
            .unwrap()
            .connect_lazy();
        wait_serving(&channel, "").await;
        TlsServer {
            channel,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_client_without_a_token_is_its_certificate_subject() {
    let pki = pki();
    let identity = || pki.client(Some((&pki.client_cert, &pki.client_key)));

    // Auth off, mTLS on: the certificate is who the client is.
    let tmp = data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.tls = Some(pki.tls(true));
    let s = TlsServer::start(cfg, identity()).await;
    let seq = entity(&s.channel)
        .create_habitat(call(ops::new_habitat("by certificate"), None, "audit-cert"))
        .await
        .unwrap()
        .into_inner()
        .event_seq;
    let e = listed(&s.channel, None, seq).await;
    assert_origin(&e, "CN=lnrs-client", "audit-cert");
    assert_eq!(watched(&s.channel, None, seq).await, e);
    s.stop().await;

    // With tokens as well, the token says who the client is.
    let mut cfg = test_config(tmp.path());
    cfg.tls = Some(pki.tls(true));
    cfg.tokens = vec![lnrs::config::TokenEntry::new(ALICE, "editor").named("alice")];
    let s = TlsServer::start(cfg, identity()).await;
    let seq = entity(&s.channel)
        .create_habitat(call(
            ops::new_habitat("by token"),
            Some(ALICE),
            "audit-both",
        ))
        .await
        .unwrap()
        .into_inner()
        .event_seq;
    assert_origin(
        &listed(&s.channel, Some(ALICE), seq).await,
        "alice",
        "audit-both",
    );
    s.stop().await;
}

#[test]
fn unusable_token_names_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0);
    let file = |text: &str| {
        n.set(n.get() + 1);
        let p = dir.path().join(format!("tokens-{}", n.get()));
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    // (tokens file, LNRS_TOKENS, what stderr must say).
    let cases = [
        (
            Some(file(&format!("{ALICE} editor alice\n{BOB} admin alice\n"))),
            None,
            vec!["tokens_file", "line 2", "already used"],
        ),
        (
            Some(file(&format!("{ALICE} editor al/ice\n"))),
            None,
            vec!["tokens_file", "line 1", "token name"],
        ),
        (
            Some(file(&format!("{ALICE} editor alice smith\n"))),
            None,
            vec!["tokens_file", "line 1", "`token role name`"],
        ),
        // Names in the role's column: the token is not repeated.
        (
            Some(file(&format!("alice {ALICE} editor\n"))),
            None,
            vec!["tokens_file", "line 1", "role"],
        ),
        (
            None,
            Some(format!("{UNNAMED}:editor,{BOB}:admin:anonymous")),
            vec!["LNRS_TOKENS", "entry 2", "reserved"],
        ),
    ];
    for (tokens_file, env, expected) in cases {
        let mut args = vec![];
        if let Some(f) = &tokens_file {
            args = vec!["--tokens-file", f.as_str()];
        }
        let env: Vec<(&str, &str)> = env.iter().map(|v| ("LNRS_TOKENS", v.as_str())).collect();
        let (code, stderr) = serve_fails(&args, &env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        for what in expected {
            assert!(
                stderr.contains(what),
                "{args:?} {env:?}: no `{what}`: {stderr}"
            );
        }
        assert_no_secret("a configuration error", &stderr);
        assert!(!stderr.contains("al/ice"), "{stderr}");
    }
}
