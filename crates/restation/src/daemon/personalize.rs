//! Personalization of a restore job: the TSS ticket for one phone and one build identity,
//! asked for when the first image needs it, asked for again when the phone shows a new
//! ApNonce, and every image the phone boots stitched into an IMG4 with it.
//!
//! The signing server is behind [`Tickets`]: Apple's (or a configured URL) through
//! [`tss::Client`] for real phones, the loopback [`tss::standin`] for the virtual bench, whose
//! phones check each image as a real one does (signature, ECID, current ApNonce, digest).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipsw::manifest::BuildIdentity;
use restore::plan::Plan;
use tss::img4::Img4;
use tss::request::{Device, Request};
use tss::response::Ticket;
use tss::TssError;

use super::jobs::Personalization;
use super::restoring::{Personalize, PersonalizeError};

/// Where tickets come from (blocking: a job runs on a thread of its own).
pub trait Tickets: Send + Sync {
    /// Asks the signing server for a ticket.
    fn ticket(&self, request: &Request) -> Result<Ticket, TssError>;
}

/// A [`tss::Client`] driven from a job's thread on the daemon's runtime.
pub struct ClientTickets<C> {
    client: tss::Client<C>,
    runtime: tokio::runtime::Handle,
}

impl<C> ClientTickets<C> {
    /// Tickets from `client`, its requests run on `runtime`.
    pub fn new(client: tss::Client<C>, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }
}

impl<C: tss::client::Connector + 'static> Tickets for ClientTickets<C> {
    fn ticket(&self, request: &Request) -> Result<Ticket, TssError> {
        self.runtime.block_on(self.client.request(request))
    }
}

/// Personalization through a signing server: each job gets a [`TssPersonalize`].
pub struct Tss {
    tickets: Arc<dyn Tickets>,
    requested: Arc<AtomicU64>,
}

impl Tss {
    /// Personalization with tickets from `tickets`.
    pub fn new(tickets: Arc<dyn Tickets>) -> Self {
        Self {
            tickets,
            requested: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Tickets asked for so far, over every job.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }
}

impl Personalization for Tss {
    fn for_plan(&self, plan: &Plan) -> Result<Box<dyn Personalize + Send>, String> {
        Ok(Box::new(TssPersonalize {
            identity: plan.identity.clone(),
            ecid: plan.target.ecid,
            chip_id: plan.target.chip_id,
            board_id: plan.target.board_id,
            tickets: Arc::clone(&self.tickets),
            requested: Arc::clone(&self.requested),
            device: None,
            ticket: None,
        }))
    }
}

/// Two signing servers side by side: the virtual bench's phones (known by ECID) trust only
/// the stand-in, real phones need Apple's (or the configured) server.
pub struct ByEcid {
    ecids: std::collections::HashSet<u64>,
    listed: Arc<dyn Personalization>,
    others: Arc<dyn Personalization>,
}

impl ByEcid {
    /// `listed` for the phones in `ecids`, `others` for the rest.
    pub fn new(
        ecids: std::collections::HashSet<u64>,
        listed: Arc<dyn Personalization>,
        others: Arc<dyn Personalization>,
    ) -> Self {
        Self {
            ecids,
            listed,
            others,
        }
    }
}

impl Personalization for ByEcid {
    fn for_plan(&self, plan: &Plan) -> Result<Box<dyn Personalize + Send>, String> {
        if self.ecids.contains(&plan.target.ecid) {
            self.listed.for_plan(plan)
        } else {
            self.others.for_plan(plan)
        }
    }
}

/// One job's personalization: the phone as last seen, and the ticket for its nonce.
pub struct TssPersonalize {
    identity: BuildIdentity,
    ecid: u64,
    chip_id: u32,
    board_id: u32,
    tickets: Arc<dyn Tickets>,
    requested: Arc<AtomicU64>,
    device: Option<Device>,
    /// The ticket and the ApNonce it was issued for.
    ticket: Option<(Vec<u8>, Vec<u8>)>,
}

impl TssPersonalize {
    /// The IM4M for the phone's current ApNonce, asked for if the one in hand is for another.
    fn current_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        let device = self.device.as_ref().ok_or(PersonalizeError::NoNonce)?;
        if let Some((nonce, ticket)) = &self.ticket {
            if *nonce == device.ap_nonce {
                return Ok(ticket.clone());
            }
        }
        let request = Request::for_identity(device, &self.identity)?;
        self.requested.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            ecid = %irecv::serial::format_ecid(device.ecid),
            ap_nonce = %hex::encode(&device.ap_nonce),
            components = request.components.len(),
            "asking for a ticket"
        );
        let ticket = self.tickets.ticket(&request)?;
        self.ticket = Some((device.ap_nonce.clone(), ticket.ap_img4_ticket.clone()));
        Ok(ticket.ap_img4_ticket)
    }
}

impl Personalize for TssPersonalize {
    fn observe(
        &mut self,
        serial: &irecv::serial::SerialInfo,
        nonces: &irecv::serial::Nonces,
    ) -> Result<(), PersonalizeError> {
        let ap_nonce = nonces
            .ap_nonce
            .clone()
            .ok_or(PersonalizeError::MissingField("NONC (ApNonce)"))?;
        let production_mode = serial
            .production_mode()
            .ok_or(PersonalizeError::MissingField(
                "CPFM/IBFL (production mode)",
            ))?;
        let security_mode = serial
            .security_mode()
            .ok_or(PersonalizeError::MissingField("CPFM/IBFL (security mode)"))?;
        if let Some(old) = &self.device {
            if old.ap_nonce != ap_nonce {
                tracing::info!(
                    ecid = %irecv::serial::format_ecid(self.ecid),
                    "the phone shows a new ApNonce: the next image needs a new ticket"
                );
            }
        }
        self.device = Some(Device {
            ecid: serial.ecid.unwrap_or(self.ecid),
            ap_nonce,
            sep_nonce: nonces.sep_nonce.clone(),
            chip_id: serial.cpid.unwrap_or(self.chip_id),
            board_id: serial.bdid.unwrap_or(self.board_id),
            security_domain: serial.sdom.unwrap_or(1),
            production_mode,
            security_mode,
        });
        Ok(())
    }

    fn component(&mut self, name: &str, im4p: Vec<u8>) -> Result<Vec<u8>, PersonalizeError> {
        // The phone checks the image against the ticket's digest, which is the manifest's:
        // an image that differs would be refused on the phone after the whole upload.
        if let Some(c) = self.identity.component(name) {
            if let (true, Some(expected)) = (c.has_member_digest(), &c.digest) {
                let got = expected.algorithm().digest(&im4p);
                if got != *expected {
                    return Err(PersonalizeError::Digest {
                        component: name.to_string(),
                        expected: expected.to_hex(),
                        got: got.to_hex(),
                    });
                }
            }
        }
        let ticket = self.current_ticket()?;
        let img4 =
            Img4::stitch(&im4p, &ticket, None).map_err(|source| PersonalizeError::Stitch {
                component: name.to_string(),
                source: Box::new(source),
            })?;
        Ok(img4.encode())
    }

    fn root_ticket(&mut self) -> Result<Vec<u8>, PersonalizeError> {
        self.current_ticket()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The stand-in's signer without HTTP, recording every request.
    struct Local {
        signer: tss::standin::Signer,
        seen: Mutex<Vec<Request>>,
        refuse: Option<(u32, String)>,
    }

    impl Tickets for Local {
        fn ticket(&self, request: &Request) -> Result<Ticket, TssError> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(request.clone());
            }
            if let Some((status, message)) = &self.refuse {
                return Err(TssError::Refused {
                    status: *status,
                    message: message.clone(),
                });
            }
            Ok(Ticket::new(self.signer.ticket(request).encode()))
        }
    }

    fn identity_and_image() -> (BuildIdentity, Vec<u8>) {
        let im4p = ipsw::Im4p::new("ibss", "iBoot-test", vec![0x5A; 2048]).encode();
        let digest = ipsw::Algorithm::Sha384.digest(&im4p);
        let identity = BuildIdentity {
            ap_chip_id: 0x8110,
            ap_board_id: 0x0E,
            ap_security_domain: 1,
            unique_build_id: Some(vec![0xAB; 20]),
            info: ipsw::manifest::IdentityInfo {
                device_class: "d63ap".into(),
                restore_behavior: ipsw::manifest::RestoreBehavior::Erase,
                variant: "Customer Erase Install (IPSW)".into(),
                build_number: None,
                build_train: None,
                fdr_support: None,
                minimum_system_partition: None,
            },
            components: vec![ipsw::manifest::Component {
                name: "iBSS".into(),
                digest: Some(digest),
                path: Some("Firmware/dfu/iBSS.im4p".into()),
                is_loaded_by_iboot: false,
                is_loaded_by_iboot_stage1: false,
                is_firmware_payload: false,
                is_fud_firmware: false,
                trusted: true,
                personalize: None,
                hash_method: None,
                img4_payload_type: None,
            }],
        };
        (identity, im4p)
    }

    fn serial() -> irecv::serial::SerialInfo {
        irecv::serial::SerialInfo::parse(
            "SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:001234567890ABCD IBFL:3C",
        )
        .unwrap()
    }

    fn nonces(byte: u8) -> irecv::serial::Nonces {
        irecv::serial::Nonces {
            ap_nonce: Some(vec![byte; 32]),
            sep_nonce: Some(vec![0x22; 20]),
        }
    }

    fn personalize(local: Arc<Local>, identity: BuildIdentity) -> TssPersonalize {
        TssPersonalize {
            identity,
            ecid: 0x0012_3456_7890_ABCD,
            chip_id: 0x8110,
            board_id: 0x0E,
            tickets: local,
            requested: Arc::new(AtomicU64::new(0)),
            device: None,
            ticket: None,
        }
    }

    #[test]
    fn one_ticket_per_nonce_and_images_the_phone_accepts() {
        let local = Arc::new(Local {
            signer: tss::standin::Signer::from_seed(b"unit"),
            seen: Mutex::new(Vec::new()),
            refuse: None,
        });
        let (identity, im4p) = identity_and_image();
        let mut p = personalize(Arc::clone(&local), identity);
        assert!(matches!(
            p.component("iBSS", im4p.clone()),
            Err(PersonalizeError::NoNonce)
        ));
        p.observe(&serial(), &nonces(0x11)).unwrap();
        let first = p.component("iBSS", im4p.clone()).unwrap();
        let again = p.component("iBSS", im4p.clone()).unwrap();
        assert_eq!(first, again);
        assert_eq!(local.seen.lock().unwrap().len(), 1, "the ticket is reused");

        let check = tss::TicketCheck::new(local.signer.public_key());
        let phone = tss::verify::DeviceState {
            ecid: 0x0012_3456_7890_ABCD,
            ap_nonce: &[0x11; 32],
            chip_board: Some((0x8110, 0x0E)),
        };
        check.check_img4(&first, &phone, Some(*b"ibss")).unwrap();

        // A new nonce: a new ticket, and only the new image passes the phone's check.
        p.observe(&serial(), &nonces(0x33)).unwrap();
        let rolled = p.component("iBSS", im4p).unwrap();
        assert_eq!(local.seen.lock().unwrap().len(), 2);
        let phone_now = tss::verify::DeviceState {
            ap_nonce: &[0x33; 32],
            ..phone
        };
        assert!(check
            .check_img4(&first, &phone_now, Some(*b"ibss"))
            .is_err());
        check
            .check_img4(&rolled, &phone_now, Some(*b"ibss"))
            .unwrap();
        assert_eq!(
            local.seen.lock().unwrap()[1].device.ap_nonce,
            vec![0x33; 32]
        );
    }

    #[test]
    fn an_altered_image_is_refused_before_it_is_sent() {
        let local = Arc::new(Local {
            signer: tss::standin::Signer::from_seed(b"unit"),
            seen: Mutex::new(Vec::new()),
            refuse: None,
        });
        let (identity, mut im4p) = identity_and_image();
        let last = im4p.len() - 1;
        im4p[last] ^= 0xFF;
        let mut p = personalize(Arc::clone(&local), identity);
        p.observe(&serial(), &nonces(0x11)).unwrap();
        let err = p.component("iBSS", im4p).unwrap_err();
        assert!(matches!(err, PersonalizeError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("re-stage"), "{err}");
        assert!(local.seen.lock().unwrap().is_empty(), "no ticket asked for");
    }

    #[test]
    fn an_unsigned_build_is_a_typed_refusal() {
        let local = Arc::new(Local {
            signer: tss::standin::Signer::from_seed(b"unit"),
            seen: Mutex::new(Vec::new()),
            refuse: Some((
                94,
                "This device isn't eligible for the requested build.".into(),
            )),
        });
        let (identity, im4p) = identity_and_image();
        let mut p = personalize(local, identity);
        p.observe(&serial(), &nonces(0x11)).unwrap();
        match p.component("iBSS", im4p) {
            Err(PersonalizeError::Tss(e)) => assert!(e.is_unsigned_build(), "{e}"),
            other => panic!("expected a TSS refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_serial_without_fuses_is_named() {
        let local = Arc::new(Local {
            signer: tss::standin::Signer::from_seed(b"unit"),
            seen: Mutex::new(Vec::new()),
            refuse: None,
        });
        let (identity, _) = identity_and_image();
        let mut p = personalize(local, identity);
        let bare =
            irecv::serial::SerialInfo::parse("CPID:8110 BDID:0E ECID:001234567890ABCD").unwrap();
        let err = p.observe(&bare, &nonces(0x11)).unwrap_err();
        assert!(err.to_string().contains("production mode"), "{err}");
    }
}
