//! The one Server-Sent Events framer: bytes in, events out, by the WHATWG event-stream rules
//! (HTML Living Standard, "Server-sent events", parsing an event stream), with a bound on
//! everything it holds. The usage tap, the tool guard and the MCP upstream client all read
//! their streams through it.
//!
//! **What it guarantees.**
//! - Lines end with LF, CRLF or a bare CR, also when a chunk ends between the CR and the LF;
//!   chunks may split anywhere (a field name, a UTF-8 character, the JSON) and the events are
//!   the same for every split.
//! - One leading UTF-8 byte-order mark is ignored, even split across chunks. A line starting
//!   with `:` is a comment. `field:value` loses one space after the colon; a line without a
//!   colon is a field with an empty value. `data` lines are joined with LF; `event` names the
//!   event; `id`, `retry` and unknown fields are ignored (no consumer here reconnects).
//! - A blank line ends an event; an event without a `data` line is not dispatched (the
//!   handler still hears of the blank line, so a relay can release the bytes). An event left
//!   unterminated at the end of the stream is discarded, as the rules say, unless the
//!   consumer calls [`Framer::finish`] to read it as if it had ended.
//! - Memory is bounded: the data of one event (each line with its LF) is held up to the
//!   `max_event` given to [`Framer::new`], plus the field name of a line held across chunks;
//!   an event name up to [`MAX_NAME_BYTES`]. An event whose data would exceed the bound is
//!   dispatched as [`Data::TooLarge`] (its data dropped as soon as the bound is crossed,
//!   wherever the chunks split) and the stream reads on.
//! - A consumer may decline an event's data ([`Handler::wants_data`], asked at its first
//!   `data` line): that data is then skipped without being copied or held, however long.
//!
//! Bytes are never decoded: names and data are handed over as bytes (invalid UTF-8 included);
//! a consumer that needs text decodes them as a browser would (`String::from_utf8_lossy`).

/// Longest `event` name held; a longer one names no event type and reads as `None`.
pub const MAX_NAME_BYTES: usize = 256;

/// A buffer grown past this by a large event is released after the event.
const RETAINED_CAPACITY: usize = 64 << 10;
/// Enough of a line to tell its field: `event:` is the longest name read.
const HEAD_LEN: usize = 6;
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event` field (empty when absent: the default type, `message`), or `None` when it
    /// was longer than [`MAX_NAME_BYTES`].
    pub name: Option<&'a [u8]>,
    /// The joined `data` lines.
    pub data: Data<'a>,
}

/// The data of a dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    /// The `data` lines joined with LF (no final LF).
    Kept(&'a [u8]),
    /// The handler declined it.
    Skipped,
    /// It exceeded the framer's bound and was dropped.
    TooLarge,
}

/// What a consumer does with the stream.
pub trait Handler {
    /// Whether to keep the data of the event being read; asked once per event, at its first
    /// `data` line, with the event's name so far (see [`Event::name`]).
    fn wants_data(&mut self, _name: Option<&[u8]>) -> bool {
        true
    }

    /// A blank line: `event` is the event it ended, `None` when that had no `data` line.
    /// `end` is the offset in the chunk being fed just past the blank line's terminator (for
    /// a CRLF, past its CR: the LF belongs to what follows, wherever the chunks split).
    fn on_event(&mut self, event: Option<Event<'_>>, end: usize);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Data,
}

/// What the framer is doing with the line in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineMode {
    /// At the start of a line; nothing held.
    Start,
    /// A few bytes held, not yet enough to tell the field.
    Undecided,
    /// Holding the line: an `event` line, or data the handler wants.
    Keep(Field),
    /// Discarding the rest of the line.
    Skip,
}

/// The fate of the current event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataMode {
    /// No `data` line yet.
    Unasked,
    Keep,
    Skip,
    TooLarge,
}

enum Decision {
    Undecided,
    Keep(Field),
    Skip,
}

/// An incremental, bounded SSE framer; see the module docs.
#[derive(Debug)]
pub struct Framer {
    max_event: usize,
    // Line assembly.
    line: Vec<u8>,
    line_mode: LineMode,
    after_cr: bool,
    /// Leading bytes of a byte-order mark matched at the start of the stream; `None` once
    /// past it.
    bom_matched: Option<usize>,
    // Event assembly.
    name: Vec<u8>,
    name_too_long: bool,
    has_data: bool,
    data_mode: DataMode,
    /// The joined data, each line followed by LF.
    data: Vec<u8>,
}

impl Framer {
    /// A framer holding at most `max_event` bytes of one event's data.
    pub fn new(max_event: usize) -> Self {
        Self {
            max_event,
            line: Vec::new(),
            line_mode: LineMode::Start,
            after_cr: false,
            bom_matched: Some(0),
            name: Vec::new(),
            name_too_long: false,
            has_data: false,
            data_mode: DataMode::Unasked,
            data: Vec::new(),
        }
    }

    /// The bound given to [`Framer::new`].
    pub fn max_event(&self) -> usize {
        self.max_event
    }

    /// Bytes held for the pending line and event: at most `max_event` plus a field name.
    pub fn held_len(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Bytes allocated for the pending line and event (for tests of the bound).
    pub fn held_capacity(&self) -> usize {
        self.line.capacity() + self.data.capacity() + self.name.capacity()
    }

    /// Whether the event being read has already crossed the bound (its data is dropped).
    pub fn overflowing(&self) -> bool {
        self.data_mode == DataMode::TooLarge
    }

    /// Reads the next chunk of the stream, telling `handler` of every blank line.
    pub fn feed<H: Handler + ?Sized>(&mut self, chunk: &[u8], handler: &mut H) {
        let mut pos = 0;
        if self.bom_matched.is_some() {
            pos = self.strip_bom(chunk);
        }
        while pos < chunk.len() {
            if std::mem::take(&mut self.after_cr) && chunk[pos] == b'\n' {
                pos += 1;
                continue;
            }
            match find_line_end(&chunk[pos..]) {
                Some(i) => {
                    let end = pos + i;
                    // A CR's LF, if one follows, is skipped at the start of the next line.
                    self.after_cr = chunk[end] == b'\r';
                    self.on_line_part(&chunk[pos..end], true, end + 1, handler);
                    pos = end + 1;
                }
                None => {
                    self.on_line_part(&chunk[pos..], false, chunk.len(), handler);
                    break;
                }
            }
        }
    }

    /// The end of the stream read as the end of the pending line and event: a tail that a
    /// lenient client might act on is dispatched like any event (the WHATWG rules discard
    /// it; a consumer that follows them never calls this). `end` offsets are meaningless.
    pub fn finish<H: Handler + ?Sized>(&mut self, handler: &mut H) {
        // At most two line ends: one ends a pending line (or completes a CRLF), the next is
        // the blank line; a stream that already ended cleanly sees two empty events.
        self.feed(b"\n\n", handler);
    }

    /// Consumes a UTF-8 byte-order mark at the start of the stream; returns the bytes used.
    fn strip_bom(&mut self, chunk: &[u8]) -> usize {
        let mut used = 0;
        while let (Some(matched), Some(&byte)) = (self.bom_matched, chunk.get(used)) {
            if byte != BOM[matched] {
                self.bom_matched = None;
                if matched > 0 {
                    // A line starting with part of a BOM names no field that is read.
                    self.line_mode = LineMode::Skip;
                }
                break;
            }
            used += 1;
            self.bom_matched = (matched + 1 < BOM.len()).then_some(matched + 1);
        }
        used
    }

    /// Handles the part of the current line found in one chunk; `terminated` means the line
    /// ends here, and `end` is where the next line starts.
    fn on_line_part<H: Handler + ?Sized>(&mut self, part: &[u8], terminated: bool, end: usize, h: &mut H) {
        match self.line_mode {
            LineMode::Skip => {}
            LineMode::Keep(field) => self.hold(part, field),
            LineMode::Start if terminated => {
                // The common case: the whole line is in this chunk; read it in place.
                self.process_line(part, end, h);
            }
            LineMode::Start | LineMode::Undecided => {
                let mut head = [0u8; HEAD_LEN];
                let held = self.line.len().min(HEAD_LEN);
                head[..held].copy_from_slice(&self.line[..held]);
                let take = part.len().min(HEAD_LEN - held);
                head[held..held + take].copy_from_slice(&part[..take]);
                match self.decide(&head[..held + take], terminated, h) {
                    Decision::Skip => {
                        self.line.clear();
                        self.line_mode = LineMode::Skip;
                    }
                    Decision::Keep(field) => {
                        self.line_mode = LineMode::Keep(field);
                        self.hold(part, field);
                    }
                    Decision::Undecided => {
                        // Fewer than HEAD_LEN bytes in all, so this copy is tiny.
                        self.line.extend_from_slice(part);
                        self.line_mode = LineMode::Undecided;
                    }
                }
            }
        }
        if terminated {
            if self.line_mode != LineMode::Skip && !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, end, h);
                self.line = line;
            }
            self.line.clear();
            if self.line.capacity() > RETAINED_CAPACITY {
                self.line = Vec::new();
            }
            self.line_mode = LineMode::Start;
        }
    }

    /// Tells from the first bytes of a line whether it must be held.
    fn decide<H: Handler + ?Sized>(&mut self, head: &[u8], whole_line: bool, h: &mut H) -> Decision {
        if head.first() == Some(&b':') {
            return Decision::Skip;
        }
        let name = match head.iter().position(|&b| b == b':') {
            Some(colon) => &head[..colon],
            None if whole_line => head,
            None if head.len() >= HEAD_LEN => return Decision::Skip,
            None => return Decision::Undecided,
        };
        match name {
            b"event" => Decision::Keep(Field::Event),
            b"data" => match self.data_mode(h) {
                DataMode::Keep => Decision::Keep(Field::Data),
                _ => Decision::Skip,
            },
            _ => Decision::Skip,
        }
    }

    /// Marks the event as having data; asks the handler about it at its first data line.
    fn data_mode<H: Handler + ?Sized>(&mut self, h: &mut H) -> DataMode {
        self.has_data = true;
        if self.data_mode == DataMode::Unasked {
            let name = (!self.name_too_long).then_some(&self.name[..]);
            self.data_mode = if h.wants_data(name) {
                DataMode::Keep
            } else {
                DataMode::Skip
            };
        }
        self.data_mode
    }

    /// Appends to the held line, giving the line up when it would cross the bound.
    fn hold(&mut self, part: &[u8], field: Field) {
        // Room for the field name and its space besides the value, so a line held across
        // chunks is refused exactly when the same line read whole would be.
        let room = match field {
            Field::Data => self.max_event.saturating_sub(self.data.len()) + HEAD_LEN,
            Field::Event => HEAD_LEN + 1 + MAX_NAME_BYTES,
        };
        if self.line.len() + part.len() <= room {
            self.line.extend_from_slice(part);
            return;
        }
        self.line = Vec::new();
        self.line_mode = LineMode::Skip;
        match field {
            Field::Data => self.too_large(),
            Field::Event => {
                self.name.clear();
                self.name_too_long = true;
            }
        }
    }

    fn too_large(&mut self) {
        self.data_mode = DataMode::TooLarge;
        self.data = Vec::new();
    }

    /// Handles one complete line (without its terminator).
    fn process_line<H: Handler + ?Sized>(&mut self, line: &[u8], end: usize, h: &mut H) {
        if line.is_empty() {
            self.dispatch(end, h);
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => {
                self.name.clear();
                self.name_too_long = value.len() > MAX_NAME_BYTES;
                if !self.name_too_long {
                    self.name.extend_from_slice(value);
                }
            }
            b"data" if self.data_mode(h) == DataMode::Keep => {
                if self.data.len() + value.len() < self.max_event {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                } else {
                    self.too_large();
                }
            }
            // id, retry and unknown fields: nothing any consumer here uses.
            _ => {}
        }
    }

    /// A blank line: the event is complete.
    fn dispatch<H: Handler + ?Sized>(&mut self, end: usize, h: &mut H) {
        let event = self.has_data.then(|| Event {
            name: (!self.name_too_long).then_some(&self.name[..]),
            data: match self.data_mode {
                DataMode::Keep => Data::Kept(self.data.strip_suffix(b"\n").unwrap_or(&self.data)),
                DataMode::TooLarge => Data::TooLarge,
                DataMode::Skip | DataMode::Unasked => Data::Skipped,
            },
        });
        h.on_event(event, end);
        self.name.clear();
        self.name_too_long = false;
        self.has_data = false;
        self.data_mode = DataMode::Unasked;
        self.data.clear();
        if self.data.capacity() > RETAINED_CAPACITY {
            self.data = Vec::new();
        }
    }
}

/// Position of the first LF or CR, scanning a word at a time.
fn find_line_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CR: u64 = u64::from_ne_bytes([b'\r'; 8]);
    let has_zero_byte = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;

    let mut start = 0;
    for word in bytes.chunks_exact(8) {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        let w = u64::from_ne_bytes(le);
        if has_zero_byte(w ^ LF) || has_zero_byte(w ^ CR) {
            break;
        }
        start += 8;
    }
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|i| start + i)
}

/// The data of every event, for consumers that want all of it and treat an event over the
/// bound as a failure of the stream (the MCP upstream client).
#[derive(Debug)]
pub struct DataReader {
    framer: Framer,
}

/// An event crossed the bound of a [`DataReader`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("SSE event larger than {0} bytes")]
pub struct TooLarge(pub usize);

impl DataReader {
    /// A reader refusing events over `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            framer: Framer::new(max_event),
        }
    }

    /// Feeds bytes; returns the data of the events they completed, or an error as soon as an
    /// event crosses the bound (the stream cannot be read on).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TooLarge> {
        struct Collect(Vec<Vec<u8>>, bool);
        impl Handler for Collect {
            fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
                match event.map(|e| e.data) {
                    Some(Data::Kept(d)) => self.0.push(d.to_vec()),
                    Some(Data::TooLarge) => self.1 = true,
                    Some(Data::Skipped) | None => {}
                }
            }
        }
        let mut out = Collect(Vec::new(), false);
        self.framer.feed(bytes, &mut out);
        if out.1 || self.framer.overflowing() {
            return Err(TooLarge(self.framer.max_event()));
        }
        Ok(out.0)
    }
}

/// A straightforward reading of the WHATWG rules over a whole stream: the reference the
/// framer is checked against (in tests and by the fuzz targets). Unbounded; not for I/O.
pub fn reference_events(stream: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let stream = stream.strip_prefix(&BOM[..]).unwrap_or(stream);
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\n' => {
                lines.push(&stream[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&stream[start..i]);
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    // The unterminated last line (`stream[start..]`) is discarded, as the rules say.
    let mut out = Vec::new();
    let (mut name, mut data, mut has_data) = (Vec::new(), Vec::new(), false);
    for line in lines {
        if line.is_empty() {
            if has_data {
                data.pop();
                out.push((std::mem::take(&mut name), std::mem::take(&mut data)));
            }
            name.clear();
            data.clear();
            has_data = false;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => (
                &line[..c],
                line[c + 1..].strip_prefix(b" ").unwrap_or(&line[c + 1..]),
            ),
            None => (line, &[][..]),
        };
        match field {
            b"event" => name = value.to_vec(),
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
                has_data = true;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event's name and data (or why there is none).
    type LoggedEvent = (Option<Vec<u8>>, Result<Vec<u8>, &'static str>);

    /// Collects everything a framer dispatches, for comparisons.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Log {
        events: Vec<LoggedEvent>,
        blanks: usize,
        /// Names the declined events had when asked.
        decline: Vec<Vec<u8>>,
    }

    impl Handler for Log {
        fn wants_data(&mut self, name: Option<&[u8]>) -> bool {
            !name.is_some_and(|n| self.decline.iter().any(|d| d == n))
        }

        fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
            self.blanks += 1;
            if let Some(e) = event {
                let data = match e.data {
                    Data::Kept(d) => Ok(d.to_vec()),
                    Data::Skipped => Err("skipped"),
                    Data::TooLarge => Err("too large"),
                };
                self.events.push((e.name.map(<[u8]>::to_vec), data));
            }
        }
    }

    fn framed(chunks: &[&[u8]], max: usize) -> Log {
        let mut f = Framer::new(max);
        let mut log = Log::default();
        for c in chunks {
            f.feed(c, &mut log);
        }
        log
    }

    /// Events of `stream` fed whole, checked equal for every split into two and three chunks
    /// and for one byte at a time, and against the reference reading.
    fn every_split(stream: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let whole = framed(&[stream], 1 << 20);
        for i in 0..=stream.len() {
            assert_eq!(
                framed(&[&stream[..i], &stream[i..]], 1 << 20),
                whole,
                "split at {i}"
            );
            for j in i..=stream.len() {
                let three = framed(&[&stream[..i], &stream[i..j], &stream[j..]], 1 << 20);
                assert_eq!(three, whole, "split at {i}, {j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(framed(&bytes, 1 << 20), whole, "byte by byte");
        let got: Vec<(Vec<u8>, Vec<u8>)> = whole
            .events
            .into_iter()
            .map(|(n, d)| (n.unwrap(), d.unwrap()))
            .collect();
        assert_eq!(got, reference_events(stream), "reference");
        got
    }

    fn ev(name: &str, data: &str) -> (Vec<u8>, Vec<u8>) {
        (name.as_bytes().to_vec(), data.as_bytes().to_vec())
    }

    #[test]
    fn line_endings_lf_crlf_and_bare_cr_split_at_every_byte() {
        let expected = vec![ev("a", "1"), ev("b", "2"), ev("c", "3\n4")];
        for nl in ["\n", "\r\n", "\r"] {
            let s =
                "event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: c\ndata: 3\ndata: 4\n\n".replace('\n', nl);
            assert_eq!(every_split(s.as_bytes()), expected, "{nl:?}");
        }
        // Mixed in one stream, including a CR whose LF follows in the next chunk.
        let mixed = b"event: a\rdata: 1\r\n\revent: b\ndata: 2\r\r\nevent: c\r\ndata: 3\ndata: 4\r\n\n";
        assert_eq!(every_split(mixed), expected);
    }

    #[test]
    fn bare_cr_completes_events() {
        // The splitter this replaces waited for an LF that never came.
        let mut f = Framer::new(1024);
        let mut log = Log::default();
        f.feed(b"event: x\rdata: y\r\r", &mut log);
        assert_eq!(log.events, vec![(Some(b"x".to_vec()), Ok(b"y".to_vec()))]);
    }

    #[test]
    fn syntax_of_fields_comments_and_bom() {
        let s = "\u{feff}: comment\n:\nretry: 10\nid: 7\nevent:  spaced\ndata:no space\ndata:  two\ndata\nunknown: x\n\n\
                 data: only data\n\n\
                 event: no-data\n\n\
                 event: first\nevent: last\ndata: {\"a\":1}\n\n";
        assert_eq!(
            every_split(s.as_bytes()),
            vec![
                ev(" spaced", "no space\n two\n"),
                ev("", "only data"),
                ev("last", "{\"a\":1}"),
            ]
        );
        // A BOM only at the very start; a second one is part of the line.
        assert_eq!(
            every_split("\u{feff}\u{feff}data: x\n\ndata: y\n\n".as_bytes()),
            vec![ev("", "y")]
        );
        // Part of a BOM makes the first line garbage.
        assert_eq!(every_split(b"\xEF\xBBdata: x\n\ndata: y\n\n"), vec![ev("", "y")]);
    }

    #[test]
    fn blank_lines_are_reported_and_offsets_point_past_them() {
        struct Ends(Vec<usize>);
        impl Handler for Ends {
            fn on_event(&mut self, _e: Option<Event<'_>>, end: usize) {
                self.0.push(end);
            }
        }
        let s = b": ping\n\ndata: 1\r\n\r\ndata: 2\r\r";
        let mut ends = Ends(Vec::new());
        Framer::new(64).feed(s, &mut ends);
        assert_eq!(ends.0, vec![8, 18, 28]);
        // Wherever the chunks split, the LF of a CRLF is not part of the previous event.
        let mut ends = Ends(Vec::new());
        let mut f = Framer::new(64);
        f.feed(b"data: 1\r\n\r", &mut ends);
        f.feed(b"\ndata: 2\n\n", &mut ends);
        assert_eq!(ends.0, vec![10, 10]);
    }

    #[test]
    fn tail_at_end_of_stream_is_discarded_unless_finished() {
        for tail in [
            &b"data: x"[..],
            b"data: x\n",
            b"data: x\r",
            b"data: x\r\n",
            b"event: e\ndata: x\ndata: y",
        ] {
            let mut f = Framer::new(64);
            let mut log = Log::default();
            f.feed(b"data: a\n\n", &mut log);
            f.feed(tail, &mut log);
            assert_eq!(log.events.len(), 1, "{tail:?} is not an event yet");
            f.finish(&mut log);
            assert_eq!(log.events.len(), 2, "{tail:?}");
            assert!(
                matches!(&log.events[1].1, Ok(d) if d.starts_with(b"x")),
                "{tail:?}"
            );
        }
        // A stream that ended cleanly has no tail.
        let mut f = Framer::new(64);
        let mut log = Log::default();
        f.feed(b"data: a\r\n\r\n", &mut log);
        f.finish(&mut log);
        assert_eq!(log.events.len(), 1);
    }

    #[test]
    fn oversize_event_is_refused_and_the_stream_reads_on() {
        let max = 1000;
        let big = format!("event: big\ndata: {}\n\n", "x".repeat(max));
        let lines = format!("event: many\n{}\n", "data: 0123456789\n".repeat(max / 10));
        let stream = format!("{big}{lines}event: ok\ndata: fine\n\n");
        for chunk in [1, 7, 64, stream.len()] {
            let mut f = Framer::new(max);
            let mut log = Log::default();
            for c in stream.as_bytes().chunks(chunk) {
                f.feed(c, &mut log);
                assert!(f.held_len() <= max + HEAD_LEN, "held past the bound");
            }
            assert_eq!(
                log.events,
                vec![
                    (Some(b"big".to_vec()), Err("too large")),
                    (Some(b"many".to_vec()), Err("too large")),
                    (Some(b"ok".to_vec()), Ok(b"fine".to_vec())),
                ],
                "chunk {chunk}"
            );
            assert!(f.held_capacity() <= 3 * RETAINED_CAPACITY);
        }
        // The reader for MCP fails at once, with a clear message.
        let mut r = DataReader::new(max);
        assert_eq!(r.feed(b"data: ok\n\n").unwrap(), vec![b"ok".to_vec()]);
        r.feed(b"data: ").unwrap();
        let err = r.feed(&vec![b'd'; 10 * max]).unwrap_err();
        assert_eq!(err.to_string(), "SSE event larger than 1000 bytes");
        let mut r = DataReader::new(max);
        assert!(
            r.feed(format!("data: {}", "y".repeat(2 * max)).as_bytes())
                .is_err()
        );
    }

    #[test]
    fn the_bound_is_the_same_for_every_split() {
        // Data of exactly max - 1 bytes (plus its LF) fits, one more does not, however split.
        for (len, fits) in [(62, true), (63, true), (64, false)] {
            for prefix in ["data:", "data: "] {
                let s = format!("{prefix}{}\n\n", "x".repeat(len));
                let whole = framed(&[s.as_bytes()], 64);
                for i in 0..=s.len() {
                    let (a, b) = s.as_bytes().split_at(i);
                    assert_eq!(framed(&[a, b], 64), whole, "{prefix:?} {len} split at {i}");
                }
                let kept = whole.events[0].1.is_ok();
                assert_eq!(kept, fits, "{prefix:?} {len}");
            }
        }
    }

    #[test]
    fn the_mcp_reader_returns_payloads_split_anywhere() {
        let stream = b"event: message\r\ndata: {\"a\":1}\r\n\r\n: keepalive\n\nid: 7\ndata: x\rdata: y\r\r";
        for cut in 0..stream.len() {
            let mut r = DataReader::new(1024);
            let mut got = r.feed(&stream[..cut]).unwrap();
            got.extend(r.feed(&stream[cut..]).unwrap());
            assert_eq!(got, vec![b"{\"a\":1}".to_vec(), b"x\ny".to_vec()], "cut at {cut}");
        }
    }

    #[test]
    fn declined_and_overlong_names() {
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        let s = format!(
            "event: skip\ndata: {}\n\nevent: {long}\ndata: x\n\nevent: keep\ndata: y\n\n",
            "z".repeat(5000)
        );
        let mut f = Framer::new(100);
        let mut log = Log {
            decline: vec![b"skip".to_vec()],
            ..Log::default()
        };
        for c in s.as_bytes().chunks(3) {
            f.feed(c, &mut log);
            assert!(f.line.capacity() <= 2 * (HEAD_LEN + 1 + MAX_NAME_BYTES));
        }
        assert_eq!(
            log.events,
            vec![
                (Some(b"skip".to_vec()), Err("skipped")),
                (None, Ok(b"x".to_vec())),
                (Some(b"keep".to_vec()), Ok(b"y".to_vec())),
            ]
        );
    }

    #[test]
    fn find_line_end_matches_a_naive_scan() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for len in 0..70 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| match next() % 40 {
                        0 => b'\n',
                        1 => b'\r',
                        2 => 0x0A ^ 0x80,
                        3 => 0x0D ^ 0x01,
                        _ => next() as u8,
                    })
                    .collect();
                let naive = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
                assert_eq!(find_line_end(&bytes), naive, "{bytes:?}");
            }
        }
    }
}
