//! `restation explain [NUMBER]`: what a restore error number means, what usually causes it and
//! what to do, from the one table in `restore::failure` (documented in `docs/errors.md`).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use restore::failure::{self, Entry, Origin, TABLE};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The number: one of Apple's (9, 4005, 4013, 4014, 14, 3194) or a status the phone
    /// reported (6, 27, 53, -1, ...). Without it, the whole table.
    #[arg(allow_negative_numbers = true)]
    number: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let Some(number) = args.number else {
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(TABLE)?)?;
        } else {
            write!(out, "{}", list())?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    match failure::explain(number) {
        Some(entry) if args.json => {
            writeln!(out, "{}", serde_json::to_string_pretty(entry)?)?;
        }
        Some(entry) => write!(out, "{}", one(entry))?,
        None => {
            eprintln!("{}", unknown(number));
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One number, in full.
fn one(e: &Entry) -> String {
    format!(
        "{} ({}): {}\n  typical causes: {}\n  what to do:     {}\n",
        e.number,
        origin(e.origin),
        e.meaning,
        e.causes,
        e.advice
    )
}

/// The whole table, a line per number.
fn list() -> String {
    let mut s = String::from("number  from    meaning\n");
    for e in TABLE {
        s.push_str(&format!(
            "{:>6}  {:<6}  {}\n",
            e.number,
            short_origin(e.origin),
            e.meaning
        ));
    }
    s.push_str(
        "\n`restation explain NUMBER` for typical causes and what to do (docs/errors.md).\n",
    );
    s
}

/// What to say about a number the table does not have.
fn unknown(number: i64) -> String {
    let of = |o: Origin| {
        TABLE
            .iter()
            .filter(|e| e.origin == o)
            .map(|e| e.number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "restation: {number} is not in the table.\n\
         Apple's numbers: {}.\n\
         Statuses the phone reports: {}.\n\
         A status the phone reports that is not listed keeps its own number: look at the \
         phone's last log lines kept with the failure, and restore again from DFU.\n\
         `restation explain` lists the table.",
        of(Origin::Apple),
        of(Origin::Device)
    )
}

fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Apple => "Apple's number",
        Origin::Device => "the phone's own status",
    }
}

fn short_origin(o: Origin) -> &'static str {
    match o {
        Origin::Apple => "Apple",
        Origin::Device => "phone",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_meaning_causes_and_advice() {
        let e = failure::explain(4013).unwrap();
        let text = one(e);
        assert!(text.starts_with("4013 (Apple's number): "), "{text}");
        assert!(text.contains("typical causes: ") && text.contains("swap the cable"));
        let table = list();
        assert_eq!(table.lines().count(), TABLE.len() + 3);
        assert!(table.contains("  3194  Apple "), "{table}");
        let u = unknown(1234);
        assert!(
            u.contains("1234 is not in the table") && u.contains("4013"),
            "{u}"
        );
    }
}
