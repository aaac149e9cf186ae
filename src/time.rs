//! The wire formats of dates (`YYYY-MM-DD`) and times (`HH:MM:SS`), read the same way by
//! GraphQL's scalars and by the REST endpoints.

use chrono::{NaiveDate, NaiveTime};

/// Parses `HH:MM:SS` strictly (no fractions, no leap seconds).
pub fn parse_time(s: &str) -> Option<NaiveTime> {
    if s.len() != 8 {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M:%S").ok()
}

/// Parses `YYYY-MM-DD` strictly.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}
