//! SQL plumbing every domain module shares: portable raw statements, write transactions,
//! unique-violation mapping and keyset pagination. No rule lives here.

use sea_orm::ColumnTrait;
use sea_orm::{
    DbBackend, DbErr, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select, SqliteTransactionMode, Statement, TransactionOptions, Value,
};

use super::{Page, PageRequest};
use crate::error::{AppError, AppResult, is_unique_violation};

/// Builds a statement for the connected backend from SQL written with `$n` placeholders.
pub(crate) fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// SQLite transactions that will write take the write lock up front, so the busy timeout
/// applies instead of a "database is locked" failure when upgrading a read lock.
pub(crate) fn write_transaction() -> TransactionOptions {
    TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    }
}

/// Maps a unique violation to the error `conflict` makes, and any other failure as usual.
pub(crate) fn on_unique_violation(
    conflict: impl FnOnce() -> AppError,
) -> impl FnOnce(DbErr) -> AppError {
    move |err| {
        if is_unique_violation(&err) {
            conflict()
        } else {
            err.into()
        }
    }
}

/// Maps a unique violation on insert to a CONFLICT naming `field`.
pub(crate) fn conflict_on(field: &str, value: &str) -> impl FnOnce(DbErr) -> AppError {
    let (field, value) = (field.to_owned(), value.to_owned());
    on_unique_violation(move || AppError::Duplicate { field, value })
}

/// Keyset pagination on `id_column`, with the total over all pages.
pub(crate) async fn paginate<E>(
    db: &sea_orm::DatabaseConnection,
    query: Select<E>,
    id_column: E::Column,
    page: PageRequest,
) -> AppResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Sync,
{
    paginate_with(db, query, id_column, page, |rows| rows.all(db)).await
}

/// [`paginate`], with `fetch` reading the page's rows (to join what each row always shows).
pub(crate) async fn paginate_with<E, R, F, Fut>(
    db: &sea_orm::DatabaseConnection,
    query: Select<E>,
    id_column: E::Column,
    page: PageRequest,
    fetch: F,
) -> AppResult<Page<R>>
where
    E: EntityTrait,
    E::Model: Sync,
    F: FnOnce(Select<E>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, DbErr>>,
{
    keyset_page(db, query, id_column, page, Order::Asc, fetch).await
}

/// Keyset pagination on `id_column` from the highest id down (`after` is the last id of
/// the previous page), with the total over all pages.
pub(crate) async fn paginate_newest_first<E>(
    db: &sea_orm::DatabaseConnection,
    query: Select<E>,
    id_column: E::Column,
    page: PageRequest,
) -> AppResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Sync,
{
    keyset_page(db, query, id_column, page, Order::Desc, |rows| rows.all(db)).await
}

/// One page of `query` in `order` of `id_column`, after the cursor's id, with the total.
async fn keyset_page<E, R, F, Fut>(
    db: &sea_orm::DatabaseConnection,
    query: Select<E>,
    id_column: E::Column,
    page: PageRequest,
    order: Order,
    fetch: F,
) -> AppResult<Page<R>>
where
    E: EntityTrait,
    E::Model: Sync,
    F: FnOnce(Select<E>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, DbErr>>,
{
    let total_count = query.clone().count(db).await?;
    let beyond = |after: i32| match order {
        Order::Desc => id_column.lt(after),
        _ => id_column.gt(after),
    };
    let mut rows = fetch(
        query
            .apply_if(page.after, |q, after| q.filter(beyond(after)))
            .order_by(id_column, order)
            .limit(page.first + 1),
    )
    .await?;
    let has_next_page = rows.len() as u64 > page.first;
    rows.truncate(page.first as usize);
    Ok(Page {
        items: rows,
        has_next_page,
        total_count,
    })
}
