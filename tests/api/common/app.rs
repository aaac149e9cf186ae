//! `TestApp`: the server in the test's own process over a fresh database, with one helper
//! per endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use attendance::app::Application;
pub use attendance::clock::Clock;
use attendance::config::Config;
use attendance::db::StatementCounter;
use attendance::service::Service;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Backend, TestDb, http_client, post_graphql, post_scan, scan_body, test_env};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const TEACHER_PASSWORD: &str = "teacher-password-1";

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
        Self::spawn_with_clock(backend, Clock::system(), change).await
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
        post_graphql(&self.client, &self.address, token, query, variables).await
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
        post_scan(&self.client, &self.address, key, body).await
    }

    /// Scans a student through the REST shim with the given local date and time.
    pub async fn scan(&self, key: &str, student_id: &str, date: &str, time: &str) -> (u16, Value) {
        self.rest_scan(Some(key), &scan_body(student_id, date, time))
            .await
    }

    /// Posts an offline batch of `scans` (as a terminal sends it) to the batch endpoint;
    /// returns status and JSON body.
    pub async fn scan_batch(&self, key: &str, scans: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}/api/attendance/scans/batch", self.address))
            .bearer_auth(key)
            .json(scans)
            .send()
            .await
            .expect("batch request");
        let status = res.status().as_u16();
        (status, res.json().await.expect("batch json"))
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
        self.one_value(sql).await
    }

    /// Runs SQL that returns one text value.
    pub async fn text(&self, sql: &str) -> String {
        self.one_value(sql).await
    }

    /// Runs SQL that returns one column of 32-bit integers (ids); its values in order.
    pub async fn ids(&self, sql: &str) -> Vec<i64> {
        let rows = self
            .service
            .db
            .query_all_raw(self.statement(sql))
            .await
            .expect("ids query");
        rows.iter()
            .map(|r| r.try_get_by_index::<i32>(0).expect("integer").into())
            .collect()
    }

    async fn one_value<T: sea_orm::TryGetable>(&self, sql: &str) -> T {
        let row = self
            .service
            .db
            .query_one_raw(self.statement(sql))
            .await
            .expect("query")
            .expect("a row");
        row.try_get_by_index::<T>(0).expect("a value of the type")
    }

    fn statement(&self, sql: &str) -> sea_orm::Statement {
        sea_orm::Statement::from_string(self.service.db.get_database_backend(), sql.to_owned())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
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
