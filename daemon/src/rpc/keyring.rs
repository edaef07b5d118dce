//! `keyring_*` methods: SPDK's file keyring. A key is a name for a key file
//! (mode 0600, owned by the daemon's user); results show names and paths,
//! never a secret.

use serde::Deserialize;
use serde_json::{Value, json};

use super::RpcError;
use super::params::decode;
use crate::app::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    path: String,
}

pub(super) fn keyring_file_add_key(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: AddKey = decode(params)?;
    app.keyring_add(&p.name, std::path::Path::new(&p.path))?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveKey {
    name: String,
}

pub(super) fn keyring_file_remove_key(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: RemoveKey = decode(params)?;
    app.keyring_remove(&p.name)?;
    Ok(Value::Bool(true))
}

/// SPDK's shape: `name`, `removed`, `probed` (false: file keys are added,
/// not found by a probe), `refcnt` (the keyring's own reference plus one
/// per user; a removed key has lost the keyring's), then the file
/// module's `path`.
pub(super) fn keyring_get_keys(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(Value::Array(
        app.keyring_keys()
            .into_iter()
            .map(|(name, e, users)| {
                json!({
                    "name": name,
                    "removed": e.removed,
                    "probed": false,
                    "refcnt": users + usize::from(!e.removed),
                    "path": e.path.display().to_string(),
                })
            })
            .collect(),
    ))
}
