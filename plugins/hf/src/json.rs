//! JSON files: JSON Lines, a JSON array of records, or an object whose one list holds the
//! records (`{"data": [...]}`), told apart by the content whatever the extension. Records are
//! parsed one at a time; the columns are the first record's keys.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use llmb_plugin_sdk::json_array::ArrayElements;
use llmb_plugin_sdk::sampler::{Record, Span};
use serde::Deserialize as _;
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

use crate::files::DataFile;
use crate::image::Media;
use crate::rows::Cells;
use crate::{Reading, Step};

/// A first line longer than this is not taken as a JSON Lines record: the file is streamed as
/// one object instead of being read whole.
const MAX_LINE: u64 = 16 << 20;

fn open(file: &DataFile) -> Result<BufReader<File>, String> {
    File::open(&file.path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(|e| format!("{}: cannot read: {e}", file.name))
}

/// The first byte that is not whitespace (after a UTF-8 byte order mark).
fn first_byte(file: &DataFile) -> Result<Option<u8>, String> {
    let mut reader = open(file)?;
    let mut start = true;
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| format!("{}: cannot read: {e}", file.name))?;
        if buf.is_empty() {
            return Ok(None);
        }
        let mut skip = 0;
        if start && buf.starts_with(b"\xEF\xBB\xBF") {
            skip = 3;
        }
        start = false;
        match buf[skip..].iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => return Ok(Some(buf[skip + i])),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// Makes records into cells. JSON has no schema: each record's columns are found among its
/// own keys, and a named column must be in the first record (a misspelt name is caught there).
struct Records<'r, 'c> {
    reading: &'r mut Reading<'c>,
    name: &'r str,
    first: bool,
}

impl Records<'_, '_> {
    fn take(&mut self, value: Value, at: &str) -> Result<Step, String> {
        let Value::Object(mut record) = value else {
            return Err(format!("{at}: expected a JSON object (one record)"));
        };
        let mapping = self.reading.mapping(at, &record, self.first)?;
        self.first = false;
        let image = mapping
            .image
            .as_ref()
            .and_then(|c| record.remove(c))
            .map_or(Media::Null, Media::from_json);
        let mut cells = Cells::take(&mapping, |c| record.remove(c).unwrap_or(Value::Null));
        cells.image = image;
        self.reading.offer(&mapping, cells, &|| at.to_owned())
    }

    fn take_record(&mut self, record: &Record) -> Result<Step, String> {
        let value: Value =
            serde_json::from_slice(&record.bytes).map_err(|e| record.json_error(self.name, &e))?;
        self.take(value, &record.span.at(self.name))
    }
}

/// Reads one JSON-family file into `reading`.
pub fn read(file: &DataFile, reading: &mut Reading) -> Result<Step, String> {
    let mut records = Records {
        reading,
        name: &file.name,
        first: true,
    };
    match first_byte(file)? {
        None => Ok(Step::Continue),
        Some(b'[') => {
            let mut elements = ArrayElements::new(open(file)?, &file.name);
            while let Some(record) = elements.next_element()? {
                if records.take_record(&record)? == Step::Stop {
                    return Ok(Step::Stop);
                }
            }
            Ok(Step::Continue)
        }
        Some(b'{') => objects(file, &mut records),
        Some(b) => Err(format!(
            "{}: expected JSON Lines, a JSON array or an object, found {}",
            file.name,
            shown(b)
        )),
    }
}

/// The next non-blank line, trimmed, as a record; `line` and `pos` advance past it.
fn next_line<R: BufRead>(
    reader: &mut R,
    name: &str,
    line: &mut u64,
    pos: &mut u64,
    limit: u64,
) -> Result<Option<(Record, bool)>, String> {
    loop {
        let mut bytes = Vec::new();
        let n = reader
            .take(limit)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| format!("{name}:{}: cannot read: {e}", *line + 1))?;
        if n == 0 {
            return Ok(None);
        }
        let complete = bytes.ends_with(b"\n") || (n as u64) < limit;
        let offset = *pos;
        *pos += n as u64;
        *line += 1;
        let mut start = 0;
        if *line == 1 && bytes.starts_with(b"\xEF\xBB\xBF") {
            start = 3;
        }
        while start < bytes.len() && bytes[start].is_ascii_whitespace() {
            start += 1;
        }
        let mut end = bytes.len();
        while end > start && bytes[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if start == end {
            continue;
        }
        bytes.truncate(end);
        bytes.drain(..start);
        let span = Span {
            element: None,
            line: *line,
            offset: offset + start as u64,
            len: bytes.len() as u64,
        };
        return Ok(Some((Record { span, bytes }, complete)));
    }
}

/// A file starting with `{`: JSON Lines when its first line is a whole object and more
/// follow; a lone object is a record, or when it is not one, holds the records in its only list.
/// An object spread over lines is streamed as such a holder.
fn objects(file: &DataFile, records: &mut Records) -> Result<Step, String> {
    let name = &file.name;
    let mut reader = open(file)?;
    let (mut line, mut pos) = (0, 0);
    let Some((first, complete)) = next_line(&mut reader, name, &mut line, &mut pos, MAX_LINE)?
    else {
        return Ok(Step::Continue);
    };
    if !complete {
        return holder(file, records);
    }
    let value: Value = match serde_json::from_slice(&first.bytes) {
        Ok(value) => value,
        Err(e) if e.is_eof() => return holder(file, records),
        Err(e) => return Err(first.json_error(name, &e)),
    };
    let second = next_line(&mut reader, name, &mut line, &mut pos, u64::MAX)?;
    let Some((second, _)) = second else {
        return lone_object(value, &first, records);
    };
    for record in [&first, &second] {
        if records.take_record(record)? == Step::Stop {
            return Ok(Step::Stop);
        }
    }
    while let Some((record, _)) = next_line(&mut reader, name, &mut line, &mut pos, u64::MAX)? {
        if records.take_record(&record)? == Step::Stop {
            return Ok(Step::Stop);
        }
    }
    Ok(Step::Continue)
}

fn lists(object: &Map<String, Value>) -> Vec<&str> {
    object
        .iter()
        .filter(|(_, v)| v.is_array())
        .map(|(k, _)| k.as_str())
        .collect()
}

/// A file holding one object on one line.
fn lone_object(value: Value, record: &Record, records: &mut Records) -> Result<Step, String> {
    let at = record.span.at(records.name);
    let Value::Object(mut object) = value else {
        return records.take(value, &at);
    };
    let as_record = records.reading.mapping(&at, &object, true);
    let lists = lists(&object);
    if as_record.is_ok() || lists.len() != 1 {
        return match as_record {
            Ok(_) => records.take(Value::Object(object), &at),
            Err(e) if lists.len() > 1 => Err(format!(
                "{e}; or if the object holds the records, it holds more than one list ({})",
                lists.join(", ")
            )),
            Err(e) => Err(e),
        };
    }
    let key = lists[0].to_owned();
    let Some(Value::Array(items)) = object.remove(&key) else {
        unreachable!("the key holds a list");
    };
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{at}: {key:?} element {}", i + 1);
        if records.take(item, &at)? == Step::Stop {
            return Ok(Step::Stop);
        }
    }
    Ok(Step::Continue)
}

/// Counts the lines a reader has handed out, so records streamed by serde can be named by line.
struct Counting<R> {
    inner: R,
    newlines: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let seen = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        self.newlines.set(self.newlines.get() + seen);
        Ok(n)
    }
}

/// Streams `{"key": [records...], ...}` without holding the list.
struct Holder<'h, 'r, 'c> {
    records: &'h mut Records<'r, 'c>,
    newlines: Rc<Cell<u64>>,
    list: Option<String>,
    /// Why serde was stopped: the reader had enough (`Ok`) or a record was bad.
    stopped: Option<Result<Step, String>>,
}

impl<'de> Visitor<'de> for &mut Holder<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object holding a list of records")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            map.next_value_seed(Field { holder: self, key })?;
        }
        Ok(())
    }
}

struct Field<'a, 'h, 'r, 'c> {
    holder: &'a mut Holder<'h, 'r, 'c>,
    key: String,
}

impl<'de> DeserializeSeed<'de> for Field<'_, '_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Field<'_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(list) = &self.holder.list {
            self.holder.stopped = Some(Err(format!(
                "{}: the object holds more than one list ({list:?}, {:?}); expected one list of records",
                self.holder.records.name, self.key
            )));
            return Err(A::Error::custom("stopped"));
        }
        self.holder.list = Some(self.key.clone());
        let mut number = 0;
        loop {
            number += 1;
            let element = Element {
                holder: &mut *self.holder,
                key: &self.key,
                number,
            };
            match seq.next_element_seed(element)? {
                None => return Ok(()),
                Some(Step::Continue) => {}
                Some(Step::Stop) => {
                    self.holder.stopped = Some(Ok(Step::Stop));
                    return Err(A::Error::custom("stopped"));
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

struct Element<'a, 'h, 'r, 'c> {
    holder: &'a mut Holder<'h, 'r, 'c>,
    key: &'a str,
    number: u64,
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_, '_, '_> {
    type Value = Step;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Step, D::Error> {
        // serde has read the element's first byte: the lines counted so far lead up to it.
        let line = self.holder.newlines.get() + 1;
        let value = Value::deserialize(deserializer)?;
        let at = format!(
            "{}:{line}: {:?} element {}",
            self.holder.records.name, self.key, self.number
        );
        match self.holder.records.take(value, &at) {
            Ok(step) => Ok(step),
            Err(e) => {
                self.holder.stopped = Some(Err(e));
                Err(D::Error::custom("stopped"))
            }
        }
    }
}

fn syntax(name: &str, e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    format!("{name}:{}: column {}: {message}", e.line(), e.column())
}

/// An object spread over lines: streamed, its one list's elements being the records.
fn holder(file: &DataFile, records: &mut Records) -> Result<Step, String> {
    let newlines = Rc::new(Cell::new(0));
    let reader = Counting {
        inner: open(file)?,
        newlines: Rc::clone(&newlines),
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut holder = Holder {
        records,
        newlines,
        list: None,
        stopped: None,
    };
    let name = holder.records.name;
    match deserializer.deserialize_map(&mut holder) {
        Ok(()) => {}
        Err(e) => {
            return holder
                .stopped
                .take()
                .unwrap_or_else(|| Err(syntax(name, &e)));
        }
    }
    deserializer.end().map_err(|e| syntax(name, &e))?;
    if holder.list.is_none() {
        return Err(format!(
            "{name}: an object without a list of records; expected JSON Lines, a JSON array of \
             records, or an object whose one list holds them"
        ));
    }
    Ok(Step::Continue)
}
