//! The command line's HTTP client for the daemon's unix socket: one request per connection
//! (`GET`, `POST` with JSON), and server-sent event streams (chunked transfer encoding).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

/// How long the daemon may take to answer a request.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest header block accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The longest body accepted.
const MAX_BODY: u64 = 64 << 20;
/// The longest chunk or event line accepted in a stream.
const MAX_LINE: usize = 16 << 20;

fn connect(socket: &Path, timeout: Option<Duration>) -> anyhow::Result<UnixStream> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the daemon at {} (is `restation serve` running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(Some(API_TIMEOUT))?;
    Ok(stream)
}

/// An answer's status line and headers.
struct Head {
    status: u16,
    chunked: bool,
    length: Option<u64>,
}

fn read_head(reader: &mut impl BufRead) -> anyhow::Result<Head> {
    let mut status = None;
    let mut chunked = false;
    let mut length = None;
    let mut read = 0;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .context("reading the daemon's answer")?;
        read += n;
        if n == 0 || read > MAX_HEAD {
            bail!("the daemon's answer has no complete HTTP header");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if status.is_none() {
            status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    Ok(Head {
        status: status.context("the daemon's answer has no HTTP status")?,
        chunked,
        length,
    })
}

/// Reads one chunk of a chunked body; `None` at its end.
fn read_chunk(reader: &mut impl BufRead) -> anyhow::Result<Option<Vec<u8>>> {
    let mut size = String::new();
    if reader.read_line(&mut size)? == 0 {
        return Ok(None);
    }
    let hex = size.trim().split(';').next().unwrap_or_default();
    let n = usize::from_str_radix(hex, 16).with_context(|| {
        format!(
            "bad chunk size {:?}",
            hex.chars().take(16).collect::<String>()
        )
    })?;
    if n > MAX_LINE {
        bail!("a chunk of {n} bytes is more than this client takes");
    }
    if n == 0 {
        return Ok(None);
    }
    let mut data = vec![0u8; n];
    reader.read_exact(&mut data)?;
    let mut crlf = [0u8; 2];
    reader.read_exact(&mut crlf)?;
    Ok(Some(data))
}

fn body(reader: &mut impl BufRead, head: &Head) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        while let Some(chunk) = read_chunk(reader)? {
            body.extend(chunk);
            if body.len() as u64 > MAX_BODY {
                bail!("the daemon's answer is larger than {MAX_BODY} bytes");
            }
        }
    } else {
        reader
            .take(head.length.unwrap_or(MAX_BODY).min(MAX_BODY))
            .read_to_end(&mut body)?;
    }
    Ok(body)
}

/// A request; the status and the body.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = connect(socket, Some(API_TIMEOUT))?;
    let payload = match json {
        Some(v) => serde_json::to_vec(v)?,
        None => Vec::new(),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: restation\r\nAccept: application/json\r\nConnection: close\r\n"
    )?;
    if json.is_some() {
        write!(
            stream,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        )?;
    }
    stream.write_all(b"\r\n")?;
    stream.write_all(&payload)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let body = body(&mut reader, &head)?;
    Ok((head.status, body))
}

/// `GET path`; the body of a 200 answer.
pub fn get(socket: &Path, path: &str) -> anyhow::Result<Vec<u8>> {
    let (status, body) = request(socket, "GET", path, None)?;
    if status != 200 {
        bail!(
            "the daemon answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// A server-sent event stream, open: the daemon has subscribed once [`EventStream::open`]
/// returns, so nothing that happens afterwards is missed.
pub struct EventStream {
    reader: BufReader<UnixStream>,
    chunked: bool,
    pending: Vec<u8>,
}

impl EventStream {
    /// Opens the stream at `path`.
    pub fn open(socket: &Path, path: &str) -> anyhow::Result<EventStream> {
        let mut stream = connect(socket, None)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: restation\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        )?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader)?;
        if head.status != 200 {
            let body = body(&mut reader, &head)?;
            bail!(
                "the daemon answered {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(EventStream {
            reader,
            chunked: head.chunked,
            pending: Vec::new(),
        })
    }

    /// The next event's name and data; `None` when the stream ends.
    pub fn next_event(&mut self) -> anyhow::Result<Option<(String, String)>> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !data.is_empty() {
                        return Ok(Some((name, data)));
                    }
                    name.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            let chunk = if self.chunked {
                match read_chunk(&mut self.reader)? {
                    Some(c) => c,
                    None => return Ok(None),
                }
            } else {
                let mut buf = vec![0u8; 8192];
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                buf
            };
            self.pending.extend(chunk);
            if self.pending.len() > MAX_LINE {
                bail!("an event line longer than {MAX_LINE} bytes");
            }
        }
    }
}
