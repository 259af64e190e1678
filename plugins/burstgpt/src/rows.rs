//! Reading the trace: [`split_csv_line`] (RFC 4180 quoting), the header's columns, and [`Rows`],
//! the kept [`Row`]s of a BurstGPT CSV parsed a line at a time.

use std::io::BufRead;

use crate::Filter;

/// One kept row of the trace; `line` (1-based, the header is line 1) also seeds its prompt, so
/// a row gets the same prompt whatever `count` or the order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Line in the file, for error messages and the row's prompt seed.
    pub line: u64,
    /// `Timestamp`, seconds: when the host sends the request on replay.
    pub timestamp: f64,
    /// `Request tokens`: the prompt's exact length.
    pub request_tokens: u32,
    /// `Response tokens`: sent as max tokens, so the server generates as much as it did then.
    pub response_tokens: u32,
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote). Records spanning lines
/// are refused: BurstGPT has none, and supporting them would break line-numbered errors.
pub fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while let Some(c) = chars.next_if(|c| *c == ' ' || *c == '\t') {
            field.push(c);
        }
        if chars.next_if_eq(&'"').is_some() {
            field.clear();
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "unterminated quoted field (fields spanning lines are not supported)"
                                .into(),
                        );
                    }
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "unexpected {c:?} after the closing quote of field {}",
                        fields.len() + 1
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Positions of the columns the reader uses; a filter's column is needed only when it filters.
#[derive(Debug, Clone, Copy)]
struct Columns {
    timestamp: usize,
    request: usize,
    response: usize,
    model: Option<usize>,
    log_type: Option<usize>,
}

const TIMESTAMP: &str = "Timestamp";
const MODEL: &str = "Model";
const REQUEST: &str = "Request tokens";
const RESPONSE: &str = "Response tokens";
const LOG_TYPE: &str = "Log Type";
const HEADER: &str = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type";

/// The kept rows of a BurstGPT CSV, parsed a line at a time as they are asked for.
pub struct Rows<R> {
    reader: R,
    name: String,
    line: u64,
    columns: Columns,
    filter: Filter,
    buf: String,
    failed: bool,
}

impl<R: BufRead> Rows<R> {
    /// Reads the header; `name` is how errors call the file.
    pub fn new(reader: R, name: &str, filter: Filter) -> Result<Self, String> {
        let mut rows = Self {
            reader,
            name: name.to_owned(),
            line: 0,
            columns: Columns {
                timestamp: 0,
                request: 0,
                response: 0,
                model: None,
                log_type: None,
            },
            filter,
            buf: String::new(),
            failed: false,
        };
        if !rows.read_line()? {
            return Err(format!(
                "{name}: empty file (a BurstGPT CSV starts with the header {HEADER})"
            ));
        }
        let header = rows.fields()?;
        let find = |column: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(column))
                .ok_or_else(|| {
                    format!("{name}:1: no {column:?} column in the header (BurstGPT's is {HEADER})")
                })
        };
        rows.columns = Columns {
            timestamp: find(TIMESTAMP)?,
            request: find(REQUEST)?,
            response: find(RESPONSE)?,
            model: rows
                .filter
                .model
                .as_ref()
                .map(|_| find(MODEL))
                .transpose()?,
            log_type: rows
                .filter
                .log_type
                .as_ref()
                .map(|_| find(LOG_TYPE))
                .transpose()?,
        };
        Ok(rows)
    }

    /// The next line into `buf` without its line ending; `false` at the end of the file.
    fn read_line(&mut self) -> Result<bool, String> {
        self.buf.clear();
        self.line += 1;
        let n = self
            .reader
            .read_line(&mut self.buf)
            .map_err(|e| format!("{}:{}: cannot read: {e}", self.name, self.line))?;
        if n == 0 {
            return Ok(false);
        }
        let end = self.buf.trim_end_matches(['\n', '\r']).len();
        self.buf.truncate(end);
        if self.line == 1 && self.buf.starts_with('\u{feff}') {
            self.buf.drain(..'\u{feff}'.len_utf8());
        }
        Ok(true)
    }

    fn at(&self) -> String {
        format!("{}:{}", self.name, self.line)
    }

    fn fields(&self) -> Result<Vec<String>, String> {
        split_csv_line(&self.buf).map_err(|e| format!("{}: {e}", self.at()))
    }

    /// The current line as a row, `None` when the filters drop it.
    fn row(&self) -> Result<Option<Row>, String> {
        let fields = self.fields()?;
        let get = |i: usize, column: &str| {
            fields.get(i).map(|f| f.trim()).ok_or_else(|| {
                format!(
                    "{}: missing column {column:?} (the row has {} fields)",
                    self.at(),
                    fields.len()
                )
            })
        };
        let c = self.columns;
        let bad = |column: &str, value: &str, what: &str| {
            format!(
                "{}: bad number {value:?} in column {column:?} ({what})",
                self.at()
            )
        };
        let ts = get(c.timestamp, TIMESTAMP)?;
        let timestamp = ts
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| bad(TIMESTAMP, ts, "expected seconds"))?;
        let req = get(c.request, REQUEST)?;
        let request_tokens = integer(req)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(REQUEST, req, "expected a token count"))?;
        let resp = get(c.response, RESPONSE)?;
        let response_tokens = integer(resp)
            .filter(|&n| n <= i64::from(u32::MAX))
            .ok_or_else(|| bad(RESPONSE, resp, "expected a token count"))?;
        let model = c.model.map(|i| get(i, MODEL)).transpose()?;
        let log_type = c.log_type.map(|i| get(i, LOG_TYPE)).transpose()?;
        let kept = response_tokens > 0
            && model.is_none_or(|m| Filter::keeps(&self.filter.model, m))
            && log_type.is_none_or(|l| Filter::keeps(&self.filter.log_type, l));
        Ok(kept.then_some(Row {
            line: self.line,
            timestamp,
            request_tokens,
            response_tokens: response_tokens as u32,
        }))
    }
}

/// An integer token count, also when written as a float with no fraction (`472.0`), as
/// spreadsheet exports do.
fn integer(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

impl<R: BufRead> Iterator for Rows<R> {
    type Item = Result<Row, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            let step = self.read_line().and_then(|more| {
                if !more {
                    return Ok(None);
                }
                if self.buf.trim().is_empty() {
                    return Ok(Some(None));
                }
                self.row().map(Some)
            });
            match step {
                Ok(None) => return None,
                Ok(Some(None)) => continue,
                Ok(Some(Some(row))) => return Some(Ok(row)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}
