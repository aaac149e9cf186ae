//! Rosters in: the student CSV import (every row checked before anything is written, the
//! same file imported again changes nothing), and the CSV reading the timetable import
//! shares.

use std::collections::{HashMap, HashSet};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, Set, TransactionTrait,
};

use crate::auth::Principal;
use crate::entities::student;
use crate::error::{AppError, AppResult};
use crate::service::access;
use crate::service::sql::{statement, write_transaction};
use crate::service::{Service, code_text, required_text};

/// The columns of a roster file, in order.
pub const ROSTER_HEADER: [&str; 4] = ["student_code", "first_name", "last_name", "section"];

/// One bad line of a roster file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// The line's number in the file (1 is the first line).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Students created.
    pub created: usize,
    /// Existing students (same code) whose names or section changed.
    pub updated: usize,
    /// Rows identical to what was there already.
    pub unchanged: usize,
}

/// The outcome of an import: applied, or refused with every bad line (nothing written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Every row was valid and the roster was applied.
    Applied(ImportReport),
    /// At least one row was bad; nothing changed.
    Rejected(Vec<BadLine>),
}

#[derive(Clone, Debug)]
struct Row {
    line: usize,
    code: String,
    first_name: String,
    last_name: String,
    section_id: i32,
}

/// Splits CSV text into records (RFC 4180: quotes, doubled quotes, CRLF), with the line
/// number each record starts on.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, BadLine> {
    // The reader drops a leading byte order mark by itself, but its positions count it.
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let bytes = text.as_bytes().get(bom..).unwrap_or_default();
    // csv reads an unclosed quote to the end of its input without complaint. A sentinel
    // line after the text shows it: it is read as a record of its own, past the end of the
    // text, only when every quote was closed. (One buffer, not a chain of two: the reader
    // looks for the byte order mark in its first read only.)
    let input = [text.as_bytes(), b"\n#"].concat();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of the wrong width are reported per line by `check_row`, not refused here.
        .flexible(true)
        // Only `\n` ends a record, so that a lone `\r` stays data as it always has; the
        // `\r` of a CRLF is dropped below.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input.as_slice());
    let mut records = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut line = 1;
    loop {
        let read = reader.read_record(&mut record).map_err(|e| BadLine {
            line,
            reason: e.to_string(),
        })?;
        if !read {
            return Err(BadLine {
                line,
                reason: "a quoted field is never closed".into(),
            });
        }
        let (before_line, start) = record.position().map_or((line, 0), |p| {
            (p.line() as usize, (p.byte() as usize).saturating_sub(bom))
        });
        // A record's position is where the reader stood before it, ahead of the blank lines
        // it skipped; the record itself starts after them.
        let blank = bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| **b == b'\n')
            .count();
        if start + blank >= bytes.len() {
            return Ok(records);
        }
        line = before_line + blank;
        // The reader now stands just past the record's `\n`.
        let end = (reader.position().byte() as usize).saturating_sub(bom);
        let crlf = end <= bytes.len() && end >= 2 && bytes[end - 2] == b'\r';
        let mut fields: Vec<String> = record.iter().map(str::to_owned).collect();
        if crlf && let Some(field) = fields.last_mut() {
            field.pop();
        }
        // A line of spaces is as empty as a blank one.
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            records.push((line, fields));
        }
    }
}

#[derive(FromQueryResult)]
struct SectionName {
    id: i32,
    name: String,
    dep: String,
    batch: String,
}

impl Service {
    /// Imports students from CSV (`student_code,first_name,last_name,section`, header
    /// optional). `section` is a section id, a name unique across the school, or
    /// `dep/batch/name`. Every row is checked first; one bad row rejects the whole file.
    /// Importing the same file again changes nothing. `progress` hears (rows done, total).
    pub async fn import_students(
        &self,
        actor: &Principal,
        text: &str,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> AppResult<ImportOutcome> {
        access::require_admin(actor)?;
        let records = match parse_csv(text) {
            Ok(records) => records,
            Err(bad) => return Ok(ImportOutcome::Rejected(vec![bad])),
        };
        let records = match records.first() {
            Some((_, first))
                if first.len() == 4
                    && first
                        .iter()
                        .zip(ROSTER_HEADER)
                        .all(|(a, b)| a.trim().eq_ignore_ascii_case(b)) =>
            {
                &records[1..]
            }
            _ => &records[..],
        };
        if records.is_empty() {
            return Err(AppError::invalid("file", "has no student rows"));
        }
        let sections = self.section_lookup().await?;
        let mut bad = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (line, fields) in records {
            match check_row(*line, fields, &sections) {
                Ok(row) => {
                    if let Some(first) = seen.insert(row.code.clone(), row.line) {
                        bad.push(BadLine {
                            line: row.line,
                            reason: format!(
                                "student_code {:?} already appears on line {first}",
                                row.code
                            ),
                        });
                    } else {
                        rows.push(row);
                    }
                }
                Err(reason) => bad.push(BadLine {
                    line: *line,
                    reason,
                }),
            }
        }
        if !bad.is_empty() {
            return Ok(ImportOutcome::Rejected(bad));
        }
        self.apply_roster(rows, progress)
            .await
            .map(ImportOutcome::Applied)
    }

    /// Section names, ids and dep-batch paths for resolving the `section` column.
    async fn section_lookup(&self) -> AppResult<SectionLookup> {
        let backend = self.db.get_database_backend();
        let names = SectionName::find_by_statement(statement(
            backend,
            "SELECT s.id AS id, s.name AS name, d.dep AS dep, d.batch AS batch \
             FROM section s JOIN dep_batch d ON d.id = s.dep_batch_id",
            vec![],
        ))
        .all(&self.db)
        .await?;
        let mut lookup = SectionLookup::default();
        for s in names {
            lookup.ids.insert(s.id);
            lookup
                .by_name
                .entry(s.name.to_lowercase())
                .or_default()
                .push(s.id);
            lookup.by_path.insert(
                format!("{}/{}/{}", s.dep, s.batch, s.name).to_lowercase(),
                s.id,
            );
        }
        Ok(lookup)
    }

    async fn apply_roster(
        &self,
        rows: Vec<Row>,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> AppResult<ImportReport> {
        let total = rows.len();
        let mut report = ImportReport::default();
        let at = self.now();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let mut done = 0;
        for chunk in rows.chunks(500) {
            let codes: Vec<String> = chunk.iter().map(|r| r.code.clone()).collect();
            let existing: HashMap<String, student::Model> = student::Entity::find()
                .filter(student::Column::StudentCode.is_in(codes))
                .all(&txn)
                .await?
                .into_iter()
                .map(|s| (s.student_code.clone(), s))
                .collect();
            let mut new = Vec::new();
            for row in chunk {
                match existing.get(&row.code) {
                    None => new.push(student::ActiveModel {
                        student_code: Set(row.code.clone()),
                        first_name: Set(row.first_name.clone()),
                        last_name: Set(row.last_name.clone()),
                        section_id: Set(row.section_id),
                        created_at: Set(at),
                        enrolled_at: Set(at),
                        is_active: Set(true),
                        ..Default::default()
                    }),
                    Some(old)
                        if old.first_name == row.first_name
                            && old.last_name == row.last_name
                            && old.section_id == row.section_id =>
                    {
                        report.unchanged += 1;
                    }
                    Some(old) => {
                        let moved = old.section_id != row.section_id;
                        let mut active: student::ActiveModel = old.clone().into();
                        active.first_name = Set(row.first_name.clone());
                        active.last_name = Set(row.last_name.clone());
                        active.section_id = Set(row.section_id);
                        if moved {
                            active.enrolled_at = Set(at);
                        }
                        active.update(&txn).await?;
                        report.updated += 1;
                    }
                }
            }
            if !new.is_empty() {
                report.created += new.len();
                student::Entity::insert_many(new).exec(&txn).await?;
            }
            done += chunk.len();
            progress(done, total);
        }
        txn.commit().await?;
        Ok(report)
    }
}

#[derive(Default)]
struct SectionLookup {
    ids: HashSet<i32>,
    by_name: HashMap<String, Vec<i32>>,
    by_path: HashMap<String, i32>,
}

fn check_row(line: usize, fields: &[String], sections: &SectionLookup) -> Result<Row, String> {
    if fields.len() != 4 {
        return Err(format!(
            "expected 4 columns ({}), found {}",
            ROSTER_HEADER.join(","),
            fields.len()
        ));
    }
    let describe = |e: AppError| match e {
        AppError::InvalidInput { field, message } => format!("{field} {message}"),
        other => other.to_string(),
    };
    let code = code_text("student_code", &fields[0]).map_err(describe)?;
    let first_name = required_text("first_name", &fields[1], 100).map_err(describe)?;
    let last_name = required_text("last_name", &fields[2], 100).map_err(describe)?;
    let wanted = fields[3].trim();
    let section_id = if let Ok(id) = wanted.parse::<i32>() {
        sections
            .ids
            .contains(&id)
            .then_some(id)
            .ok_or_else(|| format!("no section has id {id}"))?
    } else if let Some(id) = sections.by_path.get(&wanted.to_lowercase()) {
        *id
    } else {
        match sections
            .by_name
            .get(&wanted.to_lowercase())
            .map(Vec::as_slice)
        {
            Some([id]) => *id,
            Some(_) => {
                return Err(format!(
                    "section {wanted:?} exists in several dep-batches; write dep/batch/{wanted} or the section id"
                ));
            }
            None => return Err(format!("no section is named {wanted:?}")),
        }
    };
    Ok(Row {
        line,
        code,
        first_name,
        last_name,
        section_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_handles_quotes_crlf_and_bom() {
        let records =
            parse_csv("\u{feff}a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n\r\nlast,\"multi\nline\"")
                .unwrap();
        assert_eq!(records[0], (1, vec!["a".into(), "b".into()]));
        assert_eq!(records[1], (2, vec!["x, y".into(), "say \"hi\"".into()]));
        assert_eq!(records[2], (4, vec!["last".into(), "multi\nline".into()]));
        assert!(parse_csv("a,\"open").is_err());
    }

    #[test]
    fn csv_line_numbers_count_blank_lines_and_a_lone_cr_stays_data() {
        let records = parse_csv("a,b\n\n  \r\nc,d\n\n\ne\rf,g").unwrap();
        assert_eq!(records[0], (1, vec!["a".into(), "b".into()]));
        assert_eq!(records[1], (4, vec!["c".into(), "d".into()]));
        assert_eq!(records[2], (7, vec!["e\rf".into(), "g".into()]));
        assert_eq!(records.len(), 3);
        assert_eq!(parse_csv("x\n\"open\nmore").unwrap_err().line, 2);
    }
}
