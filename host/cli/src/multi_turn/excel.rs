//! `--excel-output`: the workbook vLLM's script writes with pandas and xlsxwriter. Sheet
//! "Summary": the test parameters, the generation parameters (synthetic input), then for each
//! warmup share its runtime row and its describe table; sheet "Raw data": every request's stats
//! sorted by start time.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rust_xlsxwriter::{Format, FormatAlign, FormatBorder, Workbook, Worksheet};

use super::stats::{RawData, RequestStats, Summary, header};

/// `statistics_{P}_clients__{dd-mm-YYYY_HH-MM-SS}.xlsx`, local time, as vLLM names it.
pub fn default_file_name(num_clients: usize) -> PathBuf {
    PathBuf::from(format!(
        "statistics_{num_clients}_clients__{}.xlsx",
        local_timestamp()
    ))
}

fn local_timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r only writes the `tm` we hand it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return "00-00-0000_00-00-00".into();
    }
    format!(
        "{:02}-{:02}-{:04}_{:02}-{:02}-{:02}",
        tm.tm_mday,
        tm.tm_mon + 1,
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// pandas' header cell style: bold, thin border, centred.
fn header_format() -> Format {
    Format::new()
        .set_bold()
        .set_border(FormatBorder::Thin)
        .set_align(FormatAlign::Center)
}

/// A one-row table (header and values) at `row`, as `DataFrame([dict]).to_excel(index=False)`.
fn write_dict_row(
    ws: &mut Worksheet,
    row: u32,
    items: &[(String, CellValue)],
    bold: &Format,
) -> anyhow::Result<()> {
    for (col, (k, v)) in items.iter().enumerate() {
        let col = col as u16;
        ws.write_string_with_format(row, col, k, bold)?;
        v.write(ws, row + 1, col)?;
    }
    Ok(())
}

/// A cell of the parameter rows: text or a number.
#[derive(Debug, Clone)]
pub enum CellValue {
    Text(String),
    Number(f64),
    Empty,
}

impl CellValue {
    fn write(&self, ws: &mut Worksheet, row: u32, col: u16) -> anyhow::Result<()> {
        match self {
            CellValue::Text(s) => {
                ws.write_string(row, col, s)?;
            }
            CellValue::Number(v) if v.is_finite() => {
                ws.write_number(row, col, *v)?;
            }
            CellValue::Number(_) | CellValue::Empty => {}
        }
        Ok(())
    }
}

fn opt(ws: &mut Worksheet, row: u32, col: u16, v: Option<f64>) -> anyhow::Result<()> {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        ws.write_number(row, col, v)?;
    }
    Ok(())
}

/// Writes the workbook to `path`.
pub fn write(
    path: &Path,
    test_params: &[(String, CellValue)],
    gen_params: Option<&[(String, String)]>,
    summaries: &[Summary],
    raw: &RawData,
) -> anyhow::Result<()> {
    let bold = header_format();
    let mut workbook = Workbook::new();

    let ws = workbook.add_worksheet();
    ws.set_name("Summary")?;
    let mut row = 0u32;
    write_dict_row(ws, row, test_params, &bold)?;
    row += 1 + 3;
    if let Some(g) = gen_params {
        let items: Vec<(String, CellValue)> = g
            .iter()
            .map(|(k, v)| (k.clone(), CellValue::Text(v.clone())))
            .collect();
        write_dict_row(ws, row - 1, &items, &bold)?;
        row += 1 + 3;
    }
    for s in summaries {
        let items: Vec<(String, CellValue)> = s
            .params
            .iter()
            .map(|(k, v)| (k.clone(), CellValue::Number(*v)))
            .collect();
        write_dict_row(ws, row, &items, &bold)?;
        row += 1 + 2;
        // The describe table with its index: the metric names in column A.
        for (i, h) in header(&s.percentiles).iter().enumerate() {
            ws.write_string_with_format(row, i as u16 + 1, h, &bold)?;
        }
        for (r, d) in s.rows.iter().enumerate() {
            let r = row + 1 + r as u32;
            ws.write_string_with_format(r, 0, &d.name, &bold)?;
            for (c, v) in d.cells().into_iter().enumerate() {
                opt(ws, r, c as u16 + 1, v)?;
            }
        }
        row += s.rows.len() as u32 + 3;
    }
    ws.set_column_width(0, 28)?;

    let ws = workbook.add_worksheet();
    ws.set_name("Raw data")?;
    write_raw(ws, raw, &bold)?;

    workbook
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn write_raw(ws: &mut Worksheet, raw: &RawData, bold: &Format) -> anyhow::Result<()> {
    let mut names = vec![
        "ttft_ms",
        "tpot_ms",
        "latency_ms",
        "start_time_ms",
        "input_num_turns",
        "input_num_tokens",
        "output_num_tokens",
        "output_num_chunks",
        "output_num_first_chunk_tokens",
        "approx_cached_percent",
        "conversation_id",
        "client_id",
    ];
    if raw.between_turns.is_some() {
        names.push("time_between_user_turns_sec");
    }
    names.push("end_time_ms");
    for (c, n) in names.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *n, bold)?;
    }
    for (i, r) in raw.rows.iter().enumerate() {
        let row = i as u32 + 1;
        let numbers = |r: &RequestStats| {
            [
                r.ttft_ms,
                r.tpot_ms,
                r.latency_ms,
                r.start_time_ms,
                r.input_num_turns as f64,
                r.input_num_tokens as f64,
                r.output_num_tokens as f64,
                r.output_num_chunks as f64,
                r.output_num_first_chunk_tokens as f64,
                r.approx_cached_percent,
            ]
        };
        for (c, v) in numbers(r).into_iter().enumerate() {
            ws.write_number(row, c as u16, v)?;
        }
        ws.write_string(row, 10, &r.conversation_id)?;
        ws.write_number(row, 11, r.client_id as f64)?;
        let mut col = 12u16;
        if let Some(b) = &raw.between_turns {
            opt(ws, row, col, b[i])?;
            col += 1;
        }
        ws.write_number(row, col, RawData::end_time_ms(r))?;
    }
    Ok(())
}
