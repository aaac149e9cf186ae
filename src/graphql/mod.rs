//! The GraphQL API: schema, guards, loaders, objects, and the roots merged from one object
//! per domain.

pub mod guard;
pub mod loaders;
pub mod mutation;
pub mod objects;
pub mod query;
pub mod roster;
pub mod scalars;
pub mod subscription;
pub mod terminals;

use async_graphql::{MergedObject, Schema};

use crate::service::Service;

/// Every read of the API: one object per domain, merged.
#[derive(MergedObject, Default)]
#[graphql(name = "QueryRoot")]
pub struct QueryRoot(
    query::CoreQuery,
    roster::RosterQuery,
    terminals::TerminalQuery,
);

/// Every change the API can make: one object per domain, merged.
#[derive(MergedObject, Default)]
#[graphql(name = "MutationRoot")]
pub struct MutationRoot(
    mutation::CoreMutation,
    roster::RosterMutation,
    terminals::TerminalMutation,
);

/// The schema type served at `/graphql`.
pub type AppSchema = Schema<QueryRoot, MutationRoot, subscription::SubscriptionRoot>;

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

/// The schema for introspection queries: the standard introspection query nests type
/// references deeper than any data query may, so it runs without the depth and complexity
/// limits. Only documents that select nothing but `__schema`, `__type` and `__typename`
/// reach it, and only from callers allowed to introspect.
pub fn build_introspection_schema(service: Service) -> AppSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscription::SubscriptionRoot,
    )
    .limit_recursive_depth(64)
    .disable_suggestions()
    .data(service)
    .finish()
}

/// True when every operation of `query` is a query selecting only introspection fields.
pub fn is_introspection_only(query: &str) -> bool {
    use async_graphql::parser::parse_query;
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(document) = parse_query(query) else {
        return false;
    };
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values().collect(),
    };
    !operations.is_empty()
        && operations.iter().all(|op| {
            op.node.ty == OperationType::Query
                && introspective(&op.node.selection_set.node, &document, 0)
        })
}

fn introspective(
    set: &async_graphql::parser::types::SelectionSet,
    document: &async_graphql::parser::types::ExecutableDocument,
    depth: usize,
) -> bool {
    use async_graphql::parser::types::Selection;
    depth < 8
        && set.items.iter().all(|item| match &item.node {
            Selection::Field(field) => field.node.name.node.starts_with("__"),
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(&spread.node.fragment_name.node)
                .is_some_and(|f| introspective(&f.node.selection_set.node, document, depth + 1)),
            Selection::InlineFragment(inline) => {
                introspective(&inline.node.selection_set.node, document, depth + 1)
            }
        })
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
