//! Reading credentials off a request, once for every transport.
//!
//! The extractor only reads the `Authorization` header; [`crate::service::Service::authenticate`]
//! checks what it holds. It never rejects, so each transport keeps its own answer to missing
//! credentials (GraphQL runs anonymously, REST answers 401) and REST still reads its body
//! before authenticating, as it always has.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::{AppError, AppResult};

/// The `Authorization` header of a request, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaybeBearer {
    /// No `Authorization` header.
    Absent,
    /// A header that is not visible ASCII, so it cannot hold a token.
    Unreadable,
    /// The header's text (`Bearer <token>` when well formed; the service checks it).
    Header(String),
}

impl MaybeBearer {
    /// The credentials a bare token stands for, as a WebSocket client sends it in
    /// `connection_init`: with or without the `Bearer ` prefix.
    pub fn from_token(token: &str) -> Self {
        if token.starts_with("Bearer ") {
            Self::Header(token.to_owned())
        } else {
            Self::Header(format!("Bearer {token}"))
        }
    }

    /// The header to authenticate, or UNAUTHENTICATED when there is none that could be.
    pub fn required(&self) -> AppResult<&str> {
        match self {
            Self::Header(header) => Ok(header),
            Self::Absent | Self::Unreadable => Err(AppError::Unauthenticated),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MaybeBearer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.headers.get(AUTHORIZATION) {
            None => Self::Absent,
            Some(value) => match value.to_str() {
                Ok(text) => Self::Header(text.to_owned()),
                Err(_) => Self::Unreadable,
            },
        })
    }
}
