//! The device table: which product a (chip id, board id) pair is.
//!
//! In recovery and DFU a phone only says `CPID` and `BDID`; lockdown in normal mode says
//! `ProductType`; a BuildManifest says `DeviceClass` (the board config). This table joins them,
//! with the marketing name a technician reads on the bench screen. It is the project's own
//! table, in one place, as data.
//!
//! - A (chip id, board id) pair names at most one row: [`by_chip_board`].
//! - A product type can have several rows: Apple shipped some models with two chips
//!   (`iPhone8,1` is `n71ap` on 0x8000 and `n71map` on 0x8003), so [`by_product_type`] yields
//!   every row.
//! - A board config names one row: [`by_board_config`] (case-insensitive, `D101AP` = `d101ap`).

use serde::Serialize;

/// One row of the device table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Device {
    /// Product type, as lockdown says it (`iPhone9,3`).
    pub product_type: &'static str,
    /// Board config, lower case (`d101ap`); BuildManifest's `DeviceClass`.
    pub board_config: &'static str,
    /// `BDID` in the iBoot serial (`ApBoardID`).
    pub board_id: u32,
    /// `CPID` in the iBoot serial (`ApChipID`).
    pub chip_id: u32,
    /// Marketing name.
    pub name: &'static str,
}

/// Which kind of product a row is, from its product type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    /// iPhone.
    IPhone,
    /// iPad.
    IPad,
    /// iPod touch.
    IPod,
    /// Apple TV.
    AppleTv,
    /// Apple Watch.
    Watch,
    /// HomePod (`AudioAccessory`).
    HomePod,
    /// Apple Vision Pro (`RealityDevice`).
    Vision,
    /// Studio Display (`AppleDisplay`).
    Display,
    /// Apple-silicon Mac, developer kit or virtual Mac.
    Mac,
    /// T2 bridge chip of an Intel Mac (`iBridge`).
    T2,
    /// Anything else.
    Other,
}

impl Device {
    /// The kind of product this row is.
    pub fn family(&self) -> Family {
        let prefix = self
            .product_type
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == ',');
        match prefix {
            "iPhone" => Family::IPhone,
            "iPad" => Family::IPad,
            "iPod" => Family::IPod,
            "AppleTV" => Family::AppleTv,
            "Watch" => Family::Watch,
            "AudioAccessory" => Family::HomePod,
            "RealityDevice" => Family::Vision,
            "AppleDisplay" => Family::Display,
            "Mac" | "Macmini" | "MacBookPro" | "MacBookAir" | "iMac" | "ADP" | "VirtualMac" => {
                Family::Mac
            }
            "iBridge" => Family::T2,
            _ => Family::Other,
        }
    }
}

const fn d(
    product_type: &'static str,
    board_config: &'static str,
    board_id: u32,
    chip_id: u32,
    name: &'static str,
) -> Device {
    Device {
        product_type,
        board_config,
        board_id,
        chip_id,
        name,
    }
}

/// Every device the project knows, grouped by family, oldest first.
pub static DEVICES: &[Device] = &[
    // ---- iPhone ------------------------------------------------------------------------------
    d("iPhone1,1", "m68ap", 0x00, 0x8900, "iPhone 2G"),
    d("iPhone1,2", "n82ap", 0x04, 0x8900, "iPhone 3G"),
    d("iPhone2,1", "n88ap", 0x00, 0x8920, "iPhone 3Gs"),
    d("iPhone3,1", "n90ap", 0x00, 0x8930, "iPhone 4 (GSM)"),
    d(
        "iPhone3,2",
        "n90bap",
        0x04,
        0x8930,
        "iPhone 4 (GSM) R2 2012",
    ),
    d("iPhone3,3", "n92ap", 0x06, 0x8930, "iPhone 4 (CDMA)"),
    d("iPhone4,1", "n94ap", 0x08, 0x8940, "iPhone 4s"),
    d("iPhone5,1", "n41ap", 0x00, 0x8950, "iPhone 5 (GSM)"),
    d("iPhone5,2", "n42ap", 0x02, 0x8950, "iPhone 5 (Global)"),
    d("iPhone5,3", "n48ap", 0x0A, 0x8950, "iPhone 5c (GSM)"),
    d("iPhone5,4", "n49ap", 0x0E, 0x8950, "iPhone 5c (Global)"),
    d("iPhone6,1", "n51ap", 0x00, 0x8960, "iPhone 5s (GSM)"),
    d("iPhone6,2", "n53ap", 0x02, 0x8960, "iPhone 5s (Global)"),
    d("iPhone7,1", "n56ap", 0x04, 0x7000, "iPhone 6 Plus"),
    d("iPhone7,2", "n61ap", 0x06, 0x7000, "iPhone 6"),
    d("iPhone8,1", "n71ap", 0x04, 0x8000, "iPhone 6s"),
    d("iPhone8,1", "n71map", 0x04, 0x8003, "iPhone 6s"),
    d("iPhone8,2", "n66ap", 0x06, 0x8000, "iPhone 6s Plus"),
    d("iPhone8,2", "n66map", 0x06, 0x8003, "iPhone 6s Plus"),
    d("iPhone8,4", "n69ap", 0x02, 0x8003, "iPhone SE (1st gen)"),
    d("iPhone8,4", "n69uap", 0x02, 0x8000, "iPhone SE (1st gen)"),
    d("iPhone9,1", "d10ap", 0x08, 0x8010, "iPhone 7 (Global)"),
    d("iPhone9,2", "d11ap", 0x0A, 0x8010, "iPhone 7 Plus (Global)"),
    d("iPhone9,3", "d101ap", 0x0C, 0x8010, "iPhone 7 (GSM)"),
    d("iPhone9,4", "d111ap", 0x0E, 0x8010, "iPhone 7 Plus (GSM)"),
    d("iPhone10,1", "d20ap", 0x02, 0x8015, "iPhone 8 (Global)"),
    d(
        "iPhone10,2",
        "d21ap",
        0x04,
        0x8015,
        "iPhone 8 Plus (Global)",
    ),
    d("iPhone10,3", "d22ap", 0x06, 0x8015, "iPhone X (Global)"),
    d("iPhone10,4", "d201ap", 0x0A, 0x8015, "iPhone 8 (GSM)"),
    d("iPhone10,5", "d211ap", 0x0C, 0x8015, "iPhone 8 Plus (GSM)"),
    d("iPhone10,6", "d221ap", 0x0E, 0x8015, "iPhone X (GSM)"),
    d("iPhone11,2", "d321ap", 0x0E, 0x8020, "iPhone XS"),
    d(
        "iPhone11,4",
        "d331ap",
        0x0A,
        0x8020,
        "iPhone XS Max (China)",
    ),
    d("iPhone11,6", "d331pap", 0x1A, 0x8020, "iPhone XS Max"),
    d("iPhone11,8", "n841ap", 0x0C, 0x8020, "iPhone XR"),
    d("iPhone12,1", "n104ap", 0x04, 0x8030, "iPhone 11"),
    d("iPhone12,3", "d421ap", 0x06, 0x8030, "iPhone 11 Pro"),
    d("iPhone12,5", "d431ap", 0x02, 0x8030, "iPhone 11 Pro Max"),
    d("iPhone12,8", "d79ap", 0x10, 0x8030, "iPhone SE (2nd gen)"),
    d("iPhone13,1", "d52gap", 0x0A, 0x8101, "iPhone 12 mini"),
    d("iPhone13,2", "d53gap", 0x0C, 0x8101, "iPhone 12"),
    d("iPhone13,3", "d53pap", 0x0E, 0x8101, "iPhone 12 Pro"),
    d("iPhone13,4", "d54pap", 0x08, 0x8101, "iPhone 12 Pro Max"),
    d("iPhone14,2", "d63ap", 0x0C, 0x8110, "iPhone 13 Pro"),
    d("iPhone14,3", "d64ap", 0x0E, 0x8110, "iPhone 13 Pro Max"),
    d("iPhone14,4", "d16ap", 0x08, 0x8110, "iPhone 13 mini"),
    d("iPhone14,5", "d17ap", 0x0A, 0x8110, "iPhone 13"),
    d("iPhone14,6", "d49ap", 0x10, 0x8110, "iPhone SE (3rd gen)"),
    d("iPhone14,7", "d27ap", 0x18, 0x8110, "iPhone 14"),
    d("iPhone14,8", "d28ap", 0x1A, 0x8110, "iPhone 14 Plus"),
    d("iPhone15,2", "d73ap", 0x0C, 0x8120, "iPhone 14 Pro"),
    d("iPhone15,3", "d74ap", 0x0E, 0x8120, "iPhone 14 Pro Max"),
    d("iPhone15,4", "d37ap", 0x08, 0x8120, "iPhone 15"),
    d("iPhone15,5", "d38ap", 0x0A, 0x8120, "iPhone 15 Plus"),
    d("iPhone16,1", "d83ap", 0x04, 0x8130, "iPhone 15 Pro"),
    d("iPhone16,2", "d84ap", 0x06, 0x8130, "iPhone 15 Pro Max"),
    d("iPhone17,1", "d93ap", 0x0C, 0x8140, "iPhone 16 Pro"),
    d("iPhone17,2", "d94ap", 0x0E, 0x8140, "iPhone 16 Pro Max"),
    d("iPhone17,3", "d47ap", 0x08, 0x8140, "iPhone 16"),
    d("iPhone17,4", "d48ap", 0x0A, 0x8140, "iPhone 16 Plus"),
    d("iPhone17,5", "v59ap", 0x04, 0x8140, "iPhone 16e"),
    d("iPhone18,1", "v53ap", 0x0C, 0x8150, "iPhone 17 Pro"),
    d("iPhone18,2", "v54ap", 0x0E, 0x8150, "iPhone 17 Pro Max"),
    d("iPhone18,3", "v57ap", 0x08, 0x8150, "iPhone 17"),
    d("iPhone18,4", "d23ap", 0x0A, 0x8150, "iPhone Air"),
    d("iPhone18,5", "v159ap", 0x16, 0x8150, "iPhone 17e"),
    // ---- iPod touch --------------------------------------------------------------------------
    d("iPod1,1", "n45ap", 0x02, 0x8900, "iPod Touch (1st gen)"),
    d("iPod2,1", "n72ap", 0x00, 0x8720, "iPod Touch (2nd gen)"),
    d("iPod3,1", "n18ap", 0x02, 0x8922, "iPod Touch (3rd gen)"),
    d("iPod4,1", "n81ap", 0x08, 0x8930, "iPod Touch (4th gen)"),
    d("iPod5,1", "n78ap", 0x00, 0x8942, "iPod Touch (5th gen)"),
    d("iPod7,1", "n102ap", 0x10, 0x7000, "iPod Touch (6th gen)"),
    d("iPod9,1", "n112ap", 0x16, 0x8010, "iPod Touch (7th gen)"),
    // ---- iPad --------------------------------------------------------------------------------
    d("iPad1,1", "k48ap", 0x02, 0x8930, "iPad"),
    d("iPad2,1", "k93ap", 0x04, 0x8940, "iPad 2 (WiFi)"),
    d("iPad2,2", "k94ap", 0x06, 0x8940, "iPad 2 (GSM)"),
    d("iPad2,3", "k95ap", 0x02, 0x8940, "iPad 2 (CDMA)"),
    d("iPad2,4", "k93aap", 0x06, 0x8942, "iPad 2 (WiFi) R2 2012"),
    d("iPad2,5", "p105ap", 0x0A, 0x8942, "iPad mini (WiFi)"),
    d("iPad2,6", "p106ap", 0x0C, 0x8942, "iPad mini (GSM)"),
    d("iPad2,7", "p107ap", 0x0E, 0x8942, "iPad mini (Global)"),
    d("iPad3,1", "j1ap", 0x00, 0x8945, "iPad (3rd gen, WiFi)"),
    d("iPad3,2", "j2ap", 0x02, 0x8945, "iPad (3rd gen, CDMA)"),
    d("iPad3,3", "j2aap", 0x04, 0x8945, "iPad (3rd gen, GSM)"),
    d("iPad3,4", "p101ap", 0x00, 0x8955, "iPad (4th gen, WiFi)"),
    d("iPad3,5", "p102ap", 0x02, 0x8955, "iPad (4th gen, GSM)"),
    d("iPad3,6", "p103ap", 0x04, 0x8955, "iPad (4th gen, Global)"),
    d("iPad4,1", "j71ap", 0x10, 0x8960, "iPad Air (WiFi)"),
    d("iPad4,2", "j72ap", 0x12, 0x8960, "iPad Air (Cellular)"),
    d("iPad4,3", "j73ap", 0x14, 0x8960, "iPad Air (China)"),
    d("iPad4,4", "j85ap", 0x0A, 0x8960, "iPad mini 2 (WiFi)"),
    d("iPad4,5", "j86ap", 0x0C, 0x8960, "iPad mini 2 (Cellular)"),
    d("iPad4,6", "j87ap", 0x0E, 0x8960, "iPad mini 2 (China)"),
    d("iPad4,7", "j85map", 0x32, 0x8960, "iPad mini 3 (WiFi)"),
    d("iPad4,8", "j86map", 0x34, 0x8960, "iPad mini 3 (Cellular)"),
    d("iPad4,9", "j87map", 0x36, 0x8960, "iPad mini 3 (China)"),
    d("iPad5,1", "j96ap", 0x08, 0x7000, "iPad mini 4 (WiFi)"),
    d("iPad5,2", "j97ap", 0x0A, 0x7000, "iPad mini 4 (Cellular)"),
    d("iPad5,3", "j81ap", 0x06, 0x7001, "iPad Air 2 (WiFi)"),
    d("iPad5,4", "j82ap", 0x02, 0x7001, "iPad Air 2 (Cellular)"),
    d(
        "iPad6,3",
        "j127ap",
        0x08,
        0x8001,
        "iPad Pro 9.7-inch (WiFi)",
    ),
    d(
        "iPad6,4",
        "j128ap",
        0x0A,
        0x8001,
        "iPad Pro 9.7-inch (Cellular)",
    ),
    d(
        "iPad6,7",
        "j98aap",
        0x10,
        0x8001,
        "iPad Pro 12.9-inch (1st gen, WiFi)",
    ),
    d(
        "iPad6,8",
        "j99aap",
        0x12,
        0x8001,
        "iPad Pro 12.9-inch (1st gen, Cellular)",
    ),
    d("iPad6,11", "j71sap", 0x10, 0x8000, "iPad (5th gen, WiFi)"),
    d("iPad6,11", "j71tap", 0x10, 0x8003, "iPad (5th gen, WiFi)"),
    d(
        "iPad6,12",
        "j72sap",
        0x12,
        0x8000,
        "iPad (5th gen, Cellular)",
    ),
    d(
        "iPad6,12",
        "j72tap",
        0x12,
        0x8003,
        "iPad (5th gen, Cellular)",
    ),
    d(
        "iPad7,1",
        "j120ap",
        0x0C,
        0x8011,
        "iPad Pro 12.9-inch (2nd gen, WiFi)",
    ),
    d(
        "iPad7,2",
        "j121ap",
        0x0E,
        0x8011,
        "iPad Pro 12.9-inch (2nd gen, Cellular)",
    ),
    d(
        "iPad7,3",
        "j207ap",
        0x04,
        0x8011,
        "iPad Pro 10.5-inch (WiFi)",
    ),
    d(
        "iPad7,4",
        "j208ap",
        0x06,
        0x8011,
        "iPad Pro 10.5-inch (Cellular)",
    ),
    d("iPad7,5", "j71bap", 0x18, 0x8010, "iPad (6th gen, WiFi)"),
    d(
        "iPad7,6",
        "j72bap",
        0x1A,
        0x8010,
        "iPad (6th gen, Cellular)",
    ),
    d("iPad7,11", "j171ap", 0x1C, 0x8010, "iPad (7th gen, WiFi)"),
    d(
        "iPad7,12",
        "j172ap",
        0x1E,
        0x8010,
        "iPad (7th gen, Cellular)",
    ),
    d(
        "iPad8,1",
        "j317ap",
        0x0C,
        0x8027,
        "iPad Pro 11-inch (1st gen, WiFi)",
    ),
    d(
        "iPad8,2",
        "j317xap",
        0x1C,
        0x8027,
        "iPad Pro 11-inch (1st gen, WiFi, 1TB)",
    ),
    d(
        "iPad8,3",
        "j318ap",
        0x0E,
        0x8027,
        "iPad Pro 11-inch (1st gen, Cellular)",
    ),
    d(
        "iPad8,4",
        "j318xap",
        0x1E,
        0x8027,
        "iPad Pro 11-inch (1st gen, Cellular, 1TB)",
    ),
    d(
        "iPad8,5",
        "j320ap",
        0x08,
        0x8027,
        "iPad Pro 12.9-inch (3rd gen, WiFi)",
    ),
    d(
        "iPad8,6",
        "j320xap",
        0x18,
        0x8027,
        "iPad Pro 12.9-inch (3rd gen, WiFi, 1TB)",
    ),
    d(
        "iPad8,7",
        "j321ap",
        0x0A,
        0x8027,
        "iPad Pro 12.9-inch (3rd gen, Cellular)",
    ),
    d(
        "iPad8,8",
        "j321xap",
        0x1A,
        0x8027,
        "iPad Pro 12.9-inch (3rd gen, Cellular, 1TB)",
    ),
    d(
        "iPad8,9",
        "j417ap",
        0x3C,
        0x8027,
        "iPad Pro 11-inch (2nd gen, WiFi)",
    ),
    d(
        "iPad8,10",
        "j418ap",
        0x3E,
        0x8027,
        "iPad Pro 11-inch (2nd gen, Cellular)",
    ),
    d(
        "iPad8,11",
        "j420ap",
        0x38,
        0x8027,
        "iPad Pro 12.9-inch (4th gen, WiFi)",
    ),
    d(
        "iPad8,12",
        "j421ap",
        0x3A,
        0x8027,
        "iPad Pro 12.9-inch (4th gen, Cellular)",
    ),
    d(
        "iPad11,1",
        "j210ap",
        0x14,
        0x8020,
        "iPad mini (5th gen, WiFi)",
    ),
    d(
        "iPad11,2",
        "j211ap",
        0x16,
        0x8020,
        "iPad mini (5th gen, Cellular)",
    ),
    d(
        "iPad11,3",
        "j217ap",
        0x1C,
        0x8020,
        "iPad Air (3rd gen, WiFi)",
    ),
    d(
        "iPad11,4",
        "j218ap",
        0x1E,
        0x8020,
        "iPad Air (3rd gen, Cellular)",
    ),
    d("iPad11,6", "j171aap", 0x24, 0x8020, "iPad (8th gen, WiFi)"),
    d(
        "iPad11,7",
        "j172aap",
        0x26,
        0x8020,
        "iPad (8th gen, Cellular)",
    ),
    d("iPad12,1", "j181ap", 0x18, 0x8030, "iPad (9th gen, WiFi)"),
    d(
        "iPad12,2",
        "j182ap",
        0x1A,
        0x8030,
        "iPad (9th gen, Cellular)",
    ),
    d(
        "iPad13,1",
        "j307ap",
        0x04,
        0x8101,
        "iPad Air (4th gen, WiFi)",
    ),
    d(
        "iPad13,2",
        "j308ap",
        0x06,
        0x8101,
        "iPad Air (4th gen, Cellular)",
    ),
    d(
        "iPad13,4",
        "j517ap",
        0x08,
        0x8103,
        "iPad Pro 11-inch (3rd gen, WiFi)",
    ),
    d(
        "iPad13,5",
        "j517xap",
        0x0A,
        0x8103,
        "iPad Pro 11-inch (3rd gen, WiFi, 2TB)",
    ),
    d(
        "iPad13,6",
        "j518ap",
        0x0C,
        0x8103,
        "iPad Pro 11-inch (3rd gen, Cellular)",
    ),
    d(
        "iPad13,7",
        "j518xap",
        0x0E,
        0x8103,
        "iPad Pro 11-inch (3rd gen, Cellular, 2TB)",
    ),
    d(
        "iPad13,8",
        "j522ap",
        0x18,
        0x8103,
        "iPad Pro 12.9-inch (5th gen, WiFi)",
    ),
    d(
        "iPad13,9",
        "j522xap",
        0x1A,
        0x8103,
        "iPad Pro 12.9-inch (5th gen, WiFi, 2TB)",
    ),
    d(
        "iPad13,10",
        "j523ap",
        0x1C,
        0x8103,
        "iPad Pro 12.9-inch (5th gen, Cellular)",
    ),
    d(
        "iPad13,11",
        "j523xap",
        0x1E,
        0x8103,
        "iPad Pro 12.9-inch (5th gen, Cellular, 2TB)",
    ),
    d(
        "iPad13,16",
        "j407ap",
        0x10,
        0x8103,
        "iPad Air (5th gen, WiFi)",
    ),
    d(
        "iPad13,17",
        "j408ap",
        0x12,
        0x8103,
        "iPad Air (5th gen, Cellular)",
    ),
    d("iPad13,18", "j271ap", 0x14, 0x8101, "iPad (10th gen, WiFi)"),
    d(
        "iPad13,19",
        "j272ap",
        0x16,
        0x8101,
        "iPad (10th gen, Cellular)",
    ),
    d(
        "iPad14,1",
        "j310ap",
        0x04,
        0x8110,
        "iPad mini (6th gen, WiFi)",
    ),
    d(
        "iPad14,2",
        "j311ap",
        0x06,
        0x8110,
        "iPad mini (6th gen, Cellular)",
    ),
    d(
        "iPad14,3",
        "j617ap",
        0x08,
        0x8112,
        "iPad Pro 11-inch (4th gen, WiFi)",
    ),
    d(
        "iPad14,4",
        "j618ap",
        0x0A,
        0x8112,
        "iPad Pro 11-inch (4th gen, Cellular)",
    ),
    d(
        "iPad14,5",
        "j620ap",
        0x0C,
        0x8112,
        "iPad Pro 12.9-inch (6th gen, WiFi)",
    ),
    d(
        "iPad14,6",
        "j621ap",
        0x0E,
        0x8112,
        "iPad Pro 12.9-inch (6th gen, Cellular)",
    ),
    d(
        "iPad14,8",
        "j507ap",
        0x10,
        0x8112,
        "iPad Air 11-inch (M2, WiFi)",
    ),
    d(
        "iPad14,9",
        "j508ap",
        0x12,
        0x8112,
        "iPad Air 11-inch (M2, Cellular)",
    ),
    d(
        "iPad14,10",
        "j537ap",
        0x14,
        0x8112,
        "iPad Air 13-inch (M2, WiFi)",
    ),
    d(
        "iPad14,11",
        "j538ap",
        0x16,
        0x8112,
        "iPad Air 13-inch (M2, Cellular)",
    ),
    d(
        "iPad15,3",
        "j607ap",
        0x08,
        0x8122,
        "iPad Air 11-inch (M3, WiFi)",
    ),
    d(
        "iPad15,4",
        "j608ap",
        0x0A,
        0x8122,
        "iPad Air 11-inch (M3, Cellular)",
    ),
    d(
        "iPad15,5",
        "j637ap",
        0x0C,
        0x8122,
        "iPad Air 13-inch (M3, WiFi)",
    ),
    d(
        "iPad15,6",
        "j638ap",
        0x0E,
        0x8122,
        "iPad Air 13-inch (M3, Cellular)",
    ),
    d("iPad15,7", "j481ap", 0x10, 0x8120, "iPad (A16, WiFi)"),
    d("iPad15,8", "j482ap", 0x12, 0x8120, "iPad (A16, Cellular)"),
    d(
        "iPad16,1",
        "j410ap",
        0x08,
        0x8130,
        "iPad mini (A17 Pro, WiFi)",
    ),
    d(
        "iPad16,2",
        "j411ap",
        0x0A,
        0x8130,
        "iPad mini (A17 Pro, Cellular)",
    ),
    d(
        "iPad16,3",
        "j717ap",
        0x08,
        0x8132,
        "iPad Pro 11-inch (M4, WiFi)",
    ),
    d(
        "iPad16,4",
        "j718ap",
        0x0A,
        0x8132,
        "iPad Pro 11-inch (M4, Cellular)",
    ),
    d(
        "iPad16,5",
        "j720ap",
        0x0C,
        0x8132,
        "iPad Pro 13-inch (M4, WiFi)",
    ),
    d(
        "iPad16,6",
        "j721ap",
        0x0E,
        0x8132,
        "iPad Pro 13-inch (M4, Cellular)",
    ),
    d(
        "iPad16,8",
        "j707ap",
        0x10,
        0x8132,
        "iPad Air 11-inch (M4, Wi-Fi)",
    ),
    d(
        "iPad16,9",
        "j708ap",
        0x12,
        0x8132,
        "iPad Air 11-inch (M4, Cellular)",
    ),
    d(
        "iPad16,10",
        "j737ap",
        0x14,
        0x8132,
        "iPad Air 13-inch (M4, Wi-Fi)",
    ),
    d(
        "iPad16,11",
        "j738ap",
        0x16,
        0x8132,
        "iPad Air 13-inch (M4, Cellular)",
    ),
    d(
        "iPad17,1",
        "j817ap",
        0x08,
        0x8142,
        "iPad Pro 11-inch (M5, WiFi)",
    ),
    d(
        "iPad17,2",
        "j818ap",
        0x0A,
        0x8142,
        "iPad Pro 11-inch (M5, Cellular)",
    ),
    d(
        "iPad17,3",
        "j820ap",
        0x0C,
        0x8142,
        "iPad Pro 13-inch (M5, WiFi)",
    ),
    d(
        "iPad17,4",
        "j821ap",
        0x0E,
        0x8142,
        "iPad Pro 13-inch (M5, Cellular)",
    ),
    // ---- Apple TV ----------------------------------------------------------------------------
    d("AppleTV2,1", "k66ap", 0x10, 0x8930, "Apple TV 2"),
    d("AppleTV3,1", "j33ap", 0x08, 0x8942, "Apple TV 3"),
    d("AppleTV3,2", "j33iap", 0x00, 0x8947, "Apple TV 3 (2013)"),
    d("AppleTV5,3", "j42dap", 0x34, 0x7000, "Apple TV 4"),
    d("AppleTV6,2", "j105aap", 0x02, 0x8011, "Apple TV 4K"),
    d(
        "AppleTV11,1",
        "j305ap",
        0x08,
        0x8020,
        "Apple TV 4K (2nd gen)",
    ),
    d(
        "AppleTV14,1",
        "j255ap",
        0x02,
        0x8110,
        "Apple TV 4K (3rd gen)",
    ),
    // ---- HomePod -----------------------------------------------------------------------------
    d(
        "AudioAccessory1,1",
        "b238aap",
        0x38,
        0x7000,
        "HomePod (1st gen)",
    ),
    d(
        "AudioAccessory1,2",
        "b238ap",
        0x1A,
        0x7000,
        "HomePod (1st gen)",
    ),
    d("AudioAccessory5,1", "b520ap", 0x22, 0x8006, "HomePod mini"),
    d(
        "AudioAccessory6,1",
        "b620ap",
        0x18,
        0x8301,
        "HomePod (2nd gen)",
    ),
    // ---- Apple Watch -------------------------------------------------------------------------
    d(
        "Watch1,1",
        "n27aap",
        0x02,
        0x7002,
        "Apple Watch 38mm (1st gen)",
    ),
    d(
        "Watch1,2",
        "n28aap",
        0x04,
        0x7002,
        "Apple Watch 42mm (1st gen)",
    ),
    d(
        "Watch2,6",
        "n27dap",
        0x02,
        0x8002,
        "Apple Watch Series 1 (38mm)",
    ),
    d(
        "Watch2,7",
        "n28dap",
        0x04,
        0x8002,
        "Apple Watch Series 1 (42mm)",
    ),
    d(
        "Watch2,3",
        "n74ap",
        0x0C,
        0x8002,
        "Apple Watch Series 2 (38mm)",
    ),
    d(
        "Watch2,4",
        "n75ap",
        0x0E,
        0x8002,
        "Apple Watch Series 2 (42mm)",
    ),
    d(
        "Watch3,1",
        "n111sap",
        0x1C,
        0x8004,
        "Apple Watch Series 3 (38mm Cellular)",
    ),
    d(
        "Watch3,2",
        "n111bap",
        0x1E,
        0x8004,
        "Apple Watch Series 3 (42mm Cellular)",
    ),
    d(
        "Watch3,3",
        "n121sap",
        0x18,
        0x8004,
        "Apple Watch Series 3 (38mm)",
    ),
    d(
        "Watch3,4",
        "n121bap",
        0x1A,
        0x8004,
        "Apple Watch Series 3 (42mm)",
    ),
    d(
        "Watch4,1",
        "n131sap",
        0x08,
        0x8006,
        "Apple Watch Series 4 (40mm)",
    ),
    d(
        "Watch4,2",
        "n131bap",
        0x0A,
        0x8006,
        "Apple Watch Series 4 (44mm)",
    ),
    d(
        "Watch4,3",
        "n141sap",
        0x0C,
        0x8006,
        "Apple Watch Series 4 (40mm Cellular)",
    ),
    d(
        "Watch4,4",
        "n141bap",
        0x0E,
        0x8006,
        "Apple Watch Series 4 (44mm Cellular)",
    ),
    d(
        "Watch5,1",
        "n144sap",
        0x10,
        0x8006,
        "Apple Watch Series 5 (40mm)",
    ),
    d(
        "Watch5,2",
        "n144bap",
        0x12,
        0x8006,
        "Apple Watch Series 5 (44mm)",
    ),
    d(
        "Watch5,3",
        "n146sap",
        0x14,
        0x8006,
        "Apple Watch Series 5 (40mm Cellular)",
    ),
    d(
        "Watch5,4",
        "n146bap",
        0x16,
        0x8006,
        "Apple Watch Series 5 (44mm Cellular)",
    ),
    d("Watch5,9", "n140sap", 0x28, 0x8006, "Apple Watch SE (40mm)"),
    d(
        "Watch5,10",
        "n140bap",
        0x2A,
        0x8006,
        "Apple Watch SE (44mm)",
    ),
    d(
        "Watch5,11",
        "n142sap",
        0x2C,
        0x8006,
        "Apple Watch SE (40mm Cellular)",
    ),
    d(
        "Watch5,12",
        "n142bap",
        0x2E,
        0x8006,
        "Apple Watch SE (44mm Cellular)",
    ),
    d(
        "Watch6,1",
        "n157sap",
        0x08,
        0x8301,
        "Apple Watch Series 6 (40mm)",
    ),
    d(
        "Watch6,2",
        "n157bap",
        0x0A,
        0x8301,
        "Apple Watch Series 6 (44mm)",
    ),
    d(
        "Watch6,3",
        "n158sap",
        0x0C,
        0x8301,
        "Apple Watch Series 6 (40mm Cellular)",
    ),
    d(
        "Watch6,4",
        "n158bap",
        0x0E,
        0x8301,
        "Apple Watch Series 6 (44mm Cellular)",
    ),
    d(
        "Watch6,6",
        "n187sap",
        0x10,
        0x8301,
        "Apple Watch Series 7 (41mm)",
    ),
    d(
        "Watch6,7",
        "n187bap",
        0x12,
        0x8301,
        "Apple Watch Series 7 (45mm)",
    ),
    d(
        "Watch6,8",
        "n188sap",
        0x14,
        0x8301,
        "Apple Watch Series 7 (41mm Cellular)",
    ),
    d(
        "Watch6,9",
        "n188bap",
        0x16,
        0x8301,
        "Apple Watch Series 7 (45mm Cellular)",
    ),
    d(
        "Watch6,10",
        "n143sap",
        0x28,
        0x8301,
        "Apple Watch SE 2 (40mm)",
    ),
    d(
        "Watch6,11",
        "n143bap",
        0x2A,
        0x8301,
        "Apple Watch SE 2 (44mm)",
    ),
    d(
        "Watch6,12",
        "n149sap",
        0x2C,
        0x8301,
        "Apple Watch SE 2 (40mm Cellular)",
    ),
    d(
        "Watch6,13",
        "n149bap",
        0x2E,
        0x8301,
        "Apple Watch SE 2 (44mm Cellular)",
    ),
    d(
        "Watch6,14",
        "n197sap",
        0x30,
        0x8301,
        "Apple Watch Series 8 (41mm)",
    ),
    d(
        "Watch6,15",
        "n197bap",
        0x32,
        0x8301,
        "Apple Watch Series 8 (45mm)",
    ),
    d(
        "Watch6,16",
        "n198sap",
        0x34,
        0x8301,
        "Apple Watch Series 8 (41mm Cellular)",
    ),
    d(
        "Watch6,17",
        "n198bap",
        0x36,
        0x8301,
        "Apple Watch Series 8 (45mm Cellular)",
    ),
    d("Watch6,18", "n199ap", 0x26, 0x8301, "Apple Watch Ultra"),
    d(
        "Watch7,1",
        "n207sap",
        0x08,
        0x8310,
        "Apple Watch Series 9 (41mm)",
    ),
    d(
        "Watch7,2",
        "n207bap",
        0x0A,
        0x8310,
        "Apple Watch Series 9 (45mm)",
    ),
    d(
        "Watch7,3",
        "n208sap",
        0x0C,
        0x8310,
        "Apple Watch Series 9 (41mm Cellular)",
    ),
    d(
        "Watch7,4",
        "n208bap",
        0x0E,
        0x8310,
        "Apple Watch Series 9 (45mm Cellular)",
    ),
    d("Watch7,5", "n210ap", 0x02, 0x8310, "Apple Watch Ultra 2"),
    d(
        "Watch7,8",
        "n217sap",
        0x10,
        0x8310,
        "Apple Watch Series 10 (42mm)",
    ),
    d(
        "Watch7,9",
        "n217bap",
        0x12,
        0x8310,
        "Apple Watch Series 10 (46mm)",
    ),
    d(
        "Watch7,10",
        "n218sap",
        0x14,
        0x8310,
        "Apple Watch Series 10 (42mm Cellular)",
    ),
    d(
        "Watch7,11",
        "n218bap",
        0x16,
        0x8310,
        "Apple Watch Series 10 (46mm Cellular)",
    ),
    d("Watch7,12", "n230ap", 0x22, 0x8310, "Apple Watch Ultra 3"),
    d(
        "Watch7,13",
        "n243sap",
        0x28,
        0x8310,
        "Apple Watch SE 3 (40mm)",
    ),
    d(
        "Watch7,14",
        "n243bap",
        0x2A,
        0x8310,
        "Apple Watch SE 3 (44mm)",
    ),
    d(
        "Watch7,15",
        "n244sap",
        0x2C,
        0x8310,
        "Apple Watch SE 3 (40mm Cellular)",
    ),
    d(
        "Watch7,16",
        "n244bap",
        0x2E,
        0x8310,
        "Apple Watch SE 3 (44mm Cellular)",
    ),
    d(
        "Watch7,17",
        "n227sap",
        0x18,
        0x8310,
        "Apple Watch Series 11 (42mm)",
    ),
    d(
        "Watch7,18",
        "n227bap",
        0x1A,
        0x8310,
        "Apple Watch Series 11 (46mm)",
    ),
    d(
        "Watch7,19",
        "n228sap",
        0x1C,
        0x8310,
        "Apple Watch Series 11 (42mm Cellular)",
    ),
    d(
        "Watch7,20",
        "n228bap",
        0x1E,
        0x8310,
        "Apple Watch Series 11 (46mm Cellular)",
    ),
    // ---- Apple-silicon Macs ------------------------------------------------------------------
    d(
        "ADP3,2",
        "j273aap",
        0x42,
        0x8027,
        "Developer Transition Kit (2020)",
    ),
    d("Macmini9,1", "j274ap", 0x22, 0x8103, "Mac mini (M1, 2020)"),
    d(
        "MacBookPro17,1",
        "j293ap",
        0x24,
        0x8103,
        "MacBook Pro (M1, 13-inch, 2020)",
    ),
    d(
        "MacBookPro18,1",
        "j316sap",
        0x0A,
        0x6000,
        "MacBook Pro (M1 Pro, 16-inch, 2021)",
    ),
    d(
        "MacBookPro18,2",
        "j316cap",
        0x0A,
        0x6001,
        "MacBook Pro (M1 Max, 16-inch, 2021)",
    ),
    d(
        "MacBookPro18,3",
        "j314sap",
        0x08,
        0x6000,
        "MacBook Pro (M1 Pro, 14-inch, 2021)",
    ),
    d(
        "MacBookPro18,4",
        "j314cap",
        0x08,
        0x6001,
        "MacBook Pro (M1 Max, 14-inch, 2021)",
    ),
    d(
        "MacBookAir10,1",
        "j313ap",
        0x26,
        0x8103,
        "MacBook Air (M1, 2020)",
    ),
    d(
        "iMac21,1",
        "j456ap",
        0x28,
        0x8103,
        "iMac 24-inch (M1, Two Ports, 2021)",
    ),
    d(
        "iMac21,2",
        "j457ap",
        0x2A,
        0x8103,
        "iMac 24-inch (M1, Four Ports, 2021)",
    ),
    d(
        "Mac13,1",
        "j375cap",
        0x04,
        0x6001,
        "Mac Studio (M1 Max, 2022)",
    ),
    d(
        "Mac13,2",
        "j375dap",
        0x0C,
        0x6002,
        "Mac Studio (M1 Ultra, 2022)",
    ),
    d("Mac14,2", "j413ap", 0x28, 0x8112, "MacBook Air (M2, 2022)"),
    d(
        "Mac14,7",
        "j493ap",
        0x2A,
        0x8112,
        "MacBook Pro (M2, 13-inch, 2022)",
    ),
    d("Mac14,3", "j473ap", 0x24, 0x8112, "Mac mini (M2, 2023)"),
    d(
        "Mac14,5",
        "j414cap",
        0x04,
        0x6021,
        "MacBook Pro (14-inch, M2 Max, 2023)",
    ),
    d(
        "Mac14,6",
        "j416cap",
        0x06,
        0x6021,
        "MacBook Pro (16-inch, M2 Max, 2023)",
    ),
    d("Mac14,8", "j180dap", 0x08, 0x6022, "Mac Pro (2023)"),
    d(
        "Mac14,9",
        "j414sap",
        0x04,
        0x6020,
        "MacBook Pro (14-inch, M2 Pro, 2023)",
    ),
    d(
        "Mac14,10",
        "j416sap",
        0x06,
        0x6020,
        "MacBook Pro (16-inch, M2 Pro, 2023)",
    ),
    d(
        "Mac14,12",
        "j474sap",
        0x02,
        0x6020,
        "Mac mini (M2 Pro, 2023)",
    ),
    d(
        "Mac14,13",
        "j475cap",
        0x0A,
        0x6021,
        "Mac Studio (M2 Max, 2023)",
    ),
    d(
        "Mac14,14",
        "j475dap",
        0x0A,
        0x6022,
        "Mac Studio (M2 Ultra, 2023)",
    ),
    d(
        "Mac14,15",
        "j415ap",
        0x2E,
        0x8112,
        "MacBook Air (M2, 15-inch, 2023)",
    ),
    d(
        "Mac15,3",
        "j504ap",
        0x22,
        0x8122,
        "MacBook Pro (14-inch, M3, Nov 2023)",
    ),
    d(
        "Mac15,4",
        "j433ap",
        0x28,
        0x8122,
        "iMac 24-inch (M3, Two Ports, 2023)",
    ),
    d(
        "Mac15,5",
        "j434ap",
        0x2A,
        0x8122,
        "iMac 24-inch (M3, Four Ports, 2023)",
    ),
    d(
        "Mac15,6",
        "j514sap",
        0x04,
        0x6030,
        "MacBook Pro (14-inch, M3 Pro, Nov 2023)",
    ),
    d(
        "Mac15,7",
        "j516sap",
        0x06,
        0x6030,
        "MacBook Pro (16-inch, M3 Pro, Nov 2023)",
    ),
    d(
        "Mac15,8",
        "j514cap",
        0x44,
        0x6031,
        "MacBook Pro (14-inch, M3 Max, Nov 2023)",
    ),
    d(
        "Mac15,9",
        "j516cap",
        0x46,
        0x6031,
        "MacBook Pro (16-inch, M3 Max, Nov 2023)",
    ),
    d(
        "Mac15,10",
        "j514map",
        0x44,
        0x6034,
        "MacBook Pro (14-inch, M3 Max, Nov 2023)",
    ),
    d(
        "Mac15,11",
        "j516map",
        0x46,
        0x6034,
        "MacBook Pro (16-inch, M3 Max, Nov 2023)",
    ),
    d(
        "Mac15,12",
        "j613ap",
        0x30,
        0x8122,
        "MacBook Air (13-inch, M3, 2024)",
    ),
    d(
        "Mac15,13",
        "j615ap",
        0x32,
        0x8122,
        "MacBook Air (15-inch, M3, 2024)",
    ),
    d(
        "Mac15,14",
        "j575dap",
        0x44,
        0x6032,
        "Mac Studio (M3 Ultra, 2025)",
    ),
    d(
        "Mac16,1",
        "j604ap",
        0x22,
        0x8132,
        "MacBook Pro (14-inch, M4, Nov 2024)",
    ),
    d(
        "Mac16,2",
        "j623ap",
        0x24,
        0x8132,
        "iMac 24-inch (M4, Two Ports, 2024)",
    ),
    d(
        "Mac16,3",
        "j624ap",
        0x26,
        0x8132,
        "iMac 24-inch (M4, Four Ports, 2024)",
    ),
    d(
        "Mac16,5",
        "j616cap",
        0x06,
        0x6041,
        "MacBook Pro (16-inch, M4 Max, Nov 2024)",
    ),
    d(
        "Mac16,6",
        "j614cap",
        0x04,
        0x6041,
        "MacBook Pro (14-inch, M4 Max, Nov 2024)",
    ),
    d(
        "Mac16,7",
        "j616sap",
        0x06,
        0x6040,
        "MacBook Pro (16-inch, M4 Pro, Nov 2024)",
    ),
    d(
        "Mac16,8",
        "j614sap",
        0x04,
        0x6040,
        "MacBook Pro (14-inch, M4 Pro, Nov 2024)",
    ),
    d(
        "Mac16,9",
        "j575cap",
        0x02,
        0x6041,
        "Mac Studio (M4 Max, 2025)",
    ),
    d("Mac16,10", "j773gap", 0x2A, 0x8132, "Mac mini (M4, 2024)"),
    d(
        "Mac16,11",
        "j773sap",
        0x02,
        0x6040,
        "Mac mini (M4 Pro, 2024)",
    ),
    d(
        "Mac16,12",
        "j713ap",
        0x2C,
        0x8132,
        "MacBook Air (13-inch, M4, 2025)",
    ),
    d(
        "Mac16,13",
        "j715ap",
        0x2E,
        0x8132,
        "MacBook Air (15-inch, M4, 2025)",
    ),
    d(
        "Mac17,2",
        "j704ap",
        0x22,
        0x8142,
        "MacBook Pro (14-inch, M5, 2025)",
    ),
    d(
        "VirtualMac2,1",
        "vma2macosap",
        0x20,
        0xFE00,
        "Apple Virtual Machine 1",
    ),
    // Apple's security-research virtual iPhone (Virtualization.framework "vresearch101").
    d(
        "iPhone99,11",
        "vresearch101ap",
        0x90,
        0xFE01,
        "iPhone 99,11",
    ),
    // ---- T2 (iBridge) ------------------------------------------------------------------------
    d(
        "iBridge2,1",
        "j137ap",
        0x0A,
        0x8012,
        "Apple T2 iMacPro1,1 (j137)",
    ),
    d(
        "iBridge2,3",
        "j680ap",
        0x0B,
        0x8012,
        "Apple T2 MacBookPro15,1 (j680)",
    ),
    d(
        "iBridge2,4",
        "j132ap",
        0x0C,
        0x8012,
        "Apple T2 MacBookPro15,2 (j132)",
    ),
    d(
        "iBridge2,5",
        "j174ap",
        0x0E,
        0x8012,
        "Apple T2 Macmini8,1 (j174)",
    ),
    d(
        "iBridge2,6",
        "j160ap",
        0x0F,
        0x8012,
        "Apple T2 MacPro7,1 (j160)",
    ),
    d(
        "iBridge2,7",
        "j780ap",
        0x07,
        0x8012,
        "Apple T2 MacBookPro15,3 (j780)",
    ),
    d(
        "iBridge2,8",
        "j140kap",
        0x17,
        0x8012,
        "Apple T2 MacBookAir8,1 (j140k)",
    ),
    d(
        "iBridge2,10",
        "j213ap",
        0x18,
        0x8012,
        "Apple T2 MacBookPro15,4 (j213)",
    ),
    d(
        "iBridge2,12",
        "j140aap",
        0x37,
        0x8012,
        "Apple T2 MacBookAir8,2 (j140a)",
    ),
    d(
        "iBridge2,14",
        "j152fap",
        0x3A,
        0x8012,
        "Apple T2 MacBookPro16,1 (j152f)",
    ),
    d(
        "iBridge2,15",
        "j230kap",
        0x3F,
        0x8012,
        "Apple T2 MacBookAir9,1 (j230k)",
    ),
    d(
        "iBridge2,16",
        "j214kap",
        0x3E,
        0x8012,
        "Apple T2 MacBookPro16,2 (j214k)",
    ),
    d(
        "iBridge2,19",
        "j185ap",
        0x22,
        0x8012,
        "Apple T2 iMac20,1 (j185)",
    ),
    d(
        "iBridge2,20",
        "j185fap",
        0x23,
        0x8012,
        "Apple T2 iMac20,2 (j185f)",
    ),
    d(
        "iBridge2,21",
        "j223ap",
        0x3B,
        0x8012,
        "Apple T2 MacBookPro16,3 (j223)",
    ),
    d(
        "iBridge2,22",
        "j215ap",
        0x38,
        0x8012,
        "Apple T2 MacBookPro16,4 (j215)",
    ),
    // ---- Displays, Vision --------------------------------------------------------------------
    d("AppleDisplay2,1", "j327ap", 0x22, 0x8030, "Studio Display"),
    d(
        "RealityDevice14,1",
        "n301ap",
        0x42,
        0x8112,
        "Apple Vision Pro",
    ),
    d(
        "RealityDevice17,1",
        "n301aap",
        0x42,
        0x8142,
        "Apple Vision Pro (M5)",
    ),
];

/// Every row of the table.
pub fn all() -> &'static [Device] {
    DEVICES
}

/// The row for a chip id (`CPID`) and board id (`BDID`), as an iBoot serial string gives them.
pub fn by_chip_board(chip_id: u32, board_id: u32) -> Option<&'static Device> {
    DEVICES
        .iter()
        .find(|d| d.chip_id == chip_id && d.board_id == board_id)
}

/// Every row for a product type (`iPhone8,1` has two: one per chip it shipped with).
/// Case-insensitive.
pub fn by_product_type(product_type: &str) -> impl Iterator<Item = &'static Device> + '_ {
    DEVICES
        .iter()
        .filter(move |d| d.product_type.eq_ignore_ascii_case(product_type))
}

/// The row for a board config (`d101ap`, BuildManifest's `DeviceClass`). Case-insensitive.
pub fn by_board_config(board_config: &str) -> Option<&'static Device> {
    DEVICES
        .iter()
        .find(|d| d.board_config.eq_ignore_ascii_case(board_config))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn chip_and_board_name_at_most_one_row() {
        let mut seen = HashSet::new();
        for d in DEVICES {
            assert!(
                seen.insert((d.chip_id, d.board_id)),
                "({:#x}, {:#x}) twice: {}",
                d.chip_id,
                d.board_id,
                d.product_type
            );
        }
    }

    #[test]
    fn board_configs_are_unique_and_lower_case() {
        let mut seen = HashSet::new();
        for d in DEVICES {
            assert!(seen.insert(d.board_config), "{} twice", d.board_config);
            assert_eq!(d.board_config, d.board_config.to_ascii_lowercase());
            assert!(d.board_config.ends_with("ap"), "{}", d.board_config);
        }
    }

    #[test]
    fn every_family_is_known() {
        for d in DEVICES {
            assert_ne!(d.family(), Family::Other, "{}", d.product_type);
        }
        let phones = DEVICES
            .iter()
            .filter(|d| d.family() == Family::IPhone)
            .count();
        assert!(phones >= 60, "{phones}");
    }

    #[test]
    fn lookups() {
        let d = by_chip_board(0x8010, 0x0C).unwrap();
        assert_eq!(
            (d.product_type, d.board_config, d.name),
            ("iPhone9,3", "d101ap", "iPhone 7 (GSM)")
        );
        assert_eq!(by_chip_board(0x8010, 0xFF), None);
        assert_eq!(by_board_config("D101AP"), Some(d));
        assert_eq!(by_board_config("nope"), None);

        let two: Vec<_> = by_product_type("iPhone8,1").collect();
        assert_eq!(two.len(), 2);
        let chips: HashSet<_> = two.iter().map(|d| d.chip_id).collect();
        assert_eq!(chips, HashSet::from([0x8000, 0x8003]));
        assert_eq!(by_product_type("iphone9,3").count(), 1);
        assert_eq!(by_product_type("iPhone99,99").count(), 0);
        assert_eq!(d.family(), Family::IPhone);
        assert_eq!(by_board_config("j137ap").unwrap().family(), Family::T2);
    }
}
