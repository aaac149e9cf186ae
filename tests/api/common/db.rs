//! The backends a test runs on, and the database made for one test and removed after it.

use sea_orm::{ConnectionTrait, Database};

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A database of its own on the server of `TEST_DATABASE_URL`.
    Postgres,
}

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
