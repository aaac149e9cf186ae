//! The school directory: departments' intakes, sections, students, teachers, courses.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DepBatch::Table)
                    .col(pk_auto(DepBatch::Id))
                    .col(string(DepBatch::Dep))
                    .col(string(DepBatch::Batch))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_dep_batch_dep_batch")
                    .table(DepBatch::Table)
                    .col(DepBatch::Dep)
                    .col(DepBatch::Batch)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Section::Table)
                    .col(pk_auto(Section::Id))
                    .col(string(Section::Name))
                    .col(integer(Section::DepBatchId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_section_dep_batch")
                            .from(Section::Table, Section::DepBatchId)
                            .to(DepBatch::Table, DepBatch::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_section_dep_batch_name")
                    .table(Section::Table)
                    .col(Section::DepBatchId)
                    .col(Section::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Student::Table)
                    .col(pk_auto(Student::Id))
                    .col(string_uniq(Student::StudentCode))
                    .col(string(Student::FirstName))
                    .col(string(Student::LastName))
                    .col(integer(Student::SectionId))
                    .col(timestamp_with_time_zone(Student::CreatedAt))
                    .col(timestamp_with_time_zone(Student::EnrolledAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_student_section")
                            .from(Student::Table, Student::SectionId)
                            .to(Section::Table, Section::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_student_section")
                    .table(Student::Table)
                    .col(Student::SectionId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Teacher::Table)
                    .col(pk_auto(Teacher::Id))
                    .col(string_uniq(Teacher::TeacherCode))
                    .col(string(Teacher::FirstName))
                    .col(string(Teacher::LastName))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Course::Table)
                    .col(pk_auto(Course::Id))
                    .col(string(Course::Name))
                    .col(string_uniq(Course::Code))
                    .col(integer(Course::TeacherId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_course_teacher")
                            .from(Course::Table, Course::TeacherId)
                            .to(Teacher::Table, Teacher::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_course_teacher")
                    .table(Course::Table)
                    .col(Course::TeacherId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CourseSection::Table)
                    .col(integer(CourseSection::CourseId))
                    .col(integer(CourseSection::SectionId))
                    .primary_key(
                        Index::create()
                            .col(CourseSection::CourseId)
                            .col(CourseSection::SectionId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_course_section_course")
                            .from(CourseSection::Table, CourseSection::CourseId)
                            .to(Course::Table, Course::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_course_section_section")
                            .from(CourseSection::Table, CourseSection::SectionId)
                            .to(Section::Table, Section::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_course_section_section")
                    .table(CourseSection::Table)
                    .col(CourseSection::SectionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CourseSection::Table.into_iden(),
            Course::Table.into_iden(),
            Teacher::Table.into_iden(),
            Student::Table.into_iden(),
            Section::Table.into_iden(),
            DepBatch::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
pub(crate) enum DepBatch {
    Table,
    Id,
    Dep,
    Batch,
}

#[derive(DeriveIden)]
pub(crate) enum Section {
    Table,
    Id,
    Name,
    DepBatchId,
}

#[derive(DeriveIden)]
pub(crate) enum Student {
    Table,
    Id,
    StudentCode,
    FirstName,
    LastName,
    SectionId,
    CreatedAt,
    /// When the student joined their current section; closing a session marks absent
    /// only those enrolled when it started.
    EnrolledAt,
}

#[derive(DeriveIden)]
pub(crate) enum Teacher {
    Table,
    Id,
    TeacherCode,
    FirstName,
    LastName,
}

#[derive(DeriveIden)]
pub(crate) enum Course {
    Table,
    Id,
    Name,
    Code,
    TeacherId,
}

#[derive(DeriveIden)]
pub(crate) enum CourseSection {
    Table,
    CourseId,
    SectionId,
}
