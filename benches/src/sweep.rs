//! Open-loop sweep results and their plot: JSON lines of
//! `{"server": …, "offered": …, "goodput": …, "p99_ms": …}` (one per run) become an SVG with
//! two panels, goodput vs offered rate and p99 latency vs offered rate, one line per server.
//!
//! `benches/compare/compare.sh` writes the lines; the `plot-sweep` binary draws them.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Deserialize;

/// One open-loop run of one server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SweepPoint {
    /// Server name, e.g. `hsmgate` or `nginx+libp11`.
    pub server: String,
    /// Offered rate (handshakes/s).
    pub offered: f64,
    /// Successful handshakes/s.
    pub goodput: f64,
    /// 99th percentile latency of successful requests in ms; `null` when none succeeded.
    #[serde(alias = "p99")]
    pub p99_ms: Option<f64>,
}

/// Why a sweep file could not be read or drawn.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A line is not a sweep point.
    #[error("line {line}: not a sweep point")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// No line held a point.
    #[error("no sweep points in the input")]
    Empty,
    /// plotters failed to draw or write the SVG.
    #[error("drawing the SVG")]
    Draw(#[from] DrawingAreaErrorKind<std::io::Error>),
}

/// Parses JSON lines (blank lines and lines starting with `#` are skipped).
pub fn parse_lines(text: &str) -> Result<Vec<SweepPoint>, SweepError> {
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let point = serde_json::from_str(line).map_err(|source| SweepError::Parse {
            line: i + 1,
            source,
        })?;
        points.push(point);
    }
    if points.is_empty() {
        return Err(SweepError::Empty);
    }
    Ok(points)
}

/// The points grouped by server (in order of first appearance), each sorted by offered rate.
pub fn by_server(points: &[SweepPoint]) -> Vec<(String, Vec<SweepPoint>)> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<SweepPoint>> = BTreeMap::new();
    for p in points {
        if !groups.contains_key(&p.server) {
            order.push(p.server.clone());
        }
        groups.entry(p.server.clone()).or_default().push(p.clone());
    }
    order
        .into_iter()
        .map(|name| {
            let mut v = groups.remove(&name).unwrap_or_default();
            v.sort_by(|a, b| a.offered.total_cmp(&b.offered));
            (name, v)
        })
        .collect()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws the two panels into an SVG file at `out`.
pub fn plot_svg(points: &[SweepPoint], title: &str, out: &Path) -> Result<(), SweepError> {
    if points.is_empty() {
        return Err(SweepError::Empty);
    }
    let series = by_server(points);
    let x_max = points.iter().map(|p| p.offered).fold(1.0, f64::max) * 1.05;
    let y_max = points
        .iter()
        .map(|p| p.goodput.max(p.offered))
        .fold(1.0, f64::max)
        * 1.05;
    let p99s = || points.iter().filter_map(|p| p.p99_ms).filter(|v| *v > 0.0);
    let p99_min = p99s().fold(f64::INFINITY, f64::min);
    let p99_max = p99s().fold(0.0, f64::max);
    let (p99_lo, p99_hi) = if p99_max > 0.0 {
        (p99_min / 1.5, p99_max * 1.5)
    } else {
        (0.1, 10.0)
    };

    let root = SVGBackend::new(out, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(600);

    let mut goodput = ChartBuilder::on(&left)
        .caption("goodput vs offered", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    goodput
        .configure_mesh()
        .x_desc("offered handshakes/s")
        .y_desc("successful handshakes/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    goodput
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (x_max, x_max)],
            BLACK.mix(0.25),
        ))?
        .label("offered = goodput")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.25)));

    let mut latency = ChartBuilder::on(&right)
        .caption("p99 latency vs offered (log scale)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (p99_lo..p99_hi).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("offered handshakes/s")
        .y_desc("p99 ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;

    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        goodput
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.offered, p.goodput)),
                style,
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
        goodput.draw_series(
            pts.iter()
                .map(|p| Circle::new((p.offered, p.goodput), 3, color.filled())),
        )?;
        let lat: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|p| p.p99_ms.filter(|v| *v > 0.0).map(|v| (p.offered, v)))
            .collect();
        latency
            .draw_series(LineSeries::new(lat.iter().copied(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
        latency.draw_series(
            lat.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    goodput
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"
# server offered goodput p99
{"server":"nginx","offered":100,"goodput":99.5,"p99_ms":2.5}
{"server":"hsmgate","offered":200,"goodput":150,"p99_ms":null}
{"server":"nginx","offered":50,"goodput":50,"p99":1.0,"extra":"ignored"}
{"server":"hsmgate","offered":100,"goodput":100,"p99_ms":3}
"#;

    #[test]
    fn parses_and_groups() {
        let pts = parse_lines(LINES).unwrap();
        assert_eq!(pts.len(), 4);
        assert_eq!(pts[2].p99_ms, Some(1.0));
        let groups = by_server(&pts);
        assert_eq!(groups[0].0, "nginx");
        assert_eq!(groups[1].0, "hsmgate");
        let offered: Vec<f64> = groups[0].1.iter().map(|p| p.offered).collect();
        assert_eq!(offered, [50.0, 100.0]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_lines("{\"server\":\"a\",\"offered\":1,\"goodput\":1,\"p99_ms\":1}\nnope\n")
            .unwrap_err();
        assert_eq!(e.to_string(), "line 2: not a sweep point");
        assert!(matches!(parse_lines("\n# only\n"), Err(SweepError::Empty)));
    }

    #[test]
    fn draws_two_panels() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sweep.svg");
        plot_svg(&parse_lines(LINES).unwrap(), "test sweep", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("goodput vs offered"));
        assert!(svg.contains("p99 latency vs offered"));
        assert!(
            svg.contains("\nhsmgate\n") && svg.contains("\nnginx\n"),
            "legend"
        );
        assert!(
            svg.matches("<polyline").count() >= 4,
            "lines for both servers"
        );
    }
}
