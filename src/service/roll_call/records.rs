//! Reading, correcting and deleting attendance records, with the audit trail of edits and
//! deletions that outlives them.

use sea_orm::sea_query::Expr;
use sea_orm::sqlx::Row as _;
use sea_orm::sqlx::postgres::Postgres;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    IdenStatic, JoinType, QueryFilter, QueryResult, QuerySelect, QueryTrait, Select,
    TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::{
    AttendanceStatus, ChangeKind, attendance_record, attendance_session, record_change, student,
};
use crate::error::{AppError, AppResult};
use crate::events::{EventKind, SessionEvent};
use crate::service::access::{self, Scope};
use crate::service::attendance::record::audit_entry;
use crate::service::integrations::consequences::{Change, follow};
use crate::service::sql::{paginate_newest_first, paginate_with, write_transaction};
use crate::service::{Page, PageRequest, Service};

/// Record list filters.
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    /// Only this session's records.
    pub session_id: Option<i32>,
    /// Only this student's records.
    pub student_id: Option<i32>,
    /// Only records with this status.
    pub status: Option<AttendanceStatus>,
}

/// A record with its student.
pub type RecordWithStudent = (attendance_record::Model, student::Model);

/// The record's columns in the order [`record_at`] reads them.
const RECORD_COLUMNS: [attendance_record::Column; 8] = {
    use attendance_record::Column as R;
    [
        R::Id,
        R::SessionId,
        R::StudentId,
        R::Status,
        R::Timestamp,
        R::ScannedAt,
        R::LateMinutes,
        R::Source,
    ]
};

/// The student's columns in the order [`student_at`] reads them.
pub(crate) const STUDENT_COLUMNS: [student::Column; 8] = {
    use student::Column as S;
    [
        S::Id,
        S::StudentCode,
        S::FirstName,
        S::LastName,
        S::SectionId,
        S::CreatedAt,
        S::EnrolledAt,
        S::IsActive,
    ]
};

// Rows are read by position, not by name: on a page of 500 rows, sea-orm's by-name decoding
// (a formatted, hashed column name per value) cost more than the rest of the request.

/// A record from `RECORD_COLUMNS` starting at column `at`.
fn record_at(row: &QueryResult, at: usize) -> Result<attendance_record::Model, DbErr> {
    Ok(attendance_record::Model {
        id: column(row, at)?,
        session_id: column(row, at + 1)?,
        student_id: column(row, at + 2)?,
        status: row.try_get_by_index(at + 3)?,
        timestamp: column(row, at + 4)?,
        scanned_at: column(row, at + 5)?,
        late_minutes: column(row, at + 6)?,
        source: row.try_get_by_index(at + 7)?,
    })
}

/// A student from `STUDENT_COLUMNS` starting at column `at`.
pub(crate) fn student_at(row: &QueryResult, at: usize) -> Result<student::Model, DbErr> {
    Ok(student::Model {
        id: column(row, at)?,
        student_code: column(row, at + 1)?,
        first_name: column(row, at + 2)?,
        last_name: column(row, at + 3)?,
        section_id: column(row, at + 4)?,
        created_at: column(row, at + 5)?,
        enrolled_at: column(row, at + 6)?,
        is_active: column(row, at + 7)?,
    })
}

/// The value at column `index`. On PostgreSQL it is decoded by sqlx without comparing the
/// column's type with `T` first: these statements name their columns, whose types the
/// migrations fix, and on a page of 500 rows the comparisons (8,000 of them, each building
/// type names and OIDs) cost a tenth of the request. A value of the wrong size still fails
/// to decode.
fn column<T>(row: &QueryResult, index: usize) -> Result<T, DbErr>
where
    T: sea_orm::TryGetable
        + sea_orm::sqlx::Type<Postgres>
        + for<'r> sea_orm::sqlx::Decode<'r, Postgres>,
{
    match row.try_as_pg_row() {
        Some(pg) => pg
            .try_get_unchecked(index)
            .map_err(|e| DbErr::Type(format!("column {index}: {e}"))),
        None => row.try_get_by_index(index),
    }
}

/// [`STUDENT_COLUMNS`] for a hand-written `SELECT`, qualified by `alias`.
pub(crate) fn student_select(alias: &str) -> String {
    column_list(alias, STUDENT_COLUMNS.iter().map(|c| c.as_str()))
}

/// `columns` qualified by `alias`, comma-separated.
fn column_list<'a>(alias: &str, columns: impl Iterator<Item = &'a str>) -> String {
    columns
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `query` with exactly the columns given and decodes each row with `decode`.
async fn read_rows<E: EntityTrait, T>(
    db: &DatabaseConnection,
    query: Select<E>,
    decode: impl Fn(&QueryResult) -> Result<T, DbErr>,
) -> Result<Vec<T>, DbErr> {
    let rows = db
        .query_all_raw(query.build(db.get_database_backend()))
        .await?;
    rows.iter().map(decode).collect()
}

/// The records a page query selects together with their students, joined in SQL: the
/// relation is one-to-one, every page of records shows who they are, and under the page's
/// `LIMIT` the join walks the student key for each row.
async fn page_with_students(
    db: &DatabaseConnection,
    query: Select<attendance_record::Entity>,
) -> Result<Vec<RecordWithStudent>, DbErr> {
    let query = query
        .select_only()
        .columns(RECORD_COLUMNS)
        .columns(STUDENT_COLUMNS)
        .join(
            JoinType::InnerJoin,
            attendance_record::Entity::belongs_to(student::Entity)
                .from(attendance_record::Column::StudentId)
                .to(student::Column::Id)
                .into(),
        );
    read_rows(db, query, |row| {
        Ok((record_at(row, 0)?, student_at(row, RECORD_COLUMNS.len())?))
    })
    .await
}

impl Service {
    /// The records of these sessions with their students, in id order, in one statement
    /// whose plan is an index lookup per record at any size. Each record's student is
    /// fetched by key: on PostgreSQL through a `LATERAL` subquery kept from being pulled up
    /// (`OFFSET 0`), because as a plain join PostgreSQL hashes the whole student table once
    /// it has a few hundred thousand rows (31 ms instead of 1 for a class of 500 among
    /// 200,000 students); SQLite's plain join is already a lookup by key. The caller has
    /// decided that whoever asks may read these sessions.
    pub async fn records_of_sessions(
        &self,
        session_ids: &[i32],
    ) -> AppResult<Vec<RecordWithStudent>> {
        if session_ids.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let placeholders: Vec<String> = (1..=session_ids.len()).map(|n| format!("${n}")).collect();
        let students = match backend {
            sea_orm::DbBackend::Postgres => format!(
                "CROSS JOIN LATERAL (SELECT {} FROM student s WHERE s.id = r.student_id OFFSET 0) st",
                column_list("s", STUDENT_COLUMNS.iter().map(|c| c.as_str()))
            ),
            _ => "JOIN student st ON st.id = r.student_id".to_owned(),
        };
        let sql = format!(
            "SELECT {records}, {student_columns} FROM attendance_record r {students} \
             WHERE r.session_id IN ({placeholders}) ORDER BY r.id",
            records = column_list("r", RECORD_COLUMNS.iter().map(|c| c.as_str())),
            student_columns = student_select("st"),
            placeholders = placeholders.join(", "),
        );
        let rows = self
            .db
            .query_all_raw(crate::service::sql::statement(
                backend,
                &sql,
                session_ids.iter().map(|id| (*id).into()).collect(),
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|row| Ok((record_at(row, 0)?, student_at(row, RECORD_COLUMNS.len())?)))
            .collect::<Result<_, DbErr>>()?)
    }

    /// A record visible to `actor` with its session, or `None` (missing and foreign look alike).
    pub async fn record_for(
        &self,
        actor: &Principal,
        id: i32,
    ) -> AppResult<Option<(attendance_record::Model, attendance_session::Model)>> {
        let Some(record) = attendance_record::Entity::find_by_id(id)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let session = attendance_session::Entity::find_by_id(record.session_id)
            .one(&self.db)
            .await?;
        Ok(session
            .filter(|session| access::may_see_session(actor, session))
            .map(|session| (record, session)))
    }

    /// One page of the records visible to `actor`, with their students.
    pub async fn attendance_records(
        &self,
        actor: &Principal,
        filter: &RecordFilter,
        page: PageRequest,
    ) -> AppResult<Page<RecordWithStudent>> {
        use attendance_record::Column;
        let mut query = attendance_record::Entity::find();
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query = query.filter(access::of_sessions_run_by(Column::SessionId, teacher_id));
        }
        query = query
            .apply_if(filter.session_id, |q, id| {
                q.filter(Column::SessionId.eq(id))
            })
            .apply_if(filter.student_id, |q, id| {
                q.filter(Column::StudentId.eq(id))
            })
            .apply_if(filter.status, |q, status| {
                q.filter(Column::Status.eq(status))
            });
        let db = &self.db;
        paginate_with(db, query, Column::Id, page, |rows| {
            page_with_students(db, rows)
        })
        .await
    }

    /// Changes a record's status and writes the audit row in the same transaction. Only the
    /// session's teacher or an admin may; anyone else gets the same NOT_FOUND as for a
    /// record that does not exist.
    pub async fn edit_status(
        &self,
        actor: &Principal,
        record_id: i32,
        status: AttendanceStatus,
        reason: Option<&str>,
    ) -> AppResult<attendance_record::Model> {
        let reason = audit_reason(reason)?;
        let (record, session) = self
            .record_for(actor, record_id)
            .await?
            .ok_or(AppError::NotFound("attendance record"))?;
        if record.status == status {
            return Ok(record);
        }
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        // Conditional on the status we read, so two concurrent edits cannot both log the
        // same old status.
        let updated = attendance_record::Entity::update_many()
            .col_expr(attendance_record::Column::Status, Expr::value(status))
            .col_expr(attendance_record::Column::Timestamp, Expr::value(at))
            .filter(attendance_record::Column::Id.eq(record.id))
            .filter(attendance_record::Column::Status.eq(record.status))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            txn.rollback().await?;
            return Err(AppError::rejected(
                crate::error::Reason::ConcurrentEdit,
                "the record changed meanwhile; reload and retry",
            ));
        }
        audit_entry(&record, Some(status), actor.user_id(), at, reason.clone())
            .insert(&txn)
            .await?;
        // A person's decision from now on: no excuse may turn it back.
        txn.execute_raw(crate::service::sql::statement(
            txn.get_database_backend(),
            "DELETE FROM record_excuse WHERE record_id = $1",
            vec![record.id.into()],
        ))
        .await?;
        let followed = follow(
            &txn,
            at,
            Change::Record {
                record: &record,
                course_id: session.course_id,
                kind: ChangeKind::Edit,
                new_status: Some(status),
                reason: reason.as_deref(),
                changed_by: actor.user_id(),
            },
        )
        .await?;
        txn.commit().await?;
        self.followed(followed);
        self.events.publish(SessionEvent {
            session_id: record.session_id,
            kind: EventKind::Edit,
            record_id: Some(record.id),
        });
        Ok(attendance_record::Model {
            status,
            timestamp: at,
            ..record
        })
    }

    /// Deletes a record (admins only). The audit trail keeps an entry naming the record,
    /// its session, its student and its last status, written in the same transaction; the
    /// record's earlier entries stay too.
    pub async fn delete_record(
        &self,
        actor: &Principal,
        id: i32,
        reason: Option<&str>,
    ) -> AppResult<attendance_record::Model> {
        access::require_admin(actor)?;
        let reason = audit_reason(reason)?;
        let (record, session) = self
            .record_for(actor, id)
            .await?
            .ok_or(AppError::NotFound("attendance record"))?;
        let course_id = session.course_id;
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        // Conditional on the status read, so the entry names the status that was deleted.
        let deleted = attendance_record::Entity::delete_many()
            .filter(attendance_record::Column::Id.eq(id))
            .filter(attendance_record::Column::Status.eq(record.status))
            .exec(&txn)
            .await?;
        if deleted.rows_affected != 1 {
            txn.rollback().await?;
            return Err(AppError::rejected(
                crate::error::Reason::ConcurrentEdit,
                "the record changed meanwhile; reload and retry",
            ));
        }
        audit_entry(&record, None, actor.user_id(), at, reason.clone())
            .insert(&txn)
            .await?;
        let followed = follow(
            &txn,
            at,
            Change::Record {
                record: &record,
                course_id,
                kind: ChangeKind::Delete,
                new_status: None,
                reason: reason.as_deref(),
                changed_by: actor.user_id(),
            },
        )
        .await?;
        txn.commit().await?;
        self.followed(followed);
        self.events.publish(SessionEvent {
            session_id: record.session_id,
            kind: EventKind::Edit,
            record_id: None,
        });
        Ok(record)
    }

    /// One page of the audit trail, newest first: admins all of it, teachers the entries
    /// of the sessions they ran. Entries of deleted records are included.
    pub async fn record_changes(
        &self,
        actor: &Principal,
        filter: &ChangeFilter,
        page: PageRequest,
    ) -> AppResult<Page<record_change::Model>> {
        use record_change::Column;
        let mut query = record_change::Entity::find()
            .apply_if(filter.session_id, |q, id| {
                q.filter(Column::SessionId.eq(id))
            })
            .apply_if(filter.student_id, |q, id| {
                q.filter(Column::StudentId.eq(id))
            });
        if let Scope::Teacher(teacher_id) = access::scope(actor)? {
            query = query.filter(access::of_sessions_run_by(Column::SessionId, teacher_id));
        }
        paginate_newest_first(&self.db, query, Column::Id, page).await
    }
}

/// Audit trail filters.
#[derive(Clone, Debug, Default)]
pub struct ChangeFilter {
    /// Only entries of this session.
    pub session_id: Option<i32>,
    /// Only entries of this student.
    pub student_id: Option<i32>,
}

/// The optional reason a person gives for a change: trimmed, at most 500 characters.
fn audit_reason(reason: Option<&str>) -> AppResult<Option<String>> {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if r.chars().count() > 500 => Err(AppError::invalid(
            "reason",
            "must be at most 500 characters",
        )),
        other => Ok(other.map(str::to_owned)),
    }
}
