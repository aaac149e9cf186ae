//! The wire formats of dates (`YYYY-MM-DD`) and times (`HH:MM:SS`).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{NaiveDate, NaiveTime};

/// A calendar date, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

/// A date as `YYYY-MM-DD`.
#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => parse_date(s).map(Date).ok_or_else(|| {
                InputValueError::custom(format!("{s:?} is not a date (YYYY-MM-DD)"))
            }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// A time of day, `HH:MM:SS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time(pub NaiveTime);

/// A local time of day as `HH:MM:SS`.
#[Scalar(name = "Time")]
impl ScalarType for Time {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => parse_time(s)
                .map(Time)
                .ok_or_else(|| InputValueError::custom(format!("{s:?} is not a time (HH:MM:SS)"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%H:%M:%S").to_string())
    }
}

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
