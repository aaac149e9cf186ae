//! `TestApp`: a real server on port 0 over a fresh database, with one helper per endpoint.
//!
//! - [`db`]: the backends and the database each test makes and removes;
//! - [`http`]: the HTTP client, the requests the in-process app and child processes share,
//!   and readers of GraphQL errors;
//! - [`app`]: `TestApp`, the server in the test's own process, and its endpoint helpers;
//! - [`school`]: the `School` fixture, and helpers that build it and open, scan and close
//!   its sessions;
//! - [`process`]: the server binary as a child process (`ServerCommand`, `ServerProcess`);
//! - [`ws`]: graphql-transport-ws clients.

#![allow(dead_code)]

mod app;
mod db;
mod http;
mod process;
mod school;
mod ws;

pub use app::*;
pub use db::*;
pub use http::*;
pub use process::*;
pub use school::*;
pub use ws::*;

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
