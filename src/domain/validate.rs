//! Validation and normalisation of caller input (DOMAIN.md "Validation rules"): text is trimmed,
//! empty optional text becomes NULL, required fields must be present, enumerations and URLs are
//! checked, themes lose their stray non-breaking spaces. Every violation names its field.

use super::entity::{ColumnType, EntityDef, EntityKind, THEMES};
use super::record::{Draft, Key, Value};

/// A column's value rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Text,
    /// An absolute http(s) URL.
    Url,
    /// One of a fixed list (exact match after trimming).
    OneOf(&'static [&'static str]),
    /// A priority theme: whitespace (incl. U+00A0) collapsed, then one of [`THEMES`].
    Theme,
    Integer,
}

/// One invalid field, as reported in google.rpc.BadRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Longest text accepted in any column (the largest real value is a few KiB).
pub const MAX_TEXT_LEN: usize = 16 * 1024;
/// Longest grant id, request id and similar caller-chosen identifiers.
pub const MAX_ID_LEN: usize = 128;

/// Normalises and validates a draft in place. On success every required column is non-NULL and
/// every value satisfies its rule.
pub fn validate_draft(draft: &mut Draft) -> Result<(), Vec<FieldViolation>> {
    let def = draft.kind.def();
    let mut errors = Vec::new();
    if draft.values.len() != def.columns.len() {
        errors.push(FieldViolation::new(def.name, "wrong number of columns"));
        return Err(errors);
    }
    if let Some(key) = &draft.key {
        if let Err(v) = validate_key(draft.kind, key) {
            errors.push(v);
        }
    }
    for (col, value) in def.columns.iter().zip(draft.values.iter_mut()) {
        if col.output_only {
            continue;
        }
        normalise(value, col.rule);
        if let Err(msg) = check(value, col.required, col.rule, col.ty) {
            errors.push(FieldViolation::new(col.name, msg));
        }
    }
    derive_output_only(def, &mut draft.values);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks a caller-supplied key: integer ids are positive; text ids (grants) are 1–128
/// characters with no control characters and no surrounding whitespace. Text ids are otherwise
/// stored verbatim — they never reach a file path.
pub fn validate_key(kind: EntityKind, key: &Key) -> Result<(), FieldViolation> {
    let field = kind.def().key;
    match key {
        Key::Int(i) if *i <= 0 => Err(FieldViolation::new(field, "must be a positive integer")),
        Key::Int(_) => Ok(()),
        Key::Text(s) => validate_text_id(field, s),
    }
}

/// Rules for caller-chosen text identifiers (grant ids, request ids).
pub fn validate_text_id(field: &str, s: &str) -> Result<(), FieldViolation> {
    if s.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if s.chars().count() > MAX_ID_LEN {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    if s.trim() != s {
        return Err(FieldViolation::new(
            field,
            "must not start or end with whitespace",
        ));
    }
    Ok(())
}

fn normalise(value: &mut Value, rule: Rule) {
    if let Value::Text(s) = value {
        let cleaned = match rule {
            Rule::Theme => collapse_whitespace(s),
            _ => s.trim().to_string(),
        };
        *value = if cleaned.is_empty() {
            Value::Null
        } else {
            Value::Text(cleaned)
        };
    }
}

/// Collapses every run of whitespace (U+00A0 included) into one space and trims: the stored
/// themes carry `\xa0` and stray spaces.
fn collapse_whitespace(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c == '\u{a0}')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(value: &Value, required: bool, rule: Rule, ty: ColumnType) -> Result<(), String> {
    match value {
        Value::Null if required => Err("is required".into()),
        Value::Null => Ok(()),
        Value::Int(_) if ty == ColumnType::BigInt => Ok(()),
        Value::Int(_) => Err("must be text".into()),
        Value::Text(_) if ty == ColumnType::BigInt => Err("must be an integer".into()),
        Value::Text(s) => check_text(s, rule),
    }
}

fn check_text(s: &str, rule: Rule) -> Result<(), String> {
    if s.len() > MAX_TEXT_LEN {
        return Err(format!("must be at most {MAX_TEXT_LEN} bytes"));
    }
    match rule {
        Rule::Text | Rule::Integer => Ok(()),
        Rule::Url => check_url(s),
        Rule::OneOf(allowed) => one_of(s, allowed),
        Rule::Theme => one_of(s, THEMES),
    }
}

fn one_of(s: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(format!("must be one of: {}", allowed.join(" | ")))
    }
}

fn check_url(s: &str) -> Result<(), String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(_) => Err("must be an absolute http(s) URL".into()),
        Err(e) => Err(format!("must be a valid URL ({e})")),
    }
}

/// Server-derived columns: species.linnaean_name is always the scientific name.
fn derive_output_only(def: &EntityDef, values: &mut [Value]) {
    if def.kind == EntityKind::Species {
        if let (Some(l), Some(s)) = (
            def.column_index("linnaean_name"),
            def.column_index("scientific_name"),
        ) {
            values[l] = values[s].clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(kind: EntityKind, cols: &[(&str, &str)]) -> Draft {
        let def = kind.def();
        let mut values = vec![Value::Null; def.columns.len()];
        for (name, v) in cols {
            values[def.column_index(name).unwrap()] = Value::Text(v.to_string());
        }
        Draft {
            kind,
            key: None,
            values,
            sets: None,
        }
    }

    fn fields(r: Result<(), Vec<FieldViolation>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn measure_rules() {
        let mut d = draft(
            EntityKind::Measure,
            &[
                ("measure", "  Plant hedges "),
                ("core_supplementary", "Core (BNG)"),
                ("mapped_unmapped", ""),
            ],
        );
        assert!(validate_draft(&mut d).is_ok());
        assert_eq!(d.values[0], Value::Text("Plant hedges".into()));
        assert_eq!(d.values[3], Value::Null, "empty optional text is NULL");

        let mut d = draft(
            EntityKind::Measure,
            &[
                ("core_supplementary", "Core"),
                ("mapped_unmapped", "Maybe"),
                ("link_to_further_guidance", "not a url"),
            ],
        );
        assert_eq!(
            fields(validate_draft(&mut d)),
            [
                "measure",
                "core_supplementary",
                "mapped_unmapped",
                "link_to_further_guidance"
            ]
        );
    }

    #[test]
    fn theme_is_normalised() {
        let mut d = draft(
            EntityKind::Priority,
            &[
                ("biodiversity_priority", "x"),
                ("theme", "\u{a0}Wetlands,  rivers and\u{a0}floodplains "),
            ],
        );
        assert!(validate_draft(&mut d).is_ok());
        assert_eq!(
            d.values[2],
            Value::Text("Wetlands, rivers and floodplains".into())
        );
    }

    #[test]
    fn species_linnaean_name_follows_scientific_name() {
        let mut d = draft(
            EntityKind::Species,
            &[
                ("taxa", "Bird"),
                ("common_name", "Skylark"),
                ("assemblage", "Birds"),
                ("scientific_name", "Alauda arvensis"),
                ("linnaean_name", "ignored"),
            ],
        );
        assert!(validate_draft(&mut d).is_ok());
        let i = EntityKind::Species
            .def()
            .column_index("linnaean_name")
            .unwrap();
        assert_eq!(d.values[i], Value::Text("Alauda arvensis".into()));
    }

    #[test]
    fn grant_ids_are_verbatim_but_bounded() {
        for ok in ["../../etc/x", "a/b", "CAB5", "x y"] {
            assert!(
                validate_key(EntityKind::Grant, &Key::Text(ok.into())).is_ok(),
                "{ok}"
            );
        }
        for bad in ["", " CAB5", "a\nb", &"x".repeat(129)] {
            assert!(
                validate_key(EntityKind::Grant, &Key::Text(bad.into())).is_err(),
                "{bad:?}"
            );
        }
    }
}
