//! argon2id password hashes, computed off the async runtime.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::error::{AppError, AppResult};

/// A hash of a password nobody has, verified when the username is unknown so that both
/// failures take the same time.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn hash_blocking(password: &str) -> AppResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::Internal(format!("argon2 hash failed: {e}")))
}

/// Hashes `password` with argon2id (default parameters) on the blocking pool.
pub async fn hash(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| AppError::Internal(format!("hash task failed: {e}")))?
}

/// Checks `password` against a stored hash on the blocking pool; `None` verifies against a
/// dummy hash and always fails, taking the same time as a real check.
pub async fn verify(password: String, stored: Option<String>) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some();
        let hash = match stored {
            Some(hash) => hash,
            None => match DUMMY_HASH.get() {
                Some(hash) => hash.clone(),
                None => {
                    let hash = hash_blocking(&crate::auth::random_token(16))?;
                    DUMMY_HASH.get_or_init(|| hash).clone()
                }
            },
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok();
        Ok(real && ok)
    })
    .await
    .map_err(|e| AppError::Internal(format!("verify task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hash = hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong".into(), Some(hash)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }
}
