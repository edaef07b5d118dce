//! `bdev_raid_*` methods (SPDK's bdev_raid module, level raid1):
//! `bdev_raid_create`, `bdev_raid_get_bdevs`, `bdev_raid_delete`,
//! `bdev_raid_remove_base_bdev`, `bdev_raid_add_base_bdev`,
//! `bdev_raid_set_options`, and the `raid` object `bdev_get_bdevs` shows in
//! a raid bdev's `driver_specific`.
//!
//! Parameters, defaults, result shapes and error codes are SPDK's: a
//! parameter that does not decode is -32602 (lull's rule for every method);
//! a well-formed value the raid cannot take is -EINVAL (-22), a missing bdev
//! -ENODEV (-19), a taken name -EEXIST (-17), a bdev claimed by another user
//! -EPERM (-1), a raid in use -EBUSY (-16).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::live::change;
use super::params::{decode, uuid_string};
use super::{RpcError, code};
use crate::app::{App, RaidCreate};
use crate::settings::{Names, Part};
use lull_engine::bdev::raid1::Raid1Status;

/// SPDK's names of the raid levels; lull has raid1 ("raid1" or "1",
/// compared ignoring case as SPDK does).
const RAID1_NAMES: [&str; 2] = ["raid1", "1"];

/// The other levels SPDK knows, refused by name.
const OTHER_LEVELS: [&str; 5] = ["raid0", "0", "raid5f", "5f", "concat"];

/// `base_bdevs`: SPDK's clients send a list, or (the Python API called
/// with one string, as SPDK's own documentation writes it) one string of
/// names separated by spaces.
#[derive(Deserialize)]
#[serde(untagged)]
enum BaseBdevs {
    List(Vec<String>),
    Text(String),
}

impl BaseBdevs {
    fn names(self) -> Vec<String> {
        match self {
            BaseBdevs::List(l) => l,
            BaseBdevs::Text(t) => t.split_whitespace().map(str::to_string).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    raid_level: String,
    base_bdevs: BaseBdevs,
    /// KiB; raid1 has no strips, and SPDK refuses any but 0.
    strip_size_kb: Option<u32>,
    uuid: Option<String>,
    superblock: Option<bool>,
}

/// `bdev_raid_create`: answers `true`, as SPDK does.
pub(super) fn bdev_raid_create(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: CreateParams = decode(params)?;
    let level = p.raid_level.to_ascii_lowercase();
    if !RAID1_NAMES.contains(&level.as_str()) {
        let why = if OTHER_LEVELS.contains(&level.as_str()) {
            "lull implements raid1 only"
        } else {
            "not a raid level"
        };
        return Err(einval(format!(
            "raid_level `{}`: {why} (allowed: raid1 or 1)",
            p.raid_level
        )));
    }
    if let Some(kb) = p.strip_size_kb
        && kb != 0
    {
        return Err(einval(format!(
            "strip_size_kb {kb}: raid1 has no strips (leave it out, or give 0)"
        )));
    }
    let uuid = p
        .uuid
        .as_deref()
        .map(|s| {
            crate::config::parse_uuid(s)
                .map_err(|e| RpcError::invalid(format!("Invalid parameters: uuid `{s}`: expected {e}")))
        })
        .transpose()?;
    app.create_raid(&RaidCreate {
        name: p.name,
        base_bdevs: p.base_bdevs.names(),
        superblock: p.superblock.unwrap_or(false),
        uuid,
    })?;
    Ok(Value::Bool(true))
}

fn einval(m: String) -> RpcError {
    RpcError {
        code: code::EINVAL,
        message: m,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    category: String,
}

/// The categories of `bdev_raid_get_bdevs`.
const CATEGORIES: [&str; 4] = ["all", "online", "configuring", "offline"];

/// `bdev_raid_get_bdevs`: the raids in `category`, each as [`raid_json`]
/// with its name.
pub(super) fn bdev_raid_get_bdevs(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: GetParams = decode(params)?;
    if !CATEGORIES.contains(&p.category.as_str()) {
        return Err(einval(format!(
            "category `{}`: allowed all, online, configuring or offline",
            p.category
        )));
    }
    let list: Vec<Value> = app
        .raids()
        .into_iter()
        .filter(|r| p.category == "all" || r.state.as_str() == p.category)
        .map(|r| {
            let mut v = raid_json(&r);
            if let Some(m) = v.as_object_mut() {
                // SPDK writes the name first, then the rest.
                let mut out = Map::new();
                out.insert("name".into(), json!(r.name));
                out.extend(std::mem::take(m));
                return Value::Object(out);
            }
            v
        })
        .collect();
    Ok(Value::Array(list))
}

/// A raid as SPDK writes it (`bdev_raid_get_bdevs`, and `driver_specific.raid`
/// of `bdev_get_bdevs`): uuid, strip_size_kb (0 for raid1), state,
/// raid_level, superblock, the base counts, the running process (type,
/// target, progress in blocks and percent) when there is one, and each
/// base slot (name, or null for an empty slot; uuid; is_configured;
/// data_offset and data_size in blocks).
pub(crate) fn raid_json(r: &Raid1Status) -> Value {
    let mut v = json!({
        "uuid": uuid_string(&r.uuid),
        "strip_size_kb": 0,
        "state": r.state.as_str(),
        "raid_level": "raid1",
        "superblock": r.superblock,
        "num_base_bdevs": r.num_base_bdevs,
        "num_base_bdevs_discovered": r.num_base_bdevs_discovered,
        "num_base_bdevs_operational": r.num_base_bdevs_operational,
    });
    if let (Some(p), Some(m)) = (&r.process, v.as_object_mut()) {
        // SPDK writes a whole percent, rounded down.
        let percent = p.blocks.saturating_mul(100).checked_div(p.total_blocks).unwrap_or(0);
        m.insert(
            "process".into(),
            json!({
                "type": p.kind,
                "target": p.target,
                "progress": {"blocks": p.blocks, "percent": percent},
            }),
        );
    }
    let bases: Vec<Value> = r
        .base_bdevs
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "uuid": uuid_string(&b.uuid),
                "is_configured": b.is_configured,
                "data_offset": b.data_offset,
                "data_size": b.data_size,
            })
        })
        .collect();
    if let Some(m) = v.as_object_mut() {
        m.insert("base_bdevs_list".into(), Value::Array(bases));
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
    /// Zero the superblock on each base first (SPDK 26.9's `-c`; its
    /// client sends `false` when not asked).
    clear_sb: Option<bool>,
}

/// `bdev_raid_delete`.
pub(super) fn bdev_raid_delete(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: DeleteParams = decode(params)?;
    app.delete_raid(&p.name, p.clear_sb.unwrap_or(false))?;
    Ok(Value::Bool(true))
}

/// `bdev_raid_remove_base_bdev`: `name` is the base bdev's.
pub(super) fn bdev_raid_remove_base_bdev(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: NameParams = decode(params)?;
    app.raid_remove_base(&p.name)?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddParams {
    raid_bdev: String,
    base_bdev: String,
}

/// `bdev_raid_add_base_bdev`: the base joins an empty slot and is rebuilt
/// from the operational bases.
pub(super) fn bdev_raid_add_base_bdev(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: AddParams = decode(params)?;
    app.raid_add_base(&p.raid_bdev, &p.base_bdev)?;
    Ok(Value::Bool(true))
}

/// `bdev_raid_set_options`: `process_window_size_kb` and
/// `process_max_bandwidth_mb_sec`, live settings of the table (also `lull
/// set`, `lull_set_options` and the TOML file); a running rebuild takes
/// the new rate at once and the new window from its next one.
pub(super) fn bdev_raid_set_options(app: &App, params: Value) -> Result<Value, RpcError> {
    let map: Map<String, Value> = decode(params)?;
    // SPDK refuses a zero window with -EINVAL after decoding.
    if map.get("process_window_size_kb").and_then(Value::as_u64) == Some(0) {
        return Err(einval(
            "process_window_size_kb 0: a rebuild copies at least 1 KiB a window".into(),
        ));
    }
    change(app, map, &Names::spdk(|s| s.part == Part::Raid))?;
    Ok(Value::Bool(true))
}
