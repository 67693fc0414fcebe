//! Finding the usbmux interface among a phone's configurations (PROTOCOLS.md §3, §12).

use crate::control::Direction;
use crate::descriptor::{ConfigurationDescriptor, TransferType};

/// `bInterfaceClass` / `bInterfaceSubClass` / `bInterfaceProtocol` of the usbmux interface.
pub const MUX_INTERFACE_CLASS: (u8, u8, u8) = (0xFF, 0xFE, 2);

/// Where the usbmux interface lives: the configuration to select, the interface to claim and
/// its two bulk endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MuxConfiguration {
    /// `bConfigurationValue` to pass to SET_CONFIGURATION.
    pub configuration: u8,
    /// `bInterfaceNumber` to claim.
    pub interface: u8,
    /// `bAlternateSetting` that carries the endpoints (0 on every phone seen so far).
    pub alternate_setting: u8,
    /// Bulk IN endpoint address (0x85 on normal-mode phones).
    pub endpoint_in: u8,
    /// Bulk OUT endpoint address (0x04 on normal-mode phones).
    pub endpoint_out: u8,
    /// `wMaxPacketSize` of the bulk OUT endpoint (512 at high speed): the zero-length-packet
    /// rule needs it.
    pub out_max_packet_size: u16,
}

/// The configuration with the usbmux interface (class 0xFF, subclass 0xFE, protocol 2, one
/// bulk IN and one bulk OUT endpoint), trying the highest `bConfigurationValue` first: a
/// normal-mode phone has four configurations, the mux is in 3 and 4, and the kernel leaves it
/// in 1. `None` when no configuration has it (recovery, DFU, or an iOS 17+ phone in a USB mode
/// without the mux).
///
/// ```
/// use usb::{mux_configuration, ConfigurationDescriptor};
///
/// let bytes = [
///     9, 2, 32, 0, 1, 3, 0, 0xC0, 250, // configuration 3
///     9, 4, 1, 0, 2, 0xFF, 0xFE, 2, 0, // interface 1: Apple USB Multiplexor
///     7, 5, 0x04, 2, 0x00, 0x02, 0, // bulk OUT 0x04
///     7, 5, 0x85, 2, 0x00, 0x02, 0, // bulk IN 0x85
/// ];
/// let mux = mux_configuration(&[ConfigurationDescriptor::parse(&bytes)?]).unwrap();
/// assert_eq!((mux.configuration, mux.interface), (3, 1));
/// assert_eq!((mux.endpoint_in, mux.endpoint_out), (0x85, 0x04));
/// # Ok::<(), usb::DescriptorError>(())
/// ```
pub fn mux_configuration(configs: &[ConfigurationDescriptor]) -> Option<MuxConfiguration> {
    let mut by_value: Vec<&ConfigurationDescriptor> = configs.iter().collect();
    by_value.sort_by_key(|c| std::cmp::Reverse(c.value));
    by_value.into_iter().find_map(|config| {
        config
            .interfaces
            .iter()
            .flat_map(|i| &i.alt_settings)
            .filter(|alt| (alt.class, alt.subclass, alt.protocol) == MUX_INTERFACE_CLASS)
            .find_map(|alt| {
                let bulk = |direction| {
                    alt.endpoints.iter().find(|e| {
                        e.transfer_type() == TransferType::Bulk && e.direction() == direction
                    })
                };
                let out = bulk(Direction::Out)?;
                Some(MuxConfiguration {
                    configuration: config.value,
                    interface: alt.interface_number,
                    alternate_setting: alt.alternate_setting,
                    endpoint_in: bulk(Direction::In)?.address,
                    endpoint_out: out.address,
                    out_max_packet_size: out.max_packet_size & 0x07FF,
                })
            })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn interface(number: u8, alt: u8, endpoints: u8, class: (u8, u8, u8), string: u8) -> [u8; 9] {
        [
            9, 4, number, alt, endpoints, class.0, class.1, class.2, string,
        ]
    }

    fn endpoint(address: u8, attributes: u8, max_packet: u16) -> [u8; 7] {
        let m = max_packet.to_le_bytes();
        [7, 5, address, attributes, m[0], m[1], 0]
    }

    fn configuration(value: u8, string: u8, body: &[&[u8]]) -> Vec<u8> {
        let interfaces = body
            .iter()
            .filter(|d| d.get(1) == Some(&4) && d.get(3) == Some(&0))
            .count() as u8;
        let mut b = vec![9, 2, 0, 0, interfaces, value, string, 0xC0, 250];
        for d in body {
            b.extend_from_slice(d);
        }
        let total = b.len() as u16;
        b[2..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    const BULK: u8 = 2;
    const INTERRUPT: u8 = 3;
    const ISO: u8 = 1;

    /// The four configurations of a normal-mode phone, written from PROTOCOLS.md §12.
    pub(crate) fn normal_mode_configurations() -> Vec<Vec<u8>> {
        let ptp = interface(0, 0, 3, (6, 1, 1), 0);
        let ptp_out = endpoint(0x02, BULK, 512);
        let ptp_in = endpoint(0x81, BULK, 512);
        let ptp_event = endpoint(0x83, INTERRUPT, 64);
        let mux = interface(1, 0, 2, MUX_INTERFACE_CLASS, 7);
        let mux_out = endpoint(0x04, BULK, 512);
        let mux_in = endpoint(0x85, BULK, 512);
        let ptp_all: [&[u8]; 4] = [&ptp, &ptp_out, &ptp_in, &ptp_event];
        let mux_all: [&[u8]; 3] = [&mux, &mux_out, &mux_in];
        // 1 "PTP"
        let c1 = configuration(1, 4, &ptp_all);
        // 2 "iPod USB Interface": audio control, audio streaming (alt 1 isochronous), HID.
        let c2 = configuration(
            2,
            5,
            &[
                &interface(0, 0, 0, (1, 1, 0), 0),
                &interface(1, 0, 0, (1, 2, 0), 0),
                &interface(1, 1, 1, (1, 2, 0), 0),
                &endpoint(0x81, ISO | 0x04, 192),
                &interface(2, 0, 1, (3, 0, 0), 0),
                &endpoint(0x83, INTERRUPT, 64),
            ],
        );
        // 3 "PTP + Apple Mobile Device"
        let c3 = configuration(3, 6, &[&ptp_all[..], &mux_all[..]].concat());
        // 4 "PTP + Apple Mobile Device + Apple USB Ethernet"
        let eth0 = interface(2, 0, 0, (0xFF, 0xFD, 1), 8);
        let eth1 = interface(2, 1, 2, (0xFF, 0xFD, 1), 8);
        let eth_in = endpoint(0x86, BULK, 512);
        let eth_out = endpoint(0x03, BULK, 512);
        let eth_all: [&[u8]; 4] = [&eth0, &eth1, &eth_in, &eth_out];
        let c4 = configuration(4, 9, &[&ptp_all[..], &mux_all[..], &eth_all[..]].concat());
        vec![c1, c2, c3, c4]
    }

    fn parsed(raw: &[Vec<u8>]) -> Vec<ConfigurationDescriptor> {
        raw.iter()
            .map(|b| ConfigurationDescriptor::parse(b).unwrap())
            .collect()
    }

    #[test]
    fn normal_mode_phone_gets_configuration_4() {
        let configs = parsed(&normal_mode_configurations());
        assert_eq!(configs.len(), 4);
        assert_eq!(
            mux_configuration(&configs),
            Some(MuxConfiguration {
                configuration: 4,
                interface: 1,
                alternate_setting: 0,
                endpoint_in: 0x85,
                endpoint_out: 0x04,
                out_max_packet_size: 512,
            })
        );
        // Listed out of order, still the highest first.
        let mut reversed = configs.clone();
        reversed.reverse();
        assert_eq!(mux_configuration(&reversed).unwrap().configuration, 4);
        // Without configuration 4, configuration 3.
        assert_eq!(mux_configuration(&configs[..3]).unwrap().configuration, 3);
        // PTP and iPod only: no mux.
        assert_eq!(mux_configuration(&configs[..2]), None);
    }

    #[test]
    fn a_mux_interface_without_both_bulk_endpoints_is_skipped() {
        let mut raw = normal_mode_configurations();
        // Configuration 4's mux interface loses its IN endpoint (turn 0x85 into interrupt).
        let c4 = &mut raw[3];
        let at = c4.windows(3).position(|w| w == [7, 5, 0x85]).unwrap();
        c4[at + 3] = INTERRUPT;
        let configs = parsed(&raw);
        assert_eq!(mux_configuration(&configs).unwrap().configuration, 3);
    }

    #[test]
    fn recovery_and_dfu_have_no_mux() {
        let dfu = [
            9, 2, 25, 0, 1, 1, 0, 0x80, 250, 9, 4, 0, 0, 0, 0xFE, 0x01, 0x00, 0, 7, 0x21, 0x01, 10,
            0, 0x00, 0x08,
        ];
        let dfu = ConfigurationDescriptor::parse(&dfu).unwrap();
        assert_eq!(mux_configuration(&[dfu]), None);
        let recovery = configuration(
            1,
            5,
            &[
                &interface(0, 0, 1, (0xFE, 1, 2), 0),
                &endpoint(0x04, BULK, 512),
                &interface(1, 0, 0, (0xFF, 0xFF, 0x51), 0),
                &interface(1, 1, 2, (0xFF, 0xFF, 0x51), 6),
                &endpoint(0x81, BULK, 512),
                &endpoint(0x02, BULK, 512),
            ],
        );
        let recovery = ConfigurationDescriptor::parse(&recovery).unwrap();
        assert_eq!(mux_configuration(&[recovery]), None);
        assert_eq!(mux_configuration(&[]), None);
    }
}
