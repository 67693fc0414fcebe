//! `tss` owns personalization, the part of a restore where the station asks Apple's signing
//! server (TSS) for a ticket bound to one phone and one build, and hands the phone images it
//! will boot. It builds the TSS [`request`] from the device (ECID, ApNonce, SepNonce, chip,
//! board, security domain and modes) and a build identity of the staged IPSW, parses the
//! server's [`response`] (`STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=…` or a refusal such as
//! STATUS 94, "not signed", Apple's error 3194), sends it with a retrying [`client`]
//! (transport errors only), and stitches [`img4`] images (IM4P + IM4M ticket [+ IM4R boot
//! nonce]). For tests and the demo, a loopback [`standin`] server issues tickets signed with
//! its own key, and [`verify`] is the phone's side: signature, ECID, current ApNonce and the
//! component digest, plugged into the virtual phone through [`verify::image_check`].
//! Everything that parses what a server or a file sends returns a typed error, never panics.
//!
//! ```
//! use tss::img4::Img4;
//! use tss::request::{Device, Request};
//! use tss::response;
//! use tss::standin::{Policy, Signer};
//! use tss::verify::{DeviceState, TicketCheck};
//!
//! let ibss = ipsw::Im4p::new("ibss", "iBoot-synthetic", vec![0xA5; 4096]).encode();
//! let device = Device {
//!     ecid: 0x0012_3456_789A_BCDE,
//!     ap_nonce: vec![0x11; 32],
//!     sep_nonce: Some(vec![0x22; 20]),
//!     chip_id: 0x8110,
//!     board_id: 0x0E,
//!     security_domain: 1,
//!     production_mode: true,
//!     security_mode: true,
//! };
//! let mut request = Request::new(device.clone());
//! request.add_component("iBSS", ipsw::Algorithm::Sha384.digest(&ibss).as_bytes());
//!
//! // The stand-in's signing decision, without HTTP: the body a server would answer.
//! let signer = Signer::from_seed(b"doc");
//! let body = signer.answer(&Policy::default(), &request.to_xml()).encode();
//! assert!(body.starts_with(b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING="));
//! let ticket = response::parse(&body)?;
//!
//! // Stitch and let the phone check it.
//! let img4 = Img4::stitch(&ibss, &ticket.ap_img4_ticket, None)?.encode();
//! let check = TicketCheck::new(signer.public_key());
//! let phone = DeviceState { ecid: device.ecid, ap_nonce: &device.ap_nonce, chip_board: None };
//! check.check_img4(&img4, &phone, Some(*b"ibss"))?;
//!
//! // The same image after the phone rolled its nonce is refused.
//! let rolled = DeviceState { ap_nonce: &[0x33; 32], ..phone };
//! assert!(check.check_img4(&img4, &rolled, Some(*b"ibss")).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod der;
pub mod error;
pub mod img4;
pub mod request;
pub mod response;
pub mod standin;
pub mod tls;
pub mod verify;

pub use client::{Client, Config};
pub use error::{TransportError, TssError};
pub use img4::{Im4m, Im4r, Img4};
pub use request::{Device, Request};
pub use response::{Answer, Ticket};
pub use verify::{PublicKey, TicketCheck};

/// Entry points of the fuzz targets (`crates/tss/fuzz`), also replayed over the seed corpus by
/// `tests/fuzz_corpus.rs`. Each runs a decoder on arbitrary bytes and checks its invariants.
#[doc(hidden)]
pub mod fuzzing {
    use crate::img4::{Im4m, Img4};
    use crate::response::Answer;

    /// Bytes → TSS answer; a decoded answer re-encodes to one that decodes the same.
    pub fn response(data: &[u8]) {
        let Ok(a) = Answer::decode(data) else { return };
        let again = Answer::decode(&a.encode());
        match (&a, again) {
            (Answer::Ticket(t), Ok(Answer::Ticket(u))) => {
                assert_eq!(t.ap_img4_ticket, u.ap_img4_ticket);
                assert_eq!(t.bb_ticket, u.bb_ticket);
            }
            (Answer::Refused { status, .. }, Ok(Answer::Refused { status: s, .. })) => {
                assert_eq!(*status, s);
            }
            (_, other) => panic!("re-decoding changed the answer: {other:?}"),
        }
    }

    /// Bytes → IMG4; a decoded image re-encodes to the same bytes.
    pub fn img4(data: &[u8]) {
        let Ok(i) = Img4::decode(data) else { return };
        assert_eq!(i.encode(), data);
        assert!(i.payload().is_ok());
    }

    /// Bytes → IM4M; a decoded ticket re-encodes to the same bytes and its body re-encodes
    /// to a body that decodes equal.
    pub fn im4m(data: &[u8]) {
        let Ok(m) = Im4m::decode(data) else { return };
        assert_eq!(m.encode(), data);
        let rebuilt = Im4m::new(m.body.clone(), m.signature.clone(), m.cert_chain.clone());
        let again = Im4m::decode(&rebuilt.encode());
        assert!(again.is_ok_and(|a| a.body == m.body));
    }
}
