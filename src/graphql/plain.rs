//! Objects whose plain fields resolve inline, without a future per field.
//!
//! async-graphql resolves every field of every object as a boxed future polled through a
//! `FuturesUnordered`. A session page of 500 records with their students is about 4,500 of
//! them, and they cost far more than the data (`bench/RESULTS.md` has the profile). An
//! object that implements [`PlainObject`] (usually through
//! [`plain_fields!`](crate::plain_fields)) says which of its fields are
//! plain data (no I/O, no guard, no argument); [`Plain`] and [`PlainList`] resolve those in
//! one synchronous pass over the selection, and only the other fields (relations, guarded
//! fields) go through the object's async resolvers, concurrently as before. The wrappers
//! register as the type they wrap, so the schema does not change.
//!
//! Plain fields are not seen by extensions' `resolve` hooks; the schema installs none.

use std::borrow::Cow;

use async_graphql::futures_util::future::{BoxFuture, join_all};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field as FieldNode, Selection};
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerError,
    ServerResult, Value,
};
use chrono::{DateTime, Utc};

/// How one field of a [`PlainObject`] resolves.
pub enum Field<'a> {
    /// Plain data, already converted.
    Value(Value),
    /// A nested object, itself resolved the plain way.
    Object(&'a dyn PlainObject),
    /// Not plain: resolved by the object's async resolver (relations, guards, arguments).
    Async,
}

/// An object type whose plain fields resolve without futures.
pub trait PlainObject: Send + Sync {
    /// The GraphQL type name (for `__typename` and fragment conditions).
    fn object_type_name(&self) -> Cow<'static, str>;
    /// How the field named `name` resolves.
    fn plain(&self, name: &str) -> Field<'_>;
    /// Resolves a non-plain field through the object's derived resolver.
    fn resolve_async<'a>(
        &'a self,
        ctx: &'a Context<'a>,
    ) -> BoxFuture<'a, ServerResult<Option<Value>>>;
}

/// The conversion of a plain field's Rust value to its GraphQL value, the same one the
/// derived resolver makes.
pub trait IntoValue {
    /// The GraphQL value.
    fn into_value(self) -> Value;
}

macro_rules! scalar_into_value {
    ($($ty:ty),*) => {$(
        impl IntoValue for $ty {
            fn into_value(self) -> Value {
                ScalarType::to_value(&self)
            }
        }
    )*};
}
scalar_into_value!(
    async_graphql::ID,
    String,
    i32,
    bool,
    f64,
    super::scalars::Date
);

impl IntoValue for DateTime<Utc> {
    fn into_value(self) -> Value {
        Value::String(rfc3339(&self))
    }
}

/// A row id as an `ID`, formatted without the `fmt` machinery (a page of records has
/// three per row).
pub fn id(n: i32) -> async_graphql::ID {
    async_graphql::ID(itoa::Buffer::new().format(n).to_owned())
}

/// The text of `to_rfc3339()` (what the derived resolver answers), written directly for the
/// common case of a whole second in years 0 to 9999, such as a scan time.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    if at.nanosecond() != 0 || !(0..=9999).contains(&year) {
        return at.to_rfc3339();
    }
    let mut out = [0u8; 25];
    let mut put = |at: usize, value: u32, width: usize| {
        let mut value = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[i] = c;
    }
    out[19..].copy_from_slice(b"+00:00");
    out.iter().map(|&b| b as char).collect()
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::String(self.to_owned())
    }
}

impl IntoValue for &String {
    fn into_value(self) -> Value {
        Value::String(self.clone())
    }
}

impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Null, IntoValue::into_value)
    }
}

/// Implements [`PlainObject`] for a type whose `#[Object]` impl declares the same fields:
/// each listed field's value, converted as the derived resolver converts it. Any field not
/// listed (or for which `extra` answers [`Field::Async`]) goes through the derived resolver.
/// A test resolves every listed field both ways and compares them.
///
/// ```ignore
/// plain_fields! {
///     Course(this) {
///         "code" => &this.0.code,
///     }
///     extra(name) { Field::Async }   // optional: fields plain only sometimes
/// }
/// ```
#[macro_export]
macro_rules! plain_fields {
    (@extra $other:ident) => {{
        let _ = $other;
        $crate::graphql::plain::Field::Async
    }};
    (@extra $other:ident $extra_name:ident $extra:block) => {{
        let $extra_name = $other;
        $extra
    }};
    (
        $ty:ident ($this:ident) {
            $($name:literal => $value:expr,)*
        }
        $(extra ($extra_name:ident) $extra:block)?
    ) => {
        impl $crate::graphql::plain::PlainObject for $ty {
            fn object_type_name(&self) -> ::std::borrow::Cow<'static, str> {
                <Self as async_graphql::OutputType>::type_name()
            }

            fn plain(&self, name: &str) -> $crate::graphql::plain::Field<'_> {
                let $this = self;
                match name {
                    $(
                        $name => $crate::graphql::plain::Field::Value(
                            $crate::graphql::plain::IntoValue::into_value($value),
                        ),
                    )*
                    other => $crate::plain_fields!(@extra other $($extra_name $extra)?),
                }
            }

            fn resolve_async<'a>(
                &'a self,
                ctx: &'a async_graphql::Context<'a>,
            ) -> async_graphql::futures_util::future::BoxFuture<
                'a,
                async_graphql::ServerResult<Option<async_graphql::Value>>,
            > {
                Box::pin(<Self as async_graphql::ContainerType>::resolve_field(self, ctx))
            }
        }
    };
}

/// One object resolved the plain way; registered as `T`.
pub struct Plain<T>(pub T);

impl<T: OutputType + PlainObject> OutputType for Plain<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn qualified_type_name() -> String {
        T::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<FieldNode>,
    ) -> ServerResult<Value> {
        resolve_object(&self.0, ctx).await
    }
}

/// A list of objects resolved the plain way, in one pass; registered as `[T!]!`.
pub struct PlainList<T>(pub Vec<T>);

impl<T> FromIterator<T> for PlainList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<T: OutputType + PlainObject> OutputType for PlainList<T> {
    fn type_name() -> Cow<'static, str> {
        Vec::<T>::type_name()
    }

    fn qualified_type_name() -> String {
        Vec::<T>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Vec::<T>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<FieldNode>,
    ) -> ServerResult<Value> {
        let mut values = Vec::with_capacity(self.0.len());
        let mut waiting = Vec::new();
        // Every item is a `T`, so fragments select the same fields on each: expand them once.
        let mut fields = Vec::new();
        if let Some(first) = self.0.first() {
            selected(first, ctx, &mut fields)?;
        }
        for (idx, item) in self.0.iter().enumerate() {
            let ctx_item = ctx.with_index(idx);
            let mut out = IndexMap::with_capacity(fields.len());
            if collect_fields(item, &ctx_item, &fields, &mut out)? {
                values.push(into_object(out));
            } else {
                values.push(Value::Null);
                waiting.push(idx);
            }
        }
        if !waiting.is_empty() {
            // The items with async fields resolve concurrently, so a DataLoader sees all
            // their keys in one batch.
            let resolved = join_all(waiting.iter().map(|&idx| {
                let ctx = ctx.clone();
                let item = &self.0[idx];
                async move { resolve_mixed(item, &ctx.with_index(idx)).await }
            }))
            .await;
            for (idx, value) in waiting.into_iter().zip(resolved) {
                values[idx] = value?;
            }
        }
        Ok(Value::List(values))
    }
}

/// Resolves `object` against the selection set of `ctx`: in one synchronous pass when every
/// selected field is plain, otherwise with the async fields awaited concurrently.
pub async fn resolve_object(
    object: &dyn PlainObject,
    ctx: &ContextSelectionSet<'_>,
) -> ServerResult<Value> {
    let mut out = IndexMap::new();
    if collect_plain(object, ctx, &mut out)? {
        return Ok(into_object(out));
    }
    resolve_mixed(object, ctx).await
}

fn into_object(fields: IndexMap<Name, Value>) -> Value {
    // As async-graphql does: an object with no fields resolved is null.
    if fields.is_empty() {
        Value::Null
    } else {
        Value::Object(fields)
    }
}

/// The field nodes a selection set selects on `object`, with fragments expanded.
fn selected<'a>(
    object: &dyn PlainObject,
    ctx: &ContextSelectionSet<'a>,
    out: &mut Vec<&'a Positioned<FieldNode>>,
) -> ServerResult<()> {
    for selection in &ctx.item.node.items {
        let (condition, selection_set) = match &selection.node {
            Selection::Field(field) => {
                out.push(field);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let fragment = ctx.query_env.fragments.get(name).ok_or_else(|| {
                    ServerError::new(format!(r#"Unknown fragment "{name}"."#), Some(spread.pos))
                })?;
                (
                    Some(&fragment.node.type_condition),
                    &fragment.node.selection_set,
                )
            }
            Selection::InlineFragment(fragment) => (
                fragment.node.type_condition.as_ref(),
                &fragment.node.selection_set,
            ),
        };
        let applies = condition.is_none_or(|condition| {
            let condition = condition.node.on.node.as_str();
            let type_name = object.object_type_name();
            type_name == condition
                || ctx
                    .schema_env
                    .registry
                    .implements
                    .get(type_name.as_ref())
                    .is_some_and(|interfaces| interfaces.contains(condition))
        });
        if applies {
            selected(object, &ctx.with_selection_set(selection_set), out)?;
        }
    }
    Ok(())
}

/// Fills `out` when every selected field is plain (nested plain objects included) and says
/// whether it could.
fn collect_plain(
    object: &dyn PlainObject,
    ctx: &ContextSelectionSet<'_>,
    out: &mut IndexMap<Name, Value>,
) -> ServerResult<bool> {
    let items = &ctx.item.node.items;
    // Without fragments (a nested object's usual selection) the fields are the items.
    if items
        .iter()
        .all(|item| matches!(item.node, Selection::Field(_)))
    {
        out.reserve(items.len());
        for item in items {
            if let Selection::Field(field) = &item.node
                && !collect_field(object, ctx, field, out)?
            {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let mut fields = Vec::new();
    selected(object, ctx, &mut fields)?;
    out.reserve(fields.len());
    collect_fields(object, ctx, &fields, out)
}

/// How one selected field of `object` resolves: `__typename` is its name, a field carrying
/// a directive goes through the derived resolver (which applies it), and any other asks
/// the object.
fn classify<'a>(object: &'a dyn PlainObject, field: &Positioned<FieldNode>) -> Field<'a> {
    let name = field.node.name.node.as_str();
    if name == "__typename" {
        Field::Value(Value::String(object.object_type_name().into_owned()))
    } else if !field.node.directives.is_empty() {
        Field::Async
    } else {
        object.plain(name)
    }
}

/// [`collect_plain`] over fields already selected.
fn collect_fields(
    object: &dyn PlainObject,
    ctx: &ContextSelectionSet<'_>,
    fields: &[&Positioned<FieldNode>],
    out: &mut IndexMap<Name, Value>,
) -> ServerResult<bool> {
    for &field in fields {
        if !collect_field(object, ctx, field, out)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Adds one field's value when it is plain, and says whether it was.
fn collect_field(
    object: &dyn PlainObject,
    ctx: &ContextSelectionSet<'_>,
    field: &Positioned<FieldNode>,
    out: &mut IndexMap<Name, Value>,
) -> ServerResult<bool> {
    let key = field.node.response_key().node.clone();
    match classify(object, field) {
        Field::Value(value) => {
            out.entry(key).or_insert(value);
        }
        Field::Object(nested) => {
            let ctx_field = ctx.with_field(field);
            let mut nested_fields = IndexMap::new();
            if !collect_plain(
                nested,
                &ctx_field.with_selection_set(&field.node.selection_set),
                &mut nested_fields,
            )? {
                return Ok(false);
            }
            merge(out, key, into_object(nested_fields));
        }
        Field::Async => return Ok(false),
    }
    Ok(true)
}

/// Resolves an object some of whose selected fields are not plain: plain ones inline, the
/// rest (and nested objects) concurrently. Field errors are reported and the field left
/// out, as async-graphql's own containers do.
fn resolve_mixed<'a>(
    object: &'a dyn PlainObject,
    ctx: &ContextSelectionSet<'a>,
) -> BoxFuture<'a, ServerResult<Value>> {
    let ctx = ctx.clone();
    Box::pin(async move {
        let mut fields = Vec::new();
        selected(object, &ctx, &mut fields)?;
        // Each key in selection order, with its value now or `None` for the next of
        // `waiting`, which resolve concurrently.
        let mut slots: Vec<(Name, Option<ServerResult<Value>>)> = Vec::with_capacity(fields.len());
        let mut waiting: Vec<BoxFuture<'_, ServerResult<Value>>> = Vec::new();
        for field in fields {
            let key = field.node.response_key().node.clone();
            let ctx = ctx.clone();
            match classify(object, field) {
                Field::Value(value) => {
                    slots.push((key, Some(Ok(value))));
                    continue;
                }
                Field::Object(nested) => waiting.push(Box::pin(async move {
                    let ctx_field = ctx.with_field(field);
                    resolve_object(
                        nested,
                        &ctx_field.with_selection_set(&field.node.selection_set),
                    )
                    .await
                })),
                Field::Async => waiting.push(Box::pin(async move {
                    let ctx_field = ctx.with_field(field);
                    Ok(object.resolve_async(&ctx_field).await?.unwrap_or_default())
                })),
            }
            slots.push((key, None));
        }
        let mut resolved = join_all(waiting).await.into_iter();
        let mut out = IndexMap::with_capacity(slots.len());
        for (key, value) in slots {
            match value.or_else(|| resolved.next()) {
                Some(Ok(value)) => merge(&mut out, key, value),
                Some(Err(error)) => ctx.add_error(error),
                None => {}
            }
        }
        Ok(into_object(out))
    })
}

/// Inserts a field's value, merging objects selected twice under one key, as async-graphql
/// does.
fn merge(target: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    match target.get_mut(&key) {
        None => {
            target.insert(key, value);
        }
        Some(Value::Object(existing)) => {
            if let Value::Object(more) = value {
                for (key, value) in more {
                    merge(existing, key, value);
                }
            }
        }
        Some(Value::List(existing)) => {
            if let Value::List(more) = value {
                for (item, value) in existing.iter_mut().zip(more) {
                    if let (Value::Object(item), Value::Object(more)) = (item, value) {
                        for (key, value) in more {
                            merge(item, key, value);
                        }
                    }
                }
            }
        }
        Some(_) => {}
    }
}
