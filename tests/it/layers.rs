//! The dependency rule of `src/lib.rs`, checked: every file under `src/` uses only the modules
//! its layer row allows, nothing below `error` uses tonic or prost, and the table lists exactly
//! the modules `src/` has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must not see the transport.
const NO_TONIC: &[&str] = &[
    "fault", "metrics", "domain", "config", "storage", "snapshot", "events", "refdata",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer table of lib.rs: module → modules it may use.
fn table() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .map(|row| {
            let (module, rest) = row.split_once('`').unwrap();
            let uses = rest
                .split('|')
                .nth(1)
                .unwrap_or_default()
                .split(',')
                .map(|u| u.trim().trim_matches('`').to_string())
                .filter(|u| !u.is_empty())
                .collect();
            (module.to_string(), uses)
        })
        .collect()
}

/// The code of a file without comments and without its `#[cfg(test)]` tail (tests may reach
/// into anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "tests") {
                out.extend(files(&p));
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Top-level modules of src/ (files and directories), without the crate roots and binaries.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(src()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if ["lib", "main", "bin"].contains(&name.as_str()) {
            continue;
        }
        let fs = if p.is_dir() { files(&p) } else { vec![p] };
        out.entry(name).or_insert_with(Vec::new).extend(fs);
    }
    out
}

#[test]
fn the_layer_table_and_src_agree() {
    let table: BTreeSet<String> = table().into_keys().collect();
    let src: BTreeSet<String> = modules().into_keys().collect();
    assert_eq!(table, src, "lib.rs's layer table and the modules of src/");
}

#[test]
fn no_module_uses_a_module_its_layer_does_not_allow() {
    let table = table();
    let mut violations = Vec::new();
    for (module, paths) in modules() {
        let allowed = &table[&module];
        for path in paths {
            let code = code(&path);
            for (i, _) in code.match_indices("crate::") {
                let used: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used != module && !allowed.contains(&used) {
                    violations.push(format!("{}: uses `{used}`", path.display()));
                }
            }
            if NO_TONIC.contains(&module.as_str())
                && ["tonic::", "use tonic", "prost::", "use prost"]
                    .iter()
                    .any(|t| code.contains(t))
            {
                violations.push(format!("{}: uses tonic/prost", path.display()));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

/// No file under `app/` imports duckdb: SQL, transactions and database files belong to storage.
#[test]
fn the_app_layer_runs_no_sql() {
    for path in &modules()["app"] {
        let code = code(path);
        assert!(
            !code.contains("duckdb::") && !code.contains("use duckdb"),
            "{} uses duckdb directly",
            path.display()
        );
        for sql in [
            "\"SELECT",
            "\"INSERT",
            "\"DELETE",
            "\"BEGIN",
            "\"COMMIT",
            "\"ATTACH",
            "\"CHECKPOINT",
        ] {
            assert!(!code.contains(sql), "{} writes SQL ({sql})", path.display());
        }
    }
}
