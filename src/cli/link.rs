//! `lnrs link create|delete|list|batch-map`: the link (bridge) tables. A link is named by its
//! type and the ids that type uses (`--measure 1 --area 2 --priority 3`); deletes preview their
//! impact and ask first, like entity deletes.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::client::{ClientArgs, Ctx, Failure};
use super::entity::{outcome_text, show_impact_and_confirm};
use super::json::ToJson;
use super::output::{self, cell, Table};
use super::pager::{pages, Page, PageArgs};
use crate::pb;
use crate::service::convert;

/// Flags of `lnrs link`.
#[derive(Debug, Args)]
pub struct LinkCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: LinkAction,
}

/// What to do with links.
#[derive(Debug, Subcommand)]
pub enum LinkAction {
    /// Create one link (every id it names must exist).
    Create(LinkArgs),
    /// Show what deleting a link removes, confirm, then snapshot and delete it.
    Delete {
        #[command(flatten)]
        link: LinkArgs,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// List the links of one type, optionally only those naming the given ids.
    List {
        #[command(flatten)]
        filter: LinkArgs,
        /// Links per page [server default: 100; at most 5000].
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        #[command(flatten)]
        pages: PageArgs,
    },
    /// Create measure-area-priority links for every combination of the given ids, in one
    /// transaction (existing links are skipped and reported).
    BatchMap {
        /// Measure ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        measures: Vec<i32>,
        /// Area ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        areas: Vec<i32>,
        /// Priority ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        priorities: Vec<i32>,
    },
}

/// The link tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinkTypeArg {
    /// measure_area_priority: --measure --area --priority.
    #[value(name = "map", alias = "measure_area_priority")]
    Map,
    /// measure_area_priority_grant: --measure --area --priority --grant.
    #[value(name = "mapg", alias = "measure_area_priority_grant")]
    Mapg,
    /// species_area_priority: --species --area --priority.
    #[value(name = "sap", alias = "species_area_priority")]
    Sap,
    /// habitat_creation_area: --habitat --area.
    #[value(name = "hca", alias = "habitat_creation_area")]
    Hca,
    /// habitat_management_area: --habitat --area.
    #[value(name = "hma", alias = "habitat_management_area")]
    Hma,
    /// measure_has_species: --measure --species.
    #[value(name = "measure-species", alias = "measure_has_species")]
    MeasureSpecies,
}

impl LinkTypeArg {
    fn proto(self) -> pb::LinkType {
        match self {
            LinkTypeArg::Map => pb::LinkType::MeasureAreaPriority,
            LinkTypeArg::Mapg => pb::LinkType::MeasureAreaPriorityGrant,
            LinkTypeArg::Sap => pb::LinkType::SpeciesAreaPriority,
            LinkTypeArg::Hca => pb::LinkType::HabitatCreationArea,
            LinkTypeArg::Hma => pb::LinkType::HabitatManagementArea,
            LinkTypeArg::MeasureSpecies => pb::LinkType::MeasureSpecies,
        }
    }
}

/// The id columns of a link type, in key order (from the domain's link inventory).
fn columns(t: pb::LinkType) -> Vec<&'static str> {
    convert::link_kind_in(t as i32)
        .map(|k| k.columns().iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

/// The link table of a link type.
fn table(t: pb::LinkType) -> &'static str {
    convert::link_kind_in(t as i32).map_or("", |k| k.table())
}

/// A link type and its ids.
#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// The link table.
    #[arg(long = "type", short = 't', value_enum)]
    pub link_type: LinkTypeArg,
    /// The measure id.
    #[arg(long)]
    pub measure: Option<i32>,
    /// The area id.
    #[arg(long)]
    pub area: Option<i32>,
    /// The priority id.
    #[arg(long)]
    pub priority: Option<i32>,
    /// The species id.
    #[arg(long)]
    pub species: Option<i32>,
    /// The habitat id.
    #[arg(long)]
    pub habitat: Option<i32>,
    /// The grant id.
    #[arg(long)]
    pub grant: Option<String>,
}

impl LinkArgs {
    fn link(&self) -> pb::Link {
        pb::Link {
            link_type: self.link_type.proto() as i32,
            measure_id: self.measure.unwrap_or(0),
            area_id: self.area.unwrap_or(0),
            priority_id: self.priority.unwrap_or(0),
            species_id: self.species.unwrap_or(0),
            habitat_id: self.habitat.unwrap_or(0),
            grant_id: self.grant.clone().unwrap_or_default(),
        }
    }

    /// The ids given that the type does not use: a usage error rather than a silently ignored
    /// filter. `complete` also demands every id the type uses (create, delete).
    fn check(&self, complete: bool) -> Result<pb::Link, Failure> {
        let link = self.link();
        let cols = columns(self.link_type.proto());
        let given = [
            ("measure_id", self.measure.is_some()),
            ("area_id", self.area.is_some()),
            ("priority_id", self.priority.is_some()),
            ("species_id", self.species.is_some()),
            ("habitat_id", self.habitat.is_some()),
            ("grant_id", self.grant.is_some()),
        ];
        let flag = |c: &str| format!("--{}", c.trim_end_matches("_id"));
        // Ids the type does not use first: they usually mean the wrong --type was given.
        for (c, set) in given {
            if set && !cols.contains(&c) {
                return Err(Failure::usage(format!(
                    "{} is not part of a {} link (it uses {})",
                    flag(c),
                    self.link_type
                        .to_possible_value()
                        .map(|v| v.get_name().to_string())
                        .unwrap_or_default(),
                    cols.iter().map(|c| flag(c)).collect::<Vec<_>>().join(" "),
                )));
            }
        }
        for (c, set) in given {
            if complete && !set && cols.contains(&c) {
                return Err(Failure::usage(format!(
                    "{} is required for this link type",
                    flag(c)
                )));
            }
        }
        Ok(link)
    }
}

/// The ids of `l`, in its type's key order.
fn ids(l: &pb::Link, cols: &[&str]) -> Vec<String> {
    let j = l.to_json();
    cols.iter()
        .map(|c| cell(j.get(*c).unwrap_or(&Value::Null)))
        .collect()
}

/// "measure_area_priority 1/2/3".
fn describe(l: &pb::Link) -> String {
    let t = pb::LinkType::try_from(l.link_type).unwrap_or(pb::LinkType::Unspecified);
    format!("{} {}", table(t), ids(l, &columns(t)).join("/"))
}

fn links_table(t: pb::LinkType, links: &[pb::Link]) -> String {
    let cols = columns(t);
    let mut table = Table::new(&cols);
    for l in links {
        table.row(ids(l, &cols));
    }
    table.render()
}

/// Runs `lnrs link …`.
pub(crate) async fn run(ctx: &Ctx, action: LinkAction) -> Result<(), Failure> {
    match action {
        LinkAction::Create(args) => create(ctx, &args).await,
        LinkAction::Delete { link, yes } => delete(ctx, &link, yes).await,
        LinkAction::List {
            filter,
            page_size,
            pages,
        } => list(ctx, &filter, page_size, &pages).await,
        LinkAction::BatchMap {
            measures,
            areas,
            priorities,
        } => batch_map(ctx, measures, areas, priorities).await,
    }
}

async fn create(ctx: &Ctx, args: &LinkArgs) -> Result<(), Failure> {
    let req = pb::CreateLinkRequest {
        link: Some(args.check(true)?),
        request_id: ctx.request_id(),
    };
    let r = ctx.entity().create_link(ctx.req(req)).await?.into_inner();
    if ctx.json() {
        return output::print_json(
            &json!({ "link": r.link.to_json(), "event_seq": r.event_seq, "replayed": r.replayed }),
        );
    }
    let l = r.link.unwrap_or_default();
    output::print(&format!(
        "created link {} (event seq {})\n",
        describe(&l),
        r.event_seq
    ))
}

async fn delete(ctx: &Ctx, args: &LinkArgs, yes: bool) -> Result<(), Failure> {
    let link = args.check(true)?;
    let what = format!("link {}", describe(&link));
    let mut c = ctx.entity();
    let impact = c
        .get_delete_impact(ctx.req(pb::GetDeleteImpactRequest {
            target: Some(pb::get_delete_impact_request::Target::Link(link.clone())),
        }))
        .await?
        .into_inner();
    show_impact_and_confirm(ctx, &what, &impact, yes)?;
    let req = pb::DeleteLinkRequest {
        link: Some(link),
        request_id: ctx.request_id(),
    };
    let r = c.delete_link(ctx.long_req(req)).await?.into_inner();
    let outcome = r.outcome.unwrap_or_default();
    if ctx.json() {
        return output::print_json(&json!({ "outcome": outcome.to_json() }));
    }
    output::print(&outcome_text(&what, &outcome))
}

async fn list(
    ctx: &Ctx,
    filter: &LinkArgs,
    page_size: i32,
    page_args: &PageArgs,
) -> Result<(), Failure> {
    let f = filter.check(false)?;
    let fetch = |page_token| {
        let req = pb::ListLinksRequest {
            link_type: f.link_type,
            measure_id: f.measure_id,
            area_id: f.area_id,
            priority_id: f.priority_id,
            species_id: f.species_id,
            habitat_id: f.habitat_id,
            grant_id: f.grant_id.clone(),
            page_size,
            page_token,
        };
        async move {
            let r = ctx.entity().list_links(ctx.req(req)).await?.into_inner();
            Ok(Page {
                rows: r.links,
                next_page_token: r.next_page_token,
                total_size: r.total_size,
            })
        }
    };
    let page = pages(page_args, fetch).await?;
    if ctx.json() {
        return output::print_json(&page.to_json("links"));
    }
    output::print(&links_table(filter.link_type.proto(), &page.rows))?;
    page.print_footer("links");
    Ok(())
}

async fn batch_map(
    ctx: &Ctx,
    measure_ids: Vec<i32>,
    area_ids: Vec<i32>,
    priority_ids: Vec<i32>,
) -> Result<(), Failure> {
    let req = pb::BatchCreateMeasureAreaPriorityLinksRequest {
        measure_ids,
        area_ids,
        priority_ids,
        request_id: ctx.request_id(),
    };
    let r = ctx
        .entity()
        .batch_create_measure_area_priority_links(ctx.req(req))
        .await?
        .into_inner();
    if ctx.json() {
        return output::print_json(&json!({
            "created": r.created.to_json(),
            "skipped_existing": r.skipped_existing.to_json(),
            "first_event_seq": r.first_event_seq,
            "replayed": r.replayed,
        }));
    }
    let mut text = format!(
        "created {} measure_area_priority link(s), skipped {} existing",
        r.created.len(),
        r.skipped_existing.len()
    );
    if !r.created.is_empty() {
        text.push_str(&format!(" (event seqs from {})", r.first_event_seq));
    }
    text.push('\n');
    if !r.created.is_empty() {
        text.push_str(&links_table(pb::LinkType::MeasureAreaPriority, &r.created));
    }
    output::print(&text)
}
