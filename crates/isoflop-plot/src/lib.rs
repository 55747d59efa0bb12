//! Charts for isoflop reports: line and scatter series, shaded interval bands, linear or
//! logarithmic axes, a legend. [`Chart::svg`] writes the SVG text directly; [`Chart::png`]
//! rasterises that SVG (system fonts) so every figure exists in both formats.

pub mod report;

use std::fmt::Write;

/// Errors rendering a chart.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("chart `{0}` has no finite data to draw")]
    Empty(String),
    #[error("cannot rasterise chart `{title}`: {reason}")]
    Raster { title: String, reason: String },
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Points,
    LinePoints,
    /// Large open markers (for highlighted points such as minima).
    Marked,
    /// A dashed line (fits and extrapolations).
    Dashed,
}

/// One series of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// Palette index; series sharing a colour belong together (data and its fit).
    pub color: usize,
}

/// A shaded band between `lo` and `hi` at each x (an interval).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub label: String,
    pub xs: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    pub color: usize,
}

/// A chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    /// Horizontal reference lines (e.g. parity at y = 1), drawn dotted.
    pub h_lines: Vec<f64>,
    pub width: u32,
    pub height: u32,
}

/// A colour-blind-safe palette (Okabe-Ito, then greys).
const PALETTE: [&str; 9] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000", "#999999"];

/// The palette colour for an index.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

impl Chart {
    /// An empty chart of the default size (720 x 480).
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_log: false,
            y_log: false,
            series: Vec::new(),
            bands: Vec::new(),
            h_lines: Vec::new(),
            width: 720,
            height: 480,
        }
    }

    /// Sets logarithmic axes.
    pub fn log(mut self, x: bool, y: bool) -> Self {
        self.x_log = x;
        self.y_log = y;
        self
    }

    /// Adds a series.
    pub fn add(&mut self, label: impl Into<String>, points: Vec<(f64, f64)>, style: Style, color: usize) {
        self.series.push(Series { label: label.into(), points, style, color });
    }

    fn usable(&self, x: f64, y: f64) -> bool {
        x.is_finite() && y.is_finite() && (!self.x_log || x > 0.0) && (!self.y_log || y > 0.0)
    }

    fn bounds(&self) -> Option<(f64, f64, f64, f64)> {
        let mut pts: Vec<(f64, f64)> = self.series.iter().flat_map(|s| s.points.iter().copied()).collect();
        for b in &self.bands {
            for (i, &x) in b.xs.iter().enumerate() {
                pts.push((x, b.lo[i]));
                pts.push((x, b.hi[i]));
            }
        }
        let pts: Vec<(f64, f64)> = pts.into_iter().filter(|&(x, y)| self.usable(x, y)).collect();
        if pts.is_empty() {
            return None;
        }
        let t = |v: f64, log: bool| if log { v.log10() } else { v };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in &pts {
            x0 = x0.min(t(x, self.x_log));
            x1 = x1.max(t(x, self.x_log));
            y0 = y0.min(t(y, self.y_log));
            y1 = y1.max(t(y, self.y_log));
        }
        for &h in &self.h_lines {
            if !self.y_log || h > 0.0 {
                y0 = y0.min(t(h, self.y_log));
                y1 = y1.max(t(h, self.y_log));
            }
        }
        let pad = |a: f64, b: f64| {
            let span = if b > a { b - a } else { a.abs().max(1.0) * 0.1 };
            (a - 0.05 * span, b + 0.05 * span)
        };
        let (x0, x1) = pad(x0, x1);
        let (y0, y1) = pad(y0, y1);
        Some((x0, x1, y0, y1))
    }

    /// The chart as SVG text.
    pub fn svg(&self) -> Result<String, PlotError> {
        let (x0, x1, y0, y1) = self.bounds().ok_or_else(|| PlotError::Empty(self.title.clone()))?;
        let (w, h) = (self.width as f64, self.height as f64);
        // The legend's column is as wide as its longest label (about 6.8 px a character at 12 px).
        let longest = self
            .series
            .iter()
            .map(|s| s.label.chars().count())
            .chain(self.bands.iter().map(|b| b.label.chars().count()))
            .max()
            .unwrap_or(0);
        let right = (40.0 + 6.8 * longest as f64).clamp(180.0, w * 0.45);
        let (left, top, bottom) = (78.0, 40.0, 56.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let tx = |x: f64| if self.x_log { x.log10() } else { x };
        let ty = |y: f64| if self.y_log { y.log10() } else { y };
        let px = |x: f64| left + (tx(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| top + ph - (ty(y) - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="#ffffff"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            esc(&self.title)
        );
        // Grid and ticks.
        for (v, label) in ticks(x0, x1, self.x_log) {
            let x = left + (v - x0) / (x1 - x0) * pw;
            let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#e6e6e6"/>"##, top + ph);
            let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, top + ph + 16.0, esc(&label));
        }
        for (v, label) in ticks(y0, y1, self.y_log) {
            let y = top + ph - (v - y0) / (y1 - y0) * ph;
            let _ = writeln!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e6e6e6"/>"##, left + pw);
            let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, left - 6.0, y + 4.0, esc(&label));
        }
        let _ = writeln!(s, r##"<rect x="{left}" y="{top}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333333"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            h - 14.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            top + ph / 2.0,
            top + ph / 2.0,
            esc(&self.y_label)
        );
        let _ = writeln!(
            s,
            r#"<clipPath id="plot"><rect x="{left}" y="{top}" width="{pw:.1}" height="{ph:.1}"/></clipPath><g clip-path="url(#plot)">"#
        );
        for b in &self.bands {
            let mut d = String::new();
            let n = b.xs.len().min(b.lo.len()).min(b.hi.len());
            let up: Vec<usize> = (0..n).filter(|&i| self.usable(b.xs[i], b.lo[i]) && self.usable(b.xs[i], b.hi[i])).collect();
            for (k, &i) in up.iter().enumerate() {
                let _ = write!(d, "{}{:.1},{:.1} ", if k == 0 { "M" } else { "L" }, px(b.xs[i]), py(b.hi[i]));
            }
            for &i in up.iter().rev() {
                let _ = write!(d, "L{:.1},{:.1} ", px(b.xs[i]), py(b.lo[i]));
            }
            if !up.is_empty() {
                let _ = writeln!(s, r#"<path d="{d}Z" fill="{}" fill-opacity="0.18" stroke="none"/>"#, color(b.color));
            }
        }
        for &hv in &self.h_lines {
            if !self.y_log || hv > 0.0 {
                let y = py(hv);
                let _ = writeln!(
                    s,
                    r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555555" stroke-dasharray="2,3"/>"##,
                    left + pw
                );
            }
        }
        for ser in &self.series {
            let c = color(ser.color);
            let pts: Vec<(f64, f64)> =
                ser.points.iter().copied().filter(|&(x, y)| self.usable(x, y)).map(|(x, y)| (px(x), py(y))).collect();
            if matches!(ser.style, Style::Line | Style::LinePoints | Style::Dashed) && pts.len() > 1 {
                let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let dash = if ser.style == Style::Dashed { r#" stroke-dasharray="6,4""# } else { "" };
                let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.8"{dash}/>"#, d.join(" "));
            }
            match ser.style {
                Style::Points | Style::LinePoints => {
                    for (x, y) in &pts {
                        let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.2" fill="{c}"/>"#);
                    }
                }
                Style::Marked => {
                    for (x, y) in &pts {
                        let _ =
                            writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="6.5" fill="none" stroke="{c}" stroke-width="2"/>"#);
                    }
                }
                Style::Line | Style::Dashed => {}
            }
        }
        s.push_str("</g>\n");
        // Legend: one entry per distinct label.
        let mut y = top + 8.0;
        let mut seen: Vec<&str> = Vec::new();
        let entries = self
            .series
            .iter()
            .map(|s| (s.label.as_str(), s.color, Some(s.style)))
            .chain(self.bands.iter().map(|b| (b.label.as_str(), b.color, None)));
        for (label, ci, style) in entries {
            if label.is_empty() || seen.contains(&label) {
                continue;
            }
            seen.push(label);
            let x = left + pw + 14.0;
            let c = color(ci);
            match style {
                Some(Style::Points) | Some(Style::Marked) => {
                    let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{c}"/>"#, x + 9.0, y);
                }
                Some(st) => {
                    let dash = if st == Style::Dashed { r#" stroke-dasharray="6,4""# } else { "" };
                    let _ = writeln!(
                        s,
                        r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{c}" stroke-width="2"{dash}/>"#,
                        x + 18.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="18" height="10" fill="{c}" fill-opacity="0.25"/>"#,
                        y - 5.0
                    );
                }
            }
            let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x + 24.0, y + 4.0, esc(label));
            y += 18.0;
        }
        s.push_str("</svg>\n");
        Ok(s)
    }

    /// The chart as PNG bytes, rasterised from [`Chart::svg`] with the system's fonts.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        let svg = self.svg()?;
        let raster = |reason: String| PlotError::Raster { title: self.title.clone(), reason };
        let mut opt = resvg::usvg::Options::default();
        opt.fontdb_mut().load_system_fonts();
        let tree = resvg::usvg::Tree::from_str(&svg, &opt).map_err(|e| raster(e.to_string()))?;
        let mut pixmap =
            resvg::tiny_skia::Pixmap::new(self.width, self.height).ok_or_else(|| raster("zero-sized image".into()))?;
        resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
        pixmap.encode_png().map_err(|e| raster(e.to_string()))
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Short number label: `1e12`, `3e18`, `0.25`, `1500`.
pub fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e4).contains(&a) {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        let m = (m * 100.0).round() / 100.0;
        if m.fract() == 0.0 { format!("{}e{e}", m as i64) } else { format!("{m}e{e}") }
    } else {
        let s = format!("{:.4}", v);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Tick positions (in axis units: log10 for log axes) and labels between `a` and `b`.
fn ticks(a: f64, b: f64, log: bool) -> Vec<(f64, String)> {
    if log {
        if b - a < 0.35 {
            // Less than about a factor of two: plain linear ticks in value space.
            return linear_ticks(10f64.powf(a), 10f64.powf(b))
                .into_iter()
                .filter(|v| *v > 0.0)
                .map(|v| (v.log10(), label(v)))
                .collect();
        }
        let (lo, hi) = (a.ceil() as i32, b.floor() as i32);
        if hi - lo >= 1 {
            let step = ((hi - lo) / 8 + 1).max(1);
            return (lo..=hi).step_by(step as usize).map(|e| (e as f64, label(10f64.powi(e)))).collect();
        }
        // Few decades: 1-2-5 (or every) mantissa of each decade in range.
        let mantissas: &[f64] = if b - a >= 1.0 { &[1.0, 2.0, 5.0] } else { &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0] };
        let mut out = Vec::new();
        for e in (a.floor() as i32)..=(b.ceil() as i32) {
            for m in mantissas {
                let v = m * 10f64.powi(e);
                let t = v.log10();
                if t >= a && t <= b {
                    out.push((t, label(v)));
                }
            }
        }
        return out;
    }
    linear_ticks(a, b).into_iter().map(|v| (v, label(v))).collect()
}

fn linear_ticks(a: f64, b: f64) -> Vec<f64> {
    let span = (b - a).abs().max(f64::MIN_POSITIVE);
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 7.0).unwrap_or(10.0 * mag);
    let mut v = (a / step).ceil() * step;
    let mut out = Vec::new();
    while v <= b + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        let mut c = Chart::new("IsoFLOP <curves>", "parameters", "loss").log(true, false);
        c.add("1e12 FLOPs", vec![(2e4, 2.1), (3e4, 1.9), (1e5, 2.0), (5e5, 2.8)], Style::Points, 0);
        c.add("fit", vec![(2e4, 2.05), (1e5, 1.95), (5e5, 2.9)], Style::Dashed, 0);
        c.add("minimum", vec![(4e4, 1.88)], Style::Marked, 1);
        c.bands.push(Band { label: "95% CI".into(), xs: vec![2e4, 5e5], lo: vec![1.8, 2.7], hi: vec![2.2, 3.0], color: 2 });
        c.h_lines.push(2.0);
        c
    }

    #[test]
    fn svg_has_every_element_and_escapes_text() {
        let svg = chart().svg().unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("IsoFLOP &lt;curves&gt;"));
        assert_eq!(svg.matches("<circle").count(), 4 + 1 + 2, "4 points, 1 marker, 2 legend dots");
        assert!(svg.contains("stroke-dasharray=\"6,4\""));
        assert!(svg.contains("fill-opacity=\"0.18\""));
        assert!(svg.contains(">1e5<") && svg.contains(">2e5<") && svg.contains(">5e4<"), "1-2-5 ticks on a short log axis");
    }

    #[test]
    fn png_renders() {
        let png = chart().png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 5_000, "{} bytes", png.len());
    }

    #[test]
    fn empty_chart_is_an_error() {
        let c = Chart::new("nothing", "x", "y").log(true, true);
        assert!(matches!(c.svg(), Err(PlotError::Empty(_))));
        let mut c = Chart::new("negative on log", "x", "y").log(true, true);
        c.add("s", vec![(-1.0, 1.0)], Style::Points, 0);
        assert!(c.svg().is_err());
    }

    #[test]
    fn labels_and_ticks() {
        assert_eq!(label(1e12), "1e12");
        assert_eq!(label(3e18), "3e18");
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(1500.0), "1500");
        assert_eq!(linear_ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(11.0, 13.0, true).iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), ["1e11", "1e12", "1e13"]);
        let narrow: Vec<String> = ticks(0.0, 1.1f64.log10(), true).into_iter().map(|t| t.1).collect();
        assert_eq!(narrow, ["1", "1.02", "1.04", "1.06", "1.08", "1.1"]);
    }
}
