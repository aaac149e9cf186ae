//! What a newcomer meets at the command line: logs without colour codes when they go to a
//! pipe or a file, and `create-admin` taking a password that starts with `-`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::common::*;

/// A fresh, empty working directory.
fn empty_directory() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("att_cli_{}", attendance::auth::random_token(6)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The binary in `dir` as a development instance, with nothing else in its environment.
fn binary_in(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_attendance"));
    command.current_dir(dir).env_clear().env("DEBUG", "true");
    command
}

/// The same as a server (with `BIND` besides), its output gathered.
fn server_in(dir: &std::path::Path) -> ServerCommand {
    ServerCommand::bare()
        .current_dir(dir)
        .env("DEBUG", "true")
        .capture_output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = empty_directory();
    let mut server = server_in(&dir).start().await;
    server.wait_for_line(|l| l.contains("listening"));
    let output = server.stop().join("\n");
    assert!(
        output.contains("WARN"),
        "the level is still written: {output}"
    );
    assert!(
        !output.contains("\x1b["),
        "colour codes in piped logs: {output:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_admin_takes_a_password_that_starts_with_a_hyphen() {
    let dir = empty_directory();
    let password = "-x-starts-with-a-hyphen";
    let out = binary_in(&dir)
        .args(["create-admin", "--username", "dash", "--password", password])
        .output()
        .expect("run create-admin");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = server_in(&dir).start().await;
    let body = server
        .gql(
            None,
            "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
            json!({"u": "dash", "p": password}),
        )
        .await;
    assert!(
        body["data"]["login"]["accessToken"].is_string(),
        "the password logs in: {body}"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_sqlite_file_that_cannot_be_opened_is_named_in_the_error() {
    let dir = empty_directory();
    let out = binary_in(&dir)
        .env("DATABASE_URL", "sqlite:///no-such-folder/attendance.db")
        .arg("migrate")
        .output()
        .expect("run migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let tried = dir.join("no-such-folder/attendance.db");
    assert!(
        stderr.contains(&tried.display().to_string()),
        "the error names {}: {stderr}",
        tried.display()
    );
    let _ = std::fs::remove_dir_all(dir);
}
