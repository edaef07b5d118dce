//! Decoding parameters the way SPDK's decoder does: named fields, unknown
//! ones refused, a missing required one an Invalid Params error.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::RpcError;

/// Decodes `params` (absent = `{}`) into `T`.
///
/// # Errors
/// Invalid parameters, naming the field serde found wrong.
pub(crate) fn decode<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    let v = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    // serde names a missing or unknown field but not the one whose value has
    // the wrong type or range: the path says which (`namespace.nsid`).
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.to_string().contains(&format!("`{path}`")) {
            RpcError::invalid(format!("Invalid parameters: {inner}"))
        } else {
            RpcError::invalid(format!("Invalid parameters: {path}: {inner}"))
        }
    })
}

/// `{}` or no params: for methods that take none.
///
/// # Errors
/// Invalid parameters when any are given.
pub(crate) fn none(params: &Value) -> Result<(), RpcError> {
    match params {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        _ => Err(RpcError::invalid("Invalid parameters: this method takes none")),
    }
}

/// An address and port from SPDK's `traddr` and `trsvcid` strings.
///
/// # Errors
/// Invalid parameters naming the field.
pub(crate) fn socket_addr(traddr: &str, trsvcid: &str) -> Result<std::net::SocketAddr, RpcError> {
    let ip: std::net::IpAddr = traddr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            RpcError::invalid(format!(
                "Invalid parameters: traddr `{traddr}` is not an IPv4 or IPv6 address"
            ))
        })?;
    let port: u16 = trsvcid.parse().map_err(|_| {
        RpcError::invalid(format!(
            "Invalid parameters: trsvcid `{trsvcid}` is not a port number 0..=65535"
        ))
    })?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Checks `trtype` is TCP (case-insensitive, as SPDK).
///
/// # Errors
/// Invalid parameters naming the transport.
pub(crate) fn tcp(trtype: &str) -> Result<(), RpcError> {
    if trtype.eq_ignore_ascii_case("tcp") {
        Ok(())
    } else {
        Err(RpcError::invalid(format!(
            "Invalid parameters: transport type '{trtype}' not supported (lull serves TCP)"
        )))
    }
}

/// `adrfam` as SPDK writes it for an address.
pub(crate) fn adrfam(addr: &std::net::SocketAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Formats a 16-byte identifier as a UUID string.
pub(crate) fn uuid_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}
