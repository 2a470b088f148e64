//! An incremental Server-Sent Events reader for MCP upstream responses: bytes in, complete
//! `data` payloads out (multi-line data joined with `\n`, CRLF or LF line endings).

/// Splits a byte stream into SSE events; keeps the unfinished tail between feeds.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

/// Upper bound on one event, so a hostile upstream cannot grow the buffer without limit.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// The event exceeded the size bound.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("SSE event larger than {MAX_EVENT_BYTES} bytes")]
pub struct TooLarge;

impl SseReader {
    /// Feeds bytes; returns the `data` payloads of the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.data));
                    self.has_data = false;
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
            // `event:`, `id:`, `retry:` and `:` comments carry nothing the gateway needs.
        }
        self.buf.drain(..start);
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_and_crlf() {
        let stream = b"event: message\r\ndata: {\"a\":1}\r\n\r\n: keepalive\n\nid: 7\ndata: x\ndata: y\n\n";
        for cut in 0..stream.len() {
            let mut r = SseReader::default();
            let mut got = r.feed(&stream[..cut]).unwrap();
            got.extend(r.feed(&stream[cut..]).unwrap());
            assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"x\ny".to_vec()], "cut at {cut}");
        }
    }
}
