//! The daemon's settings: a TOML file and command-line flags with the same
//! names (flags win), Longhorn's names as aliases, checked as a whole before
//! anything starts.
//!
//! Every field is optional in [`Config`], so a file and the flags merge field
//! by field ([`Config::overlay`]); [`Config::resolve`] fills the defaults and
//! checks ranges and cross-references, naming the field, the bad value and
//! what is allowed.
//!
//! The settings a running daemon can change (reactor modes, the
//! supervisor, the initiator) are not fields of their own: the file takes
//! every name and alias of the settings table ([`crate::settings`]), reads
//! each value by its kind and keeps it in [`Config::live`]; the table's
//! ranges and defaults apply. The rest (`cores`, the transport, listeners,
//! bdevs, subsystems) is read only at start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::CoreList;
use lull_reactor::supervisor::SupervisorConfig;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::settings::{self, Live, Setting, SettingError, SettingValue};
use lull_engine::initiator::NvmeOptions;
use lull_engine::nvmf::subsystem::DEFAULT_MAX_NAMESPACES;
use lull_engine::nvmf::target::TargetSettings;

/// The default JSON-RPC socket (SPDK's is `/var/tmp/spdk.sock`).
pub const DEFAULT_RPC_SOCKET: &str = "/var/tmp/lull.sock";

/// A setting that is not allowed: which field, its value, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as written in the file (`subsystem[0].hosts[1]` for nested ones).
    pub field: String,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.allowed)
    }
}

impl std::error::Error for ConfigError {}

impl From<SettingError> for ConfigError {
    fn from(e: SettingError) -> Self {
        ConfigError {
            field: e.name,
            value: e.value,
            allowed: e.allowed,
        }
    }
}

fn bad<T>(field: impl Into<String>, value: impl fmt::Display, allowed: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    })
}

/// A size: bytes, or a string with a binary unit ("256MiB", "1GiB").
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

impl SizeValue {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(0) => Err("0 is not a size above 0".to_string()),
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t),
        }
    }
}

impl fmt::Display for SizeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeValue::Bytes(b) => write!(f, "{b}"),
            SizeValue::Text(t) => write!(f, "\"{t}\""),
        }
    }
}

/// Parses a size: a number of bytes with an optional binary suffix
/// (K, KiB, M, MiB, G, GiB, T, TiB; case-insensitive).
///
/// # Errors
/// A message naming the text and the units allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64MiB, 1GiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown size unit `{unit}` (use KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}` is not a size above 0 that fits in 64 bits"))
}

/// A bdev in the file (`[[bdev]]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BdevConfig {
    /// Name (letters, digits, `_`, `-`).
    pub name: Option<String>,
    /// `malloc` (RAM), `null`, `uring` (a file or block device through
    /// io_uring) or `raid1` (a mirror of `base_bdevs`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Size of a malloc or null bdev (bytes or "256MiB"); or give `num_blocks`.
    pub size: Option<SizeValue>,
    /// Size in blocks of a malloc or null bdev.
    pub num_blocks: Option<u64>,
    /// Block size, bytes: 512 or 4096 (default 512).
    pub block_size: Option<u32>,
    /// Path of a uring bdev's file or block device (it must exist).
    pub filename: Option<PathBuf>,
    /// UUID ("8-4-4-4-12" hex) of the bdev and so of its namespace (NGUID,
    /// UUID). Default: random for malloc and null; for uring, derived from
    /// this machine's /etc/machine-id and the path (stable across restarts).
    pub uuid: Option<String>,
    /// A raid1 bdev's base bdevs, by name, each defined above it (SPDK's
    /// `bdev_raid_create -b`): at least 2.
    pub base_bdevs: Option<Vec<String>>,
    /// A raid1 bdev keeps its identity, members and which member is in sync
    /// in a superblock at the start of each base (SPDK's `-s`; default false).
    pub superblock: Option<bool>,
}

/// A namespace of a subsystem in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// The bdev it exposes.
    pub bdev: Option<String>,
    /// NSID (default: the lowest free one).
    pub nsid: Option<u32>,
}

/// DH-HMAC-CHAP keys of one listed host (`[[subsystem.host_dhchap]]`), as
/// SPDK's `nvmf_subsystem_add_host --dhchap-key --dhchap-ctrlr-key` with
/// file keyring entries: each names a file (mode 0600, owned by the
/// daemon's user) holding a `DHHC-1:NN:...:` secret.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostDhchapConfig {
    /// The host's NQN (one of `hosts`).
    pub host: Option<String>,
    /// File with the host's secret.
    pub dhchap_key: Option<PathBuf>,
    /// File with the controller's secret (bidirectional authentication).
    pub dhchap_ctrlr_key: Option<PathBuf>,
}

/// The TLS PSK of one listed host (`[[subsystem.host_psk]]`), as SPDK's
/// `nvmf_subsystem_add_host --psk` with a file keyring entry: a file (mode
/// 0600, owned by the daemon's user) holding an `NVMeTLSkey-1:HH:...:` PSK.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostPskConfig {
    /// The host's NQN (one of `hosts`).
    pub host: Option<String>,
    /// File with the PSK in the interchange format.
    pub psk: Option<PathBuf>,
}

/// A subsystem in the file (`[[subsystem]]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubsystemConfig {
    /// SUBNQN.
    pub nqn: Option<String>,
    /// Serial number, 1-20 printable ASCII characters.
    pub serial_number: Option<String>,
    /// Model number, 1-40 printable ASCII characters.
    pub model_number: Option<String>,
    /// Any host may connect.
    pub allow_any_host: Option<bool>,
    /// Host NQNs allowed to connect.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Listed hosts that must authenticate in band with DH-HMAC-CHAP
    /// (`[[subsystem.host_dhchap]]`).
    #[serde(default)]
    pub host_dhchap: Vec<HostDhchapConfig>,
    /// Listed hosts with a TLS PSK (`[[subsystem.host_psk]]`).
    #[serde(default)]
    pub host_psk: Vec<HostPskConfig>,
    /// This subsystem's own listeners ("ADDR:PORT").
    #[serde(default)]
    pub listen: Vec<String>,
    /// This subsystem's own TLS-only listeners ("ADDR:PORT"; SPDK's
    /// `nvmf_subsystem_add_listener --secure-channel`).
    #[serde(default)]
    pub listen_secure_channel: Vec<String>,
    /// Namespaces, in order.
    #[serde(default)]
    pub namespaces: Vec<NamespaceConfig>,
    /// Most namespaces (1 to 1024, default 32).
    pub max_namespaces: Option<u32>,
}

/// Every setting of `lull target`, each optional: a file, flags, or both merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// CPUs to run reactors on ("0-3,6"); default every usable CPU.
    pub cores: Option<String>,
    /// The live settings given ([`crate::settings::SETTINGS`]: reactor
    /// modes, the supervisor, the initiator), by their table names (an
    /// alias given is stored under the name); checked against the ranges
    /// by [`resolve`](Config::resolve).
    pub live: BTreeMap<&'static str, SettingValue>,
    /// In-capsule data accepted on I/O queues, bytes (0 to 131072, multiple of 16).
    pub in_capsule_data_size: Option<u32>,
    /// MAXH2CDATA advertised, bytes (4096 to 1048576, multiple of 4).
    pub max_h2c_data: Option<u32>,
    /// Grant header digests when a host asks (default true).
    pub header_digest: Option<bool>,
    /// Grant data digests when a host asks (default true).
    pub data_digest: Option<bool>,
    /// SPDK's C2H success optimization: end a plain successful read with
    /// the C2HData SUCCESS flag and no CapsuleResp for every host (default
    /// true, as SPDK); false: only for hosts that disabled SQ flow control.
    pub c2h_success: Option<bool>,
    /// Smallest non-zero KATO a host gets, ms (default 1000).
    pub kato_min_ms: Option<u32>,
    /// Largest KATO a host may ask for, ms (default 3600000).
    pub kato_max_ms: Option<u32>,
    /// tracing filter: error, warn, info, debug, trace (or a full filter).
    pub log_level: Option<String>,
    /// JSON-RPC Unix socket path (default /var/tmp/lull.sock).
    pub rpc_socket: Option<PathBuf>,
    /// Prometheus metrics address ("127.0.0.1:9465"); none by default.
    pub metrics: Option<String>,
    /// Target-wide listeners: every subsystem and discovery on each.
    pub listen: Option<Vec<String>>,
    /// Bdevs.
    pub bdev: Vec<BdevConfig>,
    /// Subsystems.
    pub subsystem: Vec<SubsystemConfig>,
}

/// The keys of the file that are not live settings, each a field of
/// [`Config`] of the same name; `$list` are the ones given as TOML arrays
/// of tables that add up (`[[bdev]]`).
macro_rules! start_fields {
    (options: $($opt:ident),*; lists: $($list:ident),*) => {
        /// Their names, for "expected one of".
        const START_FIELDS: &[&str] = &[$(stringify!($opt),)* $(stringify!($list)),*];

        /// Reads the value of start field `key` of `map` into `c`.
        fn read_start_field<'de, A: MapAccess<'de>>(c: &mut Config, key: &str, map: &mut A) -> Result<(), A::Error> {
            match key {
                $(stringify!($opt) => {
                    if c.$opt.is_some() {
                        return Err(de::Error::duplicate_field(stringify!($opt)));
                    }
                    c.$opt = Some(map.next_value()?);
                })*
                $(stringify!($list) => {
                    if !c.$list.is_empty() {
                        return Err(de::Error::duplicate_field(stringify!($list)));
                    }
                    c.$list = map.next_value()?;
                })*
                _ => {}
            }
            Ok(())
        }
    };
}

start_fields!(
    options: cores, in_capsule_data_size, max_h2c_data, header_digest, data_digest, c2h_success, kato_min_ms,
        kato_max_ms, log_level, rpc_socket, metrics, listen;
    lists: bdev, subsystem
);

/// A key of the file: a start field, or a live setting (by name or alias).
enum Key {
    Start(String),
    Live(&'static Setting),
}

/// Reads a key, refusing one that is neither (while the reader still knows
/// where the key is, so that the error names its line).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a setting name")
    }
    fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
        if START_FIELDS.contains(&k) {
            return Ok(Key::Start(k.to_string()));
        }
        if let Some(s) = settings::find(k, settings::EVERY_NAME) {
            return Ok(Key::Live(s));
        }
        let known: Vec<String> = START_FIELDS
            .iter()
            .copied()
            .chain(settings::SETTINGS.iter().flat_map(|s| s.names(settings::EVERY_NAME)))
            .map(|n| format!("`{n}`"))
            .collect();
        Err(E::custom(format_args!(
            "unknown field `{k}`, expected one of {}",
            known.join(", ")
        )))
    }
}

/// Reads the file's top-level table: start fields by their types, live
/// settings by the settings table ([`Setting::read`]), each error placed
/// on its line by the reader.
struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = Config;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lull's settings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Config, A::Error> {
        let mut c = Config::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Start(k) => read_start_field(&mut c, &k, &mut map)?,
                Key::Live(s) => {
                    // An alias and the name together are one setting given twice.
                    if c.live.contains_key(s.name) {
                        return Err(de::Error::duplicate_field(s.name));
                    }
                    let v = map.next_value_seed(LiveSeed(s))?;
                    c.live.insert(s.name, v);
                }
            }
        }
        Ok(c)
    }
}

/// A live setting's value, read by its kind.
struct LiveSeed(&'static Setting);

impl<'de> DeserializeSeed<'de> for LiveSeed {
    type Value = SettingValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SettingValue, D::Error> {
        self.0.read(d)
    }
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Config, D::Error> {
        d.deserialize_map(ConfigVisitor)
    }
}

/// What a bdev is, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BdevKind {
    /// RAM (`bdev_malloc_create`).
    Malloc {
        /// Blocks.
        num_blocks: u64,
    },
    /// Discards writes, reads zeroes (`bdev_null_create`).
    Null {
        /// Blocks.
        num_blocks: u64,
    },
    /// A file or block device on io_uring (`bdev_uring_create`).
    Uring {
        /// Path.
        filename: PathBuf,
    },
    /// A mirror of other bdevs (`bdev_raid_create -r raid1`).
    Raid1 {
        /// Its base bdevs, by name, in slot order.
        base_bdevs: Vec<String>,
        /// Keep a superblock on each base (`-s`).
        superblock: bool,
    },
}

/// A bdev to create, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BdevSpec {
    /// Name.
    pub name: String,
    /// Block size, bytes (a raid1 bdev has its bases' and ignores it).
    pub block_size: u32,
    /// Kind.
    pub kind: BdevKind,
    /// UUID, when given.
    pub uuid: Option<[u8; 16]>,
}

/// Parses a UUID written as 32 hex digits, with or without the dashes of
/// the 8-4-4-4-12 form.
///
/// # Errors
/// A message with the expected form.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let form_ok = hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (!s.contains('-') || s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]);
    if !form_ok {
        return Err("a UUID such as 4a1b2c3d-0000-4000-8000-00000000a1b2".to_string());
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| "hex digits".to_string())?;
    }
    Ok(out)
}

/// A subsystem to create, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubsystemSpec {
    /// SUBNQN.
    pub nqn: String,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Allowed hosts.
    pub hosts: Vec<String>,
    /// Hosts that authenticate: (host NQN, host key file, controller key file).
    pub host_dhchap: Vec<(String, PathBuf, Option<PathBuf>)>,
    /// Hosts with a TLS PSK: (host NQN, PSK file).
    pub host_psk: Vec<(String, PathBuf)>,
    /// Own listeners.
    pub listen: Vec<SocketAddr>,
    /// Own TLS-only listeners (`secure_channel`).
    pub listen_secure_channel: Vec<SocketAddr>,
    /// (bdev name, NSID or 0 for the lowest free).
    pub namespaces: Vec<(String, u32)>,
    /// Most namespaces.
    pub max_namespaces: u32,
}

/// Every setting resolved and checked: what the daemon starts from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reactor CPUs (None: every usable CPU).
    pub cores: Option<CoreList>,
    /// Supervisor policy and thresholds.
    pub supervisor: SupervisorConfig,
    /// Hybrid spin window.
    pub idle_poll: Duration,
    /// Initiator options.
    pub nvme: NvmeOptions,
    /// Raid rebuild settings.
    pub raid: lull_engine::bdev::raid1::Raid1Options,
    /// Target transport settings.
    pub transport: TargetQueueConfig,
    /// Target KATO bounds.
    pub target: TargetSettings,
    /// tracing filter.
    pub log_level: String,
    /// JSON-RPC socket.
    pub rpc_socket: PathBuf,
    /// Prometheus address.
    pub metrics: Option<SocketAddr>,
    /// Target-wide listeners.
    pub listen: Vec<SocketAddr>,
    /// Bdevs, in order.
    pub bdevs: Vec<BdevSpec>,
    /// Subsystems, in order.
    pub subsystems: Vec<SubsystemSpec>,
}

/// The default serial number of subsystem `i` (SPDK's default is "00000000000000000000").
fn default_serial(i: usize) -> String {
    format!("LULL{:016}", i + 1)
}

/// Default model number (SPDK: "SPDK bdev Controller").
pub const DEFAULT_MODEL: &str = "lull NVMe/TCP target";

/// Checks a bdev name: letters, digits, `_`, `-`, `.`; 1 to 63 bytes.
///
/// # Errors
/// A message naming the rule.
pub fn check_bdev_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("1 to 63 letters, digits, `_`, `-` or `.`".to_string());
    }
    Ok(())
}

/// Parses "ADDR:PORT" (IPv6 as "[::1]:4420").
///
/// # Errors
/// A message with an example.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| "an address and port such as 0.0.0.0:4420 or [::1]:4420".to_string())
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// A message naming the file, and for a bad field its line and name.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// toml's message: line, column, the field and what was expected.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// `self` with every field `over` sets replaced by `over`'s (flags over a
    /// file). Lists given in `over` replace the file's; bdevs and subsystems add up.
    pub fn overlay(mut self, over: Config) -> Config {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            cores,
            in_capsule_data_size,
            max_h2c_data,
            header_digest,
            data_digest,
            kato_min_ms,
            kato_max_ms,
            log_level,
            rpc_socket,
            metrics,
            listen
        );
        self.live.extend(over.live);
        self.bdev.extend(over.bdev);
        self.subsystem.extend(over.subsystem);
        self
    }

    /// Fills the defaults and checks everything.
    ///
    /// # Errors
    /// The first setting not allowed.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let cores = match &self.cores {
            None => None,
            Some(c) => Some(CoreList::parse(c).or_else(|e| bad("cores", format!("\"{c}\""), e.to_string()))?),
        };
        // The live settings, in table order (a mode_policy beside
        // interrupt_mode wins), each within its range; then the rules
        // between them.
        let mut live = Live::default();
        for s in settings::SETTINGS {
            if let Some(v) = self.live.get(s.name) {
                s.set(&mut live, s.name, v)?;
            }
        }
        let Live {
            supervisor,
            idle_poll,
            nvme,
            raid,
        } = live;
        if let Err(lull_reactor::ReactorError::InvalidSetting { field, value, allowed }) = supervisor.validate() {
            return bad(field, value, allowed);
        }
        if let Err(msg) = nvme.validate() {
            if !msg.contains(" = ") {
                // "reconnect_delay_sec and fast_io_fail_timeout_sec must be 0 when
                // ctrlr_loss_timeout_sec is 0": no one field = value to split out.
                return bad("ctrlr_loss_timeout_sec", nvme.ctrlr_loss_timeout_sec, msg);
            }
            // NvmeOptions names the field first: "field = value ...".
            let (field, rest) = msg.split_once(" = ").unwrap_or(("nvme options", msg.as_str()));
            let (value, allowed) = rest.split_once(' ').unwrap_or((rest, ""));
            return bad(field, value, allowed.trim_start_matches("is out of range: "));
        }

        let t = TargetQueueConfig::default();
        let in_capsule = self.in_capsule_data_size.unwrap_or(t.io_in_capsule_data);
        if in_capsule > 131_072 || !in_capsule.is_multiple_of(16) {
            return bad(
                "in_capsule_data_size",
                in_capsule,
                "0 to 131072 bytes, a multiple of 16",
            );
        }
        let maxh2c = self.max_h2c_data.unwrap_or(t.maxh2cdata);
        if !(4096..=1_048_576).contains(&maxh2c) || !maxh2c.is_multiple_of(4) {
            return bad("max_h2c_data", maxh2c, "4096 to 1048576 bytes, a multiple of 4");
        }
        let transport = TargetQueueConfig {
            maxh2cdata: maxh2c,
            io_in_capsule_data: in_capsule,
            allow_header_digest: self.header_digest.unwrap_or(true),
            allow_data_digest: self.data_digest.unwrap_or(true),
            c2h_success: self.c2h_success.unwrap_or(t.c2h_success),
            ..t
        };
        let ts = TargetSettings::default();
        let target = TargetSettings {
            kato_min_ms: self.kato_min_ms.unwrap_or(ts.kato_min_ms),
            kato_max_ms: self.kato_max_ms.unwrap_or(ts.kato_max_ms),
            ..ts
        };
        if !(100..=3_600_000).contains(&target.kato_min_ms) {
            return bad("kato_min_ms", target.kato_min_ms, "100 to 3600000 ms");
        }
        if target.kato_max_ms < target.kato_min_ms || target.kato_max_ms > 3_600_000 {
            return bad(
                "kato_max_ms",
                target.kato_max_ms,
                format!("kato_min_ms ({}) to 3600000 ms", target.kato_min_ms),
            );
        }
        let log_level = self.log_level.clone().unwrap_or_else(|| "info".to_string());
        if log_level.trim().is_empty() || tracing_filter_ok(&log_level).is_err() {
            return bad(
                "log_level",
                format!("\"{log_level}\""),
                "error, warn, info, debug or trace (or a tracing filter such as lull_engine=debug)",
            );
        }
        let rpc_socket = self
            .rpc_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RPC_SOCKET));
        if rpc_socket.as_os_str().is_empty() || rpc_socket.as_os_str().len() > 107 {
            return bad(
                "rpc_socket",
                format!("\"{}\"", rpc_socket.display()),
                "a path of 1 to 107 bytes (a Unix socket)",
            );
        }
        let metrics = match &self.metrics {
            None => None,
            Some(m) => Some(parse_addr(m).or_else(|e| bad("metrics", format!("\"{m}\""), e))?),
        };
        let mut listen = Vec::new();
        for (i, l) in self.listen.iter().flatten().enumerate() {
            listen.push(parse_addr(l).or_else(|e| bad(format!("listen[{i}]"), format!("\"{l}\""), e))?);
        }

        let mut bdevs: Vec<BdevSpec> = Vec::new();
        for (i, b) in self.bdev.iter().enumerate() {
            let spec = resolve_bdev(i, b, &bdevs)?;
            if bdevs.iter().any(|x| x.name == spec.name) {
                return bad(
                    format!("bdev[{i}].name"),
                    format!("\"{}\"", spec.name),
                    "a name no other bdev has",
                );
            }
            bdevs.push(spec);
        }
        let mut subsystems: Vec<SubsystemSpec> = Vec::new();
        for (i, s) in self.subsystem.iter().enumerate() {
            let spec = resolve_subsystem(i, s, &bdevs)?;
            if subsystems.iter().any(|x| x.nqn == spec.nqn) {
                return bad(
                    format!("subsystem[{i}].nqn"),
                    format!("\"{}\"", spec.nqn),
                    "an NQN no other subsystem has",
                );
            }
            subsystems.push(spec);
        }
        Ok(Settings {
            cores,
            supervisor,
            idle_poll,
            nvme,
            raid,
            transport,
            target,
            log_level,
            rpc_socket,
            metrics,
            listen,
            bdevs,
            subsystems,
        })
    }
}

/// Whether a tracing filter parses (level names or `target=level` pairs).
fn tracing_filter_ok(s: &str) -> Result<(), ()> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for part in s.split(',') {
        let level = part.rsplit_once('=').map_or(part, |(_, l)| l).trim();
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(());
        }
    }
    Ok(())
}

fn resolve_bdev(i: usize, b: &BdevConfig, before: &[BdevSpec]) -> Result<BdevSpec, ConfigError> {
    let at = |f: &str| format!("bdev[{i}].{f}");
    let Some(name) = b.name.clone() else {
        return bad(at("name"), "(missing)", "a bdev name");
    };
    if let Err(e) = check_bdev_name(&name) {
        return bad(at("name"), format!("\"{name}\""), e);
    }
    let kind = b.kind.as_deref().unwrap_or("");
    if kind == "raid1" {
        return resolve_raid1(i, b, name, before);
    }
    if b.base_bdevs.is_some() || b.superblock.is_some() {
        let field = if b.base_bdevs.is_some() {
            "base_bdevs"
        } else {
            "superblock"
        };
        return bad(at(field), "(given)", "only for type = \"raid1\"");
    }
    let block_size = b.block_size.unwrap_or(512);
    if !matches!(block_size, 512 | 4096) {
        return bad(at("block_size"), block_size, "512 or 4096 bytes");
    }
    let blocks = || -> Result<u64, ConfigError> {
        match (&b.size, b.num_blocks) {
            (Some(_), Some(_)) => bad(at("num_blocks"), "(with size)", "either size or num_blocks, not both"),
            (None, Some(0)) => bad(at("num_blocks"), 0, "1 or more blocks"),
            (None, Some(n)) => Ok(n),
            (Some(s), None) => {
                let bytes = s.bytes().or_else(|e| bad(at("size"), s, e))?;
                if !bytes.is_multiple_of(u64::from(block_size)) {
                    return bad(at("size"), s, format!("a multiple of the {block_size}-byte block size"));
                }
                Ok(bytes / u64::from(block_size))
            }
            (None, None) => bad(at("size"), "(missing)", "a size such as \"256MiB\" (or num_blocks)"),
        }
    };
    let kind = match kind {
        "malloc" => BdevKind::Malloc { num_blocks: blocks()? },
        "null" => BdevKind::Null { num_blocks: blocks()? },
        "uring" | "file" => {
            let Some(filename) = b.filename.clone() else {
                return bad(at("filename"), "(missing)", "the path of a file or block device");
            };
            if b.size.is_some() || b.num_blocks.is_some() {
                return bad(at("size"), "(given)", "nothing: a uring bdev is the size of its file");
            }
            BdevKind::Uring { filename }
        }
        other => return bad(at("type"), format!("\"{other}\""), "malloc, null, uring or raid1"),
    };
    if b.filename.is_some() && !matches!(kind, BdevKind::Uring { .. }) {
        return bad(at("filename"), "(given)", "only for type = \"uring\"");
    }
    let uuid = match &b.uuid {
        None => None,
        Some(u) => Some(parse_uuid(u).or_else(|e| bad(at("uuid"), format!("\"{u}\""), e))?),
    };
    Ok(BdevSpec {
        name,
        block_size,
        kind,
        uuid,
    })
}

/// A `type = "raid1"` bdev: its bases defined above it, each used once
/// and by no other raid (a base belongs to one volume).
fn resolve_raid1(i: usize, b: &BdevConfig, name: String, before: &[BdevSpec]) -> Result<BdevSpec, ConfigError> {
    let at = |f: &str| format!("bdev[{i}].{f}");
    for (field, given) in [
        ("size", b.size.is_some()),
        ("num_blocks", b.num_blocks.is_some()),
        ("block_size", b.block_size.is_some()),
        ("filename", b.filename.is_some()),
    ] {
        if given {
            return bad(
                at(field),
                "(given)",
                "nothing: a raid1 bdev takes its size and block size from its base_bdevs",
            );
        }
    }
    let Some(bases) = b.base_bdevs.clone() else {
        return bad(
            at("base_bdevs"),
            "(missing)",
            "the names of 2 or more bdevs defined above, e.g. [\"Malloc0\", \"Malloc1\"]",
        );
    };
    if bases.len() < 2 {
        return bad(
            at("base_bdevs"),
            format!("({} bdev)", bases.len()),
            "at least 2 base bdevs (a raid1 of one is no mirror)",
        );
    }
    if bases.len() > MAX_RAID_BASE_BDEVS {
        return bad(
            at("base_bdevs"),
            format!("({} bdevs)", bases.len()),
            format!("at most {MAX_RAID_BASE_BDEVS} base bdevs"),
        );
    }
    for (j, base) in bases.iter().enumerate() {
        let f = format!("bdev[{i}].base_bdevs[{j}]");
        let Some(spec) = before.iter().find(|s| s.name == *base) else {
            let names: Vec<&str> = before.iter().map(|s| s.name.as_str()).collect();
            return bad(
                f,
                format!("\"{base}\""),
                format!("one of the bdevs defined above it: [{}]", names.join(", ")),
            );
        };
        if bases[..j].contains(base) {
            return bad(f, format!("\"{base}\""), "a bdev not already a base of this raid");
        }
        if matches!(spec.kind, BdevKind::Raid1 { .. }) {
            return bad(
                f,
                format!("\"{base}\""),
                "a malloc, null or uring bdev (not another raid)",
            );
        }
        if let Some(other) = before
            .iter()
            .find(|s| matches!(&s.kind, BdevKind::Raid1 { base_bdevs, .. } if base_bdevs.contains(base)))
        {
            return bad(
                f,
                format!("\"{base}\""),
                format!("a bdev no other raid uses (it is a base of {})", other.name),
            );
        }
    }
    if let Err(e) = check_raid_name(&name) {
        return bad(at("name"), format!("\"{name}\""), e);
    }
    let uuid = match &b.uuid {
        None => None,
        Some(u) => Some(parse_uuid(u).or_else(|e| bad(at("uuid"), format!("\"{u}\""), e))?),
    };
    Ok(BdevSpec {
        name,
        block_size: 0,
        kind: BdevKind::Raid1 {
            base_bdevs: bases,
            superblock: b.superblock.unwrap_or(false),
        },
        uuid,
    })
}

/// Most base bdevs of one raid (the engine's limit).
pub const MAX_RAID_BASE_BDEVS: usize = lull_engine::bdev::raid1::MAX_BASE_BDEVS;

/// Longest raid bdev name, bytes (SPDK keeps it in a 32-byte superblock field).
pub const MAX_RAID_NAME: usize = 31;

/// Checks a raid bdev's name: a bdev name of at most [`MAX_RAID_NAME`] bytes.
///
/// # Errors
/// A message naming the rule.
pub fn check_raid_name(name: &str) -> Result<(), String> {
    check_bdev_name(name)?;
    if name.len() > MAX_RAID_NAME {
        return Err(format!(
            "at most {MAX_RAID_NAME} bytes (a raid's name is kept in its superblock)"
        ));
    }
    Ok(())
}

fn resolve_subsystem(i: usize, s: &SubsystemConfig, bdevs: &[BdevSpec]) -> Result<SubsystemSpec, ConfigError> {
    let at = |f: &str| format!("subsystem[{i}].{f}");
    let Some(nqn) = s.nqn.clone() else {
        return bad(at("nqn"), "(missing)", "an NQN such as nqn.2024-01.io.example:vol0");
    };
    if let Err(e) = lull_engine::nvmf::subsystem::validate_nqn(&nqn) {
        return bad(at("nqn"), format!("\"{nqn}\""), e);
    }
    let serial = s.serial_number.clone().unwrap_or_else(|| default_serial(i));
    let model = s.model_number.clone().unwrap_or_else(|| DEFAULT_MODEL.to_string());
    if let Err(e) = lull_engine::nvmf::subsystem::Subsystem::new(&nqn, &serial, &model) {
        let field = if e.starts_with("serial") {
            "serial_number"
        } else if e.starts_with("model") {
            "model_number"
        } else {
            "nqn"
        };
        let value = match field {
            "serial_number" => serial.clone(),
            "model_number" => model.clone(),
            _ => nqn.clone(),
        };
        return bad(at(field), format!("\"{value}\""), e);
    }
    let allow_any_host = s.allow_any_host.unwrap_or(false);
    for (j, h) in s.hosts.iter().enumerate() {
        if let Err(e) = lull_engine::nvmf::subsystem::validate_nqn(h) {
            return bad(format!("subsystem[{i}].hosts[{j}]"), format!("\"{h}\""), e);
        }
    }
    if allow_any_host && !s.hosts.is_empty() {
        return bad(at("hosts"), "(given)", "no list when allow_any_host = true");
    }
    if !allow_any_host && s.hosts.is_empty() {
        return bad(
            at("hosts"),
            "[]",
            "at least one host NQN, or allow_any_host = true (no host could connect)",
        );
    }
    let mut host_dhchap = Vec::new();
    for (j, d) in s.host_dhchap.iter().enumerate() {
        let f = |x: &str| format!("subsystem[{i}].host_dhchap[{j}].{x}");
        let Some(host) = d.host.clone() else {
            return bad(f("host"), "(missing)", "the NQN of a host in `hosts`");
        };
        if !s.hosts.contains(&host) {
            return bad(f("host"), format!("\"{host}\""), "a host listed in `hosts`");
        }
        if host_dhchap.iter().any(|(h, _, _)| *h == host) {
            return bad(f("host"), format!("\"{host}\""), "a host not already given keys");
        }
        let Some(key) = d.dhchap_key.clone() else {
            return bad(
                f("dhchap_key"),
                "(missing)",
                "the path of a file holding a DHHC-1 secret",
            );
        };
        host_dhchap.push((host, key, d.dhchap_ctrlr_key.clone()));
    }
    let mut host_psk: Vec<(String, PathBuf)> = Vec::new();
    for (j, d) in s.host_psk.iter().enumerate() {
        let f = |x: &str| format!("subsystem[{i}].host_psk[{j}].{x}");
        let Some(host) = d.host.clone() else {
            return bad(f("host"), "(missing)", "the NQN of a host in `hosts`");
        };
        if !s.hosts.contains(&host) {
            return bad(f("host"), format!("\"{host}\""), "a host listed in `hosts`");
        }
        if host_psk.iter().any(|(h, _)| *h == host) {
            return bad(f("host"), format!("\"{host}\""), "a host not already given a PSK");
        }
        let Some(psk) = d.psk.clone() else {
            return bad(f("psk"), "(missing)", "the path of a file holding an NVMeTLSkey-1 PSK");
        };
        host_psk.push((host, psk));
    }
    let mut listen = Vec::new();
    for (j, l) in s.listen.iter().enumerate() {
        listen.push(parse_addr(l).or_else(|e| bad(format!("subsystem[{i}].listen[{j}]"), format!("\"{l}\""), e))?);
    }
    let mut listen_secure_channel = Vec::new();
    for (j, l) in s.listen_secure_channel.iter().enumerate() {
        let a = parse_addr(l).or_else(|e| {
            bad(
                format!("subsystem[{i}].listen_secure_channel[{j}]"),
                format!("\"{l}\""),
                e,
            )
        })?;
        if allow_any_host {
            return bad(
                format!("subsystem[{i}].listen_secure_channel[{j}]"),
                format!("\"{l}\""),
                "hosts with PSKs: a secure channel is refused while allow_any_host = true",
            );
        }
        listen_secure_channel.push(a);
    }
    let max_namespaces = s.max_namespaces.unwrap_or(DEFAULT_MAX_NAMESPACES);
    if !(1..=1024).contains(&max_namespaces) {
        return bad(at("max_namespaces"), max_namespaces, "1 to 1024");
    }
    if s.namespaces.len() > max_namespaces as usize {
        return bad(
            at("namespaces"),
            format!("({} namespaces)", s.namespaces.len()),
            format!("at most max_namespaces ({max_namespaces})"),
        );
    }
    let mut namespaces: Vec<(String, u32)> = Vec::new();
    for (j, n) in s.namespaces.iter().enumerate() {
        let f = |x: &str| format!("subsystem[{i}].namespaces[{j}].{x}");
        let Some(bdev) = n.bdev.clone() else {
            return bad(f("bdev"), "(missing)", "the name of a bdev");
        };
        if !bdevs.iter().any(|b| b.name == bdev) {
            let names: Vec<&str> = bdevs.iter().map(|b| b.name.as_str()).collect();
            return bad(
                f("bdev"),
                format!("\"{bdev}\""),
                format!("one of the bdevs defined: [{}]", names.join(", ")),
            );
        }
        // A raid's base is the raid's alone: a host writing to it directly
        // would bypass the mirror.
        if let Some(raid) = bdevs
            .iter()
            .find(|b| matches!(&b.kind, BdevKind::Raid1 { base_bdevs, .. } if base_bdevs.contains(&bdev)))
        {
            return bad(
                f("bdev"),
                format!("\"{bdev}\""),
                format!(
                    "a bdev no raid uses (it is a base of {}; export {} instead)",
                    raid.name, raid.name
                ),
            );
        }
        let nsid = n.nsid.unwrap_or(0);
        if n.nsid.is_some() && !(1..=lull_engine::nvmf::subsystem::MAX_NAMESPACES).contains(&nsid) {
            return bad(
                f("nsid"),
                nsid,
                format!("1 to {}", lull_engine::nvmf::subsystem::MAX_NAMESPACES),
            );
        }
        if namespaces.iter().any(|(b, _)| *b == bdev) {
            return bad(
                f("bdev"),
                format!("\"{bdev}\""),
                "a bdev not already a namespace of this subsystem",
            );
        }
        if nsid != 0 && namespaces.iter().any(|(_, id)| *id == nsid) {
            return bad(f("nsid"), nsid, "an NSID not already used in this subsystem");
        }
        namespaces.push((bdev, nsid));
    }
    Ok(SubsystemSpec {
        nqn,
        serial,
        model,
        allow_any_host,
        hosts: s.hosts.clone(),
        host_dhchap,
        host_psk,
        listen,
        listen_secure_channel,
        namespaces,
        max_namespaces,
    })
}

#[cfg(test)]
mod tests;
