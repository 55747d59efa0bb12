//! Plain aligned text tables for the terminal.

/// A table of strings; numeric-looking cells are right-aligned.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let numeric = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+');
        // A column is right-aligned (header included) when its cells are numbers or `-`.
        let right: Vec<bool> = (0..n)
            .map(|i| {
                let cells = || self.rows.iter().filter_map(|r| r.get(i)).map(String::as_str);
                i > 0 && cells().any(|c| numeric(c) && c != "-") && cells().all(|c| numeric(c) || c.is_empty())
            })
            .collect();
        let mut out = String::new();
        let line = |r: &Vec<String>, out: &mut String| {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let c = r.get(i).map(String::as_str).unwrap_or("");
                    let pad = " ".repeat(w[i] - c.chars().count());
                    if right[i] { format!("{pad}{c}") } else { format!("{c}{pad}") }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        out.push_str(&w.iter().map(|&x| "-".repeat(x)).collect::<Vec<_>>().join("  "));
        out.push('\n');
        for r in &self.rows {
            line(r, &mut out);
        }
        out
    }
}

/// `1.23e18`-style short form of a large number.
pub fn sci(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    format!("{x:.2e}")
}

/// `12.3M`-style short form of a count.
pub fn count(x: u64) -> String {
    let f = x as f64;
    match x {
        0..=9_999 => x.to_string(),
        10_000..=999_999 => format!("{:.1}k", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", f / 1e6),
        _ => format!("{:.2}B", f / 1e9),
    }
}

/// A Unix time in milliseconds as `2026-12-03 06:18:35Z` (UTC); `-` for 0.
pub fn utc(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let (year, month, day, h, m, sec) = isoflop_core::clock::utc_civil(ms);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02}Z")
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_000), "1970-01-01 00:00:01Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_796_279_915_000), "2026-12-03 06:38:35Z");
    }

    #[test]
    fn renders_aligned() {
        let mut t = Table::new(["name", "loss"]);
        t.row(["a", "1.5"]);
        t.row(["long-name", "10.25"]);
        assert_eq!(t.render(), "name        loss\n---------  -----\na            1.5\nlong-name  10.25\n");
        assert_eq!(count(12_345_678), "12.3M");
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(65.0), "1m05s");
    }
}
