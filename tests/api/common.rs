//! `TestApp`: a real server on port 0 over a fresh database, with one helper per endpoint.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attendance::app::Application;
pub use attendance::clock::Clock;
use attendance::config::Config;
use attendance::db::StatementCounter;
use attendance::service::Service;
use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Runs an async test body once per database backend.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }

                #[cfg(pg_tests)]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )+
    };
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A database of its own on the server of `TEST_DATABASE_URL`.
    Postgres,
}

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const TEACHER_PASSWORD: &str = "teacher-password-1";

/// A database made for one test and removed after it.
pub struct TestDb {
    pub url: String,
    cleanup: Option<Cleanup>,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        let name = format!("att_test_{}", attendance::auth::random_token(6));
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("temp dir");
                // dj-database-url's form: `sqlite:///` + an absolute path gives the four
                // slashes of an absolute file (three would mean a relative one).
                let url = format!("sqlite:///{}/test.db?mode=rwc", dir.display());
                Self {
                    url,
                    cleanup: Some(Cleanup::Dir(dir)),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL")
                    .expect("TEST_DATABASE_URL must be set for PostgreSQL tests");
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let base = match admin_url.rfind('/') {
                    Some(i)
                        if admin_url[..i].contains("://")
                            && i > admin_url.find("://").unwrap() + 2 =>
                    {
                        admin_url[..i].to_owned()
                    }
                    _ => admin_url.clone(),
                };
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Some(Cleanup::Postgres { admin_url, name }),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.cleanup.take() {
            Some(Cleanup::Dir(dir)) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Some(Cleanup::Postgres { admin_url, name }) => {
                // Drop runs inside the test's runtime, so the async cleanup gets its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        if let Ok(admin) = Database::connect(&admin_url).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
            }
            None => {}
        }
    }
}

/// Installs the rustls provider the server uses (ring); reqwest's clients need one.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for talking to test servers.
pub fn http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::new()
}

/// The environment every test server starts with; tests override single variables.
pub fn test_env(database_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("DEBUG".into(), "false".into()),
        (
            "SECRET_KEY".into(),
            "test-secret-key-0123456789abcdef".into(),
        ),
        ("DATABASE_URL".into(), database_url.into()),
        ("BIND".into(), "127.0.0.1:0".into()),
        ("TIME_ZONE".into(), "UTC".into()),
        ("AUTO_CLOSE_INTERVAL_SECONDS".into(), "3600".into()),
        ("DATABASE_MAX_CONNECTIONS".into(), "8".into()),
    ])
}

/// A running server and a client for it.
pub struct TestApp {
    pub backend: Backend,
    pub address: String,
    pub client: reqwest::Client,
    pub service: Service,
    pub statements: StatementCounter,
    pub db: Arc<TestDb>,
    /// The environment it started with (a restart keeps it).
    env: HashMap<String, String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// A server over a fresh database with an admin account.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like `spawn`, with changes to the environment.
    pub async fn spawn_with(
        backend: Backend,
        change: impl FnOnce(&mut HashMap<String, String>),
    ) -> Self {
        let db = Arc::new(TestDb::create(backend).await);
        let app = Self::start(backend, db, Clock::system(), change).await;
        app.service
            .create_admin(
                &attendance::auth::Principal::System,
                ADMIN_USER,
                ADMIN_PASSWORD,
            )
            .await
            .expect("create admin");
        app
    }

    /// A server over a fresh database whose attendance time is `clock` (tests move it).
    pub async fn spawn_with_clock(
        backend: Backend,
        clock: Clock,
        change: impl FnOnce(&mut HashMap<String, String>),
    ) -> Self {
        let db = Arc::new(TestDb::create(backend).await);
        let app = Self::start(backend, db, clock, change).await;
        app.service
            .create_admin(
                &attendance::auth::Principal::System,
                ADMIN_USER,
                ADMIN_PASSWORD,
            )
            .await
            .expect("create admin");
        app
    }

    /// Another server process-alike over the same database.
    pub async fn spawn_sibling(&self, change: impl FnOnce(&mut HashMap<String, String>)) -> Self {
        let clock = self.service.clock.clone();
        Self::start(self.backend, self.db.clone(), clock, change).await
    }

    async fn start(
        backend: Backend,
        db: Arc<TestDb>,
        clock: Clock,
        change: impl FnOnce(&mut HashMap<String, String>),
    ) -> Self {
        let mut env = test_env(&db.url);
        change(&mut env);
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
        let started_with = env.clone();
        let app = Application::build_with_clock(config, axum::Router::new(), clock)
            .await
            .expect("build app");
        let address = format!("http://127.0.0.1:{}", app.port());
        let service = app.service().clone();
        let statements = app.statements();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = app
                .run_until(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            backend,
            address,
            client: http_client(),
            service,
            statements,
            db,
            env: started_with,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops this server, runs `while_down`, and starts a new one over the same database
    /// clock and environment: a restart.
    pub async fn restart(self, while_down: impl FnOnce()) -> Self {
        let (backend, db, clock) = (self.backend, self.db.clone(), self.service.clock.clone());
        let env = self.env.clone();
        self.stop().await;
        while_down();
        Self::start(backend, db, clock, move |e| *e = env).await
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Posts a GraphQL document and returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("graphql request");
        res.json().await.expect("graphql json")
    }

    /// Posts a GraphQL document that must succeed and returns its `data`.
    pub async fn gql_ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let data = self
            .gql_ok(
                None,
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
                json!({"u": username, "p": password}),
            )
            .await;
        data["login"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// The admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_USER, ADMIN_PASSWORD).await
    }

    /// Posts a body to the REST scan endpoint; returns status and JSON body.
    pub async fn rest_scan(&self, key: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/api/attendance/scan", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let res = req.send().await.expect("scan request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("scan body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Scans a student through the REST shim with the given local date and time.
    pub async fn scan(&self, key: &str, student_id: &str, date: &str, time: &str) -> (u16, Value) {
        let id: i64 = student_id.parse().expect("numeric id");
        self.rest_scan(
            Some(key),
            &json!({"student_id": id, "date": date, "time": time}).to_string(),
        )
        .await
    }

    /// Uploads a roster CSV to `importStudents` as a GraphQL multipart request.
    pub async fn upload_roster(&self, token: Option<&str>, csv: &str) -> Value {
        const IMPORT: &str = "mutation($f: Upload!) { importStudents(file: $f) { applied created updated unchanged errors { line reason } } }";
        self.gql_upload(token, IMPORT, json!({"f": null}), csv)
            .await
    }

    /// Sends `document` as a GraphQL multipart request with `csv` as variable `f`.
    pub async fn gql_upload(
        &self,
        token: Option<&str>,
        document: &str,
        variables: Value,
        csv: &str,
    ) -> Value {
        let boundary = "XyZzYboundary";
        let operations = json!({"query": document, "variables": variables}).to_string();
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\": [\"variables.f\"]}}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"roster.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n\
             --{boundary}--\r\n"
        );
        let mut req = self
            .client
            .post(format!("{}/graphql", self.address))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("apollo-require-preflight", "1")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
            .await
            .expect("upload")
            .json()
            .await
            .expect("upload json")
    }

    /// Runs SQL that returns one integer.
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self
            .service
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.service.db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .expect("count query")
            .expect("a row");
        row.try_get_by_index::<i64>(0).expect("integer")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The server binary as a child process on `database_url`: a separate process, as behind a
/// load balancer, sharing nothing with the test but the database.
pub struct Server {
    pub child: Child,
    pub address: String,
    client: reqwest::Client,
}

impl Server {
    /// Starts the binary with the test environment plus `extra`, and waits until it serves.
    pub async fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_attendance"));
        command
            .env_clear()
            .envs(test_env(database_url))
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().expect("start the server binary");
        let server = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            client: http_client(),
        };
        server.wait_ready(Duration::from_secs(30)).await;
        server
    }

    async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(res) = self
                .client
                .get(format!("{}/health", self.address))
                .send()
                .await
                && res.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Posts a GraphQL document and returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("graphql request");
        res.json().await.expect("graphql json")
    }

    /// Scans a student through the REST shim; returns the status.
    pub async fn scan(&self, key: &str, student_id: &str, date: &str, time: &str) -> u16 {
        let id: i64 = student_id.parse().expect("numeric id");
        self.client
            .post(format!("{}/api/attendance/scan", self.address))
            .bearer_auth(key)
            .json(&json!({"student_id": id, "date": date, "time": time}))
            .send()
            .await
            .expect("scan request")
            .status()
            .as_u16()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first error's `extensions.code`.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// The first error's `extensions.reason`.
pub fn error_reason(body: &Value) -> &str {
    body["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or("<none>")
}

/// A small school: one dep-batch, two sections, a teacher with a course over both sections,
/// a second teacher, students, and a registered device.
pub struct School {
    pub admin: String,
    pub teacher: String,
    pub teacher_id: String,
    pub other_teacher: String,
    pub other_teacher_id: String,
    pub dep_batch_id: String,
    pub sections: Vec<String>,
    pub course_id: String,
    pub other_course_id: String,
    pub students: Vec<String>,
    pub outsider: String,
    pub device_code: String,
    pub device_key: String,
    pub device_row_id: String,
}

impl TestApp {
    /// Creates a teacher with a login and returns (teacher id, access token).
    pub async fn create_teacher(&self, admin: &str, code: &str) -> (String, String) {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateTeacherInput!) { createTeacher(input: $i) { id } }",
                json!({"i": {"teacherCode": code, "firstName": "T", "lastName": code,
                             "username": code.to_lowercase(), "password": TEACHER_PASSWORD}}),
            )
            .await;
        let id = data["createTeacher"]["id"].as_str().unwrap().to_owned();
        let token = self.login(&code.to_lowercase(), TEACHER_PASSWORD).await;
        (id, token)
    }

    pub async fn create_section(&self, admin: &str, dep_batch_id: &str, name: &str) -> String {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateSectionInput!) { createSection(input: $i) { id } }",
                json!({"i": {"name": name, "depBatchId": dep_batch_id}}),
            )
            .await;
        data["createSection"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_student(&self, admin: &str, code: &str, section_id: &str) -> String {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
                json!({"i": {"studentCode": code, "firstName": "S", "lastName": code, "sectionId": section_id}}),
            )
            .await;
        data["createStudent"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_course(
        &self,
        admin: &str,
        code: &str,
        teacher_id: &str,
        sections: &[&str],
    ) -> String {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateCourseInput!) { createCourse(input: $i) { id } }",
                json!({"i": {"name": format!("Course {code}"), "code": code, "teacherId": teacher_id, "sectionIds": sections}}),
            )
            .await;
        data["createCourse"]["id"].as_str().unwrap().to_owned()
    }

    /// Registers a device and returns (row id, key).
    pub async fn register_device(&self, admin: &str, code: &str) -> (String, String) {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: RegisterDeviceInput!) { registerDevice(input: $i) { apiKey device { id } } }",
                json!({"i": {"deviceId": code, "name": "Room 1"}}),
            )
            .await;
        (
            data["registerDevice"]["device"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            data["registerDevice"]["apiKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    /// Seeds a small school with `per_section` students in each of two sections.
    pub async fn seed_school(&self, per_section: usize) -> School {
        let admin = self.admin_token().await;
        let data = self
            .gql_ok(
                Some(&admin),
                "mutation { createDepBatch(input: {dep: \"Software Eng.\", batch: \"2024\"}) { id } }",
                json!({}),
            )
            .await;
        let dep_batch_id = data["createDepBatch"]["id"].as_str().unwrap().to_owned();
        let s1 = self.create_section(&admin, &dep_batch_id, "A").await;
        let s2 = self.create_section(&admin, &dep_batch_id, "B").await;
        let s3 = self.create_section(&admin, &dep_batch_id, "C").await;
        let (teacher_id, teacher) = self.create_teacher(&admin, "T001").await;
        let (other_teacher_id, other_teacher) = self.create_teacher(&admin, "T002").await;
        let course_id = self
            .create_course(&admin, "SE101", &teacher_id, &[&s1, &s2])
            .await;
        let other_course_id = self
            .create_course(&admin, "SE201", &other_teacher_id, &[&s3])
            .await;
        let mut students = Vec::new();
        for (i, section) in [&s1, &s2].iter().enumerate() {
            for n in 0..per_section {
                students.push(
                    self.create_student(&admin, &format!("ST{i}{n:03}"), section)
                        .await,
                );
            }
        }
        let outsider = self.create_student(&admin, "OUT001", &s3).await;
        let (device_row_id, device_key) = self.register_device(&admin, "DEV-01").await;
        School {
            admin,
            teacher,
            teacher_id,
            other_teacher,
            other_teacher_id,
            dep_batch_id,
            sections: vec![s1, s2, s3],
            course_id,
            other_course_id,
            students,
            outsider,
            device_code: "DEV-01".into(),
            device_key,
            device_row_id,
        }
    }

    /// Opens a session for the school's course on its device (as its teacher); returns its id.
    pub async fn open_session(&self, school: &School) -> String {
        let data = self
            .gql_ok(
                Some(&school.teacher),
                "mutation($i: CreateSessionInput!) { createSession(input: $i) { id } }",
                json!({"i": {"courseId": school.course_id, "deviceId": school.device_code}}),
            )
            .await;
        data["createSession"]["id"].as_str().unwrap().to_owned()
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Today's date in the test server's zone (UTC).
    pub fn today(&self) -> String {
        self.service.local_today().to_string()
    }

    /// The current time in the test server's zone (UTC) as HH:MM:SS, by its attendance
    /// clock like `today`, so a test on a manual clock scans at the clock's time.
    pub fn now_time(&self) -> String {
        self.service.now().format("%H:%M:%S").to_string()
    }
}

/// A graphql-transport-ws client connection.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws connection and sends `connection_init` with `payload`.
pub async fn ws_connect(address: &str, payload: Value) -> Socket {
    let url = format!("{}/graphql/ws", address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket");
    socket
        .send(Message::text(
            json!({"type": "connection_init", "payload": payload}).to_string(),
        ))
        .await
        .unwrap();
    socket
}

/// The next protocol message, or `None` when the socket closes; fails after `limit`.
pub async fn ws_next_message(socket: &mut Socket, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, socket.next())
            .await
            .expect("no message within the time limit");
        match message {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// A free loopback port for a child server's `BIND`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The real binary as a child process serving on a loopback port, its stdout and stderr
/// gathered line by line.
pub struct ServerProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far, stdout and stderr interleaved.
    pub output: Vec<String>,
}

impl ServerProcess {
    /// Spawns `command`, whose `BIND` must be `127.0.0.1:port`, and waits until its
    /// `/health` answers 200; fails with its output if it exits first.
    pub async fn start(mut command: std::process::Command, port: u16) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let tx_err = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx_err.send(line);
            }
        });
        let mut server = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            lines,
            output: Vec::new(),
        };
        let client = http_client();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(res) = client
                .get(format!("{}/health", server.address))
                .send()
                .await
                && res.status().is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let output = server.stop();
                panic!("the server exited with {status}:\n{}", output.join("\n"));
            }
            if std::time::Instant::now() > deadline {
                server.drain();
                panic!("server not ready:\n{}", server.output.join("\n"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Moves the lines read so far into `output`.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.output.push(line);
        }
    }

    /// Waits for the first output line (seen before or arriving) that satisfies `wanted`.
    pub fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.output.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no such line in the output:\n{}", self.output.join("\n"));
    }

    /// Stops the server with SIGTERM, waits for it to exit and returns all its output.
    pub fn stop(mut self) -> Vec<String> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        // The readers end at the pipes' end of file, which the exit brings.
        while let Ok(line) = self.lines.recv() {
            self.output.push(line);
        }
        std::mem::take(&mut self.output)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
