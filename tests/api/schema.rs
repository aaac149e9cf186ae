//! The checked-in `schema.graphql` must equal the SDL the code exports.

#[test]
fn schema_graphql_matches_the_exported_sdl() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let exported = attendance::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &exported).expect("write schema.graphql");
        return;
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == exported,
        "schema.graphql is out of date with the code; regenerate it with \
         `UPDATE_SCHEMA=1 cargo test schema_graphql` and commit the result"
    );
}
