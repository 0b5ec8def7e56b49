//! The event log file and `verify-log`: rotation, resuming, and the tampering a chain
//! shows (and the one it cannot).

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::{
    events::{
        Clock, EventKind, EventLog, FlowRecord, LogOptions, ZERO_HASH, hex, rotated, sha256,
        verify::{self, Anchor, Problem, VerifyError},
    },
    tables::Verdict,
};

/// A violation flow whose byte count is `n` (so lines differ).
fn record(n: u64) -> FlowRecord {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    FlowRecord {
        src: ip("192.0.2.10"),
        dst: ip("203.0.113.10"),
        proto: 6,
        sport: 40000,
        dport: 443,
        group: "phones".into(),
        country: "CN".into(),
        asn: 64500,
        verdict: Verdict::Violation,
        rule: "group phones: deny @sanctioned (CN)".into(),
        watch: None,
        packets: 4,
        bytes: n,
        packets_out: 3,
        bytes_out: n,
        packets_in: 1,
        bytes_in: 0,
        first_ns: 0,
        last_ns: 0,
    }
}

fn options(max_bytes: u64, keep: u32, hash_chain: bool) -> LogOptions {
    LogOptions {
        max_bytes,
        keep,
        hash_chain,
    }
}

/// Writes `n` lines (byte counts `from`, `from + 1`, …) to the log at `path` and closes it.
fn write_lines(path: &Path, opts: LogOptions, from: u64, n: u64) {
    let mut log = EventLog::open(path, opts, Clock::now()).expect("open");
    for i in from..from + n {
        log.write(EventKind::FlowUpdate, &record(i)).expect("write");
    }
    log.flush().expect("flush");
}

/// Every line of `files`, in order, parsed.
fn lines_of(files: &[PathBuf]) -> Vec<serde_json::Value> {
    files
        .iter()
        .flat_map(|f| {
            fs::read_to_string(f)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn seqs(files: &[PathBuf]) -> Vec<u64> {
    lines_of(files)
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect()
}

/// A chained log of `n` lines in one file.
fn chained_log(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    write_lines(&path, options(0, 1, true), 1000, n);
    (dir, path)
}

fn text_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_text_lines(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().fold(String::new(), |text, l| text + l + "\n"),
    )
    .expect("write");
}

/// The problem `verify` finds, with its file and line.
fn broken(files: &[PathBuf]) -> (PathBuf, u64, Problem) {
    match verify::verify(files, None) {
        Err(VerifyError::Line {
            path,
            line,
            problem,
        }) => (path, line, problem),
        other => panic!("expected a line to fail, got {other:?}"),
    }
}

#[test]
fn rotation_at_max_bytes_loses_and_repeats_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let max = 4096;
    write_lines(&path, options(max, 100, true), 1, 100);
    let files = verify::with_rotated(&path).expect("list");
    let rotated_count = files.len() - 1;
    assert!(
        rotated_count >= 5,
        "100 lines of ~450 bytes in 4 KiB files: {files:?}"
    );
    // Oldest first: events.jsonl.N … events.jsonl.1, events.jsonl.
    let want: Vec<PathBuf> = (1..=u32::try_from(rotated_count).expect("count"))
        .rev()
        .map(|n| rotated(&path, n))
        .chain([path.clone()])
        .collect();
    assert_eq!(files, want);
    for f in &files {
        let size = fs::metadata(f).expect("stat").len();
        assert!(size <= max && size > 0, "{}: {size} bytes", f.display());
    }
    assert_eq!(
        seqs(&files),
        (1..=100).collect::<Vec<_>>(),
        "every line once, in order, seq continuous across the files"
    );
    let bytes: Vec<u64> = lines_of(&files)
        .iter()
        .map(|l| l["bytes"].as_u64().expect("bytes"))
        .collect();
    assert_eq!(bytes, (1..=100).collect::<Vec<_>>(), "the lines written");
    let summary = verify::verify(&files, None).expect("intact across rotated files");
    assert_eq!(
        (summary.files, summary.lines, summary.chained),
        (files.len(), 100, 100)
    );
    assert_eq!((summary.first_seq, summary.last_seq), (Some(1), Some(100)));
}

#[test]
fn rotation_keeps_only_the_newest_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    write_lines(&path, options(4096, 2, true), 1, 100);
    let files = verify::with_rotated(&path).expect("list");
    assert_eq!(
        files,
        [rotated(&path, 2), rotated(&path, 1), path.clone()],
        "keep = 2: the oldest files are deleted"
    );
    let kept = seqs(&files);
    assert_eq!(kept.last(), Some(&100));
    assert_eq!(
        kept,
        (kept[0]..=100).collect::<Vec<_>>(),
        "the newest lines, continuous"
    );
    // Their first line chains to a line that is gone: verified, and said so.
    let summary = verify::verify(&files, None).expect("intact");
    assert!(summary.first_prev.is_some(), "{summary:?}");
    assert!(summary.to_string().contains("is not checked"), "{summary}");

    // A smaller `keep` after a restart (or a reload) drops the files past it too.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    write_lines(&path, options(4096, 6, true), 1, 100);
    assert!(rotated(&path, 6).exists(), "six kept");
    write_lines(&path, options(4096, 2, true), 101, 10);
    let files = verify::with_rotated(&path).expect("list");
    assert_eq!(files, [rotated(&path, 2), rotated(&path, 1), path.clone()]);
    verify::verify(&files, None).expect("the newest lines, one chain");
    assert_eq!(seqs(&files).last(), Some(&110));
}

#[test]
fn seq_and_chain_resume_after_a_restart_and_after_logrotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    // Restarts, with rotations between them.
    let opts = options(4096, 100, true);
    write_lines(&path, opts, 1, 5);
    write_lines(&path, opts, 6, 20);
    write_lines(&path, opts, 26, 5);
    let files = verify::with_rotated(&path).expect("list");
    assert!(files.len() > 2, "rotated: {files:?}");
    assert_eq!(seqs(&files), (1..=30).collect::<Vec<_>>());
    let summary = verify::verify(&files, None).expect("one chain");
    assert_eq!((summary.lines, summary.chained), (30, 30));
    assert_eq!(summary.first_prev, None, "seq 1 chains to 64 zeros");
    let first: serde_json::Value = serde_json::from_str(&text_lines(&files[0])[0]).expect("json");
    assert_eq!(first["prev"], hex(&ZERO_HASH));

    // logrotate (max_bytes = 0): the file moved to FILE.1; the next daemon finds no live
    // file and continues from FILE.1's last line.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let opts = options(0, 1, true);
    write_lines(&path, opts, 1, 5);
    fs::rename(&path, rotated(&path, 1)).expect("logrotate");
    write_lines(&path, opts, 6, 5);
    // A SIGHUP after logrotate moved it under a name of its own (dateext): the open log
    // carries on.
    let mut log = EventLog::open(&path, opts, Clock::now()).expect("open");
    log.write(EventKind::FlowEnd, &record(11)).expect("write");
    log.flush().expect("flush");
    let head = log.head();
    let moved = dir.path().join("events.jsonl-20260101");
    fs::rename(&path, &moved).expect("move away");
    let mut log = EventLog::reopen(&path, opts, Clock::now(), Some(&log)).expect("reopen");
    assert_eq!(log.head(), head, "the chain carries on from the open log");
    log.write(EventKind::FlowEnd, &record(12)).expect("write");
    log.flush().expect("flush");
    let files = [rotated(&path, 1), moved, path];
    assert_eq!(seqs(&files), (1..=12).collect::<Vec<_>>());
    let summary = verify::verify(&files, None).expect("one chain");
    assert_eq!((summary.lines, summary.chained), (12, 12));
}

#[test]
fn a_torn_last_line_is_cut_and_a_v1_log_is_continued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let v1 = r#"{"v":1,"time":"2026-01-01T00:00:00.000Z","event":"flow_start"}"#;
    fs::write(&path, format!("{v1}\n{{\"v\":2,\"seq\":1,\"ti")).expect("write");
    write_lines(&path, options(0, 1, true), 1, 3);
    let lines = text_lines(&path);
    assert_eq!(lines.len(), 4, "the torn line is gone: {lines:?}");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
    assert_eq!(second["seq"], 1, "v2 starts at seq 1 after v1");
    assert_eq!(second["prev"], hex(&sha256(v1.as_bytes())), "chained to v1");
    let summary = verify::verify(&[path], None).expect("intact");
    assert_eq!((summary.lines, summary.chained), (4, 3));
}

#[test]
fn a_changed_byte_is_named_at_the_next_line() {
    let (_dir, path) = chained_log(10);
    let mut lines = text_lines(&path);
    assert!(lines[4].contains("\"bytes_out\":1004,"), "{}", lines[4]);
    lines[4] = lines[4].replace("\"bytes_out\":1004,", "\"bytes_out\":1005,");
    write_text_lines(&path, &lines);
    let (file, line, problem) = broken(std::slice::from_ref(&path));
    assert_eq!((file, line), (path.clone(), 6), "the successor of line 5");
    assert_eq!(
        problem,
        Problem::PrevMismatch {
            at: "line 5".into()
        }
    );
    let e = verify::verify(std::slice::from_ref(&path), None).expect_err("broken");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:6: prev does not match the hash of line 5: line 5 was changed, or a line was removed or inserted",
            path.display()
        )
    );
}

#[test]
fn without_a_chain_a_changed_byte_goes_unseen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    write_lines(&path, options(0, 1, false), 1000, 10);
    let mut lines = text_lines(&path);
    lines[4] = lines[4].replace("\"bytes_out\":1004,", "\"bytes_out\":1005,");
    write_text_lines(&path, &lines);
    let summary = verify::verify(&[path], None).expect("seq still continuous");
    assert_eq!(summary.chained, 0);
    assert!(summary.to_string().contains("no hash chain"), "{summary}");
}

#[test]
fn a_removed_line_is_a_gap_in_seq() {
    let (_dir, path) = chained_log(10);
    let mut lines = text_lines(&path);
    lines.remove(4);
    write_text_lines(&path, &lines);
    let (_, line, problem) = broken(&[path]);
    assert_eq!(line, 5, "where seq 5 was");
    assert_eq!(
        problem,
        Problem::SeqGap {
            seq: 6,
            before: 4,
            at: "line 4".into(),
            missing: 1,
            hint: ""
        }
    );
}

#[test]
fn an_inserted_line_is_found_even_with_a_forged_prev() {
    let (_dir, path) = chained_log(10);
    let mut lines = text_lines(&path);
    // A forger who knows the scheme: seq 6 and the right prev, after line 5.
    let forged = format!(
        "{{\"v\":2,\"seq\":6,\"prev\":\"{}\",\"event\":\"flow_end\"}}",
        hex(&sha256(lines[4].as_bytes()))
    );
    lines.insert(5, forged);
    write_text_lines(&path, &lines);
    let (_, line, problem) = broken(&[path]);
    assert_eq!(line, 7, "the original seq 6, after the forged one");
    assert!(
        matches!(
            problem,
            Problem::SeqBack {
                seq: 6,
                before: 6,
                ..
            }
        ),
        "{problem:?}"
    );
}

#[test]
fn a_reordered_pair_is_found_even_with_renumbered_seqs() {
    let (_dir, path) = chained_log(10);
    let mut lines = text_lines(&path);
    lines.swap(3, 4);
    write_text_lines(&path, &lines);
    let (_, line, problem) = broken(std::slice::from_ref(&path));
    assert_eq!(line, 4);
    assert!(
        matches!(
            problem,
            Problem::SeqGap {
                seq: 5,
                before: 3,
                ..
            }
        ),
        "{problem:?}"
    );
    // Renumbered to hide the swap: the chain still breaks at the first moved line.
    lines[3] = lines[3].replace("\"seq\":5,", "\"seq\":4,");
    lines[4] = lines[4].replace("\"seq\":4,", "\"seq\":5,");
    write_text_lines(&path, &lines);
    let (_, line, problem) = broken(&[path]);
    assert_eq!(line, 4);
    assert_eq!(
        problem,
        Problem::PrevMismatch {
            at: "line 3".into()
        }
    );
}

#[test]
fn a_line_from_another_log_breaks_the_chain_where_it_stands() {
    let (_dir, path) = chained_log(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other.jsonl");
    write_lines(&other, options(0, 1, true), 5000, 10);
    let foreign = text_lines(&other)[4].clone();
    let mut lines = text_lines(&path);
    assert_ne!(lines[4], foreign);
    assert!(foreign.contains("\"seq\":5,"), "the same seq: {foreign}");
    lines[4] = foreign;
    write_text_lines(&path, &lines);
    let (_, line, problem) = broken(&[path]);
    assert_eq!(line, 5, "the foreign line itself");
    assert_eq!(
        problem,
        Problem::PrevMismatch {
            at: "line 4".into()
        }
    );
}

#[test]
fn a_change_in_a_rotated_file_is_named_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    write_lines(&path, options(4096, 100, true), 1000, 30);
    let files = verify::with_rotated(&path).expect("list");
    let older = &files[files.len() - 2];
    let mut lines = text_lines(older);
    let last = lines.len() - 1;
    assert!(lines[last].ends_with("\"bytes_in\":0}"), "{}", lines[last]);
    lines[last] = lines[last].replace("\"bytes_in\":0}", "\"bytes_in\":1}");
    write_text_lines(older, &lines);
    let (file, line, problem) = broken(&files);
    assert_eq!(
        (file, line),
        (path.clone(), 1),
        "the first line of the live file"
    );
    assert_eq!(
        problem,
        Problem::PrevMismatch {
            at: format!("{}:{}", older.display(), last + 1)
        }
    );
    // Files given newest first are out of order, and verify-log says so.
    let (_, _, problem) = broken(&[files[files.len() - 1].clone(), older.clone()]);
    assert!(
        problem.to_string().contains("give the files oldest first"),
        "{problem}"
    );
}

#[test]
fn a_torn_or_foreign_line_is_named() {
    let (_dir, path) = chained_log(3);
    let text = fs::read_to_string(&path).expect("read");
    fs::write(&path, &text[..text.len() - 1]).expect("cut the newline");
    assert_eq!(broken(std::slice::from_ref(&path)).2, Problem::NoNewline);
    fs::write(&path, format!("{text}not json\n")).expect("write");
    let (_, line, problem) = broken(std::slice::from_ref(&path));
    assert_eq!(line, 4);
    assert!(matches!(problem, Problem::NotJson { .. }), "{problem:?}");
    fs::write(&path, format!("{text}{{\"v\":3}}\n")).expect("write");
    assert_eq!(
        broken(std::slice::from_ref(&path)).2,
        Problem::UnknownVersion { v: "3".into() }
    );
    fs::write(&path, format!("{text}{{\"v\":1}}\n")).expect("write");
    assert_eq!(
        broken(&[path]).2,
        Problem::V1AfterV2 {
            at: "line 3".into()
        }
    );
}

#[test]
fn an_anchor_shows_the_removal_of_the_newest_lines() {
    let (_dir, path) = chained_log(10);
    let summary = verify::verify(std::slice::from_ref(&path), None).expect("intact");
    let (Some(seq), hash) = summary.last.expect("a last line") else {
        panic!("a v2 last line")
    };
    let anchor = Anchor { seq, hash };
    assert!(
        summary.to_string().contains(&format!("--anchor {anchor}")),
        "{summary}"
    );
    let parsed: Anchor = anchor.to_string().parse().expect("round trip");
    assert_eq!(parsed, anchor);
    verify::verify(std::slice::from_ref(&path), Some(anchor)).expect("anchor matches");

    // Tail truncation: the chain that is left is intact, and only the anchor shows it.
    let mut lines = text_lines(&path);
    lines.truncate(8);
    write_text_lines(&path, &lines);
    verify::verify(std::slice::from_ref(&path), None).expect("a cut chain still verifies");
    let e = verify::verify(std::slice::from_ref(&path), Some(anchor)).expect_err("cut");
    assert!(
        matches!(
            e,
            VerifyError::Anchor {
                problem: Problem::AnchorPast { seq: 10, last: 8 },
                ..
            }
        ),
        "{e}"
    );

    // A rewritten chain (line 5 changed, every later prev recomputed) verifies, but not
    // against an anchor taken before.
    let (_dir, path) = chained_log(10);
    let anchor = match verify::verify(std::slice::from_ref(&path), None)
        .expect("intact")
        .last
    {
        Some((Some(seq), hash)) => Anchor { seq, hash },
        other => panic!("{other:?}"),
    };
    let mut lines = text_lines(&path);
    lines[4] = lines[4].replace("\"bytes_out\":1004,", "\"bytes_out\":9,");
    for i in 5..lines.len() {
        let prev = hex(&sha256(lines[i - 1].as_bytes()));
        let (head, rest) = lines[i].split_once("\"prev\":\"").expect("prev");
        lines[i] = format!("{head}\"prev\":\"{prev}{}", &rest[64..]);
    }
    write_text_lines(&path, &lines);
    verify::verify(std::slice::from_ref(&path), None).expect("a rewritten chain verifies");
    let e = verify::verify(std::slice::from_ref(&path), Some(anchor)).expect_err("rewritten");
    assert!(
        matches!(
            e,
            VerifyError::Line {
                line: 10,
                problem: Problem::AnchorMismatch { seq: 10, .. },
                ..
            }
        ),
        "{e}"
    );
}
