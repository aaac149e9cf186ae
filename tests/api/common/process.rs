//! The server binary as a child process: a separate process, as behind a load balancer,
//! sharing nothing with the test but the database.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{http_client, test_env};

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
