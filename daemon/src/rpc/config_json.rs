//! The daemon's state as an SPDK JSON config: `save_config`, `load_config`,
//! `framework_get_config`, `framework_get_subsystems`, `bdev_wait_for_examine`,
//! and the loader `lull target --json-config` uses.
//!
//! The document is SPDK's:
//! `{"subsystems": [{"subsystem": "bdev", "config": [{"method": ..., "params": {...}}, ...]}, ...]}`,
//! each entry an RPC call, replayed in order. lull writes the `bdev` subsystem
//! (initiator and raid options, attached controllers, malloc/null/uring
//! bdevs, raid1 volumes, then `bdev_wait_for_examine`) and the `nvmf` subsystem (the transport, the
//! discovery subsystem's listeners, then each subsystem with its hosts,
//! namespaces and listeners), options before the objects that use them, as
//! SPDK orders them.
//!
//! lull's own settings (mode policy, supervisor, idle poll, per-core
//! policies) are the subsystem `lull` with `lull_*` methods, and it sits in
//! the top-level key `lull_subsystems`, not in `subsystems`: SPDK's loaders
//! ignore every root key but `subsystems`, whereas `rpc.py load_config`
//! refuses a whole file that names a method the target lacks. lull's loader
//! reads both keys.
//!
//! Loading follows `rpc.py load_config`: every entry is checked before any
//! is applied, and a method lull does not have is an error, except SPDK's
//! tuning of parts lull does not have (memory pools, socket options, accel,
//! the scheduler, ...), which is skipped with a warning naming it, as long
//! as it asks for nothing a host could see. An entry that fails stops the
//! load, named by its place in the file, its method and the handler's
//! message (which names the parameter).

use serde_json::{Map, Value, json};

use super::params::{adrfam, uuid_string};
use super::tuning::{param, skippable};
use super::{Handler, METHODS, RpcError, code};
use crate::app::{App, Driver};
use crate::settings::{Part, SETTINGS};
use lull_engine::nvmf::subsystem::{Subsystem, SubsystemKind};

/// The top-level key of lull's own subsystems (see the module comment).
pub const LULL_SUBSYSTEMS: &str = "lull_subsystems";

/// The SPDK subsystems lull has, in dependency order, as `framework_get_subsystems` lists them.
const SPDK_SUBSYSTEMS: &[(&str, &[&str])] = &[("keyring", &[]), ("bdev", &["keyring"]), ("nvmf", &["bdev", "keyring"])];

/// The `keyring` subsystem's entries: each key as its file (never its secret).
fn keyring_config(app: &App) -> Vec<Value> {
    app.keyring_keys()
        .into_iter()
        .filter(|(_, e, _)| !e.removed)
        .map(|(name, e, _)| {
            entry(
                "keyring_file_add_key",
                json!({"name": name, "path": e.path.display().to_string()}),
            )
        })
        .collect()
}

fn entry(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params})
}

/// The `bdev` subsystem's entries.
fn bdev_config(app: &App) -> Vec<Value> {
    let mut options = super::live::options_json(&app.nvme_options());
    if let Some(m) = options.as_object_mut() {
        m.insert("dhchap_digests".into(), json!(app.dhchap_offer().digest_names()));
        m.insert("dhchap_dhgroups".into(), json!(app.dhchap_offer().dhgroup_names()));
    }
    let mut out = vec![entry("bdev_nvme_set_options", options)];
    for (name, c, _) in app.controllers() {
        let t = c.trid();
        let co = c.options();
        let mut params = json!({
                "name": name,
                "trtype": "TCP",
                "adrfam": adrfam(&t.addr),
                "traddr": t.addr.ip().to_string(),
                "trsvcid": t.addr.port().to_string(),
                "subnqn": t.subnqn,
                "hostnqn": t.hostnqn,
                "hdgst": co.hdgst,
                "ddgst": co.ddgst,
                "prchk_reftag": false,
                "prchk_guard": false,
                "ctrlr_loss_timeout_sec": co.ctrlr_loss_timeout_sec,
                "reconnect_delay_sec": co.reconnect_delay_sec,
                "fast_io_fail_timeout_sec": co.fast_io_fail_timeout_sec,
        });
        // Key names only; keys given other than by name are not saved.
        if let Some(n) = t.tls.as_ref().and_then(|t| t.name.as_ref())
            && let Some(o) = params.as_object_mut()
        {
            o.insert("psk".into(), json!(n));
        }
        if let Some(k) = t.dhchap.as_ref().and_then(|d| d.names.as_ref())
            && let Some(o) = params.as_object_mut()
        {
            o.insert("dhchap_key".into(), json!(k.key));
            if let Some(c) = &k.ctrlr_key {
                o.insert("dhchap_ctrlr_key".into(), json!(c));
            }
        }
        out.push(entry("bdev_nvme_attach_controller", params));
    }
    // The raid module's options, before any volume (SPDK writes its
    // modules' options before the bdevs).
    let raid = app.raid_options();
    out.push(entry(
        "bdev_raid_set_options",
        json!({
            "process_window_size_kb": raid.process_window_size_kb,
            "process_max_bandwidth_mb_sec": raid.process_max_bandwidth_mb_sec,
        }),
    ));
    for (name, e) in app.bdevs() {
        let b = &e.bdev;
        let uuid = uuid_string(&b.info().uuid);
        let v = match &e.driver {
            Driver::Malloc => entry(
                "bdev_malloc_create",
                json!({
                    "name": name, "num_blocks": b.info().num_blocks, "block_size": b.info().block_size,
                    "physical_block_size": b.info().block_size, "uuid": uuid,
                    "optimal_io_boundary": 0, "md_size": 0, "dif_type": 0,
                    "dif_is_head_of_md": false, "dif_pi_format": 0,
                }),
            ),
            Driver::Null => entry(
                "bdev_null_create",
                json!({
                    "name": name, "num_blocks": b.info().num_blocks, "block_size": b.info().block_size,
                    "physical_block_size": b.info().block_size, "uuid": uuid,
                    "md_size": 0, "dif_type": 0, "dif_is_head_of_md": false, "dif_pi_format": 0,
                }),
            ),
            Driver::Uring { filename } => entry(
                "bdev_uring_create",
                json!({
                    "name": name, "block_size": b.info().block_size,
                    "filename": filename.display().to_string(), "uuid": uuid,
                }),
            ),
            // Made by bdev_nvme_attach_controller.
            Driver::Nvme { .. } => continue,
            // After every other bdev (below): its bases come first.
            Driver::Raid1 { .. } => continue,
        };
        out.push(v);
    }
    for r in app.raids() {
        // Without a superblock, the bases in sync only: one still being
        // rebuilt (or waiting for it) would come back as one in sync and be
        // read from. With one, every base present: the superblocks on them
        // say which is in sync when the volume is assembled again.
        let bases: Vec<&str> = r
            .base_bdevs
            .iter()
            .filter(|b| b.is_operational || r.superblock)
            .filter_map(|b| b.name.as_deref())
            .collect();
        out.push(entry(
            "bdev_raid_create",
            json!({
                "name": r.name, "uuid": uuid_string(&r.uuid), "raid_level": "raid1",
                "base_bdevs": bases, "superblock": r.superblock,
            }),
        ));
    }
    // Last, as SPDK writes it: a loader waits here until every bdev is usable.
    out.push(json!({"method": "bdev_wait_for_examine"}));
    out
}

fn listener_entry(nqn: &str, a: std::net::SocketAddr, secure_channel: bool) -> Value {
    entry(
        "nvmf_subsystem_add_listener",
        json!({
            "nqn": nqn,
            "listen_address": {
                "trtype": "TCP", "adrfam": adrfam(&a), "traddr": a.ip().to_string(), "trsvcid": a.port().to_string()
            },
            "secure_channel": secure_channel,
        }),
    )
}

/// The `nvmf` subsystem's entries.
fn nvmf_config(app: &App) -> Vec<Value> {
    let mut out = Vec::new();
    // First, as SPDK writes it; only when it is not every hash and group.
    let allowed = app.target().dhchap_allowed();
    if !allowed.is_all() {
        out.push(entry(
            "nvmf_set_config",
            json!({"dhchap_digests": allowed.digest_names(), "dhchap_dhgroups": allowed.dhgroup_names()}),
        ));
    }
    let t = app.transport();
    if t.created {
        out.push(entry(
            "nvmf_create_transport",
            json!({
                "trtype": "TCP",
                "max_queue_depth": app.target().queue_depths().0,
                "max_io_qpairs_per_ctrlr": app.target().max_io_queues(),
                "in_capsule_data_size": t.config.io_in_capsule_data,
                "max_io_size": t.config.max_transfer,
                "max_aq_depth": app.target().queue_depths().1,
                "max_h2c_data": t.config.maxh2cdata,
                "c2h_success": t.config.c2h_success,
            }),
        ));
    }
    let target = app.target();
    let subs: Vec<_> = target
        .subsystems()
        .into_iter()
        .filter(|s| s.kind == SubsystemKind::Nvm)
        .collect();
    // A port reachable by a subsystem that does not list it is a target-wide
    // one (`--listen`); a port no subsystem lists is held for discovery. Both
    // are saved as discovery listeners (which keep the port bound whatever
    // subsystems come and go), and a target-wide one also as a listener of
    // every subsystem, so each subsystem is reachable where it was.
    let probe = Subsystem::new("nqn.2014-08.io.lull:probe", "0", "probe").ok();
    let mut ports = target.listeners();
    ports.sort();
    for a in &ports {
        let wide = probe.as_ref().is_some_and(|p| target.reachable(p, *a));
        let own = subs.iter().any(|s| s.access().listeners.contains(a));
        if wide || !own {
            out.push(listener_entry(
                lull_proto::fabrics::DISCOVERY_NQN,
                *a,
                target.is_secure_port(*a),
            ));
        }
    }
    for s in &subs {
        let access = s.access().clone();
        out.push(entry(
            "nvmf_create_subsystem",
            json!({
                "nqn": s.nqn,
                "allow_any_host": access.allow_any_host,
                "serial_number": s.serial,
                "model_number": s.model,
                "max_namespaces": s.max_namespaces,
                "min_cntlid": 1,
                "max_cntlid": 0xFFEF,
                "ana_reporting": false,
            }),
        ));
        for h in &access.hosts {
            let mut params = json!({"nqn": s.nqn, "host": h});
            if let Some(Some(psk)) = s.host_psk_name(h)
                && let Some(o) = params.as_object_mut()
            {
                o.insert("psk".into(), json!(psk));
            }
            if let Some(k) = s.host_key_names(h)
                && let Some(o) = params.as_object_mut()
            {
                o.insert("dhchap_key".into(), json!(k.key));
                if let Some(c) = k.ctrlr_key {
                    o.insert("dhchap_ctrlr_key".into(), json!(c));
                }
            }
            out.push(entry("nvmf_subsystem_add_host", params));
        }
        for n in s.namespaces().iter() {
            out.push(entry(
                "nvmf_subsystem_add_ns",
                json!({"nqn": s.nqn, "namespace": {"nsid": n.nsid, "bdev_name": n.bdev.info().name}}),
            ));
        }
        for a in ports.iter().filter(|a| target.reachable(s, **a)) {
            out.push(listener_entry(&s.nqn, *a, target.is_secure_port(*a)));
        }
    }
    out
}

/// The `lull` subsystem's entries: settings with no SPDK method (the
/// supervisor's and the reactors' settings of the settings table).
fn lull_config(app: &App) -> Vec<Value> {
    let live = app.live();
    let own: Map<String, Value> = SETTINGS
        .iter()
        .filter(|s| matches!(s.part, Part::Supervisor | Part::Reactors))
        .map(|s| (s.name.to_string(), s.get(&live).to_json()))
        .collect();
    let sup = live.supervisor;
    let mut out = vec![entry("lull_set_options", Value::Object(own))];
    // After lull_set_options, which clears per-core policies.
    for (core, p) in &sup.core_policy {
        out.push(entry(
            "lull_reactor_set_mode",
            json!({"mode": p.as_str(), "core": core}),
        ));
    }
    out
}

/// One subsystem's entries (`framework_get_config`), None for a name lull does not have.
pub fn subsystem_config(app: &App, name: &str) -> Option<Vec<Value>> {
    match name {
        "keyring" => Some(keyring_config(app)),
        "bdev" => Some(bdev_config(app)),
        "nvmf" => Some(nvmf_config(app)),
        "lull" => Some(lull_config(app)),
        _ => None,
    }
}

/// The whole state as a JSON config document (`save_config`).
pub fn save(app: &App) -> Value {
    let subsystems: Vec<Value> = SPDK_SUBSYSTEMS
        .iter()
        .map(|(name, _)| json!({"subsystem": name, "config": subsystem_config(app, name).unwrap_or_default()}))
        .collect();
    json!({
        "subsystems": subsystems,
        LULL_SUBSYSTEMS: [{"subsystem": "lull", "config": lull_config(app)}],
    })
}

// ---- loading ----

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries carried out.
    pub applied: usize,
    /// Entries skipped and parameters dropped, each naming the entry and why.
    pub warnings: Vec<String>,
    /// Entries that failed and were passed over (only with
    /// [`OnError::KeepGoing`]), each naming the entry and the error.
    pub failed: Vec<String>,
}

/// What a load does when an entry fails while it is carried out (an entry
/// that is malformed or names an unknown method stops every load before
/// anything is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop at the first failure (`load_config`, SPDK's default).
    Stop,
    /// Log it, record it in [`LoadReport::failed`] and go on with the next
    /// entry (SPDK's `--json-ignore-init-errors`): a replica whose node is
    /// down must not keep the volume over it from starting degraded.
    KeepGoing,
}

/// Why a load stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The entry (`subsystems[i].config[j] (method)`) and the problem.
    pub message: String,
    /// Entries carried out before it (they stay applied).
    pub applied: usize,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parameters given by the command line that win over the file's: merged
/// into every entry of that method before it runs (`lull target --json-config` with flags).
pub type Overrides = Vec<(&'static str, Map<String, Value>)>;

struct Entry {
    /// `subsystems[1].config[3]`.
    at: String,
    method: String,
    params: Value,
}

impl Entry {
    fn name(&self) -> String {
        format!("{} ({})", self.at, self.method)
    }
}

fn entries(doc: &Value) -> Result<Vec<Entry>, String> {
    let Some(root) = doc.as_object() else {
        return Err("the config is not a JSON object (expected {\"subsystems\": [...]})".into());
    };
    let mut out = Vec::new();
    for key in ["subsystems", LULL_SUBSYSTEMS] {
        let list = match root.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(other) => return Err(format!("{key}: expected an array, found {other}")),
        };
        for (i, sub) in list.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let Some(sub) = sub.as_object() else {
                return Err(format!("{at}: expected an object with \"subsystem\" and \"config\""));
            };
            if sub.get("subsystem").and_then(Value::as_str).is_none() {
                return Err(format!("{at}.subsystem: expected the subsystem's name, a string"));
            }
            if let Some(k) = sub.keys().find(|k| !matches!(k.as_str(), "subsystem" | "config")) {
                return Err(format!("{at}.{k}: unknown key (allowed: subsystem, config)"));
            }
            let config = match sub.get("config") {
                // SPDK writes null for a subsystem with nothing to configure.
                None | Some(Value::Null) => continue,
                Some(Value::Array(c)) => c,
                Some(other) => return Err(format!("{at}.config: expected an array or null, found {other}")),
            };
            for (j, e) in config.iter().enumerate() {
                let at = format!("{at}.config[{j}]");
                let Some(e) = e.as_object() else {
                    return Err(format!("{at}: expected an object with \"method\" and \"params\""));
                };
                let Some(method) = e.get("method").and_then(Value::as_str) else {
                    return Err(format!("{at}.method: expected a method name, a string"));
                };
                if let Some(k) = e.keys().find(|k| !matches!(k.as_str(), "method" | "params")) {
                    return Err(format!("{at}.{k} ({method}): unknown key (allowed: method, params)"));
                }
                let params = match e.get("params") {
                    None | Some(Value::Null) => Value::Null,
                    Some(p @ Value::Object(_)) => p.clone(),
                    Some(other) => return Err(format!("{at}.params ({method}): expected an object, found {other}")),
                };
                out.push(Entry {
                    at,
                    method: method.to_string(),
                    params,
                });
            }
        }
    }
    Ok(out)
}

enum Plan {
    Call(Handler),
    Skip(String),
}

fn plan(e: &Entry) -> Result<Plan, String> {
    if matches!(e.method.as_str(), "load_config" | "save_config") {
        return Err(format!("{}: not allowed inside a config", e.name()));
    }
    // nvmf_set_config's DH-HMAC-CHAP lists are in force: it runs, once the
    // rest of it is known to be what lull does anyway.
    if e.method == "nvmf_set_config" {
        let mut rest = e.params.clone();
        super::nvmf::take_dhchap_lists(&mut rest).map_err(|m| format!("{}: {}", e.name(), m.message))?;
        return match skippable(&e.method, &rest) {
            Some(Err(what)) => Err(format!("{}: asks for {what}", e.name())),
            _ => Ok(Plan::Call(super::nvmf::nvmf_set_config)),
        };
    }
    // SPDK's tuning methods are RPC methods too (so that rpc.py's check of
    // a file against rpc_get_methods passes); the loader skips them by name.
    match skippable(&e.method, &e.params) {
        Some(Ok(why)) => Ok(Plan::Skip(why)),
        Some(Err(what)) => Err(format!("{}: asks for {what}", e.name())),
        None => match METHODS.iter().find(|(n, _)| *n == e.method) {
            Some((_, h)) => Ok(Plan::Call(*h)),
            None => Err(format!("{}: method not implemented by lull", e.name())),
        },
    }
}

fn take(params: &mut Value, key: &str) -> Option<Value> {
    params.as_object_mut().and_then(|m| m.remove(key))
}

/// Drops the parameters SPDK's own save_config writes at their defaults for
/// options lull does not have; notes each one dropped that was not at its default.
fn normalize(app: &App, e: &mut Entry) -> Result<Vec<String>, String> {
    let notes = Vec::new();
    let name = e.name();
    match e.method.as_str() {
        // SPDK's parameters lull does not have are the RPC's business
        // (compat.rs: accepted at SPDK's default, refused otherwise), so a
        // file and a call get the same answer. SPDK's io_queue_requests 0
        // means "size it for me": keep lull's queue size.
        "bdev_nvme_set_options" if e.params.get("io_queue_requests").and_then(Value::as_u64) == Some(0) => {
            take(&mut e.params, "io_queue_requests");
        }
        "bdev_null_create" => {
            for k in [
                "preferred_write_granularity",
                "preferred_write_alignment",
                "optimal_write_size",
                "preferred_unmap_granularity",
                "preferred_unmap_alignment",
            ] {
                if let Some(v) = take(&mut e.params, k)
                    && v.as_u64() != Some(0)
                {
                    return Err(format!("{name}: {k} = {v} is not supported by lull (allowed: 0)"));
                }
            }
        }
        "nvmf_subsystem_add_ns" => {
            // SPDK writes the identities it derived from the bdev; lull derives its own.
            let bdev = e.params.pointer("/namespace/bdev_name").and_then(Value::as_str);
            let Some(uuid) = bdev.and_then(|b| app.bdev(b)).map(|b| b.bdev.info().uuid) else {
                return Ok(notes);
            };
            let ns = e.params.get_mut("namespace").and_then(Value::as_object_mut);
            if let Some(ns) = ns {
                if ns.get("uuid").and_then(Value::as_str).map(str::to_ascii_lowercase) == Some(uuid_string(&uuid)) {
                    ns.remove("uuid");
                }
                // SPDK's derivation is lull's: NGUID = the bdev's UUID bytes.
                let derived: String = uuid.iter().map(|b| format!("{b:02X}")).collect();
                if ns.get("nguid").and_then(Value::as_str).map(str::to_ascii_uppercase) == Some(derived) {
                    ns.remove("nguid");
                }
            }
        }
        _ => {}
    }
    Ok(notes)
}

/// The transport exists already (the TOML config or flags made it): an
/// `nvmf_create_transport` asking for the settings it has is satisfied.
fn transport_exists(app: &App, e: &Entry) -> Result<Option<String>, String> {
    let t = app.transport();
    if e.method != "nvmf_create_transport" || !t.created {
        return Ok(None);
    }
    let (io_depth, admin_depth) = app.target().queue_depths();
    for (k, have) in [
        ("in_capsule_data_size", t.config.io_in_capsule_data),
        ("max_h2c_data", t.config.maxh2cdata),
        ("max_io_qpairs_per_ctrlr", u32::from(app.target().max_io_queues())),
        ("max_queue_depth", io_depth),
        ("max_aq_depth", admin_depth),
    ] {
        if let Some(want) = param(&e.params, k)
            && want.as_u64() != Some(u64::from(have))
        {
            return Err(format!(
                "{}: transport TCP exists already with {k} = {have} (created by the TOML config or flags); the config asks for {want}",
                e.name()
            ));
        }
    }
    let have = t.config.c2h_success;
    if let Some(want) = param(&e.params, "c2h_success")
        && want.as_bool() != Some(have)
    {
        return Err(format!(
            "{}: transport TCP exists already with c2h_success = {have} (created by the TOML config or flags); the config asks for {want}",
            e.name()
        ));
    }
    Ok(Some(format!(
        "{}: transport TCP exists already with these settings; kept",
        e.name()
    )))
}

fn checked(doc: &Value) -> Result<(Vec<Entry>, Vec<Plan>), String> {
    let list = entries(doc)?;
    let mut plans = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for e in &list {
        match plan(e) {
            Ok(p) => plans.push(p),
            Err(m) => errors.push(m),
        }
    }
    if !errors.is_empty() {
        return Err(format!("nothing was applied: {}", errors.join("; ")));
    }
    Ok((list, plans))
}

/// Checks a JSON config document's shape and that lull has (or may skip)
/// every method, without a daemon: for a start-up that should fail before
/// anything starts. Returns the number of entries.
///
/// # Errors
/// Every entry that is malformed or names a method lull cannot carry out.
pub fn check(doc: &Value) -> Result<usize, String> {
    checked(doc).map(|(l, _)| l.len())
}

/// Applies a JSON config document to `app`: every entry checked first
/// (nothing is applied when one is unknown or malformed), then carried out in
/// order, `subsystems` first, then `lull_subsystems`.
///
/// # Errors
/// One message naming the entry (`subsystems[i].config[j] (method)`) and
/// the problem; entries before a failing one stay applied.
pub fn load(app: &App, doc: &Value, overrides: &Overrides) -> Result<LoadReport, LoadError> {
    load_with(app, doc, overrides, OnError::Stop)
}

/// [`load`], with `on_error` deciding whether a failing entry stops the
/// load.
///
/// # Errors
/// As [`load`]; with [`OnError::KeepGoing`] only a document that cannot be
/// applied at all (malformed, or a method lull does not have).
pub fn load_with(app: &App, doc: &Value, overrides: &Overrides, on_error: OnError) -> Result<LoadReport, LoadError> {
    let (mut list, plans) = checked(doc).map_err(|message| LoadError { message, applied: 0 })?;
    let mut report = LoadReport::default();
    for (e, p) in list.iter_mut().zip(plans) {
        let h = match p {
            Plan::Skip(why) => {
                let w = format!("{} skipped: {why}", e.name());
                tracing::warn!("config: {w}");
                report.warnings.push(w);
                continue;
            }
            Plan::Call(h) => h,
        };
        match apply_entry(app, e, h, overrides, &mut report.warnings) {
            Ok(true) => report.applied += 1,
            Ok(false) => {}
            Err(message) if on_error == OnError::Stop => {
                return Err(LoadError {
                    message,
                    applied: report.applied,
                });
            }
            Err(message) => {
                tracing::error!("config: {message}; going on with the next entry (--json-ignore-init-errors)");
                report.failed.push(message);
            }
        }
    }
    Ok(report)
}

/// Carries out one entry: `Ok(true)` when applied, `Ok(false)` when passed
/// over with a warning (a transport that exists already).
///
/// # Errors
/// The entry's name and the problem.
fn apply_entry(
    app: &App,
    e: &mut Entry,
    h: Handler,
    overrides: &Overrides,
    warnings: &mut Vec<String>,
) -> Result<bool, String> {
    if let Some(kept) = transport_exists(app, e)? {
        tracing::warn!("config: {kept}");
        warnings.push(kept);
        return Ok(false);
    }
    for n in normalize(app, e)? {
        tracing::warn!("config: {n}");
        warnings.push(n);
    }
    for (m, over) in overrides {
        if *m == e.method {
            if e.params.is_null() {
                e.params = Value::Object(Map::new());
            }
            if let Some(p) = e.params.as_object_mut() {
                p.extend(over.clone());
            }
        }
    }
    super::invoke(app, &e.method, h, e.params.clone())
        .map(|_| true)
        .map_err(|err| format!("{}: {} (code {})", e.name(), err.message, err.code))
}

/// Calls one method as an RPC client would (for settings given on the command line).
///
/// # Errors
/// The method's error, or Method not found.
pub fn call(app: &App, method: &str, params: Value) -> Result<Value, RpcError> {
    match METHODS.iter().find(|(n, _)| *n == method) {
        Some((_, h)) => super::invoke(app, method, *h, params),
        None => Err(RpcError {
            code: code::METHOD_NOT_FOUND,
            message: "Method not found".into(),
        }),
    }
}

// ---- the RPC methods ----

pub(super) fn framework_get_subsystems(_app: &App, params: Value) -> Result<Value, RpcError> {
    if !params.is_null() {
        return Err(RpcError::invalid("'framework_get_subsystems' requires no arguments"));
    }
    Ok(Value::Array(
        SPDK_SUBSYSTEMS
            .iter()
            .map(|(n, deps)| json!({"subsystem": n, "depends_on": deps}))
            .collect(),
    ))
}

pub(super) fn framework_get_config(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        /// Newer clients' choice of batch arrays or flat entries: lull
        /// writes no batches, so both give the same answer.
        #[allow(dead_code)]
        with_batches: Option<bool>,
    }
    let p: P = super::params::decode(params)?;
    subsystem_config(app, &p.name)
        .map(Value::Array)
        .ok_or_else(|| RpcError::invalid(format!("Subsystem '{}' not found", p.name)))
}

pub(super) fn save_config(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(save(app))
}

pub(super) fn load_config(app: &App, params: Value) -> Result<Value, RpcError> {
    let r = load(app, &params, &Vec::new()).map_err(|e| {
        let mut m = e.message;
        if e.applied > 0 {
            m.push_str(&format!("; the {} entries before it stay applied", e.applied));
        }
        RpcError::invalid(m)
    })?;
    Ok(json!({"applied": r.applied, "warnings": r.warnings}))
}

/// lull's bdevs are usable once created: nothing to wait for.
pub(super) fn bdev_wait_for_examine(_app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(Value::Bool(true))
}
