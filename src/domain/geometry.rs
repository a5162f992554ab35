//! Area geometry: the WKB stored in `area_geom.geo_shape`, decoded in Rust (the DuckDB spatial
//! extension cannot be downloaded at run time) into GeoJSON for GetArea and the GeoJSON export,
//! and WKT for CSV; WKT from the original's CSV exports encoded back to WKB for imports.

use geo_traits::to_geo::ToGeoGeometry;
use geo_types::{Geometry, MultiPolygon};
use wkt::ToWkt;

/// Why bytes or text are not a geometry (said in import reports and errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid geometry: {0}")]
pub struct GeometryError(pub String);

/// Decodes WKB (ISO or extended, either byte order).
pub fn from_wkb(wkb: &[u8]) -> Result<Geometry<f64>, GeometryError> {
    let parsed = wkb::reader::read_wkb(wkb).map_err(|e| GeometryError(e.to_string()))?;
    Ok(parsed.to_geometry())
}

/// Encodes as little-endian ISO WKB (what the service stores).
pub fn to_wkb(g: &Geometry<f64>) -> Result<Vec<u8>, GeometryError> {
    let mut out = Vec::new();
    let options = wkb::writer::WriteOptions {
        endianness: wkb::Endianness::LittleEndian,
    };
    wkb::writer::write_geometry(&mut out, g, &options).map_err(|e| GeometryError(e.to_string()))?;
    Ok(out)
}

/// Parses WKT ("POLYGON ((x y, …))").
pub fn from_wkt(text: &str) -> Result<Geometry<f64>, GeometryError> {
    let parsed: wkt::Wkt<f64> = text
        .trim()
        .parse()
        .map_err(|e: &str| GeometryError(e.into()))?;
    Geometry::try_from(parsed).map_err(|e| GeometryError(e.to_string()))
}

/// WKB → WKT (coordinates printed in full: nothing is lost on the way to CSV and back).
pub fn wkb_to_wkt(wkb: &[u8]) -> Result<String, GeometryError> {
    Ok(from_wkb(wkb)?.wkt_string())
}

/// WKT → stored WKB.
pub fn wkt_to_wkb(text: &str) -> Result<Vec<u8>, GeometryError> {
    to_wkb(&from_wkt(text)?)
}

/// An area's geometry from its rows' WKB (in geom_id order): None without rows, the polygon
/// itself for one row, a MultiPolygon of every polygon for several.
pub fn area_geometry(shapes: &[Vec<u8>]) -> Result<Option<geojson::Geometry>, GeometryError> {
    let geoms = shapes
        .iter()
        .map(|w| from_wkb(w))
        .collect::<Result<Vec<_>, _>>()?;
    let value = match geoms.as_slice() {
        [] => return Ok(None),
        [one] => geojson::GeometryValue::from(one),
        many => {
            let mut polygons = Vec::new();
            for g in many {
                match g {
                    Geometry::Polygon(p) => polygons.push(p.clone()),
                    Geometry::MultiPolygon(mp) => polygons.extend(mp.0.iter().cloned()),
                    other => {
                        return Err(GeometryError(format!(
                            "an area's shape is a {}, not a polygon",
                            kind(other)
                        )))
                    }
                }
            }
            geojson::GeometryValue::from(&MultiPolygon(polygons))
        }
    };
    Ok(Some(geojson::Geometry::new(value)))
}

fn kind(g: &Geometry<f64>) -> &'static str {
    match g {
        Geometry::Point(_) => "Point",
        Geometry::Line(_) => "Line",
        Geometry::LineString(_) => "LineString",
        Geometry::Polygon(_) => "Polygon",
        Geometry::MultiPoint(_) => "MultiPoint",
        Geometry::MultiLineString(_) => "MultiLineString",
        Geometry::MultiPolygon(_) => "MultiPolygon",
        Geometry::GeometryCollection(_) => "GeometryCollection",
        Geometry::Rect(_) => "Rect",
        Geometry::Triangle(_) => "Triangle",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: f64) -> Vec<u8> {
        wkt_to_wkb(&format!(
            "POLYGON (({x} 51.5, {} 51.5, {} 51.6, {x} 51.6, {x} 51.5))",
            x + 0.1,
            x + 0.1
        ))
        .unwrap()
    }

    #[test]
    fn wkb_wkt_round_trip_is_exact() {
        let text = "POLYGON((-1.2345678901234567 51.000000000000014,-1.1 51.1,-1.2 51.2,-1.2345678901234567 51.000000000000014))";
        let wkb = wkt_to_wkb(text).unwrap();
        assert_eq!(wkb[0], 1, "little-endian");
        let back = wkb_to_wkt(&wkb).unwrap();
        assert_eq!(wkt_to_wkb(&back).unwrap(), wkb);
        assert!(back.contains("-1.2345678901234567"), "{back}");
    }

    #[test]
    fn area_geometry_kinds() {
        assert_eq!(area_geometry(&[]).unwrap(), None);
        let one = area_geometry(&[square(-1.0)]).unwrap().unwrap();
        assert!(matches!(one.value, geojson::GeometryValue::Polygon { .. }));
        let many = area_geometry(&[square(-1.0), square(-2.0)])
            .unwrap()
            .unwrap();
        match many.value {
            geojson::GeometryValue::MultiPolygon { coordinates } => {
                assert_eq!(coordinates.len(), 2)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_wkb(&[1, 2, 3, 4, 5]).is_err());
        assert!(from_wkb(&[]).is_err());
        assert!(wkt_to_wkb("NOT A GEOMETRY").is_err());
        let mut truncated = square(-1.0);
        truncated.truncate(20);
        assert!(from_wkb(&truncated).is_err());
    }
}
