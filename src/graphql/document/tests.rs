use std::fmt::Write;

use async_graphql::parser::parse_query;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

/// The review's chain: each fragment selects two aliased fields that spread the next.
fn chain(levels: usize) -> String {
    let mut doc = String::from("{ me { ...F0 } }\n");
    for i in 0..levels {
        let _ = writeln!(
            doc,
            "fragment F{i} on Viewer {{ a: teacher {{ ...F{n} }} b: teacher {{ ...F{n} }} }}",
            n = i + 1
        );
    }
    let _ = writeln!(doc, "fragment F{levels} on Viewer {{ username }}");
    doc
}

/// The review's fan-out: each level spreads the next `width` times under aliases.
fn fan_out(levels: usize, width: usize) -> String {
    let mut doc = String::from("{ me { ...F0 } }\n");
    for i in 0..levels {
        let _ = write!(doc, "fragment F{i} on Viewer {{");
        for j in 0..width {
            let _ = write!(doc, " a{j}: teacher {{ ...F{n} }}", n = i + 1);
        }
        doc.push_str(" }\n");
    }
    let _ = writeln!(doc, "fragment F{levels} on Viewer {{ username }}");
    doc
}

fn measured(query: &str) -> Result<usize, Refusal> {
    let document = parse_query(query).expect("parses");
    measure(&document).map(|m| m.selections)
}

#[test]
fn exponential_fragment_chains_and_fan_outs_are_refused_in_linear_time() {
    for (query, refusal) in [
        (chain(24), Refusal::TooLarge),
        (chain(32), Refusal::TooDeep),
        (fan_out(8, 10), Refusal::TooLarge),
    ] {
        let document = parse_query(&query).expect("parses");
        let (result, steps) = measure_counting(&document);
        assert_eq!(result.err(), Some(refusal));
        let items = query.matches("teacher").count() + query.matches("...").count() + 8;
        assert!(steps <= items * 2, "{steps} steps for {items} items");
    }
}

#[test]
fn a_small_chain_is_measured_exactly() {
    // F2 = 1; F1 = 2 fields + 2 spreads + 2 * F2 = 6; F0 = 4 + 2 * 6 = 16; the operation:
    // me + spread + F0 = 18; then each definition on its own: 16 + 6 + 1.
    assert_eq!(measured(&chain(2)), Ok(18 + 16 + 6 + 1));
}

#[test]
fn fragments_that_spread_themselves_are_refused() {
    let cyclic = "{ me { ...A } } fragment A on Viewer { ...B } fragment B on Viewer { ...A }";
    assert!(matches!(measured(cyclic), Err(Refusal::Cycle(_))));
    let own = "{ me { ...A } } fragment A on Viewer { teacher { ...A } }";
    assert!(matches!(measured(own), Err(Refusal::Cycle(_))));
}

#[test]
fn a_deep_chain_is_refused_even_when_spread_from_its_end_first() {
    // Spreading the chain's tail first measures it in short pieces; the heights remembered
    // with each piece still add up to the whole chain's.
    let n = 400;
    let mut doc = String::from("{ me {");
    for i in (0..n).step_by(50).rev() {
        let _ = write!(doc, " ...F{i}");
    }
    doc.push_str(" } }\n");
    for i in 0..n {
        let _ = writeln!(doc, "fragment F{i} on Viewer {{ ...F{} }}", i + 1);
    }
    let _ = writeln!(doc, "fragment F{n} on Viewer {{ username }}");
    assert_eq!(measured(&doc), Err(Refusal::TooDeep));
}

#[test]
fn real_documents_pass() {
    let page = "query Session($id: ID!) { session(id: $id) { date isActive closesAt \
                course { code } records { id status lateMinutes scannedAt \
                student { studentCode firstName lastName } } } }";
    assert!(measured(page).is_ok());
    let introspection = include_str!("../../../tests/api/data/graphiql-introspection.graphql");
    let size = measured(introspection).expect("GraphiQL's schema query passes");
    assert!(size < MAX_SELECTIONS / 10, "{size}");
}

/// A random document: `n` fragments, each selecting fields (some aliased alike, some with
/// nested selections) and spreading random fragments, sometimes earlier ones (cycles).
fn random_document(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..12usize);
    let allow_cycles = rng.random_bool(0.2);
    let mut doc = String::from("query {");
    for _ in 0..rng.random_range(1..4usize) {
        let _ = write!(doc, " me {{ ...F{} }}", rng.random_range(0..n));
    }
    doc.push_str(" }\n");
    for i in 0..n {
        let _ = write!(doc, "fragment F{i} on Viewer {{ username");
        for k in 0..rng.random_range(0..5usize) {
            let alias = if rng.random_bool(0.3) { 0 } else { k };
            let target = if allow_cycles {
                rng.random_range(0..n)
            } else if i + 1 < n {
                rng.random_range(i + 1..n)
            } else {
                continue;
            };
            if rng.random_bool(0.5) {
                let _ = write!(doc, " a{alias}: teacher {{ ...F{target} }}");
            } else {
                let _ = write!(doc, " ...F{target}");
            }
        }
        doc.push_str(" }\n");
    }
    doc
}

/// The expansion, walked naively (exponential; only for small documents).
fn naive_size(set: &SelectionSet, document: &ExecutableDocument) -> usize {
    set.items
        .iter()
        .map(|item| {
            1 + match &item.node {
                Selection::Field(field) => naive_size(&field.node.selection_set.node, document),
                Selection::InlineFragment(inline) => {
                    naive_size(&inline.node.selection_set.node, document)
                }
                Selection::FragmentSpread(spread) => document
                    .fragments
                    .get(&spread.node.fragment_name.node)
                    .map_or(0, |f| naive_size(&f.node.selection_set.node, document)),
            }
        })
        .sum()
}

#[test]
fn every_walk_over_generated_fragment_graphs_is_bounded() {
    let mut rng = StdRng::seed_from_u64(23);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..2_000 {
        let query = random_document(&mut rng);
        let document = parse_query(&query).expect("parses");
        let items = query.matches("teacher").count()
            + query.matches("...").count()
            + query.matches("username").count()
            + query.matches(" me ").count();
        let (result, steps) = measure_counting(&document);
        assert!(steps <= items, "{steps} steps for {items} items: {query}");
        let Ok(measured) = result else {
            refused += 1;
            continue;
        };
        accepted += 1;
        // Exact, as the naive expansion counts it (small enough to expand here).
        let naive: usize = operations(&document)
            .iter()
            .map(|op| naive_size(&op.node.selection_set.node, &document))
            .chain(
                document
                    .fragments
                    .values()
                    .map(|f| naive_size(&f.node.selection_set.node, &document)),
            )
            .sum();
        assert_eq!(measured.selections, naive, "{query}");
        // The walks after the measure stay within it.
        let mut walk = Walk::new(&document);
        for op in operations(&document) {
            walk.repeats_a_key(&op.node.selection_set.node);
        }
        assert!(walk.steps <= measured.selections, "{query}");
        let roots = measured.roots();
        assert_eq!(roots.len(), 1);
    }
    assert!(accepted > 100 && refused > 100, "{accepted} / {refused}");
}
