//! EntityService against a real server on 127.0.0.1:0: CRUD for every entity, validation,
//! pagination, measure sets, links, delete impact and exact cascades.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{reason, TestServer};
use lnrs::pb;
use prost_types::FieldMask;
use tonic::Code;

fn measure(name: &str) -> pb::Measure {
    pb::Measure {
        measure: name.into(),
        core_supplementary: "Core (BNG)".into(),
        mapped_unmapped: Some("Mapped".into()),
        link_to_further_guidance: Some("https://example.org/guidance".into()),
        measure_type_ids: vec![1, 2],
        stakeholder_ids: vec![1],
        benefit_ids: vec![3],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip_for_every_entity() {
    let s = TestServer::start().await;
    let mut c = s.entity();

    // Measure
    let created = c
        .create_measure(pb::CreateMeasureRequest {
            measure: Some(measure("Plant hedgerows")),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let m = created.measure.unwrap();
    assert!(
        m.measure_id > 168,
        "id assigned after the reference rows: {}",
        m.measure_id
    );
    assert!(created.event_seq > 0);
    let got = c
        .get_measure(pb::GetMeasureRequest {
            measure_id: m.measure_id,
        })
        .await
        .unwrap()
        .into_inner()
        .measure
        .unwrap();
    assert_eq!(got, m);
    let updated = c
        .update_measure(pb::UpdateMeasureRequest {
            measure: Some(pb::Measure {
                measure_id: m.measure_id,
                concise_measure: Some("Hedges".into()),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["concise_measure".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .measure
        .unwrap();
    assert_eq!(updated.concise_measure.as_deref(), Some("Hedges"));
    assert_eq!(
        updated.measure, "Plant hedgerows",
        "fields outside the mask are kept"
    );
    assert_eq!(updated.measure_type_ids, vec![1, 2]);
    let deleted = c
        .delete_measure(pb::DeleteMeasureRequest {
            measure_id: m.measure_id,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted.unwrap().measure_id, m.measure_id);
    let gone = c
        .get_measure(pb::GetMeasureRequest {
            measure_id: m.measure_id,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(reason(&gone), "NOT_FOUND");

    // Area
    let a = c
        .create_area(pb::CreateAreaRequest {
            area: Some(pb::Area {
                area_name: "Test Vale".into(),
                area_description: "A vale".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .area
        .unwrap();
    assert_eq!(
        c.get_area(pb::GetAreaRequest {
            area_id: a.area_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .area
        .unwrap(),
        a
    );
    let a2 = c
        .update_area(pb::UpdateAreaRequest {
            area: Some(pb::Area {
                area_id: a.area_id,
                area_link: Some("https://example.org/vale".into()),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["area_link".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .area
        .unwrap();
    assert_eq!(a2.area_link.as_deref(), Some("https://example.org/vale"));
    c.delete_area(pb::DeleteAreaRequest {
        area_id: a.area_id,
        request_id: String::new(),
    })
    .await
    .unwrap();

    // Priority (theme normalised)
    let p = c
        .create_priority(pb::CreatePriorityRequest {
            priority: Some(pb::Priority {
                biodiversity_priority: "More ponds".into(),
                theme: "Wetlands,\u{a0}rivers and  floodplains ".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .priority
        .unwrap();
    assert_eq!(p.theme, "Wetlands, rivers and floodplains");
    c.delete_priority(pb::DeletePriorityRequest {
        priority_id: p.priority_id,
        request_id: String::new(),
    })
    .await
    .unwrap();

    // Species (the original could not create species at all)
    let sp = c
        .create_species(pb::CreateSpeciesRequest {
            species: Some(pb::Species {
                taxa: "Bird".into(),
                common_name: "Nightingale".into(),
                assemblage: "Birds".into(),
                scientific_name: "Luscinia megarhynchos".into(),
                order: Some("Passeriformes".into()),
                class: Some("Aves".into()),
                family: Some("Muscicapidae".into()),
                verbatim_index: Some(7),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .species
        .unwrap();
    assert_eq!(sp.linnaean_name.as_deref(), Some("Luscinia megarhynchos"));
    assert_eq!(sp.order.as_deref(), Some("Passeriformes"));
    assert_eq!(
        c.get_species(pb::GetSpeciesRequest {
            species_id: sp.species_id
        })
        .await
        .unwrap()
        .into_inner()
        .species
        .unwrap(),
        sp
    );
    c.delete_species(pb::DeleteSpeciesRequest {
        species_id: sp.species_id,
        request_id: String::new(),
    })
    .await
    .unwrap();

    // Habitat
    let h = c
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat: "Reedbed".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .habitat
        .unwrap();
    let h2 = c
        .update_habitat(pb::UpdateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: h.habitat_id,
                habitat: "Reedbeds".into(),
            }),
            update_mask: None,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .habitat
        .unwrap();
    assert_eq!(h2.habitat, "Reedbeds");
    c.delete_habitat(pb::DeleteHabitatRequest {
        habitat_id: h.habitat_id,
        request_id: String::new(),
    })
    .await
    .unwrap();

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_ids_are_free_text_stored_verbatim() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    for id in ["../../etc/x", "a/b", "CAB5-new", "..\\x"] {
        let g = pb::Grant {
            grant_id: id.into(),
            grant_name: format!("Grant {id}"),
            grant_scheme: "Test scheme".into(),
            url: Some("https://example.org/g".into()),
            grant_summary: None,
        };
        let created = c
            .create_grant(pb::CreateGrantRequest {
                grant: Some(g.clone()),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.grant.unwrap(), g);
        let got = c
            .get_grant(pb::GetGrantRequest {
                grant_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .grant
            .unwrap();
        assert_eq!(got.grant_id, id);
        let dup = c
            .create_grant(pb::CreateGrantRequest {
                grant: Some(g.clone()),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists);
        let del = c
            .delete_grant(pb::DeleteGrantRequest {
                grant_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let snap = del.outcome.unwrap().snapshot_id;
        assert!(
            !snap.contains('/') && !snap.contains(".."),
            "snapshot ids never contain caller text: {snap}"
        );
    }
    // Nothing escaped the data directory.
    assert!(!s.data_dir.parent().unwrap().join("x").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_names_every_bad_field() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    let fields = |st: &tonic::Status| -> BTreeSet<String> {
        use tonic_types::StatusExt;
        st.get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default()
    };
    let bad = c
        .create_measure(pb::CreateMeasureRequest {
            measure: Some(pb::Measure {
                measure: "  ".into(),
                core_supplementary: "Core".into(),
                mapped_unmapped: Some("Maybe".into()),
                link_to_further_guidance: Some("ftp:/nope".into()),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(reason(&bad), "VALIDATION_FAILED");
    assert_eq!(
        fields(&bad),
        [
            "core_supplementary",
            "link_to_further_guidance",
            "mapped_unmapped",
            "measure"
        ]
        .map(String::from)
        .into()
    );
    let bad = c
        .create_area(pb::CreateAreaRequest {
            area: Some(pb::Area {
                area_name: "x".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["area_description".to_string()].into());
    let bad = c
        .create_priority(pb::CreatePriorityRequest {
            priority: Some(pb::Priority {
                biodiversity_priority: "x".into(),
                theme: "Desert".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["theme".to_string()].into());
    let bad = c
        .create_species(pb::CreateSpeciesRequest {
            species: Some(pb::Species {
                taxa: "Dragon".into(),
                common_name: "x".into(),
                assemblage: "Birds".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        fields(&bad),
        ["scientific_name", "taxa"].map(String::from).into()
    );
    let bad = c
        .create_habitat(pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat::default()),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["habitat".to_string()].into());
    let bad = c
        .create_grant(pb::CreateGrantRequest {
            grant: Some(pb::Grant {
                grant_id: "X\n".into(),
                grant_name: "n".into(),
                grant_scheme: String::new(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        fields(&bad),
        ["grant_id", "grant_scheme"].map(String::from).into()
    );
    // Unknown mask field, unknown id.
    let bad = c
        .update_habitat(pb::UpdateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: 1,
                habitat: "x".into(),
            }),
            update_mask: Some(FieldMask {
                paths: vec!["colour".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), reason(&bad).as_str()),
        (Code::InvalidArgument, "UNKNOWN_FIELD_IN_MASK")
    );
    let missing = c
        .get_area(pb::GetAreaRequest {
            area_id: 999_999,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let zero = c
        .get_area(pb::GetAreaRequest {
            area_id: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    // A measure type that does not exist.
    let mut m = measure("x");
    m.measure_type_ids = vec![999];
    let bad = c
        .create_measure(pb::CreateMeasureRequest {
            measure: Some(m),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), reason(&bad).as_str()),
        (Code::FailedPrecondition, "REFERENCED_ROW_NOT_FOUND")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_returns_every_row_exactly_once() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    for order_by in [
        "",
        "measure desc",
        "core_supplementary, mapped_unmapped desc",
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = c
                .list_measures(pb::ListMeasuresRequest {
                    page_size: 17,
                    page_token: token.clone(),
                    search: String::new(),
                    order_by: order_by.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(page.total_size, 168);
            seen.extend(page.measures.iter().map(|m| m.measure_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let unique: BTreeSet<_> = seen.iter().copied().collect();
        assert_eq!(seen.len(), 168, "order_by={order_by:?}");
        assert_eq!(unique.len(), 168, "no duplicates for order_by={order_by:?}");
    }
    // A token from another query is refused.
    let p = c
        .list_measures(pb::ListMeasuresRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bad = c
        .list_measures(pb::ListMeasuresRequest {
            page_size: 5,
            page_token: p.next_page_token,
            search: "x".into(),
            order_by: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bad), "INVALID_PAGE_TOKEN");
    // Queries written differently that read the same cached page ("land" and " land ",
    // "measure desc" and "measure  desc") each get tokens bound to the query as written: a
    // page's encoding, kept with the cached page, is never handed to the other query.
    for variants in [["land", " land "], ["", "  "]] {
        for order_by in ["measure desc", "measure  desc"] {
            for search in variants {
                let first = pb::ListMeasuresRequest {
                    page_size: 2,
                    search: search.into(),
                    order_by: order_by.into(),
                    ..Default::default()
                };
                let p = c.list_measures(first.clone()).await.unwrap().into_inner();
                assert!(
                    !p.next_page_token.is_empty(),
                    "{search:?} has a second page"
                );
                let next = c
                    .list_measures(pb::ListMeasuresRequest {
                        page_token: p.next_page_token,
                        ..first
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{search:?} {order_by:?}: {e:?}"))
                    .into_inner();
                assert_eq!(next.measures.len(), 2);
            }
        }
    }
    let bad = c
        .list_measures(pb::ListMeasuresRequest {
            order_by: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bad), "INVALID_ORDER_BY");
    // Search is a case-insensitive substring over the named columns.
    let birds = c
        .list_species(pb::ListSpeciesRequest {
            search: "bIrDs".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(birds.total_size > 0);
    assert!(birds
        .species
        .iter()
        .all(|s| s.assemblage == "Birds" || format!("{s:?}").to_lowercase().contains("birds")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_sets_are_replaced_atomically() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    let m = c
        .create_measure(pb::CreateMeasureRequest {
            measure: Some(measure("Sets")),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .measure
        .unwrap();
    let upd = c
        .update_measure(pb::UpdateMeasureRequest {
            measure: Some(pb::Measure {
                measure_id: m.measure_id,
                measure_type_ids: vec![3, 2, 3],
                benefit_ids: vec![],
                stakeholder_ids: vec![5],
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["measure_type_ids".into(), "benefit_ids".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .measure
        .unwrap();
    assert_eq!(upd.measure_type_ids, vec![2, 3]);
    assert_eq!(upd.benefit_ids, Vec::<i32>::new());
    assert_eq!(upd.stakeholder_ids, vec![1], "not in the mask: unchanged");
    // One bad id fails the whole update: nothing of it is applied.
    let bad = c
        .update_measure(pb::UpdateMeasureRequest {
            measure: Some(pb::Measure {
                measure_id: m.measure_id,
                measure_type_ids: vec![1],
                stakeholder_ids: vec![999],
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["measure_type_ids".into(), "stakeholder_ids".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::FailedPrecondition);
    let now = c
        .get_measure(pb::GetMeasureRequest {
            measure_id: m.measure_id,
        })
        .await
        .unwrap()
        .into_inner()
        .measure
        .unwrap();
    assert_eq!(now.measure_type_ids, vec![2, 3]);
    assert_eq!(now.stakeholder_ids, vec![1]);
    s.stop().await;
}

fn impact_counts(r: &pb::GetDeleteImpactResponse) -> BTreeMap<String, i64> {
    r.tables
        .iter()
        .map(|t| (t.table.clone(), t.rows.len() as i64))
        .collect()
}

/// Deletes each kind of entity and link, checking that the rows removed per table equal the
/// preview, the response's counts, and the before/after table counts of the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascades_remove_exactly_the_previewed_rows() {
    use pb::get_delete_impact_request::Target;
    let s = TestServer::start().await;
    let mut c = s.entity();
    let targets: Vec<(Target, &[&str])> = vec![
        (
            Target::MeasureId(3),
            &[
                "measure",
                "measure_has_type",
                "measure_has_stakeholder",
                "measure_has_benefits",
                "measure_has_species",
                "measure_area_priority",
                "measure_area_priority_grant",
            ],
        ),
        (
            Target::AreaId(5),
            &[
                "area",
                "measure_area_priority",
                "measure_area_priority_grant",
                "species_area_priority",
                "area_funding_schemes",
                "habitat_creation_area",
                "habitat_management_area",
                "area_geom",
            ],
        ),
        (
            Target::PriorityId(7),
            &[
                "priority",
                "measure_area_priority",
                "measure_area_priority_grant",
                "species_area_priority",
            ],
        ),
        (
            Target::SpeciesId(4),
            &["species", "species_area_priority", "measure_has_species"],
        ),
        (
            Target::HabitatId(2),
            &[
                "habitat",
                "habitat_creation_area",
                "habitat_management_area",
            ],
        ),
    ];
    let mut expected_total: BTreeMap<String, i64> = BTreeMap::new();
    for (target, allowed) in targets {
        let impact = c
            .get_delete_impact(pb::GetDeleteImpactRequest {
                target: Some(target.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        let counts = impact_counts(&impact);
        for t in counts.keys() {
            assert!(allowed.contains(&t.as_str()), "{target:?} would touch {t}");
        }
        assert_eq!(impact.total_rows, counts.values().sum::<i64>());
        let outcome = match target {
            Target::MeasureId(i) => {
                c.delete_measure(pb::DeleteMeasureRequest {
                    measure_id: i,
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .outcome
            }
            Target::AreaId(i) => {
                c.delete_area(pb::DeleteAreaRequest {
                    area_id: i,
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .outcome
            }
            Target::PriorityId(i) => {
                c.delete_priority(pb::DeletePriorityRequest {
                    priority_id: i,
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .outcome
            }
            Target::SpeciesId(i) => {
                c.delete_species(pb::DeleteSpeciesRequest {
                    species_id: i,
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .outcome
            }
            Target::HabitatId(i) => {
                c.delete_habitat(pb::DeleteHabitatRequest {
                    habitat_id: i,
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .outcome
            }
            _ => unreachable!(),
        }
        .unwrap();
        let removed: BTreeMap<String, i64> = outcome
            .rows_removed
            .iter()
            .map(|r| (r.table.clone(), r.rows))
            .collect();
        assert_eq!(
            removed,
            counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect::<BTreeMap<_, _>>()
        );
        for (t, n) in removed {
            *expected_total.entry(t).or_default() += n;
        }
    }
    // A grant: only its MAPG rows go with it.
    let g = c
        .list_grants(pb::ListGrantsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants
        .remove(0);
    let impact = c
        .get_delete_impact(pb::GetDeleteImpactRequest {
            target: Some(Target::GrantId(g.grant_id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    for t in impact_counts(&impact).keys() {
        assert!(["grant_table", "measure_area_priority_grant"].contains(&t.as_str()));
    }
    let out = c
        .delete_grant(pb::DeleteGrantRequest {
            grant_id: g.grant_id,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    for r in out.rows_removed {
        *expected_total.entry(r.table).or_default() += r.rows;
    }
    // A MAP link takes its MAPG rows with it.
    let l = c
        .list_links(pb::ListLinksRequest {
            link_type: pb::LinkType::MeasureAreaPriorityGrant as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links
        .remove(0);
    let map = pb::Link {
        link_type: pb::LinkType::MeasureAreaPriority as i32,
        grant_id: String::new(),
        ..l
    };
    let impact = c
        .get_delete_impact(pb::GetDeleteImpactRequest {
            target: Some(Target::Link(map.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        impact.tables.last().unwrap().table,
        "measure_area_priority",
        "the target goes last"
    );
    assert!(impact_counts(&impact)["measure_area_priority_grant"] >= 1);
    let out = c
        .delete_link(pb::DeleteLinkRequest {
            link: Some(map),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap();
    assert!(
        !out.snapshot_id.is_empty(),
        "link deletes are snapshotted too"
    );
    for r in out.rows_removed {
        *expected_total.entry(r.table).or_default() += r.rows;
    }

    let dir = s.stop().await.unwrap();
    let before = crate::common::table_counts(
        &crate::common::data_dir_with_reference()
            .path()
            .join("lnrs.duckdb"),
    );
    let after = crate::common::table_counts(&dir.path().join("lnrs.duckdb"));
    for (t, n) in &before {
        let removed = expected_total.get(t).copied().unwrap_or(0);
        assert_eq!(
            after[t],
            n - removed,
            "table {t}: before {n}, removed {removed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_check_references_and_bulk_create_skips_existing() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    let link = |m, a, p| pb::Link {
        link_type: pb::LinkType::MeasureAreaPriority as i32,
        measure_id: m,
        area_id: a,
        priority_id: p,
        ..Default::default()
    };
    let missing = c
        .create_link(pb::CreateLinkRequest {
            link: Some(link(9999, 1, 1)),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), reason(&missing).as_str()),
        (Code::FailedPrecondition, "REFERENCED_ROW_NOT_FOUND")
    );
    assert_eq!(
        crate::common::error_meta(&missing, "table").as_deref(),
        Some("measure")
    );
    let wrong = c
        .create_link(pb::CreateLinkRequest {
            link: Some(pb::Link {
                link_type: pb::LinkType::HabitatCreationArea as i32,
                measure_id: 1,
                area_id: 1,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let existing = c
        .list_links(pb::ListLinksRequest {
            link_type: pb::LinkType::MeasureAreaPriority as i32,
            measure_id: 1,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links
        .remove(0);
    let batch = c
        .batch_create_measure_area_priority_links(pb::BatchCreateMeasureAreaPriorityLinksRequest {
            measure_ids: vec![existing.measure_id, 2],
            area_ids: vec![existing.area_id],
            priority_ids: vec![existing.priority_id, 1],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(batch.skipped_existing.contains(&existing));
    assert_eq!(batch.created.len() + batch.skipped_existing.len(), 4);
    let dup = c
        .create_link(pb::CreateLinkRequest {
            link: Some(existing.clone()),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    // Paging links returns each once.
    let mut token = String::new();
    let mut n = 0;
    loop {
        let p = c
            .list_links(pb::ListLinksRequest {
                link_type: pb::LinkType::HabitatManagementArea as i32,
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        n += p.links.len();
        if p.next_page_token.is_empty() {
            assert_eq!(n as i64, p.total_size);
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!(n, 817);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_list_the_reference_values() {
    let s = TestServer::start().await;
    let mut c = s.entity();
    assert_eq!(
        c.list_measure_types(pb::ListMeasureTypesRequest {})
            .await
            .unwrap()
            .into_inner()
            .measure_types
            .len(),
        11
    );
    assert_eq!(
        c.list_stakeholders(pb::ListStakeholdersRequest {})
            .await
            .unwrap()
            .into_inner()
            .stakeholders
            .len(),
        5
    );
    assert_eq!(
        c.list_benefits(pb::ListBenefitsRequest {})
            .await
            .unwrap()
            .into_inner()
            .benefits
            .len(),
        8
    );
    let all = c
        .list_funding_schemes(pb::ListFundingSchemesRequest { area_id: 0 })
        .await
        .unwrap()
        .into_inner()
        .funding_schemes;
    let one = c
        .list_funding_schemes(pb::ListFundingSchemesRequest { area_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .funding_schemes;
    assert!(!all.is_empty() && one.iter().all(|f| f.area_id == 1) && one.len() < all.len());
    s.stop().await;
}
