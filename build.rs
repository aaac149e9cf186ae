//! Compiles the PostgreSQL variants of the integration tests only when a test database is
//! configured, so an unset `TEST_DATABASE_URL` shows up as an ignored test rather than as
//! PostgreSQL tests that silently passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
}
