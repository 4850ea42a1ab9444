//! The layered loader: defaults < TOML file < Whispr-v1 `settings.json` < Whispr-v1
//! environment names < `WHISPR_*` environment < flags, then every module's check; and
//! the one-line errors naming where a value came from and the key as written there.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};
use std::path::Path;

use super::{Check, Config, ConfigError, Invalid, Overrides, OTHER_WHISPR_VARIABLES, V1_ENV_KEYS};

impl Config {
    /// Loads the layers from the real environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_settings(file, None, overrides).map(|(config, _)| config)
    }

    /// [`Config::load`] plus a Whispr v1 `settings.json` (`--settings FILE`), read between
    /// the TOML file and the environment. Only the v1 settings names are taken from it;
    /// the other keys it holds are returned so the caller can say they were ignored.
    pub fn load_with_settings(
        file: Option<&Path>,
        settings: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let (v1, ignored) = match settings {
            Some(path) => read_v1_settings(path)?,
            None => (serde_json::Map::new(), Vec::new()),
        };
        check_whispr_variables(std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()))?;
        let fig = Self::figment(file, &v1, overrides)?;
        let config = extract(&fig, settings)?;
        Ok((config, ignored))
    }

    /// Parses a TOML document on top of the defaults (no environment): for tests and
    /// `whispr config check`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        extract(&fig, None)
    }

    fn figment(
        file: Option<&Path>,
        v1_settings: &serde_json::Map<String, serde_json::Value>,
        overrides: &Overrides,
    ) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    path.display().to_string(),
                    "",
                    "no such file",
                ));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let known = known_keys();
        fig = fig
            .merge(Serialized::defaults(v1_settings))
            .merge(Env::raw().filter(|k| {
                V1_ENV_KEYS
                    .iter()
                    .any(|n| k.as_str().eq_ignore_ascii_case(n))
            }))
            .merge(
                Env::prefixed("WHISPR_")
                    .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n))),
            )
            .merge(Serialized::defaults(overrides));
        Ok(fig)
    }

    /// Every module's checks of its own keys. The first error is the one reported, so a
    /// key's own bounds are checked before the keys whose bounds depend on it (the
    /// message and signal sizes before the WebSocket buffers that must hold them).
    fn validated(self) -> Result<Config, Invalid> {
        let checks: [Check; 11] = [
            crate::relay::limits::validate,
            crate::store::limits::validate,
            crate::blobs::limits::validate,
            crate::signal::limits::validate,
            crate::session::limits::validate,
            crate::ws::limits::validate,
            crate::http::limits::validate,
            crate::tls::validate,
            crate::redis_link::settings::validate,
            crate::store::limits::validate_redis,
            crate::telemetry::validate,
        ];
        for check in checks {
            check(&self)?;
        }
        Ok(self)
    }
}

/// Reads a v1 `settings.json`: the v1 names it holds, and the names it holds besides.
fn read_v1_settings(
    path: &Path,
) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<String>), ConfigError> {
    let bad = |key: &str, detail: String| ConfigError::new(path.display().to_string(), key, detail);
    let text = std::fs::read_to_string(path).map_err(|e| bad("", format!("cannot read: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad("", format!("not JSON: {e}")))?;
    let serde_json::Value::Object(all) = value else {
        return Err(bad(
            "",
            "a settings file is a JSON object of settings".into(),
        ));
    };
    let (mut taken, mut ignored) = (serde_json::Map::new(), Vec::new());
    for (key, value) in all {
        if V1_ENV_KEYS.contains(&key.as_str()) {
            // Every v1 setting is a count or a duration in seconds.
            if !value.is_u64() {
                return Err(bad(
                    &key,
                    format!("must be a non-negative integer, not {value}"),
                ));
            }
            taken.insert(key, value);
        } else {
            ignored.push(key);
        }
    }
    Ok((taken, ignored))
}

/// Extracts and validates the layered configuration; an error names the layer that set
/// the offending value and the key as written there.
fn extract(fig: &Figment, settings: Option<&Path>) -> Result<Config, ConfigError> {
    let mut config = fig
        .extract::<Config>()
        .map_err(|e| from_figment(fig, &e, settings))?;
    if v1_rate_without_burst(fig) {
        config.burst_messages = config.max_messages_per_second;
    }
    config.validated().map_err(|e| {
        let (place, key) = locate(fig.find_metadata(e.key), e.key, settings);
        ConfigError::new(place, key, e.detail)
    })
}

/// The first of figment's errors, as one line (figment chains every error it met, and
/// an unknown key's message lists all ~70 keys).
fn from_figment(fig: &Figment, e: &figment::Error, settings: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let mut key = e.path.join(".");
    let problem = match &e.kind {
        Kind::UnknownField(field, _) => {
            if e.path.last() != Some(field) {
                key = e
                    .path
                    .iter()
                    .chain([field])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(".");
            }
            match suggest(field, &known_keys()) {
                Some(near) => format!("unknown key (did you mean {near}?)"),
                None => "unknown key (whispr.example.toml lists every key)".into(),
            }
        }
        other => other.to_string(),
    };
    let metadata = e.metadata.as_ref().or_else(|| fig.find_metadata(&key));
    let (place, key) = locate(metadata, &key, settings);
    ConfigError::new(place, key, problem)
}

/// Where a key's value came from, and the key as the operator wrote it there: a file's
/// path and its key, `environment` and the variable, `flag` and the flag.
fn locate(metadata: Option<&Metadata>, key: &str, settings: Option<&Path>) -> (String, String) {
    let Some(md) = metadata else {
        return ("default".into(), key.into());
    };
    if md.name.contains("environment variable") {
        // Two environment layers: `WHISPR_<KEY>` wins over the bare v1 name.
        let prefixed = format!("WHISPR_{}", key.to_ascii_uppercase());
        let var = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .find(|k| k.eq_ignore_ascii_case(&prefixed))
            .or_else(|| {
                std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .find(|k| k.eq_ignore_ascii_case(key))
            })
            .unwrap_or(prefixed);
        return ("environment".into(), var);
    }
    if let Some(Source::File(path)) = &md.source {
        return (path.display().to_string(), key.into());
    }
    let type_name = md.name.as_ref();
    if type_name.ends_with("Overrides") {
        ("flag".into(), format!("--{}", key.replace('_', "-")))
    } else if type_name.ends_with("::Config") {
        ("default".into(), key.into())
    } else if let (true, Some(path)) = (type_name.contains("Map"), settings) {
        (path.display().to_string(), key.into())
    } else {
        (type_name.into(), key.into())
    }
}

/// Whether `max_messages_per_second` comes from a Whispr v1 layer (`settings.json` or
/// the bare v1 environment name) and no layer sets `burst_messages`. v1 meant "at most
/// N in any second", so then the burst is the rate, not the native default of 50.
fn v1_rate_without_burst(fig: &Figment) -> bool {
    let key = "max_messages_per_second";
    let from_v1 = fig.find_metadata(key).is_some_and(|md| {
        let (place, name) = locate(Some(md), key, None);
        md.name.contains("Map")
            || (place == "environment" && !name.to_ascii_uppercase().starts_with("WHISPR_"))
    });
    let burst_set = fig
        .find_metadata("burst_messages")
        .is_some_and(|md| !md.name.ends_with("::Config"));
    from_v1 && !burst_set
}

/// Refuses a `WHISPR_*` variable that is neither a configuration key nor one of
/// [`OTHER_WHISPR_VARIABLES`]: a typo would otherwise be ignored without a word.
fn check_whispr_variables(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let known: Vec<String> = known_keys()
        .iter()
        .map(|k| format!("WHISPR_{}", k.to_ascii_uppercase()))
        .chain(OTHER_WHISPR_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    for name in names {
        let upper = name.to_ascii_uppercase();
        if !upper.starts_with("WHISPR_") || known.contains(&upper) {
            continue;
        }
        let problem = match suggest(&upper, &known) {
            Some(near) => format!("unknown variable (did you mean {near}?)"),
            None => format!(
                "unknown variable: not a key of whispr.example.toml in upper case after WHISPR_, nor one of {}",
                OTHER_WHISPR_VARIABLES.join(", ")
            ),
        };
        return Err(ConfigError::new("environment", name, problem));
    }
    Ok(())
}

/// The known name nearest to `typed`, if it is near enough to be a typo of it (an edit
/// distance of at most a third of its length).
pub(super) fn suggest(typed: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&typed.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= k.len().max(3) / 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance over bytes (configuration names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The top-level keys of `Config`, from its serialised default.
pub(super) fn known_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}
