//! The protobuf side of the call, by hand: the `BatchedRequest` encoder ([`encode_request`]) and
//! the `BatchedResponse` decoder, over a cursor that fails on truncation instead of panicking.

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

pub(crate) fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encodes one `Request` in a `BatchedRequest`, framed as a gRPC message. Fields are written in
/// field-number order with proto3 defaults left out, which is what protoc-generated encoders
/// emit, so the bytes match other clients' and a simulator can compare them. Public so tests
/// and tools can produce the exact bytes the adapter sends.
pub fn encode_request(
    id: u64,
    temperature: f32,
    prompt: &str,
    max_new_tokens: u32,
    ignore_eos: bool,
) -> Vec<u8> {
    let mut stopping = Vec::new();
    if max_new_tokens != 0 {
        put_tag(&mut stopping, 1, 0);
        put_varint(&mut stopping, u64::from(max_new_tokens));
    }
    if ignore_eos {
        put_tag(&mut stopping, 3, 0);
        put_varint(&mut stopping, 1);
    }
    let mut request = Vec::with_capacity(prompt.len() + 32);
    if id != 0 {
        put_tag(&mut request, 1, 0);
        put_varint(&mut request, id);
    }
    if temperature.to_bits() != 0 {
        put_tag(&mut request, 2, 5);
        request.extend_from_slice(&temperature.to_le_bytes());
    }
    if !prompt.is_empty() {
        put_len(&mut request, 3, prompt.as_bytes());
    }
    put_len(&mut request, 5, &stopping);
    let mut batched = Vec::with_capacity(request.len() + 8);
    put_len(&mut batched, 1, &request);
    let mut message = Vec::with_capacity(batched.len() + 5);
    message.push(0);
    message.extend_from_slice(&(batched.len() as u32).to_be_bytes());
    message.extend_from_slice(&batched);
    message
}

/// A cursor over protobuf bytes; every read fails on truncation instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or("truncated varint in a protobuf message")?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes in a protobuf message".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("a protobuf field runs past the end of its message")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "protobuf length out of range")?)
    }

    /// Returns (field number, wire type).
    fn tag(&mut self) -> Result<(u64, u8), String> {
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err("protobuf field number 0".into());
        }
        Ok((field, (tag & 7) as u8))
    }

    /// Skips a field's value; groups (wire types 3/4) are skipped through their end tag.
    fn skip(&mut self, field: u64, wire_type: u8) -> Result<(), String> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.len_delimited().map(drop),
            5 => self.take(4).map(drop),
            3 => loop {
                let (inner, wt) = self.tag()?;
                if wt == 4 {
                    return if inner == field {
                        Ok(())
                    } else {
                        Err(format!("protobuf group {field} closed by end tag {inner}"))
                    };
                }
                self.skip(inner, wt)?;
            },
            4 => Err(format!(
                "unexpected protobuf end-group tag for field {field}"
            )),
            other => Err(format!("invalid protobuf wire type {other}")),
        }
    }
}

/// One decoded `Response`; absent fields keep their proto3 defaults.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Response<'a> {
    pub(crate) status: u64,
    pub(crate) id: u64,
    pub(crate) generated: &'a [u8],
}

/// Decodes a `BatchedResponse`. A known field with an unexpected wire type is skipped as
/// unknown, as the C++ protobuf runtime the server uses does.
pub(crate) fn decode_batched(bytes: &[u8]) -> Result<Vec<Response<'_>>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::with_capacity(1);
    while !r.at_end() {
        match r.tag()? {
            (1, 2) => out.push(decode_response(r.len_delimited()?)?),
            (field, wt) => r.skip(field, wt)?,
        }
    }
    Ok(out)
}

fn decode_response(bytes: &[u8]) -> Result<Response<'_>, String> {
    let mut r = Reader::new(bytes);
    let mut rsp = Response::default();
    while !r.at_end() {
        match r.tag()? {
            (1, 0) => rsp.status = r.varint()?,
            (2, 0) => rsp.id = r.varint()?,
            (3, 2) => rsp.generated = r.len_delimited()?,
            (field, wt) => r.skip(field, wt)?,
        }
    }
    Ok(rsp)
}
