//! The synthesizer's one table: which devices it can make an IPSW for, and what the firmware of
//! that generation looked like (component set, digest algorithm). Public facts (chip and board
//! ids, board configs), not copied from any real manifest.

use crate::digest::Algorithm;

/// The shape of a generation's BuildManifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// A8/A9 on iOS 8–9: SHA-1 digests, no OS digest, no IsLoadedByiBoot flags.
    Sha1Img4,
    /// A10/A11 on iOS 11–13: SHA-384, AOP, trust caches, IsLoadedByiBoot.
    A10,
    /// A14/A15 on iOS 15: SHA-384 (SHA-256 for some coprocessor maps), many RTKit
    /// firmwares, IsLoadedByiBootStage1, a Rose ftab shared by two components.
    A15,
}

/// One device the synthesizer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// e.g. `iPhone14,3`.
    pub product_type: &'static str,
    /// Board config, the BuildIdentity's DeviceClass, e.g. `d64ap`.
    pub board_config: &'static str,
    /// Short board name used in firmware file names, e.g. `d64`.
    pub board: &'static str,
    /// Platform, e.g. `t8110`.
    pub platform: &'static str,
    /// ApChipID.
    pub cpid: u32,
    /// ApBoardID.
    pub bdid: u32,
    /// iOS version the synthetic build claims.
    pub product_version: &'static str,
    /// Build number the synthetic build claims.
    pub build: &'static str,
    /// Digest algorithm of the era's im4p components.
    pub algorithm: Algorithm,
    /// Manifest shape.
    pub era: Era,
}

/// Every profile, one line each.
pub const PROFILES: &[Profile] = &[
    p(
        "iPhone7,2",
        "n61ap",
        "n61",
        "t7000",
        0x7000,
        0x06,
        "8.4.1",
        "12H321",
        Algorithm::Sha1,
        Era::Sha1Img4,
    ),
    p(
        "iPhone7,1",
        "n56ap",
        "n56",
        "t7000",
        0x7000,
        0x04,
        "8.4.1",
        "12H321",
        Algorithm::Sha1,
        Era::Sha1Img4,
    ),
    p(
        "iPhone8,1",
        "n71ap",
        "n71",
        "s8000",
        0x8000,
        0x04,
        "9.3.5",
        "13G36",
        Algorithm::Sha1,
        Era::Sha1Img4,
    ),
    p(
        "iPhone9,1",
        "d10ap",
        "d10",
        "t8010",
        0x8010,
        0x08,
        "13.5.1",
        "17F80",
        Algorithm::Sha384,
        Era::A10,
    ),
    p(
        "iPhone10,3",
        "d22ap",
        "d22",
        "t8015",
        0x8015,
        0x06,
        "11.2",
        "15C114",
        Algorithm::Sha384,
        Era::A10,
    ),
    p(
        "iPhone10,6",
        "d221ap",
        "d221",
        "t8015",
        0x8015,
        0x0E,
        "11.2",
        "15C114",
        Algorithm::Sha384,
        Era::A10,
    ),
    p(
        "iPhone13,2",
        "d53gap",
        "d53g",
        "t8101",
        0x8101,
        0x0C,
        "15.4.1",
        "19E258",
        Algorithm::Sha384,
        Era::A15,
    ),
    p(
        "iPhone14,3",
        "d64ap",
        "d64",
        "t8110",
        0x8110,
        0x0E,
        "15.4.1",
        "19E258",
        Algorithm::Sha384,
        Era::A15,
    ),
    p(
        "iPhone14,5",
        "d17ap",
        "d17",
        "t8110",
        0x8110,
        0x0A,
        "15.4.1",
        "19E258",
        Algorithm::Sha384,
        Era::A15,
    ),
];

#[allow(clippy::too_many_arguments)]
const fn p(
    product_type: &'static str,
    board_config: &'static str,
    board: &'static str,
    platform: &'static str,
    cpid: u32,
    bdid: u32,
    product_version: &'static str,
    build: &'static str,
    algorithm: Algorithm,
    era: Era,
) -> Profile {
    Profile {
        product_type,
        board_config,
        board,
        platform,
        cpid,
        bdid,
        product_version,
        build,
        algorithm,
        era,
    }
}

/// The profile for a product type (`iPhone14,3`), case-insensitive.
pub fn profile(product_type: &str) -> Option<&'static Profile> {
    PROFILES
        .iter()
        .find(|p| p.product_type.eq_ignore_ascii_case(product_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, p) in PROFILES.iter().enumerate() {
            assert!(p.board_config.starts_with(p.board) && p.board_config.ends_with("ap"));
            assert_eq!(
                p.algorithm == Algorithm::Sha1,
                p.era == Era::Sha1Img4,
                "{}",
                p.product_type
            );
            assert!(PROFILES[..i]
                .iter()
                .all(|q| q.product_type != p.product_type));
            assert!(PROFILES[..i]
                .iter()
                .all(|q| (q.cpid, q.bdid) != (p.cpid, p.bdid)));
        }
        assert_eq!(
            profile("iphone14,3").map(|p| (p.cpid, p.bdid)),
            Some((0x8110, 0x0E))
        );
        assert_eq!(
            profile("iPhone7,2").map(|p| p.algorithm),
            Some(Algorithm::Sha1)
        );
        assert!(profile("iPad1,1").is_none());
    }
}
