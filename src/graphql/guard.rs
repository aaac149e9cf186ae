//! Per-field role guards and access to the caller's identity.

use async_graphql::{Context, Guard};

use crate::auth::{Principal, Role};
use crate::error::{AppError, AppResult};

/// What the transport learned about the caller, put into every request's data.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No `Authorization` header.
    Anonymous,
    /// A header that did not authenticate (bad, expired, revoked...).
    Invalid,
    /// The credentials could not be checked because the database is down.
    Unavailable,
    /// An authenticated caller.
    Principal(Principal),
}

/// The address the request came from, for per-address login limits.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The authenticated caller, or UNAUTHENTICATED.
pub fn principal<'a>(ctx: &'a Context<'_>) -> AppResult<&'a Principal> {
    match ctx.data_opt::<Auth>() {
        Some(Auth::Principal(p)) => Ok(p),
        Some(Auth::Unavailable) => Err(AppError::Unavailable),
        _ => Err(AppError::Unauthenticated),
    }
}

/// Admits callers whose role is in the list.
pub struct RoleGuard(&'static [Role]);

impl RoleGuard {
    /// Admins only.
    pub fn admin() -> Self {
        Self(&[Role::Admin])
    }

    /// Admins and teachers: people, never devices.
    pub fn people() -> Self {
        Self(&[Role::Admin, Role::Teacher])
    }

    /// Devices only.
    pub fn device() -> Self {
        Self(&[Role::Device])
    }
}

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let principal = principal(ctx).map_err(AppError::into_graphql)?;
        if self.0.contains(&principal.role()) {
            Ok(())
        } else {
            Err(AppError::Forbidden.into_graphql())
        }
    }
}
