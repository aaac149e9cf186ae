//! Running a GraphQL request, the same way on every transport (HTTP and WebSocket): who may
//! introspect, which limits a document meets, and the code every error carries.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Request, Response, ServerError};
use futures_util::stream::{self, BoxStream, StreamExt};

use super::document::{Measured, measure};
use super::guard::Auth;
use super::{AppSchema, build_introspection_schema, build_schema};
use crate::error::{AppError, ErrorCode, Reason};
use crate::service::Service;

/// The deepest introspection document accepted: GraphiQL's schema query nests type
/// references to depth 15.
pub const INTROSPECTION_MAX_DEPTH: usize = 16;
/// The most complex introspection document accepted: GraphiQL's schema query costs 229, so
/// this admits it (and tools that ask a little more) while one request stays a few hundred
/// kilobytes at worst.
pub const INTROSPECTION_MAX_COMPLEXITY: usize = 400;

/// The two schemas a request may run on, and the rules that pick one.
#[derive(Clone)]
pub struct GraphqlExecutor {
    data: AppSchema,
    introspection: AppSchema,
    debug: bool,
}

/// Where a request goes: to a schema, or straight back refused.
pub enum Route<'a> {
    /// Run `Request` on the schema.
    Run(Request, &'a AppSchema, Checked),
    /// The document breaks a rule checked before parsing it for execution.
    Refused(Response),
}

/// What the checks before execution learned about a document that runs.
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    /// No selection repeats a response key, so plain lists may be written straight to JSON
    /// ([`RawLists`](super::plain::RawLists)).
    pub unique_keys: bool,
}

/// What the root selections of a document ask for.
#[derive(Debug, PartialEq, Eq)]
enum DocumentKind {
    /// Data fields (possibly with `__typename`): the data schema's limits apply.
    Data,
    /// Only introspection fields, with at most one `__schema` per operation.
    Introspection,
    /// Anything that mixes introspection with data, or repeats `__schema`.
    Refused(&'static str),
}

impl GraphqlExecutor {
    /// Both schemas over `service`.
    pub fn new(service: Service) -> Self {
        Self {
            debug: service.config.debug,
            data: build_schema(service.clone()),
            introspection: build_introspection_schema(service),
        }
    }

    /// The schema for data queries (subscriptions' and tests' direct use).
    pub fn schema(&self) -> &AppSchema {
        &self.data
    }

    /// Introspection (which GraphiQL needs) for admins, and for everyone in development.
    fn may_introspect(&self, auth: &Auth) -> bool {
        self.debug || matches!(auth, Auth::Principal(p) if p.is_admin())
    }

    /// Applies the introspection rules to `request` for a caller authenticated as `auth` and
    /// picks the schema it runs on; a document that breaks them is answered at once.
    pub fn prepare(&self, mut request: Request, auth: &Auth) -> Route<'_> {
        // Parsed once: the engine executes the document cached here. A syntax error is left
        // for the engine to report, with its code, on the data schema.
        let (kind, checked) = match request.parsed_query() {
            Ok(document) => match measure(document) {
                Ok(measured) => (
                    classify(&measured),
                    Checked {
                        unique_keys: !measured.repeats_a_key(),
                    },
                ),
                // Before the engine's validation, which would expand every spread.
                Err(refusal) => return Route::Refused(refusal_response(refusal.message())),
            },
            Err(_) => (DocumentKind::Data, Checked { unique_keys: false }),
        };
        match kind {
            DocumentKind::Refused(message) => Route::Refused(refusal_response(message.into())),
            _ if !self.may_introspect(auth) => {
                Route::Run(request.disable_introspection(), &self.data, checked)
            }
            DocumentKind::Introspection => Route::Run(request, &self.introspection, checked),
            DocumentKind::Data => Route::Run(request, &self.data, checked),
        }
    }
}

/// Runs subscriptions (and any other operation sent over the socket) by the HTTP rules,
/// with the caller found in the connection's data.
impl async_graphql::Executor for GraphqlExecutor {
    async fn execute(&self, request: Request) -> Response {
        match self.prepare(request, &Auth::Anonymous) {
            Route::Run(request, schema, _) => with_codes(schema.execute(request).await),
            Route::Refused(refused) => refused,
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let auth = session_data
            .as_ref()
            .and_then(|data| data.get(&std::any::TypeId::of::<Auth>()))
            .and_then(|auth| auth.downcast_ref::<Auth>())
            .cloned()
            .unwrap_or(Auth::Anonymous);
        match self.prepare(request, &auth) {
            Route::Run(request, schema, _) => schema
                .execute_stream_with_session_data(request, session_data.unwrap_or_default())
                .map(with_codes)
                .boxed(),
            Route::Refused(refused) => stream::once(async move { refused }).boxed(),
        }
    }
}

/// Parse, validation and limit errors come from the GraphQL engine without a code; they are
/// all the request's fault, so every error a client sees carries one.
pub fn with_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
    response
}

fn refusal_response(message: String) -> Response {
    let error = AppError::rejected(Reason::QueryLimit, message).into_graphql();
    // The whole document is at fault, so the error points at no location in it.
    let mut refused = ServerError::new(error.message, None);
    refused.extensions = error.extensions;
    Response::from_errors(vec![refused])
}

/// Sorts a document by its root selections. Introspection runs on a schema with limits of
/// its own, so a document may not smuggle data fields in with it (or the reverse), and
/// `__schema` cannot be repeated under aliases: one copy is all any client needs.
fn classify(document: &Measured<'_>) -> DocumentKind {
    let mut any_data = false;
    let mut any_introspection = false;
    for (op, fields) in document.roots() {
        let roots: Vec<&str> = fields
            .iter()
            .map(|field| field.node.name.node.as_str())
            .collect();
        let schemas = roots.iter().filter(|name| **name == "__schema").count();
        if schemas > 1 {
            return DocumentKind::Refused("an operation may select __schema only once");
        }
        let introspective = roots
            .iter()
            .any(|name| matches!(*name, "__schema" | "__type"));
        let data =
            op.ty != OperationType::Query || roots.iter().any(|name| !name.starts_with("__"));
        if introspective && data {
            return DocumentKind::Refused(
                "introspection (__schema, __type) must be sent on its own, without data fields",
            );
        }
        any_data |= data;
        any_introspection |= !data;
    }
    if any_introspection && !any_data {
        DocumentKind::Introspection
    } else {
        DocumentKind::Data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(query: &str) -> DocumentKind {
        match async_graphql::parser::parse_query(query) {
            Ok(document) => super::classify(&measure(&document).expect("measurable")),
            Err(_) => DocumentKind::Data,
        }
    }

    #[test]
    fn documents_are_sorted_by_their_root_fields() {
        assert_eq!(classify("{ students { totalCount } }"), DocumentKind::Data);
        assert_eq!(
            classify("{ __typename students { totalCount } }"),
            DocumentKind::Data
        );
        assert_eq!(
            classify("{ __schema { queryType { name } } }"),
            DocumentKind::Introspection
        );
        assert_eq!(
            classify("query Q { ...F } fragment F on QueryRoot { __type(name: \"X\") { name } }"),
            DocumentKind::Introspection
        );
        assert!(matches!(
            classify("{ __schema { types { name } } students { totalCount } }"),
            DocumentKind::Refused(_)
        ));
        assert!(matches!(
            classify("{ a: __schema { types { name } } b: __schema { types { name } } }"),
            DocumentKind::Refused(_)
        ));
        assert!(matches!(
            classify("mutation { __schema { types { name } } }"),
            DocumentKind::Refused(_)
        ));
        assert_eq!(classify("{ not closed"), DocumentKind::Data);
    }
}
