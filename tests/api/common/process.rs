//! The server binary as a child process: a separate process, as behind a load balancer,
//! sharing nothing with the test but the database (or the working directory).
//!
//! [`ServerCommand`] says how to start it; [`ServerCommand::start`] returns a
//! [`ServerProcess`] once it serves, which is killed when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{http_client, post_graphql, post_scan, scan_body, test_env};

/// How long a child server may take to answer its readiness path.
const START_LIMIT: Duration = Duration::from_secs(60);

/// How long [`ServerProcess::wait_for_line`] waits for a line.
const LINE_LIMIT: Duration = Duration::from_secs(30);

/// A free loopback port for a child server's `BIND`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// How to start the server binary: its environment (always with `BIND` on a free loopback
/// port), its working directory, whether its output is kept, and the path that says it is
/// ready.
pub struct ServerCommand {
    command: Command,
    port: u16,
    capture_output: bool,
    ready_path: &'static str,
}

impl ServerCommand {
    /// The binary with nothing in its environment but `BIND`.
    pub fn bare() -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_attendance"));
        command.env_clear().env("BIND", format!("127.0.0.1:{port}"));
        Self {
            command,
            port,
            capture_output: false,
            ready_path: "/health",
        }
    }

    /// The binary with the test environment over `database_url`, logging warnings only.
    pub fn with_test_env(database_url: &str) -> Self {
        let mut env: HashMap<String, String> = test_env(database_url);
        env.remove("BIND");
        Self::bare().envs(env).env("RUST_LOG", "warn")
    }

    /// Sets one variable of the environment.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.command.env(key.as_ref(), value.as_ref());
        self
    }

    /// Sets variables of the environment.
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (key, value) in vars {
            self.command.env(key.as_ref(), value.as_ref());
        }
        self
    }

    /// Runs the binary in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Gathers stdout and stderr line by line, for [`ServerProcess::wait_for_line`] and
    /// [`ServerProcess::stop`] (otherwise they are discarded).
    pub fn capture_output(mut self) -> Self {
        self.capture_output = true;
        self
    }

    /// Waits for `path` instead of `/health` to answer 200 before the server counts as up.
    pub fn ready_at(mut self, path: &'static str) -> Self {
        self.ready_path = path;
        self
    }

    /// The command as built so far, for a run that is not expected to serve.
    pub fn into_command(self) -> Command {
        self.command
    }

    /// Spawns the binary and waits until its readiness path answers 200; fails with its
    /// output (when gathered) if it exits first or is not ready in time.
    pub async fn start(mut self) -> ServerProcess {
        let output = if self.capture_output {
            Stdio::piped
        } else {
            Stdio::null
        };
        let mut child = self
            .command
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("start the server binary");
        let lines = self.capture_output.then(|| read_lines(&mut child));
        let mut server = ServerProcess {
            child,
            port: self.port,
            address: format!("http://127.0.0.1:{}", self.port),
            client: http_client(),
            lines,
            output: Vec::new(),
        };
        server.wait_ready(self.ready_path).await;
        server
    }
}

/// Reads the child's stdout and stderr on threads of their own into one channel of lines.
fn read_lines(child: &mut Child) -> Receiver<String> {
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
    lines
}

/// The server binary running as a child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The loopback port it serves on.
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    client: reqwest::Client,
    /// Its stdout and stderr, when gathered.
    lines: Option<Receiver<String>>,
    /// Every line read so far, stdout and stderr interleaved.
    pub output: Vec<String>,
}

impl ServerProcess {
    async fn wait_ready(&mut self, path: &str) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(res) = self
                .client
                .get(format!("{}{path}", self.address))
                .send()
                .await
                && res.status().is_success()
            {
                return;
            }
            if let Some(status) = self.try_wait() {
                self.read_to_end();
                panic!(
                    "the server exited with {status}:\n{}",
                    self.output.join("\n")
                );
            }
            if Instant::now() > deadline {
                self.drain();
                panic!("server not ready:\n{}", self.output.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the child")
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
        post_graphql(&self.client, &self.address, token, query, variables).await
    }

    /// Scans a student through the REST shim; returns the status.
    pub async fn scan(&self, key: &str, student_id: &str, date: &str, time: &str) -> u16 {
        post_scan(
            &self.client,
            &self.address,
            Some(key),
            &scan_body(student_id, date, time),
        )
        .await
        .0
    }

    /// Moves the lines read so far into `output`.
    pub fn drain(&mut self) {
        if let Some(lines) = &self.lines {
            while let Ok(line) = lines.try_recv() {
                self.output.push(line);
            }
        }
    }

    /// Waits for the first output line (seen before or arriving) that satisfies `wanted`.
    pub fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.output.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let lines = self
            .lines
            .as_ref()
            .expect("the output is gathered: start with `capture_output`");
        let deadline = Instant::now() + LINE_LIMIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
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

    /// Stops the server with SIGTERM, waits for it to exit and returns all its output
    /// (nothing when it was not gathered).
    pub fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.read_to_end();
        std::mem::take(&mut self.output)
    }

    /// Moves every remaining line into `output`; the process must have exited.
    fn read_to_end(&mut self) {
        // The readers end at the pipes' end of file, which the exit brings.
        if let Some(lines) = &self.lines {
            while let Ok(line) = lines.recv() {
                self.output.push(line);
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
