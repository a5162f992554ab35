//! `lnrs.v1.EntityService`: thin handlers over [`crate::app`]. Each RPC converts its message,
//! calls one use case and converts the result; the generic helpers below are shared by the six
//! entities.

use prost_types::FieldMask;
use tonic::{Request, Response, Status};

use super::convert::{self, key_from_int, key_from_text, EntityMessage};
use super::ctx::ctx;
use super::paging::{page_size, parse_order_by, PageQuery};
use super::wire::Encoded;
use crate::app::entities::{DeleteTarget, DeletedRow};
use crate::app::reads::Lookup;
use crate::app::undelete::UndeleteTarget;
use crate::app::{App, RequestCtx};
use crate::domain::query::LinkQuery;
use crate::domain::query::{Cursor, ListQuery};
use crate::domain::{EntityKind, Key, LinkKind};
use crate::error::Error;
use crate::pb::{self, entity_service_server::EntityService};

/// Default and largest entity page sizes.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Default and largest link page sizes.
pub const DEFAULT_LINK_PAGE_SIZE: usize = 100;
pub const MAX_LINK_PAGE_SIZE: usize = 5000;

/// The EntityService implementation.
#[derive(Clone)]
pub struct EntityApi {
    app: App,
}

impl EntityApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

type R<T> = Result<Response<T>, Status>;

fn required<T>(v: Option<T>, field: &str) -> Result<T, Error> {
    v.ok_or_else(|| Error::invalid(field, "FIELD_REQUIRED", "is required"))
}

fn key_required(k: Option<Key>, kind: EntityKind) -> Result<Key, Error> {
    let field = kind.def().key;
    let k = required(k, field)?;
    crate::domain::validate::validate_key(kind, &k).map_err(|v| Error::from(vec![v]))?;
    Ok(k)
}

impl EntityApi {
    async fn get<M: EntityMessage>(&self, key: Option<Key>) -> Result<M, Error> {
        let key = key_required(key, M::KIND)?;
        M::from_record(&*self.app.get_entity(M::KIND, key).await?)
    }

    /// One page, encoded: `respond` builds the List response from the page's messages, next
    /// page token and total. A page the cache served before is sent as the bytes encoded then:
    /// its token is bound to the query as the client wrote it (see [`PageQuery`]), so the
    /// bytes are kept under that binding, and a query written differently encodes afresh.
    async fn list<M: EntityMessage, Res: prost::Message>(
        &self,
        (size, token, search, order_by): (i32, &str, &str, &str),
        respond: impl FnOnce(Vec<M>, String, i64) -> Res,
    ) -> Result<Encoded, Error> {
        let order = parse_order_by(M::KIND, order_by)?;
        let q = PageQuery::new(&[M::KIND.name(), search, order_by]);
        let after: Option<Cursor> = q.cursor(token)?;
        let query = ListQuery {
            search: Some(search.trim().to_string()).filter(|s| !s.is_empty()),
            order_by: order,
            page_size: page_size(size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
            after,
        };
        let page = self.app.list_entities(M::KIND, query).await?;
        if let Some(bytes) = page.rendered.get(q.tag()) {
            return Ok(Encoded(bytes));
        }
        let next = page
            .next
            .as_ref()
            .map(|c| q.token(c))
            .transpose()?
            .unwrap_or_default();
        let items = page
            .records
            .iter()
            .map(M::from_record)
            .collect::<Result<_, _>>()?;
        let encoded = Encoded::of(&respond(items, next, page.total));
        page.rendered.set(q.tag(), encoded.0.clone());
        Ok(encoded)
    }

    async fn create<M: EntityMessage>(
        &self,
        c: RequestCtx,
        msg: Option<M>,
    ) -> Result<(M, u64, bool), Error> {
        let draft = required(msg, M::KIND.name())?.into_draft()?;
        let out = self.app.create_entity(c, draft).await?;
        Ok((
            M::from_record(&out.value.record)?,
            out.value.event_seq,
            out.replayed,
        ))
    }

    async fn update<M: EntityMessage>(
        &self,
        c: RequestCtx,
        msg: Option<M>,
        mask: Option<FieldMask>,
    ) -> Result<(M, u64, bool), Error> {
        let draft = required(msg, M::KIND.name())?.into_draft()?;
        key_required(draft.key.clone(), M::KIND)?;
        let mask = mask.map(|m| m.paths).unwrap_or_default();
        let out = self.app.update_entity(c, draft, mask).await?;
        Ok((
            M::from_record(&out.value.record)?,
            out.value.event_seq,
            out.replayed,
        ))
    }

    async fn delete<M: EntityMessage>(
        &self,
        c: RequestCtx,
        key: Option<Key>,
    ) -> Result<(pb::DeleteOutcome, Option<M>), Error> {
        let key = key_required(key, M::KIND)?;
        let out = self
            .app
            .delete(c, DeleteTarget::Entity(M::KIND, key))
            .await?;
        let d = &out.value;
        let before = match &d.row {
            DeletedRow::Entity(r) => Some(M::from_record(r)?),
            DeletedRow::Link(_) => None,
        };
        Ok((convert::deleted(d, out.replayed), before))
    }
}

/// Generates the five handlers of one entity. They are written in the desugared form that
/// `#[tonic::async_trait]` produces, because an attribute macro cannot see into the expansion
/// of a `macro_rules!` invocation inside the impl.
macro_rules! entity_handlers {
    ($msg:ident, $field:ident, $plural:ident, $key:ident, $key_in:ident,
     $get:ident $GetReq:ident $GetRes:ident, $list:ident $ListReq:ident $ListRes:ident,
     $create:ident $CreateReq:ident $CreateRes:ident, $update:ident $UpdateReq:ident $UpdateRes:ident,
     $delete:ident $DeleteReq:ident $DeleteRes:ident) => {
        fn $get<'a, 'async_trait>(
            &'a self,
            req: Request<pb::$GetReq>,
        ) -> Boxed<'async_trait, pb::$GetRes>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let r = req.into_inner();
                let m: pb::$msg = self.get($key_in(r.$key.clone())).await?;
                let mut res = pb::$GetRes::default();
                res.$field = Some(m);
                r.fill(&self.app, &mut res).await?;
                Ok(Response::new(res))
            })
        }

        fn $list<'a, 'async_trait>(
            &'a self,
            req: Request<pb::$ListReq>,
        ) -> Boxed<'async_trait, Encoded>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let r = req.into_inner();
                let args = (r.page_size, &*r.page_token, &*r.search, &*r.order_by);
                let page = self
                    .list(
                        args,
                        |$plural: Vec<pb::$msg>, next_page_token, total_size| pb::$ListRes {
                            $plural,
                            next_page_token,
                            total_size,
                        },
                    )
                    .await?;
                Ok(Response::new(page))
            })
        }

        fn $create<'a, 'async_trait>(
            &'a self,
            req: Request<pb::$CreateReq>,
        ) -> Boxed<'async_trait, pb::$CreateRes>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let c = ctx(&req, &req.get_ref().request_id)?;
                let (m, event_seq, replayed) = self.create(c, req.into_inner().$field).await?;
                Ok(Response::new(pb::$CreateRes {
                    $field: Some(m),
                    event_seq,
                    replayed,
                }))
            })
        }

        fn $update<'a, 'async_trait>(
            &'a self,
            req: Request<pb::$UpdateReq>,
        ) -> Boxed<'async_trait, pb::$UpdateRes>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let c = ctx(&req, &req.get_ref().request_id)?;
                let r = req.into_inner();
                let (m, event_seq, replayed) = self.update(c, r.$field, r.update_mask).await?;
                Ok(Response::new(pb::$UpdateRes {
                    $field: Some(m),
                    event_seq,
                    replayed,
                }))
            })
        }

        fn $delete<'a, 'async_trait>(
            &'a self,
            req: Request<pb::$DeleteReq>,
        ) -> Boxed<'async_trait, pb::$DeleteRes>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let c = ctx(&req, &req.get_ref().request_id)?;
                let (outcome, deleted) = self
                    .delete::<pb::$msg>(c, $key_in(req.into_inner().$key))
                    .await?;
                Ok(Response::new(pb::$DeleteRes {
                    outcome: Some(outcome),
                    deleted,
                }))
            })
        }
    };
}

/// What a Get request asks for besides the entity (GetArea: its geometry).
trait GetExtras<Res> {
    async fn fill(&self, _app: &crate::app::App, _res: &mut Res) -> Result<(), Error> {
        Ok(())
    }
}

impl GetExtras<pb::GetMeasureResponse> for pb::GetMeasureRequest {}
impl GetExtras<pb::GetPriorityResponse> for pb::GetPriorityRequest {}
impl GetExtras<pb::GetSpeciesResponse> for pb::GetSpeciesRequest {}
impl GetExtras<pb::GetHabitatResponse> for pb::GetHabitatRequest {}
impl GetExtras<pb::GetGrantResponse> for pb::GetGrantRequest {}

impl GetExtras<pb::GetAreaResponse> for pb::GetAreaRequest {
    async fn fill(
        &self,
        app: &crate::app::App,
        res: &mut pb::GetAreaResponse,
    ) -> Result<(), Error> {
        if self.include_geometry {
            let g = app.area_geometry(self.area_id).await?;
            res.geometry = Some(pb::AreaGeometry {
                geojson: g.geojson.unwrap_or_default(),
                wkb: g.shapes,
                geom_ids: g.geom_ids,
            });
        }
        Ok(())
    }
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = R<T>> + Send + 'a>>;

#[tonic::async_trait]
impl EntityService for EntityApi {
    entity_handlers!(Measure, measure, measures, measure_id, key_from_int,
        get_measure GetMeasureRequest GetMeasureResponse, list_measures ListMeasuresRequest ListMeasuresResponse,
        create_measure CreateMeasureRequest CreateMeasureResponse, update_measure UpdateMeasureRequest UpdateMeasureResponse,
        delete_measure DeleteMeasureRequest DeleteMeasureResponse);
    entity_handlers!(Area, area, areas, area_id, key_from_int,
        get_area GetAreaRequest GetAreaResponse, list_areas ListAreasRequest ListAreasResponse,
        create_area CreateAreaRequest CreateAreaResponse, update_area UpdateAreaRequest UpdateAreaResponse,
        delete_area DeleteAreaRequest DeleteAreaResponse);
    entity_handlers!(Priority, priority, priorities, priority_id, key_from_int,
        get_priority GetPriorityRequest GetPriorityResponse, list_priorities ListPrioritiesRequest ListPrioritiesResponse,
        create_priority CreatePriorityRequest CreatePriorityResponse, update_priority UpdatePriorityRequest UpdatePriorityResponse,
        delete_priority DeletePriorityRequest DeletePriorityResponse);
    entity_handlers!(Species, species, species, species_id, key_from_int,
        get_species GetSpeciesRequest GetSpeciesResponse, list_species ListSpeciesRequest ListSpeciesResponse,
        create_species CreateSpeciesRequest CreateSpeciesResponse, update_species UpdateSpeciesRequest UpdateSpeciesResponse,
        delete_species DeleteSpeciesRequest DeleteSpeciesResponse);
    entity_handlers!(Habitat, habitat, habitats, habitat_id, key_from_int,
        get_habitat GetHabitatRequest GetHabitatResponse, list_habitats ListHabitatsRequest ListHabitatsResponse,
        create_habitat CreateHabitatRequest CreateHabitatResponse, update_habitat UpdateHabitatRequest UpdateHabitatResponse,
        delete_habitat DeleteHabitatRequest DeleteHabitatResponse);
    entity_handlers!(Grant, grant, grants, grant_id, key_from_text,
        get_grant GetGrantRequest GetGrantResponse, list_grants ListGrantsRequest ListGrantsResponse,
        create_grant CreateGrantRequest CreateGrantResponse, update_grant UpdateGrantRequest UpdateGrantResponse,
        delete_grant DeleteGrantRequest DeleteGrantResponse);

    async fn get_delete_impact(
        &self,
        req: Request<pb::GetDeleteImpactRequest>,
    ) -> R<pb::GetDeleteImpactResponse> {
        use pb::get_delete_impact_request::Target;
        let target = match required(req.into_inner().target, "target")? {
            Target::MeasureId(i) => entity_target(EntityKind::Measure, key_from_int(i))?,
            Target::AreaId(i) => entity_target(EntityKind::Area, key_from_int(i))?,
            Target::PriorityId(i) => entity_target(EntityKind::Priority, key_from_int(i))?,
            Target::SpeciesId(i) => entity_target(EntityKind::Species, key_from_int(i))?,
            Target::HabitatId(i) => entity_target(EntityKind::Habitat, key_from_int(i))?,
            Target::GrantId(s) => entity_target(EntityKind::Grant, key_from_text(s))?,
            Target::Link(l) => DeleteTarget::Link(convert::link_in(Some(l))?),
        };
        let tables = self.app.delete_impact(target).await?;
        let total_rows = tables.iter().map(|t| t.rows.len() as i64).sum();
        Ok(Response::new(pb::GetDeleteImpactResponse {
            tables: tables
                .into_iter()
                .map(|t| pb::TableImpact {
                    table: t.table.to_string(),
                    key_columns: t.key_columns.iter().map(|c| c.to_string()).collect(),
                    rows: t
                        .rows
                        .into_iter()
                        .map(|values| pb::RowKey { values })
                        .collect(),
                })
                .collect(),
            total_rows,
        }))
    }

    async fn list_measure_types(
        &self,
        _: Request<pb::ListMeasureTypesRequest>,
    ) -> R<pb::ListMeasureTypesResponse> {
        let rows = self.app.lookup(Lookup::MeasureTypes).await?;
        Ok(Response::new(pb::ListMeasureTypesResponse {
            measure_types: rows
                .into_iter()
                .map(|r| pb::MeasureType {
                    measure_type_id: r.id,
                    measure_type: r.name,
                })
                .collect(),
        }))
    }

    async fn list_stakeholders(
        &self,
        _: Request<pb::ListStakeholdersRequest>,
    ) -> R<pb::ListStakeholdersResponse> {
        let rows = self.app.lookup(Lookup::Stakeholders).await?;
        Ok(Response::new(pb::ListStakeholdersResponse {
            stakeholders: rows
                .into_iter()
                .map(|r| pb::Stakeholder {
                    stakeholder_id: r.id,
                    stakeholder: r.name,
                })
                .collect(),
        }))
    }

    async fn list_benefits(
        &self,
        _: Request<pb::ListBenefitsRequest>,
    ) -> R<pb::ListBenefitsResponse> {
        let rows = self.app.lookup(Lookup::Benefits).await?;
        Ok(Response::new(pb::ListBenefitsResponse {
            benefits: rows
                .into_iter()
                .map(|r| pb::Benefit {
                    benefit_id: r.id,
                    benefit: r.name,
                })
                .collect(),
        }))
    }

    async fn list_funding_schemes(
        &self,
        req: Request<pb::ListFundingSchemesRequest>,
    ) -> R<pb::ListFundingSchemesResponse> {
        let area = req.into_inner().area_id;
        let rows = self
            .app
            .funding_schemes((area != 0).then_some(area))
            .await?;
        Ok(Response::new(pb::ListFundingSchemesResponse {
            funding_schemes: rows
                .into_iter()
                .map(|r| pb::FundingScheme {
                    id: r.id,
                    area_id: r.area_id,
                    area_name: r.area_name,
                    local_funding_schemes: r.local_funding_schemes,
                })
                .collect(),
        }))
    }

    async fn create_link(&self, req: Request<pb::CreateLinkRequest>) -> R<pb::CreateLinkResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let link = convert::link_in(req.into_inner().link)?;
        let out = self.app.create_link(c, link).await?;
        Ok(Response::new(pb::CreateLinkResponse {
            link: Some(convert::link_out(&out.value.link)),
            event_seq: out.value.event_seq,
            replayed: out.replayed,
        }))
    }

    async fn delete_link(&self, req: Request<pb::DeleteLinkRequest>) -> R<pb::DeleteLinkResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let link = convert::link_in(req.into_inner().link)?;
        let out = self.app.delete(c, DeleteTarget::Link(link)).await?;
        Ok(Response::new(pb::DeleteLinkResponse {
            outcome: Some(convert::deleted(&out.value, out.replayed)),
        }))
    }

    async fn list_links(&self, req: Request<pb::ListLinksRequest>) -> R<pb::ListLinksResponse> {
        let r = req.into_inner();
        let kind = convert::link_kind_in(r.link_type)?;
        let filters = link_filters(kind, &r)?;
        let q = PageQuery::new(&[kind.table(), &format!("{filters:?}")]);
        let after: Option<Vec<Key>> = q.cursor(&r.page_token)?;
        let query = LinkQuery {
            kind,
            filters,
            page_size: page_size(r.page_size, DEFAULT_LINK_PAGE_SIZE, MAX_LINK_PAGE_SIZE)?,
            after,
        };
        let (links, total_size, more) = self.app.list_links(query).await?;
        let next_page_token = match (more, links.last()) {
            (true, Some(last)) => q.token(&last.key)?,
            _ => String::new(),
        };
        Ok(Response::new(pb::ListLinksResponse {
            links: links.iter().map(convert::link_out).collect(),
            next_page_token,
            total_size,
        }))
    }

    async fn undelete(&self, req: Request<pb::UndeleteRequest>) -> R<pb::UndeleteResponse> {
        use pb::undelete_request::Delete;
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let target = match r.delete {
            Some(Delete::EventSeq(seq)) if seq > 0 => UndeleteTarget::Event(seq),
            Some(Delete::SnapshotId(id)) if !id.is_empty() => UndeleteTarget::Snapshot(id),
            _ => {
                return Err(Error::invalid(
                    "delete",
                    "DELETE_NOT_NAMED",
                    "name the delete to undo by its event_seq or its snapshot_id",
                )
                .into())
            }
        };
        let out = self.app.undelete(c, target, r.dry_run).await?;
        Ok(Response::new(convert::undeleted(&out.value, out.replayed)))
    }

    async fn batch_create_measure_area_priority_links(
        &self,
        req: Request<pb::BatchCreateMeasureAreaPriorityLinksRequest>,
    ) -> R<pb::BatchCreateMeasureAreaPriorityLinksResponse> {
        let c = ctx(&req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let ids = |v: Vec<i32>, field: &str| -> Result<Vec<i32>, Error> {
            if v.is_empty() {
                return Err(Error::invalid(
                    field,
                    "FIELD_REQUIRED",
                    "needs at least one id",
                ));
            }
            if v.iter().any(|i| *i <= 0) {
                return Err(Error::invalid(field, "INVALID_ID", "ids must be positive"));
            }
            let mut v = v;
            v.sort_unstable();
            v.dedup();
            Ok(v)
        };
        let (m, a, p) = (
            ids(r.measure_ids, "measure_ids")?,
            ids(r.area_ids, "area_ids")?,
            ids(r.priority_ids, "priority_ids")?,
        );
        // Checked: three lists of a few million ids each (a large message limit allows that)
        // overflow the product.
        let links = m
            .len()
            .checked_mul(a.len())
            .and_then(|n| n.checked_mul(p.len()));
        if links.is_none_or(|n| n > MAX_BATCH_LINKS) {
            return Err(Error::invalid(
                "measure_ids",
                "BATCH_TOO_LARGE",
                format!(
                    "the product has {} × {} × {} links; at most {MAX_BATCH_LINKS} per request",
                    m.len(),
                    a.len(),
                    p.len()
                ),
            )
            .into());
        }
        let out = self.app.bulk_create_map(c, m, a, p).await?;
        Ok(Response::new(
            pb::BatchCreateMeasureAreaPriorityLinksResponse {
                created: out.value.created.iter().map(convert::link_out).collect(),
                skipped_existing: out
                    .value
                    .skipped_existing
                    .iter()
                    .map(convert::link_out)
                    .collect(),
                first_event_seq: out.value.first_event_seq,
                replayed: out.replayed,
            },
        ))
    }
}

/// Largest MAP product one batch may create (it is one transaction and one event per link).
pub const MAX_BATCH_LINKS: usize = 10_000;

fn entity_target(kind: EntityKind, key: Option<Key>) -> Result<DeleteTarget, Error> {
    Ok(DeleteTarget::Entity(kind, key_required(key, kind)?))
}

fn link_filters(
    kind: LinkKind,
    r: &pb::ListLinksRequest,
) -> Result<Vec<(&'static str, Key)>, Error> {
    let given: [(&'static str, Option<Key>); 6] = [
        ("measure_id", key_from_int(r.measure_id)),
        ("area_id", key_from_int(r.area_id)),
        ("priority_id", key_from_int(r.priority_id)),
        ("species_id", key_from_int(r.species_id)),
        ("habitat_id", key_from_int(r.habitat_id)),
        ("grant_id", key_from_text(r.grant_id.clone())),
    ];
    let mut out = Vec::new();
    for (name, v) in given {
        let Some(v) = v else { continue };
        if !kind.columns().iter().any(|c| c.name == name) {
            return Err(Error::invalid(
                name,
                "FILTER_NOT_APPLICABLE",
                format!("{} links have no {name}", kind.table()),
            ));
        }
        out.push((name, v));
    }
    Ok(out)
}
