//! The personalization hook: what a phone does with an image before it boots it.
//!
//! A real phone boots only images whose ticket binds its ECID and current ApNonce. The
//! personalization work plugs its check in here; until then the default, [`AcceptAll`], boots
//! anything that arrives intact (the DFU suffix CRC is checked by the DFU mode itself).

use crate::profile::DfuStage;

/// How the image reached the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A DFU download to this stage (SecureROM: iBSS; iBSS-served DFU: iBEC).
    Dfu(DfuStage),
    /// A recovery-mode upload consumed by this command (`go`, `ramdisk`, `bootx`, ...).
    Recovery(&'static str),
    /// Data restored asked for with a `DataRequestMsg` (`RootTicket`, `KernelCache`, ...),
    /// or the OS image that came over ASR (`SystemImageData`, recorded, not checked).
    Restore(&'static str),
}

/// What the check sees.
#[derive(Debug, Clone, Copy)]
pub struct ImageContext<'a> {
    /// How it came.
    pub kind: ImageKind,
    /// The image, without the DFU suffix.
    pub data: &'a [u8],
    /// The phone's ECID.
    pub ecid: u64,
    /// `CPID`.
    pub chip_id: u32,
    /// `BDID`.
    pub board_id: u32,
    /// The ApNonce the phone advertises now.
    pub ap_nonce: &'a [u8],
    /// The SepNonce, if the chip has a SEP.
    pub sep_nonce: Option<&'a [u8]>,
}

/// The verdict on an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Boot it.
    Accept,
    /// Do not boot it; the reason is kept in the phone's record.
    Refuse(String),
}

/// A check run on every image before the phone boots or loads it.
pub trait ImageCheck: Send {
    /// Accept or refuse `image`.
    fn check(&self, image: &ImageContext<'_>) -> Verdict;
}

/// Accepts every image.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl ImageCheck for AcceptAll {
    fn check(&self, _: &ImageContext<'_>) -> Verdict {
        Verdict::Accept
    }
}

impl<F> ImageCheck for F
where
    F: Fn(&ImageContext<'_>) -> Verdict + Send,
{
    fn check(&self, image: &ImageContext<'_>) -> Verdict {
        self(image)
    }
}
