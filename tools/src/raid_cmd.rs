//! `lull raid`: raid1 volumes of a running daemon, through SPDK's
//! `bdev_raid_*` methods (the same calls `rpc.py` makes).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::ctl_cmd::{Socket, call, print_json};

/// `lull raid`.
#[derive(Args, Debug)]
pub struct RaidArgs {
    #[command(subcommand)]
    what: RaidCmd,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

#[derive(Subcommand, Debug)]
enum RaidCmd {
    /// Create a raid1 volume over two or more bdevs (bdev_raid_create -r raid1).
    ///
    /// Example: lull raid create Vol0 Malloc0 Nvme0n1 Nvme1n1 --superblock
    Create {
        /// The volume's name (at most 31 bytes).
        name: String,
        /// Its base bdevs (at least 2), each a whole replica.
        #[arg(required = true, num_args = 2..)]
        base_bdevs: Vec<String>,
        /// Keep a superblock on each base (the volume's identity, members
        /// and which member is in sync), so it is reassembled after a restart.
        #[arg(short = 's', long)]
        superblock: bool,
        /// The volume's UUID (default: random).
        #[arg(long)]
        uuid: Option<String>,
    },
    /// List the volumes: state, bases and rebuild progress (bdev_raid_get_bdevs).
    List {
        /// Only these: all, online, configuring or offline.
        #[arg(long, default_value = "all", value_parser = ["all", "online", "configuring", "offline"])]
        category: String,
        /// Print the JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a volume (its bases stay, free again). A volume that is a
    /// namespace is refused: remove the namespace first.
    Delete {
        /// The volume.
        name: String,
        /// Zero the superblock on each base first, so they are free for
        /// another volume with a superblock.
        #[arg(short = 'c', long)]
        clear_sb: bool,
    },
    /// Take a base bdev out of its volume (the volume runs degraded).
    ///
    /// Example: lull raid remove-base Nvme1n1
    RemoveBase {
        /// The base bdev.
        base_bdev: String,
    },
    /// Put a bdev into an empty slot of a volume and rebuild it.
    ///
    /// Example: lull raid add-base Vol0 Nvme1n1
    AddBase {
        /// The volume.
        raid_bdev: String,
        /// The bdev to add (at least the volume's size).
        base_bdev: String,
    },
    /// Set the rebuild's window and rate limit (bdev_raid_set_options);
    /// running rebuilds take them at once.
    ///
    /// Example: lull raid set-options --process-max-bandwidth-mb-sec 200
    SetOptions {
        /// KiB copied (and held against writes) at a time.
        #[arg(short = 'w', long)]
        process_window_size_kb: Option<u32>,
        /// Most MiB per second a rebuild copies (0 = unlimited).
        #[arg(short = 'b', long)]
        process_max_bandwidth_mb_sec: Option<u32>,
    },
}

/// One volume as a line of `lull raid list`.
pub(crate) fn raid_line(r: &Value) -> String {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let target = r.get("process").and_then(|p| p["target"].as_str()).unwrap_or_default();
    let bases: Vec<String> = r["base_bdevs_list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| match b["name"].as_str() {
            Some(name) if name == target => format!("{name} (rebuilding)"),
            Some(name) => name.to_string(),
            None => "(empty)".to_string(),
        })
        .collect();
    // Fewer copies in sync than slots: a slot empty, or a base being rebuilt.
    let degraded = n("num_base_bdevs_discovered") < n("num_base_bdevs") || !target.is_empty();
    let state = match (r["state"].as_str().unwrap_or("?"), degraded) {
        ("online", true) => "online, degraded".to_string(),
        (s, _) => s.to_string(),
    };
    let process = match r.get("process") {
        Some(p) if p.is_object() => format!(
            "; {} of {}: {} blocks, {}%",
            p["type"].as_str().unwrap_or("?"),
            p["target"].as_str().unwrap_or("?"),
            p["progress"]["blocks"].as_u64().unwrap_or(0),
            p["progress"]["percent"].as_u64().unwrap_or(0)
        ),
        _ => String::new(),
    };
    format!(
        "{:<16} {:<16} {}/{} operational, {} discovered{} [{}]{}",
        r["name"].as_str().unwrap_or("?"),
        state,
        n("num_base_bdevs_operational"),
        n("num_base_bdevs"),
        n("num_base_bdevs_discovered"),
        if r["superblock"] == Value::Bool(true) {
            ", superblock"
        } else {
            ""
        },
        bases.join(" "),
        process
    )
}

/// Runs `lull raid`.
///
/// # Errors
/// The daemon unreachable, or its error.
pub fn raid(a: RaidArgs) -> Result<(), String> {
    let s = &a.socket;
    match a.what {
        RaidCmd::Create {
            name,
            base_bdevs,
            superblock,
            uuid,
        } => {
            let mut p =
                json!({"name": name, "raid_level": "raid1", "base_bdevs": base_bdevs, "superblock": superblock});
            if let Some(u) = uuid {
                p["uuid"] = json!(u);
            }
            call(s, "bdev_raid_create", p)?;
            println!("{name}");
        }
        RaidCmd::List { category, json } => {
            let v = call(s, "bdev_raid_get_bdevs", json!({ "category": category }))?;
            if json {
                print_json(&v);
            } else if v.as_array().is_none_or(|a| a.is_empty()) {
                println!("no raid bdevs (category {category})");
            } else {
                for r in v.as_array().into_iter().flatten() {
                    println!("{}", raid_line(r));
                }
            }
        }
        RaidCmd::Delete { name, clear_sb } => {
            call(s, "bdev_raid_delete", json!({ "name": name, "clear_sb": clear_sb }))?;
            println!("deleted raid {name}");
        }
        RaidCmd::RemoveBase { base_bdev } => {
            call(s, "bdev_raid_remove_base_bdev", json!({ "name": base_bdev }))?;
            println!("removed {base_bdev} from its raid");
        }
        RaidCmd::AddBase { raid_bdev, base_bdev } => {
            call(
                s,
                "bdev_raid_add_base_bdev",
                json!({ "raid_bdev": raid_bdev, "base_bdev": base_bdev }),
            )?;
            println!("added {base_bdev} to {raid_bdev}; rebuilding (lull raid list shows the progress)");
        }
        RaidCmd::SetOptions {
            process_window_size_kb,
            process_max_bandwidth_mb_sec,
        } => {
            if process_window_size_kb.is_none() && process_max_bandwidth_mb_sec.is_none() {
                return Err(
                    "give --process-window-size-kb and/or --process-max-bandwidth-mb-sec (lull get shows them)".into(),
                );
            }
            let mut p = json!({});
            if let Some(w) = process_window_size_kb {
                p["process_window_size_kb"] = json!(w);
            }
            if let Some(b) = process_max_bandwidth_mb_sec {
                p["process_max_bandwidth_mb_sec"] = json!(b);
            }
            call(s, "bdev_raid_set_options", p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_line_names_state_bases_and_the_rebuild() {
        let r = json!({
            "name": "Vol0", "state": "online", "superblock": true, "num_base_bdevs": 3,
            "num_base_bdevs_discovered": 3, "num_base_bdevs_operational": 3,
            "process": {"type": "rebuild", "target": "N1", "progress": {"blocks": 2048, "percent": 25}},
            "base_bdevs_list": [{"name": "M0"}, {"name": null}, {"name": "N1"}],
        });
        assert_eq!(
            raid_line(&r),
            "Vol0             online, degraded 3/3 operational, 3 discovered, superblock [M0 (empty) N1 (rebuilding)]; rebuild of N1: 2048 blocks, 25%"
        );
        let healthy = json!({
            "name": "Vol0", "state": "online", "superblock": false, "num_base_bdevs": 2,
            "num_base_bdevs_discovered": 2, "num_base_bdevs_operational": 2,
            "base_bdevs_list": [{"name": "M0"}, {"name": "M1"}],
        });
        assert_eq!(
            raid_line(&healthy),
            "Vol0             online           2/2 operational, 2 discovered [M0 M1]"
        );
    }
}
