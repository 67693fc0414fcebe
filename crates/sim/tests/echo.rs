//! The normal-mode phone's echo service (port 7): every byte a host sends through usbmux comes
//! back, in order, however much is in flight (the VM bench streams through it for throughput
//! figures of a host's mux).

mod common;

use common::host::MuxDriver;
use common::*;
use sim::normal::{ECHO_PORT, ECHO_WINDOW};
use sim::phone::Mode;

#[test]
fn echo_port_returns_every_byte_in_order() {
    let bench = Bench::new("iPhone10,3", 31, options(Mode::Normal));
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let conn = mux.connect(ECHO_PORT).unwrap();
    // more than the echo window, so the phone has to stop reading and resume
    let data = image(ECHO_WINDOW * 2 + 12_345, 9);
    let mut back = Vec::new();
    for chunk in data.chunks(64 * 1024) {
        mux.send(conn, chunk).unwrap();
        while let Ok(Some(b)) = mux.link.read(conn, 1 << 20) {
            back.extend_from_slice(&b);
        }
    }
    while back.len() < data.len() {
        back.extend(mux.recv(conn).unwrap());
    }
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
    mux.close(conn).unwrap();
}

#[test]
fn lockdown_still_answers_next_to_echo() {
    let bench = Bench::new("iPhone10,3", 32, options(Mode::Normal));
    let mut dev = bench.open(0);
    let mut mux = MuxDriver::open(dev.as_mut()).unwrap();
    let echo = mux.connect(ECHO_PORT).unwrap();
    mux.send(echo, b"ping").unwrap();
    let v = {
        let mut ld = common::host::Lockdown::connect(&mut mux).unwrap();
        ld.get_value(&mut mux, None, Some("ProductType")).unwrap()
    };
    assert_eq!(v.as_string(), Some("iPhone10,3"));
    let mut back = Vec::new();
    while back.len() < 4 {
        back.extend(mux.recv(echo).unwrap());
    }
    assert_eq!(back, b"ping");
}
