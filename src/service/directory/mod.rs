//! The school directory: dep-batches, sections, students, teachers, courses and devices.

pub mod import;
mod people;
pub mod removal;

use std::collections::BTreeSet;

use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::auth::Principal;
use crate::auth::{fast_hash, new_device_key};
use crate::entities::{course, course_section, dep_batch, device, section, teacher};
use crate::error::{AppError, AppResult, Reason};
use crate::service::access;
use crate::service::sql::{conflict_on, on_unique_violation, paginate, write_transaction};
use crate::service::{Page, PageRequest, Service, code_text, now, required_text};

/// Fields of a new student.
#[derive(Clone, Debug)]
pub struct NewStudent {
    /// Unique code printed on the student's card.
    pub student_code: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// The section the student belongs to.
    pub section_id: i32,
}

/// Changes to a student; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct StudentChanges {
    /// New code.
    pub student_code: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
    /// New section.
    pub section_id: Option<i32>,
}

/// Fields of a new teacher and their login.
#[derive(Clone, Debug)]
pub struct NewTeacher {
    /// Unique staff code.
    pub teacher_code: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Login name.
    pub username: String,
    /// Initial password.
    pub password: String,
}

/// Changes to a teacher; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct TeacherChanges {
    /// New staff code.
    pub teacher_code: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
}

/// Fields of a new course.
#[derive(Clone, Debug)]
pub struct NewCourse {
    /// Display name.
    pub name: String,
    /// Unique code.
    pub code: String,
    /// The teacher who teaches it.
    pub teacher_id: i32,
    /// The sections it is taught to.
    pub section_ids: Vec<i32>,
}

/// Changes to a course; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct CourseChanges {
    /// New display name.
    pub name: Option<String>,
    /// New code.
    pub code: Option<String>,
    /// New teacher; sessions already opened stay with the teacher who ran them.
    pub teacher_id: Option<i32>,
    /// The complete new set of sections; who is expected changes for sessions that close
    /// from now on.
    pub section_ids: Option<Vec<i32>>,
}

/// Student list filters.
#[derive(Clone, Debug, Default)]
pub struct StudentFilter {
    /// Matches code, first or last name, case-insensitively.
    pub search: Option<String>,
    /// Only students of this section.
    pub section_id: Option<i32>,
    /// Only active (`true`) or departed (`false`) students; all when `None`.
    pub active: Option<bool>,
}

/// A device with the API key it was just given; the key is never retrievable again.
#[derive(Clone, Debug)]
pub struct IssuedDeviceKey {
    /// The device.
    pub device: device::Model,
    /// The plaintext key.
    pub api_key: String,
}

impl Service {
    /// Every dep-batch.
    pub async fn dep_batches(&self, actor: &Principal) -> AppResult<Vec<dep_batch::Model>> {
        access::require_person(actor)?;
        Ok(dep_batch::Entity::find()
            .order_by_asc(dep_batch::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Creates a dep-batch; the (dep, batch) pair is unique.
    pub async fn create_dep_batch(
        &self,
        actor: &Principal,
        dep: &str,
        batch: &str,
    ) -> AppResult<dep_batch::Model> {
        access::require_admin(actor)?;
        let dep = required_text("dep", dep, 200)?;
        let batch = required_text("batch", batch, 64)?;
        dep_batch::ActiveModel {
            dep: Set(dep.clone()),
            batch: Set(batch.clone()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("batch", &format!("{dep} {batch}")))
    }

    /// Corrects a dep-batch's department or intake.
    pub async fn update_dep_batch(
        &self,
        actor: &Principal,
        id: i32,
        dep: Option<&str>,
        batch: Option<&str>,
    ) -> AppResult<dep_batch::Model> {
        access::require_admin(actor)?;
        let existing = dep_batch::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("dep-batch"))?;
        let dep = match dep {
            Some(dep) => required_text("dep", dep, 200)?,
            None => existing.dep.clone(),
        };
        let batch = match batch {
            Some(batch) => required_text("batch", batch, 64)?,
            None => existing.batch.clone(),
        };
        let pair = format!("{dep} {batch}");
        let mut active: dep_batch::ActiveModel = existing.clone().into();
        active.dep = Set(dep);
        active.batch = Set(batch);
        save(&self.db, existing, active, conflict_on("batch", &pair)).await
    }

    /// Every section, or those of one dep-batch.
    pub async fn sections(
        &self,
        actor: &Principal,
        dep_batch_id: Option<i32>,
    ) -> AppResult<Vec<section::Model>> {
        access::require_person(actor)?;
        let mut query = section::Entity::find().order_by_asc(section::Column::Id);
        if let Some(id) = dep_batch_id {
            query = query.filter(section::Column::DepBatchId.eq(id));
        }
        Ok(query.all(&self.db).await?)
    }

    /// Creates a section in a dep-batch; names are unique within a dep-batch.
    pub async fn create_section(
        &self,
        actor: &Principal,
        name: &str,
        dep_batch_id: i32,
    ) -> AppResult<section::Model> {
        access::require_admin(actor)?;
        let name = required_text("name", name, 100)?;
        self.require_dep_batch("depBatchId", dep_batch_id).await?;
        section::ActiveModel {
            name: Set(name.clone()),
            dep_batch_id: Set(dep_batch_id),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("name", &name))
    }

    /// Renames a section or moves it to another dep-batch.
    pub async fn update_section(
        &self,
        actor: &Principal,
        id: i32,
        name: Option<&str>,
        dep_batch_id: Option<i32>,
    ) -> AppResult<section::Model> {
        access::require_admin(actor)?;
        let existing = section::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("section"))?;
        let name = match name {
            Some(name) => required_text("name", name, 100)?,
            None => existing.name.clone(),
        };
        let mut active: section::ActiveModel = existing.clone().into();
        active.name = Set(name.clone());
        if let Some(dep_batch_id) = dep_batch_id {
            self.require_dep_batch("depBatchId", dep_batch_id).await?;
            active.dep_batch_id = Set(dep_batch_id);
        }
        save(&self.db, existing, active, conflict_on("name", &name)).await
    }

    async fn require_dep_batch(&self, field: &str, id: i32) -> AppResult<dep_batch::Model> {
        dep_batch::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::invalid(field, "no dep-batch has this id"))
    }

    pub(super) async fn require_section(&self, field: &str, id: i32) -> AppResult<section::Model> {
        section::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::invalid(field, "no section has this id"))
    }

    /// One page of courses; `teacher_id` narrows to one teacher's.
    pub async fn courses(
        &self,
        actor: &Principal,
        teacher_id: Option<i32>,
        page: PageRequest,
    ) -> AppResult<Page<course::Model>> {
        access::require_person(actor)?;
        let mut query = course::Entity::find();
        if let Some(teacher_id) = teacher_id {
            query = query.filter(course::Column::TeacherId.eq(teacher_id));
        }
        paginate(&self.db, query, course::Column::Id, page).await
    }

    /// One course, for a caller who may read the directory.
    pub async fn course(&self, actor: &Principal, id: i32) -> AppResult<Option<course::Model>> {
        access::require_person(actor)?;
        self.course_row(id).await
    }

    /// One course by id, for a rule that has already checked its caller.
    pub(crate) async fn course_row(&self, id: i32) -> AppResult<Option<course::Model>> {
        Ok(course::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Creates a course taught by a teacher to one or more sections, in one transaction.
    pub async fn create_course(
        &self,
        actor: &Principal,
        input: NewCourse,
    ) -> AppResult<course::Model> {
        access::require_admin(actor)?;
        let name = required_text("name", &input.name, 200)?;
        let code = code_text("code", &input.code)?;
        let section_ids = self.require_sections(&input.section_ids).await?;
        self.require_teacher("teacherId", input.teacher_id).await?;
        let txn = self.db.begin().await?;
        let course = course::ActiveModel {
            name: Set(name),
            code: Set(code.clone()),
            teacher_id: Set(input.teacher_id),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on("code", &code))?;
        course_section::Entity::insert_many(section_ids.iter().map(|section_id| {
            course_section::ActiveModel {
                course_id: Set(course.id),
                section_id: Set(*section_id),
            }
        }))
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok(course)
    }

    /// Corrects a course: its name, code, teacher or sections. Sessions already held keep
    /// their records; new sections are expected (and removed ones no longer) in sessions that
    /// close from now on.
    pub async fn update_course(
        &self,
        actor: &Principal,
        id: i32,
        changes: CourseChanges,
    ) -> AppResult<course::Model> {
        access::require_admin(actor)?;
        let existing = self
            .course_row(id)
            .await?
            .ok_or(AppError::NotFound("course"))?;
        let mut active: course::ActiveModel = existing.clone().into();
        if let Some(name) = changes.name {
            active.name = Set(required_text("name", &name, 200)?);
        }
        let mut code = existing.code.clone();
        if let Some(new_code) = changes.code {
            code = code_text("code", &new_code)?;
            active.code = Set(code.clone());
        }
        if let Some(teacher_id) = changes.teacher_id {
            self.require_teacher("teacherId", teacher_id).await?;
            active.teacher_id = Set(teacher_id);
        }
        let sections = match changes.section_ids {
            Some(ids) => Some(self.require_sections(&ids).await?),
            None => None,
        };
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let course = save(&txn, existing, active, conflict_on("code", &code)).await?;
        if let Some(sections) = sections {
            course_section::Entity::delete_many()
                .filter(course_section::Column::CourseId.eq(id))
                .filter(course_section::Column::SectionId.is_not_in(sections.iter().copied()))
                .exec(&txn)
                .await?;
            let kept: BTreeSet<i32> = course_section::Entity::find()
                .select_only()
                .column(course_section::Column::SectionId)
                .filter(course_section::Column::CourseId.eq(id))
                .into_tuple()
                .all(&txn)
                .await?
                .into_iter()
                .collect();
            let added: Vec<_> = sections
                .difference(&kept)
                .map(|section_id| course_section::ActiveModel {
                    course_id: Set(id),
                    section_id: Set(*section_id),
                })
                .collect();
            if !added.is_empty() {
                course_section::Entity::insert_many(added)
                    .exec(&txn)
                    .await
                    .map_err(on_unique_violation(|| {
                        AppError::rejected(
                            Reason::ConcurrentEdit,
                            "the course's sections changed meanwhile; reload and retry",
                        )
                    }))?;
            }
        }
        txn.commit().await?;
        Ok(course)
    }

    pub(super) async fn require_teacher(&self, field: &str, id: i32) -> AppResult<teacher::Model> {
        self.teacher_row(id)
            .await?
            .ok_or_else(|| AppError::invalid(field, "no teacher has this id"))
    }

    /// The distinct sections `ids` names: at least one, and each must exist.
    async fn require_sections(&self, ids: &[i32]) -> AppResult<BTreeSet<i32>> {
        let section_ids: BTreeSet<i32> = ids.iter().copied().collect();
        if section_ids.is_empty() {
            return Err(AppError::invalid(
                "sectionIds",
                "must name at least one section",
            ));
        }
        let found = section::Entity::find()
            .filter(section::Column::Id.is_in(section_ids.iter().copied()))
            .count(&self.db)
            .await?;
        if found != section_ids.len() as u64 {
            return Err(AppError::invalid(
                "sectionIds",
                "names a section that does not exist",
            ));
        }
        Ok(section_ids)
    }

    /// Every device, in registration order.
    pub async fn devices(&self, actor: &Principal) -> AppResult<Vec<device::Model>> {
        access::require_admin(actor)?;
        Ok(device::Entity::find()
            .order_by_asc(device::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Registers a terminal and returns its API key, which is shown only this once.
    pub async fn register_device(
        &self,
        actor: &Principal,
        device_code: &str,
        name: Option<&str>,
    ) -> AppResult<IssuedDeviceKey> {
        access::require_admin(actor)?;
        let code = code_text("deviceId", device_code)?;
        let name = match name {
            Some(name) => required_text("name", name, 200)?,
            None => code.clone(),
        };
        let api_key = new_device_key();
        let device = device::ActiveModel {
            device_id: Set(code.clone()),
            name: Set(name),
            is_active: Set(true),
            key_hash: Set(fast_hash(&api_key)),
            last_seen_at: Set(None),
            created_at: Set(now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(conflict_on("deviceId", &code))?;
        Ok(IssuedDeviceKey { device, api_key })
    }

    /// Renames a device; its code, key and sessions stay as they are.
    pub async fn update_device(
        &self,
        actor: &Principal,
        id: i32,
        name: Option<&str>,
    ) -> AppResult<device::Model> {
        access::require_admin(actor)?;
        let existing = device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("device"))?;
        let mut active: device::ActiveModel = existing.clone().into();
        if let Some(name) = name {
            active.name = Set(required_text("name", name, 200)?);
        }
        save(&self.db, existing, active, AppError::from).await
    }

    /// Revokes a device: its key stops working at once and it cannot open sessions.
    pub async fn revoke_device(&self, actor: &Principal, id: i32) -> AppResult<device::Model> {
        access::require_admin(actor)?;
        let existing = device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("device"))?;
        let mut active: device::ActiveModel = existing.into();
        active.is_active = Set(false);
        let device = active.update(&self.db).await?;
        self.forget_device_keys();
        Ok(device)
    }

    /// Gives a device a new key (re-activating it); the old key stops working at once.
    pub async fn rotate_device_key(
        &self,
        actor: &Principal,
        id: i32,
    ) -> AppResult<IssuedDeviceKey> {
        access::require_admin(actor)?;
        let existing = device::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(AppError::NotFound("device"))?;
        let api_key = new_device_key();
        let mut active: device::ActiveModel = existing.into();
        active.key_hash = Set(fast_hash(&api_key));
        active.is_active = Set(true);
        let device = active.update(&self.db).await?;
        self.forget_device_keys();
        Ok(IssuedDeviceKey { device, api_key })
    }
}

/// Writes what `changes` changed over `existing`, mapping a failure with `on_error`; with
/// nothing changed it writes nothing and answers `existing`.
pub(super) async fn save<A, C>(
    db: &C,
    existing: <A::Entity as EntityTrait>::Model,
    changes: A,
    on_error: impl FnOnce(DbErr) -> AppError,
) -> AppResult<<A::Entity as EntityTrait>::Model>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
{
    if !changes.is_changed() {
        return Ok(existing);
    }
    changes.update(db).await.map_err(on_error)
}

/// Rows where any of `columns` contains `text`, case-insensitively (wildcards literal).
pub(super) fn matches_any<C: ColumnTrait>(
    text: &str,
    columns: impl IntoIterator<Item = C>,
) -> Condition {
    let pattern = like_pattern(text);
    columns.into_iter().fold(Condition::any(), |any, column| {
        any.add(
            Expr::expr(Func::lower(Expr::col(column)))
                .like(LikeExpr::new(pattern.clone()).escape('\\')),
        )
    })
}

/// A case-insensitive LIKE pattern matching `text` anywhere, with wildcards escaped.
pub(super) fn like_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}
