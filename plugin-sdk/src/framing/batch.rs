//! [`Batch`]: the frames of one or more reads in one buffer, and the [`Span`] locating each.

/// Where one frame lies in [`Batch::data`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
    /// The SSE `event:` name, or a non-standard field carrying the payload (llama.cpp's `error:`).
    pub event: Option<String>,
}

/// Frames completed by one or more reads, back to back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub frames: Vec<Span>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
    }

    /// Frame `i` as (event name, payload).
    pub fn get(&self, i: usize) -> (Option<&str>, &[u8]) {
        let span = &self.frames[i];
        let start = span.start as usize;
        (
            span.event.as_deref(),
            &self.data[start..start + span.len as usize],
        )
    }

    /// Appends one frame.
    pub fn push(&mut self, event: Option<String>, data: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(data);
        self.frames.push(Span {
            start,
            len: data.len() as u32,
            event,
        });
    }
}
