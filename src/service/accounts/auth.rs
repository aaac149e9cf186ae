//! Logging in, refreshing and revoking tokens, and turning a bearer token into a principal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use crate::auth::jwt::TokenKind;
use crate::auth::{DEVICE_KEY_PREFIX, Principal, Role, fast_hash, password};
use crate::entities::{device, refresh_token, user};
use crate::error::{AppError, AppResult};
use crate::service::accounts::limiter::Attempt;
use crate::service::{Service, now};

/// How long a device key stays cached; revocation in this process clears it at once, and
/// scans re-check the key and the active flag in SQL, so staleness never admits a scan.
const DEVICE_CACHE_TTL: Duration = Duration::from_secs(10);

/// Maps device key hashes to device ids so authenticating a scan costs no query.
#[derive(Default)]
pub struct DeviceCache(Mutex<HashMap<String, (i32, Instant)>>);

impl DeviceCache {
    fn get(&self, key_hash: &str) -> Option<i32> {
        let map = self.0.lock().ok()?;
        map.get(key_hash)
            .filter(|(_, at)| at.elapsed() < DEVICE_CACHE_TTL)
            .map(|(id, _)| *id)
    }

    fn put(&self, key_hash: String, id: i32) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() > 10_000 {
                map.clear();
            }
            map.insert(key_hash, (id, Instant::now()));
        }
    }

    /// Forgets every cached key (after a revocation or rotation).
    pub fn clear(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.clear();
        }
    }
}

/// A fresh access and refresh token pair for a user.
#[derive(Clone, Debug)]
pub struct TokenPair {
    /// The access token (JWT).
    pub access_token: String,
    /// The single-use refresh token (JWT).
    pub refresh_token: String,
    /// The user the tokens belong to.
    pub user: user::Model,
}

impl Service {
    /// Turns the value of an `Authorization` header into a principal.
    pub async fn authenticate(&self, header: &str) -> AppResult<Principal> {
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AppError::Unauthenticated)?;
        if token.starts_with(DEVICE_KEY_PREFIX) {
            return self.authenticate_device(token).await;
        }
        let subject = self.jwt.verify(token, TokenKind::Access)?;
        // This read of the account, which every request makes anyway, is what ends a token
        // at once after a password change, a reset or a deactivation: no extra statement.
        let user = user::Entity::find_by_id(subject.user_id)
            .one(&self.db)
            .await?
            .filter(|u| u.is_active && u.token_version == subject.version)
            .ok_or(AppError::Unauthenticated)?;
        Ok(Principal::User {
            user_id: user.id,
            role: user.role.into(),
            teacher_id: user.teacher_id,
        })
    }

    async fn authenticate_device(&self, key: &str) -> AppResult<Principal> {
        let key_hash = fast_hash(key);
        if let Some(id) = self.devices.get(&key_hash) {
            return Ok(Principal::Device { id, key_hash });
        }
        let device = device::Entity::find()
            .filter(device::Column::KeyHash.eq(key_hash.as_str()))
            .one(&self.db)
            .await?
            .filter(|d| d.is_active)
            .ok_or(AppError::Unauthenticated)?;
        self.devices.put(key_hash.clone(), device.id);
        Ok(Principal::Device {
            id: device.id,
            key_hash,
        })
    }

    /// Forgets cached device keys; called whenever a device's key or flag changes.
    pub fn forget_device_keys(&self) {
        self.devices.clear();
    }

    /// Checks a username and password and issues a token pair. Unknown users and wrong
    /// passwords fail identically, in about the same time. Every attempt is counted against
    /// the username and the client address before the password is checked, in the database,
    /// so the limits are the same on every server process and attempts sent at once cannot
    /// slip past them; over either limit even the right password is refused (RATE_LIMITED),
    /// without spending a password hash on it.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> AppResult<TokenPair> {
        if self
            .limiter
            .attempt(&self.writer, username, address)
            .await?
            == Attempt::Refused
        {
            return Err(AppError::rejected(
                crate::error::Reason::RateLimited,
                "too many failed logins; try again later",
            ));
        }
        let user = user::Entity::find()
            .filter(user::Column::Username.eq(username.trim()))
            .one(&self.db)
            .await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let ok = password::verify(password.to_owned(), stored).await?;
        let user = match user {
            Some(user) if ok && user.is_active => user,
            _ => return Err(invalid_credentials()),
        };
        self.limiter
            .succeeded(&self.writer, username, address)
            .await?;
        self.issue_pair(user, crate::auth::random_token(16)).await
    }

    /// Deletes failed-login counts whose window and lockout have passed, so the table holds
    /// only what can still lock someone out. Returns how many went.
    pub async fn prune_login_failures(&self) -> AppResult<u64> {
        Ok(self.limiter.prune(&self.writer).await?)
    }

    /// Exchanges a refresh token for a new pair. Each refresh token works once; presenting a
    /// spent one revokes its whole family, since it means the token was stolen.
    pub async fn refresh(&self, token: &str) -> AppResult<TokenPair> {
        let subject = self.jwt.verify(token, TokenKind::Refresh)?;
        let user_id = subject.user_id;
        let stored = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(fast_hash(token)))
            .one(&self.db)
            .await?
            .ok_or(AppError::Unauthenticated)?;
        let at = now();
        if stored.user_id != user_id || stored.revoked_at.is_some() || stored.expires_at <= at {
            return Err(AppError::Unauthenticated);
        }
        if stored.used_at.is_some() {
            self.revoke_family(&stored.family).await?;
            tracing::warn!(
                user_id,
                "spent refresh token presented again; family revoked"
            );
            return Err(AppError::Unauthenticated);
        }
        // The conditional update makes the token single-use even under concurrent refreshes.
        let spent = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(at))
            .filter(refresh_token::Column::Id.eq(stored.id))
            .filter(refresh_token::Column::UsedAt.is_null())
            .filter(refresh_token::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        if spent.rows_affected != 1 {
            self.revoke_family(&stored.family).await?;
            return Err(AppError::Unauthenticated);
        }
        // A password change racing this refresh may commit after the token was found
        // unrevoked; its version bump still stops the refresh here.
        let user = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .filter(|u| u.is_active && u.token_version == subject.version)
            .ok_or(AppError::Unauthenticated)?;
        self.issue_pair(user, stored.family).await
    }

    /// Revokes a refresh token (and the rest of its family). Unknown tokens are ignored, so
    /// logging out twice is harmless.
    pub async fn logout(&self, token: &str) -> AppResult<()> {
        if self.jwt.verify(token, TokenKind::Refresh).is_err() {
            return Ok(());
        }
        let stored = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(fast_hash(token)))
            .one(&self.db)
            .await?;
        if let Some(stored) = stored {
            self.revoke_family(&stored.family).await?;
        }
        Ok(())
    }

    async fn revoke_family(&self, family: &str) -> AppResult<()> {
        refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RevokedAt, Expr::value(now()))
            .filter(refresh_token::Column::Family.eq(family))
            .filter(refresh_token::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn issue_pair(&self, user: user::Model, family: String) -> AppResult<TokenPair> {
        let lifetimes = (
            self.config.access_token_lifetime,
            self.config.refresh_token_lifetime,
        );
        let version = user.token_version;
        let access_token = self
            .jwt
            .issue(user.id, version, TokenKind::Access, lifetimes.0)?;
        let refresh_token = self
            .jwt
            .issue(user.id, version, TokenKind::Refresh, lifetimes.1)?;
        let at = now();
        refresh_token::ActiveModel {
            user_id: Set(user.id),
            token_hash: Set(fast_hash(&refresh_token)),
            family: Set(family),
            expires_at: Set(at + chrono::Duration::from_std(lifetimes.1).unwrap_or_default()),
            used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(at),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            user,
        })
    }
}

/// The one error for every failed login, so responses reveal nothing about accounts.
pub fn invalid_credentials() -> AppError {
    AppError::rejected(
        crate::error::Reason::InvalidCredentials,
        "invalid username or password",
    )
}

/// Checks a new password's length; `field` names it in the error.
pub fn check_password(field: &str, password: &str) -> AppResult<()> {
    let len = password.chars().count();
    if !(8..=256).contains(&len) {
        return Err(AppError::invalid(
            field,
            "must be between 8 and 256 characters",
        ));
    }
    Ok(())
}

impl Role {
    /// True for the roles that log in with a password.
    pub fn is_person(self) -> bool {
        matches!(self, Role::Admin | Role::Teacher)
    }
}

/// How often expired failed-login counts are deleted.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// The job that deletes expired failed-login counts (one short DELETE) until told to stop.
pub async fn prune_login_failures_job(service: Service, stop: tokio::sync::watch::Receiver<bool>) {
    crate::service::every(PRUNE_INTERVAL, stop, || async {
        if let Err(e) = service.prune_login_failures().await {
            tracing::warn!(error = %e, "pruning failed-login counts failed; will retry");
        }
    })
    .await;
}
