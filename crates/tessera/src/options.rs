//! Options: one set of structs is the CLI flags, the environment variables and the
//! `tessera.toml` file at once. Precedence: flag, then environment, then file, then
//! the default. Each field's doc comment is its `--help` text and its reference entry.

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the data lives (every command that touches the store).
#[derive(Debug, Clone, Args, Default)]
pub struct StoreArgs {
    /// Data directory of the embedded store [default: ./tessera-data]
    #[arg(long, env = "TESSERA_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file [default: ./tessera.toml when it exists]
    #[arg(long, env = "TESSERA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// Options of `tessera serve`.
#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "TESSERA_LISTEN")]
    pub listen: Option<String>,
    /// Tracking requests that may wait for the event-log writer before new ones get 503 [default: 256]
    #[arg(long, env = "TESSERA_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Open connections at most; more get 503 too_many_connections [default: 10000, lowered to fit the open-file limit]
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Milliseconds a client has to send a request's headers, and an idle keep-alive connection is kept [default: 10000]
    #[arg(long, env = "TESSERA_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds a client has to send a tracking request's body; then 408 request_timeout [default: 30000]
    #[arg(long, env = "TESSERA_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
    /// Open connections one client address may hold; more get 429 too_many_client_connections [default: 1000; 0: no limit]
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// Wrong credentials one client address may present per minute before it gets 429 too_many_auth_failures [default: 200; 0: off]
    #[arg(long, env = "TESSERA_AUTH_FAILURES")]
    pub auth_failures: Option<u32>,
}

/// The `tessera.toml` file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory of the embedded store.
    pub data_dir: Option<PathBuf>,
    /// Address and port to listen on.
    pub listen: Option<String>,
    /// Ingest pipeline tuning.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Audience engine tuning.
    #[serde(default)]
    pub audiences: AudiencesConfig,
    /// Trends, funnels and retention.
    #[serde(default)]
    pub insights: InsightsConfig,
    /// Per-key request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Consent purposes and erasure behaviour.
    #[serde(default)]
    pub privacy: PrivacyFileConfig,
    /// Destinations defined at start.
    #[serde(default)]
    pub activation: ActivationFileConfig,
    /// Limits of the HTTP listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// The `/metrics` endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` needs `Authorization: Bearer <token>` (this token or the
    /// admin token), else 401 `invalid_metrics_token`; at least 16 characters.
    /// `TESSERA_METRICS_TOKEN` wins over it. Default: none, `/metrics` is open.
    pub token: Option<String>,
}

/// Shortest metrics token accepted (as for the admin token).
const MIN_METRICS_TOKEN_CHARS: usize = 16;

/// `[http]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Open connections at most; one more is answered 503 `too_many_connections` and
    /// closed (default 10000; lowered at start to fit the process's open-file limit).
    pub max_connections: Option<usize>,
    /// Milliseconds a client has to send a request's headers; also how long an idle
    /// keep-alive connection is kept (default 10000).
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds a client has to send a tracking request's body, then 408
    /// `request_timeout` (default 30000).
    pub body_timeout_ms: Option<u64>,
    /// Tracking requests reading a body whose write key is not in the headers, at
    /// once; more get 503 `overloaded` (default 64).
    pub keyless_bodies: Option<usize>,
    /// Open connections one client address (an IPv4 address, an IPv6 /64) may hold;
    /// one more is answered 429 `too_many_client_connections` and closed (default
    /// 1000; 0: no limit but `max_connections`).
    pub max_connections_per_client: Option<usize>,
    /// Wrong credentials (admin or API token, write key, metrics token) one client
    /// address may present within `auth_failure_window_seconds`; then its requests
    /// are answered 429 `too_many_auth_failures` unchecked until the window ends
    /// (default 200; 0: off).
    pub auth_failures: Option<u32>,
    /// The window of `auth_failures`, in seconds, from a client's first failure
    /// (default 60).
    pub auth_failure_window_seconds: Option<u64>,
    /// Where browsers and email recipients reach Tessera, e.g.
    /// `https://collect.example.com`: the browser SDKs' settings tell them to send
    /// there (unset: the scheme and `Host` each request arrives with), and emails
    /// carry an open pixel and tracked links pointing there (unset: emails are sent
    /// as written). `TESSERA_PUBLIC_URL` wins over it.
    pub public_url: Option<String>,
}

/// `[activation]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationFileConfig {
    /// Destinations to define (or replace) at start, e.g.
    /// `[[activation.destinations]] id = "crm-hook", type = "webhook",
    /// settings = { url = "https://…" }` — the fields of `POST /api/v1/destinations`.
    #[serde(default)]
    pub destinations: Vec<tessera_activation::config::Destination>,
    /// The directory file destinations write in; their `path` is relative to it (or
    /// an absolute path inside it). Default: `<data dir>/exports`.
    pub file_dir: Option<PathBuf>,
    /// When set, webhook, SMS and CRM destinations may reach only these networks
    /// (CIDR such as `"10.20.0.0/16"`, an address, `"loopback"`, `"private"`).
    /// Default: any (but cloud metadata addresses, always refused).
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// Networks webhook, SMS and CRM destinations may not reach, whatever
    /// `allowed_networks` says, e.g. `["loopback", "private"]`. Default: none (but
    /// cloud metadata addresses, always refused).
    #[serde(default)]
    pub denied_networks: Vec<String>,
}

/// `[privacy]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyFileConfig {
    /// Consent purposes the consent API accepts (default: marketing, analytics,
    /// personalization, sale). Names are compared in lowercase.
    pub purposes: Option<Vec<String>>,
    /// What happens to a new message that carries an erased identifier: `drop`
    /// (default) or `anonymize` (track/page/screen kept without identity).
    pub suppressed_events: Option<tessera_runtime::privacy::SuppressionMode>,
}

/// `[limits]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second per write key and per API token, sustained (default 5000;
    /// 0 turns the limit off).
    pub requests_per_second: Option<u32>,
    /// Requests a key may send at once after a quiet period (default twice the rate).
    pub burst: Option<u32>,
}

/// `[audiences]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudiencesConfig {
    /// Audiences whose conditions depend on time (`within 7d`, `30d ago`, RFM) are
    /// re-evaluated over every profile this often, so windows that expire with no
    /// new event still change memberships (default 60).
    pub schedule_seconds: Option<u64>,
    /// Threads of batch evaluation (default: the machine's cores).
    pub threads: Option<usize>,
    /// Computed traits to define (or replace) at start, e.g.
    /// `[[audiences.computed_traits]] key = "orders_30d", aggregate = "count",
    /// event = "Order Completed", window = "30d"`.
    #[serde(default)]
    pub computed_traits: Vec<tessera_audience::computed::ComputedTrait>,
}

/// `[insights]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsightsConfig {
    /// The reporting time zone, an IANA name such as `Europe/Berlin`: insights count
    /// days, weeks (from Monday) and months in it, daylight saving time included,
    /// and read dates in requests (`"from": "2026-03-01"`) as its local midnight.
    /// `TESSERA_INSIGHTS_TIME_ZONE` wins over it. Default: `UTC`.
    pub time_zone: Option<String>,
}

/// `[ingest]` in `tessera.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Tracking requests that may wait for the writer before new ones get 503.
    pub queue_capacity: Option<usize>,
    /// Most events in one durable group commit.
    pub max_events_per_commit: Option<usize>,
    /// A repeated messageId is caught when its source sent it within this many hours.
    pub dedup_window_hours: Option<u64>,
    /// Most messageIds remembered for de-duplication (about 40 bytes each).
    pub dedup_max_entries: Option<usize>,
}

/// Options after merging flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limits of the HTTP listener.
    pub connection_limits: tessera_server::connections::ConnectionLimits,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: String,
    /// Ingest queue capacity.
    pub queue_capacity: usize,
    /// Events per commit cap.
    pub max_events_per_commit: usize,
    /// The messageId de-duplication window.
    pub dedup: tessera_store_sqlite::DedupConfig,
    /// The audience engine's settings.
    pub audiences: tessera_audience::engine::EngineOptions,
    /// Computed traits defined in the configuration file.
    pub computed_traits: Vec<tessera_audience::computed::ComputedTrait>,
    /// The per-key request limit (`None`: none).
    pub rate_limit: Option<tessera_server::rate_limit::RateLimit>,
    /// Consent purposes and erasure behaviour.
    pub privacy: tessera_runtime::privacy::PrivacyConfig,
    /// Destinations defined in the configuration file.
    pub destinations: Vec<tessera_activation::config::Destination>,
    /// How many failed authentications a client may have (`None`: not slowed).
    pub auth_failures: Option<tessera_server::auth_backoff::FailureLimit>,
    /// The token `/metrics` requires (`None`: open).
    pub metrics_token: Option<String>,
    /// The directory file destinations write in.
    pub file_dir: PathBuf,
    /// The networks destinations may reach.
    pub networks: tessera_activation::network::NetworkPolicy,
    /// The configuration file read, if any (named in errors about its entries).
    pub config_file: Option<PathBuf>,
    /// Where browsers and email recipients reach Tessera (`None`: browsers are told
    /// the host of each request; emails are sent without engagement tracking).
    pub public_url: Option<tessera_server::web_sdk::PublicUrl>,
}

impl Settings {
    /// Resolves the settings from flags/env and the configuration file.
    pub fn resolve(store: &StoreArgs, serve: &ServeArgs) -> anyhow::Result<Self> {
        let (file, config_file) = load_file(store.config.as_deref())?;
        for definition in &file.audiences.computed_traits {
            if let Err(message) = definition.validate() {
                bail!("configuration file: [[audiences.computed_traits]]: {message}");
            }
        }
        let per_second = file.limits.requests_per_second.unwrap_or(5_000);
        let rate_limit = (per_second > 0).then(|| tessera_server::rate_limit::RateLimit {
            per_second: f64::from(per_second),
            burst: f64::from(
                file.limits
                    .burst
                    .unwrap_or(per_second.saturating_mul(2))
                    .max(1),
            ),
        });
        let mut privacy = tessera_runtime::privacy::PrivacyConfig::default();
        if let Some(purposes) = &file.privacy.purposes {
            privacy.purposes = purposes.iter().map(|p| p.trim().to_lowercase()).collect();
            if let Some(bad) = privacy
                .purposes
                .iter()
                .find(|p| p.is_empty() || p.len() > tessera_core::consent::MAX_PURPOSE_LEN)
            {
                bail!(
                    "configuration file: [privacy] purposes: {bad:?} is not a purpose name (1 to {} characters)",
                    tessera_core::consent::MAX_PURPOSE_LEN
                );
            }
        }
        if let Some(mode) = file.privacy.suppressed_events {
            privacy.suppressed_events = mode;
        }
        let networks = tessera_activation::network::NetworkPolicy::new(
            &file.activation.allowed_networks,
            &file.activation.denied_networks,
        )
        .map_err(|e| anyhow::anyhow!("configuration file: {e}"))?;
        for destination in &file.activation.destinations {
            if let Err(error) = destination.validate(&privacy.purposes) {
                bail!(
                    "configuration file: [[activation.destinations]] {:?}: {error}",
                    destination.id
                );
            }
        }
        let connection_limits = {
            let default = tessera_server::connections::ConnectionLimits::default();
            let ms = std::time::Duration::from_millis;
            tessera_server::connections::ConnectionLimits {
                max_connections: serve
                    .max_connections
                    .or(file.http.max_connections)
                    .unwrap_or(default.max_connections)
                    .max(1),
                header_timeout: serve
                    .header_timeout_ms
                    .or(file.http.header_timeout_ms)
                    .map_or(default.header_timeout, |t| ms(t.max(1))),
                body_timeout: serve
                    .body_timeout_ms
                    .or(file.http.body_timeout_ms)
                    .map_or(default.body_timeout, |t| ms(t.max(1))),
                keyless_bodies: file
                    .http
                    .keyless_bodies
                    .unwrap_or(default.keyless_bodies)
                    .max(1),
                max_connections_per_client: match serve
                    .max_connections_per_client
                    .or(file.http.max_connections_per_client)
                    .unwrap_or(default.max_connections_per_client)
                {
                    0 => usize::MAX,
                    n => n,
                },
            }
        };
        let auth_failures = {
            let default = tessera_server::auth_backoff::FailureLimit::default();
            let failures = serve
                .auth_failures
                .or(file.http.auth_failures)
                .unwrap_or(default.failures);
            (failures > 0).then(|| tessera_server::auth_backoff::FailureLimit {
                failures,
                window: file
                    .http
                    .auth_failure_window_seconds
                    .map_or(default.window, |s| std::time::Duration::from_secs(s.max(1))),
                ..default
            })
        };
        let metrics_token = std::env::var("TESSERA_METRICS_TOKEN")
            .ok()
            .or(file.metrics.token.clone())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        if let Some(token) = &metrics_token {
            let length = token.chars().count();
            if length < MIN_METRICS_TOKEN_CHARS {
                bail!(
                    "the metrics token (TESSERA_METRICS_TOKEN or [metrics] token) is {length} characters; use at least {MIN_METRICS_TOKEN_CHARS} (e.g. `openssl rand -hex 16`)"
                );
            }
        }
        let public_url = std::env::var("TESSERA_PUBLIC_URL")
            .ok()
            .or(file.http.public_url.clone())
            .filter(|u| !u.trim().is_empty())
            .map(|u| {
                tessera_server::web_sdk::PublicUrl::parse(&u).map_err(|e| {
                    anyhow::anyhow!("the public URL (TESSERA_PUBLIC_URL or [http] public_url): {e}")
                })
            })
            .transpose()?;
        let time_zone = match std::env::var("TESSERA_INSIGHTS_TIME_ZONE")
            .ok()
            .filter(|z| !z.trim().is_empty())
            .or(file.insights.time_zone.clone())
        {
            Some(name) => tessera_audience::insights::ReportingZone::parse(&name).map_err(|e| {
                anyhow::anyhow!("the reporting time zone (TESSERA_INSIGHTS_TIME_ZONE or [insights] time_zone): {e}")
            })?,
            None => tessera_audience::insights::ReportingZone::UTC,
        };
        let data_dir = store
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./tessera-data"));
        Ok(Self {
            public_url,
            config_file,
            auth_failures,
            metrics_token,
            networks,
            file_dir: file
                .activation
                .file_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("exports")),
            connection_limits,
            destinations: file.activation.destinations.clone(),
            privacy,
            rate_limit,
            computed_traits: file.audiences.computed_traits.clone(),
            data_dir,
            listen: serve
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            queue_capacity: serve
                .queue_capacity
                .or(file.ingest.queue_capacity)
                .unwrap_or(256),
            max_events_per_commit: file.ingest.max_events_per_commit.unwrap_or(20_000),
            dedup: {
                let default = tessera_store_sqlite::DedupConfig::default();
                tessera_store_sqlite::DedupConfig {
                    window: file
                        .ingest
                        .dedup_window_hours
                        .map_or(default.window, |h| std::time::Duration::from_secs(h * 3600)),
                    max_entries: file.ingest.dedup_max_entries.unwrap_or(default.max_entries),
                }
            },
            audiences: {
                let default = tessera_audience::engine::EngineOptions::default();
                tessera_audience::engine::EngineOptions {
                    schedule_interval_ms: file
                        .audiences
                        .schedule_seconds
                        .map_or(default.schedule_interval_ms, |s| (s.max(1) * 1000) as i64),
                    parallelism: file.audiences.threads.map_or(default.parallelism, |t| {
                        tessera_audience::batch::Parallelism::threads(t)
                    }),
                    time_zone,
                }
            },
        })
    }
}

impl Settings {
    /// Where destinations may send and write: the network policy, and the file
    /// directory (created, mode 0700, when missing).
    pub fn reach(&self) -> anyhow::Result<tessera_activation::Reach> {
        let files =
            tessera_activation::files::FileDir::open(&self.file_dir).with_context(|| {
                format!(
                    "cannot create the directory of file destinations {} ([activation] file_dir)",
                    self.file_dir.display()
                )
            })?;
        Ok(tessera_activation::Reach {
            networks: std::sync::Arc::new(self.networks.clone()),
            files: Some(files),
            public_url: self
                .public_url
                .as_ref()
                .map(|url| format!("{}://{}", url.scheme, url.host)),
        })
    }
}

/// The configuration file (`explicit`, else `./tessera.toml` when it exists) and its
/// path.
fn load_file(explicit: Option<&Path>) -> anyhow::Result<(FileConfig, Option<PathBuf>)> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("tessera.toml");
            if !default.exists() {
                return Ok((FileConfig::default(), None));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    match toml::from_str(&text) {
        Ok(config) => Ok((config, Some(path))),
        Err(error) => bail!("configuration file {} is invalid: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tessera.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:9999\"\n[ingest]\nqueue_capacity = 7\n",
        )?;
        let store = StoreArgs {
            data_dir: Some("/from/flag".into()),
            config: Some(path.clone()),
        };
        let settings = Settings::resolve(&store, &ServeArgs::default())?;
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.listen, "127.0.0.1:9999");
        assert_eq!(settings.queue_capacity, 7);
        assert_eq!(settings.max_events_per_commit, 20_000);
        Ok(())
    }

    #[test]
    fn hardening_settings_have_defaults_and_are_checked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "data_dir = \"/d\"\n")?;
        let store = StoreArgs {
            data_dir: None,
            config: Some(path.clone()),
        };
        let settings = Settings::resolve(&store, &ServeArgs::default())?;
        assert_eq!(settings.file_dir, PathBuf::from("/d/exports"));
        assert_eq!(settings.networks, Default::default());
        assert_eq!(settings.auth_failures.map(|l| l.failures), Some(200));
        assert_eq!(settings.connection_limits.max_connections_per_client, 1000);
        std::fs::write(
            &path,
            "[activation]\nfile_dir = \"/x\"\ndenied_networks = [\"loopback\", \"10.0.0.0/8\"]\n\
             [http]\nauth_failures = 0\nmax_connections_per_client = 0\n",
        )?;
        let settings = Settings::resolve(&store, &ServeArgs::default())?;
        assert_eq!(settings.file_dir, PathBuf::from("/x"));
        assert_eq!(settings.networks.denied.len(), 3);
        assert!(settings.auth_failures.is_none());
        assert_eq!(
            settings.connection_limits.max_connections_per_client,
            usize::MAX
        );
        std::fs::write(
            &path,
            "[activation]\nallowed_networks = [\"10.0.0.0/40\"]\n",
        )?;
        let error = Settings::resolve(&store, &ServeArgs::default()).err();
        assert!(error.is_some_and(|e| e.to_string().contains("allowed_networks")));
        std::fs::write(&path, "[metrics]\ntoken = \"short\"\n")?;
        let error = Settings::resolve(&store, &ServeArgs::default()).err();
        assert!(error.is_some_and(|e| e.to_string().contains("at least 16")));
        Ok(())
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "listn = \"x\"\n")?;
        let store = StoreArgs {
            data_dir: None,
            config: Some(path),
        };
        let error = Settings::resolve(&store, &ServeArgs::default()).err();
        assert!(error.is_some_and(|e| e.to_string().contains("invalid")));
        Ok(())
    }
}
