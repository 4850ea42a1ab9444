//! How the tree's typed values are written in TOML and the environment: `""` for a
//! value that is not set, a comma-separated list, a `listen` address resolved once.

use serde::{Deserialize, Deserializer};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Reads `listen`: an `ip:port`, or a `host:port` resolved now (first IPv4 address,
/// else the first address), so `--listen localhost:8000` works as it reads.
pub(super) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_listen(&text).map_err(serde::de::Error::custom)
}

/// `ip:port` or `host:port` to one address to bind.
pub fn resolve_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(format!(
            "{text:?} is not host:port (e.g. 127.0.0.1:8000, [::]:8000 or localhost:8000)"
        ));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A value that is either set or, written as `""` (the form `whispr.example.toml` and the
/// README document), not set; serialised back to the same text, so the defaults layer
/// and the example file say the same thing.
pub(super) trait Setting: Sized {
    fn to_text(&self) -> String;
    fn from_text(text: &str) -> Result<Self, String>;
}

impl Setting for String {
    fn to_text(&self) -> String {
        self.clone()
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl Setting for PathBuf {
    fn to_text(&self) -> String {
        self.display().to_string()
    }
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl Setting for SocketAddr {
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|_| {
            format!("{text:?} is not an address such as 127.0.0.1:9090 (or \"\" for none)")
        })
    }
}

/// `Option<T>` as a string, `""` for `None` (`#[serde(with = "empty_is_none")]`).
pub(super) mod empty_is_none {
    use super::Setting;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: Setting>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.as_ref().map(T::to_text).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Setting>(d: D) -> Result<Option<T>, D::Error> {
        match String::deserialize(d)?.as_str() {
            "" => Ok(None),
            text => T::from_text(text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A list written as one comma-separated string (`"a,b"`, `""` for none), as the
/// README documents `redis_cluster_urls` (`#[serde(with = "comma_separated")]`).
pub(super) mod comma_separated {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(String::deserialize(d)?
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect())
    }
}
