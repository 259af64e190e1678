//! Parquet files, through the `parquet` crate's row API: row group by row group, reading only
//! the mapped columns, a page at a time.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use parquet::record::Field;
use parquet::record::reader::RowIter;
use parquet::schema::types::Type;
use serde_json::{Map, Number, Value};

use crate::files::DataFile;
use crate::rows::Cells;
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
    let columns: Vec<String> = schema
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    let mapping = reading.mapping(name, columns.as_slice(), true)?;
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
    let mut number = 0u64;
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| format!("{name}: row group {g}: {e}"))?;
        let rows = RowIter::from_row_group(Some(projection.clone()), group.as_ref())
            .map_err(|e| format!("{name}: row group {g}: {e}"))?;
        for row in rows {
            number += 1;
            let at = || format!("{name}: row {number}");
            let row = row.map_err(|e| format!("{}: {e}", at()))?;
            let mut fields: Vec<(String, Field)> = row.into_columns();
            let cells = Cells::take(&mapping, |column| {
                fields
                    .iter()
                    .position(|(n, _)| n == column)
                    .map_or(Value::Null, |i| json(fields.swap_remove(i).1))
            });
            if reading.offer(&mapping, cells, &at)? == Step::Stop {
                return Ok(Step::Stop);
            }
        }
    }
    Ok(Step::Continue)
}
