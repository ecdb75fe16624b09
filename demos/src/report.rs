//! The `RESULT key=value ...` line each mode prints on stdout, and a plain-text table.

use std::fmt;

/// `print!` on stdout that drops its text when stdout is closed (the reader went away, as
/// in `backpressure | head -1`) instead of panicking with "failed printing to stdout".
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::write!(::std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` on stdout that drops its line when stdout is closed, as [`out!`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprint!` on stderr that drops its text when stderr is closed (`2>&1 | head -1`),
/// where `eprint!` would panic.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::write!(::std::io::stderr().lock(), $($arg)*);
    }};
}

/// `eprintln!` on stderr that drops its line when stderr is closed, as [`err!`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr().lock(), $($arg)*);
    }};
}

/// One machine-readable result: `RESULT mode=common tasks=1000 wall_s=0.52 ...`.
///
/// Keys and values never contain spaces or `=`; values that would are replaced by `_`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultLine {
    fields: Vec<(String, String)>,
}

impl ResultLine {
    /// A line with `mode=<mode>` as its first field.
    pub fn new(mode: &str) -> Self {
        let mut line = ResultLine::default();
        line.push("mode", mode);
        line
    }

    /// Appends `key=value` (replacing an existing `key`).
    pub fn push(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        let clean = |s: &str| s.replace([' ', '=', '\t', '\n'], "_");
        let (key, value) = (clean(key), clean(&value.to_string()));
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a number, if present and numeric.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.get(key)?.parse().ok()
    }

    /// The `mode` field (empty if missing).
    pub fn mode(&self) -> &str {
        self.get("mode").unwrap_or("")
    }

    /// Parses one line; `None` unless it starts with `RESULT ` and every field is `k=v`.
    pub fn parse(line: &str) -> Option<ResultLine> {
        let rest = line.trim().strip_prefix("RESULT ")?;
        let mut fields = Vec::new();
        for field in rest.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            fields.push((k.to_string(), v.to_string()));
        }
        Some(ResultLine { fields })
    }

    /// Every `RESULT` line in `text`.
    pub fn find_all(text: &str) -> Vec<ResultLine> {
        text.lines().filter_map(ResultLine::parse).collect()
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RESULT")?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Renders rows as a left-aligned first column and right-aligned others, with a rule under
/// the header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        line.trim_end().to_string()
    };
    let mut out = render(header.to_vec());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (columns - 1)));
    out.push('\n');
    for row in rows {
        out.push_str(&render(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut line = ResultLine::new("common");
        line.push("tasks", 20_000)
            .push("wall_s", format!("{:.3}", 1.5));
        let text = line.to_string();
        assert_eq!(text, "RESULT mode=common tasks=20000 wall_s=1.500");
        let back = ResultLine::parse(&text).unwrap();
        assert_eq!(back, line);
        assert_eq!(back.num("tasks"), Some(20_000.0));
        assert_eq!(back.mode(), "common");
    }

    #[test]
    fn cleans_values_and_replaces_keys() {
        let mut line = ResultLine::new("x");
        line.push("why", "a b=c").push("why", "d e");
        assert_eq!(line.to_string(), "RESULT mode=x why=d_e");
    }

    #[test]
    fn rejects_other_lines() {
        assert!(ResultLine::parse("hello").is_none());
        assert!(ResultLine::parse("RESULT mode").is_none());
        let found = ResultLine::find_all("noise\nRESULT mode=a\nRESULT mode=b n=1\n");
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].num("n"), Some(1.0));
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["mode", "n"],
            &[
                vec!["common".into(), "1".into()],
                vec!["s".into(), "100".into()],
            ],
        );
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[0], "mode      n");
        assert_eq!(lines[2], "common    1");
        assert_eq!(lines[3], "s       100");
    }
}
