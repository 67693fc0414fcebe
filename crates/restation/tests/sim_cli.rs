//! `restation sim usbip` run as a process: its event lines, and the TSS stand-in it runs with
//! `--tss-standin` answering over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_usbip_server_runs_a_tss_standin_its_phones_trust() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(["sim", "usbip", "--listen", "127.0.0.1:0"])
        .args(["--phone", "iPhone10,3:dfu", "--tss-standin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run restation sim usbip");
    let stdout = child.stdout.take().expect("stdout");
    let _server = Server(child);
    // the event lines, read on a thread so a silent server fails the test instead of hanging it
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut events = Vec::new();
    while !events
        .iter()
        .any(|e: &serde_json::Value| e["event"] == "listening")
    {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no `listening` line; got {events:?}"));
        events.push(serde_json::from_str(&line).expect("each line is JSON"));
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names, ["phone", "tss_standin", "listening"], "{events:?}");
    let url = events[1]["url"].as_str().expect("the stand-in's url");
    let rest = url.strip_prefix("http://").expect("an http url");
    let (addr, path) = rest.split_once('/').expect("a path");
    assert_eq!(path, "TSS/controller?action=2");
    assert!(
        !addr.ends_with(":0"),
        "the bound port, not the asked one: {url}"
    );

    // A request it cannot read is answered as Apple's server answers one: STATUS and MESSAGE.
    let mut stream = TcpStream::connect(addr).expect("connect to the stand-in");
    let body = b"not a plist";
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write the request");
    stream.write_all(body).expect("write the body");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("STATUS=100&MESSAGE="), "{answer}");
}
