//! `docs/errors.md` carries the one table of numbers and the classification, generated from
//! `restore::failure`: these tests fail when the code and the document part ways.
//! `cargo test -p restore --test errors_doc -- --ignored write_errors_doc` rewrites the
//! generated blocks after a change to the table.

use restore::failure::{self, TABLE};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");

/// The generated blocks: (marker name, content).
fn blocks() -> [(&'static str, String); 2] {
    [
        ("numbers", failure::markdown_table()),
        ("classification", failure::markdown_classification()),
    ]
}

fn begin(name: &str) -> String {
    format!("<!-- generated:{name} (restore::failure; do not edit by hand) -->\n")
}

fn end(name: &str) -> String {
    format!("<!-- end:{name} -->")
}

/// The text between a block's markers.
fn block<'a>(doc: &'a str, name: &str) -> &'a str {
    let b = begin(name);
    let start = doc
        .find(&b)
        .unwrap_or_else(|| panic!("docs/errors.md lacks the marker {b:?}"))
        + b.len();
    let stop = doc[start..]
        .find(&end(name))
        .unwrap_or_else(|| panic!("docs/errors.md lacks the marker {:?}", end(name)))
        + start;
    &doc[start..stop]
}

#[test]
fn docs_list_every_number_of_the_table() {
    let doc = std::fs::read_to_string(DOC).expect("docs/errors.md");
    let numbers = block(&doc, "numbers");
    for e in TABLE {
        let row = format!("| {} | ", e.number);
        assert!(
            numbers.lines().any(|l| l.starts_with(&row)),
            "docs/errors.md does not list {}",
            e.number
        );
    }
}

#[test]
fn generated_blocks_match_the_code() {
    let doc = std::fs::read_to_string(DOC).expect("docs/errors.md");
    for (name, content) in blocks() {
        assert_eq!(
            block(&doc, name),
            content,
            "docs/errors.md's {name} block is stale: run \
             `cargo test -p restore --test errors_doc -- --ignored write_errors_doc`"
        );
    }
}

#[test]
#[ignore = "rewrites docs/errors.md's generated blocks"]
fn write_errors_doc() {
    let mut doc = std::fs::read_to_string(DOC).expect("docs/errors.md");
    for (name, content) in blocks() {
        let b = begin(name);
        let start = doc.find(&b).expect("begin marker") + b.len();
        let stop = doc[start..].find(&end(name)).expect("end marker") + start;
        doc.replace_range(start..stop, &content);
    }
    std::fs::write(DOC, doc).expect("write docs/errors.md");
}
