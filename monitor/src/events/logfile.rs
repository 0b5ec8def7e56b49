//! The JSON-lines event log file: schema v2 lines with a sequence number and an optional
//! hash chain, size-based rotation, and both resumed when the log is opened again (after a
//! restart or a SIGHUP). docs/event-log.md describes the lines; `verify` checks them.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use super::{Clock, EventError, EventKind, FlowRecord};

#[cfg(test)]
mod tests;

/// The schema version every line is written with (`"v"`). v1 lines had no `seq` and no
/// `prev`.
pub const SCHEMA_VERSION: u32 = 2;

/// The `prev` of the first line of a log: 64 zeros.
pub const ZERO_HASH: [u8; 32] = [0; 32];

/// Lines are put into the buffer whole, so that what reaches the file ends at a line's end.
const BUFFER: usize = 64 << 10;

/// After a failed rotation, the next try waits this long (the lines go to the current
/// file meanwhile, so nothing is lost, and the error is not repeated for every line).
const ROTATE_RETRY: Duration = Duration::from_secs(10);

/// `[events]` rotation and hash chain settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Rotate before a line would take the file past this many bytes; 0: never.
    pub max_bytes: u64,
    /// Rotated files kept: `FILE.1` (the newest) to `FILE.keep`; at least 1.
    pub keep: u32,
    /// Each line carries `prev`, the SHA-256 of the line before it.
    pub hash_chain: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            // 100 MiB: about 250,000 flow lines, a few seconds of rotation at worst.
            max_bytes: 100 << 20,
            // With the default size, a GiB of history.
            keep: 10,
            // Off: hashing is cheap, but a chain is only worth having when someone checks it.
            hash_chain: false,
        }
    }
}

/// Where a log stands: the last line's `seq` and the SHA-256 of its bytes. A new log is at
/// seq 0 with [`ZERO_HASH`], so its first line is seq 1 with `prev` 64 zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// A log with no line yet.
    pub const START: Self = Self {
        seq: 0,
        hash: ZERO_HASH,
    };
}

/// `FILE.n`, the `n`th newest rotated file of `path`.
#[must_use]
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// SHA-256 of `bytes`, with ring's implementation (the one rustls already builds).
#[must_use]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One line: the header every line has, then the event's own fields.
#[derive(Serialize)]
struct Line<'a, T> {
    v: u32,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<&'a str>,
    #[serde(flatten)]
    body: &'a T,
}

/// The fields of a flow line.
#[derive(Serialize)]
struct FlowLine<'a> {
    time: String,
    event: &'static str,
    first_seen: String,
    last_seen: String,
    #[serde(flatten)]
    flow: &'a FlowRecord,
}

/// The fields of a detection line.
#[derive(Serialize)]
struct DetectionLine<'a> {
    /// Always `detection`; the kind is in `detection`.
    event: &'static str,
    #[serde(flatten)]
    detection: &'a crate::detect::Detection,
}

/// The JSON-lines event log of violation flows and detections.
pub struct EventLog {
    path: PathBuf,
    out: BufWriter<File>,
    clock: Clock,
    options: LogOptions,
    head: Head,
    /// Bytes in the current file: written, or in `out`'s buffer.
    size: u64,
    /// No rotation is tried before this (set when one failed).
    retry_rotation: Option<Instant>,
    /// The line being written, kept for its allocation.
    line: Vec<u8>,
}

impl EventLog {
    /// Opens (or creates) the log at `path` and resumes its sequence and chain from its
    /// last line, or from the last line of `FILE.1` when it is empty (it was just
    /// rotated). A torn last line (no newline: the daemon died or the disk filled while
    /// writing it) is cut off, with a warning: it was never a whole record.
    pub fn open(path: &Path, options: LogOptions, clock: Clock) -> Result<Self, EventError> {
        Self::reopen(path, options, clock, None)
    }

    /// As [`EventLog::open`], after `previous` (the log open so far, on a SIGHUP): when
    /// the file at its path is empty or new (logrotate moved it away), the sequence and
    /// the chain continue from `previous`.
    pub fn reopen(
        path: &Path,
        options: LogOptions,
        clock: Clock,
        previous: Option<&EventLog>,
    ) -> Result<Self, EventError> {
        let open_err = |source| EventError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let (last, size) = resume(path).map_err(open_err)?;
        let head = match (last, previous.filter(|p| p.path == path)) {
            (Some(line), _) => head_of(path, &line),
            (None, Some(previous)) => previous.head,
            (None, None) => match last_line(&rotated(path, 1)) {
                Ok(Some(line)) => head_of(&rotated(path, 1), &line),
                Ok(None) => Head::START,
                Err(source) => {
                    return Err(EventError::Open {
                        path: rotated(path, 1),
                        source,
                    });
                }
            },
        };
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(BUFFER, append(path).map_err(open_err)?),
            clock,
            options,
            head,
            size,
            retry_rotation: None,
            line: Vec::new(),
        })
    }

    /// The live file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last line written: its seq and SHA-256.
    #[must_use]
    pub fn head(&self) -> Head {
        self.head
    }

    pub fn write(&mut self, kind: EventKind, flow: &FlowRecord) -> Result<(), EventError> {
        let stamp = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let body = FlowLine {
            time: stamp(SystemTime::now()),
            event: kind.as_str(),
            first_seen: stamp(self.clock.wall(flow.first_ns)),
            last_seen: stamp(self.clock.wall(flow.last_ns)),
            flow,
        };
        self.write_line(&body)
    }

    /// Writes a detection: `{"v":2,"seq":…,"event":"detection","time":…,
    /// "detection":"first_contact","group":…,"country":…}` and the detection's own fields.
    pub fn write_detection(&mut self, d: &crate::detect::Detection) -> Result<(), EventError> {
        self.write_line(&DetectionLine {
            event: "detection",
            detection: d,
        })
    }

    pub fn flush(&mut self) -> Result<(), EventError> {
        self.out.flush().map_err(|source| EventError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes one line after the header, rotating first when the line would take the
    /// file past `max_bytes`. A failed rotation still writes the line (to the current
    /// file) and then returns the rotation's error.
    fn write_line<T: Serialize>(&mut self, body: &T) -> Result<(), EventError> {
        let seq = self.head.seq + 1;
        let prev = self.options.hash_chain.then(|| hex(&self.head.hash));
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let serialized = serde_json::to_writer(
            &mut line,
            &Line {
                v: SCHEMA_VERSION,
                seq,
                prev: prev.as_deref(),
                body,
            },
        );
        let result = serialized
            .map_err(|e| EventError::Write {
                path: self.path.clone(),
                source: io::Error::other(e),
            })
            .and_then(|()| {
                let hash = sha256(&line);
                line.push(b'\n');
                let rotation = self.rotate_if_full(line.len() as u64);
                self.out
                    .write_all(&line)
                    .map_err(|source| EventError::Write {
                        path: self.path.clone(),
                        source,
                    })?;
                self.size += line.len() as u64;
                self.head = Head { seq, hash };
                rotation
            });
        self.line = line;
        result
    }

    fn rotate_if_full(&mut self, next: u64) -> Result<(), EventError> {
        let max = self.options.max_bytes;
        if max == 0 || self.size == 0 || self.size + next <= max {
            return Ok(());
        }
        if self.retry_rotation.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        self.rotate().inspect_err(|_| {
            self.retry_rotation = Some(Instant::now() + ROTATE_RETRY);
        })
    }

    /// Flushes, drops `FILE.keep` (and any after it), renames `FILE.n` to `FILE.n+1` and `FILE` to `FILE.1`,
    /// and starts a new `FILE`. Nothing is renamed over a file that was not moved first,
    /// and when the new file cannot be made, `FILE.1` is moved back.
    fn rotate(&mut self) -> Result<(), EventError> {
        let path = self.path.clone();
        let err = |at: &Path, source| EventError::Rotate {
            path: at.to_owned(),
            source,
        };
        self.out.flush().map_err(|e| err(&path, e))?;
        let keep = self.options.keep.max(1);
        // FILE.keep, and the files past it that a larger `keep` left before a reload.
        for n in keep.. {
            let oldest = rotated(&path, n);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(err(&oldest, e)),
            }
        }
        for n in (1..keep).rev() {
            let from = rotated(&path, n);
            match std::fs::rename(&from, rotated(&path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(&from, e)),
                _ => {}
            }
        }
        let first = rotated(&path, 1);
        std::fs::rename(&path, &first).map_err(|e| err(&path, e))?;
        match append(&path) {
            Ok(file) => self.out = BufWriter::with_capacity(BUFFER, file),
            Err(e) => {
                // The lines keep going to the moved file, under its old name again.
                let _ = std::fs::rename(&first, &path);
                return Err(err(&path, e));
            }
        }
        self.size = 0;
        self.retry_rotation = None;
        tracing::info!(
            path = %path.display(),
            rotated_to = %first.display(),
            seq = self.head.seq,
            sha256 = %hex(&self.head.hash),
            "event log rotated"
        );
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Makes `path` end with a whole line, and returns its last line and its size: a torn
/// last line (no newline) is cut off, with a warning.
fn resume(path: &Path) -> io::Result<(Option<Vec<u8>>, u64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let (line, end) = tail(&mut file, len)?;
    if end < len {
        tracing::warn!(
            path = %path.display(),
            offset = end,
            bytes = len - end,
            "the event log ends in a torn line (no newline: the daemon stopped or the disk filled while writing it); cutting it off"
        );
        file.set_len(end)?;
    }
    Ok((line, end))
}

/// The last whole line of the file at `path`, if it exists and has one.
fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    Ok(tail(&mut file, len)?.0)
}

/// The last whole line of `file` (without its newline) and the offset where the whole
/// lines end, reading backwards from `len` in growing windows.
fn tail(file: &mut File, len: u64) -> io::Result<(Option<Vec<u8>>, u64)> {
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        (&mut *file).take(len - start).read_to_end(&mut buf)?;
        let Some(nl) = buf.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok((None, 0));
            }
            window *= 4;
            continue;
        };
        let end = start + nl as u64 + 1;
        match buf[..nl].iter().rposition(|&b| b == b'\n') {
            Some(before) => return Ok((Some(buf[before + 1..nl].to_vec()), end)),
            None if start == 0 => return Ok((Some(buf[..nl].to_vec()), end)),
            None => window *= 4,
        }
    }
}

/// Where a log stands after `line` (read from `path`): its seq, or 0 when it has none
/// (a v1 line, or one that is not JSON), and its hash either way, so the chain continues
/// from it.
fn head_of(path: &Path, line: &[u8]) -> Head {
    let hash = sha256(line);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(line).ok();
    let seq = parsed.as_ref().and_then(|v| v.get("seq")?.as_u64());
    let version = parsed.as_ref().and_then(|v| v.get("v")?.as_u64());
    match (seq, version) {
        (Some(seq), Some(2)) => Head { seq, hash },
        (_, Some(1)) => {
            tracing::info!(path = %path.display(), "the event log ends with a v1 line: v2 lines start at seq 1 after it");
            Head { seq: 0, hash }
        }
        _ => {
            tracing::warn!(path = %path.display(), "the event log's last line has no seq to resume from: starting at seq 1 after it (verify-log will name that line)");
            Head { seq: 0, hash }
        }
    }
}
