//! The `attendance` binary: parse the command line, load configuration, run a subcommand.

use attendance::auth::Principal;
use std::io::IsTerminal;
use std::process::ExitCode;

use attendance::app::Application;
use attendance::config::{Config, MIN_SECRET_KEY_LEN};
use attendance::dotenv::{DotEnv, LoadError};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attendance",
    version,
    about = "Attendance backend for face-recognition terminals"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an admin account (or reset an existing admin's password).
    CreateAdmin {
        /// The admin's username.
        #[arg(long)]
        username: String,
        /// The password (or set ADMIN_PASSWORD); it may start with `-`.
        #[arg(
            long,
            env = "ADMIN_PASSWORD",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        password: Option<String>,
    },
    /// Import students from a CSV file (student_code,first_name,last_name,section); nothing
    /// is written unless every row is valid, and importing the same file again is harmless.
    ImportStudents {
        /// The CSV file.
        file: std::path::PathBuf,
    },
    /// Import weekly timetable slots into a term from a CSV file
    /// (course_code,device_id,weekday,start_time,end_time); nothing is written unless every
    /// line is valid, and importing the same file again is harmless.
    ImportTimetable {
        /// The term's name (or id).
        #[arg(long)]
        term: String,
        /// The CSV file.
        file: std::path::PathBuf,
    },
    /// Exit 0 when the local server's /health answers 200 (for container health checks).
    Healthcheck,
    /// Print the scan statement as issued on PostgreSQL (for the benchmark's pgbench run).
    #[command(hide = true)]
    ScanSql {
        /// The group-commit statement instead of the single-scan one.
        #[arg(long)]
        batch: bool,
    },
}

/// mimalloc instead of glibc's malloc: list pages allocate many small values per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ScanSql { batch }) = cli.command {
        use attendance::service::roll_call::scan;
        let sql = if batch {
            scan::batch_scan_sql()
        } else {
            scan::scan_sql(
                sea_orm::DbBackend::Postgres,
                &scan::StudentRef::Id(0),
                scan::Target::Active,
            )
            .to_owned()
        };
        println!("{sql}");
        return ExitCode::SUCCESS;
    }
    // The nearest .env, read as python-dotenv reads it. Variables already in the environment
    // win; a file that cannot be read stops here instead of being skipped.
    let dotenv = match read_dotenv() {
        Ok(dotenv) => dotenv,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| dotenv.get(name).map(str::to_owned))
    };
    if let Some(Command::Healthcheck) = cli.command {
        return healthcheck(var("BIND"));
    }
    let config = match Config::from_lookup(var) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let colour = log_colour(std::io::stdout().is_terminal(), var("NO_COLOR").as_deref());
    init_logging(config.log_json, var("RUST_LOG"), colour);
    if let Some(path) = dotenv.path() {
        tracing::info!(path = %path.display(), "read settings from .env");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            // clap reads ADMIN_PASSWORD from the environment only; `.env` may hold it too.
            Command::CreateAdmin { username, password } => {
                match password.or_else(|| var("ADMIN_PASSWORD")) {
                    Some(password) => create_admin(config, &username, &password).await,
                    None => Err("ADMIN_PASSWORD: give --password or set ADMIN_PASSWORD".into()),
                }
            }
            Command::ImportStudents { file } => import_students(config, &file).await,
            Command::ImportTimetable { term, file } => import_timetable(config, &term, &file).await,
            Command::Healthcheck | Command::ScanSql { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The nearest `.env` from the working directory up, as dotenvy used to find it.
fn read_dotenv() -> Result<DotEnv, LoadError> {
    let dir = std::env::current_dir().map_err(|source| LoadError::Read {
        path: ".".into(),
        source,
    })?;
    DotEnv::load_nearest(&dir, |name| std::env::var(name).ok())
}

/// Colour codes only for a person at a terminal (the logs go to stdout), and never when a
/// non-empty `NO_COLOR` asks for none (<https://no-color.org>).
fn log_colour(stdout_is_terminal: bool, no_color: Option<&str>) -> bool {
    stdout_is_terminal && no_color.is_none_or(str::is_empty)
}

fn init_logging(json: bool, filter: Option<String>, colour: bool) {
    let filter = filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config) -> Result<(), String> {
    if config.secret_key_generated {
        tracing::warn!(
            "SECRET_KEY is not set: using a random key for this process (DEBUG=true); \
             every token dies when it stops, and webhooks created now cannot be signed after \
             a restart until their secret is rotated"
        );
    }
    if config.secret_key_short {
        tracing::warn!(
            "SECRET_KEY is shorter than {MIN_SECRET_KEY_LEN} characters: anyone who guesses it \
             can forge tokens. Allowed only because DEBUG=true; never use it in production"
        );
    }
    let bind = config.bind;
    let app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    match app.service().bootstrap_admin().await {
        Ok(Some((username, password))) => {
            // Printed once, to the terminal only: later starts find the admin and print nothing.
            println!(
                "\nCreated the first admin account (shown only this once):\n  username: {username}\n  password: {password}\n"
            );
        }
        Ok(None) => {}
        Err(e) => return Err(format!("cannot create the first admin: {e}")),
    }
    tracing::info!(address = %bind, port = app.port(), "listening");
    app.run_until(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// Connects to the configured database and brings its schema up to date.
async fn migrated_pools(config: &Config) -> Result<attendance::db::Pools, String> {
    attendance::db::connect_migrated(config)
        .await
        .map_err(|e| e.to_string())
}

/// The services over the migrated database, for the CLI's one-off commands.
async fn migrated_service(config: Config) -> Result<attendance::service::Service, String> {
    let pools = migrated_pools(&config).await?;
    Ok(attendance::service::Service::new(
        pools,
        std::sync::Arc::new(config),
    ))
}

async fn migrate(config: Config) -> Result<(), String> {
    migrated_pools(&config).await?;
    println!("migrations applied");
    Ok(())
}

async fn create_admin(config: Config, username: &str, password: &str) -> Result<(), String> {
    let service = migrated_service(config).await?;
    let user = service
        .create_or_reset_admin(&Principal::System, username, password)
        .await
        .map_err(|e| e.to_string())?;
    println!("admin {:?} is ready", user.username);
    Ok(())
}

async fn import_students(config: Config, file: &std::path::Path) -> Result<(), String> {
    use attendance::service::directory::import::ImportOutcome;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let service = migrated_service(config).await?;
    // Made on the first report, when the row count is known.
    let bar = std::sync::OnceLock::new();
    let progress = |done: usize, total: usize| {
        if total < 1000 {
            return;
        }
        let bar = bar.get_or_init(|| {
            let style = indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} students")
                .map_or_else(
                    |_| indicatif::ProgressStyle::default_bar(),
                    |style| style.progress_chars("# "),
                );
            indicatif::ProgressBar::new(total as u64).with_style(style)
        });
        bar.set_position(done as u64);
        if done == total {
            if bar.is_hidden() {
                // indicatif draws nothing when stderr is not a terminal; a log or a pipe
                // still gets the count, once, without the redrawn bar.
                eprintln!("{done}/{total} students");
            } else {
                bar.finish();
            }
        }
    };
    match service
        .import_students(&Principal::System, &text, &progress)
        .await
        .map_err(|e| e.to_string())?
    {
        ImportOutcome::Applied(report) => {
            println!(
                "imported {}: {} created, {} updated, {} unchanged",
                file.display(),
                report.created,
                report.updated,
                report.unchanged
            );
            Ok(())
        }
        ImportOutcome::Rejected(lines) => Err(rejected(file, &lines)),
    }
}

async fn import_timetable(
    config: Config,
    term: &str,
    file: &std::path::Path,
) -> Result<(), String> {
    use attendance::service::directory::import::ImportOutcome;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let service = migrated_service(config).await?;
    match service
        .import_timetable(&Principal::System, term, &text)
        .await
        .map_err(|e| e.to_string())?
    {
        ImportOutcome::Applied(report) => {
            println!(
                "imported {}: {} slots created, {} unchanged",
                file.display(),
                report.created,
                report.unchanged
            );
            Ok(())
        }
        ImportOutcome::Rejected(lines) => Err(rejected(file, &lines)),
    }
}

/// Prints every bad line of a rejected file; the error says nothing was imported.
fn rejected(
    file: &std::path::Path,
    lines: &[attendance::service::directory::import::BadLine],
) -> String {
    for line in lines {
        eprintln!("line {}: {}", line.line, line.reason);
    }
    format!(
        "{} bad line(s) in {}; nothing was imported",
        lines.len(),
        file.display()
    )
}

/// Asks the server on this machine's `BIND` port (from the environment or `.env`) for
/// `/health`, without needing the rest of the configuration.
fn healthcheck(bind: Option<String>) -> ExitCode {
    use std::io::{Read, Write};
    let port = bind
        .and_then(|b| b.parse::<std::net::SocketAddr>().ok())
        .map_or(8000, |a| a.port());
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let answer = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut stream| {
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    });
    match answer {
        Ok(response)
            if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") =>
        {
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("unhealthy: {}", response.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some("")), "an empty NO_COLOR is unset");
        assert!(!log_colour(true, Some("1")));
        assert!(
            !log_colour(false, None),
            "a pipe or file gets no colour codes"
        );
    }
}
