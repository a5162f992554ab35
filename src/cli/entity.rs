//! `lnrs <entity> list|get|create|update|delete` for the six entities through ONE generic path:
//! each entity states its fields and RPCs once (the `cli_entity!` lines below) and gets JSON
//! output, `--set field=value` parsing and the RPC calls from them. Also `lnrs lookup …`, and the
//! delete-impact preview + confirmation shared with `lnrs link delete`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use prost_types::FieldMask;
use serde_json::{json, Map, Value};
use tonic::Status;

use super::client::{confirm, ClientArgs, Ctx, Failure};
use super::json::ToJson;
use super::output::{self, cell, key_values, Table};
use super::pager::{pages, Page, PageArgs};
use crate::pb;
use crate::pb::get_delete_impact_request::Target;

/// Flags of `lnrs <entity>`.
#[derive(Debug, Args)]
pub struct EntityCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: EntityAction,
}

/// What to do with the entity.
#[derive(Debug, Subcommand)]
pub enum EntityAction {
    /// List rows, one page at a time (every page with --all).
    List(ListArgs),
    /// Show one row.
    Get {
        /// The row's id.
        id: String,
    },
    /// Create a row. The server assigns the id (grants: give grant_id).
    Create(FieldArgs),
    /// Update the given fields of a row (the update mask names exactly those fields).
    Update {
        /// The row's id.
        id: String,
        #[command(flatten)]
        fields: FieldArgs,
    },
    /// Show every row a delete would remove, confirm, then snapshot and delete.
    Delete {
        /// The row's id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Paging and search flags of `list`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Case-insensitive substring search over the entity's text fields.
    #[arg(long, default_value = "")]
    pub search: String,
    /// Comma-separated fields, each optionally followed by " desc".
    #[arg(long, default_value = "")]
    pub order_by: String,
    /// Rows per page [server default: 50; at most 1000].
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[command(flatten)]
    pub pages: PageArgs,
}

/// Field values of `create` and `update`, merged in this order (later wins): --file, --data,
/// --set, --clear. Field names are the proto field names.
#[derive(Debug, Clone, Default, Args)]
pub struct FieldArgs {
    /// FIELD=VALUE (repeatable). Lists of ids are comma-separated: benefit_ids=1,4.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
    /// Unset an optional field (repeatable).
    #[arg(long = "clear", value_name = "FIELD")]
    pub clear: Vec<String>,
    /// A JSON object of fields, e.g. '{"area_name": "Downs"}'.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// A file holding such a JSON object ("-": stdin).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// One field of an entity message: how it reads from and writes to JSON (and `--set` text).
pub trait Field: Sized {
    fn to_value(&self) -> Value;
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl Field for i32 {
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        n.and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("expected a 32-bit integer, got {v}"))
    }
}

impl Field for String {
    fn to_value(&self) -> Value {
        Value::from(self.as_str())
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Null => Err("is required and cannot be cleared".into()),
            other => Err(format!("expected a string, got {other}")),
        }
    }
}

impl Field for Option<String> {
    fn to_value(&self) -> Value {
        self.as_deref().map_or(Value::Null, Value::from)
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => String::from_value(other).map(Some),
        }
    }
}

impl Field for Option<i64> {
    fn to_value(&self) -> Value {
        self.map_or(Value::Null, Value::from)
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("expected an integer, got {n}")),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("expected an integer, got {s:?}")),
            other => Err(format!("expected an integer, got {other}")),
        }
    }
}

impl Field for Vec<i32> {
    fn to_value(&self) -> Value {
        Value::from(self.clone())
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items.iter().map(i32::from_value).collect(),
            Value::String(s) => s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| i32::from_value(&Value::from(p)))
                .collect(),
            other => Err(format!("expected a list of ids, got {other}")),
        }
    }
}

/// An entity the client can list, get, create, update and delete.
pub(crate) trait CliEntity: ToJson + Default + Clone {
    /// Singular name, as in `lnrs measure` and NOT_FOUND messages.
    const NAME: &'static str;
    /// Field of the list response holding the rows ("measures").
    const LIST_FIELD: &'static str;
    const ID_FIELD: &'static str;
    /// Every field, the id first, in proto order.
    const FIELDS: &'static [&'static str];
    /// Columns of the `list` table.
    const COLUMNS: &'static [&'static str];

    /// Sets one field from JSON (or `--set` text as a JSON string).
    fn set(&mut self, field: &str, v: &Value) -> Result<(), String>;
    fn impact_target(&self) -> Target;
    async fn get(ctx: &Ctx, probe: &Self) -> Result<Self, Status>;
    /// One page of rows (at `q.pages.page_token`).
    async fn list(ctx: &Ctx, q: &ListArgs) -> Result<Page<Self>, Status>;
    async fn create(ctx: &Ctx, m: Self) -> Result<(Self, u64, bool), Status>;
    async fn update(ctx: &Ctx, m: Self, mask: Vec<String>) -> Result<(Self, u64, bool), Status>;
    async fn delete(ctx: &Ctx, probe: &Self) -> Result<(pb::DeleteOutcome, Option<Self>), Status>;

    /// A message with only the id set.
    fn with_id(id: &str) -> Result<Self, Failure> {
        let mut m = Self::default();
        m.set(Self::ID_FIELD, &Value::from(id))
            .map_err(|e| Failure::usage(format!("invalid {} id {id:?}: {e}", Self::NAME)))?;
        Ok(m)
    }
}

fn missing(field: &str) -> Status {
    Status::internal(format!("the server's response has no `{field}`"))
}

fn unknown_field<M: CliEntity>(field: &str) -> String {
    format!(
        "unknown {} field `{field}`; fields: {}",
        M::NAME,
        M::FIELDS.join(", ")
    )
}

macro_rules! cli_entity {
    ($msg:ident, $name:literal, id: $id:ident, target: $target:ident, field: $field:ident,
     list: $list:ident -> $lf:ident, get: $get:ident, create: $create:ident,
     update: $update:ident, delete: $delete:ident,
     requests: ($getreq:ident, $listreq:ident, $createreq:ident, $updatereq:ident, $deletereq:ident),
     columns: [$($col:literal),* $(,)?],
     fields: [$($f:ident),* $(,)?]) => {
        impl ToJson for pb::$msg {
            fn to_json(&self) -> Value {
                let mut m = Map::new();
                m.insert(stringify!($id).into(), Field::to_value(&self.$id));
                $( m.insert(stringify!($f).into(), Field::to_value(&self.$f)); )*
                Value::Object(m)
            }
        }

        #[allow(clippy::clone_on_copy)]
        impl CliEntity for pb::$msg {
            const NAME: &'static str = $name;
            const LIST_FIELD: &'static str = stringify!($lf);
            const ID_FIELD: &'static str = stringify!($id);
            const FIELDS: &'static [&'static str] = &[stringify!($id), $(stringify!($f)),*];
            const COLUMNS: &'static [&'static str] = &[$($col),*];

            fn set(&mut self, field: &str, v: &Value) -> Result<(), String> {
                match field {
                    stringify!($id) => self.$id = Field::from_value(v)?,
                    $( stringify!($f) => self.$f = Field::from_value(v)?, )*
                    _ => return Err(unknown_field::<Self>(field)),
                }
                Ok(())
            }

            fn impact_target(&self) -> Target {
                Target::$target(self.$id.clone())
            }

            async fn get(ctx: &Ctx, probe: &Self) -> Result<Self, Status> {
                let mut req = pb::$getreq::default();
                req.$id = probe.$id.clone();
                let r = ctx.entity().$get(ctx.req(req)).await?.into_inner();
                r.$field.ok_or_else(|| missing(stringify!($field)))
            }

            async fn list(ctx: &Ctx, q: &ListArgs) -> Result<Page<Self>, Status> {
                let req = pb::$listreq {
                    page_size: q.page_size,
                    page_token: q.pages.page_token.clone(),
                    search: q.search.clone(),
                    order_by: q.order_by.clone(),
                };
                let r = ctx.entity().$list(ctx.req(req)).await?.into_inner();
                Ok(Page { rows: r.$lf, next_page_token: r.next_page_token, total_size: r.total_size })
            }

            async fn create(ctx: &Ctx, m: Self) -> Result<(Self, u64, bool), Status> {
                let req = pb::$createreq { $field: Some(m), request_id: ctx.request_id() };
                let r = ctx.entity().$create(ctx.req(req)).await?.into_inner();
                Ok((r.$field.ok_or_else(|| missing(stringify!($field)))?, r.event_seq, r.replayed))
            }

            async fn update(ctx: &Ctx, m: Self, mask: Vec<String>) -> Result<(Self, u64, bool), Status> {
                let req = pb::$updatereq {
                    $field: Some(m),
                    update_mask: Some(FieldMask { paths: mask }),
                    request_id: ctx.request_id(),
                };
                let r = ctx.entity().$update(ctx.req(req)).await?.into_inner();
                Ok((r.$field.ok_or_else(|| missing(stringify!($field)))?, r.event_seq, r.replayed))
            }

            async fn delete(ctx: &Ctx, probe: &Self) -> Result<(pb::DeleteOutcome, Option<Self>), Status> {
                let req = pb::$deletereq { $id: probe.$id.clone(), request_id: ctx.request_id() };
                let r = ctx.entity().$delete(ctx.long_req(req)).await?.into_inner();
                Ok((r.outcome.ok_or_else(|| missing("outcome"))?, r.deleted))
            }
        }
    };
}

cli_entity!(Measure, "measure", id: measure_id, target: MeasureId, field: measure,
    list: list_measures -> measures, get: get_measure, create: create_measure,
    update: update_measure, delete: delete_measure,
    requests: (GetMeasureRequest, ListMeasuresRequest, CreateMeasureRequest, UpdateMeasureRequest, DeleteMeasureRequest),
    columns: ["measure_id", "concise_measure", "core_supplementary", "mapped_unmapped"],
    fields: [measure, other_priorities_delivered, core_supplementary, mapped_unmapped, relevant_map_layer,
        link_to_further_guidance, concise_measure, measure_type_ids, stakeholder_ids, benefit_ids]);
cli_entity!(Area, "area", id: area_id, target: AreaId, field: area,
    list: list_areas -> areas, get: get_area, create: create_area, update: update_area, delete: delete_area,
    requests: (GetAreaRequest, ListAreasRequest, CreateAreaRequest, UpdateAreaRequest, DeleteAreaRequest),
    columns: ["area_id", "area_name", "area_description"],
    fields: [area_name, area_description, area_link, bng_hab_mgt, bng_hab_creation]);
cli_entity!(Priority, "priority", id: priority_id, target: PriorityId, field: priority,
    list: list_priorities -> priorities, get: get_priority, create: create_priority,
    update: update_priority, delete: delete_priority,
    requests: (GetPriorityRequest, ListPrioritiesRequest, CreatePriorityRequest, UpdatePriorityRequest, DeletePriorityRequest),
    columns: ["priority_id", "theme", "simplified_biodiversity_priority"],
    fields: [biodiversity_priority, simplified_biodiversity_priority, theme]);
cli_entity!(Species, "species", id: species_id, target: SpeciesId, field: species,
    list: list_species -> species, get: get_species, create: create_species,
    update: update_species, delete: delete_species,
    requests: (GetSpeciesRequest, ListSpeciesRequest, CreateSpeciesRequest, UpdateSpeciesRequest, DeleteSpeciesRequest),
    columns: ["species_id", "common_name", "scientific_name", "taxa"],
    fields: [taxa, common_name, assemblage, species_link, linnaean_name, usage_key, scientific_name, status,
        kingdom, phylum, order, family, genus, species, kingdom_key, phylum_key, class_key, order_key,
        family_key, genus_key, species_key, synonym, class, accepted_usage_key, verbatim_name,
        verbatim_index, gbif_species_url, image_url, license, attribution, photo_url]);
cli_entity!(Habitat, "habitat", id: habitat_id, target: HabitatId, field: habitat,
    list: list_habitats -> habitats, get: get_habitat, create: create_habitat,
    update: update_habitat, delete: delete_habitat,
    requests: (GetHabitatRequest, ListHabitatsRequest, CreateHabitatRequest, UpdateHabitatRequest, DeleteHabitatRequest),
    columns: ["habitat_id", "habitat"],
    fields: [habitat]);
cli_entity!(Grant, "grant", id: grant_id, target: GrantId, field: grant,
    list: list_grants -> grants, get: get_grant, create: create_grant, update: update_grant, delete: delete_grant,
    requests: (GetGrantRequest, ListGrantsRequest, CreateGrantRequest, UpdateGrantRequest, DeleteGrantRequest),
    columns: ["grant_id", "grant_scheme", "grant_name"],
    fields: [grant_name, grant_scheme, url, grant_summary]);

/// Runs `lnrs <entity> <action>`.
pub(crate) async fn run<M: CliEntity>(ctx: &Ctx, action: EntityAction) -> Result<(), Failure> {
    match action {
        EntityAction::List(q) => list::<M>(ctx, q).await,
        EntityAction::Get { id } => {
            let m = M::get(ctx, &M::with_id(&id)?).await?;
            if ctx.json() {
                output::print_json(&m.to_json())
            } else {
                output::print(&fields_block(&m))
            }
        }
        EntityAction::Create(fields) => {
            let values = collect_fields::<M>(&fields)?;
            if values.is_empty() {
                return Err(Failure::usage(
                    "nothing to create: give --set FIELD=VALUE, --data or --file",
                ));
            }
            let mut m = M::default();
            apply::<M>(&mut m, &values)?;
            let (m, seq, replayed) = M::create(ctx, m).await?;
            written(ctx, "created", &m, seq, replayed)
        }
        EntityAction::Update { id, fields } => {
            let mut m = M::with_id(&id)?;
            let id_value = m.to_json().get(M::ID_FIELD).cloned().unwrap_or(Value::Null);
            let mut values = collect_fields::<M>(&fields)?;
            // The id selects the row; repeating it is harmless, changing it is not possible.
            let mut probe = M::default();
            for (k, v) in values.iter().filter(|(k, _)| k == M::ID_FIELD) {
                probe
                    .set(k, v)
                    .map_err(|e| Failure::usage(format!("{k}: {e}")))?;
                if probe.to_json().get(M::ID_FIELD) != Some(&id_value) {
                    return Err(Failure::usage(format!("{} cannot be changed", M::ID_FIELD)));
                }
            }
            values.retain(|(k, _)| k != M::ID_FIELD);
            if values.is_empty() {
                // An empty mask would mean "every field": never send one by accident.
                return Err(Failure::usage(
                    "nothing to update: give --set FIELD=VALUE, --clear, --data or --file",
                ));
            }
            apply::<M>(&mut m, &values)?;
            let mask = values.into_iter().map(|(k, _)| k).collect();
            let (m, seq, replayed) = M::update(ctx, m, mask).await?;
            written(ctx, "updated", &m, seq, replayed)
        }
        EntityAction::Delete { id, yes } => {
            let probe = M::with_id(&id)?;
            let what = format!("{} {id}", M::NAME);
            let impact = ctx
                .entity()
                .get_delete_impact(ctx.req(pb::GetDeleteImpactRequest {
                    target: Some(probe.impact_target()),
                }))
                .await?
                .into_inner();
            show_impact_and_confirm(ctx, &what, &impact, yes)?;
            let (outcome, deleted) = M::delete(ctx, &probe).await?;
            if ctx.json() {
                output::print_json(
                    &json!({ "outcome": outcome.to_json(), "deleted": deleted.to_json() }),
                )
            } else {
                output::print(&outcome_text(&what, &outcome))
            }
        }
    }
}

async fn list<M: CliEntity>(ctx: &Ctx, q: ListArgs) -> Result<(), Failure> {
    let fetch = |page_token| {
        let mut q = q.clone();
        q.pages.page_token = page_token;
        async move { M::list(ctx, &q).await }
    };
    let page = pages(&q.pages, fetch).await?;
    if ctx.json() {
        return output::print_json(&page.to_json(M::LIST_FIELD));
    }
    let mut t = Table::new(M::COLUMNS);
    for m in &page.rows {
        let j = m.to_json();
        t.row(
            M::COLUMNS
                .iter()
                .map(|c| cell(j.get(*c).unwrap_or(&Value::Null)))
                .collect(),
        );
    }
    output::print(&t.render())?;
    page.print_footer(&format!("{} rows", M::NAME));
    Ok(())
}

/// The field values given on the command line, validated against the entity's fields, in
/// order, each field once (the last value given wins).
fn collect_fields<M: CliEntity>(a: &FieldArgs) -> Result<Vec<(String, Value)>, Failure> {
    let mut given: Vec<(String, Value)> = Vec::new();
    if let Some(path) = &a.file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| Failure::Local(format!("cannot read stdin: {e}")))?
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?
        };
        given.extend(json_object(&text, &format!("--file {}", path.display()))?);
    }
    if let Some(text) = &a.data {
        given.extend(json_object(text, "--data")?);
    }
    for s in &a.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--set expects FIELD=VALUE, got {s:?}")))?;
        given.push((k.trim().to_string(), Value::from(v)));
    }
    for k in &a.clear {
        given.push((k.trim().to_string(), Value::Null));
    }
    let mut out: Vec<(String, Value)> = Vec::new();
    for (k, v) in given {
        if !M::FIELDS.contains(&k.as_str()) {
            return Err(Failure::usage(unknown_field::<M>(&k)));
        }
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

fn json_object(text: &str, what: &str) -> Result<Vec<(String, Value)>, Failure> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m.into_iter().collect()),
        Ok(_) => Err(Failure::usage(format!("{what}: expected a JSON object"))),
        Err(e) => Err(Failure::usage(format!("{what}: invalid JSON: {e}"))),
    }
}

fn apply<M: CliEntity>(m: &mut M, values: &[(String, Value)]) -> Result<(), Failure> {
    for (k, v) in values {
        m.set(k, v)
            .map_err(|e| Failure::usage(format!("{k}: {e}")))?;
    }
    Ok(())
}

/// Every field of a row, one per line.
fn fields_block<M: CliEntity>(m: &M) -> String {
    let j = m.to_json();
    let pairs: Vec<(&str, String)> = M::FIELDS
        .iter()
        .map(|f| (*f, cell(j.get(*f).unwrap_or(&Value::Null))))
        .collect();
    key_values(&pairs)
}

fn written<M: CliEntity>(
    ctx: &Ctx,
    verb: &str,
    m: &M,
    seq: u64,
    replayed: bool,
) -> Result<(), Failure> {
    if ctx.json() {
        let mut doc = Map::new();
        doc.insert(M::NAME.into(), m.to_json());
        doc.insert("event_seq".into(), seq.into());
        doc.insert("replayed".into(), replayed.into());
        return output::print_json(&Value::Object(doc));
    }
    let id = cell(m.to_json().get(M::ID_FIELD).unwrap_or(&Value::Null));
    let note = if replayed {
        " — replayed: this --request-id was already used, nothing changed"
    } else {
        ""
    };
    output::print(&format!(
        "{verb} {} {id} (event seq {seq}){note}\n{}",
        M::NAME,
        fields_block(m)
    ))
}

/// Prints exactly what a delete removes (per table, with the first keys) and, unless `yes`,
/// asks for confirmation. With --json the preview goes to stderr, keeping stdout one document.
pub(crate) fn show_impact_and_confirm(
    ctx: &Ctx,
    what: &str,
    impact: &pb::GetDeleteImpactResponse,
    yes: bool,
) -> Result<(), Failure> {
    // Keys are listed while they fit one table cell; the count is always exact.
    const KEYS_WIDTH: usize = 34;
    let tables = impact.tables.iter().filter(|t| !t.rows.is_empty()).count();
    let mut text = format!(
        "Deleting {what} removes {} row(s) in {tables} table(s):\n",
        impact.total_rows
    );
    let mut t = Table::new(&["table", "rows", "keys"]);
    for ti in impact.tables.iter().filter(|t| !t.rows.is_empty()) {
        let mut keys = String::new();
        let mut shown = 0;
        for r in &ti.rows {
            let k = r.values.join("/");
            if shown > 0 && keys.chars().count() + 2 + k.chars().count() > KEYS_WIDTH {
                break;
            }
            if shown > 0 {
                keys.push_str(", ");
            }
            keys.push_str(&k);
            shown += 1;
        }
        if ti.rows.len() > shown {
            keys.push_str(&format!(", +{} more", ti.rows.len() - shown));
        }
        t.row(vec![ti.table.clone(), ti.rows.len().to_string(), keys]);
    }
    text.push_str(&t.render());
    text.push_str("A snapshot of the whole database is taken first; the delete can be undone with `lnrs snapshot restore`.\n");
    if ctx.json() {
        if !yes {
            eprint!("{text}");
        }
    } else {
        output::print(&text)?;
    }
    if yes {
        return Ok(());
    }
    confirm(&format!(
        "Delete {what} and these {} row(s)?",
        impact.total_rows
    ))
}

/// What a delete did, humanly.
pub(crate) fn outcome_text(what: &str, o: &pb::DeleteOutcome) -> String {
    let removed: i64 = o.rows_removed.iter().map(|r| r.rows).sum();
    let mut s = format!(
        "deleted {what}: {removed} row(s) removed (event seq {})",
        o.event_seq
    );
    if o.replayed {
        s.push_str(" — replayed: this --request-id was already used, nothing changed");
    }
    s.push('\n');
    if o.snapshot_id.is_empty() {
        s.push_str(&format!(
            "no snapshot was taken: {}\n",
            o.snapshot_skipped_reason
        ));
    } else {
        s.push_str(&format!(
            "snapshot {} taken first; undo with: lnrs snapshot restore {}\n",
            o.snapshot_id, o.snapshot_id
        ));
    }
    let mut t = Table::new(&["table", "rows"]);
    for r in &o.rows_removed {
        t.row(vec![r.table.clone(), r.rows.to_string()]);
    }
    s.push_str(&t.render());
    s
}

/// Flags of `lnrs lookup`.
#[derive(Debug, Args)]
pub struct LookupCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: LookupAction,
}

/// The lookup tables.
#[derive(Debug, Clone, Subcommand)]
pub enum LookupAction {
    /// Measure types.
    MeasureTypes,
    /// Stakeholders.
    Stakeholders,
    /// Benefits.
    Benefits,
    /// Local funding schemes.
    FundingSchemes {
        /// Only the schemes of this area.
        #[arg(long)]
        area: Option<i32>,
    },
}

/// Runs `lnrs lookup …`: JSON is the response message; the table shows every field.
pub(crate) async fn lookup(ctx: &Ctx, action: LookupAction) -> Result<(), Failure> {
    fn rows<T: ToJson>(items: &[T]) -> Vec<Value> {
        items.iter().map(ToJson::to_json).collect()
    }
    let mut c = ctx.entity();
    let (key, columns, rows): (&str, &[&str], Vec<Value>) = match action {
        LookupAction::MeasureTypes => {
            let r = c
                .list_measure_types(ctx.req(pb::ListMeasureTypesRequest {}))
                .await?;
            (
                "measure_types",
                &["measure_type_id", "measure_type"],
                rows(&r.get_ref().measure_types),
            )
        }
        LookupAction::Stakeholders => {
            let r = c
                .list_stakeholders(ctx.req(pb::ListStakeholdersRequest {}))
                .await?;
            (
                "stakeholders",
                &["stakeholder_id", "stakeholder"],
                rows(&r.get_ref().stakeholders),
            )
        }
        LookupAction::Benefits => {
            let r = c.list_benefits(ctx.req(pb::ListBenefitsRequest {})).await?;
            (
                "benefits",
                &["benefit_id", "benefit"],
                rows(&r.get_ref().benefits),
            )
        }
        LookupAction::FundingSchemes { area } => {
            let req = pb::ListFundingSchemesRequest {
                area_id: area.unwrap_or(0),
            };
            let r = c.list_funding_schemes(ctx.req(req)).await?;
            let columns: &[&str] = &["id", "area_id", "area_name", "local_funding_schemes"];
            (
                "funding_schemes",
                columns,
                rows(&r.get_ref().funding_schemes),
            )
        }
    };
    if ctx.json() {
        return output::print_json(&json!({ key: rows }));
    }
    let mut t = Table::new(columns);
    for r in &rows {
        t.row(
            columns
                .iter()
                .map(|c| cell(r.get(*c).unwrap_or(&Value::Null)))
                .collect(),
        );
    }
    output::print(&t.render())?;
    eprintln!("{} {}", rows.len(), key.replace('_', " "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_parsed_per_field_type() {
        let mut m = pb::Measure::default();
        m.set("measure_id", &Value::from("7")).unwrap();
        m.set("benefit_ids", &Value::from("1, 4")).unwrap();
        m.set("concise_measure", &Value::from("short")).unwrap();
        m.set("concise_measure", &Value::Null).unwrap();
        assert_eq!(
            (
                m.measure_id,
                m.benefit_ids.clone(),
                m.concise_measure.clone()
            ),
            (7, vec![1, 4], None)
        );
        assert!(
            m.set("measure", &Value::Null).is_err(),
            "required fields cannot be cleared"
        );
        assert!(m
            .set("nope", &Value::from("x"))
            .unwrap_err()
            .contains("fields: measure_id"));
        let mut s = pb::Species::default();
        s.set("verbatim_index", &Value::from("12")).unwrap();
        assert_eq!(s.verbatim_index, Some(12));
    }

    #[test]
    fn json_output_uses_proto_field_names_and_nulls_for_unset_optionals() {
        let a = pb::Area {
            area_id: 3,
            area_name: "Downs".into(),
            ..Default::default()
        };
        assert_eq!(
            a.to_json(),
            json!({ "area_id": 3, "area_name": "Downs", "area_description": "", "area_link": null,
                    "bng_hab_mgt": null, "bng_hab_creation": null })
        );
    }

    #[test]
    fn later_values_win_and_unknown_fields_are_usage_errors() {
        let a = FieldArgs {
            data: Some(r#"{"area_name": "A", "area_link": "http://x"}"#.into()),
            set: vec!["area_name=B".into()],
            clear: vec!["area_link".into()],
            ..Default::default()
        };
        let mut v = collect_fields::<pb::Area>(&a).unwrap();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            v,
            vec![
                ("area_link".into(), Value::Null),
                ("area_name".into(), json!("B")),
            ]
        );
        let bad = FieldArgs {
            set: vec!["colour=red".into()],
            ..Default::default()
        };
        assert_eq!(collect_fields::<pb::Area>(&bad).unwrap_err().exit_code(), 2);
    }
}
