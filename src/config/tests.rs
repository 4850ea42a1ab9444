//! Parsing from strings and the environment, and every key's error.

use super::load::{known_keys, suggest};
use super::*;
use std::path::Path;

#[test]
fn example_file_lists_every_key_with_its_default() {
    let text = include_str!("../../whispr.example.toml");
    assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    for key in known_keys() {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "whispr.example.toml lacks `{key}`"
        );
    }
}

#[test]
fn defaults_are_valid() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
}

#[test]
fn attachment_ttl_math_saturates() {
    let month = Config::from_toml("attachment_ttl_seconds = 2592000").unwrap();
    assert_eq!(month.attachment_ttl_ms(), 2_592_000_000);
    let huge = Config {
        attachment_ttl_seconds: u64::MAX,
        ..Config::default()
    };
    assert_eq!(huge.attachment_ttl_ms(), u64::MAX);
    assert_eq!(
        crate::blobs::BlobLimits::from_config(&huge).ttl_ms,
        u64::MAX
    );
}

#[test]
fn v1_names_are_keys() {
    let c = Config::from_toml(
        "max_messages_per_recipient = 20\nmax_messages_per_second = 3\nmessage_ttl_seconds = 60\nattachment_max_size_bytes = 1024\n",
    )
    .unwrap();
    assert_eq!(c.max_messages_per_recipient, 20);
    assert_eq!(c.max_messages_per_second, 3);
    assert_eq!(c.message_ttl_seconds, 60);
    assert_eq!(c.attachment_max_size_bytes, 1024);
}

#[test]
fn whispr_v1_compat_is_on_by_default_and_can_be_switched_off() {
    assert!(Config::default().compat_whispr_v1);
    let c = Config::from_toml("compat_whispr_v1 = false").unwrap();
    assert!(!c.compat_whispr_v1);
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn whispr_v1_compat_switch_from_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("WHISPR_COMPAT_WHISPR_V1", "false");
        let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
        assert!(!c.compat_whispr_v1);
        Ok(())
    });
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let err = Config::from_toml("max_mesages_per_second = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_mesages_per_second"), "{err}");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn a_misspelled_whispr_variable_stops_with_one_line_and_a_suggestion() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("WHISPR_MAX_MESAGES_PER_SECOND", "5");
        let err = Config::load(None, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration: environment WHISPR_MAX_MESAGES_PER_SECOND: unknown variable (did you mean WHISPR_MAX_MESSAGES_PER_SECOND?)"
        );
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.set_env("WHISPR_NONSENSE", "1");
        let err = Config::load(None, &Overrides::default()).unwrap_err();
        assert_eq!(err.key, "WHISPR_NONSENSE");
        assert!(err.problem.contains("WHISPR_SERVER"), "{err}");
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        for other in OTHER_WHISPR_VARIABLES {
            jail.set_env(other, "1");
        }
        jail.set_env("WHISPR_CONFIG", "/nonexistent");
        Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn every_error_is_one_line_naming_where_and_the_key() {
    // The one line a load from `file` with `flags` fails with.
    let error = |file: Option<&str>, flags: &Overrides| {
        Config::load(file.map(Path::new), flags)
            .unwrap_err()
            .to_string()
    };
    let none = Overrides::default();
    figment::Jail::expect_with(|jail| {
        jail.create_file("w.toml", "max_mesages_per_second = 3\n")?;
        let err = error(Some("w.toml"), &none);
        assert!(
            err.starts_with("configuration: ")
                && err.ends_with(
                    "w.toml max_mesages_per_second: unknown key (did you mean max_messages_per_second?)"
                ),
            "{err}"
        );
        jail.create_file("syntax.toml", "listen = \n[x\n")?;
        let err = error(Some("syntax.toml"), &none);
        assert!(err.contains("syntax.toml") && !err.contains('\n'), "{err}");
        jail.create_file("zero.toml", "message_ttl_seconds = 0\n")?;
        let err = error(Some("zero.toml"), &none);
        assert!(
            err.ends_with("zero.toml message_ttl_seconds: must be at least 1"),
            "{err}"
        );
        jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "soon");
        let err = error(None, &none);
        assert!(
            err.starts_with("configuration: environment WHISPR_MESSAGE_TTL_SECONDS: "),
            "{err}"
        );
        jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "0");
        let err = error(None, &none);
        assert_eq!(
            err,
            "configuration: environment WHISPR_MESSAGE_TTL_SECONDS: must be at least 1"
        );
        jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "60");
        let flags = Overrides {
            log_level: Some("[[[".into()),
            ..Overrides::default()
        };
        let err = error(None, &flags);
        assert!(
            err.starts_with("configuration: flag --log-level: not a valid filter"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn listen_takes_host_names() {
    let c = Config::from_toml("listen = \"localhost:8001\"").unwrap();
    assert!(c.listen.ip().is_loopback(), "{}", c.listen);
    assert_eq!(c.listen.port(), 8001);
    assert_eq!(
        resolve_listen("[::1]:9").unwrap(),
        "[::1]:9".parse::<SocketAddr>().unwrap()
    );
    for bad in [
        "localhost",
        "localhost:http",
        ":80",
        "no-such-host.invalid:80",
    ] {
        let err = Config::from_toml(&format!("listen = {bad:?}")).unwrap_err();
        assert_eq!(err.key, "listen", "{bad}: {err}");
    }
}

#[test]
fn suggestions_are_for_typos_only() {
    let known = known_keys();
    assert_eq!(
        suggest("max_mesages_per_second", &known).as_deref(),
        Some("max_messages_per_second")
    );
    assert_eq!(suggest("colour", &known), None);
}

#[test]
fn wrong_type_is_an_error_naming_the_key() {
    let err = Config::from_toml("message_ttl_seconds = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("message_ttl_seconds"), "{err}");
}

/// For every key with values it refuses: one such value (as TOML lines, with any
/// other key it needs first), and the key the error must name. The error names the
/// key the operator wrote, not a neighbour of it.
const REFUSED: &[(&str, &str)] = &[
    ("listen = \"nowhere\"", "listen"),
    ("tls_cert = \"/etc/cert.pem\"", "tls_cert"),
    ("tls_key = \"/etc/key.pem\"", "tls_key"),
    ("max_connections = 0", "max_connections"),
    ("max_connections_per_ip = 0", "max_connections_per_ip"),
    (
        "max_new_connections_per_second = 0",
        "max_new_connections_per_second",
    ),
    (
        "http_header_read_timeout_seconds = 0",
        "http_header_read_timeout_seconds",
    ),
    (
        "http_keep_alive_timeout_seconds = 11",
        "http_keep_alive_timeout_seconds",
    ),
    (
        "http_write_timeout_seconds = 0",
        "http_write_timeout_seconds",
    ),
    ("http_max_head_bytes = 8191", "http_max_head_bytes"),
    (
        "http_body_timeout_seconds = 3601",
        "http_body_timeout_seconds",
    ),
    ("http_max_connections = 0", "http_max_connections"),
    (
        "http_max_connections_per_ip = 0",
        "http_max_connections_per_ip",
    ),
    (
        "http_reserved_connections_per_ip = 0",
        "http_reserved_connections_per_ip",
    ),
    ("metrics_listen = \"localhost\"", "metrics_listen"),
    ("origin = \"https://chat.example.com\"", "origin"),
    ("store = \"disk\"", "store"),
    ("redis_url = \"http://127.0.0.1:6379\"", "redis_url"),
    ("redis_url = \"redis://10.0.0.1:6379\"", "redis_url"),
    (
        "store = \"redis\"\nredis_cluster_urls = \"redis://a:1,b:2\"",
        "redis_cluster_urls",
    ),
    ("redis_cluster_urls = \"redis://a:1\"", "redis_cluster_urls"),
    ("redis_tls_ca = \"/nonexistent/ca.pem\"", "redis_tls_ca"),
    (
        "redis_response_timeout_ms = 99",
        "redis_response_timeout_ms",
    ),
    ("redis_calls_in_flight = 0", "redis_calls_in_flight"),
    ("max_message_bytes = 0", "max_message_bytes"),
    (
        "max_messages_per_recipient = 0",
        "max_messages_per_recipient",
    ),
    ("max_messages_per_second = 0", "max_messages_per_second"),
    (
        "max_messages_per_second_per_ip = 1000001",
        "max_messages_per_second_per_ip",
    ),
    ("burst_messages = 0", "burst_messages"),
    ("burst_messages_per_ip = 0", "burst_messages_per_ip"),
    ("rate_limit_lease_ms = 1001", "rate_limit_lease_ms"),
    ("verify_queue_depth = 0", "verify_queue_depth"),
    ("verify_max_batch = 4097", "verify_max_batch"),
    ("verify_leader_grace_ms = 0", "verify_leader_grace_ms"),
    ("verify_workers = 0", "verify_workers"),
    (
        "max_bad_signatures_per_second_per_ip = 0",
        "max_bad_signatures_per_second_per_ip",
    ),
    (
        "burst_bad_signatures_per_ip = 0",
        "burst_bad_signatures_per_ip",
    ),
    (
        "max_bad_signatures_per_session = 1000001",
        "max_bad_signatures_per_session",
    ),
    ("message_ttl_seconds = 0", "message_ttl_seconds"),
    ("max_clock_skew_seconds = 0", "max_clock_skew_seconds"),
    ("max_store_bytes = 10", "max_store_bytes"),
    ("attachment_max_size_bytes = 0", "attachment_max_size_bytes"),
    ("attachment_ttl_seconds = 2592001", "attachment_ttl_seconds"),
    (
        "attachment_upload_timeout_seconds = 0",
        "attachment_upload_timeout_seconds",
    ),
    (
        "attachment_max_size_bytes = 2048\nmax_attachment_store_bytes = 2047",
        "max_attachment_store_bytes",
    ),
    (
        "attachment_max_size_bytes = 2048\nmax_attachment_bytes_per_sender = 2047",
        "max_attachment_bytes_per_sender",
    ),
    (
        "attachment_max_size_bytes = 3000\nmax_attachment_inflight_bytes = 20383",
        "max_attachment_inflight_bytes",
    ),
    ("signal_max_peers_per_room = 1", "signal_max_peers_per_room"),
    ("signal_max_message_bytes = 63", "signal_max_message_bytes"),
    (
        "signal_max_rooms_per_connection = 0",
        "signal_max_rooms_per_connection",
    ),
    (
        "signal_max_frames_per_second = 0",
        "signal_max_frames_per_second",
    ),
    ("ws_ping_interval_seconds = 0", "ws_ping_interval_seconds"),
    ("ws_catch_up_seconds = 0", "ws_catch_up_seconds"),
    ("ws_pong_timeout_seconds = 0", "ws_pong_timeout_seconds"),
    ("ws_write_timeout_seconds = 0", "ws_write_timeout_seconds"),
    ("ws_auth_timeout_seconds = 0", "ws_auth_timeout_seconds"),
    ("ws_max_inflight = 0", "ws_max_inflight"),
    ("ws_max_pipelined_sends = 0", "ws_max_pipelined_sends"),
    ("ws_outbound_queue = 0", "ws_outbound_queue"),
    ("ws_read_buffer_bytes = 1023", "ws_read_buffer_bytes"),
    ("ws_write_buffer_bytes = 1023", "ws_write_buffer_bytes"),
    (
        "ws_max_write_buffer_bytes = 65536",
        "ws_max_write_buffer_bytes",
    ),
    ("ws_close_timeout_seconds = 0", "ws_close_timeout_seconds"),
    (
        "ws_ephemeral_queue_bytes = 65536",
        "ws_ephemeral_queue_bytes",
    ),
    ("poll_max_messages = 0", "poll_max_messages"),
    ("sweep_interval_seconds = 0", "sweep_interval_seconds"),
    ("log_format = \"xml\"", "log_format"),
    ("log_level = \"[[[\"", "log_level"),
];

/// The keys every value of whose type is accepted.
const ANY_VALUE: &[&str] = &[
    "trusted_proxies",
    "http_reserved_connections",
    "redis_allow_eviction",
    "memory_snapshot_path",
    "compat_whispr_v1",
    "shutdown_grace_seconds",
    "analytics_log_path",
    "analytics_include_keys",
    "log_client_failures_per_minute",
];

#[test]
fn every_refused_value_names_its_key() {
    for (toml, key) in REFUSED {
        let err = Config::from_toml(toml).unwrap_err();
        assert_eq!(err.key, *key, "{toml}: {err}");
    }
    // More refused values of keys above (bounds on both sides, overflow).
    for (toml, key) in [
        ("attachment_ttl_seconds = 0", "attachment_ttl_seconds"),
        (
            "max_messages_per_second = 1000001",
            "max_messages_per_second",
        ),
        (
            "max_messages_per_second_per_ip = 0",
            "max_messages_per_second_per_ip",
        ),
        (
            "signal_max_message_bytes = 16777217",
            "signal_max_message_bytes",
        ),
        ("max_message_bytes = 16777217", "max_message_bytes"),
        ("http_max_head_bytes = 1048577", "http_max_head_bytes"),
        (
            "redis_response_timeout_ms = 60001",
            "redis_response_timeout_ms",
        ),
        ("redis_calls_in_flight = 65", "redis_calls_in_flight"),
    ] {
        let err = Config::from_toml(toml).unwrap_err();
        assert_eq!(err.key, key, "{toml}: {err}");
    }
    // Past TOML's integers: the parser's error quotes the line.
    let err = Config::from_toml("attachment_ttl_seconds = 18446744073709551615").unwrap_err();
    assert!(err.to_string().contains("attachment_ttl_seconds"), "{err}");
}

#[test]
fn every_key_has_a_refused_value_or_takes_any() {
    for key in known_keys() {
        let refused = REFUSED.iter().any(|(_, k)| *k == key);
        let any = ANY_VALUE.contains(&key.as_str());
        assert!(
            refused != any,
            "`{key}`: list a value it refuses in REFUSED, or it in ANY_VALUE (not both)"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    for key in known_keys() {
        // A table is read as a variant of an enum, which a list cannot be.
        let wrong = match key.as_str() {
            "store" | "log_format" => "[1]",
            _ => "{ x = 1 }",
        };
        let err = Config::from_toml(&format!("{key} = {wrong}")).unwrap_err();
        assert_eq!(err.key, key, "{err}");
    }
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn a_refused_variable_is_named_as_written() {
    for (toml, key) in REFUSED {
        figment::Jail::expect_with(|jail| {
            for line in toml.lines() {
                let (name, value) = line.split_once(" = ").unwrap();
                let var = format!("WHISPR_{}", name.to_ascii_uppercase());
                jail.set_env(var, value.trim_matches('"'));
            }
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert_eq!(
                (err.place.as_str(), err.key.as_str()),
                (
                    "environment",
                    format!("WHISPR_{}", key.to_ascii_uppercase()).as_str()
                ),
                "{toml}: {err}"
            );
            Ok(())
        });
    }
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn an_empty_variable_means_not_set() {
    figment::Jail::expect_with(|jail| {
        for key in [
            "TLS_CERT",
            "TLS_KEY",
            "METRICS_LISTEN",
            "ORIGIN",
            "REDIS_CLUSTER_URLS",
            "REDIS_TLS_CA",
            "MEMORY_SNAPSHOT_PATH",
            "ANALYTICS_LOG_PATH",
        ] {
            jail.set_env(format!("WHISPR_{key}"), "");
        }
        let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
        assert_eq!(c, Config::default());
        Ok(())
    });
}

#[test]
fn empty_means_not_set() {
    let c = Config::from_toml(
        "tls_cert = \"\"\ntls_key = \"\"\nmetrics_listen = \"\"\norigin = \"\"\nredis_cluster_urls = \"\"\nredis_tls_ca = \"\"\nmemory_snapshot_path = \"\"\nanalytics_log_path = \"\"",
    )
    .unwrap();
    assert_eq!(c, Config::default());
    let c = Config::from_toml(
        "metrics_listen = \"127.0.0.1:9090\"\norigin = \"chat.example.com\"\nstore = \"redis\"\nredis_cluster_urls = \" redis://a:1 , redis://b:2,\"",
    )
    .unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.origin.as_deref(), Some("chat.example.com"));
    assert_eq!(c.redis_cluster_urls, ["redis://a:1", "redis://b:2"]);
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn layers_apply_in_order() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "w.toml",
            "max_messages_per_second = 5\nmessage_ttl_seconds = 100\nlisten = \"127.0.0.1:9000\"",
        )?;
        jail.set_env("MESSAGE_TTL_SECONDS", "200");
        jail.set_env("max_messages_per_recipient", "77");
        jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "300");
        jail.set_env("WHISPR_TEST_STRICT", "1");
        let flags = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Overrides::default()
        };
        let c = Config::load(Some(Path::new("w.toml")), &flags).map_err(|e| e.to_string())?;
        assert_eq!(c.max_messages_per_second, 5, "file over defaults");
        assert_eq!(
            c.message_ttl_seconds, 300,
            "WHISPR_ env over v1 env over file"
        );
        assert_eq!(
            c.listen.to_string(),
            "127.0.0.1:9100",
            "flags over everything"
        );
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn a_v1_settings_json_is_a_layer_below_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "w.toml",
            "max_messages_per_recipient = 5\nmessage_ttl_seconds = 100",
        )?;
        jail.create_file(
            "settings.json",
            r#"{"max_messages_per_recipient": 20, "message_ttl_seconds": 60, "analytics_enabled": true}"#,
        )?;
        jail.set_env("WHISPR_MESSAGE_TTL_SECONDS", "90");
        let (c, ignored) = Config::load_with_settings(
            Some(Path::new("w.toml")),
            Some(Path::new("settings.json")),
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(
            c.max_messages_per_recipient, 20,
            "settings.json over the TOML file"
        );
        assert_eq!(
            c.message_ttl_seconds, 90,
            "the environment over settings.json"
        );
        assert_eq!(ignored, vec!["analytics_enabled".to_string()]);
        jail.create_file("broken.json", "[1, 2]")?;
        let err =
            Config::load_with_settings(None, Some(Path::new("broken.json")), &Overrides::default())
                .unwrap_err();
        assert!(err.to_string().contains("broken.json"), "{err}");
        jail.create_file("typed.json", r#"{"max_messages_per_recipient": "many"}"#)?;
        let err =
            Config::load_with_settings(None, Some(Path::new("typed.json")), &Overrides::default())
                .unwrap_err();
        assert!(
            err.to_string().contains("typed.json")
                && err.to_string().contains("max_messages_per_recipient"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn a_v1_rate_without_a_burst_allows_at_most_that_many_in_a_second() {
    figment::Jail::expect_with(|jail| {
        let load = |settings: Option<&str>| {
            Config::load_with_settings(
                Some(Path::new("w.toml")),
                settings.map(Path::new),
                &Overrides::default(),
            )
            .map(|(c, _)| (c.max_messages_per_second, c.burst_messages))
            .map_err(|e| e.to_string())
        };
        jail.create_file("w.toml", "")?;
        jail.create_file("settings.json", r#"{"max_messages_per_second": 10}"#)?;
        assert_eq!(load(Some("settings.json"))?, (10, 10), "settings.json");
        assert_eq!(load(None)?, (10, 50), "native defaults");
        jail.set_env("max_messages_per_second", "7");
        assert_eq!(load(None)?, (7, 7), "the v1 environment name");
        jail.set_env("WHISPR_MAX_MESSAGES_PER_SECOND", "8");
        assert_eq!(
            load(None)?,
            (8, 50),
            "the native variable keeps the native burst"
        );
        jail.clear_env();
        jail.create_file("w.toml", "max_messages_per_second = 9")?;
        assert_eq!(load(None)?, (9, 50), "a TOML key is native");
        jail.create_file("w.toml", "burst_messages = 30")?;
        assert_eq!(
            load(Some("settings.json"))?,
            (10, 30),
            "a burst that is set stays"
        );
        Ok(())
    });
}

#[test]
fn missing_file_is_readable() {
    let err = Config::load(
        Some(Path::new("/nonexistent/whispr.toml")),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/whispr.toml"),
        "{err}"
    );
}
