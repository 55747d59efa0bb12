//! Writes a demo chart to the path given (SVG and PNG), for looking at the rendering.

use isoflop_plot::{Band, Chart, Style};

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "demo".into());
    let mut c = Chart::new("IsoFLOP curves", "parameters N", "loss (nats/token)").log(true, false);
    for (i, (b, min_n)) in [(5e11, 3e4), (1e12, 4e4), (2e12, 7e4), (4e12, 1e5)].iter().enumerate() {
        let pts: Vec<(f64, f64)> = [2e4, 3.3e4, 1e5, 1.6e5, 4.9e5]
            .iter()
            .map(|&n: &f64| (n, 1.9 - 0.05 * i as f64 + 0.3 * (n / min_n).ln().powi(2) / 4.0))
            .collect();
        c.add(format!("{b:e} FLOPs"), pts.clone(), Style::Points, i);
        c.add("", pts, Style::Dashed, i);
        c.add("minimum", vec![(*min_n, 1.9 - 0.05 * i as f64)], Style::Marked, 7);
    }
    c.bands.push(Band { label: "95% CI".into(), xs: vec![2e4, 4.9e5], lo: vec![1.7, 2.4], hi: vec![1.9, 2.8], color: 8 });
    std::fs::write(format!("{out}.svg"), c.svg().unwrap()).unwrap();
    std::fs::write(format!("{out}.png"), c.png().unwrap()).unwrap();
}
