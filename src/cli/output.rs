//! Human and JSON output of the client: aligned tables, key/value blocks, byte and duration
//! formatting, and writes to stdout that turn a closed pipe into a quiet stop.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::client::Failure;

/// Widest a table cell gets before it is cut with "…".
pub const MAX_CELL: usize = 48;

/// A table with a header row; numeric columns are right-aligned.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns never cut (names that identify the row).
    wide: Vec<usize>,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.as_ref().to_uppercase()).collect(),
            rows: Vec::new(),
            wide: Vec::new(),
        }
    }

    /// Keeps column `col` whole, however long.
    pub fn wide(mut self, col: usize) -> Self {
        self.wide.push(col);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                truncate(
                    &c,
                    if self.wide.contains(&i) {
                        usize::MAX
                    } else {
                        MAX_CELL
                    },
                )
            })
            .collect();
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&self.headers[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let numeric: Vec<bool> = (0..n)
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        r.get(i).is_some_and(|c| {
                            matches!(c.as_str(), "" | "?" | "-")
                                || c.trim_start_matches(['+', '-']).parse::<f64>().is_ok()
                        })
                    })
            })
            .collect();
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric[i] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(c);
                } else {
                    text.push_str(c);
                    if i + 1 < n {
                        text.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// `key  value` lines, keys aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:w$}  {v}\n"))
        .collect()
}

/// Cuts `s` to at most `max` characters, marking the cut; newlines become spaces.
pub fn truncate(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A JSON value as a table cell: strings bare, null as "-", arrays comma-joined.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// 1536 → "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A short human duration: "850ms", "2.4s", "3m12s".
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// A protobuf duration, humanly.
pub fn proto_duration(d: &Option<prost_types::Duration>) -> String {
    match d {
        Some(d) if d.seconds >= 0 && d.nanos >= 0 => {
            duration(Duration::new(d.seconds as u64, d.nanos as u32))
        }
        Some(_) | None => "-".to_string(),
    }
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let r = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::BrokenPipe),
        Err(e) => Err(Failure::Local(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints one JSON document (pretty) on stdout.
pub fn print_json(v: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::Local(e.to_string()))?;
    print(&format!("{text}\n"))
}

/// Prints one JSON value on a single line (JSON lines).
pub fn print_json_line(v: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string(v).map_err(|e| Failure::Local(e.to_string()))?;
    print(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_right_align_numbers() {
        let mut t = Table::new(&["table", "rows"]);
        t.row(vec!["measure".into(), "1".into()]);
        t.row(vec!["measure_area_priority".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "TABLE                  ROWS\nmeasure                   1\nmeasure_area_priority    12\n"
        );
    }

    #[test]
    fn truncation_is_char_aware() {
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("a\nb", 10), "a b");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(192)), "3m12s");
    }
}
