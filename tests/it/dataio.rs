//! [data-io] the users' real data in and out, end to end with the original's engine: DuckDB's
//! Python client of the 1.4 series (tests/tools/original_db.py, from the test venv) writes a
//! database in the original schema at the reference volumes with its legacy quirks; it is
//! imported through ImportDatabase (and again as the portal's CSV archive), and what the server
//! then holds — exported as a DuckDB file — is compared by Python, table by table and row by
//! row, with what Python reads from the same original file. CSV, Parquet and GeoJSON exports are
//! read back by Python too. Bad uploads get their reason and change nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use lnrs::pb;
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{assert_refused, data_dir_with_reference, test_config, TestServer};

/// Runs tests/tools/original_db.py with the venv's python; panics with its output on failure.
fn py(args: &[&str]) -> String {
    let python = crate::common::s3::venv().join("bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/original_db.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "original_db.py {args:?} failed:\n{text}"
    );
    text
}

/// An original-schema database (and its expected-import file) written by DuckDB 1.4.
fn original(dir: &Path, scale: u32) -> (PathBuf, Value) {
    let db = dir.join("original.duckdb");
    let expected = dir.join("expected.json");
    py(&[
        "make-db",
        db.to_str().unwrap(),
        "--expected",
        expected.to_str().unwrap(),
        "--scale",
        &scale.to_string(),
    ]);
    let e = serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
    (db, e)
}

fn data(ch: &Channel) -> pb::data_service_client::DataServiceClient<Channel> {
    pb::data_service_client::DataServiceClient::new(ch.clone())
}

/// Uploads `bytes` (options first, `declared` as the total) in 1 MiB pieces.
async fn import(
    ch: &Channel,
    bytes: &[u8],
    declared: u64,
    dry_run: bool,
) -> Result<pb::ImportDatabaseResponse, tonic::Status> {
    use pb::import_database_request::Part;
    let mut msgs = vec![pb::ImportDatabaseRequest {
        part: Some(Part::Options(pb::ImportOptions {
            dry_run,
            total_bytes: declared,
            file_name: "original.duckdb".into(),
            ..Default::default()
        })),
    }];
    msgs.extend(bytes.chunks(1 << 20).map(|c| pb::ImportDatabaseRequest {
        part: Some(Part::Data(c.to_vec())),
    }));
    data(ch)
        .import_database(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// Runs an export into `dir`; returns the files' names.
async fn export(
    ch: &Channel,
    format: pb::ExportFormat,
    scope: Option<pb::export_data_request::Scope>,
    dir: &Path,
) -> Vec<String> {
    use pb::export_data_response::Part;
    std::fs::create_dir_all(dir).unwrap();
    let mut stream = data(ch)
        .export_data(pb::ExportDataRequest {
            format: format as i32,
            scope,
            snapshot_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    let mut out: Option<(std::fs::File, pb::ExportFile, blake3::Hasher)> = None;
    let mut close = |o: Option<(std::fs::File, pb::ExportFile, blake3::Hasher)>| {
        if let Some((_, f, h)) = o {
            assert_eq!(h.finalize().to_hex().as_str(), f.blake3, "{}", f.name);
            names.push(f.name);
        }
    };
    let mut summary = false;
    while let Some(m) = stream.next().await {
        match m.unwrap().part.unwrap() {
            Part::File(f) => {
                close(out.take());
                let file = std::fs::File::create(dir.join(&f.name)).unwrap();
                out = Some((file, f, blake3::Hasher::new()));
            }
            Part::Data(d) => {
                let (file, _, h) = out.as_mut().unwrap();
                assert!(d.len() <= 1 << 20);
                file.write_all(&d).unwrap();
                h.update(&d);
            }
            Part::Summary(_) => summary = true,
        }
    }
    close(out.take());
    assert!(summary, "the export ends with its summary");
    names
}

/// The import report agrees with what the generator put in the file, table by table.
fn report_matches(r: &pb::ImportDatabaseResponse, expected: &Value) {
    let tables = expected["tables"].as_object().unwrap();
    assert!(!tables.is_empty(), "the generator described its tables");
    for (table, e) in tables {
        let t = r
            .tables
            .iter()
            .find(|t| t.table == *table)
            .unwrap_or_else(|| panic!("no report for {table}"));
        assert!(t.present, "{table}");
        assert_eq!(
            t.rows_read,
            e["rows_in_file"].as_u64().unwrap(),
            "{table} read"
        );
        assert_eq!(
            t.duplicates_collapsed,
            e["duplicates_collapsed"].as_u64().unwrap(),
            "{table} duplicates"
        );
        assert_eq!(
            t.rows_accepted,
            e["rows_after_import"].as_u64().unwrap(),
            "{table} kept"
        );
        let want: Vec<(u64, String)> = e["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["row"].as_u64().unwrap(),
                    x["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let got: Vec<(u64, String)> = t
            .rejected
            .iter()
            .map(|x| (x.row, x.reason.clone()))
            .collect();
        assert_eq!(got, want, "{table} rejected rows");
    }
    let mapg = r
        .tables
        .iter()
        .find(|t| t.table == "measure_area_priority_grant")
        .unwrap();
    assert!(
        mapg.notes.iter().any(|n| n.contains("without a grant")),
        "{:?}",
        mapg.notes
    );
}

async fn counts(ch: &Channel) -> Vec<(String, i64)> {
    crate::common::ops::status(ch)
        .await
        .table_rows
        .into_iter()
        .map(|t| (t.table, t.rows))
        .collect()
}

/// Imports `upload` (dry run first: nothing changes), then for real; the server then holds
/// exactly what Python reads from the original file, and every export reads back in Python.
async fn import_and_compare(upload: &Path, original: &Path, expected: &Value, work: &Path) {
    let s = TestServer::start().await;
    let bytes = std::fs::read(upload).unwrap();
    let before = counts(&s.channel).await;
    let dry = import(&s.channel, &bytes, bytes.len() as u64, true)
        .await
        .unwrap();
    report_matches(&dry, expected);
    assert!(dry.dry_run && !dry.imported);
    assert_eq!(
        counts(&s.channel).await,
        before,
        "a dry run changes nothing"
    );

    let r = import(&s.channel, &bytes, bytes.len() as u64, false)
        .await
        .unwrap();
    report_matches(&r, expected);
    let failed: Vec<_> = r
        .report
        .iter()
        .flat_map(|x| &x.checks)
        .filter(|c| !c.passed)
        .map(|c| (&c.name, &c.actual))
        .collect();
    assert!(
        r.imported && !r.rolled_back,
        "{}: {failed:?}",
        r.rollback_reason
    );
    assert!(r.report.as_ref().unwrap().passed);
    assert!(!r.safety_snapshot_id.is_empty() && !r.snapshot_id.is_empty());
    let ev = crate::common::event_at(&s.channel, r.event_seq).await;
    assert_eq!(ev.kind, pb::EventKind::Imported as i32);

    let db_dir = work.join("duckdb");
    export(&s.channel, pb::ExportFormat::Duckdb, None, &db_dir).await;
    let exported = db_dir.join("lnrs.duckdb");
    let e = work.join("expected.json");
    std::fs::write(&e, serde_json::to_vec(expected).unwrap()).unwrap();
    let out = py(&[
        "compare",
        original.to_str().unwrap(),
        exported.to_str().unwrap(),
        "--expected",
        e.to_str().unwrap(),
    ]);
    assert!(out.trim_end().ends_with("OK"), "{out}");

    let csv = work.join("csv");
    let files = export(&s.channel, pb::ExportFormat::Csv, None, &csv).await;
    assert!(files.contains(&"apmg_slim_vw.csv".to_string()), "{files:?}");
    py(&[
        "check-csv",
        csv.to_str().unwrap(),
        "--db",
        exported.to_str().unwrap(),
    ]);
    let parquet = work.join("parquet");
    export(&s.channel, pb::ExportFormat::Parquet, None, &parquet).await;
    py(&[
        "check-parquet",
        parquet.to_str().unwrap(),
        "--db",
        exported.to_str().unwrap(),
    ]);
    let geo = work.join("geojson");
    export(&s.channel, pb::ExportFormat::Geojson, None, &geo).await;
    py(&[
        "check-geojson",
        geo.join("areas.geojson").to_str().unwrap(),
        "--db",
        exported.to_str().unwrap(),
    ]);

    // The imported data works through the API: an area's geometry, MAPG rows without a grant
    // listed, a cascade across them and its undelete.
    // The first area the GeoJSON export gave polygons to: GetArea returns the same geometry.
    let features: Value =
        serde_json::from_slice(&std::fs::read(geo.join("areas.geojson")).unwrap()).unwrap();
    let shaped = features["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| !f["geometry"].is_null())
        .expect("some area has geometry");
    let area = pb::entity_service_client::EntityServiceClient::new(s.channel.clone())
        .get_area(pb::GetAreaRequest {
            area_id: shaped["properties"]["area_id"].as_i64().unwrap() as i32,
            include_geometry: true,
        })
        .await
        .unwrap()
        .into_inner();
    let g = area.geometry.unwrap();
    assert!(!g.wkb.is_empty() && g.wkb.len() == g.geom_ids.len());
    let parsed: Value = serde_json::from_str(&g.geojson).unwrap();
    assert_eq!(parsed, shaped["geometry"], "GetArea and the export agree");
    unfunded_rows_work(&s.channel).await;
    s.stop().await;
}

/// MAPG rows with a NULL grant (kept from the original) list as grant "", and a measure delete
/// cascading over them is undone by its undelete, row for row.
async fn unfunded_rows_work(ch: &Channel) {
    let mut entity = pb::entity_service_client::EntityServiceClient::new(ch.clone());
    let links = crate::common::all_pages(|token| {
        let mut e = entity.clone();
        async move {
            let r = e
                .list_links(pb::ListLinksRequest {
                    link_type: pb::LinkType::MeasureAreaPriorityGrant as i32,
                    page_size: 500,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (r.links, r.next_page_token)
        }
    })
    .await;
    let unfunded: Vec<_> = links.iter().filter(|l| l.grant_id.is_empty()).collect();
    assert!(!unfunded.is_empty(), "the NULL-grant rows are listed");
    let measure = unfunded[0].measure_id;
    let before = counts(ch).await;
    let d = entity
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: measure,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let outcome = d.outcome.unwrap();
    let removed = |table: &str| {
        outcome
            .rows_removed
            .iter()
            .find(|r| r.table == table)
            .map_or(0, |r| r.rows)
    };
    let unfunded_of_measure = unfunded.iter().filter(|l| l.measure_id == measure).count();
    assert!(
        removed("measure_area_priority_grant") >= unfunded_of_measure as i64,
        "the cascade removed the NULL-grant rows: {:?}",
        outcome.rows_removed
    );
    assert_ne!(counts(ch).await, before, "the delete removed rows");
    let seq = outcome.event_seq;
    entity
        .undelete(pb::UndeleteRequest {
            delete: Some(pb::undelete_request::Delete::EventSeq(seq)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(counts(ch).await, before, "the undelete put every row back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_duckdb_file_imports_with_every_row_python_reads() {
    let work = tempfile::tempdir().unwrap();
    let (db, expected) = original(work.path(), 1);
    import_and_compare(&db, &db, &expected, work.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_csv_archive_imports_the_same() {
    let work = tempfile::tempdir().unwrap();
    let (db, expected) = original(work.path(), 1);
    let zip = work.path().join("export.zip");
    py(&[
        "make-csv-zip",
        zip.to_str().unwrap(),
        "--from",
        db.to_str().unwrap(),
    ]);
    import_and_compare(&zip, &db, &expected, work.path()).await;
}

/// A ZIP with the given members.
fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_their_reason_and_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (db, _) = original(work.path(), 1);
    let good = std::fs::read(&db).unwrap();
    let dir = data_dir_with_reference();
    let mut cfg = test_config(dir.path());
    cfg.import_max_bytes = 32 << 20;
    cfg.import_max_unpacked_bytes = 8 << 20;
    let s = TestServer::start_with(cfg).await;
    let before = counts(&s.channel).await;
    let head = crate::common::ops::status(&s.channel).await.event_head_seq;
    let refused = |e: tonic::Status, code: Code, reason: &str| {
        assert_refused(&e, code, reason);
        assert!(
            !e.message().contains(&*dir.path().to_string_lossy()),
            "{e:?}"
        );
    };

    // Truncated: fewer bytes than declared.
    let e = import(
        &s.channel,
        &good[..good.len() / 2],
        good.len() as u64,
        false,
    )
    .await;
    refused(e.unwrap_err(), Code::InvalidArgument, "UPLOAD_TRUNCATED");
    // A database file cut short that says so: it does not open.
    let cut = &good[..good.len() / 2];
    let e = import(&s.channel, cut, cut.len() as u64, false).await;
    refused(e.unwrap_err(), Code::InvalidArgument, "NOT_LNRS_SCHEMA");
    // The wrong file type.
    let pdf = b"%PDF-1.7 not a database".to_vec();
    let e = import(&s.channel, &pdf, pdf.len() as u64, false).await;
    refused(
        e.unwrap_err(),
        Code::InvalidArgument,
        "UNSUPPORTED_FILE_TYPE",
    );
    // A database from an engine this server cannot read (DuckDB 0.7's storage version 39).
    let mut old = good.clone();
    old[12..20].copy_from_slice(&39u64.to_le_bytes());
    let e = import(&s.channel, &old, old.len() as u64, false).await;
    refused(
        e.unwrap_err(),
        Code::InvalidArgument,
        "UNSUPPORTED_ENGINE_VERSION",
    );
    // Oversize: from the declared size, before anything is stored.
    let e = import(&s.channel, b"x", (32 << 20) + 1, false).await;
    refused(e.unwrap_err(), Code::ResourceExhausted, "UPLOAD_TOO_LARGE");
    // An archive bomb: 64 MiB of zeros in a few KiB, past the unpack limit.
    let bomb = zip_of(&[("measure.csv", &vec![b'0'; 64 << 20])]);
    assert!(bomb.len() < 1 << 20);
    let e = import(&s.channel, &bomb, bomb.len() as u64, false).await;
    refused(e.unwrap_err(), Code::ResourceExhausted, "ARCHIVE_TOO_LARGE");
    // CSV with a missing column, an extra column, bad encoding.
    let habitat_ok = b"habitat_id;habitat\n1;Reedbed\n";
    for (csv, reason) in [
        (&b"habitat_id\n1\n"[..], "CSV_COLUMNS_MISMATCH"),
        (
            &b"habitat_id;habitat;colour\n1;Reedbed;green\n"[..],
            "CSV_COLUMNS_MISMATCH",
        ),
        (
            &b"habitat_id;habitat\n1;Reed\xff\xfebed\n"[..],
            "CSV_BAD_ENCODING",
        ),
        (
            &b"habitat_id;habitat\n1;Reedbed;extra\n"[..],
            "CSV_COLUMNS_MISMATCH",
        ),
    ] {
        let z = zip_of(&[
            ("habitat.csv", csv),
            (
                "area.csv",
                b"area_id;area_name;area_description;area_link;bng_hab_mgt;bng_hab_creation\n",
            ),
        ]);
        let e = import(&s.channel, &z, z.len() as u64, false).await;
        refused(e.unwrap_err(), Code::InvalidArgument, reason);
    }
    let z = zip_of(&[("habitat.csv", habitat_ok)]);
    assert!(
        import(&s.channel, &z, z.len() as u64, true).await.is_ok(),
        "the control passes"
    );

    // Cancelled midway: the client stops after half the bytes and drops the call.
    {
        use pb::import_database_request::Part;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = data(&s.channel);
        let call = tokio::spawn(async move {
            client
                .import_database(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        tx.send(pb::ImportDatabaseRequest {
            part: Some(Part::Options(pb::ImportOptions {
                total_bytes: good.len() as u64,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        // Half the file, in pieces under the message size limit; the call stays open.
        for piece in good[..good.len() / 2].chunks(1 << 20) {
            tx.send(pb::ImportDatabaseRequest {
                part: Some(Part::Data(piece.to_vec())),
            })
            .await
            .unwrap();
        }
        // Only the upload's own files: the store's tmp also holds other temp files (blocks
        // of a capture ahead, manifests).
        let tmp = dir.path().join("snapshots/tmp");
        let staged = || {
            std::fs::read_dir(&tmp)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().contains("import-upload"))
                        .count()
                })
                .unwrap_or(0)
        };
        crate::common::ops::eventually(
            "the upload is staged",
            std::time::Duration::from_secs(30),
            || async { staged() > 0 },
        )
        .await;
        call.abort();
        drop(tx);
        crate::common::ops::eventually(
            "the staging file is gone",
            std::time::Duration::from_secs(30),
            || async { staged() == 0 },
        )
        .await;
    }

    assert_eq!(counts(&s.channel).await, before, "nothing changed");
    assert_eq!(
        crate::common::ops::status(&s.channel).await.event_head_seq,
        head
    );
    s.stop().await;
}
