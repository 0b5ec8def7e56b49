//! Tables for the terminal (`exfilmon status`, `exfilmon replay --format table`), in one
//! style: comfy-table's condensed UTF-8 preset, counts right-aligned.

use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use crate::tables::{Direction, Verdict};

/// A table with `header`; the count columns (packets, bytes, count, port, proto) are
/// right-aligned.
#[must_use]
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    for (i, name) in header.iter().enumerate() {
        if matches!(*name, "packets" | "bytes" | "count" | "port" | "proto")
            && let Some(column) = t.column_mut(i)
        {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// An AS number as operators write it (`AS64500`), or `AS?` when it is not known.
#[must_use]
pub fn asn(asn: Option<u32>) -> String {
    asn.map_or_else(|| "AS?".to_owned(), |n| format!("AS{n}"))
}

/// One row of traffic by class: group, country, direction, verdict, packets, bytes.
pub type ClassRow<'a> = (&'a str, &'a str, Direction, Verdict, u64, u64);

/// The table of traffic by group, country, direction and verdict.
#[must_use]
pub fn classes<'a>(rows: impl IntoIterator<Item = ClassRow<'a>>) -> Table {
    let mut t = table(&[
        "group",
        "country",
        "direction",
        "verdict",
        "packets",
        "bytes",
    ]);
    for (group, country, direction, verdict, packets, bytes) in rows {
        t.add_row([
            group.to_owned(),
            country.to_owned(),
            direction.as_str().to_owned(),
            verdict.as_str().to_owned(),
            packets.to_string(),
            bytes.to_string(),
        ]);
    }
    t
}
