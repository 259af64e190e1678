//! CSV and TSV files: the header row names the columns; quoted fields may hold the delimiter
//! and newlines.

use std::fs::File;
use std::io::BufReader;

use serde_json::Value;

use crate::files::DataFile;
use crate::image::Media;
use crate::rows::Cells;
use crate::{Reading, Step};

fn line(pos: Option<&csv::Position>) -> String {
    pos.map_or_else(|| "?".into(), |p| p.line().to_string())
}

fn error(name: &str, e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "{name}:{}: the row has {len} fields, the header has {expected_len}",
            line(pos.as_ref())
        ),
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "{name}:{}: field {} is not UTF-8 text",
            line(pos.as_ref()),
            err.field() + 1
        ),
        csv::ErrorKind::Io(err) => format!("{name}: cannot read: {err}"),
        _ => format!("{name}:{}: {e}", line(e.position())),
    }
}

/// Reads one CSV (`delimiter` `,`) or TSV (`\t`) file into `reading`.
pub fn read(file: &DataFile, delimiter: u8, reading: &mut Reading) -> Result<Step, String> {
    let name = &file.name;
    let handle = File::open(&file.path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let mut rows = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(BufReader::with_capacity(1 << 16, handle));
    let columns: Vec<String> = rows
        .headers()
        .map_err(|e| error(name, &e))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let mapping = reading.mapping(name, columns.as_slice(), true)?;
    let mut record = csv::StringRecord::new();
    while rows.read_record(&mut record).map_err(|e| error(name, &e))? {
        let cell = |c: &str| {
            columns
                .iter()
                .position(|col| col == c)
                .and_then(|i| record.get(i))
        };
        let mut cells = Cells::take(&mapping, |c| {
            cell(c).map_or(Value::Null, |s| Value::String(s.to_owned()))
        });
        if let Some(c) = &mapping.image {
            cells.image = cell(c).map_or(Media::Null, |s| Media::Text(s.to_owned()));
        }
        let at = || format!("{name}:{}", line(record.position()));
        if reading.offer(&mapping, cells, &at)? == Step::Stop {
            return Ok(Step::Stop);
        }
    }
    Ok(Step::Continue)
}
