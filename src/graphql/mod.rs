//! The GraphQL API: schema, guards, loaders, objects, and the roots merged from one object
//! per domain.

pub mod document;
pub mod excuses;
pub mod execute;
pub mod guard;
pub mod http;
pub mod lifecycle;
pub mod loaders;
pub mod mutation;
pub mod objects;
pub mod plain;
#[cfg(test)]
mod plain_tests;
pub mod query;
pub mod roster;
pub mod scalars;
pub mod subscription;
pub mod terminals;
pub mod timetable;
pub mod warnings;
pub mod webhooks;

use async_graphql::dataloader::Loader;
use async_graphql::{MergedObject, Schema};

use crate::service::Service;

/// Every read of the API: one object per domain, merged.
#[derive(MergedObject, Default)]
#[graphql(name = "QueryRoot")]
pub struct QueryRoot(
    query::CoreQuery,
    lifecycle::LifecycleQuery,
    excuses::ExcuseQuery,
    roster::RosterQuery,
    terminals::TerminalQuery,
    timetable::TimetableQuery,
    warnings::WarningQuery,
    webhooks::WebhookQuery,
);

/// Every change the API can make: one object per domain, merged.
#[derive(MergedObject, Default)]
#[graphql(name = "MutationRoot")]
pub struct MutationRoot(
    mutation::CoreMutation,
    lifecycle::LifecycleMutation,
    excuses::ExcuseMutation,
    roster::RosterMutation,
    terminals::TerminalMutation,
    timetable::TimetableMutation,
    warnings::WarningMutation,
    webhooks::WebhookMutation,
);

/// The schema type served at `/graphql`.
pub type AppSchema = Schema<QueryRoot, MutationRoot, subscription::SubscriptionRoot>;

/// The services, from a resolver's context (the schema always carries them).
pub(crate) fn service<'a>(ctx: &async_graphql::Context<'a>) -> &'a Service {
    ctx.data_unchecked::<Service>()
}

/// The row `key` names, through the request's loader; it must exist (a foreign key points
/// at it), so a missing one is an internal fault naming `what`.
pub(crate) async fn required<K>(
    ctx: &async_graphql::Context<'_>,
    key: K,
    what: &'static str,
) -> async_graphql::Result<<loaders::Db as Loader<K>>::Value>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    loaders::Db: Loader<K, Error = async_graphql::Error>,
{
    objects::loader(ctx).load_one(key).await?.ok_or_else(|| {
        crate::error::AppError::Internal(format!("dangling reference to a {what}")).into_graphql()
    })
}

/// Parses an `ID` argument that must be a row id, naming `field` when it is not.
pub(crate) fn id_arg(field: &str, id: &async_graphql::ID) -> async_graphql::Result<i32> {
    use crate::error::GqlResultExt;
    crate::service::parse_id(field, id).gql()
}

/// The deepest selection accepted (a session page needs 5).
pub const MAX_DEPTH: usize = 10;
/// The most complex query accepted. A teacher's session page costs about 1,000 and a default
/// page of courses with their sections' students about 16,000.
pub const MAX_COMPLEXITY: usize = 20_000;

/// Builds the schema with the services every resolver reaches through its context. Depth,
/// complexity and parser recursion are limited before execution; field suggestions ("did
/// you mean") are off so the schema cannot be mapped by probing.
pub fn build_schema(service: Service) -> AppSchema {
    limits(Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscription::SubscriptionRoot,
    ))
    .data(service)
    .finish()
}

fn limits(
    builder: async_graphql::SchemaBuilder<QueryRoot, MutationRoot, subscription::SubscriptionRoot>,
) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, subscription::SubscriptionRoot> {
    builder
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .disable_suggestions()
}

/// The schema for documents made only of introspection fields: the standard introspection
/// query nests type references deeper than any data query may, so introspection has depth
/// and complexity limits of its own (see [`execute`] for who reaches it, and how).
pub fn build_introspection_schema(service: Service) -> AppSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscription::SubscriptionRoot,
    )
    .limit_depth(execute::INTROSPECTION_MAX_DEPTH)
    .limit_complexity(execute::INTROSPECTION_MAX_COMPLEXITY)
    .limit_recursive_depth(64)
    .limit_directives(8)
    .disable_suggestions()
    .data(service)
    .finish()
}

/// The complexity and depth of `query` as the limits see them (for tests and tuning).
pub async fn analyze(query: &str) -> (usize, usize) {
    let schema = limits(Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscription::SubscriptionRoot,
    ))
    .limit_complexity(usize::MAX)
    .limit_depth(usize::MAX)
    .extension(async_graphql::extensions::Analyzer)
    .finish();
    let response = schema.execute(query).await;
    let analyzer = response
        .extensions
        .get("analyzer")
        .and_then(|v| v.clone().into_json().ok())
        .unwrap_or_default();
    (
        analyzer["complexity"].as_u64().unwrap_or_default() as usize,
        analyzer["depth"].as_u64().unwrap_or_default() as usize,
    )
}

/// The SDL of the schema, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscription::SubscriptionRoot,
    )
    .finish()
    .sdl()
}
