//! STOMP 1.2 frames on the wire: what a client writes (CONNECT, SUBSCRIBE, SEND, ACK,
//! DISCONNECT), written straight into a connection's write buffer, and what a server
//! sends (CONNECTED, MESSAGE, RECEIPT, ERROR), read out of its read buffer without copying
//! the body.
//!
//! The STOMP crates on crates.io do not fit: `async-stomp` is EUPL-licensed (refused by
//! deny.toml), `tokio-stomp-2` writes a SEND's transaction as its `id`, sends no
//! `content-length` (a body with a NUL byte is cut) and panics on a header that is not
//! UTF-8.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

/// The largest frame a server may send (a MESSAGE of maestro's largest message and its
/// headers).
pub const MAX_FRAME: usize = 128 << 20;

/// What a server's frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connected,
    Message,
    Receipt,
    Error,
    /// A command this client does not know (ignored).
    Other,
}

/// A frame from the server: the headers a client acts on, raw (still escaped: they go
/// back as they came), and the body.
#[derive(Debug, Clone)]
pub struct Frame {
    pub command: Command,
    /// MESSAGE: what an ACK names (STOMP 1.2's `ack` header, else `message-id`).
    pub ack: Option<Bytes>,
    /// RECEIPT: `receipt-id`.
    pub receipt_id: Option<Bytes>,
    /// ERROR: `message`, unescaped.
    pub message: Option<String>,
    pub body: Bytes,
}

impl Frame {
    /// An ERROR frame's reason: its `message` header, and its body when that is text.
    pub fn reason(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body = body.trim();
        match (&self.message, body.is_empty()) {
            (Some(m), true) => m.clone(),
            (Some(m), false) => format!("{m}: {body}"),
            (None, false) => body.to_owned(),
            (None, true) => "the broker sent ERROR".into(),
        }
    }
}

/// Why the bytes from a server are not STOMP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a STOMP frame larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("a STOMP header line without a colon: {0:?}")]
    Header(String),
    #[error("content-length {0:?} is not a number")]
    ContentLength(String),
    #[error("a STOMP frame's body does not end with a NUL byte")]
    NoNul,
}

fn find(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// Reads one frame off the front of `buf` (heart-beat EOLs before it skipped); `None`
/// when the frame is not all there yet.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    // Heart-beats: bare EOLs between frames.
    let eols = buf
        .iter()
        .position(|b| *b != b'\n' && *b != b'\r')
        .unwrap_or(buf.len());
    buf.advance(eols);
    if buf.is_empty() {
        return Ok(None);
    }
    // The headers end at the first empty line.
    let mut at = 0;
    let mut lines: [(usize, usize); 64] = [(0, 0); 64];
    let mut n = 0;
    let headers_end = loop {
        let Some(nl) = find(&buf[at..], b'\n') else {
            if buf.len() > MAX_FRAME {
                return Err(FrameError::TooLarge);
            }
            return Ok(None);
        };
        let end = at + nl;
        let line_end = if end > at && buf[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if line_end == at && at > 0 {
            break end + 1;
        }
        if n < lines.len() {
            lines[n] = (at, line_end);
            n += 1;
        }
        at = end + 1;
    };
    let (command, headers) = (lines[0], &lines[1..n]);
    let header = |name: &[u8]| {
        // The first of a repeated header counts (STOMP 1.2).
        headers.iter().find_map(|&(s, e)| {
            let line = &buf[s..e];
            let colon = find(line, b':')?;
            (&line[..colon] == name).then_some((s + colon + 1, e))
        })
    };
    for &(s, e) in headers {
        if find(&buf[s..e], b':').is_none() {
            return Err(FrameError::Header(
                String::from_utf8_lossy(&buf[s..e]).into_owned(),
            ));
        }
    }
    let body_end = match header(b"content-length") {
        Some((s, e)) => {
            let text = &buf[s..e];
            let len: usize = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| {
                    FrameError::ContentLength(String::from_utf8_lossy(text).into_owned())
                })?;
            let end = headers_end
                .checked_add(len)
                .filter(|end| *end <= MAX_FRAME)
                .ok_or(FrameError::TooLarge)?;
            if buf.len() <= end {
                return Ok(None);
            }
            if buf[end] != 0 {
                return Err(FrameError::NoNul);
            }
            end
        }
        None => match find(&buf[headers_end..], 0) {
            Some(nul) => headers_end + nul,
            None if buf.len() > MAX_FRAME => return Err(FrameError::TooLarge),
            None => return Ok(None),
        },
    };
    let command = match &buf[command.0..command.1] {
        b"MESSAGE" => Command::Message,
        b"RECEIPT" => Command::Receipt,
        b"CONNECTED" => Command::Connected,
        b"ERROR" => Command::Error,
        _ => Command::Other,
    };
    let ack = match command {
        Command::Message => header(b"ack").or_else(|| header(b"message-id")),
        _ => None,
    };
    let receipt_id = header(b"receipt-id");
    let message = header(b"message").map(|(s, e)| unescape(&buf[s..e]));
    // The frame becomes shared bytes: the body and the headers kept are views of it.
    let frame = buf.split_to(body_end + 1).freeze();
    let view = |r: Option<(usize, usize)>| r.map(|(s, e)| frame.slice(s..e));
    Ok(Some(Frame {
        command,
        ack: view(ack),
        receipt_id: view(receipt_id),
        message,
        body: frame.slice(headers_end..body_end),
    }))
}

/// A header value as text (STOMP 1.2's escapes undone), for messages.
fn unescape(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Writes `value` as a header value (escaped: STOMP 1.2 frames other than CONNECT).
fn escaped(buf: &mut BytesMut, value: &str) {
    for b in value.bytes() {
        match b {
            b'\r' => buf.put_slice(b"\\r"),
            b'\n' => buf.put_slice(b"\\n"),
            b':' => buf.put_slice(b"\\c"),
            b'\\' => buf.put_slice(b"\\\\"),
            b => buf.put_u8(b),
        }
    }
}

/// The CONNECT frame (its header values are not escaped; heart-beats off).
pub fn connect(buf: &mut BytesMut, host: &str, login: Option<(&str, &str)>) {
    buf.put_slice(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\nhost:");
    buf.put_slice(host.as_bytes());
    if let Some((user, pass)) = login {
        buf.put_slice(b"\nlogin:");
        buf.put_slice(user.as_bytes());
        buf.put_slice(b"\npasscode:");
        buf.put_slice(pass.as_bytes());
    }
    buf.put_slice(b"\n\n\0");
}

/// A SUBSCRIBE frame with a receipt (`receipt:sub-<id>`).
pub fn subscribe(
    buf: &mut BytesMut,
    id: u32,
    destination: &str,
    ack: &str,
    prefetch: Option<u32>,
    extra: &[(&str, &str)],
) {
    buf.put_slice(b"SUBSCRIBE\nid:");
    let _ = write!(buf, "{id}");
    buf.put_slice(b"\ndestination:");
    escaped(buf, destination);
    buf.put_slice(b"\nack:");
    buf.put_slice(ack.as_bytes());
    if let Some(n) = prefetch {
        // RabbitMQ's and ActiveMQ's names for the same thing; each ignores the other's.
        let _ = write!(buf, "\nprefetch-count:{n}\nactivemq.prefetchSize:{n}");
    }
    for (k, v) in extra {
        buf.put_u8(b'\n');
        escaped(buf, k);
        buf.put_u8(b':');
        escaped(buf, v);
    }
    let _ = write!(buf, "\nreceipt:sub-{id}\n\n\0");
}

/// The receipt id a SUBSCRIBE with `id` asks for.
pub fn subscribe_receipt(id: u32) -> String {
    format!("sub-{id}")
}

/// A SEND frame: `destination` (escaped already: [`escape`]), `headers` (lines ending in
/// `\n`, escaped already), a receipt when given, and the body with its length.
#[inline]
pub fn send(
    buf: &mut BytesMut,
    destination: &[u8],
    headers: &[u8],
    receipt: Option<u64>,
    body: &[u8],
) {
    buf.reserve(64 + destination.len() + headers.len() + body.len());
    buf.put_slice(b"SEND\ndestination:");
    buf.put_slice(destination);
    buf.put_u8(b'\n');
    buf.put_slice(headers);
    buf.put_slice(b"content-length:");
    let mut n = itoa::Buffer::new();
    buf.put_slice(n.format(body.len()).as_bytes());
    if let Some(r) = receipt {
        buf.put_slice(b"\nreceipt:");
        buf.put_slice(n.format(r).as_bytes());
    }
    buf.put_slice(b"\n\n");
    buf.put_slice(body);
    buf.put_u8(0);
}

/// `value` escaped as a header value, once (for a SEND's destination and headers).
pub fn escape(value: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    escaped(&mut b, value);
    b.to_vec()
}

/// An ACK of the message whose `ack` header was `id` (as it came: still escaped).
#[inline]
pub fn ack(buf: &mut BytesMut, id: &[u8]) {
    buf.put_slice(b"ACK\nid:");
    buf.put_slice(id);
    buf.put_slice(b"\n\n\0");
}

/// A DISCONNECT asking for a receipt (`receipt:bye`).
pub fn disconnect(buf: &mut BytesMut) {
    buf.put_slice(b"DISCONNECT\nreceipt:bye\n\n\0");
}

/// A receipt id as a number (a SEND's).
pub fn receipt_number(id: &[u8]) -> Option<u64> {
    std::str::from_utf8(id).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Frame {
        let mut b = BytesMut::from(bytes);
        let f = decode(&mut b)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("incomplete"));
        assert!(b.is_empty(), "left over: {b:?}");
        f
    }

    #[test]
    fn a_message_with_a_binary_body_keeps_every_byte() {
        let mut raw =
            b"MESSAGE\nsubscription:0\nmessage-id:ID\\cx-1\nack:a\\c1\ncontent-length:5\n\n"
                .to_vec();
        raw.extend_from_slice(b"a\0b\nc\0");
        let f = one(&raw);
        assert_eq!(f.command, Command::Message);
        assert_eq!(&f.body[..], b"a\0b\nc");
        // The ack id goes back as it came, escapes and all.
        assert_eq!(f.ack.as_deref(), Some(&b"a\\c1"[..]));
    }

    #[test]
    fn frames_come_whole_whatever_the_reads() {
        let mut raw = Vec::new();
        for i in 0..3 {
            raw.extend_from_slice(b"\n\r\n");
            raw.extend_from_slice(format!("RECEIPT\r\nreceipt-id:{i}\r\n\r\n\0").as_bytes());
        }
        raw.extend_from_slice(b"MESSAGE\nmessage-id:m\n\nhello\0\n");
        for split in 1..raw.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in [&raw[..split], &raw[split..]] {
                buf.extend_from_slice(chunk);
                while let Some(f) = decode(&mut buf).unwrap_or_else(|e| panic!("{e}")) {
                    got.push(f);
                }
            }
            let ids: Vec<Option<u64>> = got
                .iter()
                .map(|f| f.receipt_id.as_deref().and_then(receipt_number))
                .collect();
            assert_eq!(ids, [Some(0), Some(1), Some(2), None], "split at {split}");
            assert_eq!(&got[3].body[..], b"hello");
            assert_eq!(got[3].ack.as_deref(), Some(&b"m"[..]));
        }
    }

    #[test]
    fn an_error_says_why() {
        let f = one(
            b"ERROR\nmessage:Access refused\\c bad login\ncontent-type:text/plain\n\nuser guest\0",
        );
        assert_eq!(f.command, Command::Error);
        assert_eq!(f.reason(), "Access refused: bad login: user guest");
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        for (raw, says) in [
            (&b"MESSAGE\nno colon\n\nx\0"[..], "without a colon"),
            (b"MESSAGE\ncontent-length:x\n\nx\0", "not a number"),
            (b"MESSAGE\ncontent-length:1\n\nxy\0", "NUL"),
            (
                b"MESSAGE\ncontent-length:18446744073709551615\n\nx\0",
                "larger than",
            ),
        ] {
            let mut b = BytesMut::from(raw);
            let e = decode(&mut b).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn any_bytes_are_a_frame_an_error_or_more_to_read_never_a_panic() {
        // A small xorshift: the same inputs every run.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"MESAGRCIPT\n\r\0:\\content-length:0123456789ack";
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i % 48)) as usize + i) % alphabet.len()])
                .collect();
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut b) {}
        }
    }

    #[test]
    fn frames_written_read_back() {
        let mut b = BytesMut::new();
        send(
            &mut b,
            &escape("/queue/a:b"),
            b"persistent:true\n",
            Some(42),
            b"x\0y",
        );
        assert_eq!(
            &b[..],
            &b"SEND\ndestination:/queue/a\\cb\npersistent:true\ncontent-length:3\nreceipt:42\n\nx\0y\0"[..]
        );
        let mut b = BytesMut::new();
        subscribe(
            &mut b,
            3,
            "/topic/t",
            "client",
            Some(10),
            &[("auto-delete", "true")],
        );
        let text = String::from_utf8_lossy(&b).into_owned();
        assert!(
            text.starts_with(
                "SUBSCRIBE\nid:3\ndestination:/topic/t\nack:client\nprefetch-count:10\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("auto-delete:true\nreceipt:sub-3\n\n\0"),
            "{text}"
        );
    }
}
