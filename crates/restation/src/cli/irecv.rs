//! `restation irecv`: look at what a phone in recovery or DFU says about itself, and talk to it.
//!
//! - `restation irecv parse-serial "<iSerialNumber>" [--json]`: decode an iBoot/SecureROM serial
//!   string and name the device. Exit 0 when the string is a serial string (even with masked or
//!   unknown parts), 2 when nothing in it is recognizable. Only the first 4 KiB and 256 fields
//!   are read (a real one is under 256 bytes); a note on stderr says when the rest was ignored.
//! - `restation irecv mode <product id>`: which mode an Apple USB product id means
//!   (`0x1281` → `recovery`).
//! - `restation irecv send FILE` and `restation irecv command CMD`: talk to a phone over USB
//!   ([`super::irecv_device`]).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use irecv::mode::{self, Mode};
use irecv::serial::{format_ecid, SerialInfo, MAX_FIELDS, MAX_SERIAL_LENGTH};
use serde::Serialize;

/// Exit code for input that cannot be understood at all.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Args)]
pub struct IrecvArgs {
    #[command(subcommand)]
    command: IrecvCommand,
}

#[derive(Debug, Subcommand)]
enum IrecvCommand {
    /// Decode an iBoot/SecureROM serial string (the USB iSerialNumber in recovery or DFU).
    ParseSerial(ParseSerialArgs),
    /// Name the mode an Apple USB product id means (e.g. 0x1281 -> recovery).
    Mode(ModeArgs),
    /// Send a file to a phone in recovery (bulk upload) or DFU (DFU download), like
    /// `irecovery -f`.
    Send(super::irecv_device::SendArgs),
    /// Send one iBoot command to a phone in recovery (`getenv NAME` prints the value), like
    /// `irecovery -c`.
    Command(super::irecv_device::CommandArgs),
}

#[derive(Debug, Args)]
struct ParseSerialArgs {
    /// The serial string, e.g. "CPID:8010 CPRV:11 ... ECID:0002213824536326 IBFL:3C".
    #[arg(allow_hyphen_values = true)]
    serial: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ModeArgs {
    /// USB product id, hex with 0x (0x1281) or decimal (4737).
    product_id: String,
}

/// The JSON form of a parsed serial string: exactly these keys; numbers as integers, the ECID as
/// a `0x` lowercase hex string, anything unknown as null.
#[derive(Debug, Serialize)]
struct SerialReport<'a> {
    cpid: Option<u32>,
    cprv: Option<u32>,
    cpfm: Option<u32>,
    scep: Option<u32>,
    bdid: Option<u32>,
    ecid: Option<String>,
    ibfl: Option<u32>,
    sdom: Option<u32>,
    srtg: Option<&'a str>,
    srnm: Option<&'a str>,
    imei: Option<&'a str>,
    product_type: Option<&'static str>,
    board_config: Option<&'static str>,
    name: Option<&'static str>,
    production_mode: Option<bool>,
    security_mode: Option<bool>,
    image4_aware: Option<bool>,
}

impl<'a> SerialReport<'a> {
    fn new(info: &'a SerialInfo) -> Self {
        let device = info.device();
        SerialReport {
            cpid: info.cpid,
            cprv: info.cprv,
            cpfm: info.cpfm,
            scep: info.scep,
            bdid: info.bdid,
            ecid: info.ecid.map(format_ecid),
            ibfl: info.ibfl,
            sdom: info.sdom,
            srtg: info.srtg.as_deref(),
            srnm: info.srnm.as_deref(),
            imei: info.imei.as_deref(),
            product_type: device.map(|d| d.product_type),
            board_config: device.map(|d| d.board_config),
            name: device.map(|d| d.name),
            production_mode: info.production_mode(),
            security_mode: info.security_mode(),
            image4_aware: info.image4_aware(),
        }
    }
}

pub fn run(args: &IrecvArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        IrecvCommand::ParseSerial(a) => parse_serial(a),
        IrecvCommand::Mode(a) => mode(a),
        IrecvCommand::Send(a) => super::irecv_device::send(a),
        IrecvCommand::Command(a) => super::irecv_device::command(a),
    }
}

fn parse_serial(args: &ParseSerialArgs) -> anyhow::Result<ExitCode> {
    let info = match SerialInfo::parse(&args.serial) {
        Ok(info) => info,
        Err(err) => {
            eprintln!("restation irecv parse-serial: {err}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    if let Some(note) = truncation_note(&info) {
        eprintln!("restation irecv parse-serial: {note}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&SerialReport::new(&info))?
        );
    } else {
        print!("{}", text_table(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// What to tell the user when the parser left part of the input unread.
fn truncation_note(info: &SerialInfo) -> Option<String> {
    info.truncated.then(|| {
        format!(
            "note: only the fields within the first {MAX_SERIAL_LENGTH} bytes (at most \
             {MAX_FIELDS}) were read; the rest of the input was ignored"
        )
    })
}

fn hex(value: Option<u32>, width: usize) -> String {
    value.map_or_else(String::new, |v| format!("0x{v:0width$x}"))
}

fn yes_no(value: Option<bool>) -> String {
    match value {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => String::new(),
    }
}

/// `value`, or why it is empty: `unknown (...)` when the tag was there but unreadable, `-` when
/// the tag was absent, `unknown` for a derived value (`tag` empty) that cannot be worked out.
fn or_unknown(info: &SerialInfo, tag: &str, value: String) -> String {
    if !value.is_empty() {
        return value;
    }
    match info.unreadable.iter().find(|f| f.tag == tag) {
        Some(field) => match &field.value {
            Some(raw) => format!("unknown (unreadable: {raw:?})"),
            None => "unknown (no value)".into(),
        },
        None if tag.is_empty() => "unknown".into(),
        None => "-".into(),
    }
}

fn text_table(info: &SerialInfo) -> String {
    let device = info.device();
    let mut rows: Vec<(String, String)> = vec![
        ("CPID (chip)".into(), hex(info.cpid, 4), "CPID"),
        ("CPRV (revision)".into(), hex(info.cprv, 2), "CPRV"),
        ("CPFM (fuses)".into(), hex(info.cpfm, 2), "CPFM"),
        ("SCEP (epoch)".into(), hex(info.scep, 2), "SCEP"),
        ("BDID (board)".into(), hex(info.bdid, 2), "BDID"),
        (
            "ECID".into(),
            info.ecid.map(format_ecid).unwrap_or_default(),
            "ECID",
        ),
        ("IBFL (boot flags)".into(), hex(info.ibfl, 2), "IBFL"),
        ("SDOM (domain)".into(), hex(info.sdom, 2), "SDOM"),
        ("SIKA".into(), hex(info.sika, 2), "SIKA"),
        ("SRTG".into(), info.srtg.clone().unwrap_or_default(), "SRTG"),
        (
            "SRNM (serial)".into(),
            info.srnm.clone().unwrap_or_default(),
            "SRNM",
        ),
        ("IMEI".into(), info.imei.clone().unwrap_or_default(), "IMEI"),
    ]
    .into_iter()
    .map(|(label, value, tag)| (label, or_unknown(info, tag, value)))
    .collect();
    let not_in_table = || "not in the device table".to_string();
    rows.extend([
        (
            "product type".into(),
            device.map_or_else(not_in_table, |d| d.product_type.into()),
        ),
        (
            "board config".into(),
            device.map_or_else(not_in_table, |d| d.board_config.into()),
        ),
        (
            "name".into(),
            device.map_or_else(not_in_table, |d| d.name.into()),
        ),
        (
            "production mode".into(),
            or_unknown(info, "", yes_no(info.production_mode())),
        ),
        (
            "security mode".into(),
            or_unknown(info, "", yes_no(info.security_mode())),
        ),
        (
            "image4 aware".into(),
            or_unknown(info, "", yes_no(info.image4_aware())),
        ),
    ]);
    for field in &info.extra {
        let value = field.value.clone().unwrap_or_default();
        rows.push((format!("{} (unknown tag)", field.tag), value));
    }
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

fn mode(args: &ModeArgs) -> anyhow::Result<ExitCode> {
    let product_id = match mode::parse_product_id(&args.product_id) {
        Ok(pid) => pid,
        Err(err) => {
            eprintln!("restation irecv mode: {err}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    match Mode::from_product_id(product_id) {
        Ok(mode) => {
            println!("{mode}");
            Ok(ExitCode::SUCCESS)
        }
        Err(not_a_phone) => {
            println!("not-a-phone");
            eprintln!("restation irecv mode: {not_a_phone}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_input_gets_a_note() {
        let short = SerialInfo::parse("CPID:8010 BDID:0C").unwrap();
        assert_eq!(truncation_note(&short), None);
        let long = format!("CPID:8010 BDID:0C {}", "PAD:[x] ".repeat(1000));
        let info = SerialInfo::parse(long).unwrap();
        let note = truncation_note(&info).unwrap();
        assert!(
            note.contains("4096 bytes") && note.contains("256"),
            "{note}"
        );
    }
}
