//! The text of the ZKTeco push protocol: reading what terminals send (attendance lines,
//! command results, `INFO` and `options` values, serial numbers) and writing what they
//! read (handshake options, command lines, acknowledgements).
//!
//! Pure functions only: no database, no `Service`. `crate::service::terminals` decides
//! and `crate::iclock` carries; both use this module, and it uses neither, so the wire
//! format can be tested line by line on its own.

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{AppError, AppResult};

/// The longest PIN accepted: a student code.
const MAX_PIN_CHARS: usize = 64;
/// How much of a raw line is kept for review.
const MAX_LINE_CHARS: usize = 512;
/// The longest value kept from what a terminal says about itself (versions, `CMD=`).
const MAX_REPORTED_CHARS: usize = 64;
/// The plain acknowledgement: of an upload of any table but attendance, of command
/// results, and of a poll with no command due.
pub const OK: &str = "OK";

/// One line of an attendance upload, read but not yet judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttendanceLine {
    /// The line as sent, without its line ending (truncated for storage).
    pub raw: String,
    /// The PIN field as sent (trimmed, truncated).
    pub pin: String,
    /// The time field: `YYYY-MM-DD HH:MM:SS` when it parsed, else as sent (truncated).
    pub time: String,
    /// The parsed local date and time, or why the line cannot be read.
    pub parsed: Result<NaiveDateTime, String>,
}

impl AttendanceLine {
    /// What makes two lines the same record: PIN and time (per terminal).
    pub fn key(&self) -> (String, String) {
        (self.pin.clone(), self.time.clone())
    }
}

/// Reads an `ATTLOG` body: one record per line, tab-separated `PIN`, `YYYY-MM-DD HH:MM:SS`,
/// status, verify mode, work code and reserved fields. Tolerates `\r\n`, blank lines and
/// an `ATTLOG\t` prefix. Lines that cannot be read come back with the reason.
pub fn parse_attendance(body: &str) -> Vec<AttendanceLine> {
    body.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(parse_attendance_line)
        .collect()
}

/// Reads one `ATTLOG` line (without its line ending), as [`parse_attendance`] does.
pub fn parse_attendance_line(raw: &str) -> AttendanceLine {
    let record = raw.strip_prefix("ATTLOG\t").unwrap_or(raw);
    let mut fields = record.split('\t');
    let pin_field = fields.next().unwrap_or_default().trim();
    let time_field = fields.next().unwrap_or_default().trim();
    let pin = truncate(pin_field, MAX_PIN_CHARS);
    let parsed = if pin_field.is_empty() {
        Err("the PIN is empty".to_owned())
    } else if pin_field.chars().count() > MAX_PIN_CHARS {
        Err(format!("the PIN is longer than {MAX_PIN_CHARS} characters"))
    } else if pin_field
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        Err("the PIN contains spaces or control characters".to_owned())
    } else {
        NaiveDateTime::parse_from_str(time_field, "%Y-%m-%d %H:%M:%S")
            .map_err(|_| format!("the time {time_field:?} is not YYYY-MM-DD HH:MM:SS"))
    };
    let time = match &parsed {
        Ok(at) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => truncate(time_field, MAX_PIN_CHARS),
    };
    AttendanceLine {
        raw: truncate(raw, MAX_LINE_CHARS),
        pin,
        time,
        parsed,
    }
}

/// One command result a terminal reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    /// The command's id.
    pub id: i32,
    /// The terminal's return code (0 is success).
    pub return_code: i32,
    /// The command keyword it echoed (`CMD=`).
    pub reply: Option<String>,
}

/// Reads a `devicecmd` body: one `ID=<id>&Return=<code>&CMD=<cmd>` per line. Lines without
/// a numeric id and return code are skipped.
pub fn parse_command_results(body: &str) -> Vec<CommandResult> {
    body.lines()
        .filter_map(|line| {
            let mut id = None;
            let mut return_code = None;
            let mut reply = None;
            for pair in line.trim().split('&') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                match key.trim().to_ascii_lowercase().as_str() {
                    "id" => id = value.trim().parse::<i32>().ok(),
                    "return" => return_code = value.trim().parse::<i32>().ok(),
                    "cmd" => reply = clean(value, MAX_REPORTED_CHARS),
                    _ => {}
                }
            }
            Some(CommandResult {
                id: id?,
                return_code: return_code?,
                reply,
            })
        })
        .collect()
}

/// The push protocol version in a `pushver` value; `None` when nothing printable is left.
pub fn push_version(pushver: &str) -> Option<String> {
    clean(pushver, MAX_REPORTED_CHARS)
}

/// The firmware version in an `INFO` value (its first comma-separated field).
pub fn firmware_from_info(info: &str) -> Option<String> {
    clean(
        info.split(',').next().unwrap_or_default(),
        MAX_REPORTED_CHARS,
    )
}

/// The firmware version in an `options` upload (`FWVersion=...`, lines or comma lists,
/// keys sometimes prefixed with `~`).
pub fn firmware_from_options(body: &str) -> Option<String> {
    body.split(['\n', ','])
        .filter_map(|item| item.trim().split_once('='))
        .find(|(key, _)| {
            key.trim()
                .trim_start_matches('~')
                .eq_ignore_ascii_case("FWVersion")
        })
        .and_then(|(_, value)| clean(value, MAX_REPORTED_CHARS))
}

/// A serial number as terminals send it: letters, digits, `-`, `_` and `.`, 1 to 64 of them.
pub fn serial_number(serial: &str) -> AppResult<String> {
    let serial = serial.trim();
    if serial.is_empty() {
        return Err(AppError::invalid("SN", "is required"));
    }
    if serial.len() > 64
        || !serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(AppError::invalid(
            "SN",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(serial.to_owned())
}

/// The `TimeZone` option: the zone's current offset in whole hours, or in minutes when it
/// is not a whole number of hours (the push protocol reads values outside ±12 as minutes).
pub fn time_zone_option(zone: Tz, at: DateTime<Utc>) -> String {
    let seconds = zone
        .offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc();
    if seconds % 3600 == 0 {
        (seconds / 3600).to_string()
    } else {
        (seconds / 60).to_string()
    }
}

/// The handshake reply: `GET OPTION FROM: <SN>`, then one `key=value` line per option.
pub fn options_reply(serial: &str, options: &[(&str, String)]) -> String {
    let mut body = format!("GET OPTION FROM: {serial}\n");
    for (key, value) in options {
        body.push_str(&format!("{key}={value}\n"));
    }
    body
}

/// The reply to an attendance upload: `OK: <n>`, the lines taken. Like real servers',
/// it has no line ending.
pub fn taken_reply(taken: usize) -> String {
    format!("OK: {taken}")
}

/// The reply to a poll: one `C:<id>:<command>` line per command, or [`OK`] for none.
pub fn commands_reply<'a>(commands: impl IntoIterator<Item = (i32, &'a str)>) -> String {
    let body: String = commands
        .into_iter()
        .map(|(id, command)| format!("C:{id}:{command}\n"))
        .collect();
    if body.is_empty() { OK.to_owned() } else { body }
}

/// The command that writes a user onto a terminal: `pin` (a student code) and the name
/// shown on its screen.
pub fn update_user_command(pin: &str, first_name: &str, last_name: &str) -> String {
    format!(
        "DATA UPDATE USERINFO PIN={}\tName={} {}",
        command_field(pin),
        command_field(first_name),
        command_field(last_name),
    )
}

/// The command that removes a PIN from a terminal.
pub fn delete_user_command(pin: &str) -> String {
    format!("DATA DELETE USERINFO PIN={}", command_field(pin))
}

/// A value inside a command: tabs and line breaks would start new fields or commands.
fn command_field(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Trimmed, printable, at most `max` characters; `None` when nothing is left.
fn clean(value: &str, max: usize) -> Option<String> {
    let value: String = value
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    (!value.is_empty()).then_some(value)
}

fn truncate(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why a line could not be read; panics on a line that could.
    fn problem(line: &AttendanceLine) -> &str {
        match &line.parsed {
            Ok(at) => panic!("{:?} was read as {at}", line.raw),
            Err(problem) => problem,
        }
    }

    #[test]
    fn attendance_lines_tolerate_crlf_blank_lines_and_the_attlog_prefix() {
        let body = "0012\t2025-11-25 08:43:21\t0\t15\t0\t0\r\n\r\nATTLOG\t7\t2025-11-25 08:44:00\t0\t15\n\n";
        let lines = parse_attendance(body);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].pin, "0012", "leading zeros are kept");
        assert_eq!(lines[0].time, "2025-11-25 08:43:21");
        assert!(lines[0].parsed.is_ok());
        assert_eq!(lines[1].pin, "7");
        assert_eq!(lines[1].raw, "ATTLOG\t7\t2025-11-25 08:44:00\t0\t15");
    }

    #[test]
    fn unreadable_lines_say_why() {
        let lines = parse_attendance(
            "\t2025-11-25 08:00:00\nA1\t25/11/2025 08:00\nA 1\t2025-11-25 08:00:00\ngarbage",
        );
        let reasons: Vec<&str> = lines
            .iter()
            .map(|l| l.parsed.as_ref().map(|_| "").unwrap_err().as_str())
            .collect();
        assert_eq!(reasons[0], "the PIN is empty");
        assert!(reasons[1].contains("YYYY-MM-DD HH:MM:SS"));
        assert!(reasons[2].contains("spaces"));
        assert!(reasons[3].contains("is not"));
    }

    #[test]
    fn an_empty_body_has_no_lines() {
        assert!(parse_attendance("").is_empty());
        assert!(parse_attendance("\r\n\n \t \r\n").is_empty());
    }

    #[test]
    fn crlf_and_lf_line_ends_read_alike() {
        let crlf =
            parse_attendance("0012\t2025-11-25 08:43:21\t0\t15\r\n7\t2025-11-25 08:44:00\r\n");
        let lf = parse_attendance("0012\t2025-11-25 08:43:21\t0\t15\n7\t2025-11-25 08:44:00\n");
        assert_eq!(crlf, lf);
        assert_eq!(crlf[1].raw, "7\t2025-11-25 08:44:00", "no \\r is kept");
    }

    #[test]
    fn fields_are_split_by_tabs_not_spaces() {
        let padded = parse_attendance_line(" 0012 \t 2025-11-25 08:43:21 \t0");
        assert_eq!(padded.pin, "0012", "spaces around a field are trimmed");
        assert_eq!(padded.time, "2025-11-25 08:43:21");
        assert!(padded.parsed.is_ok());

        let spaced = parse_attendance_line("0012 2025-11-25 08:43:21 0 15");
        assert!(problem(&spaced).contains("spaces"), "{}", problem(&spaced));
        assert_eq!(spaced.time, "", "a line without tabs has no time field");
    }

    #[test]
    fn a_malformed_line_is_kept_with_what_was_sent() {
        let line = parse_attendance_line("0012\t2025-13-45 99:00:00\t0");
        assert_eq!(line.pin, "0012");
        assert_eq!(line.time, "2025-13-45 99:00:00", "kept as sent for review");
        assert_eq!(line.raw, "0012\t2025-13-45 99:00:00\t0");
        assert!(problem(&line).contains("YYYY-MM-DD HH:MM:SS"));

        let long_pin = "9".repeat(MAX_PIN_CHARS + 1);
        let line = parse_attendance_line(&format!("{long_pin}\t2025-11-25 08:43:21"));
        assert!(problem(&line).contains("longer than 64"));
        assert_eq!(
            line.pin.chars().count(),
            MAX_PIN_CHARS,
            "truncated for storage"
        );

        let line = parse_attendance_line(&format!("1\t{}", "x".repeat(2 * MAX_LINE_CHARS)));
        assert_eq!(
            line.raw.chars().count(),
            MAX_LINE_CHARS,
            "truncated for storage"
        );
    }

    #[test]
    fn lines_with_one_pin_and_time_share_a_key() {
        let lines =
            parse_attendance("7\t2025-11-25 08:44:00\t0\nATTLOG\t7\t2025-11-25 08:44:00\t1");
        assert_eq!(lines[0].key(), lines[1].key());
    }

    #[test]
    fn command_results_are_read_per_line() {
        let results =
            parse_command_results("ID=4&Return=0&CMD=DATA\r\nID=5&Return=-1002&CMD=DATA\nnoise\n");
        assert_eq!(
            results,
            vec![
                CommandResult {
                    id: 4,
                    return_code: 0,
                    reply: Some("DATA".into())
                },
                CommandResult {
                    id: 5,
                    return_code: -1002,
                    reply: Some("DATA".into())
                },
            ]
        );
    }

    #[test]
    fn firmware_comes_from_info_or_options() {
        assert_eq!(
            firmware_from_info("Ver 8.0.4.2-20170911,4,0,23,192.168.1.201,10,7,15,0,111"),
            Some("Ver 8.0.4.2-20170911".into())
        );
        assert_eq!(
            firmware_from_options("~DeviceName=SpeedFace,FWVersion=Ver 6.60 Apr 28 2017\n"),
            Some("Ver 6.60 Apr 28 2017".into())
        );
        assert_eq!(firmware_from_options("IPAddress=10.0.0.2"), None);
    }

    #[test]
    fn a_push_version_is_trimmed_and_printable() {
        assert_eq!(push_version(" 2.4.1\r"), Some("2.4.1".into()));
        assert_eq!(push_version(" \t"), None);
    }

    #[test]
    fn serial_numbers_are_letters_digits_and_three_marks() {
        assert_eq!(
            serial_number(" CKUT-2019_60.123 ").ok(),
            Some("CKUT-2019_60.123".into())
        );
        assert!(serial_number("").is_err());
        assert!(serial_number("A B").is_err());
        assert!(serial_number(&"A".repeat(65)).is_err());
    }

    #[test]
    fn the_time_zone_option_is_hours_or_minutes() {
        let at = Utc::now();
        assert_eq!(time_zone_option(Tz::UTC, at), "0");
        assert_eq!(time_zone_option(Tz::Africa__Addis_Ababa, at), "3");
        assert_eq!(time_zone_option(Tz::Asia__Kolkata, at), "330");
    }

    #[test]
    fn the_handshake_names_the_terminal_then_lists_its_options() {
        let options = [("ATTLOGStamp", "0".to_owned()), ("Delay", "10".to_owned())];
        assert_eq!(
            options_reply("CKUT201960123", &options),
            "GET OPTION FROM: CKUT201960123\nATTLOGStamp=0\nDelay=10\n"
        );
    }

    #[test]
    fn acknowledgements_have_no_line_ending() {
        assert_eq!(taken_reply(3), "OK: 3");
        assert_eq!(OK, "OK");
    }

    #[test]
    fn a_poll_hands_out_one_command_line_each_or_ok() {
        assert_eq!(commands_reply([]), "OK");
        assert_eq!(
            commands_reply([
                (4, "DATA DELETE USERINFO PIN=7"),
                (5, "DATA DELETE USERINFO PIN=8")
            ]),
            "C:4:DATA DELETE USERINFO PIN=7\nC:5:DATA DELETE USERINFO PIN=8\n"
        );
    }

    #[test]
    fn user_commands_have_the_push_protocol_text() {
        assert_eq!(
            update_user_command("0012", "Abebe", "Kebede"),
            "DATA UPDATE USERINFO PIN=0012\tName=Abebe Kebede"
        );
        assert_eq!(delete_user_command("0012"), "DATA DELETE USERINFO PIN=0012");
    }

    #[test]
    fn command_fields_cannot_smuggle_fields_or_commands() {
        assert_eq!(command_field("a\tb\nc"), "a b c");
        assert_eq!(
            update_user_command("1\t2", "A\nDATA DELETE", "B"),
            "DATA UPDATE USERINFO PIN=1 2\tName=A DATA DELETE B"
        );
    }
}
