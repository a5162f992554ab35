//! Bad input at scale: a descriptor-driven fuzzer for every RPC of every lnrs.v1 service, and
//! one regression test per defect it (or issue 11, item 8) found; each failed before its fix.
//!
//! Requests are built from the descriptor set the server serves (prost-reflect
//! `DynamicMessage`): arbitrary strings (empty, up to just under — and now and then just over —
//! the message limit, control characters, NUL, combining marks, RTL, emoji, escaped lone
//! surrogates, SQL, paths), integers at their limits, unknown enum values, missing fields,
//! empty and huge repeated fields. About a third are "plausible" (values that pass the
//! domain's rules, existing ids, links of the right shape) and every request mixes in real
//! ids (entities, links, snapshots from ListSnapshots, page tokens from real responses), so
//! requests reach the use cases, not only validation. 15 % are then broken on the wire
//! (invalid UTF-8, truncated, wrong or reserved wire types, field 0, varint overflow,
//! garbage). They go one at a time through a generic tonic client with a raw-bytes codec to
//! a real in-process server; WatchEvents reads a few items with a short deadline.
//!
//! Checked for every request: no INTERNAL / UNKNOWN / DATA_LOSS; every error carries an
//! ErrorInfo (domain lnrs.v1, a reason); no error and no response shows the data directory, and no error shows SQL or engine text the request did not contain itself;
//! a rejected mutation leaves the event log head where it was (every commit appends an event
//! in its transaction, so an unchanged head proves nothing committed); a response decodes.
//! After every batch: health SERVING for every service, a read and a write succeed.
//!
//! `LNRS_FUZZ_SEED` (default: random, printed) and `LNRS_FUZZ_REQUESTS` (default
//! [`DEFAULT_REQUESTS`], also stopped by [`DEFAULT_BUDGET`]) reproduce a run; a failure prints
//! the seed and each bad request (`LNRS_FUZZ_DUMP=<dir>` also writes their bytes there).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lnrs::pb;
use prost::bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    MethodDescriptor, ReflectMessage, Value,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::common::{assert_refused, reason, test_config, TestServer};
use lnrs::domain::validate::Rule;
use lnrs::domain::EntityKind;

/// Requests per `cargo test` run: about a minute on two cores.
const DEFAULT_REQUESTS: usize = 3000;
/// Wall-time budget of the default run.
const DEFAULT_BUDGET: Duration = Duration::from_secs(90);
/// Requests between health / canary checks and refreshes of the known-good ids.
const BATCH: usize = 50;
/// Longest any single request may take before the run counts it as hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Real restores per run (each is a full safety snapshot + assemble + verify + swap).
const MAX_RESTORES: usize = 2;
/// The server's message limit in these tests (the default).
const MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// A tonic codec over raw bytes: the fuzzer builds and breaks the encoded message itself.

#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// What one call gave: the response messages (one for unary) or the status it ended with.
enum Outcome {
    Ok(Vec<Vec<u8>>),
    Err(Status),
}

/// Sends `body` to `path`; a server-streaming call reads a few items with a short deadline.
async fn call(channel: &Channel, path: &str, body: Vec<u8>, streaming: bool) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        return Outcome::Err(Status::unavailable(format!("client not ready: {e}")));
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    let request = tonic::Request::new(body);
    if !streaming {
        return match grpc.unary(request, path, RawCodec).await {
            Ok(r) => Outcome::Ok(vec![r.into_inner()]),
            Err(s) => Outcome::Err(s),
        };
    }
    let mut stream = match grpc.server_streaming(request, path, RawCodec).await {
        Ok(r) => r.into_inner(),
        Err(s) => return Outcome::Err(s),
    };
    let mut items = Vec::new();
    while items.len() < 3 {
        match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            Ok(Some(Ok(m))) => items.push(m),
            Ok(Some(Err(s))) => return Outcome::Err(s),
            Ok(None) | Err(_) => break,
        }
    }
    Outcome::Ok(items)
}

// ---------------------------------------------------------------------------------------------
// Values.

/// Text a client could send: empty, huge, control characters, NUL, combining marks, RTL,
/// emoji, escaped lone surrogates, SQL, paths, numbers, plus real enum-like values.
fn text_palette() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "Fen",
        " padded ",
        "\u{0}",
        "a\u{0}b",
        "\u{7}\u{8}\u{1b}[31mred\u{1b}[0m",
        "line\r\nbreak\ttab",
        "\u{7f}\u{80}\u{9f}",
        "\u{202e}gnp.exe",
        "\u{200f}مرحبا\u{200e}",
        "שלום",
        "🦔🌳",
        "👩\u{200d}👩\u{200d}👧\u{200d}👦",
        "\u{fffd}",
        "\u{feff}BOM",
        "\\uD800",
        "\\udfff\\ud800",
        "'; DROP TABLE measure; --",
        "1 OR 1=1",
        "' OR ''='",
        "SELECT * FROM measure WHERE measure_id = 1",
        "%",
        "_",
        "\\",
        "\"",
        "../../etc/passwd",
        "/tmp/lnrs.duckdb",
        "snapshots/../lnrs.duckdb",
        "C:\\Windows\\system32",
        "0",
        "-1",
        "9223372036854775808",
        "1e309",
        "NaN",
        "null",
        "Core (BNG)",
        "Supplementary",
        "Mapped",
        "Unmapped",
        "Woodland",
        "All habitats",
        "Birds",
        "Bird",
        "https://example.org/guidance",
        "http://",
        "javascript:alert(1)",
        "measure",
        "measure desc",
        "measure_id",
        "habitat asc, habitat desc",
        "measure sideways",
        "env",
        "UPPER",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("e{}", "\u{301}".repeat(200)));
    v.push("a".repeat(129));
    v.push("é".repeat(8 * 1024 + 1));
    v.push("x".repeat(16 * 1024 + 1));
    v.push("é".repeat(4));
    v
}

/// Integers at and around the limits of each width.
fn i64_palette() -> Vec<i64> {
    vec![
        0,
        -1,
        1,
        2,
        7,
        i32::MIN as i64,
        i32::MAX as i64,
        i32::MIN as i64 - 1,
        i32::MAX as i64 + 1,
        i64::MIN,
        i64::MAX,
        253_402_300_800, // year 10000
        -62_135_596_801, // before year 1
    ]
}

fn u64_palette() -> Vec<u64> {
    vec![
        0,
        1,
        2,
        u32::MAX as u64,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX - 1,
        u64::MAX,
    ]
}

/// What the server holds that a request can name: refreshed after every batch.
#[derive(Default)]
struct Known {
    /// Integer ids by field name (measure_id, area_id, …, measure_type_id, …).
    ids: HashMap<&'static str, Vec<i32>>,
    grant_ids: Vec<String>,
    snapshot_ids: Vec<String>,
    /// Page tokens real responses returned.
    page_tokens: Vec<String>,
    /// Some existing links of each kind.
    links: Vec<pb::Link>,
    head: u64,
}

impl Known {
    async fn refresh(&mut self, channel: &Channel) {
        let mut e = pb::entity_service_client::EntityServiceClient::new(channel.clone());
        macro_rules! ids {
            ($call:ident, $req:ident, $items:ident, $id:ident) => {{
                let r = e
                    .$call(pb::$req {
                        page_size: 200,
                        ..Default::default()
                    })
                    .await
                    .expect(stringify!($call))
                    .into_inner();
                if !r.next_page_token.is_empty() {
                    self.page_tokens.push(r.next_page_token.clone());
                }
                r.$items.iter().map(|m| m.$id.clone()).collect::<Vec<_>>()
            }};
        }
        self.ids.insert(
            "measure_id",
            ids!(list_measures, ListMeasuresRequest, measures, measure_id),
        );
        self.ids.insert(
            "area_id",
            ids!(list_areas, ListAreasRequest, areas, area_id),
        );
        self.ids.insert(
            "priority_id",
            ids!(
                list_priorities,
                ListPrioritiesRequest,
                priorities,
                priority_id
            ),
        );
        self.ids.insert(
            "species_id",
            ids!(list_species, ListSpeciesRequest, species, species_id),
        );
        self.ids.insert(
            "habitat_id",
            ids!(list_habitats, ListHabitatsRequest, habitats, habitat_id),
        );
        self.grant_ids = ids!(list_grants, ListGrantsRequest, grants, grant_id);
        let types = e
            .list_measure_types(pb::ListMeasureTypesRequest {})
            .await
            .expect("types")
            .into_inner();
        self.ids.insert(
            "measure_type_id",
            types
                .measure_types
                .iter()
                .map(|t| t.measure_type_id)
                .collect(),
        );
        let st = e
            .list_stakeholders(pb::ListStakeholdersRequest {})
            .await
            .expect("stakeholders")
            .into_inner();
        self.ids.insert(
            "stakeholder_id",
            st.stakeholders.iter().map(|t| t.stakeholder_id).collect(),
        );
        let b = e
            .list_benefits(pb::ListBenefitsRequest {})
            .await
            .expect("benefits")
            .into_inner();
        self.ids.insert(
            "benefit_id",
            b.benefits.iter().map(|t| t.benefit_id).collect(),
        );
        self.links.clear();
        for t in [
            pb::LinkType::MeasureAreaPriority,
            pb::LinkType::MeasureAreaPriorityGrant,
            pb::LinkType::SpeciesAreaPriority,
            pb::LinkType::HabitatCreationArea,
            pb::LinkType::HabitatManagementArea,
            pb::LinkType::MeasureSpecies,
        ] {
            let links = e
                .list_links(pb::ListLinksRequest {
                    link_type: t as i32,
                    page_size: 5,
                    ..Default::default()
                })
                .await
                .expect("links")
                .into_inner();
            if !links.next_page_token.is_empty() {
                self.page_tokens.push(links.next_page_token);
            }
            self.links.extend(links.links);
        }
        let snaps = pb::snapshot_service_client::SnapshotServiceClient::new(channel.clone())
            .list_snapshots(pb::ListSnapshotsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("snapshots")
            .into_inner();
        self.snapshot_ids = snaps.snapshots.into_iter().map(|s| s.snapshot_id).collect();
        if !snaps.next_page_token.is_empty() {
            self.page_tokens.push(snaps.next_page_token);
        }
        self.head = head(channel).await;
        let n = self.page_tokens.len();
        if n > 50 {
            self.page_tokens.drain(..n - 50);
        }
    }

    /// An existing integer id for a field named like `measure_id` / `measure_ids`.
    fn int_id(&self, field: &str, rng: &mut StdRng) -> Option<i32> {
        let key = field.strip_suffix('s').unwrap_or(field);
        let ids = self.ids.get(key)?;
        (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())])
    }
}

/// The event log head.
async fn head(channel: &Channel) -> u64 {
    pb::event_service_client::EventServiceClient::new(channel.clone())
        .list_events(pb::ListEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .head_seq
}

/// Builds one request message.
struct Gen<'a> {
    rng: StdRng,
    known: &'a Known,
    texts: &'a [String],
    /// Request ids this run sent (reused sometimes: replay / REQUEST_ID_REUSED paths).
    request_ids: Vec<String>,
    counter: u64,
    /// A real restore may be asked for (confirm = snapshot id of an existing snapshot).
    allow_restore: bool,
    /// Build a request that could succeed (valid values by the domain's rules, existing ids,
    /// few missing fields), so the fuzzer reaches past validation into the use cases.
    plausible: bool,
}

/// The entity a List request message lists.
fn listed_entity(request: &str) -> Option<EntityKind> {
    Some(match request {
        "ListMeasuresRequest" => EntityKind::Measure,
        "ListAreasRequest" => EntityKind::Area,
        "ListPrioritiesRequest" => EntityKind::Priority,
        "ListSpeciesRequest" => EntityKind::Species,
        "ListHabitatsRequest" => EntityKind::Habitat,
        "ListGrantsRequest" => EntityKind::Grant,
        _ => return None,
    })
}

/// The rule of the entity column called `name`, if any entity has one.
fn column_rule(name: &str) -> Option<Rule> {
    EntityKind::ALL
        .iter()
        .flat_map(|k| k.def().columns.iter())
        .find(|c| c.name == name)
        .map(|c| c.rule)
}

fn pick<'v, T>(rng: &mut StdRng, v: &'v [T]) -> &'v T {
    &v[rng.random_range(0..v.len())]
}

impl Gen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A value that passes validation for a field of this name.
    fn plausible_text(&mut self, field: &FieldDescriptor) -> Option<String> {
        let name = field.name();
        self.counter += 1;
        let n = self.counter;
        if let Some(rule) = column_rule(name) {
            return Some(match rule {
                Rule::OneOf(allowed) => pick(&mut self.rng, allowed).to_string(),
                Rule::Theme => pick(&mut self.rng, lnrs::domain::entity::THEMES).to_string(),
                Rule::Url => format!("https://example.org/fuzz/{n}"),
                Rule::Integer => n.to_string(),
                Rule::Text => format!("Fuzz {name} {n}"),
            });
        }
        let k = self.known;
        Some(match name {
            "grant_id" if self.chance(0.5) => format!("FZ-{n}"),
            "grant_id" | "entity_id" if !k.grant_ids.is_empty() => {
                pick(&mut self.rng, &k.grant_ids).clone()
            }
            "description" => format!("fuzz {n}"),
            "search" => pick(&mut self.rng, &["", "a", "wood", "BIRD"]).to_string(),
            "order_by" => {
                let kind = listed_entity(field.parent_message().name())
                    .unwrap_or_else(|| *pick(&mut self.rng, &EntityKind::ALL));
                let col = pick(&mut self.rng, kind.def().orderable);
                format!("{col}{}", pick(&mut self.rng, &["", " desc", " asc"]))
            }
            "page_token" if !k.page_tokens.is_empty() && self.chance(0.5) => {
                pick(&mut self.rng, &k.page_tokens).clone()
            }
            "page_token" => String::new(),
            _ => return None,
        })
    }

    fn text(&mut self, field: &FieldDescriptor) -> String {
        let name = field.name();
        if self.plausible && name != "request_id" {
            if let Some(t) = self.plausible_text(field) {
                return t;
            }
        }
        let k = self.known;
        let r = self.rng.random_range(0..100);
        match name {
            "request_id" => {
                return match r {
                    0..=49 => String::new(),
                    50..=79 => {
                        self.counter += 1;
                        let id = format!("fz-{}", self.counter);
                        self.request_ids.push(id.clone());
                        id
                    }
                    80..=89 if !self.request_ids.is_empty() => {
                        pick(&mut self.rng, &self.request_ids).clone()
                    }
                    _ => pick(&mut self.rng, self.texts).clone(),
                }
            }
            "snapshot_id" | "confirm_snapshot_id" if r < 60 && !k.snapshot_ids.is_empty() => {
                let id = pick(&mut self.rng, &k.snapshot_ids).clone();
                return if r < 50 {
                    id
                } else {
                    mangle(&mut self.rng, &id)
                };
            }
            "grant_id" | "entity_id" if r < 50 && !k.grant_ids.is_empty() => {
                return pick(&mut self.rng, &k.grant_ids).clone();
            }
            "page_token" if r < 50 && !k.page_tokens.is_empty() => {
                let t = pick(&mut self.rng, &k.page_tokens).clone();
                return if r < 30 { t } else { mangle(&mut self.rng, &t) };
            }
            "table" if r < 50 => {
                let tables = lnrs::domain::tables::USER_TABLES;
                return pick(&mut self.rng, tables).name.to_string();
            }
            "entity_type" | "entity_types" if r < 50 => {
                return pick(
                    &mut self.rng,
                    &[
                        "measure",
                        "area",
                        "grant",
                        "measure_area_priority",
                        "snapshot",
                        "nope",
                    ],
                )
                .to_string();
            }
            _ => {}
        }
        match r {
            0..=2 => {
                // Huge: just under the message limit (or, rarely, just over it).
                let n = if self.chance(0.2) {
                    MESSAGE_LIMIT + 16
                } else {
                    MESSAGE_LIMIT - 4096
                };
                "z".repeat(n)
            }
            3..=7 => {
                // Random code points (no surrogates: a Rust string cannot hold one).
                let n = self.rng.random_range(1..40);
                (0..n)
                    .map(|_| {
                        char::from_u32(self.rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}')
                    })
                    .collect()
            }
            _ => pick(&mut self.rng, self.texts).clone(),
        }
    }

    fn int(&mut self, field: &FieldDescriptor) -> i64 {
        let is_id = field.name().ends_with("_id") || field.name().ends_with("_ids");
        if self.plausible && !is_id {
            return self.rng.random_range(0..20);
        }
        if is_id && (self.plausible || self.chance(0.6)) {
            if let Some(id) = self.known.int_id(field.name(), &mut self.rng) {
                return id as i64;
            }
        }
        match self.rng.random_range(0..10) {
            0..=5 => *pick(&mut self.rng, &i64_palette()),
            _ => self.rng.random_range(-5..200),
        }
    }

    fn uint(&mut self, field: &FieldDescriptor) -> u64 {
        if self.plausible && !field.name().ends_with("seq") {
            return self.rng.random_range(0..20);
        }
        if field.name().ends_with("seq") && (self.plausible || self.chance(0.5)) {
            let h = self.known.head;
            return *pick(&mut self.rng, &[0, h.saturating_sub(1), h, h + 1, h / 2]);
        }
        match self.rng.random_range(0..10) {
            0..=5 => *pick(&mut self.rng, &u64_palette()),
            _ => self.rng.random_range(0..100),
        }
    }

    fn scalar(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        match field.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                Value::I32(self.int(field).clamp(i32::MIN as i64, i32::MAX as i64) as i32)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.int(field)),
            Kind::Uint32 | Kind::Fixed32 => {
                Value::U32(self.uint(field).min(u32::MAX as u64) as u32)
            }
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.uint(field)),
            Kind::Float => Value::F32(*pick(&mut self.rng, &[0.0, -1.0, f32::NAN, f32::INFINITY])),
            Kind::Double => Value::F64(*pick(&mut self.rng, &[0.0, -1.0, f64::NAN, f64::MAX])),
            Kind::Bool => Value::Bool(self.chance(0.5)),
            Kind::String => Value::String(self.text(field)),
            Kind::Bytes => Value::Bytes(self.text(field).into_bytes().into()),
            Kind::Enum(e) => {
                let known: Vec<i32> = e.values().map(|v| v.number()).collect();
                let valid: Vec<i32> = known.iter().copied().filter(|n| *n != 0).collect();
                Value::EnumNumber(if self.plausible && !valid.is_empty() {
                    *pick(&mut self.rng, &valid)
                } else if self.chance(0.75) {
                    *pick(&mut self.rng, &known)
                } else {
                    *pick(
                        &mut self.rng,
                        &[-1, 99, i32::MIN, i32::MAX, known.len() as i32],
                    )
                })
            }
            Kind::Message(m) => Value::Message(self.message(&m, depth + 1)),
        }
    }

    fn special(&mut self, m: &MessageDescriptor, depth: usize) -> Option<DynamicMessage> {
        let full = m.full_name();
        let mut msg = DynamicMessage::new(m.clone());
        match full {
            "google.protobuf.Timestamp" | "google.protobuf.Duration" if self.plausible => {
                let seconds = if full.ends_with("Timestamp") {
                    chrono::Utc::now().timestamp() + self.rng.random_range(-3600..3600)
                } else {
                    self.rng.random_range(1..3600)
                };
                msg.set_field_by_name("seconds", Value::I64(seconds));
                Some(msg)
            }
            "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
                let seconds = if self.chance(0.5) {
                    self.rng.random_range(-10..100_000)
                } else {
                    *pick(&mut self.rng, &i64_palette())
                };
                let nanos = *pick(
                    &mut self.rng,
                    &[0, 1, -1, 999_999_999, 1_000_000_000, i32::MAX, i32::MIN],
                );
                msg.set_field_by_name("seconds", Value::I64(seconds));
                msg.set_field_by_name("nanos", Value::I32(nanos));
                Some(msg)
            }
            "google.protobuf.FieldMask" => {
                let n = self.rng.random_range(0..4);
                let paths: Vec<Value> = (0..n)
                    .map(|_| {
                        Value::String(if self.chance(0.6) {
                            let kind = *pick(&mut self.rng, &EntityKind::ALL);
                            let cols = kind.def().columns;
                            pick(&mut self.rng, cols).name.to_string()
                        } else {
                            pick(&mut self.rng, self.texts).clone()
                        })
                    })
                    .collect();
                msg.set_field_by_name("paths", Value::List(paths));
                Some(msg)
            }
            _ if depth > 3 => Some(msg),
            _ => None,
        }
    }

    fn message(&mut self, m: &MessageDescriptor, depth: usize) -> DynamicMessage {
        if let Some(msg) = self.special(m, depth) {
            return msg;
        }
        let mut msg = DynamicMessage::new(m.clone());
        // One member (or none) of each real oneof.
        let mut chosen = Vec::new();
        for o in m.oneofs().filter(|o| !o.is_synthetic()) {
            let fields: Vec<FieldDescriptor> = o.fields().collect();
            if self.chance(0.9) {
                chosen.push(pick(&mut self.rng, &fields).number());
            }
        }
        for f in m.fields() {
            if let Some(o) = f.containing_oneof() {
                if !o.is_synthetic() && !chosen.contains(&f.number()) {
                    continue;
                }
            }
            if self.chance(if self.plausible { 0.05 } else { 0.2 }) {
                continue; // missing field
            }
            let v = if f.is_map() {
                self.map(&f, depth)
            } else if f.is_list() {
                self.list(&f, depth)
            } else {
                self.scalar(&f, depth)
            };
            msg.set_field(&f, v);
        }
        self.pair_restore_confirmation(&mut msg);
        if self.plausible {
            self.fit_link(&mut msg);
        }
        msg
    }

    /// A link (or a ListLinks filter) names exactly its type's ids: an existing link half of
    /// the time, otherwise the generated ids with the ones the type has not cleared.
    fn fit_link(&mut self, msg: &mut DynamicMessage) {
        let name = msg.descriptor().full_name().to_string();
        if name == "lnrs.v1.Link" && !self.known.links.is_empty() && self.chance(0.5) {
            let link = pick(&mut self.rng, &self.known.links).encode_to_vec();
            *msg = DynamicMessage::decode(msg.descriptor(), link.as_slice()).expect("a link");
            return;
        }
        if name != "lnrs.v1.Link" && name != "lnrs.v1.ListLinksRequest" {
            return;
        }
        let link_type = msg
            .get_field_by_name("link_type")
            .and_then(|v| v.as_enum_number())
            .unwrap_or_default();
        let Ok(kind) = lnrs::service::convert::link_kind_in(link_type) else {
            return;
        };
        let ids = [
            "measure_id",
            "area_id",
            "priority_id",
            "species_id",
            "habitat_id",
            "grant_id",
        ];
        for id in ids {
            let wanted = kind.columns().iter().any(|c| c.name == id);
            if !wanted || (name != "lnrs.v1.Link" && self.chance(0.5)) {
                msg.clear_field_by_name(id);
            }
        }
    }

    /// RestoreSnapshot needs confirm_snapshot_id = snapshot_id: make that so now and then
    /// (a real restore, bounded per run), and otherwise keep them apart.
    fn pair_restore_confirmation(&mut self, msg: &mut DynamicMessage) {
        if msg.descriptor().full_name() != "lnrs.v1.RestoreSnapshotRequest" {
            return;
        }
        let id = msg
            .get_field_by_name("snapshot_id")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let confirm = if self.allow_restore && self.chance(0.3) {
            id
        } else {
            format!("{id}-not-confirmed")
        };
        msg.set_field_by_name("confirm_snapshot_id", Value::String(confirm));
    }

    fn list(&mut self, f: &FieldDescriptor, depth: usize) -> Value {
        let n = match self.rng.random_range(0..100) {
            _ if self.plausible => self.rng.random_range(0..4),
            0..=29 => 0,
            30..=89 => self.rng.random_range(1..4),
            _ => match f.kind() {
                Kind::Message(_) | Kind::String => self.rng.random_range(4..200),
                _ => self.rng.random_range(4..20_000),
            },
        };
        Value::List((0..n).map(|_| self.scalar(f, depth)).collect())
    }

    fn map(&mut self, f: &FieldDescriptor, depth: usize) -> Value {
        let Kind::Message(entry) = f.kind() else {
            unreachable!("a map field is a message of entries")
        };
        let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        if self.plausible {
            let mut map = HashMap::new();
            if self.chance(0.5) {
                map.insert(MapKey::String("env".into()), Value::String("fuzz".into()));
            }
            return Value::Map(map);
        }
        let n = match self.rng.random_range(0..10) {
            0..=2 => 0,
            3..=8 => self.rng.random_range(1..4),
            _ => self.rng.random_range(30..60),
        };
        let mut map = HashMap::new();
        for i in 0..n {
            let key = match self.rng.random_range(0..3) {
                0 => format!("k{i}"),
                1 => pick(&mut self.rng, &["env", "a-b.c_1", "team", "x"]).to_string(),
                _ => self.text(&kf),
            };
            map.insert(MapKey::String(key), self.scalar(&vf, depth));
        }
        Value::Map(map)
    }
}

/// A real value with one character changed, cut short or doubled.
fn mangle(rng: &mut StdRng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return "é".into();
    }
    match rng.random_range(0..4) {
        0 => {
            let i = rng.random_range(0..chars.len());
            chars[i] = *pick(rng, &['0', 'f', 'é', '\u{0}', 'Z', '-']);
            chars.into_iter().collect()
        }
        1 => chars[..rng.random_range(0..chars.len())].iter().collect(),
        2 => format!("{s}{s}"),
        _ => format!("{s}é"),
    }
}

// ---------------------------------------------------------------------------------------------
// Faults on the wire.

/// How a request was broken after encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    InvalidUtf8,
    Truncated,
    WrongWireType,
    ReservedWireType,
    FieldZero,
    VarintOverflow,
    Garbage,
}

/// Byte sequences that are not UTF-8: invalid bytes, a truncated sequence, an encoded
/// surrogate, a stray continuation byte.
const BAD_UTF8: &[&[u8]] = &[
    &[0xff, 0xfe],
    &[0xc3, 0x28],
    &[0xed, 0xa0, 0x80],
    &[b'a', 0x80],
];

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire as u64, out);
}

/// The wire type a field's values are encoded with.
fn wire_type(f: &FieldDescriptor) -> u8 {
    match f.kind() {
        _ if f.is_list() && !matches!(f.kind(), Kind::String | Kind::Bytes | Kind::Message(_)) => 2,
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        Kind::String | Kind::Bytes | Kind::Message(_) => 2,
        _ => 0,
    }
}

/// Breaks `bytes` (an encoded `desc`) with one fault; returns the fault actually applied.
fn break_wire(rng: &mut StdRng, desc: &MessageDescriptor, bytes: &mut Vec<u8>) -> Fault {
    let strings: Vec<FieldDescriptor> =
        desc.fields().filter(|f| f.kind() == Kind::String).collect();
    let fields: Vec<FieldDescriptor> = desc.fields().collect();
    let fault = match rng.random_range(0..7) {
        0 if !strings.is_empty() => Fault::InvalidUtf8,
        1 if bytes.len() > 1 => Fault::Truncated,
        2 if !fields.is_empty() => Fault::WrongWireType,
        3 => Fault::ReservedWireType,
        4 => Fault::FieldZero,
        5 => Fault::VarintOverflow,
        _ => Fault::Garbage,
    };
    match fault {
        Fault::None => {}
        Fault::InvalidUtf8 => {
            let f = pick(rng, &strings);
            let bad = *pick(rng, BAD_UTF8);
            key(f.number(), 2, bytes);
            varint(bad.len() as u64, bytes);
            bytes.extend_from_slice(bad);
        }
        Fault::Truncated => bytes.truncate(rng.random_range(1..bytes.len())),
        Fault::WrongWireType => {
            let f = pick(rng, &fields);
            // 1 (64-bit) and 5 (32-bit) are wrong for every field here except fixed/float ones.
            let wire = match wire_type(f) {
                0 => 5,
                1 => 5,
                5 => 1,
                _ => 0,
            };
            key(f.number(), wire, bytes);
            match wire {
                0 => varint(1, bytes),
                1 => bytes.extend_from_slice(&[0; 8]),
                _ => bytes.extend_from_slice(&[0; 4]),
            }
        }
        Fault::ReservedWireType => key(rng.random_range(1..20), *pick(rng, &[3, 4, 6, 7]), bytes),
        Fault::FieldZero => {
            bytes.push(0x00);
            bytes.push(0x01);
        }
        Fault::VarintOverflow => {
            key(1, 0, bytes);
            bytes.extend_from_slice(&[0xff; 11]);
        }
        Fault::Garbage => {
            let n = rng.random_range(1..64);
            *bytes = (0..n).map(|_| rng.random()).collect();
        }
    }
    fault
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// SQL and engine text that must never reach a client (unless the request carried it).
const SQL_MARKERS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "DELETE FROM",
    " FROM ",
    " WHERE ",
    "CREATE TABLE",
    "ATTACH ",
    "Binder Error",
    "Catalog Error",
    "Parser Error",
    "Constraint Error",
    "Conversion Error",
    "Invalid Input Error",
    "TransactionContext Error",
    "IO Error",
    "duckdb",
];

/// Every client-visible text of an error: message, ErrorInfo metadata, violations, resource
/// info, and the response metadata.
fn visible_text(s: &Status) -> String {
    let mut out = vec![s.message().to_string()];
    let d = s.get_error_details();
    if let Some(i) = d.error_info() {
        out.push(i.reason.clone());
        out.extend(i.metadata.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if let Some(b) = d.bad_request() {
        out.extend(
            b.field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description)),
        );
    }
    if let Some(r) = d.resource_info() {
        out.push(format!(
            "{} {} {}",
            r.resource_type, r.resource_name, r.description
        ));
    }
    for kv in s.metadata().iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            if k.as_str() != "grpc-status-details-bin" {
                out.push(format!("{}={}", k.as_str(), v.to_str().unwrap_or_default()));
            }
        }
    }
    out.join("\n")
}

/// What is wrong with an error status, if anything.
fn status_problems(s: &Status, request: &[u8], data_dir: &str) -> Vec<String> {
    let mut p = Vec::new();
    if matches!(s.code(), Code::Internal | Code::Unknown | Code::DataLoss) {
        p.push(format!("code {:?}", s.code()));
    }
    match s.get_error_details().error_info() {
        None => p.push("no ErrorInfo".into()),
        Some(i) if i.domain != lnrs::error::ERROR_DOMAIN => {
            p.push(format!("ErrorInfo domain {:?}", i.domain))
        }
        Some(i) if i.reason.is_empty() => p.push("ErrorInfo without a reason".into()),
        Some(_) => {}
    }
    let text = visible_text(s);
    let sent = String::from_utf8_lossy(request);
    if text.contains(data_dir) {
        p.push("shows the data directory".into());
    }
    for m in SQL_MARKERS {
        if text.contains(m) && !sent.contains(m) {
            p.push(format!("shows SQL/engine text {m:?}"));
        }
    }
    p
}

/// Whether an RPC may change data (its rejection must then change nothing).
fn mutates(method: &MethodDescriptor) -> bool {
    let n = method.name();
    [
        "Create",
        "Update",
        "Delete",
        "Batch",
        "Restore",
        "ApplyRetention",
    ]
    .iter()
    .any(|p| n.starts_with(p))
}

/// One bad outcome, with what reproduces it.
struct Violation {
    index: usize,
    rpc: String,
    fault: Fault,
    problems: Vec<String>,
    status: String,
    request: String,
}

/// The transport errors behind a status tonic made itself (no ErrorInfo), e.g. an HTTP/2 reset.
fn cause_chain(s: &Status) -> String {
    let mut out = String::new();
    let mut next: Option<&dyn std::error::Error> = std::error::Error::source(s);
    while let Some(e) = next {
        out.push_str(&format!(" ← {e:?}"));
        next = e.source();
    }
    out
}

fn show_request(msg: &DynamicMessage, bytes: &[u8]) -> String {
    let mut dbg = format!("{msg:?}");
    if dbg.len() > 600 {
        let mut end = 600;
        while !dbg.is_char_boundary(end) {
            end -= 1;
        }
        dbg.truncate(end);
        dbg.push('…');
    }
    let hex: String = bytes.iter().take(96).map(|b| format!("{b:02x}")).collect();
    format!("{dbg}\n      wire ({} bytes): {hex}", bytes.len())
}

/// Health SERVING for the server and each service; a read and a write succeed.
async fn alive(channel: &Channel) -> Result<(), String> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "lnrs.v1.EntityService",
        "lnrs.v1.SnapshotService",
        "lnrs.v1.EventService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map_err(|s| format!("health {service:?}: {s:?}"))?;
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        if r.into_inner().status != serving {
            return Err(format!("health {service:?} is not SERVING"));
        }
    }
    pb::snapshot_service_client::SnapshotServiceClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| format!("GetStatus: {s:?}"))?;
    pb::entity_service_client::EntityServiceClient::new(channel.clone())
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: 0,
                habitat: "Fuzz canary".into(),
            }),
            request_id: String::new(),
        })
        .await
        .map_err(|s| format!("canary write: {s:?}"))?;
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_survives_arbitrary_input() {
    let seed: u64 = env_or("LNRS_FUZZ_SEED", rand::random());
    let requests: usize = env_or("LNRS_FUZZ_REQUESTS", DEFAULT_REQUESTS);
    // The default run also stops at a time budget (CI runs it alongside the other tests); an
    // explicit count runs in full, so a reproduction sends exactly the same requests.
    let budget = std::env::var_os("LNRS_FUZZ_REQUESTS")
        .is_none()
        .then_some(DEFAULT_BUDGET);
    eprintln!("fuzz: seed {seed}, {requests} requests (LNRS_FUZZ_SEED={seed} reproduces)");

    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    // Automatic retention after each snapshot would append its own event in the background,
    // which the unchanged-head check cannot tell from a commit by a rejected request.
    cfg.retention_keep_last = 10_000;
    cfg.max_message_bytes = MESSAGE_LIMIT;
    let s = TestServer::start_with(cfg).await;
    let data_dir = s.data_dir.display().to_string();
    let channel = s.channel.clone();

    // A few snapshots, so snapshot RPCs have real ids to reach into.
    let mut snaps = s.snapshots();
    for i in 0..3 {
        snaps
            .create_snapshot(pb::CreateSnapshotRequest {
                description: format!("fuzz base {i}"),
                ..Default::default()
            })
            .await
            .expect("base snapshot");
    }

    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.package_name() == "lnrs.v1")
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    assert!(methods.len() >= 50, "every lnrs.v1 RPC: {}", methods.len());

    let texts = text_palette();
    let mut known = Known::default();
    known.refresh(&channel).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut request_ids = Vec::new();
    let mut counter = 0;
    let mut restores = 0;
    let mut violations: Vec<Violation> = Vec::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    // Calls, OK answers and time spent, per RPC.
    let mut per_rpc: BTreeMap<String, (usize, usize, Duration)> = BTreeMap::new();
    let started = Instant::now();

    let mut sent = 0;
    for index in 0..requests {
        if budget.is_some_and(|b| started.elapsed() > b) {
            eprintln!("fuzz: time budget reached after {index} requests");
            break;
        }
        sent += 1;
        if index > 0 && index % BATCH == 0 {
            if let Err(e) = alive(&channel).await {
                panic!("fuzz seed {seed}: server not alive after request {index}: {e}");
            }
            known.refresh(&channel).await;
        }
        let method = pick(&mut rng, &methods).clone();
        let rpc = format!("{}/{}", method.parent_service().name(), method.name());
        let input = method.input();
        let mut gen = Gen {
            rng: StdRng::seed_from_u64(rng.random()),
            known: &known,
            texts: &texts,
            request_ids: std::mem::take(&mut request_ids),
            counter,
            allow_restore: restores < MAX_RESTORES,
            plausible: rng.random_bool(0.35),
        };
        let msg = gen.message(&input, 0);
        let mut bytes = msg.encode_to_vec();
        let fault = if gen.chance(0.15) {
            break_wire(&mut gen.rng, &input, &mut bytes)
        } else {
            Fault::None
        };
        (request_ids, counter) = (gen.request_ids, gen.counter);
        let is_restore = method.name() == "RestoreSnapshot"
            && msg.get_field_by_name("snapshot_id") == msg.get_field_by_name("confirm_snapshot_id");
        let before = if mutates(&method) {
            Some(head(&channel).await)
        } else {
            None
        };

        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let sent_at = Instant::now();
        let outcome = tokio::time::timeout(
            REQUEST_TIMEOUT,
            call(&channel, &path, bytes.clone(), method.is_server_streaming()),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "fuzz seed {seed}: request {index} ({rpc}, {fault:?}) took over {REQUEST_TIMEOUT:?}\n    {}",
                show_request(&msg, &bytes)
            )
        });

        let entry = per_rpc.entry(rpc.clone()).or_default();
        entry.0 += 1;
        entry.2 += sent_at.elapsed();
        let mut problems = Vec::new();
        let status_text;
        match &outcome {
            Outcome::Ok(items) => {
                entry.1 += 1;
                *codes.entry("Ok".into()).or_default() += 1;
                status_text = "OK".to_string();
                let out = method.output();
                for item in items {
                    if let Err(e) = DynamicMessage::decode(out.clone(), item.as_slice()) {
                        problems.push(format!("response does not decode: {e}"));
                    }
                    if String::from_utf8_lossy(item).contains(&data_dir) {
                        problems.push("the response shows the data directory".into());
                    }
                }
                if is_restore {
                    restores += 1;
                }
            }
            Outcome::Err(st) => {
                *codes.entry(format!("{:?}", st.code())).or_default() += 1;
                status_text = format!(
                    "{:?} {} {:?}{}",
                    st.code(),
                    reason(st),
                    st.message(),
                    cause_chain(st)
                );
                problems.extend(status_problems(st, &bytes, &data_dir));
                if let Some(before) = before {
                    let after = head(&channel).await;
                    if after != before {
                        let new = crate::common::events_after(&channel, before).await;
                        let kinds: Vec<String> = new
                            .iter()
                            .map(|e| format!("{} {:?} {}", e.seq, e.kind(), e.rpc))
                            .collect();
                        problems.push(format!(
                            "rejected, yet the event head moved {before} → {after}: {kinds:?}"
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            if let Ok(dir) = std::env::var("LNRS_FUZZ_DUMP") {
                let _ = std::fs::write(format!("{dir}/fuzz-{seed}-{index}.bin"), &bytes);
            }
            eprintln!(
                "fuzz seed {seed}: request {index} {rpc} {fault:?}: {problems:?} ({status_text})"
            );
            violations.push(Violation {
                index,
                rpc,
                fault,
                problems,
                status: status_text,
                request: show_request(&msg, &bytes),
            });
        }
    }
    if let Err(e) = alive(&channel).await {
        panic!("fuzz seed {seed}: server not alive at the end: {e}");
    }
    if sent >= 1000 {
        assert_eq!(per_rpc.len(), methods.len(), "every RPC was called");
    }
    let elapsed = started.elapsed();
    let never_ok: Vec<&String> = per_rpc
        .iter()
        .filter(|(_, (_, ok, _))| *ok == 0)
        .map(|(rpc, _)| rpc)
        .collect();
    let mut slowest: Vec<(&String, Duration)> = per_rpc.iter().map(|(r, v)| (r, v.2)).collect();
    slowest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    slowest.truncate(5);
    eprintln!(
        "fuzz: {sent} requests in {:.1}s over {} RPCs, {restores} restores; codes {codes:?}; never OK: {never_ok:?}; most time: {slowest:?}",
        elapsed.as_secs_f64(),
        per_rpc.len(),
    );
    if !violations.is_empty() {
        let mut report = format!(
            "fuzz seed {seed}: {} of {sent} requests broke a rule (LNRS_FUZZ_SEED={seed} LNRS_FUZZ_REQUESTS=<index + 1> reproduces one):\n",
            violations.len()
        );
        for v in violations.iter().take(25) {
            report.push_str(&format!(
                "  #{} {} ({:?}): {:?}\n    status: {}\n    request: {}\n",
                v.index, v.rpc, v.fault, v.problems, v.status, v.request
            ));
        }
        panic!("{report}");
    }
    drop(snaps);
    s.stop().await;
    drop(tmp);
}

// ---------------------------------------------------------------------------------------------
// Regression tests: one per defect the fuzzer (or issue 11 item 8) found; each failed before
// its fix.

/// Byte-slicing a page token on a character boundary panicked the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_page_tokens_are_invalid_not_a_panic() {
    let s = TestServer::start().await;
    let mut e = s.entity();
    // Even byte lengths, with a multi-byte character across the first hex pair.
    for token in ["aéb", "😀", "0é1", "ab😀cd"] {
        let st = e
            .list_measures(pb::ListMeasuresRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{token:?}: {st:?}");
        assert_eq!(reason(&st), "INVALID_PAGE_TOKEN");
        let st = e
            .list_links(pb::ListLinksRequest {
                link_type: pb::LinkType::MeasureAreaPriority as i32,
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{token:?}: {st:?}");
        assert_eq!(reason(&st), "INVALID_PAGE_TOKEN");
    }
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// `start_after_seq + 1` overflowed (a panic in debug builds) for u64::MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_beyond_any_seq_are_out_of_range() {
    let s = TestServer::start().await;
    let mut ev = s.events();
    for after in [u64::MAX, u64::MAX - 1, i64::MAX as u64 + 1, i64::MAX as u64] {
        let st = ev
            .list_events(pb::ListEventsRequest {
                start_after_seq: after,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::OutOfRange, "{after}: {st:?}");
        assert_eq!(reason(&st), "START_POSITION_AHEAD");
        let st = ev
            .watch_events(pb::WatchEventsRequest {
                start_after_seq: Some(after),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::OutOfRange, "{after}: {st:?}");
        assert_eq!(reason(&st), "START_POSITION_AHEAD");
    }
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// `m * a * p` overflowed (a panic in debug builds) for three lists of ~2.7 million ids,
/// which a server with a large message limit accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_product_beyond_usize_is_batch_too_large() {
    let tmp = crate::common::data_dir_with_reference();
    let mut cfg = test_config(tmp.path());
    cfg.max_message_bytes = 64 * 1024 * 1024;
    let s = TestServer::start_with(cfg).await;
    let before = head(&s.channel).await;
    let ids: Vec<i32> = (1..=2_700_000).collect(); // 2.7e6³ > 2⁶⁴
    let st = s
        .entity()
        .max_encoding_message_size(usize::MAX)
        .batch_create_measure_area_priority_links(pb::BatchCreateMeasureAreaPriorityLinksRequest {
            measure_ids: ids.clone(),
            area_ids: ids.clone(),
            priority_ids: ids,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(&st, Code::InvalidArgument, "BATCH_TOO_LARGE");
    assert_eq!(head(&s.channel).await, before, "nothing committed");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
    drop(tmp);
}

/// tonic-prost answers a request that does not decode with INTERNAL: the client's bytes are
/// at fault, so it is INVALID_ARGUMENT `MALFORMED_REQUEST` (with ErrorInfo), and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_do_not_decode_are_invalid_argument() {
    let s = TestServer::start().await;
    let before = head(&s.channel).await;
    let valid = pb::CreateHabitatRequest {
        habitat: Some(pb::Habitat {
            habitat_id: 0,
            habitat: "Fen".into(),
        }),
        request_id: String::new(),
    }
    .encode_to_vec();
    let mut invalid_utf8 = valid.clone();
    invalid_utf8.extend_from_slice(&[0x12, 0x02, 0xff, 0xfe]); // request_id = ff fe
    let truncated = valid[..valid.len() - 1].to_vec();
    let mut wrong_wire_type = valid.clone();
    wrong_wire_type.extend_from_slice(&[0x0d, 0, 0, 0, 0]); // habitat (1) as fixed32
    let cases = [
        (
            "/lnrs.v1.EntityService/CreateHabitat",
            invalid_utf8.clone(),
            false,
        ),
        ("/lnrs.v1.EntityService/CreateHabitat", truncated, false),
        (
            "/lnrs.v1.EntityService/CreateHabitat",
            wrong_wire_type,
            false,
        ),
        ("/lnrs.v1.EntityService/GetHabitat", vec![0x08, 0xff], false),
        (
            "/lnrs.v1.SnapshotService/GetSnapshot",
            vec![0x0a, 0x01, 0xc3],
            false,
        ),
        ("/lnrs.v1.EventService/ListEvents", vec![0x08; 3], false),
        (
            "/lnrs.v1.EventService/WatchEvents",
            vec![0x1a, 0x02, 0xc3, 0x28],
            true,
        ),
    ];
    for (path, body, streaming) in cases {
        let st = match call(&s.channel, path, body.clone(), streaming).await {
            Outcome::Err(st) => st,
            Outcome::Ok(items) => panic!("{path} {body:02x?} was accepted: {} items", items.len()),
        };
        assert_eq!(
            st.code(),
            Code::InvalidArgument,
            "{path} {body:02x?}: {st:?}"
        );
        assert_eq!(reason(&st), "MALFORMED_REQUEST", "{path}: {st:?}");
        assert_eq!(
            status_problems(&st, &body, &s.data_dir.display().to_string()),
            Vec::<String>::new()
        );
    }
    assert_eq!(head(&s.channel).await, before, "nothing committed");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// Errors that quote the client's input (an unknown order_by column, a bad label key) quoted
/// all of it: a multi-megabyte quote in the trailers made h2 clients drop the connection
/// (GOAWAY ENHANCE_YOUR_CALM `too_many_continuations`), so the client saw a transport error
/// instead of INVALID_ARGUMENT. Found by the fuzzer (seed 1, request 237).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quoting_huge_input_stay_readable() {
    let s = TestServer::start().await;
    let huge = "é".repeat((MESSAGE_LIMIT - 4096) / 2);
    let st = s
        .entity()
        .list_measures(pb::ListMeasuresRequest {
            order_by: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&st, Code::InvalidArgument, "INVALID_ORDER_BY");
    assert!(st.message().len() <= 1024, "{} bytes", st.message().len());
    let st = s
        .snapshots()
        .create_snapshot(pb::CreateSnapshotRequest {
            description: "labels".into(),
            labels: [(huge.clone(), "v".to_string())].into_iter().collect(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(&st, Code::InvalidArgument, "INVALID_LABEL");
    let st = s
        .events()
        .list_events(pb::ListEventsRequest {
            entity_types: vec![huge],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&st, Code::InvalidArgument, "UNKNOWN_ENTITY_TYPE");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}

/// prost-types negates a negative Duration's seconds, which overflowed (a panic in debug
/// builds) for i64::MIN in WatchEvents' heartbeat_interval and ApplyRetention's keep_within.
/// Found by the fuzzer (seed 1, request 2016).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_at_the_limits_are_invalid_not_a_panic() {
    let s = TestServer::start().await;
    let before = head(&s.channel).await;
    for seconds in [
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        -315_576_000_001,
        315_576_000_001,
    ] {
        let d = prost_types::Duration { seconds, nanos: 0 };
        let st = s
            .events()
            .watch_events(pb::WatchEventsRequest {
                heartbeat_interval: Some(d),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{seconds}: {st:?}");
        assert_eq!(reason(&st), "INVALID_DURATION");
        let st = s
            .snapshots()
            .apply_retention(pb::ApplyRetentionRequest {
                keep_last: 1,
                keep_within: Some(d),
                dry_run: false,
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{seconds}: {st:?}");
        assert_eq!(reason(&st), "INVALID_DURATION");
    }
    // The edges of the valid range still work.
    let d = prost_types::Duration {
        seconds: 315_576_000_000,
        nanos: 0,
    };
    s.snapshots()
        .apply_retention(pb::ApplyRetentionRequest {
            keep_last: 0,
            keep_within: Some(d),
            dry_run: true,
        })
        .await
        .expect("10,000 years is a valid keep_within");
    assert_eq!(head(&s.channel).await, before, "nothing committed");
    alive(&s.channel).await.expect("still serving");
    s.stop().await;
}
