//! Well-known `GetValue` keys (global domain) that identify a phone and its state.
//!
//! `UniqueChipID` is the ECID, the one identity that survives every mode change.

/// `UniqueChipID`: the ECID (integer).
pub const UNIQUE_CHIP_ID: &str = "UniqueChipID";
/// `UniqueDeviceID`: the UDID (string).
pub const UNIQUE_DEVICE_ID: &str = "UniqueDeviceID";
/// `ProductType`, e.g. `iPhone10,3`.
pub const PRODUCT_TYPE: &str = "ProductType";
/// `HardwareModel`, e.g. `D22AP`.
pub const HARDWARE_MODEL: &str = "HardwareModel";
/// `ProductVersion`, e.g. `15.4.1`.
pub const PRODUCT_VERSION: &str = "ProductVersion";
/// `BuildVersion`, e.g. `19E258`.
pub const BUILD_VERSION: &str = "BuildVersion";
/// `SerialNumber`.
pub const SERIAL_NUMBER: &str = "SerialNumber";
/// `ChipID` (integer, e.g. 0x8015).
pub const CHIP_ID: &str = "ChipID";
/// `BoardId` (integer).
pub const BOARD_ID: &str = "BoardId";
/// `DeviceClass`, e.g. `iPhone`.
pub const DEVICE_CLASS: &str = "DeviceClass";
/// `ActivationState`, e.g. `Activated`, `Unactivated`.
pub const ACTIVATION_STATE: &str = "ActivationState";
/// `DeviceName`, the name the owner gave the phone.
pub const DEVICE_NAME: &str = "DeviceName";

/// Every key above, in the order a bench identification reads them.
pub const IDENTITY: &[&str] = &[
    UNIQUE_CHIP_ID,
    UNIQUE_DEVICE_ID,
    PRODUCT_TYPE,
    HARDWARE_MODEL,
    PRODUCT_VERSION,
    BUILD_VERSION,
    SERIAL_NUMBER,
    CHIP_ID,
    BOARD_ID,
    DEVICE_CLASS,
    ACTIVATION_STATE,
    DEVICE_NAME,
];

#[cfg(test)]
mod tests {
    #[test]
    fn identity_keys_are_distinct() {
        let set: std::collections::HashSet<_> = super::IDENTITY.iter().collect();
        assert_eq!(set.len(), super::IDENTITY.len());
        assert_eq!(set.len(), 12);
    }
}
