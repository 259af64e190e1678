//! Parquet files, through the `parquet` crate's row API: row group by row group, reading only
//! the mapped columns, a page at a time.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::basic::{Compression, ConvertedType, Encoding, Repetition, Type as Physical};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{Page, PageMetadata, PageReader};
use parquet::errors::ParquetError;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::reader::{
    ChunkReader, FileReader, Length, RowGroupReader, SerializedFileReader,
};
use parquet::record::Field;
use parquet::record::reader::RowIter;
use parquet::schema::types::Type;
use serde_json::{Map, Number, Value};

use crate::files::DataFile;
use crate::image::{Media, parquet_type_holds_images};
use crate::rows::{Cells, ColumnSet};
use crate::{Reading, Step};

/// The open file, shared by the readers parquet asks for. `File::try_clone`, which the crate's
/// own `ChunkReader for File` relies on, is unsupported in WASI, so each reader keeps its own
/// position and seeks before reading.
struct SharedFile {
    file: Arc<Mutex<File>>,
    len: u64,
}

/// A reader at its own offset in a [`SharedFile`].
struct At {
    file: Arc<Mutex<File>>,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("the file lock is poisoned"))?;
        file.seek(SeekFrom::Start(self.pos))?;
        let n = file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Length for SharedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SharedFile {
    type T = BufReader<At>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(BufReader::with_capacity(
            1 << 14,
            At {
                file: Arc::clone(&self.file),
                pos: start,
            },
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buffer = Vec::with_capacity(length);
        At {
            file: Arc::clone(&self.file),
            pos: start,
        }
        .take(length as u64)
        .read_to_end(&mut buffer)?;
        if buffer.len() != length {
            return Err(ParquetError::EOF(format!(
                "expected {length} bytes at offset {start}, the file has {}",
                buffer.len()
            )));
        }
        Ok(buffer.into())
    }
}

fn number(n: Option<Number>) -> Value {
    n.map_or(Value::Null, Value::Number)
}

/// A parquet value as JSON, so the row rules are shared with the other formats.
fn json(field: Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(b),
        Field::Byte(n) => n.into(),
        Field::Short(n) => n.into(),
        Field::Int(n) => n.into(),
        Field::Long(n) => n.into(),
        Field::UByte(n) => n.into(),
        Field::UShort(n) => n.into(),
        Field::UInt(n) => n.into(),
        Field::ULong(n) => n.into(),
        Field::Float16(f) => number(Number::from_f64(f64::from(f))),
        Field::Float(f) => number(Number::from_f64(f64::from(f))),
        Field::Double(f) => number(Number::from_f64(f)),
        Field::Str(s) => Value::String(s),
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Group(row) => Value::Object(
            row.into_columns()
                .into_iter()
                .map(|(k, v)| (k, json(v)))
                .collect::<Map<_, _>>(),
        ),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().cloned().map(json).collect())
        }
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Field::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (key, json(v.clone()))
                })
                .collect(),
        ),
        other => Value::String(other.to_string()),
    }
}

fn unsupported(name: &str, column: &str, codec: Compression) -> Option<String> {
    let codec = match codec {
        Compression::UNCOMPRESSED
        | Compression::SNAPPY
        | Compression::GZIP(_)
        | Compression::LZ4
        | Compression::LZ4_RAW => return None,
        Compression::ZSTD(_) => "zstd",
        Compression::BROTLI(_) => "brotli",
        Compression::LZO => "LZO",
    };
    Some(format!(
        "{name}: parquet column {column} is {codec}-compressed, which llmb's hf reader does not \
         support; re-save with snappy/gzip or convert to JSONL"
    ))
}

/// Refuses schema shapes the `parquet` crate's record reader asserts on (a `LIST` or `MAP`
/// group of the wrong form, a group without fields, a field without repetition): its asserts
/// panic, and a panic traps the whole plugin instead of failing with the file's name.
fn check_schema(t: &Type, root: bool) -> Result<(), String> {
    let path = t.name();
    if !root && !t.get_basic_info().has_repetition() {
        return Err(format!("field {path:?} has no repetition"));
    }
    if t.is_primitive() {
        return Ok(());
    }
    let fields = t.get_fields();
    if fields.is_empty() {
        return Err(format!("group {path:?} has no fields"));
    }
    let repeated = |f: &Type| f.get_basic_info().repetition() == Repetition::REPEATED;
    match t.get_basic_info().converted_type() {
        ConvertedType::LIST if fields.len() != 1 || !repeated(&fields[0]) => {
            return Err(format!(
                "list {path:?} is not one repeated field (the parquet LIST layout)"
            ));
        }
        ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE
            if fields.len() != 1
                || fields[0].is_primitive()
                || !repeated(&fields[0])
                || !matches!(fields[0].get_fields().len(), 1 | 2) =>
        {
            return Err(format!(
                "map {path:?} is not one repeated key/value group (the parquet MAP layout)"
            ));
        }
        _ => {}
    }
    fields.iter().try_for_each(|f| check_schema(f, false))
}

/// A row group whose column pages are [`CheckedPages`].
struct CheckedGroup<'a> {
    inner: &'a dyn RowGroupReader,
}

impl RowGroupReader for CheckedGroup<'_> {
    fn metadata(&self) -> &RowGroupMetaData {
        self.inner.metadata()
    }

    fn num_columns(&self) -> usize {
        self.inner.num_columns()
    }

    fn get_column_page_reader(&self, i: usize) -> parquet::errors::Result<Box<dyn PageReader>> {
        let column = self.inner.metadata().column(i);
        let start = column
            .dictionary_page_offset()
            .unwrap_or(column.data_page_offset());
        if start < 0 || column.compressed_size() < 0 {
            // `ColumnChunkMetaData::byte_range` asserts on these.
            return Err(ParquetError::General(format!(
                "column chunk {i} has a negative offset or size"
            )));
        }
        Ok(Box::new(CheckedPages {
            inner: self.inner.get_column_page_reader(i)?,
            next: None,
            physical: column.column_type(),
            type_length: column.column_descr().type_length(),
            max_def: column.column_descr().max_def_level(),
            max_rep: column.column_descr().max_rep_level(),
            has_dictionary: false,
            declared: column.num_values(),
            seen: 0,
        }))
    }

    fn get_column_bloom_filter(&self, i: usize) -> Option<&Sbbf> {
        self.inner.get_column_bloom_filter(i)
    }

    fn get_row_iter(&self, projection: Option<Type>) -> parquet::errors::Result<RowIter<'_>> {
        RowIter::from_row_group(projection, self)
    }
}

/// A column chunk's pages, checked before the `parquet` crate's record reader decodes them:
/// that reader panics (an `unwrap`, an `expect`, a slice out of bounds) on some malformed pages
/// where an error is due, and a panic traps the whole plugin. Pages are read one ahead, so
/// asking whether a page ends a record never makes the crate peek at an unchecked header.
struct CheckedPages {
    inner: Box<dyn PageReader>,
    /// The next page, already read and checked.
    next: Option<parquet::errors::Result<Option<Page>>>,
    physical: Physical,
    type_length: i32,
    max_def: i16,
    max_rep: i16,
    has_dictionary: bool,
    /// Values (levels) the column chunk's metadata announces, and those its pages held so far.
    declared: i64,
    seen: i64,
}

fn malformed(what: String) -> ParquetError {
    ParquetError::General(format!("malformed page: {what}"))
}

/// Whether `n` plain-encoded values of a column's type fit in `buf`.
fn plain_fits(buf: &[u8], n: u32, physical: Physical, type_length: i32) -> bool {
    let n = n as usize;
    let width = match physical {
        Physical::BOOLEAN => return n.div_ceil(8) <= buf.len(),
        Physical::INT32 | Physical::FLOAT => 4,
        Physical::INT64 | Physical::DOUBLE => 8,
        Physical::INT96 => 12,
        Physical::FIXED_LEN_BYTE_ARRAY => usize::try_from(type_length).unwrap_or(0),
        Physical::BYTE_ARRAY => {
            let mut pos = 0usize;
            for _ in 0..n {
                let Some(len) = buf.get(pos..pos.saturating_add(4)) else {
                    return false;
                };
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                pos = pos.saturating_add(4).saturating_add(len);
                if pos > buf.len() {
                    return false;
                }
            }
            return true;
        }
    };
    n.checked_mul(width).is_some_and(|need| need <= buf.len())
}

/// ULEB128, as parquet's level runs write their headers: (value, bytes used).
fn uleb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The bit width of levels up to `max`.
fn level_width(max: i16) -> usize {
    16 - (max.max(0) as u16).leading_zeros() as usize
}

/// Checks `values` levels of `width` bits packed least significant bit first (as the crate
/// reads them) against `max`; the bytes must hold them. Returns the first level over `max`.
fn check_packed(bytes: &[u8], values: usize, width: usize, max: i16) -> Result<(), u64> {
    for i in 0..values {
        let mut v = 0u64;
        for bit in 0..width {
            let at = i * width + bit;
            v |= u64::from((bytes[at / 8] >> (at % 8)) & 1) << bit;
        }
        if v > max as u64 {
            return Err(v);
        }
    }
    Ok(())
}

/// Checks the first `n` levels of an RLE / bit-packed hybrid run (parquet's level encoding)
/// against `max`: the crate's record reader asserts that no level is over it.
fn check_levels(data: &[u8], n: usize, max: i16, what: &str) -> Result<(), String> {
    let width = level_width(max);
    if width == 0 {
        return Ok(());
    }
    let truncated = || format!("the {what} levels are cut short");
    let over = |v: u64| format!("{what} level {v} is over the column's maximum {max}");
    let (mut pos, mut seen) = (0usize, 0usize);
    while seen < n {
        let (header, used) = uleb128(data.get(pos..).unwrap_or_default()).ok_or_else(truncated)?;
        pos += used;
        let count = usize::try_from(header >> 1).unwrap_or(usize::MAX);
        if header & 1 == 0 {
            // A run of one value.
            let bytes = data
                .get(pos..pos.saturating_add(width.div_ceil(8)))
                .ok_or_else(truncated)?;
            let v = bytes
                .iter()
                .rev()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b));
            if v > max as u64 && count > 0 {
                return Err(over(v));
            }
            pos += bytes.len();
            seen = seen.saturating_add(count);
        } else {
            // `count` groups of 8 values, `width` bits each, least significant bit first.
            let len = count.checked_mul(width).ok_or_else(truncated)?;
            let bytes = data
                .get(pos..pos.saturating_add(len))
                .ok_or_else(truncated)?;
            let values = count.saturating_mul(8).min(n - seen);
            check_packed(bytes, values, width, max).map_err(over)?;
            pos += len;
            seen += values;
        }
    }
    Ok(())
}

impl CheckedPages {
    /// The levels of a data page must be within the column's maxima.
    fn check_data_levels(&self, page: &Page) -> Result<(), String> {
        let levels =
            |data: &[u8], max, what| check_levels(data, page.num_values() as usize, max, what);
        match page {
            Page::DataPage {
                buf,
                def_level_encoding,
                rep_level_encoding,
                ..
            } => {
                // RLE levels come with their length; the deprecated BIT_PACKED ones take
                // exactly the bits of `num_values` levels.
                let mut rest = &buf[..];
                for (max, encoding, what) in [
                    (self.max_rep, rep_level_encoding, "repetition"),
                    (self.max_def, def_level_encoding, "definition"),
                ] {
                    if max == 0 {
                        continue;
                    }
                    let short = || format!("the {what} levels are cut short");
                    #[allow(deprecated)]
                    let used = match encoding {
                        Encoding::RLE => {
                            let len = rest
                                .get(..4)
                                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                                .ok_or_else(short)?;
                            let run = rest.get(4..4usize.saturating_add(len)).ok_or_else(short)?;
                            levels(run, max, what)?;
                            4 + len
                        }
                        Encoding::BIT_PACKED => {
                            let n = page.num_values() as usize;
                            let width = level_width(max);
                            let len = n.saturating_mul(width).div_ceil(8);
                            let packed = rest.get(..len).ok_or_else(short)?;
                            check_packed(packed, n, width, max).map_err(|v| {
                                format!("{what} level {v} is over the column's maximum {max}")
                            })?;
                            len
                        }
                        other => return Err(format!("{what} levels in {other} encoding")),
                    };
                    rest = &rest[used..];
                }
                Ok(())
            }
            Page::DataPageV2 {
                buf,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let rep_len = *rep_levels_byte_len as usize;
                let def_end = rep_len.saturating_add(*def_levels_byte_len as usize);
                let (Some(rep), Some(def)) = (buf.get(..rep_len), buf.get(rep_len..def_end)) else {
                    return Err("the levels are longer than the page".into());
                };
                levels(rep, self.max_rep, "repetition")?;
                levels(def, self.max_def, "definition")
            }
            Page::DictionaryPage { .. } => Ok(()),
        }
    }

    fn read_checked(&mut self) -> parquet::errors::Result<Option<Page>> {
        let page = self.inner.get_next_page()?;
        match &page {
            Some(Page::DictionaryPage {
                buf,
                num_values,
                encoding,
                ..
            }) => {
                self.has_dictionary = true;
                if matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY)
                    && !plain_fits(buf, *num_values, self.physical, self.type_length)
                {
                    return Err(malformed(format!(
                        "a dictionary page of {num_values} values holds {} bytes",
                        buf.len()
                    )));
                }
            }
            Some(Page::DataPage { encoding, .. } | Page::DataPageV2 { encoding, .. })
                if matches!(
                    encoding,
                    Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
                ) && !self.has_dictionary =>
            {
                return Err(malformed(
                    "a dictionary-encoded data page with no dictionary page before it".into(),
                ));
            }
            Some(data) => {
                self.check_data_levels(data).map_err(malformed)?;
                self.seen = self.seen.saturating_add(i64::from(data.num_values()));
            }
            // A chunk whose pages end early (a page header made unreadable, which the crate
            // skips) leaves its column behind the others, and the record reader indexes past
            // the end of its levels.
            None if self.seen < self.declared => {
                return Err(malformed(format!(
                    "the column chunk's pages hold {} values, fewer than the {} its metadata \
                     announces",
                    self.seen, self.declared
                )));
            }
            None => {}
        }
        Ok(page)
    }
}

impl Iterator for CheckedPages {
    type Item = parquet::errors::Result<Page>;

    fn next(&mut self) -> Option<Self::Item> {
        self.get_next_page().transpose()
    }
}

impl PageReader for CheckedPages {
    fn get_next_page(&mut self) -> parquet::errors::Result<Option<Page>> {
        match self.next.take() {
            Some(page) => page,
            None => self.read_checked(),
        }
    }

    fn peek_next_page(&mut self) -> parquet::errors::Result<Option<PageMetadata>> {
        if self.next.is_none() {
            self.next = Some(self.read_checked());
        }
        match &self.next {
            Some(Ok(Some(page))) => Ok(Some(PageMetadata {
                num_rows: match page {
                    Page::DataPageV2 { num_rows, .. } => Some(*num_rows as usize),
                    _ => None,
                },
                num_levels: match page {
                    Page::DictionaryPage { .. } => None,
                    other => Some(other.num_values() as usize),
                },
                is_dict: matches!(page, Page::DictionaryPage { .. }),
            })),
            Some(Ok(None)) | None => Ok(None),
            Some(Err(e)) => Err(ParquetError::General(e.to_string())),
        }
    }

    fn skip_next_page(&mut self) -> parquet::errors::Result<()> {
        self.get_next_page().map(drop)
    }

    /// As the crate's own reader: a record ends with the column or before a V2 data page.
    fn at_record_boundary(&mut self) -> parquet::errors::Result<bool> {
        Ok(self.peek_next_page()?.is_none_or(|m| m.num_rows.is_some()))
    }
}

/// A file's top-level columns, with their types for spotting image columns.
struct Columns<'a>(&'a [parquet::schema::types::TypePtr]);

impl ColumnSet for Columns<'_> {
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|f| f.name() == name)
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|f| f.name()).collect()
    }

    fn may_hold_images(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|f| f.name() == name && parquet_type_holds_images(f))
    }
}

/// Reads one parquet file into `reading`.
pub fn read(file: &DataFile, reading: &mut Reading) -> Result<Step, String> {
    let name = &file.name;
    let handle = File::open(&file.path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let len = handle
        .metadata()
        .map_err(|e| format!("{name}: cannot read: {e}"))?
        .len();
    let shared = SharedFile {
        file: Arc::new(Mutex::new(handle)),
        len,
    };
    let reader = SerializedFileReader::new(shared)
        .map_err(|e| format!("{name}: not a readable parquet file: {e}"))?;
    let schema = reader.metadata().file_metadata().schema();
    let mapping = reading.mapping(name, &Columns(schema.get_fields()), true)?;
    let used = mapping.used();
    for group in reader.metadata().row_groups() {
        for chunk in group.columns() {
            let top = chunk.column_path().parts().first().map(String::as_str);
            if let Some(top) = top.filter(|t| used.contains(t))
                && let Some(error) = unsupported(name, top, chunk.compression())
            {
                return Err(error);
            }
        }
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(
            schema
                .get_fields()
                .iter()
                .filter(|f| used.contains(&f.name()))
                .cloned()
                .collect(),
        )
        .build()
        .map_err(|e| format!("{name}: cannot select columns {used:?}: {e}"))?;
    check_schema(&projection, true)
        .map_err(|e| format!("{name}: not a readable parquet file: {e}"))?;
    let mut number = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| format!("{name}: row group {g}: {e}"))?;
        let checked = CheckedGroup {
            inner: group.as_ref(),
        };
        let rows = RowIter::from_row_group(Some(projection.clone()), &checked)
            .map_err(|e| format!("{name}: row group {g}: {e}"))?;
        for row in rows {
            number += 1;
            let at = || format!("{name}: row {number}");
            let row = row.map_err(|e| format!("{}: {e}", at()))?;
            let mut fields: Vec<(String, Field)> = row.into_columns();
            let image = mapping
                .image
                .as_ref()
                .and_then(|c| fields.iter().position(|(n, _)| n == c))
                .map_or(Media::Null, |i| Media::from_field(fields.swap_remove(i).1));
            let mut cells = Cells::take(&mapping, |column| {
                fields
                    .iter()
                    .position(|(n, _)| n == column)
                    .map_or(Value::Null, |i| json(fields.swap_remove(i).1))
            });
            cells.image = image;
            if reading.offer(&mapping, cells, &at)? == Step::Stop {
                return Ok(Step::Stop);
            }
        }
    }
    Ok(Step::Continue)
}
