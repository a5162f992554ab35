//! The `lnrs` client subcommands, run as the real binary against a real server: in-process
//! (`TestServer`) for the happy paths and errors, and a child `lnrs serve` process for `watch`
//! resuming across a SIGTERM + restart on the same port.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::TestServer;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Upper bound for one CLI invocation (a deep verify or a restore included).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What one CLI run produced.
pub(crate) struct Run {
    code: i32,
    pub(crate) stdout: String,
    stderr: String,
    args: String,
}

impl Run {
    /// Asserts exit code 0 and returns self.
    pub(crate) fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "`lnrs {}` failed:\n{}{}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`lnrs {}` printed invalid JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }
}

/// Runs `lnrs <args>` with LNRS_SERVER pointing at `server`, feeding `stdin` if given.
pub(crate) async fn lnrs(server: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnrs"));
    cmd.args(args)
        .env("LNRS_SERVER", server)
        .env_remove("LNRS_TIMEOUT")
        .env_remove("LNRS_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn lnrs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`lnrs {}` did not finish within {RUN_LIMIT:?}",
                args.join(" ")
            )
        })
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: args.join(" "),
    }
}

fn url(s: &TestServer) -> String {
    format!("http://{}", s.addr)
}

fn id_of(doc: &Value, entity: &str, id_field: &str) -> String {
    match &doc[entity][id_field] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("no {entity}.{id_field} in {doc}: {other}"),
    }
}

/// (entity, id field, create flags, search text, field to update, its new value).
type Case<'a> = (&'a str, &'a str, Vec<&'a str>, &'a str, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_of_all_six_entities_through_the_cli() {
    let s = TestServer::start().await;
    let srv = url(&s);
    let inputs = tempfile::tempdir().unwrap();
    let species_file = inputs.path().join("species.json");
    std::fs::write(
        &species_file,
        json!({ "taxa": "Bird", "common_name": "Nightingale", "assemblage": "Birds",
                "scientific_name": "Luscinia megarhynchos", "verbatim_index": 7 })
        .to_string(),
    )
    .unwrap();
    let species_file = species_file.display().to_string();
    let cases: Vec<Case> = vec![
        (
            "measure",
            "measure_id",
            vec![
                "--set",
                "measure=Plant hedgerows",
                "--set",
                "core_supplementary=Core (BNG)",
                "--set",
                "benefit_ids=1,3",
            ],
            "hedgerows",
            "concise_measure",
            "Hedges",
        ),
        (
            "area",
            "area_id",
            vec![
                "--data",
                r#"{"area_name": "Test Vale", "area_description": "A vale"}"#,
            ],
            "Test Vale",
            "area_link",
            "https://example.org/vale",
        ),
        (
            "priority",
            "priority_id",
            vec![
                "--set",
                "biodiversity_priority=More ponds",
                "--set",
                "theme=Woodland",
            ],
            "More ponds",
            "theme",
            "Marine",
        ),
        (
            "species",
            "species_id",
            vec!["--file", species_file.as_str()],
            "Nightingale",
            "common_name",
            "Common nightingale",
        ),
        (
            "habitat",
            "habitat_id",
            vec!["--set", "habitat=Reedbed"],
            "Reedbed",
            "habitat",
            "Reedbeds",
        ),
        (
            "grant",
            "grant_id",
            vec![
                "--set",
                "grant_id=CLI-1",
                "--set",
                "grant_name=Ponds",
                "--set",
                "grant_scheme=Test",
            ],
            "CLI-1",
            "grant_summary",
            "For ponds",
        ),
    ];
    for (entity, id_field, create, search, field, value) in cases {
        let mut args = vec![entity, "create", "--json"];
        args.extend(create.iter().copied());
        let created = lnrs(&srv, &args, None).await.ok().json();
        let id = id_of(&created, entity, id_field);
        assert!(created["event_seq"].as_u64().unwrap() > 0, "{created}");
        if entity == "measure" {
            assert_eq!(created["measure"]["benefit_ids"], json!([1, 3]));
        }

        let got = lnrs(&srv, &[entity, "get", &id, "--json"], None)
            .await
            .ok()
            .json();
        assert_eq!(got, created[entity], "get returns what create stored");
        let human = lnrs(&srv, &[entity, "get", &id], None).await.ok();
        assert!(
            human
                .stdout
                .lines()
                .any(|l| l.starts_with(id_field) && l.trim_end().ends_with(&id)),
            "{}",
            human.stdout
        );

        let set = format!("{field}={value}");
        let updated = lnrs(
            &srv,
            &[entity, "update", &id, "--set", &set, "--json"],
            None,
        )
        .await
        .ok()
        .json();
        assert_eq!(updated[entity][field], json!(value));
        for (k, v) in created[entity].as_object().unwrap() {
            if k != field && k != "linnaean_name" {
                assert_eq!(
                    &updated[entity][k], v,
                    "{entity}.{k} is outside the update mask and must be kept"
                );
            }
        }

        let listed = lnrs(&srv, &[entity, "list", "--search", search, "--json"], None)
            .await
            .ok()
            .json();
        let list_field = listed
            .as_object()
            .unwrap()
            .keys()
            .find(|k| *k != "next_page_token" && *k != "total_size")
            .unwrap()
            .clone();
        assert!(
            listed[&list_field]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r[id_field] == updated[entity][id_field]),
            "{listed}"
        );
        assert!(listed["total_size"].as_i64().unwrap() >= 1);
        let table = lnrs(&srv, &[entity, "list", "--page-size", "3"], None)
            .await
            .ok();
        assert!(
            table.stdout.starts_with(&id_field.to_uppercase()),
            "{}",
            table.stdout
        );
        assert_eq!(
            table.stdout.lines().count(),
            4,
            "header + one page of 3:\n{}",
            table.stdout
        );
        assert!(table.stderr.contains("--page-token"), "{}", table.stderr);

        let deleted = lnrs(&srv, &[entity, "delete", &id, "--yes", "--json"], None)
            .await
            .ok()
            .json();
        assert!(
            !deleted["outcome"]["snapshot_id"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{deleted}"
        );
        assert_eq!(deleted["deleted"][id_field], updated[entity][id_field]);
        let gone = lnrs(&srv, &[entity, "get", &id], None).await;
        assert_eq!(gone.code, 3, "{}", gone.stderr);
    }

    // --request-id makes a mutation idempotent: the retry replays the first answer.
    let once = [
        "habitat",
        "create",
        "--set",
        "habitat=Once",
        "--request-id",
        "cli-req-1",
        "--json",
    ];
    let first = lnrs(&srv, &once, None).await.ok().json();
    let retry = lnrs(&srv, &once, None).await.ok().json();
    assert_eq!(
        (&retry["habitat"], &retry["replayed"]),
        (&first["habitat"], &json!(true))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_print_code_reason_and_message_with_meaningful_exit_codes() {
    let s = TestServer::start().await;
    let srv = url(&s);

    let r = lnrs(&srv, &["measure", "get", "999999"], None).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            3,
            "error: NOT_FOUND (NOT_FOUND): measure 999999 not found\n"
        )
    );
    assert!(r.stdout.is_empty());

    let r = lnrs(
        &srv,
        &[
            "priority",
            "create",
            "--set",
            "biodiversity_priority=x",
            "--set",
            "theme=Nope",
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: INVALID_ARGUMENT (VALIDATION_FAILED): "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("\n  theme: "),
        "field violations are listed: {}",
        r.stderr
    );

    let r = lnrs(
        &srv,
        &[
            "link",
            "create",
            "--type",
            "map",
            "--measure",
            "999999",
            "--area",
            "1",
            "--priority",
            "1",
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: FAILED_PRECONDITION (REFERENCED_ROW_NOT_FOUND): "),
        "{}",
        r.stderr
    );

    for (args, why) in [
        (vec!["measure", "get", "abc"], "invalid measure id"),
        (
            vec!["measure", "create", "--set", "colour=red"],
            "unknown measure field `colour`",
        ),
        (vec!["measure", "update", "1"], "nothing to update"),
        (
            vec!["area", "create", "--data", "[1]"],
            "expected a JSON object",
        ),
        (
            vec![
                "link",
                "create",
                "--type",
                "map",
                "--measure",
                "1",
                "--area",
                "1",
                "--species",
                "1",
            ],
            "--species is not part of a map link",
        ),
        (vec!["measure", "frobnicate"], "frobnicate"),
    ] {
        let r = lnrs(&srv, &args, None).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
    }

    // A port nobody listens on: the connection error is UNAVAILABLE, exit 4.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = lnrs(&dead, &["status"], None).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: UNAVAILABLE: "), "{}", r.stderr);
    assert!(
        !r.stderr.contains("Status {"),
        "never a debug dump: {}",
        r.stderr
    );

    let r = lnrs(&srv, &["measure", "list", "--timeout", "1ns"], None).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("error: DEADLINE_EXCEEDED: "),
        "{}",
        r.stderr
    );

    let help = lnrs(&srv, &["--help"], None).await.ok();
    assert!(
        help.stdout.contains("Exit codes:") && help.stdout.contains("3  not found"),
        "{}",
        help.stdout
    );
    s.stop().await;
}

/// "Deleting X removes N row(s)" (the preview) and "N row(s) removed" (the outcome).
fn number_before(text: &str, marker: &str) -> i64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in:\n{text}"));
    text[..at]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_shows_the_impact_and_only_deletes_when_confirmed() {
    let s = TestServer::start().await;
    let srv = url(&s);

    let declined = lnrs(&srv, &["measure", "delete", "5"], Some("n\n")).await;
    assert_eq!(declined.code, 7, "{}", declined.stderr);
    assert!(
        declined.stdout.starts_with("Deleting measure 5 removes "),
        "{}",
        declined.stdout
    );
    assert!(
        declined.stdout.contains("\nmeasure "),
        "the measure's own row is listed: {}",
        declined.stdout
    );
    assert!(
        declined.stderr.contains("[y/N]") && declined.stderr.contains("nothing was changed"),
        "{}",
        declined.stderr
    );
    lnrs(&srv, &["measure", "get", "5"], None).await.ok();
    let json_mode = lnrs(&srv, &["measure", "delete", "5", "--json"], Some("n\n")).await;
    assert_eq!(json_mode.code, 7);
    assert!(
        json_mode.stdout.is_empty(),
        "with --json the preview goes to stderr: {}",
        json_mode.stdout
    );
    assert!(
        json_mode.stderr.starts_with("Deleting measure 5 removes "),
        "{}",
        json_mode.stderr
    );
    let no_answer = lnrs(&srv, &["measure", "delete", "5"], Some("")).await;
    assert_eq!(no_answer.code, 7, "end of input is a no");
    lnrs(&srv, &["measure", "get", "5"], None).await.ok();

    let any = lnrs(
        &srv,
        &[
            "link",
            "list",
            "--type",
            "hca",
            "--page-size",
            "1",
            "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    let (habitat, area) = (
        any["links"][0]["habitat_id"].to_string(),
        any["links"][0]["area_id"].to_string(),
    );
    let link = [
        "link",
        "delete",
        "--type",
        "hca",
        "--habitat",
        habitat.as_str(),
        "--area",
        area.as_str(),
    ];
    let r = lnrs(&srv, &link, Some("no\n")).await;
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(&format!(
            "Deleting link habitat_creation_area {habitat}/{area} removes 1 row(s)"
        )),
        "{}",
        r.stdout
    );
    let after = lnrs(&srv, &["link", "list", "--type", "hca", "--json"], None)
        .await
        .ok()
        .json();
    assert_eq!(
        after["total_size"], any["total_size"],
        "a declined link delete deletes nothing"
    );

    let done = lnrs(&srv, &["measure", "delete", "5"], Some("y\n"))
        .await
        .ok();
    let previewed = number_before(&done.stdout, "row(s) in");
    let removed = number_before(&done.stdout, "row(s) removed");
    assert_eq!(previewed, removed, "the preview is exact:\n{}", done.stdout);
    assert!(
        done.stdout.contains("undo with: lnrs snapshot restore "),
        "{}",
        done.stdout
    );
    assert_eq!(lnrs(&srv, &["measure", "get", "5"], None).await.code, 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_lookups_and_a_bounded_watch() {
    let s = TestServer::start().await;
    let srv = url(&s);

    for (lookup, field) in [
        ("measure-types", "measure_types"),
        ("stakeholders", "stakeholders"),
        ("benefits", "benefits"),
        ("funding-schemes", "funding_schemes"),
    ] {
        let doc = lnrs(&srv, &["lookup", lookup, "--json"], None)
            .await
            .ok()
            .json();
        assert!(
            !doc[field].as_array().unwrap().is_empty(),
            "{lookup}: {doc}"
        );
        let table = lnrs(&srv, &["lookup", lookup], None).await.ok();
        assert!(table.stdout.lines().count() > 1, "{}", table.stdout);
    }
    let one_area = lnrs(
        &srv,
        &["lookup", "funding-schemes", "--area", "1", "--json"],
        None,
    )
    .await
    .ok()
    .json();
    assert!(
        one_area["funding_schemes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["area_id"] == 1),
        "{one_area}"
    );

    let all = lnrs(
        &srv,
        &[
            "link",
            "list",
            "--type",
            "map",
            "--measure",
            "1",
            "--all",
            "--page-size",
            "2",
            "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    let links = all["links"].as_array().unwrap();
    assert_eq!(
        links.len() as i64,
        all["total_size"].as_i64().unwrap(),
        "--all fetches every page"
    );
    assert!(links
        .iter()
        .all(|l| l["measure_id"] == 1 && l["link_type"] == "LINK_TYPE_MEASURE_AREA_PRIORITY"));

    let area = lnrs(
        &srv,
        &[
            "area",
            "create",
            "--set",
            "area_name=Link Vale",
            "--set",
            "area_description=x",
            "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    let area_id = id_of(&area, "area", "area_id");
    let hca = [
        "--type",
        "hca",
        "--habitat",
        "2",
        "--area",
        area_id.as_str(),
    ];
    let created = lnrs(&srv, &[&["link", "create"][..], &hca[..]].concat(), None)
        .await
        .ok();
    assert!(
        created
            .stdout
            .starts_with(&format!("created link habitat_creation_area 2/{area_id}")),
        "{}",
        created.stdout
    );
    let dup = lnrs(&srv, &[&["link", "create"][..], &hca[..]].concat(), None).await;
    assert_eq!(dup.code, 5, "ALREADY_EXISTS: {}", dup.stderr);
    let listed = lnrs(
        &srv,
        &["link", "list", "--type", "hca", "--area", &area_id],
        None,
    )
    .await
    .ok();
    assert_eq!(
        listed.stdout,
        format!("HABITAT_ID  AREA_ID\n         2  {area_id:>7}\n")
    );

    let batch = [
        "link",
        "batch-map",
        "--measures",
        "1,2",
        "--areas",
        area_id.as_str(),
        "--priorities",
        "1",
        "--json",
    ];
    let first = lnrs(&srv, &batch, None).await.ok().json();
    assert_eq!(first["created"].as_array().unwrap().len(), 2, "{first}");
    let again = lnrs(&srv, &batch, None).await.ok().json();
    assert_eq!(
        (
            again["created"].as_array().unwrap().len(),
            again["skipped_existing"].as_array().unwrap().len()
        ),
        (0, 2)
    );

    let del = lnrs(
        &srv,
        &[&["link", "delete", "--yes"][..], &hca[..]].concat(),
        None,
    )
    .await
    .ok();
    assert!(
        del.stdout.contains("deleted link habitat_creation_area"),
        "{}",
        del.stdout
    );
    let after = lnrs(
        &srv,
        &[
            "link", "list", "--type", "hca", "--area", &area_id, "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(after["total_size"], 0);

    // Everything above is in the log: a bounded watch prints it from the start and exits.
    let human = lnrs(&srv, &["watch", "--from", "1", "--limit", "3"], None)
        .await
        .ok();
    let seqs: Vec<u64> = human
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "{}", human.stdout);
    let lines = lnrs(
        &srv,
        &[
            "watch",
            "--from",
            "2",
            "--limit",
            "2",
            "--kind",
            "link-created",
            "--json",
        ],
        None,
    )
    .await
    .ok();
    let events: Vec<Value> = lines
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "EVENT_KIND_LINK_CREATED" && e["after"]["link"].is_object()),
        "{events:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restore_and_status() {
    let s = TestServer::start().await;
    let srv = url(&s);

    let status = lnrs(&srv, &["status", "--json"], None).await.ok().json();
    assert_eq!(status["state"], "SNAPSHOT_STATE_ENABLED", "{status}");
    assert!(lnrs(&srv, &["status"], None)
        .await
        .ok()
        .stdout
        .contains("snapshot store"));

    let created = lnrs(
        &srv,
        &[
            "snapshot", "create", "-d", "cli test", "--label", "env=test", "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    let manual = created["snapshot"]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created["snapshot"]["labels"], json!({ "env": "test" }));
    let list = lnrs(
        &srv,
        &["snapshot", "list", "--operation", "manual", "--json"],
        None,
    )
    .await
    .ok()
    .json();
    assert!(
        list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["snapshot_id"] == manual.as_str()),
        "{list}"
    );
    assert!(lnrs(&srv, &["snapshot", "list"], None)
        .await
        .ok()
        .stdout
        .contains(&manual));
    let shown = lnrs(&srv, &["snapshot", "show", &manual, "--json"], None)
        .await
        .ok()
        .json();
    assert!(shown["snapshot"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["table"] == "measure" && t["rows"] == 168));
    assert!(lnrs(&srv, &["snapshot", "show", &manual], None)
        .await
        .ok()
        .stdout
        .contains("event_head_seq"));
    let preview = lnrs(
        &srv,
        &[
            "snapshot", "preview", &manual, "--table", "area", "--limit", "3", "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(preview["rows"].as_array().unwrap().len(), 3, "{preview}");
    assert!(preview["columns"]
        .as_array()
        .unwrap()
        .contains(&json!("area_name")));
    let quick = lnrs(&srv, &["snapshot", "verify", &manual], None)
        .await
        .ok();
    assert!(
        quick.stdout.starts_with("CHECK") && quick.stdout.contains("checks passed"),
        "{}",
        quick.stdout
    );
    let deep = lnrs(
        &srv,
        &["snapshot", "verify", &manual, "--deep", "--json"],
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(deep["report"]["passed"], true);

    // Delete a measure, then bring it back by restoring the delete's snapshot.
    let deleted = lnrs(&srv, &["measure", "delete", "7", "--yes", "--json"], None)
        .await
        .ok()
        .json();
    let before_delete = deleted["outcome"]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = lnrs(
        &srv,
        &["snapshot", "restore", &before_delete],
        Some("restore\n"),
    )
    .await;
    assert_eq!(
        wrong.code, 7,
        "only the exact word confirms: {}",
        wrong.stderr
    );
    assert!(
        wrong.stdout.contains("Row counts that differ"),
        "{}",
        wrong.stdout
    );
    assert!(
        wrong.stderr.contains("Type RESTORE to continue"),
        "{}",
        wrong.stderr
    );
    assert_eq!(
        lnrs(&srv, &["measure", "get", "7"], None).await.code,
        3,
        "nothing was restored"
    );

    let restored = lnrs(
        &srv,
        &["snapshot", "restore", &before_delete],
        Some("RESTORE\n"),
    )
    .await
    .ok();
    let out = &restored.stdout;
    let measure_row = out
        .lines()
        .find(|l| l.starts_with("measure "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        measure_row.split_whitespace().collect::<Vec<_>>(),
        ["measure", "167", "168", "+1"],
        "{out}"
    );
    assert!(
        out.contains("event(s) after seq"),
        "what will be undone is shown: {out}"
    );
    assert!(
        out.contains("CHECK")
            && out.contains("RESULT")
            && out.contains("EXPECTED")
            && out.contains("ACTUAL")
            && out.contains("TIME"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("rolled back") && l.trim_end().ends_with("no")),
        "{out}"
    );
    assert!(
        restored.stderr.contains("restoring snapshot"),
        "progress is shown: {}",
        restored.stderr
    );
    lnrs(&srv, &["measure", "get", "7"], None).await.ok();

    let dry = lnrs(
        &srv,
        &[
            "snapshot",
            "retention",
            "--dry-run",
            "--keep-last",
            "1",
            "--json",
        ],
        None,
    )
    .await
    .ok()
    .json();
    assert!(dry["decisions"].as_array().unwrap().len() >= 3, "{dry}");
    assert_eq!(dry["bytes_freed"], 0);

    let declined = lnrs(&srv, &["snapshot", "delete", &manual], Some("n\n")).await;
    assert_eq!(declined.code, 7);
    lnrs(&srv, &["snapshot", "delete", &manual], Some("y\n"))
        .await
        .ok();
    assert_eq!(
        lnrs(&srv, &["snapshot", "show", &manual], None).await.code,
        3
    );
    s.stop().await;
}

/// Child-server flags the watch test uses: no reference load, a short drain.
const CHILD_FLAGS: [&str; 4] = [
    "--load-reference-data",
    "false",
    "--shutdown-drain-delay",
    "100ms",
];

async fn sigterm_and_wait(server: crate::common::ChildServer) {
    server.signal(libc::SIGTERM);
    let (st, _, _) = server.exit(Duration::from_secs(30)).await;
    assert!(st.success(), "{st:?}");
}

/// Collects the seqs `lnrs watch --json` prints until `head` is among them.
async fn seqs_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
    seen: &mut Vec<u64>,
    head: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains(&head) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(seq)) => seen.push(seq),
            Ok(None) => panic!("watch exited; printed {seen:?}"),
            Err(_) => panic!("watch did not print seq {head} in time; printed {seen:?}"),
        }
    }
}

async fn head(srv: &str) -> u64 {
    lnrs(srv, &["status", "--json"], None).await.ok().json()["event_head_seq"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_server_restart_with_no_gap_and_no_repeat() {
    let tmp = crate::common::data_dir_with_reference();
    let server =
        crate::common::ChildServer::start(tmp.path(), "127.0.0.1:0", &CHILD_FLAGS, &[]).await;
    let addr = server.addr.clone();
    let srv = format!("http://{addr}");
    for name in ["A", "B"] {
        lnrs(
            &srv,
            &[
                "habitat",
                "create",
                "--set",
                &format!("habitat=Before {name}"),
            ],
            None,
        )
        .await
        .ok();
    }

    let mut watch = Command::new(env!("CARGO_BIN_EXE_lnrs"))
        .args(["watch", "--from", "1", "--json", "--server", &srv])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lnrs watch");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut out = BufReader::new(watch.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            let e: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            let _ = tx.send(e["seq"].as_u64().unwrap());
        }
    });
    let stderr = watch.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            text.push_str(&l);
            text.push('\n');
        }
        text
    });

    let mut seen = Vec::new();
    seqs_until(&mut rx, &mut seen, head(&srv).await).await;
    lnrs(&srv, &["habitat", "create", "--set", "habitat=Live"], None)
        .await
        .ok();
    seqs_until(&mut rx, &mut seen, head(&srv).await).await;

    sigterm_and_wait(server).await;
    let restarted = Instant::now();
    // Changes committed while the watcher cannot reach any server (here through a server on
    // another port) must still be printed once it is back: it resumes from its position, it
    // does not just go live.
    let elsewhere =
        crate::common::ChildServer::start(tmp.path(), "127.0.0.1:0", &CHILD_FLAGS, &[]).await;
    let other = format!("http://{}", elsewhere.addr);
    for name in ["X", "Y"] {
        lnrs(
            &other,
            &[
                "habitat",
                "create",
                "--set",
                &format!("habitat=Away {name}"),
            ],
            None,
        )
        .await
        .ok();
    }
    sigterm_and_wait(elsewhere).await;
    // Same data dir, same port: the watcher only knows this address.
    let server = crate::common::ChildServer::start(tmp.path(), &addr, &CHILD_FLAGS, &[]).await;
    assert_eq!(server.addr, addr);
    for name in ["C", "D", "E"] {
        lnrs(
            &srv,
            &[
                "habitat",
                "create",
                "--set",
                &format!("habitat=After {name}"),
            ],
            None,
        )
        .await
        .ok();
    }
    let last = head(&srv).await;
    seqs_until(&mut rx, &mut seen, last).await;
    eprintln!(
        "watch caught up {:?} after the restart began",
        restarted.elapsed()
    );

    watch.start_kill().unwrap();
    let _ = watch.wait().await;
    let stderr = stderr.await.unwrap();
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every seq once, in order; watch stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("UNAVAILABLE (SERVER_SHUTTING_DOWN)"),
        "the shutdown signal was seen:\n{stderr}"
    );
    assert!(stderr.contains("resuming after seq"), "{stderr}");
    sigterm_and_wait(server).await;
}
