//! `lull volume`: a replicated volume from one command, in SPDK's words.
//!
//! A volume is what a Longhorn V2 engine or a Mayastor nexus serves: a raid1
//! bdev (`bdev_raid_create -r raid1`) over one local replica (a bdev of this
//! daemon) and remote replicas reached through the initiator
//! (`bdev_nvme_attach_controller`, one controller per replica), optionally
//! exported as a namespace of its own subsystem. `lull volume create` makes
//! the JSON-RPC calls a user of SPDK would make with rpc.py, in order, and
//! undoes the ones that succeeded when a later one fails, so a refused
//! volume leaves the daemon as it was.
//!
//! Names: replica `i` (from 0, in the order given) is controller
//! `{VOLUME}r{i}`, so its namespace's bdev is `{VOLUME}r{i}n{NSID}`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::ctl_cmd::{Client, Socket};

/// `lull volume`.
#[derive(Args, Debug)]
pub struct VolumeArgs {
    #[command(subcommand)]
    what: VolumeCmd,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

#[derive(Subcommand, Debug)]
enum VolumeCmd {
    /// Create a raid1 volume over a local bdev and remote replicas, optionally exported.
    ///
    /// Example: lull volume create Vol0 --local File0 --replica 10.0.0.2:4420/nqn.2024-01.io.lull:vol0-r1
    ///   --replica 10.0.0.3:4420/nqn.2024-01.io.lull:vol0-r2 --export nqn.2024-01.io.lull:vol0 --listen 0.0.0.0:4420
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// Delete a volume: its export (with --unexport: its namespaces, and a
    /// subsystem left empty), the raid1, and the replicas' controllers.
    Delete {
        /// The volume (raid1 bdev) name.
        name: String,
        /// Also remove the namespaces that export it, and a subsystem they leave
        /// empty (otherwise an exported volume is refused).
        #[arg(long)]
        unexport: bool,
    },
    /// The volumes (raid bdevs): state, replicas (where each remote one lives),
    /// rebuild progress, and the subsystems that export each.
    List {
        /// Print bdev_raid_get_bdevs's answer as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// `lull volume create`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// The volume's bdev name (1 to 31 letters, digits, `_`, `-` or `.`).
    name: String,
    /// A bdev of this daemon to hold the local replica (e.g. a uring bdev).
    #[arg(long)]
    local: Option<String>,
    /// A remote replica: ADDR:PORT/SUBNQN[/NSID] (NSID 1 unless given;
    /// IPv6 as [::1]:4420/...). Repeat for each replica.
    #[arg(long = "replica", value_name = "ADDR:PORT/SUBNQN[/NSID]", value_parser = parse_replica)]
    replicas: Vec<Replica>,
    /// Write no raid superblock (SPDK's default is none; a volume without one
    /// is not reassembled from its replicas after a restart).
    #[arg(long)]
    no_superblock: bool,
    /// Export the volume as the only namespace of a new subsystem with this NQN.
    #[arg(long, value_name = "SUBNQN")]
    export: Option<String>,
    /// Where the exported subsystem listens (ADDR:PORT; with --export).
    #[arg(long, value_name = "ADDR:PORT", requires = "export")]
    listen: Option<String>,
    /// A host allowed to connect to the export (repeatable); none: any host.
    #[arg(long = "allow-host", value_name = "HOSTNQN", requires = "export")]
    allow_hosts: Vec<String>,
    /// The host NQN this daemon presents to the replicas (their allow-lists
    /// must hold it); default: the daemon's own, which `lull target` prints
    /// at start.
    #[arg(long, value_name = "HOSTNQN")]
    hostnqn: Option<String>,
    /// Seconds a lost replica's controller keeps reconnecting before its
    /// namespace is removed from the volume (bdev_nvme's
    /// ctrlr_loss_timeout_sec; -1: forever, which keeps the volume waiting
    /// instead of degraded).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    ctrlr_loss_timeout_sec: i64,
    /// Seconds between reconnect attempts (bdev_nvme's reconnect_delay_sec).
    #[arg(long, default_value_t = 2)]
    reconnect_delay_sec: u64,
    /// Seconds after a controller is lost before its I/O fails instead of
    /// waiting (bdev_nvme's fast_io_fail_timeout_sec; 0: off).
    #[arg(long, default_value_t = 5)]
    fast_io_fail_timeout_sec: u64,
}

/// A remote replica: where its target listens and which namespace it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Replica {
    addr: std::net::SocketAddr,
    subnqn: String,
    nsid: u32,
}

/// Parses `ADDR:PORT/SUBNQN[/NSID]`.
fn parse_replica(s: &str) -> Result<Replica, String> {
    let usage = "use ADDR:PORT/SUBNQN[/NSID], e.g. 10.0.0.2:4420/nqn.2024-01.io.lull:vol0-r1";
    let (addr, rest) = s.split_once('/').ok_or_else(|| format!("`{s}`: no SUBNQN; {usage}"))?;
    let addr = lull_daemon::config::parse_addr(addr).map_err(|e| format!("`{s}`: {e}; {usage}"))?;
    let (subnqn, nsid) = match rest.rsplit_once('/') {
        Some((nqn, n)) => {
            let nsid = n
                .parse::<u32>()
                .ok()
                .filter(|&n| n != 0 && n != u32::MAX)
                .ok_or_else(|| format!("`{s}`: NSID `{n}` is not 1 to 4294967294; {usage}"))?;
            (nqn, nsid)
        }
        None => (rest, 1),
    };
    if subnqn.is_empty() || subnqn.len() > 223 {
        return Err(format!("`{s}`: SUBNQN must be 1 to 223 bytes; {usage}"));
    }
    Ok(Replica {
        addr,
        subnqn: subnqn.to_string(),
        nsid,
    })
}

/// One JSON-RPC call of a plan, and the call that undoes it.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    method: &'static str,
    params: Value,
    undo: Option<(&'static str, Value)>,
}

/// The calls that build the volume, in order (pure: tested without a daemon).
///
/// # Errors
/// A message naming the option when the request cannot make a volume.
fn plan(a: &CreateArgs) -> Result<Vec<Step>, String> {
    // The raid's own limit (its superblock holds the name), checked before
    // any call: refused by bdev_raid_create, it would only show after the
    // replicas were attached.
    lull_daemon::config::check_raid_name(&a.name).map_err(|e| format!("volume name `{}`: {e}", a.name))?;
    let bases = a.local.iter().count() + a.replicas.len();
    if bases < 2 {
        return Err(format!(
            "a volume needs at least 2 replicas (--local and --replica together), {bases} given"
        ));
    }
    if a.ctrlr_loss_timeout_sec < -1 {
        return Err("--ctrlr-loss-timeout-sec: -1 (forever) or 0 and more".into());
    }
    let mut steps = Vec::new();
    let mut base_bdevs: Vec<String> = a.local.iter().cloned().collect();
    for (i, r) in a.replicas.iter().enumerate() {
        let ctrlr = format!("{}r{i}", a.name);
        lull_daemon::config::check_bdev_name(&format!("{ctrlr}n{}", r.nsid))
            .map_err(|e| format!("volume name `{}` is too long for its replicas' bdev names: {e}", a.name))?;
        steps.push(Step {
            method: "bdev_nvme_attach_controller",
            params: json!({
                "name": ctrlr,
                "trtype": "tcp",
                "adrfam": if r.addr.is_ipv4() { "ipv4" } else { "ipv6" },
                "traddr": r.addr.ip().to_string(),
                "trsvcid": r.addr.port().to_string(),
                "subnqn": r.subnqn,
                "ctrlr_loss_timeout_sec": a.ctrlr_loss_timeout_sec,
                "reconnect_delay_sec": a.reconnect_delay_sec,
                "fast_io_fail_timeout_sec": a.fast_io_fail_timeout_sec,
            }),
            undo: Some(("bdev_nvme_detach_controller", json!({ "name": ctrlr }))),
        });
        if let (Some(h), Some(step)) = (&a.hostnqn, steps.last_mut()) {
            step.params["hostnqn"] = json!(h);
        }
        base_bdevs.push(format!("{ctrlr}n{}", r.nsid));
    }
    steps.push(Step {
        method: "bdev_raid_create",
        params: json!({
            "name": a.name,
            "raid_level": "raid1",
            "base_bdevs": base_bdevs,
            "superblock": !a.no_superblock,
        }),
        undo: Some(("bdev_raid_delete", json!({ "name": a.name }))),
    });
    // Checked before any call: a create that fails after `bdev_raid_create`
    // leaves the volume's superblock on its replicas.
    if let Some(nqn) = &a.export {
        lull_engine::nvmf::subsystem::validate_nqn(nqn).map_err(|e| format!("--export `{nqn}`: {e}"))?;
    }
    for host in &a.allow_hosts {
        lull_engine::nvmf::subsystem::validate_nqn(host).map_err(|e| format!("--allow-host `{host}`: {e}"))?;
    }
    if let Some(h) = &a.hostnqn {
        lull_engine::nvmf::subsystem::validate_nqn(h).map_err(|e| format!("--hostnqn `{h}`: {e}"))?;
    }
    if let Some(listen) = &a.listen {
        lull_daemon::config::parse_addr(listen).map_err(|e| format!("--listen `{listen}`: {e}"))?;
    }
    if let Some(nqn) = &a.export {
        steps.push(Step {
            method: "nvmf_create_subsystem",
            params: json!({ "nqn": nqn, "allow_any_host": a.allow_hosts.is_empty() }),
            undo: Some(("nvmf_delete_subsystem", json!({ "nqn": nqn }))),
        });
        for host in &a.allow_hosts {
            steps.push(Step {
                method: "nvmf_subsystem_add_host",
                params: json!({ "nqn": nqn, "host": host }),
                undo: None,
            });
        }
        steps.push(Step {
            method: "nvmf_subsystem_add_ns",
            params: json!({ "nqn": nqn, "namespace": { "bdev_name": a.name } }),
            undo: None,
        });
        if let Some(listen) = &a.listen {
            let addr = lull_daemon::config::parse_addr(listen).map_err(|e| format!("--listen `{listen}`: {e}"))?;
            steps.push(Step {
                method: "nvmf_subsystem_add_listener",
                params: json!({ "nqn": nqn, "listen_address": {
                    "trtype": "tcp",
                    "adrfam": if addr.is_ipv4() { "ipv4" } else { "ipv6" },
                    "traddr": addr.ip().to_string(),
                    "trsvcid": addr.port().to_string(),
                }}),
                undo: None,
            });
        }
    }
    Ok(steps)
}

/// Runs `steps` in order; when one fails, undoes the ones done (newest
/// first) and returns its error, with any undo that failed too.
fn apply(client: &mut Client, steps: &[Step]) -> Result<(), String> {
    let mut done: Vec<&Step> = Vec::new();
    for s in steps {
        if let Err(e) = client.call(s.method, s.params.clone()) {
            let mut msg = e;
            for d in done.iter().rev() {
                if let Some((m, p)) = &d.undo
                    && let Err(u) = client.call(m, p.clone())
                {
                    msg.push_str(&format!("; undoing {}: {u}", d.method));
                }
            }
            return Err(msg);
        }
        done.push(s);
    }
    Ok(())
}

/// Volume `name` as `bdev_raid_get_bdevs` shows it, if there is one.
fn raid_named(client: &mut Client, name: &str) -> Result<Option<Value>, String> {
    let raids = client.call("bdev_raid_get_bdevs", json!({ "category": "all" }))?;
    Ok(raids
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
        .cloned())
}

/// The daemon's subsystems (`nvmf_get_subsystems`).
fn subsystems(client: &mut Client) -> Result<Vec<Value>, String> {
    let subs = client.call("nvmf_get_subsystems", Value::Null)?;
    Ok(subs.as_array().cloned().unwrap_or_default())
}

/// The namespaces (subsystem NQN, NSID) that export bdev `name`.
fn exports(client: &mut Client, name: &str) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for s in &subsystems(client)? {
        let nqn = s.get("nqn").and_then(Value::as_str).unwrap_or_default();
        for ns in s.get("namespaces").and_then(Value::as_array).into_iter().flatten() {
            if ns.get("bdev_name").and_then(Value::as_str) == Some(name) {
                out.push((nqn.to_string(), ns.get("nsid").and_then(Value::as_u64).unwrap_or(0)));
            }
        }
    }
    Ok(out)
}

/// Runs `lull volume`.
///
/// # Errors
/// A bad option, or the daemon's error (after undoing a partial create).
pub fn volume(a: VolumeArgs) -> Result<(), String> {
    let mut client = Client::connect(&a.socket.rpc_socket)?;
    match a.what {
        VolumeCmd::Create(c) => {
            let steps = plan(&c)?;
            // An export that exists already would fail after the raid is made.
            if let Some(nqn) = &c.export {
                let subs = subsystems(&mut client)?;
                if subs
                    .iter()
                    .any(|s| s.get("nqn").and_then(Value::as_str) == Some(nqn.as_str()))
                {
                    return Err(format!(
                        "--export: subsystem {nqn} exists already; delete it (lull subsystem delete {nqn}) or export under another NQN"
                    ));
                }
            }
            apply(&mut client, &steps)?;
            let me = raid_named(&mut client, &c.name)?;
            println!("{}", serde_json::to_string_pretty(&me).unwrap_or_default());
        }
        VolumeCmd::Delete { name, unexport } => {
            let me = raid_named(&mut client, &name)?.ok_or_else(|| format!("no volume (raid bdev) named `{name}`"))?;
            let exported = exports(&mut client, &name)?;
            if !exported.is_empty() && !unexport {
                let list: Vec<String> = exported.iter().map(|(n, id)| format!("{n} nsid {id}")).collect();
                return Err(format!(
                    "volume `{name}` is exported ({}); remove those namespaces first or pass --unexport",
                    list.join(", ")
                ));
            }
            for (nqn, nsid) in &exported {
                client.call("nvmf_subsystem_remove_ns", json!({ "nqn": nqn, "nsid": nsid }))?;
            }
            // A subsystem left with no namespace was the volume's export
            // (`--export` made it): it goes too, so the same --export works again.
            for s in &subsystems(&mut client)? {
                let nqn = s.get("nqn").and_then(Value::as_str).unwrap_or_default();
                let empty = s
                    .get("namespaces")
                    .and_then(Value::as_array)
                    .is_none_or(|n| n.is_empty());
                if empty && exported.iter().any(|(n, _)| n == nqn) {
                    client.call("nvmf_delete_subsystem", json!({ "nqn": nqn }))?;
                }
            }
            client.call("bdev_raid_delete", json!({ "name": name }))?;
            // The replicas this command attached: controllers named after the volume.
            let prefix = format!("{name}r");
            let ctrlrs = client.call("bdev_nvme_get_controllers", Value::Null)?;
            let bases: Vec<String> = me
                .get("base_bdevs_list")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|b| b.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            for c in ctrlrs.as_array().into_iter().flatten() {
                let Some(cname) = c.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let ours = cname
                    .strip_prefix(&prefix)
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
                if ours && bases.iter().any(|b| b.starts_with(&format!("{cname}n"))) {
                    client.call("bdev_nvme_detach_controller", json!({ "name": cname }))?;
                }
            }
            println!("volume {name} deleted");
        }
        VolumeCmd::List { json } => {
            let raid = client.call("bdev_raid_get_bdevs", json!({ "category": "all" }))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&raid).unwrap_or_default());
                return Ok(());
            }
            let ctrlrs = client.call("bdev_nvme_get_controllers", Value::Null)?;
            let subs = subsystems(&mut client)?;
            for line in volume_lines(&raid, &ctrlrs, &subs) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// What `lull volume list` prints: per volume its `lull raid list` line,
/// then a line per base saying where it lives (this daemon, or the
/// remote controller's address and subsystem), then the subsystems that
/// export it; "no volumes" when there is none.
fn volume_lines(raids: &Value, ctrlrs: &Value, subsystems: &[Value]) -> Vec<String> {
    let list: Vec<&Value> = raids.as_array().into_iter().flatten().collect();
    if list.is_empty() {
        return vec!["no volumes (lull volume create makes one)".to_string()];
    }
    // Each remote bdev's controller address: bdev name -> "ADDR:PORT/SUBNQN".
    let mut remote: Vec<(String, String)> = Vec::new();
    for c in ctrlrs.as_array().into_iter().flatten() {
        for cc in c.get("ctrlrs").and_then(Value::as_array).into_iter().flatten() {
            let t = &cc["trid"];
            let at = format!(
                "{}:{}/{} ({})",
                t["traddr"].as_str().unwrap_or("?"),
                t["trsvcid"].as_str().unwrap_or("?"),
                t["subnqn"].as_str().unwrap_or("?"),
                cc["state"].as_str().unwrap_or("?")
            );
            for b in cc.get("bdevs").and_then(Value::as_array).into_iter().flatten() {
                if let Some(b) = b.as_str() {
                    remote.push((b.to_string(), at.clone()));
                }
            }
        }
    }
    let mut out = Vec::new();
    for r in list {
        out.push(crate::raid_cmd::raid_line(r));
        for (i, b) in r
            .get("base_bdevs_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let line = match b.get("name").and_then(Value::as_str) {
                None => "(empty slot)".to_string(),
                Some(n) => match remote.iter().find(|(b, _)| b == n) {
                    Some((_, at)) => format!("{n}: remote, {at}"),
                    None => format!("{n}: local"),
                },
            };
            out.push(format!("  replica {i}: {line}"));
        }
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let exports: Vec<String> = subsystems
            .iter()
            .filter_map(|s| {
                let nqn = s.get("nqn").and_then(Value::as_str)?;
                let nsid = s
                    .get("namespaces")
                    .and_then(Value::as_array)?
                    .iter()
                    .find(|n| n.get("bdev_name").and_then(Value::as_str) == Some(name))?
                    .get("nsid")?
                    .as_u64()?;
                Some(format!("{nqn} namespace {nsid}"))
            })
            .collect();
        out.push(if exports.is_empty() {
            "  not exported".to_string()
        } else {
            format!("  exported as {}", exports.join(", "))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_says_where_each_replica_lives_and_what_exports_the_volume() {
        let raids = json!([{
            "name": "Vol0", "state": "online", "superblock": true, "num_base_bdevs": 3,
            "num_base_bdevs_discovered": 2, "num_base_bdevs_operational": 2,
            "base_bdevs_list": [{"name": "Local"}, {"name": "Vol0r0n1"}, {"name": null}],
        }]);
        let ctrlrs = json!([{"name": "Vol0r0", "ctrlrs": [{"state": "enabled",
            "trid": {"traddr": "10.0.0.2", "trsvcid": "4420", "subnqn": "nqn.2024-01.io.lull:r"},
            "bdevs": ["Vol0r0n1"]}]}]);
        let subs = vec![
            json!({"nqn": "nqn.2024-01.io.lull:vol0", "namespaces": [{"nsid": 1, "bdev_name": "Vol0"}]}),
            json!({"nqn": "nqn.2024-01.io.lull:other", "namespaces": [{"nsid": 1, "bdev_name": "X"}]}),
        ];
        let lines = volume_lines(&raids, &ctrlrs, &subs);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("Vol0"), "{}", lines[0]);
        assert_eq!(lines[1], "  replica 0: Local: local");
        assert_eq!(
            lines[2],
            "  replica 1: Vol0r0n1: remote, 10.0.0.2:4420/nqn.2024-01.io.lull:r (enabled)"
        );
        assert_eq!(lines[3], "  replica 2: (empty slot)");
        assert_eq!(lines[4], "  exported as nqn.2024-01.io.lull:vol0 namespace 1");
        assert_eq!(
            volume_lines(&json!([]), &json!([]), &[]),
            vec!["no volumes (lull volume create makes one)".to_string()]
        );
    }

    fn args(name: &str, local: Option<&str>, replicas: &[&str]) -> CreateArgs {
        CreateArgs {
            name: name.into(),
            local: local.map(str::to_string),
            replicas: replicas.iter().map(|r| parse_replica(r).expect("replica")).collect(),
            no_superblock: false,
            export: None,
            listen: None,
            allow_hosts: Vec::new(),
            hostnqn: None,
            ctrlr_loss_timeout_sec: 10,
            reconnect_delay_sec: 2,
            fast_io_fail_timeout_sec: 5,
        }
    }

    #[test]
    fn replicas_parse_with_default_and_given_nsid_and_refuse_bad_ones() {
        let r = parse_replica("10.0.0.2:4420/nqn.2024-01.io.lull:r1").expect("plain");
        assert_eq!(
            (r.addr.to_string().as_str(), r.subnqn.as_str(), r.nsid),
            ("10.0.0.2:4420", "nqn.2024-01.io.lull:r1", 1)
        );
        let r = parse_replica("[::1]:4421/nqn.2024-01.io.lull:r2/3").expect("ipv6 with nsid");
        assert_eq!(
            (r.addr.port(), r.subnqn.as_str(), r.nsid),
            (4421, "nqn.2024-01.io.lull:r2", 3)
        );
        for bad in [
            "10.0.0.2:4420",
            "10.0.0.2/nqn.x",
            "10.0.0.2:4420/",
            "10.0.0.2:4420/nqn.x/0",
            "10.0.0.2:4420/nqn.x/y",
        ] {
            let e = parse_replica(bad).expect_err(bad);
            assert!(e.contains("ADDR:PORT/SUBNQN"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_three_replica_volume_is_two_attaches_a_raid1_and_an_export_each_undone_in_reverse() {
        let mut a = args(
            "Vol0",
            Some("File0"),
            &[
                "127.0.0.1:4421/nqn.2024-01.io.lull:r1",
                "127.0.0.1:4422/nqn.2024-01.io.lull:r2/2",
            ],
        );
        a.export = Some("nqn.2024-01.io.lull:vol0".into());
        a.listen = Some("127.0.0.1:4420".into());
        let steps = plan(&a).expect("plan");
        let methods: Vec<&str> = steps.iter().map(|s| s.method).collect();
        assert_eq!(
            methods,
            [
                "bdev_nvme_attach_controller",
                "bdev_nvme_attach_controller",
                "bdev_raid_create",
                "nvmf_create_subsystem",
                "nvmf_subsystem_add_ns",
                "nvmf_subsystem_add_listener"
            ]
        );
        assert_eq!(steps[0].params["name"], "Vol0r0");
        assert_eq!(steps[0].params["trsvcid"], "4421");
        assert_eq!(steps[1].params["subnqn"], "nqn.2024-01.io.lull:r2");
        assert_eq!(steps[2].params["base_bdevs"], json!(["File0", "Vol0r0n1", "Vol0r1n2"]));
        assert_eq!(steps[2].params["superblock"], true);
        assert_eq!(steps[3].params["allow_any_host"], true);
        assert_eq!(steps[4].params["namespace"]["bdev_name"], "Vol0");
        assert_eq!(
            steps[1].undo,
            Some(("bdev_nvme_detach_controller", json!({ "name": "Vol0r1" })))
        );
        assert_eq!(steps[2].undo, Some(("bdev_raid_delete", json!({ "name": "Vol0" }))));
        assert!(steps[0].params.get("hostnqn").is_none(), "the daemon's own by default");
        a.hostnqn = Some("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001".into());
        let steps = plan(&a).expect("plan");
        assert_eq!(steps[1].params["hostnqn"], a.hostnqn.clone().unwrap());
    }

    #[test]
    fn fewer_than_two_replicas_or_a_bad_name_is_refused_before_any_call() {
        let e = plan(&args("Vol0", Some("File0"), &[])).expect_err("one replica");
        assert!(e.contains("at least 2") && e.contains("1 given"), "{e}");
        let e = plan(&args("Vol 0", None, &["127.0.0.1:1/n", "127.0.0.1:2/n"])).expect_err("bad name");
        assert!(e.contains("volume name `Vol 0`"), "{e}");
        // A raid's name is at most 31 bytes: refused here, not after attaching.
        let long = "V".repeat(32);
        let e = plan(&args(&long, None, &["127.0.0.1:1/n", "127.0.0.1:2/n"])).expect_err("too long");
        assert!(e.contains("at most 31 bytes"), "{e}");
        assert!(plan(&args(&"V".repeat(31), None, &["127.0.0.1:1/n", "127.0.0.1:2/n"])).is_ok());
        let mut a = args("Vol0", None, &["127.0.0.1:1/n", "127.0.0.1:2/n"]);
        a.export = Some("bad nqn".into());
        assert!(plan(&a).expect_err("export").contains("--export `bad nqn`"));
        a.export = None;
        a.ctrlr_loss_timeout_sec = -2;
        assert!(plan(&a).expect_err("timeout").contains("--ctrlr-loss-timeout-sec"));
    }
}
