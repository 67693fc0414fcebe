//! The two ends of a lockdown connection as sans-IO state machines: bytes in, messages out,
//! messages in, bytes out. No sockets, no clock.

use plist::Value;

use crate::frame::{
    decode_dictionary_with, encode_frame_into, FrameDecoder, DEFAULT_MAX_FRAME_LEN,
};
use crate::reply::Outcome;
use crate::Limits;
use crate::{CodecError, Envelope, Error, Format, Reply, Request};

/// Host side: encodes requests, decodes replies, remembers which request is in flight.
#[derive(Debug)]
pub struct HostCodec {
    decoder: FrameDecoder,
    limits: Limits,
    format: Format,
    label: Option<String>,
    pending: Option<String>,
}

impl Default for HostCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCodec {
    /// XML requests, no label, 16 MiB frame limit, default plist [`Limits`].
    pub fn new() -> Self {
        HostCodec {
            decoder: FrameDecoder::new(),
            limits: Limits::default(),
            format: Format::Xml,
            label: None,
            pending: None,
        }
    }

    /// Sets the `Label` sent with every request.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the plist format of outgoing requests (replies are accepted in either).
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sets the largest reply payload accepted.
    pub fn with_max_frame_len(mut self, max: u32) -> Self {
        self.decoder = FrameDecoder::with_max_frame_len(max);
        self
    }

    /// Sets how deep and how large a decoded reply may be.
    pub fn with_plist_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The request whose reply is awaited.
    pub fn pending(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// Encodes `request` as one frame appended to `out` and marks it in flight (unless it
    /// expects no reply).
    pub fn encode_request(
        &mut self,
        request: &Request,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let envelope = Envelope::new(self.label.clone(), request.clone());
        let value = Value::Dictionary(envelope.to_dictionary());
        encode_frame_into(&value, self.format, request.name(), out)?;
        self.pending = request.expects_reply().then(|| request.name().to_owned());
        Ok(())
    }

    /// Feeds bytes read from the stream.
    pub fn receive(&mut self, data: &[u8]) {
        self.decoder.push(data);
    }

    /// The next whole reply, if one has arrived. Clears the in-flight request.
    pub fn poll_reply(&mut self) -> Result<Option<Reply>, CodecError> {
        let Some(payload) = self.decoder.next_frame()? else {
            return Ok(None);
        };
        self.pending = None;
        let dict = decode_dictionary_with(&payload, &self.limits)?;
        Reply::from_dictionary(dict).map(Some)
    }

    /// Bytes of an unfinished reply.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Call when the peer closed.
    pub fn finish(&self) -> Result<(), CodecError> {
        self.decoder.finish()
    }

    /// Removes and returns bytes received past the last reply.
    pub fn take_buffered(&mut self) -> bytes::Bytes {
        self.decoder.take_buffered()
    }
}

/// Checks a reply against the request it answers: the echo must match, and `Error` or
/// `Result = Failure` become [`Error::Device`] / [`Error::Failed`].
///
/// A missing echo is accepted on `QueryType` replies (restored does not always echo) and on
/// error replies (an error is an error); anywhere else it is [`Error::Mismatch`].
pub fn check_reply(expected: &str, reply: Reply) -> Result<Reply, Error> {
    let mismatch = |found: Option<&str>| Error::Mismatch {
        expected: expected.to_owned(),
        found: found.map(str::to_owned),
    };
    match reply {
        Reply::Error { request, error, .. } => match request.as_deref() {
            Some(found) if found != expected => Err(mismatch(Some(found))),
            _ => Err(Error::Device {
                request: expected.to_owned(),
                kind: error,
            }),
        },
        Reply::Generic {
            request: Some(ref found),
            result: Some(Outcome::Failure),
            ..
        } if found == expected => Err(Error::Failed {
            request: expected.to_owned(),
        }),
        reply => match reply.request() {
            Some(found) if found == expected => Ok(reply),
            found => Err(mismatch(found)),
        },
    }
}

/// Device side (what a virtual iPhone runs): decodes requests, encodes replies.
#[derive(Debug)]
pub struct DeviceCodec {
    decoder: FrameDecoder,
    limits: Limits,
    format: Format,
}

impl Default for DeviceCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceCodec {
    /// XML replies, 16 MiB request limit, default plist [`Limits`].
    pub fn new() -> Self {
        DeviceCodec {
            decoder: FrameDecoder::with_max_frame_len(DEFAULT_MAX_FRAME_LEN),
            limits: Limits::default(),
            format: Format::Xml,
        }
    }

    /// Sets the plist format of outgoing replies.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sets the largest request payload accepted.
    pub fn with_max_frame_len(mut self, max: u32) -> Self {
        self.decoder = FrameDecoder::with_max_frame_len(max);
        self
    }

    /// Sets how deep and how large a decoded request may be.
    pub fn with_plist_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Feeds bytes read from the stream.
    pub fn receive(&mut self, data: &[u8]) {
        self.decoder.push(data);
    }

    /// The next whole request, if one has arrived.
    pub fn poll_request(&mut self) -> Result<Option<Envelope>, CodecError> {
        let Some(payload) = self.decoder.next_frame()? else {
            return Ok(None);
        };
        Envelope::from_dictionary(decode_dictionary_with(&payload, &self.limits)?).map(Some)
    }

    /// Encodes `reply` as one frame appended to `out`.
    pub fn encode_reply(&self, reply: &Reply, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let what = reply.request().unwrap_or("reply");
        encode_frame_into(
            &Value::Dictionary(reply.to_dictionary()),
            self.format,
            what,
            out,
        )
    }

    /// Bytes of an unfinished request.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Call when the host closed.
    pub fn finish(&self) -> Result<(), CodecError> {
        self.decoder.finish()
    }

    /// Removes and returns bytes received past the last request (at a TLS switch: the start
    /// of the host's handshake, if it came early).
    pub fn take_buffered(&mut self) -> bytes::Bytes {
        self.decoder.take_buffered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DaemonType, ErrorKind};

    #[test]
    fn host_and_device_in_memory() {
        let mut host = HostCodec::new().with_label("bench");
        let mut device = DeviceCodec::new().with_format(Format::Binary);
        let mut wire = Vec::new();
        host.encode_request(&Request::QueryType, &mut wire).unwrap();
        assert_eq!(host.pending(), Some("QueryType"));
        device.receive(&wire);
        let env = device.poll_request().unwrap().unwrap();
        assert_eq!(env.label.as_deref(), Some("bench"));
        assert_eq!(env.request, Request::QueryType);
        let mut back = Vec::new();
        let reply = Reply::QueryType {
            daemon: DaemonType::Lockdown,
            restore_protocol_version: None,
        };
        device.encode_reply(&reply, &mut back).unwrap();
        host.receive(&back);
        let got = host.poll_reply().unwrap().unwrap();
        assert_eq!(check_reply("QueryType", got).unwrap(), reply);
        assert_eq!(host.pending(), None);
    }

    #[test]
    fn check_reply_rules() {
        assert!(matches!(
            check_reply("GetValue", Reply::ack("SetValue")),
            Err(Error::Mismatch { found: Some(f), .. }) if f == "SetValue"
        ));
        assert!(matches!(
            check_reply(
                "GetValue",
                Reply::Generic {
                    request: None,
                    result: None,
                    fields: Default::default()
                }
            ),
            Err(Error::Mismatch { found: None, .. })
        ));
        assert!(matches!(
            check_reply(
                "StartService",
                Reply::error("StartService", ErrorKind::InvalidService)
            ),
            Err(Error::Device {
                kind: ErrorKind::InvalidService,
                ..
            })
        ));
        assert!(matches!(
            check_reply(
                "StartService",
                Reply::error("GetValue", ErrorKind::InvalidService)
            ),
            Err(Error::Mismatch { .. })
        ));
        assert!(matches!(
            check_reply(
                "Goodbye",
                Reply::Generic {
                    request: Some("Goodbye".into()),
                    result: Some(Outcome::Failure),
                    fields: Default::default()
                }
            ),
            Err(Error::Failed { .. })
        ));
        check_reply("Goodbye", Reply::ack("Goodbye")).unwrap();
    }

    #[test]
    fn start_restore_expects_no_reply() {
        let mut host = HostCodec::new();
        let mut wire = Vec::new();
        host.encode_request(
            &Request::StartRestore {
                restore_protocol_version: Some(15),
                restore_options: None,
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(host.pending(), None);
    }
}
