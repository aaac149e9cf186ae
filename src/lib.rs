//! Attendance backend for classrooms with face-recognition terminals.
//!
//! A tour, from the edge inwards:

/// Building the router and state, binding, serving with graceful shutdown, background jobs.
pub mod app;
/// Roles and principals, argon2 password hashes, JWTs, device keys, the bearer extractor.
pub mod auth;
/// Attendance time: the system clock, or one tests move.
pub mod clock;
/// Typed configuration from the environment; fails fast naming the bad variable.
pub mod config;
/// Connecting to SQLite or PostgreSQL, and running migrations.
pub mod db;
/// Reading `.env` as python-dotenv does, so a Django-era file works unchanged.
pub mod dotenv;
/// sea-orm entities: the tables as data, no logic.
pub mod entities;
/// `AppError` and its stable codes, mapped once to GraphQL and to REST.
pub mod error;
/// Live roll-call events: in-process broadcast, bridged through PostgreSQL LISTEN/NOTIFY.
pub mod events;
/// The GraphQL API: schema, guards, loaders, objects, query and mutation roots.
pub mod graphql;
/// The ZKTeco push protocol (iclock) endpoints for face terminals; rules in `service::terminals`.
pub mod iclock;
/// Prometheus metrics: requests, GraphQL operations, scans, sessions, pool usage.
pub mod metrics;
/// The REST endpoints: the device scan shim, CSV exports, the OpenAPI document, probes.
pub mod rest;
/// The domain: every rule and transaction, shared by both transports.
pub mod service;
/// What every handler shares (`AppState`), whichever transport serves it.
pub mod state;
/// The wire formats of dates and times, shared by GraphQL and REST.
pub mod time;
