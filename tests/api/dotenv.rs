//! Start-up from the original Django design's `.env`, unchanged: the real binary runs in a
//! directory holding only that file, with nothing else in its environment but `BIND`.
//!
//! SQLite only, on purpose: the file itself names the database (`sqlite:///db.sqlite3`),
//! and reading that name as dj-database-url does is what is under test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::common::*;

/// Exactly the file users of the Django design already have.
const DJANGO_DOTENV: &str = "DEBUG=True
SECRET_KEY=your-secret-key
ALLOWED_HOSTS=localhost,127.0.0.1, [::1]
DATABASE_URL=sqlite:///db.sqlite3
JWT_ACCESS_TOKEN_LIFETIME=60
JWT_REFRESH_TOKEN_LIFETIME=1440
CORS_ALLOWED_ORIGINS=http://localhost:3000, https://your-frontend-domain.com
";

/// A fresh directory holding only a `.env` with `contents`.
fn directory_with_dotenv(contents: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("att_dotenv_{}", attendance::auth::random_token(6)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(".env"), contents).expect("write .env");
    dir
}

/// The binary in `dir` with a cleared environment except `BIND`, its output gathered.
fn binary_in(dir: &Path) -> ServerCommand {
    ServerCommand::bare().current_dir(dir).capture_output()
}

/// Posts a GraphQL document with an optional token and extra headers; returns status and body.
async fn graphql(
    address: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = crate::common::http_client()
        .post(format!("{address}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.expect("graphql request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_django_design_dotenv_file_works_unchanged() {
    let dir = directory_with_dotenv(DJANGO_DOTENV);
    let mut server = binary_in(&dir).start().await;

    // The first start prints the first admin's credentials once, on stdout.
    let field = |line: &str, name: &str| line.trim().strip_prefix(name).map(str::to_owned);
    let username = server.wait_for_line(|l| field(l, "username: ").is_some());
    let username = field(&username, "username: ").unwrap();
    let password = server.wait_for_line(|l| field(l, "password: ").is_some());
    let password = field(&password, "password: ").unwrap();
    server.wait_for_line(|l| l.contains("SECRET_KEY is shorter than 16 characters"));

    // The database is db.sqlite3 in the working directory, and that admin is in it.
    assert!(dir.join("db.sqlite3").is_file());
    assert!(!dir.join("attendance.db").exists(), "not the default file");
    let file = Database::connect(format!(
        "sqlite://{}?mode=ro",
        dir.join("db.sqlite3").display()
    ))
    .await
    .expect("open db.sqlite3");
    let row = file
        .query_one_raw(Statement::from_sql_and_values(
            file.get_database_backend(),
            "SELECT count(*) FROM app_user WHERE username = ? AND role = 'admin'",
            [username.clone().into()],
        ))
        .await
        .expect("query db.sqlite3")
        .expect("a row");
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 1);
    file.close().await.ok();

    let (status, _, body) = graphql(
        &server.address,
        None,
        &[],
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
        json!({"u": username, "p": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {body}"))
        .to_owned();

    // Signed with the file's SECRET_KEY (not a random one), valid for 60 minutes.
    let claims = jsonwebtoken::decode::<attendance::auth::jwt::Claims>(
        &token,
        &DecodingKey::from_secret(b"your-secret-key"),
        &Validation::new(Algorithm::HS256),
    )
    .expect("signed with SECRET_KEY from .env")
    .claims;
    assert_eq!(claims.exp - claims.iat, 3600);

    // ALLOWED_HOSTS: a stranger's Host is refused, the IPv6 literal (after ", ") is not.
    let typename = "{ __typename }";
    let (status, _, _) = graphql(
        &server.address,
        None,
        &[("host", "evil.example")],
        typename,
        json!({}),
    )
    .await;
    assert_eq!(status, 400);
    let ipv6_host = format!("[::1]:{}", server.port);
    let (status, _, body) = graphql(
        &server.address,
        None,
        &[("host", &ipv6_host)],
        typename,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // CORS_ALLOWED_ORIGINS: the origin after ", " is allowed.
    let origin = "https://your-frontend-domain.com";
    let (_, headers, _) = graphql(
        &server.address,
        None,
        &[("origin", origin)],
        typename,
        json!({}),
    )
    .await;
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(origin)
    );

    // The key is the file's, not a per-process one, so the token survives a restart.
    server.stop();
    let mut restarted = binary_in(&dir).start().await;
    let (status, _, body) = graphql(
        &restarted.address,
        Some(&token),
        &[],
        "{ me { username role } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["username"], username.as_str(), "{body}");
    restarted.drain();
    assert!(
        !restarted.output.iter().any(|l| l.contains(&password)),
        "credentials are printed only once"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_dotenv_line_stops_start_up_naming_the_line() {
    let dir =
        directory_with_dotenv("DEBUG=True\nSECRET_KEY=your-secret-key\nALLOWED_HOSTS localhost\n");
    let mut child = binary_in(&dir)
        .into_command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    // Were the file skipped, the server would start and serve; it must exit instead.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("poll the child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started despite a bad .env line");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: .env line 3: "),
        "names the line: {stderr}"
    );
    assert!(stderr.contains("ALLOWED_HOSTS"), "{stderr}");
    assert!(
        !dir.join("attendance.db").exists(),
        "nothing started with the defaults"
    );
    let _ = std::fs::remove_dir_all(dir);
}
