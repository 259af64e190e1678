//! Splits a top-level JSON array into its elements while reading, so a file of any size is
//! parsed one element at a time (each handed whole to `serde_json`) instead of as one tree.
//!
//! The splitter only tracks strings, escapes and bracket depth; checking that an element is
//! valid JSON is left to `serde_json`, which sees each element's bytes.

use std::io::{BufRead, ErrorKind, Seek};

use crate::sampler::{Record, Records, Span, read_span};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[`: an element or `]`.
    First,
    /// After an element: `,` or `]`.
    Next,
    /// After the closing `]`.
    Done,
}

/// The elements of the JSON array a reader holds, in order, with where each lies.
pub struct ArrayElements<R> {
    reader: R,
    name: String,
    /// Bytes consumed so far.
    pos: u64,
    /// Line of the next byte, from 1.
    line: u64,
    state: State,
    elements: u64,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl<R: BufRead> ArrayElements<R> {
    /// `name` is what errors call the file.
    pub fn new(reader: R, name: &str) -> Self {
        Self {
            reader,
            name: name.to_owned(),
            pos: 0,
            line: 1,
            state: State::Start,
            elements: 0,
        }
    }

    fn here(&self) -> String {
        format!("{}:{}: byte {}", self.name, self.line, self.pos)
    }

    fn fill(&mut self) -> Result<&[u8], String> {
        loop {
            match self.reader.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{}: cannot read: {e}", self.here())),
            }
        }
        self.reader
            .fill_buf()
            .map_err(|e| format!("{}: cannot read: {e}", self.name))
    }

    fn consume(&mut self, n: usize, lines: u64) {
        self.reader.consume(n);
        self.pos += n as u64;
        self.line += lines;
    }

    /// The next byte that is not whitespace, left unread; `None` at the end of the file.
    fn skip_space(&mut self) -> Result<Option<u8>, String> {
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf.iter().take_while(|&&b| is_space(b)).count();
            let next = buf.get(n).copied();
            let lines = newlines(&buf[..n]);
            self.consume(n, lines);
            if next.is_some() {
                return Ok(next);
            }
        }
    }

    fn skip_bom(&mut self) -> Result<(), String> {
        if self.fill()?.first() != Some(&0xEF) {
            return Ok(());
        }
        for expected in [0xEF, 0xBB, 0xBF] {
            if self.fill()?.first() != Some(&expected) {
                return Err(format!("{}: not UTF-8 text", self.here()));
            }
            self.consume(1, 0);
        }
        Ok(())
    }

    /// Reads one element starting with `first` (not yet consumed).
    fn element(&mut self, first: u8) -> Result<Record, String> {
        let number = self.elements + 1;
        let (offset, line) = (self.pos, self.line);
        let scalar = !matches!(first, b'{' | b'[' | b'"');
        let mut bytes = Vec::new();
        let mut depth = 0u32;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                if scalar && !bytes.is_empty() {
                    break;
                }
                return Err(format!(
                    "{}:{line}: array element {number} (byte {offset}): the file ends inside this element",
                    self.name
                ));
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                } else if scalar {
                    if is_space(b) || matches!(b, b',' | b']' | b'}') {
                        end = Some(i);
                        break;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            let take = end.unwrap_or(buf.len());
            bytes.extend_from_slice(&buf[..take]);
            let lines = newlines(&buf[..take]);
            self.consume(take, lines);
            if end.is_some() {
                break;
            }
        }
        self.elements = number;
        Ok(Record {
            span: Span {
                element: Some(number),
                line,
                offset,
                len: bytes.len() as u64,
            },
            bytes,
        })
    }

    /// After the closing `]`: only whitespace may follow.
    fn close(&mut self) -> Result<(), String> {
        self.consume(1, 0);
        self.state = State::Done;
        match self.skip_space()? {
            None => Ok(()),
            Some(b) => Err(format!(
                "{}: {} after the end of the array",
                self.here(),
                shown(b)
            )),
        }
    }

    fn ended_early(&self) -> String {
        format!(
            "{}: the file ends before the array is closed (after {} elements)",
            self.here(),
            self.elements
        )
    }

    /// The next element; `None` once the array is closed.
    pub fn next_element(&mut self) -> Result<Option<Record>, String> {
        loop {
            match self.state {
                State::Start => {
                    self.skip_bom()?;
                    match self.skip_space()? {
                        Some(b'[') => {
                            self.consume(1, 0);
                            self.state = State::First;
                        }
                        Some(b) => {
                            return Err(format!(
                                "{}: expected a JSON array ('['), found {}",
                                self.here(),
                                shown(b)
                            ));
                        }
                        None => {
                            return Err(format!(
                                "{}: the file is empty (expected a JSON array)",
                                self.name
                            ));
                        }
                    }
                }
                State::First => {
                    return match self.skip_space()? {
                        Some(b']') => self.close().map(|()| None),
                        Some(b) => {
                            self.state = State::Next;
                            self.element(b).map(Some)
                        }
                        None => Err(self.ended_early()),
                    };
                }
                State::Next => {
                    return match self.skip_space()? {
                        Some(b',') => {
                            self.consume(1, 0);
                            match self.skip_space()? {
                                Some(b']') => Err(format!(
                                    "{}: a ',' after array element {} is followed by no element",
                                    self.here(),
                                    self.elements
                                )),
                                Some(b) => self.element(b).map(Some),
                                None => Err(self.ended_early()),
                            }
                        }
                        Some(b']') => self.close().map(|()| None),
                        Some(b) => Err(format!(
                            "{}: expected ',' or ']' after array element {}, found {}",
                            self.here(),
                            self.elements,
                            shown(b)
                        )),
                        None => Err(self.ended_early()),
                    };
                }
                State::Done => return Ok(None),
            }
        }
    }
}

impl<R: BufRead + Seek> Records for ArrayElements<R> {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        self.next_element()
    }

    fn reread(&mut self, span: &Span) -> Result<Record, String> {
        let record = read_span(&mut self.reader, span, &self.name)?;
        self.reader
            .seek(std::io::SeekFrom::Start(self.pos))
            .map_err(|e| format!("{}: cannot seek: {e}", self.here()))?;
        Ok(record)
    }
}
