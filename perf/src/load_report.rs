//! The load sweep's output files: its rows (CSV, JSON), the table, the
//! verdict and the two plots, written into one directory. Apart from
//! `load_sweep.rs` (which measures and judges) and `load_plot.rs` (which
//! draws), so that each of those needs only the rows.

use std::path::{Path, PathBuf};

use crate::load_plot::{cpu_svg, p99_svg};
use crate::load_sweep::{LoadRow, csv, table, verdict_text};

/// File names [`write_outputs`] writes.
pub const FILES: [&str; 6] = [
    "load.csv",
    "load.json",
    "load_table.txt",
    "verdict.txt",
    "load_cpu_vs_iops.svg",
    "load_p99_vs_iops.svg",
];

/// Writes the rows (CSV, JSON), the table, the verdict and the two plots into `dir`.
///
/// # Errors
/// File system errors, naming the file.
pub fn write_outputs(dir: &Path, rows: &[LoadRow]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?;
    let bodies = [
        csv(rows),
        json + "\n",
        table(rows),
        verdict_text(rows),
        cpu_svg(rows),
        p99_svg(rows),
    ];
    let mut out = Vec::new();
    for (name, body) in FILES.iter().zip(bodies) {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(p);
    }
    Ok(out)
}
