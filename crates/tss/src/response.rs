//! The TSS answer: `STATUS=<n>&MESSAGE=<text>[&REQUEST_STRING=<plist>]`, parsed into a
//! [`Ticket`] (STATUS 0) or a [`TssError::Refused`] carrying the server's status and message.

use plist::{Dictionary, Value};

use crate::error::TssError;
use crate::img4::MAX_IM4M;

/// Largest answer body read (real ones are a few KiB to a few hundred KiB).
pub const MAX_RESPONSE: usize = 4 << 20;

/// What the server's statuses mean, in one table. Every status other than 0 ends the attempt.
pub const STATUSES: &[(u32, &str)] = &[
    (0, "success"),
    (8, "server error (invalid baseband request)"),
    (49, "server error (invalid baseband data)"),
    (69, "this device is not eligible for the requested build"),
    (
        94,
        "this build is not signed for this device (Apple error 3194)",
    ),
    (100, "malformed request"),
    (
        126,
        "server internal error (most likely a malformed request)",
    ),
];

/// What a status means, from [`STATUSES`].
pub fn status_meaning(status: u32) -> Option<&'static str> {
    STATUSES.iter().find(|(s, _)| *s == status).map(|(_, m)| *m)
}

/// A signed ticket (the `REQUEST_STRING` plist of a STATUS 0 answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    /// `ApImg4Ticket`: the IM4M.
    pub ap_img4_ticket: Vec<u8>,
    /// `BBTicket`, when a baseband ticket was asked for too.
    pub bb_ticket: Option<Vec<u8>>,
    /// Every other key of the answer (per-component tickets, `@ServerVersion`, ...).
    pub other: Dictionary,
}

impl Ticket {
    /// A ticket holding only an IM4M.
    pub fn new(ap_img4_ticket: Vec<u8>) -> Ticket {
        Ticket {
            ap_img4_ticket,
            bb_ticket: None,
            other: Dictionary::new(),
        }
    }

    fn to_plist(&self) -> Dictionary {
        let mut d = self.other.clone();
        d.insert(
            "ApImg4Ticket".into(),
            Value::Data(self.ap_img4_ticket.clone()),
        );
        if let Some(b) = &self.bb_ticket {
            d.insert("BBTicket".into(), Value::Data(b.clone()));
        }
        d
    }
}

/// A decoded answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// STATUS 0 with a ticket.
    Ticket(Ticket),
    /// STATUS ≠ 0.
    Refused {
        /// `STATUS`.
        status: u32,
        /// `MESSAGE`.
        message: String,
    },
}

impl Answer {
    /// The body a server sends for this answer.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Answer::Ticket(t) => {
                let mut out = b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=".to_vec();
                // Writing a dictionary of plain values into a Vec cannot fail.
                let _ = Value::Dictionary(t.to_plist()).to_writer_xml(&mut out);
                out
            }
            Answer::Refused { status, message } => {
                format!("STATUS={status}&MESSAGE={message}").into_bytes()
            }
        }
    }

    /// Parses a body. Malformed bodies are errors; a refusal is `Ok(Answer::Refused)`.
    pub fn decode(body: &[u8]) -> Result<Answer, TssError> {
        if body.len() > MAX_RESPONSE {
            return Err(TssError::TooLarge {
                what: "answer",
                len: body.len(),
                limit: MAX_RESPONSE,
            });
        }
        let rest = body
            .strip_prefix(b"STATUS=")
            .ok_or(malformed("does not start with STATUS=", body))?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(malformed("STATUS is not a number", body));
        }
        let (num, rest) = rest.split_at(digits);
        let status: u32 = std::str::from_utf8(num)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(malformed("STATUS is not a number", body))?;
        let rest = rest
            .strip_prefix(b"&MESSAGE=")
            .ok_or(malformed("no &MESSAGE= after STATUS", body))?;
        const RS: &[u8] = b"&REQUEST_STRING=";
        let (message, plist) = match find(rest, RS) {
            Some(at) => (
                rest.get(..at).unwrap_or_default(),
                rest.get(at + RS.len()..),
            ),
            None => (rest, None),
        };
        let message = String::from_utf8_lossy(message)
            .trim_end_matches(['\0', '\r', '\n'])
            .chars()
            .take(512)
            .collect::<String>();
        if status != 0 {
            return Ok(Answer::Refused { status, message });
        }
        let plist = plist.ok_or(TssError::NoTicket {
            reason: "STATUS 0 without REQUEST_STRING",
        })?;
        let end = plist
            .iter()
            .rposition(|b| !matches!(b, 0 | b'\r' | b'\n' | b' '))
            .map_or(0, |i| i + 1);
        let v = Value::from_reader(std::io::Cursor::new(plist.get(..end).unwrap_or_default()))
            .map_err(TssError::Plist)?;
        let Value::Dictionary(mut d) = v else {
            return Err(TssError::NoTicket {
                reason: "REQUEST_STRING is not a dictionary",
            });
        };
        let ap = match d.remove("ApImg4Ticket") {
            Some(Value::Data(t)) => t,
            Some(_) => {
                return Err(TssError::NoTicket {
                    reason: "ApImg4Ticket is not data",
                })
            }
            None => {
                return Err(TssError::NoTicket {
                    reason: "no ApImg4Ticket in the answer",
                })
            }
        };
        if ap.len() > MAX_IM4M {
            return Err(TssError::TooLarge {
                what: "ApImg4Ticket",
                len: ap.len(),
                limit: MAX_IM4M,
            });
        }
        let bb = match d.remove("BBTicket") {
            None => None,
            Some(Value::Data(b)) => Some(b),
            Some(_) => {
                return Err(TssError::NoTicket {
                    reason: "BBTicket is not data",
                })
            }
        };
        Ok(Answer::Ticket(Ticket {
            ap_img4_ticket: ap,
            bb_ticket: bb,
            other: d,
        }))
    }
}

/// Parses a body into a ticket; a refusal becomes [`TssError::Refused`].
pub fn parse(body: &[u8]) -> Result<Ticket, TssError> {
    match Answer::decode(body)? {
        Answer::Ticket(t) => Ok(t),
        Answer::Refused { status, message } => Err(TssError::Refused { status, message }),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn malformed(reason: &'static str, body: &[u8]) -> TssError {
    TssError::Malformed {
        reason,
        start: String::from_utf8_lossy(body.get(..body.len().min(48)).unwrap_or_default())
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refusals() {
        let e = parse(b"STATUS=94&MESSAGE=This device isn't eligible for the requested build.")
            .unwrap_err();
        assert!(e.is_unsigned_build());
        assert!(
            matches!(&e, TssError::Refused { status: 94, message } if message.starts_with("This device"))
        );
        for s in [8u32, 49, 69, 100, 126] {
            let e = parse(format!("STATUS={s}&MESSAGE=x").as_bytes()).unwrap_err();
            assert!(!e.is_unsigned_build());
            assert!(status_meaning(s).is_some());
            assert!(matches!(e, TssError::Refused { status, .. } if status == s));
        }
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b""[..],
            b"<html>502</html>",
            b"STATUS=",
            b"STATUS=x&MESSAGE=y",
            b"STATUS=0",
            b"STATUS=99999999999&MESSAGE=x",
        ] {
            assert!(
                matches!(parse(body), Err(TssError::Malformed { .. })),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse(b"STATUS=0&MESSAGE=SUCCESS"),
            Err(TssError::NoTicket { .. })
        ));
        assert!(matches!(
            parse(b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=<plist"),
            Err(TssError::Plist(_))
        ));
        let no_ticket = b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>A</key><integer>1</integer></dict></plist>";
        assert!(matches!(parse(no_ticket), Err(TssError::NoTicket { .. })));
    }

    proptest! {
        #[test]
        fn ticket_roundtrip(
            ticket in proptest::collection::vec(any::<u8>(), 0..2000),
            bb in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
            extra in proptest::collection::btree_map("[A-Za-z,@]{1,12}", any::<u32>(), 0..4),
        ) {
            let mut other = Dictionary::new();
            for (k, v) in extra {
                if k != "ApImg4Ticket" && k != "BBTicket" {
                    other.insert(k, Value::Integer(u64::from(v).into()));
                }
            }
            let a = Answer::Ticket(Ticket { ap_img4_ticket: ticket, bb_ticket: bb, other });
            prop_assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
        }

        #[test]
        fn refusal_roundtrip(status in 1u32..100_000, message in "[^&\r\n\0]{0,100}") {
            let a = Answer::Refused { status, message };
            prop_assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
        }

        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Answer::decode(&body);
        }
    }
}
