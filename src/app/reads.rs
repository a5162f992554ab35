//! Read use cases, served from the read pool (never the writer): get, list, delete-impact
//! previews, lookups, links, and pages of the event log.

use std::sync::Arc;

use super::entities::DeleteTarget;
use super::App;
use crate::domain::query::LinkQuery;
use crate::domain::query::{ListQuery, Page};
use crate::domain::{EntityKind, Key, Link, Record, Value};
use crate::error::Error;
use crate::events::{log as event_log, Event, EventError, EventFilter};
use crate::storage::cascade::{self, TableImpact};
use crate::storage::entities;
use crate::storage::links;
use crate::storage::StorageError;

/// The lookup tables a measure's sets refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    MeasureTypes,
    Stakeholders,
    Benefits,
}

impl Lookup {
    /// Table and (id, name) columns.
    fn source(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Lookup::MeasureTypes => ("measure_type", &["measure_type_id", "measure_type"]),
            Lookup::Stakeholders => ("stakeholder", &["stakeholder_id", "stakeholder"]),
            Lookup::Benefits => ("benefits", &["benefit_id", "benefit"]),
        }
    }
}

/// One row of a lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRow {
    pub id: i32,
    pub name: String,
}

/// One local funding scheme of an area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingScheme {
    pub id: i32,
    pub area_id: i32,
    pub area_name: Option<String>,
    pub local_funding_schemes: Option<String>,
}

fn id_of(v: &Value) -> i32 {
    v.as_text().and_then(|s| s.parse().ok()).unwrap_or_default()
}

/// A page of the event log.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<Arc<Event>>,
    pub next_start_after: u64,
    pub head: u64,
    pub first: u64,
}

impl App {
    /// One entity, or NotFound; from the record cache when nothing changed since it was read.
    pub async fn get_entity(&self, kind: EntityKind, key: Key) -> Result<Arc<Record>, Error> {
        // Read before the database: the row is then at least as new as this generation.
        let generation = self.shared.reads.generation();
        if let Some(hit) = generation.and_then(|g| self.shared.records.get(g, kind, &key)) {
            return Ok(hit);
        }
        let record = Arc::new(self.read_entity(kind, key).await?);
        if let Some(g) = generation {
            self.shared.records.put(g, &record);
        }
        Ok(record)
    }

    async fn read_entity(&self, kind: EntityKind, key: Key) -> Result<Record, Error> {
        self.shared
            .reads
            .read(move |conn| {
                entities::get(conn, kind, &key)?.ok_or_else(|| {
                    Error::from(StorageError::NotFound {
                        table: kind.def().table,
                        key: key.to_string(),
                    })
                })
            })
            .await
    }

    /// A page of entities; from the cache when nothing changed since it was read.
    pub async fn list_entities(&self, kind: EntityKind, q: ListQuery) -> Result<Arc<Page>, Error> {
        // Read before the database, as for Get.
        let generation = self.shared.reads.generation();
        if let Some(hit) = generation.and_then(|g| self.shared.records.page(g, kind, &q)) {
            return Ok(hit);
        }
        let key = generation.map(|_| q.clone());
        let page = Arc::new(
            self.shared
                .reads
                .read(move |conn| Ok::<_, Error>(entities::list(conn, kind, &q)?))
                .await?,
        );
        if let (Some(g), Some(q)) = (generation, key) {
            self.shared.records.put_page(g, kind, q, &page);
        }
        Ok(page)
    }

    /// Exactly the rows a delete would remove, per table, read in one transaction.
    pub async fn delete_impact(&self, target: DeleteTarget) -> Result<Vec<TableImpact>, Error> {
        self.shared
            .reads
            .read(move |conn| {
                target.load(conn)?;
                Ok(cascade::impact(conn, &cascade::plan(target.root()))?)
            })
            .await
    }

    /// Every row of a lookup table, by id.
    pub async fn lookup(&self, table: Lookup) -> Result<Vec<LookupRow>, Error> {
        let (name, columns) = table.source();
        let rows = self
            .shared
            .reads
            .read(move |conn| Ok::<_, Error>(entities::lookup(conn, name, columns, None)?))
            .await?;
        Ok(rows
            .iter()
            .map(|r| LookupRow {
                id: id_of(&r[0]),
                name: r[1].opt_text().unwrap_or_default(),
            })
            .collect())
    }

    /// The local funding schemes, of one area or (None) of all.
    pub async fn funding_schemes(&self, area: Option<i32>) -> Result<Vec<FundingScheme>, Error> {
        const COLUMNS: &[&str] = &["id", "area_id", "area_name", "local_funding_schemes"];
        let filter = area.map(|a| ("area_id", a));
        let rows = self
            .shared
            .reads
            .read(move |conn| {
                Ok::<_, Error>(entities::lookup(
                    conn,
                    "area_funding_schemes",
                    COLUMNS,
                    filter,
                )?)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| FundingScheme {
                id: id_of(&r[0]),
                area_id: id_of(&r[1]),
                area_name: r[2].opt_text(),
                local_funding_schemes: r[3].opt_text(),
            })
            .collect())
    }

    /// A page of links.
    pub async fn list_links(&self, q: LinkQuery) -> Result<(Vec<Link>, i64, bool), Error> {
        self.shared
            .reads
            .read(move |conn| Ok(links::list(conn, &q)?))
            .await
    }

    /// A page of the event log after `after` (exclusive; 0 = from the oldest retained event).
    pub async fn list_events(
        &self,
        after: u64,
        limit: usize,
        filter: EventFilter,
    ) -> Result<EventPage, Error> {
        if after != 0 {
            self.shared.hub.check_start(Some(after))?;
        }
        self.shared
            .reads
            .read(move |conn| {
                let bounds = event_log::bounds(conn)?;
                let after = if after == 0 {
                    bounds.first.saturating_sub(1)
                } else {
                    after
                };
                if after.saturating_add(1) < bounds.first {
                    return Err(EventError::Compacted {
                        first_available: bounds.first,
                    }
                    .into());
                }
                let events = event_log::read_after(conn, after, limit, &filter)?;
                // A short page means everything up to the head was examined.
                let next_start_after = if events.len() < limit {
                    bounds.head.max(after)
                } else {
                    events.last().map_or(after, |e| e.seq)
                };
                Ok(EventPage {
                    events: events.into_iter().map(Arc::new).collect(),
                    next_start_after,
                    head: bounds.head,
                    first: bounds.first,
                })
            })
            .await
    }
}

/// An area's geometry (GetArea with include_geometry).
#[derive(Debug, Clone, Default)]
pub struct AreaGeometry {
    pub geom_ids: Vec<i32>,
    /// The stored WKB of each row, in geom_id order.
    pub shapes: Vec<Vec<u8>>,
    /// GeoJSON of the whole (None without rows).
    pub geojson: Option<String>,
}

impl App {
    /// The area_geom rows of an area, decoded to GeoJSON.
    pub async fn area_geometry(&self, area_id: i32) -> Result<AreaGeometry, Error> {
        let rows = self
            .shared
            .reads
            .read(move |conn| Ok::<_, Error>(entities::area_shapes(conn, area_id)?))
            .await?;
        let (geom_ids, shapes): (Vec<i32>, Vec<Vec<u8>>) = rows.into_iter().unzip();
        let geojson = crate::domain::geometry::area_geometry(&shapes)
            .map_err(|e| Error::Internal(format!("stored geometry of area {area_id}: {e}")))?
            .map(|g| g.to_string());
        Ok(AreaGeometry {
            geom_ids,
            shapes,
            geojson,
        })
    }
}
