//! The project's device table against the reference oracle `shared/reference/devices.csv`.
//!
//! For every CSV row the table must have a row with the same product type, board config, board
//! id, chip id and name; the test lists every disagreement and prints coverage both ways.
//! Skips (with a message) when the reference file is not there.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use irecv::devices::{self, Device};

const ORACLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/devices.csv"
);

/// A CSV row: product_type, board_config, board_id, chip_id, name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    line: usize,
    product_type: String,
    board_config: String,
    board_id: u32,
    chip_id: u32,
    name: String,
}

/// Split one CSV line into fields: commas separate, double quotes enclose, `""` inside quotes is
/// a quote.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn parse_hex(text: &str) -> Result<u32, String> {
    let digits = text
        .trim()
        .strip_prefix("0x")
        .or_else(|| text.trim().strip_prefix("0X"))
        .ok_or_else(|| format!("{text:?} is not 0x-hex"))?;
    u32::from_str_radix(digits, 16).map_err(|e| format!("{text:?}: {e}"))
}

fn read_oracle(text: &str) -> Vec<Row> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().expect("CSV has a header");
    assert_eq!(
        split_csv_line(header),
        [
            "product_type",
            "board_config",
            "board_id",
            "chip_id",
            "name"
        ],
        "unexpected CSV header"
    );
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f = split_csv_line(l);
            assert_eq!(f.len(), 5, "line {}: {} fields in {l:?}", i + 1, f.len());
            Row {
                line: i + 1,
                product_type: f[0].clone(),
                board_config: f[1].clone(),
                board_id: parse_hex(&f[2]).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)),
                chip_id: parse_hex(&f[3]).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)),
                name: f[4].clone(),
            }
        })
        .collect()
}

fn matches(row: &Row, d: &Device) -> bool {
    d.product_type == row.product_type
        && d.board_config == row.board_config
        && d.board_id == row.board_id
        && d.chip_id == row.chip_id
        && d.name == row.name
}

fn show(d: &Device) -> String {
    format!(
        "{} {} bdid {:#04x} cpid {:#06x} {:?}",
        d.product_type, d.board_config, d.board_id, d.chip_id, d.name
    )
}

/// Explain why a CSV row has no exact match, pointing at the nearest table row.
fn disagreement(row: &Row) -> String {
    let want = format!(
        "line {}: CSV {} {} bdid {:#04x} cpid {:#06x} {:?}",
        row.line, row.product_type, row.board_config, row.board_id, row.chip_id, row.name
    );
    let near = devices::by_board_config(&row.board_config)
        .or_else(|| devices::by_chip_board(row.chip_id, row.board_id))
        .or_else(|| devices::by_product_type(&row.product_type).find(|d| d.chip_id == row.chip_id))
        .or_else(|| devices::by_product_type(&row.product_type).next());
    match near {
        Some(d) => format!("{want}\n      table has {}", show(d)),
        None => format!("{want}\n      table has no such row"),
    }
}

#[test]
fn csv_parser_handles_quotes() {
    assert_eq!(
        split_csv_line(r#""iPhone8,1",n71ap,0x04,0x8000,"iPhone 6s""#),
        ["iPhone8,1", "n71ap", "0x04", "0x8000", "iPhone 6s"]
    );
    assert_eq!(
        split_csv_line(r#"a,"b ""quoted"", c",,d"#),
        ["a", r#"b "quoted", c"#, "", "d"]
    );
    assert_eq!(parse_hex("0x0C"), Ok(0x0C));
    assert!(parse_hex("12").is_err());
}

#[test]
fn table_agrees_with_reference_csv() {
    let path = Path::new(ORACLE);
    let Ok(text) = fs::read_to_string(path) else {
        eprintln!(
            "SKIP table_agrees_with_reference_csv: reference {} not found",
            path.display()
        );
        return;
    };
    let rows = read_oracle(&text);
    assert!(!rows.is_empty(), "reference CSV has no rows");

    let mut matched_table_rows: HashSet<usize> = HashSet::new();
    let mut problems = Vec::new();
    for row in &rows {
        match devices::all().iter().position(|d| matches(row, d)) {
            Some(i) => {
                matched_table_rows.insert(i);
            }
            None => problems.push(disagreement(row)),
        }
    }
    let only_ours: Vec<String> = devices::all()
        .iter()
        .enumerate()
        .filter(|(i, _)| !matched_table_rows.contains(i))
        .map(|(_, d)| show(d))
        .collect();

    let matched = rows.len() - problems.len();
    eprintln!(
        "device table coverage: {matched}/{} reference rows matched ({:.1}%); table has {} rows, {} not in the reference",
        rows.len(),
        100.0 * matched as f64 / rows.len() as f64,
        devices::all().len(),
        only_ours.len()
    );
    for d in &only_ours {
        eprintln!("  only in the project's table: {d}");
    }
    assert!(
        problems.is_empty(),
        "{} reference rows disagree with the device table:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
