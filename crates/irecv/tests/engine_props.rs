//! Property tests for the recovery and DFU engines: codecs round-trip, and for any file size
//! the transfers the engines ask for put exactly the file (plus the DFU suffix) on the wire.

use std::time::{Duration, Instant};

use irecv::dfu::{self, parse_state, Action, Download, Options, State, Status, StatusReply};
use irecv::recovery::{parse_getenv_answer, Command, Upload, UploadAction, UploadOptions};
use proptest::prelude::*;
use usb::{Completion, Transfer};

fn state() -> impl Strategy<Value = State> {
    (0u8..=10).prop_map(|v| State::from_u8(v).unwrap())
}

fn status() -> impl Strategy<Value = Status> {
    (0u8..=15).prop_map(|v| Status::from_u8(v).unwrap())
}

proptest! {
    #[test]
    fn status_reply_round_trips(
        status in status(),
        ms in 0u64..=0xff_ffff,
        state in state(),
        string_index in any::<u8>(),
    ) {
        let r = StatusReply { status, poll_timeout: Duration::from_millis(ms), state, string_index };
        prop_assert_eq!(StatusReply::parse(&r.to_bytes()), Ok(r));
        prop_assert_eq!(parse_state(&[state as u8]), Ok(state));
    }

    #[test]
    fn getenv_value_round_trips(value in "[ -~]{0,200}", junk in prop::collection::vec(any::<u8>(), 0..20)) {
        let mut answer = value.clone().into_bytes();
        answer.push(0);
        answer.extend_from_slice(&junk);
        prop_assert_eq!(parse_getenv_answer(&answer), Ok(value));
    }

    #[test]
    fn command_bytes_are_text_and_nul(text in "[!-~][ -~]{0,200}") {
        let c = Command::new(&text).unwrap();
        prop_assert_eq!(c.text(), text.as_str());
        let Transfer::ControlOut { setup, data } = c.transfer() else { unreachable!() };
        prop_assert_eq!(setup.request_type, 0x40);
        prop_assert_eq!(&data[..text.len()], text.as_bytes());
        prop_assert_eq!(data.len(), text.len() + 1);
        prop_assert_eq!(data[text.len()], 0);
    }

    #[test]
    fn recovery_upload_puts_exactly_the_file_on_endpoint_4(len in 1usize..200_000) {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut up = Upload::new(&data, UploadOptions::default()).unwrap();
        let (mut wire, mut zlps, mut starts) = (Vec::new(), 0, 0);
        loop {
            match up.poll() {
                UploadAction::Transfer { transfer, .. } => {
                    let written = match transfer {
                        Transfer::ControlOut { setup, data } => {
                            prop_assert_eq!((setup.request_type, data.len()), (0x41, 0));
                            starts += 1;
                            0
                        }
                        Transfer::BulkOut { endpoint: 4, data } => {
                            prop_assert!(data.len() <= 0x8000);
                            if data.is_empty() { zlps += 1 }
                            wire.extend_from_slice(data);
                            data.len()
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    up.handle(Ok(Completion::Out { written })).unwrap();
                }
                UploadAction::Finished(p) => {
                    prop_assert_eq!(p.sent as usize, len);
                    break;
                }
                UploadAction::Failed(e) => panic!("{e}"),
            }
        }
        prop_assert_eq!(starts, 1);
        prop_assert_eq!(wire, data);
        prop_assert_eq!(zlps, usize::from(len % 512 == 0));
    }

    #[test]
    fn dfu_download_puts_the_image_and_suffix_on_the_wire(len in 1usize..20_000, port in any::<bool>()) {
        let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        let options = if port { Options::port_dfu() } else { Options::dfu() };
        let mut dl = Download::new(&data, options).unwrap();
        let now = Instant::now();
        let (mut wire, mut next_block, mut resets) = (Vec::new(), 0u16, 0);
        let mut state = State::DfuIdle;
        loop {
            match dl.poll(now) {
                Action::Transfer { transfer, .. } => {
                    let result = match transfer {
                        Transfer::ControlIn { setup, length: 1 } if setup.request == 5 => {
                            Completion::In(vec![state as u8])
                        }
                        Transfer::ControlIn { setup, length: 6 } if setup.request == 3 => {
                            state = match state {
                                State::DnloadSync => State::DnloadIdle,
                                State::ManifestSync => State::Manifest,
                                s => s,
                            };
                            Completion::In(vec![0, 0, 0, 0, state as u8, 0])
                        }
                        Transfer::ControlOut { setup, data } if setup.request == 1 => {
                            prop_assert_eq!(setup.value, next_block);
                            prop_assert!(data.len() <= options.block_size);
                            if data.is_empty() {
                                state = State::ManifestSync;
                            } else {
                                next_block += 1;
                                state = State::DnloadSync;
                                wire.extend_from_slice(data);
                            }
                            Completion::Out { written: data.len() }
                        }
                        Transfer::Reset => {
                            resets += 1;
                            Completion::Reset
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    dl.handle(Ok(result), now).unwrap();
                }
                Action::Finished(f) => {
                    prop_assert_eq!(u32::from(next_block), f.blocks);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        prop_assert_eq!(resets, 1);
        let mut expected = data.clone();
        if !port {
            expected.extend_from_slice(&dfu::suffix(&data));
        }
        prop_assert_eq!(wire, expected);
    }
}
