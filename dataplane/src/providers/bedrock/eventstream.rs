//! The AWS event-stream wire format (`application/vnd.amazon.eventstream`), decoded
//! incrementally.
//!
//! A message is, big-endian: total length (u32), headers length (u32), a CRC32 of those eight
//! bytes, the headers (each: name length u8, name, value type u8, value), the payload, and a
//! CRC32 of everything before it.
//!
//! **Guarantees.** Chunks may split anywhere; the messages are the same for every split. Both
//! CRCs are checked. Every header value type of the format is read (booleans, byte, short,
//! integer, long, byte array, string, timestamp, UUID). A message larger than
//! [`MAX_PAYLOAD`] + [`MAX_HEADERS`] (+ framing) is refused from its prelude, before it is
//! buffered. No input makes the decoder panic; after an error it stays failed (the stream
//! cannot be resynchronized: lengths are what delimit messages).

use bytes::{Buf, Bytes, BytesMut};

/// Largest payload accepted (the format's limit).
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Largest headers section accepted (the format's limit).
pub const MAX_HEADERS: usize = 128 << 10;
/// Prelude (lengths and their CRC) plus the message CRC.
const FRAMING: usize = 16;
const PRELUDE: usize = 12;

/// A header value, one variant per wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 and 1.
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Bytes),
    /// Type 7 (invalid UTF-8 is replaced, never refused: values are only compared and logged).
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Headers in wire order.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// The value of string header `name` (e.g. `:message-type`).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why the stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The prelude CRC does not match.
    #[error("event-stream prelude checksum mismatch")]
    PreludeCrc,
    /// The message CRC does not match.
    #[error("event-stream message checksum mismatch")]
    MessageCrc,
    /// The lengths are impossible or over the limits.
    #[error("event-stream message of {total} bytes with {headers} bytes of headers refused")]
    BadLength {
        /// Declared total length.
        total: u32,
        /// Declared headers length.
        headers: u32,
    },
    /// The headers section is malformed.
    #[error("malformed event-stream header: {0}")]
    Header(&'static str),
}

/// An incremental decoder; see the module docs.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Bytes held of a message not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.try_next() {
            Err(e) => {
                self.buf = BytesMut::new();
                self.failed = Some(e.clone());
                Err(e)
            }
            ok => ok,
        }
    }

    fn try_next(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let headers = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        let prelude_crc = u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        if crc32fast::hash(&self.buf[..8]) != prelude_crc {
            return Err(DecodeError::PreludeCrc);
        }
        let (total_len, headers_len) = (total as usize, headers as usize);
        if total_len < FRAMING
            || headers_len > MAX_HEADERS
            || headers_len > total_len - FRAMING
            || total_len - FRAMING - headers_len > MAX_PAYLOAD
        {
            return Err(DecodeError::BadLength { total, headers });
        }
        if self.buf.len() < total_len {
            self.buf.reserve(total_len - self.buf.len());
            return Ok(None);
        }
        let msg = self.buf.split_to(total_len).freeze();
        let crc_at = total_len - 4;
        let message_crc =
            u32::from_be_bytes([msg[crc_at], msg[crc_at + 1], msg[crc_at + 2], msg[crc_at + 3]]);
        if crc32fast::hash(&msg[..crc_at]) != message_crc {
            return Err(DecodeError::MessageCrc);
        }
        let headers = parse_headers(msg.slice(PRELUDE..PRELUDE + headers_len))?;
        let payload = msg.slice(PRELUDE + headers_len..crc_at);
        Ok(Some(Message { headers, payload }))
    }
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Header("value runs past the headers section"));
    }
    Ok(buf.split_to(n))
}

fn take_array<const N: usize>(buf: &mut Bytes) -> Result<[u8; N], DecodeError> {
    let b = take(buf, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&b);
    Ok(out)
}

fn parse_headers(mut buf: Bytes) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        let [name_len] = take_array::<1>(&mut buf)?;
        if name_len == 0 {
            return Err(DecodeError::Header("empty header name"));
        }
        let name = String::from_utf8_lossy(&take(&mut buf, name_len as usize)?).into_owned();
        let [kind] = take_array::<1>(&mut buf)?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(take_array(&mut buf)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(take_array(&mut buf)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(take_array(&mut buf)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(take_array(&mut buf)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(take_array(&mut buf)?) as usize;
                let v = take(&mut buf, len)?;
                if kind == 6 {
                    HeaderValue::Bytes(v)
                } else {
                    HeaderValue::String(String::from_utf8_lossy(&v).into_owned())
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take_array(&mut buf)?)),
            9 => HeaderValue::Uuid(take_array(&mut buf)?),
            _ => return Err(DecodeError::Header("unknown header value type")),
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Test-only encoder (the inverse of [`Decoder`]), shared with the transcoder's tests.
#[cfg(test)]
pub(crate) fn encode(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => h.push(0),
            HeaderValue::Bool(false) => h.push(1),
            HeaderValue::Byte(v) => {
                h.push(2);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                h.push(3);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                h.push(4);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                h.push(5);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                h.push(6);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                h.push(7);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                h.push(8);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                h.push(9);
                h.extend_from_slice(v);
            }
        }
    }
    let total = (FRAMING + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_types() -> Vec<(&'static str, HeaderValue)> {
        vec![
            (":message-type", HeaderValue::String("event".into())),
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("b", HeaderValue::Byte(-2)),
            ("s", HeaderValue::Short(-300)),
            ("i", HeaderValue::Int(70_000)),
            ("l", HeaderValue::Long(-5_000_000_000)),
            ("by", HeaderValue::Bytes(Bytes::from_static(b"\x00\xff"))),
            ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
            ("u", HeaderValue::Uuid(*b"0123456789abcdef")),
        ]
    }

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Message>, DecodeError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c);
            while let Some(m) = d.next_message()? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn every_header_type_round_trips_split_at_every_byte() {
        let mut stream = encode(&all_types(), b"payload one");
        stream.extend(encode(&[], b""));
        stream.extend(encode(
            &[(":event-type", HeaderValue::String("chunk".into()))],
            b"{}",
        ));
        let whole = decode_all(&[&stream]).unwrap();
        assert_eq!(whole.len(), 3);
        let expected: Vec<(String, HeaderValue)> =
            all_types().into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        assert_eq!(whole[0].headers, expected);
        assert_eq!(&whole[0].payload[..], b"payload one");
        assert_eq!(whole[0].header_str(":message-type"), Some("event"));
        assert_eq!(
            whole[1],
            Message {
                headers: vec![],
                payload: Bytes::new()
            }
        );
        for i in 0..=stream.len() {
            assert_eq!(
                decode_all(&[&stream[..i], &stream[i..]]).unwrap(),
                whole,
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), whole);
    }

    #[test]
    fn checksums_are_verified() {
        let good = encode(&[("a", HeaderValue::Bool(true))], b"xyz");
        let mut bad_prelude = good.clone();
        bad_prelude[9] ^= 1;
        assert_eq!(decode_all(&[&bad_prelude]), Err(DecodeError::PreludeCrc));
        for at in [12, 15, good.len() - 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert_eq!(decode_all(&[&bad]), Err(DecodeError::MessageCrc), "flip at {at}");
        }
        // Once failed, it stays failed.
        let mut d = Decoder::new();
        d.feed(&bad_prelude);
        assert!(d.next_message().is_err());
        d.feed(&good);
        assert_eq!(d.next_message(), Err(DecodeError::PreludeCrc));
    }

    #[test]
    fn oversize_and_impossible_lengths_are_refused_from_the_prelude() {
        let prelude = |total: u32, headers: u32| {
            let mut p = Vec::new();
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&headers.to_be_bytes());
            let crc = crc32fast::hash(&p);
            p.extend_from_slice(&crc.to_be_bytes());
            p
        };
        for (total, headers) in [
            (u32::MAX, 0),
            ((MAX_PAYLOAD + FRAMING + 1) as u32, 0),
            ((MAX_HEADERS + FRAMING + 1) as u32, (MAX_HEADERS + 1) as u32),
            (15, 0),
            (20, 5),
        ] {
            let mut d = Decoder::new();
            d.feed(&prelude(total, headers));
            assert_eq!(
                d.next_message(),
                Err(DecodeError::BadLength { total, headers }),
                "{total} {headers}"
            );
            assert_eq!(d.pending(), 0, "nothing held after a refusal");
        }
        // The largest allowed message waits for its bytes instead.
        let mut d = Decoder::new();
        d.feed(&prelude(
            (MAX_PAYLOAD + MAX_HEADERS + FRAMING) as u32,
            MAX_HEADERS as u32,
        ));
        assert_eq!(d.next_message(), Ok(None));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let frame = |h: &[u8]| {
            let total = (FRAMING + h.len()) as u32;
            let mut out = Vec::new();
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&(h.len() as u32).to_be_bytes());
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_be_bytes());
            out.extend_from_slice(h);
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_be_bytes());
            out
        };
        for h in [
            &b"\x00"[..],
            b"\x05ab",
            b"\x01a",
            b"\x01a\x0a",
            b"\x01a\x07\x00\x09abc",
            b"\x01a\x04\x00\x00",
            b"\x01a\x09short",
        ] {
            assert!(
                matches!(decode_all(&[&frame(h)]), Err(DecodeError::Header(_))),
                "{h:?}"
            );
        }
    }

    #[test]
    fn never_panics_on_random_truncated_or_garbage_input() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = encode(&all_types(), b"{\"bytes\":\"eyJ0eXBlIjoicGluZyJ9\"}");
        for round in 0..3000 {
            let mut input = match round % 3 {
                // Pure garbage.
                0 => (0..(next() % 200)).map(|_| next() as u8).collect::<Vec<u8>>(),
                // A valid message truncated.
                1 => valid[..(next() as usize % valid.len())].to_vec(),
                // A valid message with a few bytes changed.
                _ => {
                    let mut v = valid.clone();
                    for _ in 0..(1 + next() % 4) {
                        let at = next() as usize % v.len();
                        v[at] = next() as u8;
                    }
                    v
                }
            };
            // Garbage with a correct prelude CRC exercises the length and header checks.
            if round % 7 == 0 && input.len() >= 12 {
                let crc = crc32fast::hash(&input[..8]);
                input[8..12].copy_from_slice(&crc.to_be_bytes());
            }
            let cut = if input.is_empty() {
                0
            } else {
                next() as usize % input.len()
            };
            let _ = decode_all(&[&input[..cut], &input[cut..]]);
        }
    }
}
