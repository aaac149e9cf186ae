//! When each class of the timetable takes place: the dates of a slot in a range, its
//! instants in the school's zone across daylight-saving changes, and its status. Pure
//! functions over rows already read, so every listing costs a constant number of
//! statements however long the range.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::entities::{attendance_session, class_cancellation, holiday, schedule_slot, term};

/// Where a class stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OccurrenceStatus {
    /// Still to come (or due, its session not opened yet).
    Scheduled,
    /// Its session is open.
    Open,
    /// Its session has closed.
    Closed,
    /// It ended and no session was ever opened for it.
    Missed,
    /// Somebody cancelled it.
    Cancelled,
    /// It falls on a holiday of its term.
    Holiday,
}

/// One class: a slot on a date.
#[derive(Clone, Debug)]
pub struct Occurrence {
    /// The weekly slot.
    pub slot: schedule_slot::Model,
    /// The local date.
    pub date: NaiveDate,
    /// When it starts (the first valid instant at or after the local start time).
    pub starts_at: DateTime<Utc>,
    /// When it ends, and its session closes.
    pub ends_at: DateTime<Utc>,
    /// When its session opens.
    pub opens_at: DateTime<Utc>,
    /// Where it stands at the instant it was listed.
    pub status: OccurrenceStatus,
    /// Its session, once opened.
    pub session: Option<attendance_session::Model>,
    /// Its cancellation, if any.
    pub cancellation: Option<class_cancellation::Model>,
    /// The holiday it falls on, if any.
    pub holiday: Option<String>,
}

/// What a range of classes is computed from: rows read in one statement each.
#[derive(Default)]
pub struct Calendar {
    /// The slots (deleted ones included: their classes before the deletion stay).
    pub slots: Vec<schedule_slot::Model>,
    /// Their terms, by id.
    pub terms: HashMap<i32, term::Model>,
    /// Those terms' holidays.
    pub holidays: Vec<holiday::Model>,
    /// Cancellations in the range, by (slot, date).
    pub cancellations: HashMap<(i32, NaiveDate), class_cancellation::Model>,
    /// Sessions of classes in the range, by (slot, date).
    pub sessions: HashMap<(i32, NaiveDate), attendance_session::Model>,
}

/// The instant a local date and time names in `zone`: in a repeated hour the first one, in
/// a skipped hour the first valid instant after it (the end of the gap).
pub fn first_instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let wanted = date.and_time(time);
    let mut local = wanted;
    // Gaps are whole minutes long and at most a few hours; walk minute by minute from the
    // start of the wanted minute to the gap's end.
    for _ in 0..=(6 * 60) {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => {
                let minute = local - Duration::seconds(local.and_utc().timestamp() % 60);
                local = minute + Duration::minutes(1);
            }
        }
    }
    // No zone has a gap this long; read it as UTC rather than fail.
    Utc.from_utc_datetime(&wanted)
}

impl Calendar {
    /// Every class of the calendar's slots between `from` and `to` (local dates, both
    /// included), in time order, with its status at `now`.
    pub fn occurrences(
        &self,
        zone: Tz,
        open_early: Duration,
        from: NaiveDate,
        to: NaiveDate,
        now: DateTime<Utc>,
    ) -> Vec<Occurrence> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let Some(term) = self.terms.get(&slot.term_id) else {
                continue;
            };
            let first = from.max(term.starts_on);
            let last = to.min(term.ends_on);
            let Some(mut date) = next_weekday(first, slot.weekday) else {
                continue;
            };
            while date <= last {
                if let Some(occurrence) = self.occurrence(zone, open_early, slot, date, now) {
                    out.push(occurrence);
                }
                date += Duration::days(7);
            }
        }
        // Classes held before their slot moved to another day or time stay listed, as
        // their sessions recorded them.
        let listed: HashSet<(i32, NaiveDate)> = out.iter().map(|o| (o.slot.id, o.date)).collect();
        for ((slot_id, date), session) in &self.sessions {
            if listed.contains(&(*slot_id, *date)) || *date < from || *date > to {
                continue;
            }
            let Some(slot) = self.slots.iter().find(|s| s.id == *slot_id) else {
                continue;
            };
            out.push(Occurrence {
                slot: slot.clone(),
                date: *date,
                starts_at: session.starts_at,
                ends_at: session.closes_at,
                opens_at: session.created_at,
                status: if session.is_active {
                    OccurrenceStatus::Open
                } else {
                    OccurrenceStatus::Closed
                },
                session: Some(session.clone()),
                cancellation: None,
                holiday: None,
            });
        }
        out.sort_by_key(|o| (o.starts_at, o.slot.id));
        out
    }

    fn occurrence(
        &self,
        zone: Tz,
        open_early: Duration,
        slot: &schedule_slot::Model,
        date: NaiveDate,
        now: DateTime<Utc>,
    ) -> Option<Occurrence> {
        let starts_at = first_instant(zone, date, slot.start_time);
        let mut ends_at = first_instant(zone, date, slot.end_time);
        if ends_at <= starts_at {
            // Both ends fell in one skipped hour: keep the class's length.
            ends_at = starts_at + (slot.end_time - slot.start_time);
        }
        // A deleted slot keeps the classes that started before its deletion.
        if slot.deleted_at.is_some_and(|deleted| deleted <= starts_at) {
            return None;
        }
        let opens_at = starts_at - open_early;
        let session = self.sessions.get(&(slot.id, date)).cloned();
        // A held class is what its session recorded, even if the slot changed since.
        let (starts_at, ends_at) = match &session {
            Some(s) => (s.starts_at, s.closes_at),
            None => (starts_at, ends_at),
        };
        let cancellation = self.cancellations.get(&(slot.id, date)).cloned();
        let holiday = self
            .holidays
            .iter()
            .find(|h| h.term_id == slot.term_id && h.starts_on <= date && date <= h.ends_on)
            .map(|h| h.name.clone());
        let status = match (&session, &cancellation, &holiday) {
            (Some(s), _, _) if s.is_active => OccurrenceStatus::Open,
            (Some(_), _, _) => OccurrenceStatus::Closed,
            (None, Some(_), _) => OccurrenceStatus::Cancelled,
            (None, None, Some(_)) => OccurrenceStatus::Holiday,
            (None, None, None) if now >= ends_at => OccurrenceStatus::Missed,
            (None, None, None) => OccurrenceStatus::Scheduled,
        };
        Some(Occurrence {
            slot: slot.clone(),
            date,
            starts_at,
            ends_at,
            opens_at,
            status,
            session,
            cancellation,
            holiday,
        })
    }
}

/// The first date on or after `from` that falls on ISO weekday `weekday` (1 = Monday).
fn next_weekday(from: NaiveDate, weekday: i16) -> Option<NaiveDate> {
    if !(1..=7).contains(&weekday) {
        return None;
    }
    let today = from.weekday().number_from_monday() as i64;
    let ahead = (weekday as i64 - today).rem_euclid(7);
    Some(from + Duration::days(ahead))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn time(s: &str) -> NaiveTime {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_skipped_time_starts_at_the_end_of_the_gap_and_a_repeated_one_at_its_first_instant() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2027-03-28: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            first_instant(berlin, day("2027-03-28"), time("02:30:00")),
            utc("2027-03-28T01:00:00Z")
        );
        assert_eq!(
            first_instant(berlin, day("2027-03-28"), time("03:15:00")),
            utc("2027-03-28T01:15:00Z")
        );
        // 2027-10-31: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            first_instant(berlin, day("2027-10-31"), time("02:30:00")),
            utc("2027-10-31T00:30:00Z")
        );
        assert_eq!(
            first_instant(berlin, day("2027-01-04"), time("08:00:00")),
            utc("2027-01-04T07:00:00Z")
        );
    }

    #[test]
    fn weekdays_are_found_forward_from_a_date() {
        // 2027-03-01 is a Monday.
        assert_eq!(next_weekday(day("2027-03-01"), 1), Some(day("2027-03-01")));
        assert_eq!(next_weekday(day("2027-03-01"), 3), Some(day("2027-03-03")));
        assert_eq!(next_weekday(day("2027-03-02"), 1), Some(day("2027-03-08")));
        assert_eq!(next_weekday(day("2027-03-01"), 8), None);
    }
}
