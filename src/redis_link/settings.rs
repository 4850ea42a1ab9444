//! The Redis keys (`redis_url`, `redis_cluster_urls`, `redis_tls_ca`): where Redis is,
//! from the config, and the checks at load.

use super::RedisTarget;
use crate::config::{require, Config, Invalid, StoreKind};

impl RedisTarget {
    /// From the configuration: `redis_cluster_urls` wins when it lists any node.
    pub fn from_config(c: &Config) -> Self {
        let target = if c.redis_cluster_urls.is_empty() {
            RedisTarget::single(&c.redis_url)
        } else {
            RedisTarget::cluster(c.redis_cluster_urls.clone())
        };
        match &c.redis_tls_ca {
            None => target,
            Some(ca) => target.with_tls_ca(ca),
        }
    }
}

const URL_FORM: &str = "must be redis://[[user]:password@]host:port[/db] or rediss://… (comma-separated for the cluster list)";

fn is_redis_url(url: &str) -> bool {
    (url.starts_with("redis://") || url.starts_with("rediss://"))
        && redis::parse_redis_url(url).is_some()
}

pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    // With a cluster list, `redis_url` is unused and may be left empty.
    require(
        is_redis_url(&c.redis_url) || (c.redis_url.is_empty() && !c.redis_cluster_urls.is_empty()),
        "redis_url",
        URL_FORM,
    )?;
    for url in &c.redis_cluster_urls {
        require(is_redis_url(url), "redis_cluster_urls", URL_FORM)?;
    }
    require(
        c.redis_tls_ca.as_deref().is_none_or(|ca| ca.is_file()),
        "redis_tls_ca",
        "no such file (a PEM CA certificate)",
    )?;
    if c.store == StoreKind::Memory {
        // A Redis address with the memory store is a half-finished setup: running on
        // memory would silently give up what the operator wanted Redis for.
        let detail = "is set but store = \"memory\": add store = \"redis\" (or \"auto\") to use Redis, or remove it";
        require(
            c.redis_cluster_urls.is_empty(),
            "redis_cluster_urls",
            detail,
        )?;
        require(
            c.redis_url == Config::default().redis_url,
            "redis_url",
            detail,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_win_and_split_on_commas() {
        let c = Config::from_toml("store = \"redis\"\nredis_url = \"redis://a:1\"").unwrap();
        assert_eq!(
            RedisTarget::from_config(&c),
            RedisTarget::single("redis://a:1")
        );
        let c = Config {
            redis_tls_ca: Some("/ca.pem".into()),
            ..Config::from_toml(
                "store = \"redis\"\nredis_url = \"redis://a:1\"\nredis_cluster_urls = \" redis://b:2 , redis://c:3,\"",
            )
            .unwrap()
        };
        assert_eq!(
            RedisTarget::from_config(&c),
            RedisTarget::cluster(vec!["redis://b:2".into(), "redis://c:3".into()])
                .with_tls_ca("/ca.pem")
        );
    }
}
