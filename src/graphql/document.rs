//! The one measure of a document taken before anything else reads it.
//!
//! A fragment may be spread many times, so a document of a few kilobytes can stand for an
//! exponential number of selections (`fragment F1 { a: x { ...F2 } b: x { ...F2 } }`, and
//! so on down a chain). The engine's validation (complexity, depth, cache control) expands
//! every spread inline, synchronously, before any limit is checked, and so would any walk
//! of ours. [`measure`] therefore sizes the document first, in time linear in its text:
//! each fragment is sized once and remembered. A document whose expansion exceeds
//! [`MAX_SELECTIONS`], whose fragments spread themselves, or nest deeper than
//! [`MAX_NESTING`], is refused before the engine sees it. Every later walk, here or in the
//! engine, is then bounded by the measured size; the walks below also count their steps
//! against it, so a caller that skipped the measure still cannot run away.

use std::collections::{HashMap, HashSet};

use async_graphql::Positioned;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
};

/// The most selections a document may stand for once every fragment spread is expanded,
/// counted over its operations and its fragment definitions (the engine expands both).
/// GraphiQL's schema query expands to about 300 and a teacher's session page to about 20.
pub const MAX_SELECTIONS: usize = 10_000;

/// The deepest nesting of fields and fragment spreads accepted; the data schema allows a
/// depth of 10 fields and introspection 16, so this is only ever reached by a crafted chain.
pub const MAX_NESTING: usize = 64;

/// Why a document was refused before execution.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its expansion stands for more than [`MAX_SELECTIONS`] selections.
    TooLarge,
    /// A fragment spreads itself, directly or through others.
    Cycle(String),
    /// Fields and fragments nest deeper than [`MAX_NESTING`].
    TooDeep,
}

impl Refusal {
    /// The message the client reads.
    pub fn message(&self) -> String {
        match self {
            Self::TooLarge => format!(
                "the document selects more than {MAX_SELECTIONS} fields once its fragments \
                 are expanded"
            ),
            Self::Cycle(name) => format!("fragment \"{name}\" spreads itself"),
            Self::TooDeep => {
                format!("fields and fragments nest deeper than {MAX_NESTING} levels")
            }
        }
    }
}

/// A document known to expand to at most [`MAX_SELECTIONS`] selections, with the facts
/// the checks before execution need.
pub struct Measured<'a> {
    document: &'a ExecutableDocument,
    /// Selections the document stands for, fragments expanded.
    pub selections: usize,
}

/// Sizes `document` with each fragment sized once; refuses it when it is too large, too
/// deep or cyclic.
pub fn measure(document: &ExecutableDocument) -> Result<Measured<'_>, Refusal> {
    measure_counting(document).0
}

/// [`measure`], with the number of items it looked at: each item of the document at most
/// once, however often its fragment is spread.
fn measure_counting(document: &ExecutableDocument) -> (Result<Measured<'_>, Refusal>, usize) {
    let mut sizer = Sizer {
        document,
        fragments: HashMap::new(),
        steps: 0,
    };
    let result = sizer.document().map(|selections| Measured {
        document,
        selections,
    });
    (result, sizer.steps)
}

/// What a selection set stands for once expanded.
#[derive(Clone, Copy, Default)]
struct Size {
    /// Fields, inline fragments and spreads.
    selections: usize,
    /// The deepest nesting of fields and spreads below it.
    height: usize,
}

/// A fragment while it is being measured, and once it is.
#[derive(Clone, Copy)]
enum Fragment {
    Measuring,
    Measured(Size),
}

struct Sizer<'a> {
    document: &'a ExecutableDocument,
    fragments: HashMap<&'a str, Fragment>,
    steps: usize,
}

impl<'a> Sizer<'a> {
    /// The selections of the whole document: its operations and its fragment definitions,
    /// which the engine's validation expands each on its own.
    fn document(&mut self) -> Result<usize, Refusal> {
        let mut total = 0usize;
        for op in operations(self.document) {
            let size = self.set(&op.node.selection_set.node, 0)?;
            total = total.saturating_add(size.selections);
        }
        for name in self.document.fragments.keys() {
            let size = self.fragment(name.as_str(), 0)?;
            total = total.saturating_add(size.selections);
        }
        if total > MAX_SELECTIONS {
            return Err(Refusal::TooLarge);
        }
        Ok(total)
    }

    /// `depth` is how deep the walk has recursed: fragments already measured are not
    /// entered again, so it stays at most the nesting of what is being measured.
    fn set(&mut self, set: &'a SelectionSet, depth: usize) -> Result<Size, Refusal> {
        if depth > MAX_NESTING {
            return Err(Refusal::TooDeep);
        }
        let mut size = Size::default();
        for item in &set.items {
            self.steps += 1;
            let (inner, nests) = match &item.node {
                Selection::Field(field) => {
                    (self.set(&field.node.selection_set.node, depth + 1)?, 1)
                }
                Selection::InlineFragment(inline) => {
                    (self.set(&inline.node.selection_set.node, depth + 1)?, 0)
                }
                Selection::FragmentSpread(spread) => (
                    self.fragment(spread.node.fragment_name.node.as_str(), depth + 1)?,
                    1,
                ),
            };
            size.selections = size
                .selections
                .saturating_add(1)
                .saturating_add(inner.selections);
            size.height = size.height.max(inner.height + nests);
            if size.height > MAX_NESTING {
                return Err(Refusal::TooDeep);
            }
        }
        Ok(size)
    }

    /// An unknown fragment stands for nothing here; the engine's validation names it.
    fn fragment(&mut self, name: &'a str, depth: usize) -> Result<Size, Refusal> {
        match self.fragments.get(name) {
            Some(Fragment::Measured(size)) => return Ok(*size),
            Some(Fragment::Measuring) => return Err(Refusal::Cycle(name.to_owned())),
            None => {}
        }
        let Some((key, fragment)) = self.document.fragments.get_key_value(name) else {
            return Ok(Size::default());
        };
        self.fragments.insert(key.as_str(), Fragment::Measuring);
        let size = self.set(&fragment.node.selection_set.node, depth)?;
        self.fragments
            .insert(key.as_str(), Fragment::Measured(size));
        Ok(size)
    }
}

impl<'a> Measured<'a> {
    /// The document measured.
    pub fn document(&self) -> &'a ExecutableDocument {
        self.document
    }

    /// Each operation with the fields its root selects, through its fragments whatever
    /// their type condition.
    pub fn roots(&self) -> Vec<(&'a OperationDefinition, Vec<&'a Positioned<Field>>)> {
        let mut walk = Walk::new(self.document);
        operations(self.document)
            .into_iter()
            .map(|op| {
                let mut fields = Vec::new();
                walk.fields(&op.node.selection_set.node, &mut fields);
                (&op.node, fields)
            })
            .collect()
    }

    /// Whether a selection set (with its fragments' fields counted in, whatever their type
    /// condition) or one below it repeats a response key.
    pub fn repeats_a_key(&self) -> bool {
        let mut walk = Walk::new(self.document);
        operations(self.document)
            .iter()
            .any(|op| walk.repeats_a_key(&op.node.selection_set.node))
            || walk.over_budget()
    }
}

/// A walk over expanded selections that counts its steps against [`MAX_SELECTIONS`] and
/// stops when they run out (on a measured document they never do).
struct Walk<'a> {
    document: &'a ExecutableDocument,
    steps: usize,
}

impl<'a> Walk<'a> {
    fn new(document: &'a ExecutableDocument) -> Self {
        Self { document, steps: 0 }
    }

    fn over_budget(&self) -> bool {
        self.steps > MAX_SELECTIONS
    }

    /// Adds the fields `set` selects to `out`, through its fragments.
    fn fields(&mut self, set: &'a SelectionSet, out: &mut Vec<&'a Positioned<Field>>) {
        for item in &set.items {
            self.steps += 1;
            if self.over_budget() {
                return;
            }
            match &item.node {
                Selection::Field(field) => out.push(field),
                Selection::InlineFragment(inline) => {
                    self.fields(&inline.node.selection_set.node, out)
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) =
                        self.document.fragments.get(&spread.node.fragment_name.node)
                    {
                        self.fields(&fragment.node.selection_set.node, out);
                    }
                }
            }
        }
    }

    fn repeats_a_key(&mut self, set: &'a SelectionSet) -> bool {
        let mut fields = Vec::new();
        self.fields(set, &mut fields);
        let mut keys = HashSet::with_capacity(fields.len());
        fields
            .iter()
            .any(|field| !keys.insert(field.node.response_key().node.as_str()))
            || self.over_budget()
            || fields.iter().any(|field| {
                !field.node.selection_set.node.items.is_empty()
                    && self.repeats_a_key(&field.node.selection_set.node)
            })
    }
}

/// The operations of `document`.
pub fn operations(document: &ExecutableDocument) -> Vec<&Positioned<OperationDefinition>> {
    match &document.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values().collect(),
    }
}

#[cfg(test)]
mod tests;
