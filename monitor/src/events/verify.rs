//! `exfilmon verify-log`: checks event log files, given oldest first, line by line: each
//! is a JSON object of a known schema version; each v2 line's `seq` is one more than the
//! line before it; each line that carries `prev` holds the SHA-256 of the exact bytes of
//! the line before it (without its newline). docs/event-log.md has the algorithm.

use std::{
    fmt,
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
    str::FromStr,
};

use super::logfile::{ZERO_HASH, hex, sha256};

/// The schema versions this exfilmon knows.
pub const KNOWN_VERSIONS: [u64; 2] = [1, 2];

/// Why a log did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The first line that fails a check.
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        /// 1-based.
        line: u64,
        problem: Problem,
    },
    /// The `--anchor` line is not among the lines.
    #[error("{}: {problem}", path.display())]
    Anchor { path: PathBuf, problem: Problem },
}

/// What is wrong with a line (or with the log, for an anchor).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not JSON ({error})")]
    NotJson { error: String },
    #[error("not a JSON object")]
    NotObject,
    #[error("no \"v\" (schema version)")]
    NoVersion,
    #[error("schema version {v} is not one this exfilmon knows (1, 2)")]
    UnknownVersion { v: String },
    #[error("a v2 line without a \"seq\" that is an unsigned integer")]
    NoSeq,
    #[error("a v1 line after the v2 line on {at}: v1 lines come only before v2 ones")]
    V1AfterV2 { at: String },
    #[error(
        "seq {seq} after seq {before} on {at}: a line was inserted or duplicated, or lines were reordered{hint}"
    )]
    SeqBack {
        seq: u64,
        before: u64,
        at: String,
        hint: &'static str,
    },
    #[error(
        "seq {seq} after seq {before} on {at}: {missing} line(s) missing (removed), or lines were reordered{hint}"
    )]
    SeqGap {
        seq: u64,
        before: u64,
        at: String,
        missing: u64,
        hint: &'static str,
    },
    #[error("\"prev\" is not 64 lowercase hex digits")]
    BadPrev,
    #[error(
        "prev does not match the hash of {at}: {at} was changed, or a line was removed or inserted"
    )]
    PrevMismatch { at: String },
    #[error("seq 1 (the first line of a log) has a prev that is not 64 zeros")]
    FirstPrev,
    #[error(
        "no newline at the end: the last line is torn (cut while being written) or the file was cut"
    )]
    NoNewline,
    #[error(
        "the line with seq {seq} has SHA-256 {found}, not the anchor's {expected}: it was changed, or the chain was rewritten from it on"
    )]
    AnchorMismatch {
        seq: u64,
        found: String,
        expected: String,
    },
    #[error(
        "the lines end at seq {last}, before the anchor's seq {seq}: lines were removed from the end"
    )]
    AnchorPast { seq: u64, last: u64 },
    #[error(
        "the anchor's seq {seq} is not among the lines (they start at seq {first}): give the older files too, or a newer anchor"
    )]
    AnchorBefore { seq: u64, first: u64 },
    #[error("no v2 line to hold the anchor's seq {seq}")]
    AnchorNoSeq { seq: u64 },
}

/// `SEQ:SHA256`: a line's seq and hash, as a summary printed them, kept elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl FromStr for Anchor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or("expected SEQ:SHA256, e.g. 1234:9f86d081…")?;
        let seq = seq
            .parse()
            .map_err(|e| format!("{seq:?} is not a seq: {e}"))?;
        let hash = parse_hash(hash).ok_or("the SHA-256 must be 64 lowercase hex digits")?;
        Ok(Self { seq, hash })
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex(&self.hash))
    }
}

/// What a verified log holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub lines: u64,
    /// The seqs of the first and last v2 lines.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Lines that carry `prev` (each checked, but the first line's; see `first_prev`).
    pub chained: u64,
    /// The first line's `prev` when it could not be checked: its line is not among the
    /// files (rotated away), and it is not seq 1.
    pub first_prev: Option<[u8; 32]>,
    /// The last line: its seq (when v2) and SHA-256, to keep elsewhere as an anchor.
    pub last: Option<(Option<u64>, [u8; 32])>,
    /// The anchor that was checked.
    pub anchor: Option<Anchor>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        let files = self.files as u64;
        write!(
            f,
            "ok: {files} {}, {} {}",
            s(files, "file", "files"),
            self.lines,
            s(self.lines, "line", "lines")
        )?;
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            write!(f, ", seq {a} to {b}")?;
        }
        match self.chained {
            0 if self.lines > 0 => {
                f.write_str(", no hash chain (a changed line cannot be detected)")?;
            }
            0 => {}
            n if n == self.lines => f.write_str(", hash chain on every line")?,
            n => write!(f, ", hash chain on {n} of {} lines", self.lines)?,
        }
        if let Some(prev) = self.first_prev {
            write!(
                f,
                " (the first line's prev {} is not checked: its line is not among the files)",
                hex(&prev)
            )?;
        }
        if let Some(a) = self.anchor {
            write!(f, ", anchor seq {} matches", a.seq)?;
        }
        match self.last {
            Some((Some(seq), hash)) => write!(
                f,
                "; last line: seq {seq} sha256 {h}; keep `--anchor {seq}:{h}` elsewhere: a chain alone cannot show that the newest lines were removed",
                h = hex(&hash)
            ),
            Some((None, hash)) => write!(f, "; last line: sha256 {}", hex(&hash)),
            None => Ok(()),
        }
    }
}

/// The rotated files of the live log `live`, oldest (the highest `.N`) first, then `live`.
///
/// # Errors
/// When `live`'s directory cannot be listed.
pub fn with_rotated(live: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = live
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = live.file_name().unwrap_or_default().to_string_lossy();
    let mut numbered: Vec<(u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let n = file
            .to_str()
            .and_then(|f| f.strip_prefix(&*name))
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|n| !n.starts_with('0'))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = n {
            numbered.push((n, super::logfile::rotated(live, n)));
        }
    }
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    files.push(live.to_owned());
    Ok(files)
}

/// The line before the one being checked.
struct Before {
    file: usize,
    line: u64,
    seq: Option<u64>,
    hash: [u8; 32],
}

/// Checks `files`, oldest first, as one log; with `anchor`, the line with its seq must
/// have its hash. Stops at the first problem.
///
/// # Errors
/// The first problem, with its file and line; or a file that cannot be read.
pub fn verify(files: &[PathBuf], anchor: Option<Anchor>) -> Result<Summary, VerifyError> {
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    let mut before: Option<Before> = None;
    let mut anchored = false;
    let mut buf = Vec::new();
    for (file, path) in files.iter().enumerate() {
        let read_err = |source| VerifyError::Read {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(read_err)?);
        let mut line: u64 = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
                break;
            }
            line += 1;
            let at = |problem| VerifyError::Line {
                path: path.clone(),
                line,
                problem,
            };
            if buf.pop() != Some(b'\n') {
                return Err(at(Problem::NoNewline));
            }
            let place = |b: &Before| {
                if b.file == file {
                    format!("line {}", b.line)
                } else {
                    format!("{}:{}", files[b.file].display(), b.line)
                }
            };
            let checked =
                check_line(&buf, before.as_ref(), file, &place, &mut summary).map_err(at)?;
            let hash = sha256(&buf);
            if let (Some(a), Some(seq)) = (anchor, checked.seq)
                && a.seq == seq
            {
                if a.hash != hash {
                    return Err(at(Problem::AnchorMismatch {
                        seq,
                        found: hex(&hash),
                        expected: hex(&a.hash),
                    }));
                }
                anchored = true;
            }
            summary.lines += 1;
            summary.first_seq = summary.first_seq.or(checked.seq);
            summary.last_seq = checked.seq.or(summary.last_seq);
            summary.last = Some((checked.seq, hash));
            before = Some(Before {
                file,
                line,
                seq: checked.seq,
                hash,
            });
        }
    }
    if let Some(a) = anchor {
        check_anchor(a, anchored, &summary, files)?;
        summary.anchor = Some(a);
    }
    Ok(summary)
}

/// What a checked line holds.
struct Checked {
    seq: Option<u64>,
}

/// Checks one line (without its newline) after `before`.
fn check_line(
    line: &[u8],
    before: Option<&Before>,
    file: usize,
    place: &dyn Fn(&Before) -> String,
    summary: &mut Summary,
) -> Result<Checked, Problem> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| Problem::NotJson {
        error: e.to_string(),
    })?;
    let obj = value.as_object().ok_or(Problem::NotObject)?;
    let v = obj.get("v").ok_or(Problem::NoVersion)?;
    match v.as_u64() {
        Some(1) => {
            return match before.filter(|b| b.seq.is_some()) {
                Some(b) => Err(Problem::V1AfterV2 { at: place(b) }),
                None => Ok(Checked { seq: None }),
            };
        }
        Some(2) => {}
        _ => return Err(Problem::UnknownVersion { v: v.to_string() }),
    }
    let seq = obj
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or(Problem::NoSeq)?;
    // A v2 line after a v1 line (the upgrade) starts the sequence afresh.
    if let Some(b) = before
        && let Some(before_seq) = b.seq
        && before_seq.checked_add(1) != Some(seq)
    {
        let hint = if b.file == file {
            ""
        } else {
            " (give the files oldest first)"
        };
        return Err(if seq <= before_seq {
            Problem::SeqBack {
                seq,
                before: before_seq,
                at: place(b),
                hint,
            }
        } else {
            Problem::SeqGap {
                seq,
                before: before_seq,
                at: place(b),
                missing: seq - before_seq - 1,
                hint,
            }
        });
    }
    if let Some(prev) = obj.get("prev") {
        let prev = prev.as_str().and_then(parse_hash).ok_or(Problem::BadPrev)?;
        match before {
            Some(b) if b.hash != prev => return Err(Problem::PrevMismatch { at: place(b) }),
            Some(_) => {}
            None if seq == 1 && prev != ZERO_HASH => return Err(Problem::FirstPrev),
            None if seq == 1 => {}
            None => summary.first_prev = Some(prev),
        }
        summary.chained += 1;
    }
    Ok(Checked { seq: Some(seq) })
}

fn check_anchor(
    a: Anchor,
    found: bool,
    summary: &Summary,
    files: &[PathBuf],
) -> Result<(), VerifyError> {
    if found {
        return Ok(());
    }
    let problem = match (summary.first_seq, summary.last_seq) {
        (_, Some(last)) if last < a.seq => Problem::AnchorPast { seq: a.seq, last },
        (Some(first), _) if a.seq < first => Problem::AnchorBefore { seq: a.seq, first },
        // Between the first and the last seq, every seq is there (checked above), so
        // only v1 lines or none at all get here.
        _ => Problem::AnchorNoSeq { seq: a.seq },
    };
    Err(VerifyError::Anchor {
        path: files.last().cloned().unwrap_or_default(),
        problem,
    })
}

/// 64 lowercase hex digits.
fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (o, pair) in out.iter_mut().zip(s.as_chunks::<2>().0) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}
