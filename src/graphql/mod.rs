//! The GraphQL API: schema, guards, loaders, objects and the two roots.

pub mod guard;
pub mod loaders;
pub mod mutation;
pub mod objects;
pub mod query;
pub mod scalars;
pub mod subscription;

use async_graphql::Schema;

use crate::service::Service;

/// The schema type served at `/graphql`.
pub type AppSchema =
    Schema<query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot>;

/// Builds the schema with the services every resolver reaches through its context.
pub fn build_schema(service: Service) -> AppSchema {
    Schema::build(
        query::QueryRoot,
        mutation::MutationRoot,
        subscription::SubscriptionRoot,
    )
    .data(service)
    .finish()
}

/// The SDL of the schema, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        query::QueryRoot,
        mutation::MutationRoot,
        subscription::SubscriptionRoot,
    )
    .finish()
    .sdl()
}
