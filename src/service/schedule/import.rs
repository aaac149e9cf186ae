//! The timetable import: a CSV of `course_code,device_id,weekday,start_time,end_time` for
//! one term, checked whole before anything is written, like the roster import. A line
//! equal to a live slot is left as it is, so importing the same file again is harmless.

use std::collections::HashMap;

use chrono::NaiveTime;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use crate::auth::Principal;
use crate::entities::{course, device, schedule_slot, term};
use crate::error::{AppError, AppResult};
use crate::service::directory::import::{BadLine, ImportOutcome, ImportReport, parse_csv};
use crate::service::schedule::{SlotFacts, clash, live_slot_facts};
use crate::service::sql::write_transaction;
use crate::service::{Service, access};

/// The columns of a timetable file, in order (the header line is optional).
pub const TIMETABLE_HEADER: [&str; 5] = [
    "course_code",
    "device_id",
    "weekday",
    "start_time",
    "end_time",
];

/// One checked line.
struct Line {
    line: usize,
    course_id: i32,
    facts: SlotFacts,
}

impl Service {
    /// Imports slots into the term named `term` (its name, or its id). Every line is
    /// checked (course, device, weekday, times, and overlaps with live slots and with
    /// earlier lines) before anything is written; one bad line rejects the whole file
    /// with every bad line and its reason. Admins (and the command line, as the system).
    pub async fn import_timetable(
        &self,
        actor: &Principal,
        term: &str,
        text: &str,
    ) -> AppResult<ImportOutcome> {
        access::require_admin(actor)?;
        let term = self.term_named(term).await?;
        let records = match parse_csv(text) {
            Ok(records) => records,
            Err(bad) => return Ok(ImportOutcome::Rejected(vec![bad])),
        };
        let records = match records.first() {
            Some((_, first))
                if first.len() == TIMETABLE_HEADER.len()
                    && first
                        .iter()
                        .zip(TIMETABLE_HEADER)
                        .all(|(a, b)| a.trim().eq_ignore_ascii_case(b)) =>
            {
                &records[1..]
            }
            _ => &records[..],
        };
        if records.is_empty() {
            return Err(AppError::invalid("file", "has no timetable lines"));
        }
        let courses: HashMap<String, course::Model> = course::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.code.clone(), c))
            .collect();
        let devices: HashMap<String, device::Model> = device::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect();
        let live = live_slot_facts(&self.db, None).await?;

        let mut bad = Vec::new();
        let mut lines: Vec<Line> = Vec::new();
        let mut unchanged = 0;
        for (number, fields) in records {
            let checked = check_line(*number, fields, &courses, &devices, &term);
            let line = match checked {
                Ok(line) => line,
                Err(reason) => {
                    bad.push(BadLine {
                        line: *number,
                        reason,
                    });
                    continue;
                }
            };
            // The same slot in the same term is already there: nothing to do.
            if live.iter().any(|l| same_slot(l, &line.facts)) {
                unchanged += 1;
                continue;
            }
            if let Some(earlier) = lines.iter().find(|l| same_slot(&l.facts, &line.facts)) {
                bad.push(BadLine {
                    line: *number,
                    reason: format!("repeats line {}", earlier.line),
                });
                continue;
            }
            let against_live = live.iter().find_map(|l| clash(&line.facts, l));
            let against_file = lines.iter().find_map(|earlier| {
                clash(&line.facts, &earlier.facts).map(|_| {
                    format!(
                        "overlaps line {} on the same device or teacher",
                        earlier.line
                    )
                })
            });
            match (against_live, against_file) {
                (Some(conflict), _) => bad.push(BadLine {
                    line: *number,
                    reason: conflict.to_string(),
                }),
                (None, Some(reason)) => bad.push(BadLine {
                    line: *number,
                    reason,
                }),
                (None, None) => lines.push(line),
            }
        }
        if !bad.is_empty() {
            return Ok(ImportOutcome::Rejected(bad));
        }
        let created = lines.len();
        let txn = self.writer.begin_with_options(write_transaction()).await?;
        let at = self.now();
        for line in lines {
            schedule_slot::ActiveModel {
                course_id: Set(line.course_id),
                term_id: Set(term.id),
                device_id: Set(line.facts.device_id),
                weekday: Set(line.facts.weekday),
                start_time: Set(line.facts.start_time),
                end_time: Set(line.facts.end_time),
                created_at: Set(at),
                deleted_at: Set(None),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        txn.commit().await?;
        self.timetable_changed();
        Ok(ImportOutcome::Applied(ImportReport {
            created,
            updated: 0,
            unchanged,
        }))
    }

    /// The term with this name, or this id.
    async fn term_named(&self, name: &str) -> AppResult<term::Model> {
        let name = name.trim();
        let by_name = term::Entity::find()
            .filter(term::Column::Name.eq(name))
            .one(&self.db)
            .await?;
        let found = match (by_name, name.parse::<i32>()) {
            (Some(term), _) => Some(term),
            (None, Ok(id)) => term::Entity::find_by_id(id).one(&self.db).await?,
            (None, Err(_)) => None,
        };
        found.ok_or_else(|| AppError::invalid("term", format!("no term is named {name:?}")))
    }
}

/// Whether two slots are the same class in the same term dates.
fn same_slot(a: &SlotFacts, b: &SlotFacts) -> bool {
    a.device_id == b.device_id
        && a.course_code == b.course_code
        && a.weekday == b.weekday
        && a.start_time == b.start_time
        && a.end_time == b.end_time
        && a.term_starts == b.term_starts
        && a.term_ends == b.term_ends
}

/// Checks one line's fields; the reason names the column at fault.
fn check_line(
    line: usize,
    fields: &[String],
    courses: &HashMap<String, course::Model>,
    devices: &HashMap<String, device::Model>,
    term: &term::Model,
) -> Result<Line, String> {
    let [course_code, device_code, weekday, start, end] = fields else {
        return Err(format!(
            "expected {} columns ({}), found {}",
            TIMETABLE_HEADER.len(),
            TIMETABLE_HEADER.join(","),
            fields.len()
        ));
    };
    let course = courses
        .get(course_code.trim())
        .ok_or_else(|| format!("course_code: no course has code {:?}", course_code.trim()))?;
    let device = devices
        .get(device_code.trim())
        .ok_or_else(|| format!("device_id: no device has code {:?}", device_code.trim()))?;
    let weekday = parse_weekday(weekday)
        .ok_or_else(|| format!("weekday: {:?} is not a day of the week", weekday.trim()))?;
    let start_time = parse_time(start)
        .ok_or_else(|| format!("start_time: {:?} is not a time (HH:MM:SS)", start.trim()))?;
    let end_time = parse_time(end)
        .ok_or_else(|| format!("end_time: {:?} is not a time (HH:MM:SS)", end.trim()))?;
    if end_time <= start_time {
        return Err("end_time: must be after start_time".into());
    }
    Ok(Line {
        line,
        course_id: course.id,
        facts: SlotFacts {
            id: None,
            course_code: course.code.clone(),
            teacher_id: course.teacher_id,
            device_id: device.id,
            term_starts: term.starts_on,
            term_ends: term.ends_on,
            weekday,
            start_time,
            end_time,
        },
    })
}

/// A weekday by name (`MONDAY`, `Monday`, `mon`) or ISO number (1 = Monday).
pub fn parse_weekday(text: &str) -> Option<i16> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(n) = text.parse::<i16>() {
        return (1..=7).contains(&n).then_some(n);
    }
    let names = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    names
        .iter()
        .position(|name| text.len() >= 3 && name.starts_with(&text))
        .map(|i| i as i16 + 1)
}

/// `HH:MM:SS` or `HH:MM`.
fn parse_time(text: &str) -> Option<NaiveTime> {
    let text = text.trim();
    NaiveTime::parse_from_str(text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_and_times_are_read_as_people_write_them() {
        assert_eq!(parse_weekday("MONDAY"), Some(1));
        assert_eq!(parse_weekday(" friday "), Some(5));
        assert_eq!(parse_weekday("Sun"), Some(7));
        assert_eq!(parse_weekday("3"), Some(3));
        assert_eq!(parse_weekday("8"), None);
        assert_eq!(parse_weekday("mo"), None);
        assert_eq!(parse_weekday("someday"), None);
        assert_eq!(parse_time("08:30"), NaiveTime::from_hms_opt(8, 30, 0));
        assert_eq!(parse_time("08:30:15"), NaiveTime::from_hms_opt(8, 30, 15));
        assert_eq!(parse_time("25:00"), None);
    }
}
