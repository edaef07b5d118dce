//! The load sweep's plots (SVG, no dependencies): CPU against achieved
//! IOPS and p99 latency against achieved IOPS, one line per configuration,
//! one panel per workload and queue count. Both axes are logarithmic: the
//! loads span 100 to 100k IOPS and CPU spans 0.01 % (idle, interrupt mode)
//! to 200 % (two polling cores). Idle (0 IOPS, which a log axis cannot
//! hold) gets its own slot left of the axis so idle CPU stays visible.

use std::fmt::Write as _;

use crate::load_sweep::LoadRow;

/// A base-10 logarithmic scale over whole decades `10^lo ..= 10^hi`,
/// mapped onto pixels `a ..= b` (b may be below a: y grows downwards).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogScale {
    /// Lowest decade's exponent.
    pub lo: i32,
    /// Highest decade's exponent (> lo).
    pub hi: i32,
    a: f64,
    b: f64,
}

impl LogScale {
    /// The smallest whole-decade scale that holds every positive value of
    /// `values` (at least `min_decades` wide, and at least `floor` at the
    /// bottom when given), onto pixels `a..=b`.
    pub fn fit(values: impl IntoIterator<Item = f64>, floor: Option<f64>, min_decades: i32, a: f64, b: f64) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let data_lo = lo;
        if let Some(f) = floor {
            lo = lo.min(f);
        }
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        let mut lo_e = lo.log10().floor() as i32;
        let mut hi_e = (hi.log10().ceil() as i32).max(lo_e + 1);
        // A value on a decade would be drawn on the frame: give it room
        // above, and below (100 IOPS on the left edge hides in the frame).
        if 10f64.powi(hi_e) <= hi {
            hi_e += 1;
        }
        if data_lo.is_finite() && f64::from(lo_e) + 0.05 > data_lo.log10() {
            lo_e -= 1;
        }
        if hi_e - lo_e < min_decades {
            lo_e = hi_e - min_decades;
        }
        LogScale {
            lo: lo_e,
            hi: hi_e,
            a,
            b,
        }
    }

    /// The pixel of `v` (clamped into the scale; 0 and below at its bottom).
    pub fn pos(&self, v: f64) -> f64 {
        let e = if v > 0.0 { v.log10() } else { f64::from(self.lo) };
        let t = ((e - f64::from(self.lo)) / f64::from(self.hi - self.lo)).clamp(0.0, 1.0);
        self.a + t * (self.b - self.a)
    }

    /// The decades' values, lowest first.
    pub fn ticks(&self) -> Vec<f64> {
        (self.lo..=self.hi).map(|e| 10f64.powi(e)).collect()
    }

    /// 2x and 5x each decade inside the scale, for labelled minor grid
    /// lines on a scale of three decades or fewer (none on wider ones,
    /// where they would crowd).
    pub fn minor_ticks(&self) -> Vec<f64> {
        if self.hi - self.lo > 3 {
            return Vec::new();
        }
        (self.lo..self.hi)
            .flat_map(|e| [2.0, 5.0].map(|m| m * 10f64.powi(e)))
            .collect()
    }
}

/// `0.01`, `1`, `1k`, `100k`.
fn tick_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let digits = (-v.log10()).ceil() as usize;
        format!("{v:.digits$}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const DASHES: [&str; 3] = ["", "6,3", "2,2"];

/// What a plot shows on y.
struct YAxis {
    title: &'static str,
    label: &'static str,
    value: fn(&LoadRow) -> Option<f64>,
    /// Idle rows have no latency: only the CPU plot shows them.
    idle: bool,
    floor: Option<f64>,
}

/// CPU (target + initiator, % of one core) against achieved IOPS.
pub fn cpu_svg(rows: &[LoadRow]) -> String {
    plot(
        rows,
        &YAxis {
            title: "CPU against achieved IOPS (4k, QD cap 32)",
            label: "CPU, % of one core (target + initiator, log)",
            value: |r| Some(r.total_cpu_pct()),
            idle: true,
            floor: Some(0.01),
        },
    )
}

/// p99 latency (us, from each command's due time) against achieved IOPS.
pub fn p99_svg(rows: &[LoadRow]) -> String {
    plot(
        rows,
        &YAxis {
            title: "p99 latency against achieved IOPS (4k, QD cap 32)",
            label: "p99 latency, us (log)",
            value: |r| r.lat_p99_us,
            idle: false,
            floor: None,
        },
    )
}

fn plot(rows: &[LoadRow], y: &YAxis) -> String {
    let mut panels: Vec<(String, u16)> = Vec::new();
    let mut configs: Vec<String> = Vec::new();
    for r in rows {
        if !panels.contains(&(r.workload.clone(), r.queues)) {
            panels.push((r.workload.clone(), r.queues));
        }
        if !configs.contains(&r.config) {
            configs.push(r.config.clone());
        }
    }
    let (pw, ph) = (560.0, 400.0);
    let (ml, mr, mt, mb) = (80.0, 20.0, 40.0, 56.0);
    let idle_w = if y.idle { 56.0 } else { 0.0 };
    let cols = panels.len().clamp(1, 2);
    let nrows = panels.len().div_ceil(2).max(1);
    let legend_w = 230.0;
    let (w, h) = (pw * cols as f64 + legend_w, ph * nrows as f64 + 36.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{:.0}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        pw * cols as f64 / 2.0,
        esc(y.title)
    );
    let xs = LogScale::fit(rows.iter().map(|r| r.achieved_iops), None, 2, 0.0, 1.0);
    let ys = LogScale::fit(
        rows.iter().filter(|r| y.idle || r.load != "idle").filter_map(y.value),
        y.floor,
        2,
        0.0,
        1.0,
    );
    for (pi, (wl, q)) in panels.iter().enumerate() {
        let (ox, oy) = ((pi % 2) as f64 * pw, 36.0 + (pi / 2) as f64 * ph);
        let (x0, x1, y0, y1) = (ox + ml + idle_w, ox + pw - mr, oy + ph - mb, oy + mt);
        let xs = LogScale { a: x0, b: x1, ..xs };
        let ys = LogScale { a: y0, b: y1, ..ys };
        let idle_x = ox + ml + idle_w / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">4k {}, {} queue{}</text>",
            (ox + ml + x1) / 2.0,
            oy + mt - 12.0,
            esc(wl),
            q,
            if *q == 1 { "" } else { "s" }
        );
        // Grid and ticks.
        for t in ys.ticks() {
            let py = ys.pos(t);
            let _ = writeln!(
                s,
                "<line x1=\"{:.0}\" y1=\"{py:.1}\" x2=\"{x1:.0}\" y2=\"{py:.1}\" stroke=\"#e4e4e4\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                ox + ml,
                ox + ml - 6.0,
                py + 4.0,
                tick_label(t)
            );
        }
        for t in ys.minor_ticks() {
            let py = ys.pos(t);
            let _ = writeln!(
                s,
                "<line x1=\"{:.0}\" y1=\"{py:.1}\" x2=\"{x1:.0}\" y2=\"{py:.1}\" stroke=\"#f2f2f2\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\" fill=\"#666\">{}</text>",
                ox + ml,
                ox + ml - 6.0,
                py + 4.0,
                tick_label(t)
            );
        }
        for t in xs.ticks() {
            let px = xs.pos(t);
            let _ = writeln!(
                s,
                "<line x1=\"{px:.1}\" y1=\"{y1:.0}\" x2=\"{px:.1}\" y2=\"{y0:.0}\" stroke=\"#e4e4e4\"/><text x=\"{px:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
                y0 + 16.0,
                tick_label(t)
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{:.0}\" y=\"{y1:.0}\" width=\"{:.0}\" height=\"{:.0}\" fill=\"none\" stroke=\"black\"/>",
            ox + ml,
            x1 - ox - ml,
            y0 - y1
        );
        if y.idle {
            let _ = writeln!(
                s,
                "<line x1=\"{x0:.0}\" y1=\"{y1:.0}\" x2=\"{x0:.0}\" y2=\"{y0:.0}\" stroke=\"#999\" stroke-dasharray=\"3,3\"/><text x=\"{idle_x:.0}\" y=\"{:.0}\" text-anchor=\"middle\">idle</text>",
                y0 + 16.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">achieved IOPS (log)</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\" transform=\"rotate(-90 {:.0} {:.0})\">{}</text>",
            (x0 + x1) / 2.0,
            y0 + 38.0,
            ox + 18.0,
            (y0 + y1) / 2.0,
            ox + 18.0,
            (y0 + y1) / 2.0,
            esc(y.label)
        );
        for (ci, c) in configs.iter().enumerate() {
            let color = COLORS[ci % COLORS.len()];
            let dash = DASHES[(ci / COLORS.len() + ci) % DASHES.len()];
            let mut line: Vec<&LoadRow> = rows
                .iter()
                .filter(|r| &r.config == c && &r.workload == wl && r.queues == *q)
                .filter(|r| y.idle || r.load != "idle")
                .collect();
            // In the order of the offered load (idle, rates, max): where a
            // configuration completes less at a higher offered load, the
            // line turns back, which is what happened.
            line.sort_by(|a, b| load_order(a).total_cmp(&load_order(b)));
            let pts: Vec<(f64, f64)> = line
                .iter()
                .filter_map(|r| {
                    let v = (y.value)(r)?;
                    let px = if r.load == "idle" {
                        idle_x
                    } else {
                        xs.pos(r.achieved_iops)
                    };
                    Some((px, ys.pos(v)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>",
                path.join(" ")
            );
            for (x, y) in &pts {
                let _ = writeln!(s, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{color}\"/>");
            }
        }
    }
    let lx = pw * cols as f64 + 10.0;
    let _ = writeln!(
        s,
        "<text x=\"{lx:.0}\" y=\"{:.0}\" font-weight=\"bold\">configuration</text>",
        36.0 + mt
    );
    for (ci, c) in configs.iter().enumerate() {
        let color = COLORS[ci % COLORS.len()];
        let dash = DASHES[(ci / COLORS.len() + ci) % DASHES.len()];
        let ly = 36.0 + mt + 20.0 + 20.0 * ci as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{lx:.0}\" y1=\"{ly:.0}\" x2=\"{:.0}\" y2=\"{ly:.0}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><circle cx=\"{:.0}\" cy=\"{ly:.0}\" r=\"3.5\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
            lx + 30.0,
            lx + 15.0,
            lx + 38.0,
            ly + 4.0,
            esc(c)
        );
    }
    let note_y = 36.0 + mt + 20.0 + 20.0 * configs.len() as f64 + 10.0;
    let note = if y.idle {
        "Points left of the dashed line: idle (connections open, no I/O). One core = 100 %."
    } else {
        "Latency counts from each command's due time (open loop)."
    };
    for (i, line) in wrap(note, 34).iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{lx:.0}\" y=\"{:.0}\" font-size=\"11\" fill=\"#555\">{}</text>",
            note_y + 14.0 * i as f64,
            esc(line)
        );
    }
    s += "</svg>\n";
    s
}

/// Idle first, then the offered rates, then max.
fn load_order(r: &LoadRow) -> f64 {
    match r.offered_iops {
        _ if r.load == "idle" => -1.0,
        Some(o) => o,
        None => f64::INFINITY,
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("starts with one line");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_scale_holds_every_value_in_whole_decades() {
        let s = LogScale::fit([0.05, 180.0, 0.0, f64::NAN], None, 2, 0.0, 100.0);
        // 0.05 -> 10^-2 below it; 180 -> 10^3 above it.
        assert_eq!((s.lo, s.hi), (-2, 3));
        assert_eq!(s.pos(0.01), 0.0);
        assert_eq!(s.pos(1000.0), 100.0);
        assert!((s.pos(1.0) - 40.0).abs() < 1e-9, "1 is 2 of 5 decades up");
        assert_eq!(s.pos(0.0), 0.0, "zero sits on the bottom edge");
        assert_eq!(s.pos(1e9), 100.0, "clamped");
        // A value exactly on a decade gets the next decade as room.
        let d = LogScale::fit([10.0, 100.0], None, 1, 0.0, 1.0);
        assert_eq!((d.lo, d.hi), (0, 3));
        // A floor widens the bottom; min_decades widens a narrow range.
        let f = LogScale::fit([50.0], Some(0.01), 1, 0.0, 1.0);
        assert_eq!(f.lo, -2);
        let n = LogScale::fit([50.0, 60.0], None, 3, 0.0, 1.0);
        assert_eq!((n.lo, n.hi), (-1, 2));
        // y grows downwards in SVG: a reversed range maps high values up.
        let y = LogScale::fit([1.5, 99.0], None, 2, 300.0, 0.0);
        assert!(y.pos(99.0) < y.pos(1.5));
        assert_eq!(y.ticks(), vec![1.0, 10.0, 100.0]);
        assert_eq!(y.minor_ticks(), vec![2.0, 5.0, 20.0, 50.0]);
        assert!(s.minor_ticks().is_empty(), "five decades: no minor ticks");
        assert_eq!(LogScale::fit([], None, 1, 0.0, 1.0).ticks(), vec![1.0, 10.0, 100.0]);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.01), "0.01");
        assert_eq!(tick_label(1.0), "1");
        assert_eq!(tick_label(1000.0), "1k");
        assert_eq!(tick_label(100_000.0), "100k");
        assert_eq!(tick_label(1e6), "1M");
    }
}
