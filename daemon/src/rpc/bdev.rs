//! `bdev_*` methods (SPDK `bdev_malloc_create`, `bdev_null_create`,
//! `bdev_uring_create`, their deletes, `bdev_get_bdevs`; the raid's are in
//! `raid.rs`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{decode, uuid_string};
use super::{RpcError, code};
use crate::app::{App, Driver};
use crate::config::{BdevKind, BdevSpec};

fn uuid_param(u: &Option<String>) -> Result<Option<[u8; 16]>, RpcError> {
    u.as_deref()
        .map(|s| {
            crate::config::parse_uuid(s)
                .map_err(|e| RpcError::invalid(format!("Invalid parameters: uuid `{s}`: expected {e}")))
        })
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    physical_block_size: Option<u32>,
    uuid: Option<String>,
}

fn create(app: &App, params: Value, malloc: bool) -> Result<Value, RpcError> {
    let p: CreateParams = decode(params)?;
    let uuid = uuid_param(&p.uuid)?;
    if let Some(pbs) = p.physical_block_size
        && pbs != 0
        && pbs != p.block_size
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: physical_block_size {pbs} must equal block_size {}",
            p.block_size
        )));
    }
    if p.num_blocks == 0 {
        return Err(RpcError::invalid("Invalid parameters: num_blocks must be at least 1"));
    }
    let name = match p.name {
        Some(n) => n,
        None if malloc => {
            // SPDK names unnamed malloc bdevs Malloc0, Malloc1, ...
            (0..)
                .map(|i| format!("Malloc{i}"))
                .find(|n| app.bdev(n).is_none())
                .unwrap_or_default()
        }
        None => return Err(RpcError::invalid("Invalid parameters: missing field `name`")),
    };
    let kind = if malloc {
        BdevKind::Malloc {
            num_blocks: p.num_blocks,
        }
    } else {
        BdevKind::Null {
            num_blocks: p.num_blocks,
        }
    };
    let name = app.create_bdev(&BdevSpec {
        name,
        block_size: p.block_size,
        kind,
        uuid,
    })?;
    Ok(Value::String(name))
}

pub(super) fn bdev_malloc_create(app: &App, params: Value) -> Result<Value, RpcError> {
    create(app, params, true)
}

pub(super) fn bdev_null_create(app: &App, params: Value) -> Result<Value, RpcError> {
    create(app, params, false)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UringParams {
    name: String,
    filename: std::path::PathBuf,
    block_size: Option<u32>,
    uuid: Option<String>,
}

pub(super) fn bdev_uring_create(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: UringParams = decode(params)?;
    let uuid = uuid_param(&p.uuid)?;
    let name = app.create_bdev(&BdevSpec {
        name: p.name,
        block_size: p.block_size.filter(|&b| b != 0).unwrap_or(512),
        kind: BdevKind::Uring { filename: p.filename },
        uuid,
    })?;
    Ok(Value::String(name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

fn delete(app: &App, params: Value, kind: &str) -> Result<Value, RpcError> {
    let p: NameParams = decode(params)?;
    app.delete_bdev(&p.name, kind)?;
    Ok(Value::Bool(true))
}

/// lull's `lull_bdev_delete`: deletes a malloc, null or uring bdev and says
/// which namespaces went with it: `{"name": ..., "removed_namespaces":
/// [{"nqn": ..., "nsid": ...}]}` (SPDK's `bdev_*_delete` answer `true`).
pub(super) fn lull_bdev_delete(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: NameParams = decode(params)?;
    let removed = app.delete_bdev(&p.name, "")?;
    let ns: Vec<Value> = removed
        .iter()
        .map(|(nqn, nsid)| json!({"nqn": nqn, "nsid": nsid}))
        .collect();
    Ok(json!({"name": p.name, "removed_namespaces": ns}))
}

pub(super) fn bdev_malloc_delete(app: &App, params: Value) -> Result<Value, RpcError> {
    delete(app, params, "malloc")
}

pub(super) fn bdev_null_delete(app: &App, params: Value) -> Result<Value, RpcError> {
    delete(app, params, "null")
}

pub(super) fn bdev_uring_delete(app: &App, params: Value) -> Result<Value, RpcError> {
    delete(app, params, "uring")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    name: Option<String>,
    /// ms to wait for `name` to appear (SPDK's `timeout`, default 0).
    timeout: Option<u64>,
}

/// Longest `timeout` of `bdev_get_bdevs`, ms (an RPC thread waits that long).
const MAX_GET_TIMEOUT_MS: u64 = 600_000;

pub(super) fn bdev_get_bdevs(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: GetParams = decode(params)?;
    if let (Some(want), Some(ms)) = (&p.name, p.timeout) {
        if ms > MAX_GET_TIMEOUT_MS {
            return Err(RpcError::invalid(format!(
                "Invalid parameters: timeout {ms}: allowed 0..={MAX_GET_TIMEOUT_MS} ms"
            )));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while app.bdev(want).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let list: Vec<_> = app
        .bdevs()
        .into_iter()
        .filter(|(n, _)| p.name.as_ref().is_none_or(|want| want == n))
        .collect();
    if let Some(want) = &p.name
        && list.is_empty()
    {
        return Err(RpcError {
            code: code::ENODEV,
            message: format!("bdev {want} does not exist: No such device"),
        });
    }
    let out: Vec<Value> = list
        .into_iter()
        .map(|(name, e)| {
            let b = &e.bdev;
            // SPDK's claim: a namespace's, or a volume's on its bases.
            let claimed = !app.claims(&name).is_empty() || app.raid_of_base(&name).is_some();
            let driver_specific = match &e.driver {
                Driver::Malloc | Driver::Null => json!({}),
                Driver::Uring { filename } => json!({"uring": {"filename": filename.display().to_string()}}),
                Driver::Nvme { ctrlr, nsid } => json!({"nvme": [{"ctrlr_name": ctrlr, "nsid": nsid}]}),
                Driver::Raid1 { raid } => json!({"raid": super::raid::raid_json(&raid.status())}),
            };
            let unmap = match &e.driver {
                Driver::Uring { .. } => false,
                // A volume unmaps when each of its bases does.
                Driver::Raid1 { raid } => raid
                    .base_names()
                    .iter()
                    .all(|b| !matches!(app.bdev(b).map(|x| x.driver), Some(Driver::Uring { .. }))),
                _ => true,
            };
            json!({
                "name": name,
                "aliases": [],
                "product_name": b.info().product_name,
                "block_size": b.info().block_size,
                "num_blocks": b.info().num_blocks,
                "uuid": uuid_string(&b.info().uuid),
                "assigned_rate_limits": {
                    "rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                    "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0
                },
                "claimed": claimed,
                "zoned": false,
                "supported_io_types": {
                    "read": true, "write": true, "unmap": unmap, "flush": true, "reset": false,
                    "nvme_admin": false, "nvme_io": false, "write_zeroes": true,
                    "compare": true, "compare_and_write": false, "abort": false,
                    "zcopy": false
                },
                "driver_specific": driver_specific
            })
        })
        .collect();
    Ok(Value::Array(out))
}
