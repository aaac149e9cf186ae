//! Reading a `.env` file as python-dotenv does, so the original Django design's file works
//! unchanged: unquoted values may hold spaces (` #` starts a comment), `export KEY=value`,
//! single quotes are literal, double quotes know `\n`, `\"` and `\\`, and `${VAR}` or
//! `${VAR:-default}` expand in unquoted and double-quoted values. Unlike python-dotenv, a
//! line that cannot be read is an error naming its line, never skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A `.env` line that cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The 1-based line the bad entry starts on.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// A `.env` file that exists but cannot be used; start-up stops on it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (or the search for it failed).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file, or the directory being searched.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A line could not be parsed.
    #[error(".env {source} ({})", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and the reason.
        source: ParseError,
    },
}

/// The variables of one `.env` file (none when there is no file).
#[derive(Debug, Default)]
pub struct DotEnv {
    path: Option<PathBuf>,
    vars: HashMap<String, String>,
}

impl DotEnv {
    /// Reads the `.env` nearest to `dir` (it, then its parents); an empty set when there is
    /// none. `env` is the real environment, which `${VAR}` consults before the file.
    pub fn load_nearest(
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LoadError> {
        let Some(path) = find(dir)? else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let pairs = parse(&text, env).map_err(|source| LoadError::Parse {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path: Some(path),
            vars: pairs.into_iter().collect(),
        })
    }

    /// The file read, if one was found.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The file's value of `name` (the last one, if it is set twice).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// The nearest `.env` file from `dir` upwards. A directory that cannot be searched is an
/// error rather than a reason to skip the file.
pub fn find(dir: &Path) -> Result<Option<PathBuf>, LoadError> {
    for dir in dir.ancestors() {
        let candidate = dir.join(".env");
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => return Ok(Some(candidate)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LoadError::Read {
                    path: candidate,
                    source,
                });
            }
        }
    }
    Ok(None)
}

/// Parses `.env` text into its (key, value) pairs in file order. `${VAR}` takes `env`'s
/// value first and then the file's earlier ones, as python-dotenv does without override.
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ParseError> {
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut cursor = Cursor {
        rest: &text,
        line: 1,
    };
    loop {
        cursor.skip_while(char::is_whitespace);
        if cursor.rest.is_empty() {
            return Ok(pairs);
        }
        if cursor.rest.starts_with('#') {
            cursor.skip_while(|c| c != '\n');
            continue;
        }
        let line = cursor.line;
        let fail = |message: String| ParseError { line, message };
        if let Some(after) = cursor.rest.strip_prefix("export")
            && after.starts_with([' ', '\t'])
        {
            cursor.rest = after;
            cursor.skip_while(is_blank);
        }
        let key = cursor.take_while(|c| c != '=' && c != '#' && !c.is_whitespace());
        if key.is_empty() {
            return Err(fail("expected KEY=value".into()));
        }
        if !is_name(key) {
            return Err(fail(format!(
                "{key:?} is not a variable name (letters, digits and _)"
            )));
        }
        cursor.skip_while(is_blank);
        let Some(after) = cursor.rest.strip_prefix('=') else {
            return Err(fail(format!("expected = after {key}")));
        };
        cursor.rest = after;
        cursor.skip_while(is_blank);
        let lookup = |name: &str| {
            env(name).or_else(|| {
                pairs
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        let value = match cursor.rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let raw = cursor
                    .quoted(quote)
                    .ok_or_else(|| fail(format!("the value of {key} has no closing {quote}")))?;
                // After the closing quote only a comment may follow on the line.
                cursor.skip_while(is_blank);
                if cursor.rest.starts_with('#') {
                    cursor.skip_while(|c| c != '\n');
                }
                if !(cursor.rest.is_empty() || cursor.rest.starts_with('\n')) {
                    return Err(fail(format!(
                        "unexpected text after the closing {quote} of {key}"
                    )));
                }
                if quote == '\'' {
                    unescape(&raw, |c| matches!(c, '\\' | '\''))
                } else {
                    expand(&unescape(&raw, |c| "\\'\"abfnrtv".contains(c)), lookup)
                }
            }
            _ => {
                let raw = cursor.take_while(|c| c != '\n');
                expand(strip_comment(raw).trim_end(), lookup)
            }
        };
        pairs.push((key.to_owned(), value));
    }
}

/// The unread part of the text and the line it starts on.
struct Cursor<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let end = self.rest.find(|c| !keep(c)).unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.line += taken.matches('\n').count();
        self.rest = rest;
        taken
    }

    fn skip_while(&mut self, skip: impl Fn(char) -> bool) {
        self.take_while(skip);
    }

    /// The text between `quote` and its closing match (a backslash escapes a quote), with
    /// the quotes consumed; `None` when the quote is never closed.
    fn quoted(&mut self, quote: char) -> Option<String> {
        let body = &self.rest[quote.len_utf8()..];
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                let raw = &body[..i];
                self.line += raw.matches('\n').count();
                self.rest = &body[i + quote.len_utf8()..];
                return Some(raw.to_owned());
            }
        }
        None
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An unquoted value ends where whitespace is followed by `#`.
fn strip_comment(value: &str) -> &str {
    let mut previous_blank = false;
    for (i, c) in value.char_indices() {
        if c == '#' && previous_blank {
            return &value[..i];
        }
        previous_blank = c.is_whitespace();
    }
    value
}

/// Decodes the backslash escapes `known` accepts; any other backslash stays as written.
fn unescape(raw: &str, known: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some(next) if known(next) => {
                chars.next();
                out.push(match next {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    other => other,
                });
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// Replaces `${NAME}` and `${NAME:-default}`; an unset name without a default is empty, and
/// anything else that starts with `${` stays as written.
fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let reference = after.find('}').and_then(|end| {
            let inner = &after[..end];
            let (name, default) = match inner.split_once(':') {
                None => (inner, None),
                Some((name, default)) => (name, Some(default.strip_prefix('-')?)),
            };
            Some((name, default, end))
        });
        match reference {
            Some((name, default, end)) => {
                out.push_str(&lookup(name).unwrap_or_else(|| default.unwrap_or("").to_owned()));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<(String, String)> {
        parse(text, |_| None).expect("parses")
    }

    fn value(text: &str) -> String {
        let pairs = read(text);
        assert_eq!(pairs.len(), 1, "{pairs:?}");
        pairs[0].1.clone()
    }

    fn error(text: &str) -> ParseError {
        parse(text, |_| None).expect_err("is refused")
    }

    #[test]
    fn the_django_design_file_reads_as_python_dotenv_reads_it() {
        let text = "DEBUG=True\nSECRET_KEY=your-secret-key\n\
                    ALLOWED_HOSTS=localhost,127.0.0.1, [::1]\n\
                    DATABASE_URL=sqlite:///db.sqlite3\nJWT_ACCESS_TOKEN_LIFETIME=60\n\
                    JWT_REFRESH_TOKEN_LIFETIME=1440\n\
                    CORS_ALLOWED_ORIGINS=http://localhost:3000, https://your-frontend-domain.com\n";
        let pairs = read(text);
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(pairs.len(), 7);
        assert_eq!(get("DEBUG"), Some("True"));
        assert_eq!(get("ALLOWED_HOSTS"), Some("localhost,127.0.0.1, [::1]"));
        assert_eq!(get("DATABASE_URL"), Some("sqlite:///db.sqlite3"));
        assert_eq!(
            get("CORS_ALLOWED_ORIGINS"),
            Some("http://localhost:3000, https://your-frontend-domain.com")
        );
    }

    #[test]
    fn unquoted_values_keep_inner_spaces_and_lose_trailing_ones_and_comments() {
        assert_eq!(value("A=a b  c   \n"), "a b  c");
        assert_eq!(value("A=a b # a comment"), "a b");
        assert_eq!(value("A=a\t# tab then comment"), "a");
        assert_eq!(value("A=abc#def"), "abc#def");
        assert_eq!(value("A=#not-a-comment"), "#not-a-comment");
        assert_eq!(value("A="), "");
        assert_eq!(value("A = spaced"), "spaced");
    }

    #[test]
    fn comments_blank_lines_export_and_crlf_are_fine() {
        let pairs = read("\u{feff}# header\r\n\r\n  export A=1\r\n\t# indented comment\nB=2");
        assert_eq!(
            pairs,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        // `export` alone is a key like any other.
        assert_eq!(read("export=x"), vec![("export".into(), "x".into())]);
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(value(r"A='a ${B} \n # c'"), r"a ${B} \n # c");
        assert_eq!(value(r"A='it\'s' # comment"), "it's");
    }

    #[test]
    fn double_quotes_decode_escapes_and_may_span_lines() {
        assert_eq!(value(r#"A="x\ny""#), "x\ny");
        assert_eq!(value(r#"A="say \"hi\" \\ \d""#), r#"say "hi" \ \d"#);
        assert_eq!(value("A=\"one\ntwo\" # comment"), "one\ntwo");
        assert_eq!(value(r#"A=" # kept ""#), " # kept ");
    }

    #[test]
    fn variables_expand_from_the_environment_first_then_earlier_lines() {
        let env = |name: &str| (name == "HOME").then(|| "/home/u".to_owned());
        let pairs = parse(
            "HOME=/ignored\nDIR=${HOME}/app\nDB=\"${DIR}/db ${MISSING}|${MISSING:-fallback}\"\n\
             LIT='${DIR}'\nODD=${DIR:x} ${unclosed",
            env,
        )
        .unwrap();
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("DIR"), "/home/u/app");
        assert_eq!(get("DB"), "/home/u/app/db |fallback");
        assert_eq!(get("LIT"), "${DIR}");
        assert_eq!(get("ODD"), "${DIR:x} ${unclosed");
    }

    #[test]
    fn a_set_but_empty_variable_wins_over_the_default() {
        let env = |name: &str| (name == "EMPTY").then(String::new);
        let pairs = parse("A=${EMPTY:-default}", env).unwrap();
        assert_eq!(pairs[0].1, "");
    }

    #[test]
    fn unreadable_lines_are_refused_with_their_line_number() {
        let e = error("A=1\n\nDEBUG True\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("expected = after DEBUG"), "{e}");
        assert_eq!(e.to_string(), "line 3: expected = after DEBUG");
        assert_eq!(error("A=1\nNOVALUE").line, 2);
        assert_eq!(error("=x").line, 1);
        let e = error("A=1\nMY-KEY=x");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not a variable name"), "{e}");
        let e = error("A=1\nB=\"never closed\nC=3\n");
        assert_eq!(
            e.line, 2,
            "an unterminated quote names the line it opened on"
        );
        assert!(e.message.contains("no closing"), "{e}");
        assert_eq!(error("A='x'y").line, 1);
        // Lines are counted through multi-line values.
        assert_eq!(error("A=\"a\nb\"\nB 2").line, 3);
    }

    #[test]
    fn the_shipped_example_file_reads_into_a_valid_configuration() {
        let pairs = read(include_str!("../.env.example"));
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("ALLOWED_HOSTS").as_deref(),
            Some("localhost,127.0.0.1, [::1]")
        );
        let config = crate::config::Config::from_lookup(get).expect("a valid configuration");
        assert_eq!(config.allowed_hosts, vec!["localhost", "127.0.0.1", "::1"]);
    }

    #[test]
    fn the_nearest_file_is_found_in_a_parent() {
        let root =
            std::env::temp_dir().join(format!("att_dotenv_{}", crate::auth::random_token(6)));
        let child = root.join("a").join("b");
        std::fs::create_dir_all(&child).unwrap();
        std::fs::write(root.join(".env"), "FOUND=parent value\n").unwrap();
        let env = DotEnv::load_nearest(&child, |_| None).unwrap();
        assert_eq!(env.get("FOUND"), Some("parent value"));
        std::fs::write(root.join("a").join(".env"), "BAD LINE\n").unwrap();
        let err = DotEnv::load_nearest(&child, |_| None).unwrap_err();
        assert!(err.to_string().starts_with(".env line 1: "), "{err}");
        let _ = std::fs::remove_dir_all(root);
    }
}
