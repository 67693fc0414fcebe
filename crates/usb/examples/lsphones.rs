//! `lsusb` for phones: every Apple device on the USB buses, with its slot, link speed, ids and
//! string descriptors. The mode name (recovery, DFU, ...) belongs to `irecv`; here it is the
//! product id.
//!
//! ```text
//! cargo run -p usb --features libusb --example lsphones
//! ```
//!
//! Exit status: 0 when the buses were listed (even with no phone, or no bus, there), 1 when
//! libusb could not start or list them.

use std::process::ExitCode;
use std::time::Duration;

use usb::libusb::RusbBackend;
use usb::{DeviceInfo, UsbBackend};

const STRING_TIMEOUT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let backend = match RusbBackend::new() {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("lsphones: no USB bus found: libusb could not start ({e})");
            return ExitCode::FAILURE;
        }
    };
    let devices = match backend.devices() {
        Ok(devices) => devices,
        Err(e) => {
            eprintln!("lsphones: cannot list USB devices: {e}");
            return ExitCode::FAILURE;
        }
    };
    if devices.is_empty() {
        if cfg!(target_os = "linux") && !std::path::Path::new("/sys/bus/usb").exists() {
            println!(
                "no Apple devices found: this machine has no USB bus (/sys/bus/usb is missing)"
            );
        } else {
            println!("no Apple devices found");
        }
        return ExitCode::SUCCESS;
    }
    for device in &devices {
        print_device(&backend, device);
    }
    ExitCode::SUCCESS
}

fn print_device(backend: &RusbBackend, info: &DeviceInfo) {
    let port = info
        .port_path
        .as_ref()
        .map_or_else(|| "?".to_string(), |p| p.to_string());
    let warn = if info.speed.below_high_speed() {
        "  (below high speed: check the cable)"
    } else {
        ""
    };
    println!(
        "Bus {:03} Device {:03}: ID {:04x}:{:04x} port {port} speed {}{warn}",
        info.id.bus,
        info.id.address,
        info.vendor_id(),
        info.product_id(),
        info.speed,
    );
    let mut device = match backend.open(info.id) {
        Ok(device) => device,
        Err(e) => {
            println!("  (cannot open: {e})");
            return;
        }
    };
    let d = device.device_descriptor().clone();
    println!(
        "  bcdDevice {:x}.{:02x}, {} configuration(s)",
        d.device_version >> 8,
        d.device_version & 0xff,
        d.num_configurations
    );
    let mut strings: Vec<(&str, u8)> = vec![
        ("iManufacturer", d.manufacturer_index),
        ("iProduct", d.product_index),
        ("iSerialNumber", d.serial_number_index),
    ];
    // In recovery and DFU, string 1 is referenced by no field and holds the nonces (§12).
    if ![d.manufacturer_index, d.product_index, d.serial_number_index].contains(&1) {
        strings.push(("string 1", 1));
    }
    for (name, index) in strings {
        if index == 0 {
            continue;
        }
        match device.string_descriptor(index, STRING_TIMEOUT) {
            Ok(text) => println!("  {name:<13} {index}: {text}"),
            Err(e) => println!("  {name:<13} {index}: ({e})"),
        }
    }
}
