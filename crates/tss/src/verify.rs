//! The device's side of personalization: what a phone checks before it boots an image.
//!
//! [`TicketCheck`] verifies, in the order a boot ROM does: the ticket's signature (with the
//! signing authority's public key), that it names this device (`ECID`, and `CHIP`/`BORD` when
//! known), that it is bound to the device's *current* ApNonce (`BNCH`), and that the image's
//! digest (SHA-384, SHA-256 or SHA-1, from the length of the ticket's `DGST`) over the IM4P
//! as shipped equals the `DGST` the ticket lists for the image's tag.
//!
//! [`image_check`] adapts it to the virtual phone's hook ([`sim::check::ImageCheck`]), so a
//! phone in the simulator refuses a wrong nonce or digest as a real one would.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use sim::check::{ImageContext, ImageKind, Verdict};
use sim::profile::DfuStage;
use thiserror::Error;

use crate::img4::{self, FourCc, Im4m, Img4, Img4Error};

/// The public key tickets are verified with (ECDSA P-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl From<VerifyingKey> for PublicKey {
    fn from(k: VerifyingKey) -> PublicKey {
        PublicKey(k)
    }
}

impl PublicKey {
    /// From SEC1 bytes (compressed or uncompressed point).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<PublicKey, Refusal> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| Refusal::BadKey)
    }

    /// Uncompressed SEC1 bytes.
    pub fn to_sec1_bytes(&self) -> Vec<u8> {
        self.0.to_encoded_point(false).as_bytes().to_vec()
    }
}

/// Why an image is refused.
#[derive(Debug, Error)]
pub enum Refusal {
    /// The image or ticket does not decode.
    #[error("not a valid IMG4/IM4M: {0}")]
    Malformed(#[from] Img4Error),
    /// The public key bytes are not a P-256 point.
    #[error("public key is not a P-256 point")]
    BadKey,
    /// The signature does not verify with the key.
    #[error("ticket signature does not verify")]
    BadSignature,
    /// The ticket is for another device.
    #[error("ticket is for ECID {ticket:?}, this device is {device:#x}")]
    WrongEcid {
        /// The ticket's ECID.
        ticket: Option<u64>,
        /// The device's.
        device: u64,
    },
    /// The ticket is for another chip or board.
    #[error("ticket is for CHIP {ticket_chip:?} BORD {ticket_board:?}, this device is CPID {chip:#x} BDID {board:#x}")]
    WrongBoard {
        /// The ticket's CHIP.
        ticket_chip: Option<u64>,
        /// The ticket's BORD.
        ticket_board: Option<u64>,
        /// The device's.
        chip: u32,
        /// The device's.
        board: u32,
    },
    /// The ticket is bound to another ApNonce.
    #[error("ticket nonce {ticket} is not the device's current ApNonce {device}")]
    WrongNonce {
        /// Hex of the ticket's BNCH (or "none").
        ticket: String,
        /// Hex of the device's ApNonce.
        device: String,
    },
    /// The ticket lists no digest for this image.
    #[error("ticket does not cover image {tag:?}")]
    NotInTicket {
        /// The image tag.
        tag: String,
    },
    /// The ticket's digest is not 20, 32 or 48 bytes.
    #[error("ticket digest for {tag:?} has {len} bytes")]
    DigestLength {
        /// The image tag.
        tag: String,
        /// Its length.
        len: usize,
    },
    /// The image is not the one the ticket signed.
    #[error("{algorithm} of image {tag:?} does not match the ticket")]
    WrongDigest {
        /// The image tag.
        tag: String,
        /// The algorithm used.
        algorithm: ipsw::Algorithm,
    },
}

/// What the device knows about itself when it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState<'a> {
    /// Its ECID.
    pub ecid: u64,
    /// The ApNonce it advertises now.
    pub ap_nonce: &'a [u8],
    /// Its CPID and BDID, when checked.
    pub chip_board: Option<(u32, u32)>,
}

/// The checks a phone makes on a personalized image.
#[derive(Debug, Clone, Copy)]
pub struct TicketCheck {
    key: PublicKey,
}

impl TicketCheck {
    /// A checker trusting `key`.
    pub fn new(key: PublicKey) -> TicketCheck {
        TicketCheck { key }
    }

    /// Signature, device and nonce of a decoded ticket.
    pub fn check_ticket(&self, ticket: &Im4m, device: &DeviceState<'_>) -> Result<(), Refusal> {
        let sig = Signature::from_der(&ticket.signature).map_err(|_| Refusal::BadSignature)?;
        self.key
            .0
            .verify(ticket.signed_bytes(), &sig)
            .map_err(|_| Refusal::BadSignature)?;
        let body = &ticket.body;
        if body.ecid() != Some(device.ecid) {
            return Err(Refusal::WrongEcid {
                ticket: body.ecid(),
                device: device.ecid,
            });
        }
        if let Some((chip, board)) = device.chip_board {
            if body.chip_id() != Some(u64::from(chip)) || body.board_id() != Some(u64::from(board))
            {
                return Err(Refusal::WrongBoard {
                    ticket_chip: body.chip_id(),
                    ticket_board: body.board_id(),
                    chip,
                    board,
                });
            }
        }
        if body.ap_nonce() != Some(device.ap_nonce) {
            return Err(Refusal::WrongNonce {
                ticket: body.ap_nonce().map_or("none".into(), hex::encode),
                device: hex::encode(device.ap_nonce),
            });
        }
        Ok(())
    }

    /// The image digest against the ticket's entry for `tag`.
    pub fn check_digest(&self, ticket: &Im4m, tag: FourCc, im4p: &[u8]) -> Result<(), Refusal> {
        let want = ticket
            .body
            .digest(tag)
            .ok_or_else(|| Refusal::NotInTicket {
                tag: img4::show(tag),
            })?;
        let algorithm =
            ipsw::Algorithm::from_len(want.len()).ok_or_else(|| Refusal::DigestLength {
                tag: img4::show(tag),
                len: want.len(),
            })?;
        if algorithm.digest(im4p).as_bytes() != want {
            return Err(Refusal::WrongDigest {
                tag: img4::show(tag),
                algorithm,
            });
        }
        Ok(())
    }

    /// A whole IMG4: ticket checks, then the IM4P's digest under `tag` (the IM4P's own type
    /// when `None`).
    pub fn check_img4(
        &self,
        img4: &[u8],
        device: &DeviceState<'_>,
        tag: Option<FourCc>,
    ) -> Result<(), Refusal> {
        let img = Img4::decode(img4)?;
        self.check_ticket(&img.im4m, device)?;
        match tag {
            Some(t) => self.check_digest(&img.im4m, t, &img.im4p),
            None => {
                let p = img.payload()?;
                let own = img4::fourcc(&p.kind).ok_or_else(|| Refusal::NotInTicket {
                    tag: p.kind.chars().take(16).collect(),
                })?;
                let under_own = self.check_digest(&img.im4m, own, &img.im4p);
                // An image loaded by its own type (`firmware`, restore-mode data) may share
                // its type with another component (both trust caches are `trst`, several
                // RTKit firmwares one `rkos` file): the phone boots it when the ticket lists
                // its exact digest.
                if under_own.is_err() && covers(&img.im4m, &img.im4p) {
                    return Ok(());
                }
                under_own
            }
        }
    }

    /// A bare ticket and the IM4P it should cover.
    pub fn check_parts(
        &self,
        ticket: &[u8],
        im4p: &[u8],
        device: &DeviceState<'_>,
        tag: FourCc,
    ) -> Result<(), Refusal> {
        let m = Im4m::decode(ticket)?;
        self.check_ticket(&m, device)?;
        self.check_digest(&m, tag, im4p)
    }
}

/// Whether any image entry of `ticket` lists the digest of `im4p`.
fn covers(ticket: &Im4m, im4p: &[u8]) -> bool {
    ticket.body.images.values().any(|props| {
        props
            .get(b"DGST")
            .and_then(img4::Value::as_data)
            .is_some_and(|want| {
                ipsw::Algorithm::from_len(want.len())
                    .is_some_and(|a| a.digest(im4p).as_bytes() == want)
            })
    })
}

/// The IM4M tag a phone expects for an image arriving this way, when it is fixed:
/// SecureROM DFU boots iBSS, iBSS-served DFU boots iBEC, and recovery's `ramdisk`,
/// `devicetree`, `rsepfirmware`, `bootx` load the restore variants. `go`, `firmware` and
/// restore-mode data take the IM4P's own type.
pub fn expected_tag(kind: ImageKind) -> Option<FourCc> {
    match kind {
        ImageKind::Dfu(DfuStage::SecureRom | DfuStage::Port) => Some(*b"ibss"),
        ImageKind::Dfu(DfuStage::Ibss) => Some(*b"ibec"),
        ImageKind::Recovery("ramdisk") => Some(*b"rdsk"),
        ImageKind::Recovery("devicetree") => Some(*b"rdtr"),
        ImageKind::Recovery("rsepfirmware") => Some(*b"rsep"),
        ImageKind::Recovery("bootx") => Some(*b"rkrn"),
        _ => None,
    }
}

/// The verdict of [`TicketCheck`] on one image the virtual phone received.
///
/// DFU and recovery images must be IMG4s that pass every check. Restore-mode data is checked
/// when it is an IMG4 (or, for `RootTicket`, an IM4M: signature, ECID, board and nonce);
/// other restore-mode data (NOR blobs, the OS image) is accepted, as the sim does not model
/// their own signatures.
pub fn verdict(check: &TicketCheck, image: &ImageContext<'_>) -> Verdict {
    let device = DeviceState {
        ecid: image.ecid,
        ap_nonce: image.ap_nonce,
        chip_board: Some((image.chip_id, image.board_id)),
    };
    let result = match image.kind {
        ImageKind::Dfu(_) | ImageKind::Recovery(_) => {
            check.check_img4(image.data, &device, expected_tag(image.kind))
        }
        ImageKind::Restore("RootTicket") => Im4m::decode(image.data)
            .map_err(Refusal::from)
            .and_then(|m| check.check_ticket(&m, &device)),
        ImageKind::Restore(_) => match Img4::decode(image.data) {
            Ok(_) => check.check_img4(image.data, &device, None),
            Err(_) => Ok(()),
        },
    };
    match result {
        Ok(()) => Verdict::Accept,
        Err(why) => Verdict::Refuse(why.to_string()),
    }
}

/// The personalization check for a virtual phone trusting `key`:
/// `phone.set_image_check(Box::new(tss::verify::image_check(standin.public_key())))`.
pub fn image_check(key: PublicKey) -> impl Fn(&ImageContext<'_>) -> Verdict + Send + 'static {
    let check = TicketCheck::new(key);
    move |image: &ImageContext<'_>| verdict(&check, image)
}

impl sim::check::ImageCheck for TicketCheck {
    fn check(&self, image: &ImageContext<'_>) -> Verdict {
        verdict(self, image)
    }
}
