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
//! Over HTTP a plain list goes one step further: when every selected field of its items is
//! plain, its JSON is written straight from the rows and spliced into the answer
//! ([`RawLists`]), so no value tree is built for it at all.
//!
//! Plain fields are not seen by extensions' `resolve` hooks; the schema installs none.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::futures_util::future::{BoxFuture, join_all};
use async_graphql::indexmap::IndexMap;

use async_graphql::parser::types::{ExecutableDocument, Field as FieldNode, Selection};
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, Response, ScalarType, ServerError,
    ServerResult, Value,
};
use chrono::{DateTime, Utc};

use super::document::measure;

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
    /// Appends the JSON of the field named `name` to `out` when it is plain data (answering
    /// [`Field::Value`] with `Value::Null`), or says what else it is.
    fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> serde_json::Result<Field<'_>>;
    /// Resolves a non-plain field through the object's derived resolver.
    fn resolve_async<'a>(
        &'a self,
        ctx: &'a Context<'a>,
    ) -> BoxFuture<'a, ServerResult<Option<Value>>>;
}

/// The conversion of a plain field's Rust value to its GraphQL value, the same one the
/// derived resolver makes, and to the JSON text that value serializes to.
pub trait IntoValue: Sized {
    /// The GraphQL value.
    fn into_value(self) -> Value;

    /// Appends the JSON of [`into_value`](IntoValue::into_value) to `out`; the common types
    /// write it without building the value.
    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &self.into_value())
    }
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
scalar_into_value!(f64, super::scalars::Date);

impl IntoValue for async_graphql::ID {
    fn into_value(self) -> Value {
        Value::String(self.0)
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self.as_str())
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::String(self)
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &self)
    }
}

impl IntoValue for i32 {
    fn into_value(self) -> Value {
        Value::Number(self.into())
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(itoa::Buffer::new().format(self).as_bytes());
        Ok(())
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Boolean(self)
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(if self { b"true" } else { b"false" });
        Ok(())
    }
}

impl IntoValue for DateTime<Utc> {
    fn into_value(self) -> Value {
        Value::String(rfc3339(&self))
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match whole_second_rfc3339(&self) {
            Some(text) => {
                out.push(b'"');
                out.extend_from_slice(&text);
                out.push(b'"');
                Ok(())
            }
            None => serde_json::to_writer(out, &self.to_rfc3339()),
        }
    }
}

/// A row id, answered as an `ID`: formatted without the `fmt` machinery (a page of records
/// has three per row), and written to JSON without a string of its own.
pub struct RowId(pub i32);

/// The row id `n` as an `ID`.
pub fn id(n: i32) -> RowId {
    RowId(n)
}

impl IntoValue for RowId {
    fn into_value(self) -> Value {
        Value::String(itoa::Buffer::new().format(self.0).to_owned())
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'"');
        out.extend_from_slice(itoa::Buffer::new().format(self.0).as_bytes());
        out.push(b'"');
        Ok(())
    }
}

/// The text of `to_rfc3339()` (what the derived resolver answers), written directly for the
/// common case of a whole second in years 0 to 9999, such as a scan time.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    match whole_second_rfc3339(at) {
        Some(text) => text.iter().map(|&b| b as char).collect(),
        None => at.to_rfc3339(),
    }
}

/// `to_rfc3339()`'s ASCII text for a whole second in years 0 to 9999; `None` otherwise.
fn whole_second_rfc3339(at: &DateTime<Utc>) -> Option<[u8; 25]> {
    use chrono::{Datelike, Timelike};
    let year = at.year();
    if at.nanosecond() != 0 || !(0..=9999).contains(&year) {
        return None;
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
    Some(out)
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::String(self.to_owned())
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

impl IntoValue for &String {
    fn into_value(self) -> Value {
        Value::String(self.clone())
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self.as_str())
    }
}

impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Null, IntoValue::into_value)
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Some(value) => value.write_json(out),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
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

            fn write_plain(
                &self,
                name: &str,
                out: &mut ::std::vec::Vec<u8>,
            ) -> serde_json::Result<$crate::graphql::plain::Field<'_>> {
                let $this = self;
                match name {
                    $(
                        $name => {
                            $crate::graphql::plain::IntoValue::write_json($value, out)?;
                            Ok($crate::graphql::plain::Field::Value(async_graphql::Value::Null))
                        }
                    )*
                    other => $crate::graphql::plain::write_field(
                        $crate::plain_fields!(@extra other $($extra_name $extra)?),
                        out,
                    ),
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
        // Every item is a `T`, so fragments select the same fields on each: expand them once.
        let mut fields = Vec::new();
        if let Some(first) = self.0.first() {
            selected(first, ctx, &mut fields)?;
        }
        if let Some(raw) = ctx.data_opt::<Arc<RawLists>>()
            && let Some(json) = write_list(&self.0, ctx, &fields)?
        {
            return Ok(raw.stash(json));
        }
        let mut values = Vec::with_capacity(self.0.len());
        let mut waiting = Vec::new();
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

/// A [`Field`] an `extra` block answered, with a plain value written to `out`.
pub fn write_field<'a>(field: Field<'a>, out: &mut Vec<u8>) -> serde_json::Result<Field<'a>> {
    match field {
        Field::Value(value) => {
            serde_json::to_writer(out, &value)?;
            Ok(Field::Value(Value::Null))
        }
        other => Ok(other),
    }
}

/// Plain lists' JSON, written straight from their rows for one HTTP request: the list's
/// value in the answer is a marker string, and [`RawLists::write_response`] writes the
/// stashed JSON in its place. A page of 500 records then builds no value tree (4,500
/// values, 1,000 maps) only to serialize and drop it (`bench/RESULTS.md`).
///
/// The engine merges the values of a field selected twice under one response key; a marker
/// cannot be merged, so [`RawLists::for_document`] enables this only for documents that
/// repeat no key.
pub struct RawLists {
    /// The markers' prefix, random per request, so that no stored text can pass for one.
    prefix: String,
    parts: Mutex<Vec<Vec<u8>>>,
}

impl RawLists {
    /// For a request running `document`, unless it is refused by [`measure`] or one of its
    /// selections repeats a response key (directly or through fragments).
    pub fn for_document(document: &ExecutableDocument) -> Option<Arc<Self>> {
        let measured = measure(document).ok()?;
        (!measured.repeats_a_key()).then(Self::new)
    }

    /// For a request whose document repeats no response key ([`Checked`]'s
    /// `unique_keys`).
    ///
    /// [`Checked`]: super::execute::Checked
    pub fn new() -> Arc<Self> {
        let nonce: u128 = rand::random();
        Arc::new(Self {
            prefix: format!("\u{0}raw-json-{nonce:032x}-"),
            parts: Mutex::new(Vec::new()),
        })
    }

    /// Keeps a list's JSON; answers the marker that stands for it.
    fn stash(&self, json: Vec<u8>) -> Value {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let marker = format!("{}{}", self.prefix, parts.len());
        parts.push(json);
        Value::String(marker)
    }

    /// The JSON of `response`, exactly as serde writes it, with every stashed list in place
    /// of its marker.
    pub fn write_response(&self, response: &Response) -> serde_json::Result<Vec<u8>> {
        let parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(PoisonError::into_inner));
        let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 512);
        out.extend_from_slice(b"{\"data\":");
        self.write_value(&response.data, &parts, &mut out)?;
        if !response.extensions.is_empty() {
            out.extend_from_slice(b",\"extensions\":");
            serde_json::to_writer(&mut out, &response.extensions)?;
        }
        if !response.errors.is_empty() {
            out.extend_from_slice(b",\"errors\":");
            serde_json::to_writer(&mut out, &response.errors)?;
        }
        out.push(b'}');
        Ok(out)
    }

    fn write_value(
        &self,
        value: &Value,
        parts: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        match value {
            Value::Object(fields) => {
                out.push(b'{');
                for (n, (key, value)) in fields.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key.as_str())?;
                    out.push(b':');
                    self.write_value(value, parts, out)?;
                }
                out.push(b'}');
            }
            Value::List(items) => {
                out.push(b'[');
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    self.write_value(item, parts, out)?;
                }
                out.push(b']');
            }
            Value::String(text) => match self.part(text, parts) {
                Some(json) => out.extend_from_slice(json),
                None => serde_json::to_writer(out, text)?,
            },
            other => serde_json::to_writer(out, other)?,
        }
        Ok(())
    }

    fn part<'p>(&self, text: &str, parts: &'p [Vec<u8>]) -> Option<&'p Vec<u8>> {
        let index: usize = text.strip_prefix(self.prefix.as_str())?.parse().ok()?;
        parts.get(index)
    }
}

/// One selected field, planned once for a whole list.
struct Step<'a> {
    key: &'a str,
    name: &'a str,
    kind: StepKind<'a>,
}

/// What a [`Step`] writes.
enum StepKind<'a> {
    /// The object's type name.
    TypeName,
    /// A plain value.
    Value,
    /// A nested plain object, by the plan made on the first item's.
    Object(Vec<Step<'a>>),
}

/// The plan for writing an object's `fields`, from `object` (a list's first item); `None`
/// when one of them is not plain.
fn plan<'a>(
    object: &dyn PlainObject,
    ctx: &ContextSelectionSet<'a>,
    fields: &[&'a Positioned<FieldNode>],
) -> ServerResult<Option<Vec<Step<'a>>>> {
    let mut steps = Vec::with_capacity(fields.len());
    for &field in fields {
        let name = field.node.name.node.as_str();
        let kind = match classify(object, field) {
            Field::Value(_) if name == "__typename" => StepKind::TypeName,
            Field::Value(_) => StepKind::Value,
            Field::Object(inner) => {
                // Only the fragments and the registry are read here, so the context
                // need not carry the field's path.
                let ctx_inner = ctx.with_selection_set(&field.node.selection_set);
                let mut inner_fields = Vec::new();
                selected(inner, &ctx_inner, &mut inner_fields)?;
                match plan(inner, &ctx_inner, &inner_fields)? {
                    Some(steps) => StepKind::Object(steps),
                    None => return Ok(None),
                }
            }
            Field::Async => return Ok(None),
        };
        steps.push(Step {
            key: field.node.response_key().node.as_str(),
            name,
            kind,
        });
    }
    Ok(Some(steps))
}

/// The JSON of a list of plain objects, or `None` when an item has a field that is not
/// plain (the list then resolves the usual way).
fn write_list<T: PlainObject>(
    items: &[T],
    ctx: &ContextSelectionSet<'_>,
    fields: &[&Positioned<FieldNode>],
) -> ServerResult<Option<Vec<u8>>> {
    let Some(first) = items.first() else {
        return Ok(Some(b"[]".to_vec()));
    };
    let Some(steps) = plan(first, ctx, fields)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(items.len() * 160 + 2);
    out.push(b'[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        match write_object(item, &steps, &mut out) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(error) => return Err(ServerError::new(error.to_string(), None)),
        }
    }
    out.push(b']');
    Ok(Some(out))
}

/// Writes `object` by `steps`; false when a field the plan found plain is not on this
/// object.
fn write_object(
    object: &dyn PlainObject,
    steps: &[Step<'_>],
    out: &mut Vec<u8>,
) -> serde_json::Result<bool> {
    // As async-graphql does: an object with no fields resolved is null.
    if steps.is_empty() {
        out.extend_from_slice(b"null");
        return Ok(true);
    }
    out.push(b'{');
    for (n, step) in steps.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, step.key)?;
        out.push(b':');
        let written = match &step.kind {
            StepKind::TypeName => {
                serde_json::to_writer(&mut *out, object.object_type_name().as_ref())?;
                true
            }
            StepKind::Value => matches!(object.write_plain(step.name, out)?, Field::Value(_)),
            StepKind::Object(nested) => match object.write_plain(step.name, out)? {
                Field::Object(inner) => write_object(inner, nested, out)?,
                _ => false,
            },
        };
        if !written {
            return Ok(false);
        }
    }
    out.push(b'}');
    Ok(true)
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
