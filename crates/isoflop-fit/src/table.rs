//! The long input table and its validation.
//!
//! Required columns: `params`, `tokens`, `loss`. Optional: `run` (default: one run per row),
//! `budget` (the IsoFLOP group; default: `flops` rounded to 3 significant digits), `flops` (default
//! `6 * params * tokens`) and `distribution` (default `all`). Every numeric value must be finite and
//! positive; a bad value is an error naming the file, line and column.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::FitError;

/// The distribution name used when the table has no `distribution` column.
pub const DEFAULT_DISTRIBUTION: &str = "all";

/// One measured loss: a model of `params` parameters trained on `tokens` tokens, evaluated on `distribution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub run: String,
    pub params: f64,
    pub tokens: f64,
    pub loss: f64,
    /// The IsoFLOP group (nominal compute budget).
    pub budget: f64,
    pub flops: f64,
    pub distribution: String,
}

/// A validated table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub points: Vec<Point>,
    /// Per-question errors behind the points, when they come from a multiple-choice task: the
    /// bootstrap then resamples questions as well as runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions: Option<crate::bootstrap::Questions>,
}

impl Table {
    /// Builds a table from points, checking every numeric field (finite and positive).
    pub fn from_points(points: Vec<Point>) -> Result<Self, FitError> {
        for (i, p) in points.iter().enumerate() {
            for (name, v) in
                [("params", p.params), ("tokens", p.tokens), ("loss", p.loss), ("budget", p.budget), ("flops", p.flops)]
            {
                check_positive(v).map_err(|message| FitError::BadValue {
                    file: "<points>".into(),
                    line: i + 1,
                    column: name.into(),
                    message,
                })?;
            }
        }
        Ok(Table { points, questions: None })
    }

    /// The distinct distributions, sorted.
    pub fn distributions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.points.iter().map(|p| p.distribution.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The points of one distribution.
    pub fn of_distribution(&self, name: &str) -> Vec<Point> {
        self.points.iter().filter(|p| p.distribution == name).cloned().collect()
    }
}

fn check_positive(v: f64) -> Result<(), String> {
    if v.is_nan() {
        Err("value is NaN".into())
    } else if !v.is_finite() {
        Err(format!("value {v} is not finite"))
    } else if v <= 0.0 {
        Err(format!("value {v} is not positive"))
    } else {
        Ok(())
    }
}

/// Rounds to `digits` significant digits (used to group points into IsoFLOP budgets when no `budget` column is given).
pub fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = v.abs().log10().floor() as i32;
    let e = digits - 1 - mag;
    if e >= 0 {
        let scale = 10f64.powi(e);
        (v * scale).round() / scale
    } else {
        let scale = 10f64.powi(-e);
        (v / scale).round() * scale
    }
}

/// The columns [`write_csv`] writes, in order: every column [`read_csv`] reads.
pub const CSV_COLUMNS: [&str; 7] = ["run", "params", "tokens", "loss", "budget", "flops", "distribution"];

/// A table as the CSV [`read_csv`] reads back to the same points: every column, numbers in
/// Rust's shortest round-trip form, text fields quoted where they need it.
pub fn write_csv(table: &Table) -> String {
    fn text(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) || s.trim() != s {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for p in &table.points {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            text(&p.run),
            p.params,
            p.tokens,
            p.loss,
            p.budget,
            p.flops,
            text(&p.distribution)
        ));
    }
    out
}

/// Reads and validates a CSV file.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Table, FitError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FitError::Io { file: file.clone(), source })?;
    parse_csv(&text, &file)
}

/// Splits CSV text into records of fields. Supports double-quoted fields with `""` escapes and embedded
/// commas/newlines. Returns (line number of the record's start, fields) pairs; blank lines are skipped.
pub fn split_records(text: &str, file: &str) -> Result<Vec<(usize, Vec<String>)>, FitError> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut was_quoted = false;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                if !field.trim().is_empty() || was_quoted {
                    return Err(FitError::Parse { file: file.into(), line, message: "quote inside an unquoted field".into() });
                }
                field.clear();
                in_quotes = true;
                was_quoted = true;
            }
            ',' => {
                fields.push(finish(&mut field, was_quoted));
                was_quoted = false;
            }
            '\r' => {}
            '\n' => {
                fields.push(finish(&mut field, was_quoted));
                was_quoted = false;
                push_record(&mut records, start_line, std::mem::take(&mut fields));
                line += 1;
                start_line = line;
            }
            _ => {
                if was_quoted && !c.is_whitespace() {
                    return Err(FitError::Parse { file: file.into(), line, message: "text after a closing quote".into() });
                }
                field.push(c);
            }
        }
    }
    if in_quotes {
        return Err(FitError::Parse { file: file.into(), line: start_line, message: "unterminated quoted field".into() });
    }
    if !field.is_empty() || !fields.is_empty() || was_quoted {
        fields.push(finish(&mut field, was_quoted));
        push_record(&mut records, start_line, fields);
    }
    Ok(records)
}

fn finish(field: &mut String, quoted: bool) -> String {
    let f = std::mem::take(field);
    if quoted { f } else { f.trim().to_string() }
}

fn push_record(records: &mut Vec<(usize, Vec<String>)>, line: usize, fields: Vec<String>) {
    if fields.len() == 1 && fields[0].is_empty() {
        return;
    }
    records.push((line, fields));
}

/// Parses and validates CSV text; `file` names the source in error messages.
pub fn parse_csv(text: &str, file: &str) -> Result<Table, FitError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let records = split_records(text, file)?;
    let Some(((_, header), rows)) = records.split_first() else {
        return Err(FitError::Empty { file: file.into() });
    };
    let mut cols: BTreeMap<String, usize> = BTreeMap::new();
    for (i, name) in header.iter().enumerate() {
        let key = name.trim().to_ascii_lowercase();
        if cols.insert(key.clone(), i).is_some() {
            return Err(FitError::Parse { file: file.into(), line: 1, message: format!("duplicate column `{key}`") });
        }
    }
    let col = |name: &str| -> Result<usize, FitError> {
        cols.get(name).copied().ok_or_else(|| FitError::MissingColumn { file: file.into(), column: name.into() })
    };
    let (c_params, c_tokens, c_loss) = (col("params")?, col("tokens")?, col("loss")?);
    let (c_run, c_budget, c_flops, c_dist) =
        (cols.get("run").copied(), cols.get("budget").copied(), cols.get("flops").copied(), cols.get("distribution").copied());
    if rows.is_empty() {
        return Err(FitError::Empty { file: file.into() });
    }
    let mut points = Vec::with_capacity(rows.len());
    for (line, fields) in rows {
        let line = *line;
        if fields.len() != header.len() {
            return Err(FitError::Parse {
                file: file.into(),
                line,
                message: format!("{} fields, the header has {}", fields.len(), header.len()),
            });
        }
        let num = |idx: usize, name: &str| -> Result<f64, FitError> {
            let raw = fields[idx].trim();
            let bad = |message: String| FitError::BadValue { file: file.into(), line, column: name.into(), message };
            if raw.is_empty() {
                return Err(bad("empty value".into()));
            }
            let v: f64 = raw.parse().map_err(|_| bad(format!("`{raw}` is not a number")))?;
            check_positive(v).map_err(bad)?;
            Ok(v)
        };
        let params = num(c_params, "params")?;
        let tokens = num(c_tokens, "tokens")?;
        let loss = num(c_loss, "loss")?;
        let flops = match c_flops {
            Some(i) => num(i, "flops")?,
            None => 6.0 * params * tokens,
        };
        let budget = match c_budget {
            Some(i) => num(i, "budget")?,
            None => round_significant(flops, 3),
        };
        let run = match c_run {
            Some(i) if !fields[i].trim().is_empty() => fields[i].trim().to_string(),
            Some(_) => {
                return Err(FitError::BadValue { file: file.into(), line, column: "run".into(), message: "empty run id".into() });
            }
            None => format!("row{line}"),
        };
        let distribution = match c_dist {
            Some(i) if !fields[i].trim().is_empty() => fields[i].trim().to_string(),
            Some(_) => {
                return Err(FitError::BadValue {
                    file: file.into(),
                    line,
                    column: "distribution".into(),
                    message: "empty distribution name".into(),
                });
            }
            None => DEFAULT_DISTRIBUTION.to_string(),
        };
        points.push(Point { run, params, tokens, loss, budget, flops, distribution });
    }
    Ok(Table { points, questions: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_csv_reads_back_to_the_same_points() {
        let p = |run: &str, d: &str, loss: f64| Point {
            run: run.into(),
            params: 123_456_789.0,
            tokens: 2.5e9,
            loss,
            budget: 3e18,
            flops: 3.0000001e18,
            distribution: d.into(),
        };
        let t = Table::from_points(vec![p("r1", "all", 2.718_281_828_459_1), p("a,\"b\"", "odd, \"name\"", 0.1 + 0.2)]).unwrap();
        assert_eq!(parse_csv(&write_csv(&t), "t.csv").unwrap(), t);
    }

    #[test]
    fn parses_quotes_and_defaults() {
        let t = parse_csv("params,tokens,loss,run\n1e6,2e7,3.5,\"a,b\"\n2e6,1e7,3.4,\"x\"\"y\"\n", "t.csv").unwrap();
        assert_eq!(t.points.len(), 2);
        assert_eq!(t.points[0].run, "a,b");
        assert_eq!(t.points[1].run, "x\"y");
        assert_eq!(t.points[0].distribution, "all");
        assert!((t.points[0].flops - 1.2e14).abs() < 1.0);
        assert_eq!(t.points[0].budget, 1.2e14);
        let t = parse_csv("\u{feff}params,tokens,loss\r\n1,2,3\r\n", "bom.csv").unwrap();
        assert_eq!(t.points.len(), 1);
    }

    #[test]
    fn errors_name_file_line_column() {
        let e = parse_csv("params,tokens\n1,2\n", "x.csv").unwrap_err().to_string();
        assert!(e.contains("x.csv") && e.contains("`loss`"), "{e}");
        let e = parse_csv("params,tokens,loss\n1,2,3\n1,2,-3\n", "y.csv").unwrap_err().to_string();
        assert!(e.contains("y.csv") && e.contains("line 3") && e.contains("`loss`") && e.contains("not positive"), "{e}");
        let e = parse_csv("params,tokens,loss\n1,NaN,3\n", "z.csv").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`tokens`") && e.contains("NaN"), "{e}");
        let e = parse_csv("params,tokens,loss\n1,abc,3\n", "z.csv").unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = parse_csv("params,tokens,loss\n1,2\n", "z.csv").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("fields"), "{e}");
    }

    #[test]
    fn rounding() {
        assert_eq!(round_significant(1.2345e18, 3), 1.23e18);
        assert_eq!(round_significant(9.996e17, 3), 1.0e18);
    }
}
