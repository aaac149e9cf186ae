//! HS256 access and refresh tokens.

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};

/// What a token is for; an access token is never accepted as a refresh token and vice versa.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Authorizes API calls.
    Access,
    /// Exchanged once for a new pair.
    Refresh,
}

/// The claims of both token kinds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `access` or `refresh`.
    pub typ: TokenKind,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// A unique id, so two tokens issued in the same second differ.
    pub jti: String,
    /// The account's token version when issued. A counter rather than a time, so a token
    /// issued in the same second right after a password change is told apart from the one
    /// before it. Tokens from before the claim existed read as 0, every account's first.
    #[serde(default)]
    pub ver: i32,
}

/// Who a verified token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    /// The user id.
    pub user_id: i32,
    /// The account's token version the token was issued under; the caller compares it with
    /// the account's current one.
    pub version: i32,
}

/// Signs and verifies tokens with the server's secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    /// Keys derived from `SECRET_KEY`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Issues a token of `kind` for `user_id` under its token `version`, valid for
    /// `lifetime`.
    pub fn issue(
        &self,
        user_id: i32,
        version: i32,
        kind: TokenKind,
        lifetime: std::time::Duration,
    ) -> AppResult<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            typ: kind,
            iat: now,
            exp: now + lifetime.as_secs() as i64,
            jti: crate::auth::random_token(16),
            ver: version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("jwt encode failed: {e}")))
    }

    /// Verifies signature, expiry and kind; returns the user and token version.
    pub fn verify(&self, token: &str, kind: TokenKind) -> AppResult<TokenSubject> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AppError::Unauthenticated)?;
        if data.claims.typ != kind {
            return Err(AppError::Unauthenticated);
        }
        let user_id = data
            .claims
            .sub
            .parse()
            .map_err(|_| AppError::Unauthenticated)?;
        Ok(TokenSubject {
            user_id,
            version: data.claims.ver,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_token_verifies_only_as_its_own_kind_and_key() {
        let keys = JwtKeys::new("0123456789abcdef0123456789abcdef");
        let token = keys
            .issue(7, 3, TokenKind::Access, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            keys.verify(&token, TokenKind::Access).unwrap(),
            TokenSubject {
                user_id: 7,
                version: 3
            }
        );
        assert!(keys.verify(&token, TokenKind::Refresh).is_err());
        let other = JwtKeys::new("another-secret-another-secret-xx");
        assert!(other.verify(&token, TokenKind::Access).is_err());
    }

    #[test]
    fn a_token_from_before_versions_reads_as_the_first_version() {
        let secret = "0123456789abcdef0123456789abcdef";
        let now = Utc::now().timestamp();
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "7", "typ": "access", "iat": now, "exp": now + 60, "jti": "x"}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let subject = JwtKeys::new(secret)
            .verify(&old, TokenKind::Access)
            .unwrap();
        assert_eq!(subject.version, 0);
    }
}
