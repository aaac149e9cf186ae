//! Typed configuration read from the environment (and `.env`), failing fast on bad values.

use std::net::SocketAddr;
use std::time::Duration;

use chrono_tz::Tz;

/// The default database: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://attendance.db?mode=rwc";

/// The shortest `SECRET_KEY` accepted outside `DEBUG=true`.
pub const MIN_SECRET_KEY_LEN: usize = 16;

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Everything the server reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DEBUG`: development mode (random secret allowed, introspection for everyone);
    /// defaults to true only when `SECRET_KEY` is unset too.
    pub debug: bool,
    /// `SECRET_KEY`: signs JWTs and seals webhook secrets; required unless `DEBUG=true`.
    pub secret_key: String,
    /// True when `secret_key` was generated for this process only.
    pub secret_key_generated: bool,
    /// True when `secret_key` is shorter than [`MIN_SECRET_KEY_LEN`], which only `DEBUG=true`
    /// allows (with a warning at start-up).
    pub secret_key_short: bool,
    /// `ALLOWED_HOSTS`: accepted `Host` header values; empty or `*` accepts any.
    pub allowed_hosts: Vec<String>,
    /// `DATABASE_URL`, read as dj-database-url reads it (`sqlite:///relative.db`,
    /// `sqlite:////absolute.db`, `postgres://...`) and rewritten into the URL sqlx opens.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS`: pool size (default: sized for the cores).
    pub database_max_connections: u32,
    /// `JWT_ACCESS_TOKEN_LIFETIME`: access token lifetime, in minutes (default 60).
    pub access_token_lifetime: Duration,
    /// `JWT_REFRESH_TOKEN_LIFETIME`: refresh token lifetime, in minutes (default 1440).
    pub refresh_token_lifetime: Duration,
    /// `CORS_ALLOWED_ORIGINS`: origins allowed to call the API from a browser.
    pub cors_allowed_origins: Vec<String>,
    /// `TIME_ZONE`: the IANA zone in which devices' local dates and times are read.
    pub time_zone: Tz,
    /// `BIND`: the listening address (default `0.0.0.0:8000`).
    pub bind: SocketAddr,
    /// `SESSION_DURATION_MINUTES`: how long a session stays open by default (default 90).
    pub session_duration_minutes: u32,
    /// `LATE_GRACE_MINUTES`: minutes after a session's start before a scan counts as late (default 10).
    pub late_grace_minutes: u32,
    /// `AUTO_CLOSE_INTERVAL_SECONDS`: the longest the scheduler sleeps before looking for
    /// due sessions and classes again (default 30); it wakes earlier for what it knows is due.
    pub auto_close_interval: Duration,
    /// `SCHEDULE_OPEN_EARLY_MINUTES`: how long before its start a timetable class opens its
    /// session (default 10; 0 opens at the start).
    pub schedule_open_early: chrono::Duration,
    /// `WEBHOOK_ALLOW_PRIVATE`: lets webhooks target private and loopback addresses (tests,
    /// receivers inside the school's network). Off by default: such targets are refused.
    pub webhook_allow_private: bool,
    /// `WEBHOOK_TIMEOUT_SECONDS`: how long a receiver has to answer one delivery.
    pub webhook_timeout: Duration,
    /// `WEBHOOK_MAX_IN_FLIGHT`: deliveries in flight to one webhook at once (default 32), so
    /// a slow receiver never takes the slots of the others.
    pub webhook_max_in_flight: usize,
    /// `OFFLINE_SCAN_HORIZON_HOURS`: buffered scans older than this are rejected (default 72).
    pub offline_horizon_hours: u32,
    /// `LOGIN_MAX_FAILURES`: failed logins per username before a lockout (default 5).
    pub login_max_failures: u32,
    /// `LOGIN_MAX_FAILURES_PER_ADDRESS`: failed logins per client address before a lockout (default 20).
    pub login_max_failures_per_address: u32,
    /// `LOGIN_LOCKOUT_MINUTES`: the counting window and the lockout's length (default 15).
    pub login_lockout: Duration,
    /// `MAX_BODY_BYTES`: the largest request body accepted (default 1 MiB).
    pub max_body_bytes: usize,
    /// `ICLOCK_MAX_BODY_BYTES`: the largest body a terminal may send to `/iclock/` (default
    /// 16 MiB, some 250,000 attendance lines: a terminal back from a long outage uploads
    /// everything it buffered in one request).
    pub iclock_max_body_bytes: usize,
    /// `REQUEST_TIMEOUT_SECONDS`: the longest any request may take (default 30).
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECONDS`: how long in-flight requests may finish after SIGTERM (default 10).
    pub shutdown_grace: Duration,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_json: bool,
}

impl Config {
    /// Reads the configuration through `lookup` (the binary passes the environment over
    /// `.env`; tests supply their own variables).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        // With nothing configured at all the server runs as a development instance (so a
        // bare `attendance` starts); once a SECRET_KEY is set it defaults to production.
        let debug = match get("DEBUG") {
            None => get("SECRET_KEY").is_none(),
            Some(v) => parse_bool(&v).ok_or_else(|| ConfigError {
                variable: "DEBUG",
                message: format!("expected true or false, got {v:?}"),
            })?,
        };
        let (secret_key, secret_key_generated) = match get("SECRET_KEY") {
            // A short key lets anyone forge tokens by guessing it, so production refuses
            // it; development (the Django design's `.env` has one) gets a warning instead.
            Some(key) if key.len() < MIN_SECRET_KEY_LEN && !debug => {
                return Err(ConfigError {
                    variable: "SECRET_KEY",
                    message: format!(
                        "must be at least {MIN_SECRET_KEY_LEN} characters \
                         (a shorter one is allowed only with DEBUG=true)"
                    ),
                });
            }
            Some(key) => (key, false),
            None if debug => (crate::auth::random_token(32), true),
            None => {
                return Err(ConfigError {
                    variable: "SECRET_KEY",
                    message: "is not set; set it to a long random string \
                              (or DEBUG=true for a throwaway key in development)"
                        .into(),
                });
            }
        };
        let secret_key_short = secret_key.len() < MIN_SECRET_KEY_LEN;
        let database_url =
            database_url(&get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()))
                .map_err(|message| ConfigError {
                    variable: "DATABASE_URL",
                    message,
                })?;
        let time_zone = match get("TIME_ZONE") {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ConfigError {
                variable: "TIME_ZONE",
                message: format!(
                    "{name:?} is not an IANA time zone name (e.g. Africa/Addis_Ababa)"
                ),
            })?,
        };
        let bind = match get("BIND") {
            None => SocketAddr::from(([0, 0, 0, 0], 8000)),
            Some(v) => v.parse().map_err(|_| ConfigError {
                variable: "BIND",
                message: format!("{v:?} is not an address such as 0.0.0.0:8000"),
            })?,
        };
        let number = |name: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(ConfigError {
                        variable: name,
                        message: format!("expected a whole number of at least {min}, got {v:?}"),
                    }),
                },
            }
        };
        let default_pool = if database_url.starts_with("sqlite:") {
            4
        } else {
            8
        };
        Ok(Self {
            debug,
            secret_key,
            secret_key_generated,
            secret_key_short,
            allowed_hosts: list(get("ALLOWED_HOSTS")),
            database_max_connections: number("DATABASE_MAX_CONNECTIONS", default_pool, 1)? as u32,
            database_url,
            access_token_lifetime: minutes(number("JWT_ACCESS_TOKEN_LIFETIME", 60, 1)?),
            refresh_token_lifetime: minutes(number("JWT_REFRESH_TOKEN_LIFETIME", 1440, 1)?),
            cors_allowed_origins: list(get("CORS_ALLOWED_ORIGINS")),
            time_zone,
            bind,
            session_duration_minutes: number("SESSION_DURATION_MINUTES", 90, 1)? as u32,
            late_grace_minutes: number("LATE_GRACE_MINUTES", 10, 0)? as u32,
            auto_close_interval: Duration::from_secs(number("AUTO_CLOSE_INTERVAL_SECONDS", 30, 1)?),
            schedule_open_early: chrono::Duration::minutes(number(
                "SCHEDULE_OPEN_EARLY_MINUTES",
                10,
                0,
            )? as i64),
            webhook_allow_private: match get("WEBHOOK_ALLOW_PRIVATE") {
                None => false,
                Some(v) => parse_bool(&v).ok_or_else(|| ConfigError {
                    variable: "WEBHOOK_ALLOW_PRIVATE",
                    message: format!("expected true or false, got {v:?}"),
                })?,
            },
            webhook_timeout: Duration::from_secs(number("WEBHOOK_TIMEOUT_SECONDS", 10, 1)?),
            webhook_max_in_flight: number("WEBHOOK_MAX_IN_FLIGHT", 32, 1)?.min(1024) as usize,
            offline_horizon_hours: number("OFFLINE_SCAN_HORIZON_HOURS", 72, 1)? as u32,
            login_max_failures: number("LOGIN_MAX_FAILURES", 5, 1)? as u32,
            login_max_failures_per_address: number("LOGIN_MAX_FAILURES_PER_ADDRESS", 20, 1)? as u32,
            login_lockout: minutes(number("LOGIN_LOCKOUT_MINUTES", 15, 1)?),
            max_body_bytes: number("MAX_BODY_BYTES", 1024 * 1024, 1024)? as usize,
            iclock_max_body_bytes: number("ICLOCK_MAX_BODY_BYTES", 16 * 1024 * 1024, 1024)?
                as usize,
            request_timeout: Duration::from_secs(number("REQUEST_TIMEOUT_SECONDS", 30, 1)?),
            shutdown_grace: Duration::from_secs(number("SHUTDOWN_GRACE_SECONDS", 10, 0)?),
            log_json: match get("LOG_FORMAT").as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "LOG_FORMAT",
                        message: format!("expected text or json, got {other:?}"),
                    });
                }
            },
        })
    }

    /// The body limit of the request at `path`: terminals' uploads get their own.
    pub fn body_limit(&self, path: &str) -> usize {
        if path.starts_with("/iclock/") {
            self.iclock_max_body_bytes
        } else {
            self.max_body_bytes
        }
    }

    /// True when the configured database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// Reads `DATABASE_URL` as dj-database-url does and returns the URL sqlx needs.
///
/// dj-database-url: `sqlite:///X` is X relative to the working directory and
/// `sqlite:////X` is the absolute /X. sqlx strips `sqlite://` and opens the rest, so both
/// become `sqlite://` + path. The long-standing default `sqlite://attendance.db` (sqlx's own
/// host-less form) keeps its meaning, and a missing file is created unless `mode=` says
/// otherwise. PostgreSQL URLs pass through.
fn database_url(url: &str) -> Result<String, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_owned());
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err("must start with sqlite:, postgres:// or postgresql://".into());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.trim_start_matches('/') == ":memory:" || query.contains("mode=memory") {
        return Ok(url.to_owned());
    }
    let path = match path.strip_prefix("//") {
        // `sqlite:///X` and `sqlite:////X`: an empty host, then the path after its `/`.
        Some(after_host) => after_host.strip_prefix('/').unwrap_or(after_host),
        None => path,
    };
    if path.is_empty() {
        return Err(format!(
            "{url:?} names no database file (e.g. sqlite:///db.sqlite3)"
        ));
    }
    // Before dj-database-url's reading, `sqlite:///data/x.db` meant /data/x.db. Opening a
    // new, empty data/x.db instead would look like lost data, so that case stops here.
    if !path.starts_with('/') && url.starts_with("sqlite:///") {
        let absolute = std::path::Path::new("/").join(path);
        if !std::path::Path::new(path).exists() && absolute.exists() {
            return Err(format!(
                "sqlite:///{path} is {path} in the working directory (dj-database-url's \
                 reading), which does not exist, but {} does; write sqlite:///{} for it",
                absolute.display(),
                absolute.display()
            ));
        }
    }
    let mode = if query.split('&').any(|pair| pair.starts_with("mode=")) {
        ""
    } else if query.is_empty() {
        "mode=rwc"
    } else {
        "&mode=rwc"
    };
    Ok(format!("sqlite://{path}?{query}{mode}"))
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Splits a comma-separated list, tolerating the spaces and brackets of Django-era `.env` files.
fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|item| {
            item.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
        })
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn missing_secret_key_is_refused_outside_debug() {
        let err = config(&[("DEBUG", "false")]).unwrap_err();
        assert_eq!(err.variable, "SECRET_KEY");
        assert!(err.to_string().contains("SECRET_KEY"));
    }

    #[test]
    fn a_secret_key_makes_production_the_default() {
        let cfg = config(&[("SECRET_KEY", "0123456789abcdef0123")]).unwrap();
        assert!(!cfg.debug);
        assert!(!cfg.secret_key_generated);
    }

    #[test]
    fn no_configuration_at_all_is_a_development_instance() {
        let cfg = config(&[]).unwrap();
        assert!(cfg.debug);
        assert!(cfg.secret_key_generated);
    }

    #[test]
    fn debug_generates_a_secret_key() {
        let cfg = config(&[("DEBUG", "True")]).unwrap();
        assert!(cfg.secret_key_generated);
        assert!(cfg.secret_key.len() >= 32);
        assert_eq!(cfg.bind.port(), 8000);
        assert_eq!(cfg.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn unknown_time_zone_names_the_variable() {
        let err = config(&[("DEBUG", "true"), ("TIME_ZONE", "Mars/Olympus")]).unwrap_err();
        assert_eq!(err.variable, "TIME_ZONE");
        assert!(err.to_string().starts_with("TIME_ZONE: "));
    }

    #[test]
    fn bad_database_url_names_the_variable() {
        let err = config(&[("DEBUG", "true"), ("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
    }

    #[test]
    fn a_short_secret_key_is_refused_in_production() {
        let err = config(&[("DEBUG", "false"), ("SECRET_KEY", "your-secret-key")]).unwrap_err();
        assert_eq!(err.variable, "SECRET_KEY");
        assert!(err.to_string().contains("at least 16"), "{err}");
        // Without DEBUG, a SECRET_KEY means production, so the short key is refused too.
        let err = config(&[("SECRET_KEY", "your-secret-key")]).unwrap_err();
        assert_eq!(err.variable, "SECRET_KEY");
    }

    #[test]
    fn a_short_secret_key_is_allowed_with_debug_and_flagged_for_a_warning() {
        let cfg = config(&[("DEBUG", "True"), ("SECRET_KEY", "your-secret-key")]).unwrap();
        assert_eq!(cfg.secret_key, "your-secret-key");
        assert!(cfg.secret_key_short);
        assert!(!cfg.secret_key_generated);
        let cfg = config(&[("DEBUG", "true"), ("SECRET_KEY", "0123456789abcdef")]).unwrap();
        assert!(!cfg.secret_key_short);
    }

    /// The file sqlx will open for `url`, and whether it creates a missing one.
    fn sqlite_file(url: &str) -> (std::path::PathBuf, String) {
        use std::str::FromStr;
        let cfg = config(&[("DEBUG", "true"), ("DATABASE_URL", url)]).unwrap();
        assert!(cfg.is_sqlite());
        let opened = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(&cfg.database_url)
            .expect("sqlx reads the normalised URL");
        (opened.get_filename().to_path_buf(), cfg.database_url)
    }

    #[test]
    fn sqlite_urls_are_read_as_dj_database_url_reads_them() {
        use std::path::PathBuf;
        let (file, url) = sqlite_file("sqlite:///db.sqlite3");
        assert_eq!(
            file,
            PathBuf::from("db.sqlite3"),
            "relative to the working directory"
        );
        assert!(
            url.ends_with("?mode=rwc"),
            "a missing file is created: {url}"
        );
        let (file, _) = sqlite_file("sqlite:////srv/data/attendance.db");
        assert_eq!(file, PathBuf::from("/srv/data/attendance.db"));
        let (file, url) = sqlite_file("sqlite:////tmp/att_test_x/test.db?mode=rwc");
        assert_eq!(file, PathBuf::from("/tmp/att_test_x/test.db"));
        assert_eq!(url, "sqlite:///tmp/att_test_x/test.db?mode=rwc");
        let (_, url) = sqlite_file("sqlite:///db.sqlite3?mode=ro");
        assert_eq!(
            url, "sqlite://db.sqlite3?mode=ro",
            "an explicit mode is kept"
        );
        let (_, url) = sqlite_file("sqlite:///db.sqlite3?cache=shared");
        assert_eq!(url, "sqlite://db.sqlite3?cache=shared&mode=rwc");
    }

    #[test]
    fn the_default_and_sqlx_style_sqlite_urls_keep_working() {
        use std::path::PathBuf;
        let (file, url) = sqlite_file(DEFAULT_DATABASE_URL);
        assert_eq!(file, PathBuf::from("attendance.db"));
        assert_eq!(url, DEFAULT_DATABASE_URL);
        let (file, _) = sqlite_file("sqlite:local.db");
        assert_eq!(file, PathBuf::from("local.db"));
        let (_, url) = sqlite_file("sqlite::memory:");
        assert_eq!(url, "sqlite::memory:");
    }

    #[test]
    fn both_postgres_schemes_are_accepted() {
        for url in [
            "postgres://u:p@db:5432/attendance",
            "postgresql://u:p@db:5432/attendance",
        ] {
            let cfg = config(&[("DEBUG", "true"), ("DATABASE_URL", url)]).unwrap();
            assert_eq!(cfg.database_url, url);
            assert!(!cfg.is_sqlite());
        }
    }

    #[test]
    fn a_sqlite_url_without_a_file_names_the_variable() {
        for url in ["sqlite://", "sqlite:///", "sqlite:"] {
            let err = config(&[("DEBUG", "true"), ("DATABASE_URL", url)]).unwrap_err();
            assert_eq!(err.variable, "DATABASE_URL", "{url}");
        }
    }

    #[test]
    fn an_old_three_slash_absolute_url_is_not_silently_read_as_a_new_empty_file() {
        let dir = std::env::temp_dir().join(format!("att_cfg_{}", crate::auth::random_token(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let existing = dir.join("legacy.db");
        std::fs::write(&existing, b"").unwrap();
        // Before: sqlx read this as the absolute file; dj-database-url reads it as relative.
        let url = format!("sqlite://{}", existing.display());
        let err = config(&[("DEBUG", "true"), ("DATABASE_URL", &url)]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(
            err.message
                .contains(&format!("write sqlite:///{}", existing.display())),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn django_style_lists_are_parsed() {
        let cfg = config(&[
            ("DEBUG", "true"),
            ("ALLOWED_HOSTS", "localhost,127.0.0.1, [::1]"),
        ])
        .unwrap();
        assert_eq!(cfg.allowed_hosts, vec!["localhost", "127.0.0.1", "::1"]);
    }
}
