//! Opening a device: the Busy retry schedule (pure, time passed in) and reading the device and
//! configuration descriptors once, parsed by this crate's own parsers.

use std::time::{Duration, Instant};

use crate::control::Control;
use crate::descriptor::{descriptor_type, ConfigurationDescriptor, DeviceDescriptor};
use crate::error::{Operation, UsbError};

/// Timing policy of the real backend, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPolicy {
    /// How long opening, claiming or configuring keeps retrying while libusb answers Busy
    /// (the kernel is still binding drivers right after enumeration).
    pub busy_deadline: Duration,
    /// The first wait after a Busy answer; it doubles up to [`OpenPolicy::busy_max_wait`].
    pub busy_first_wait: Duration,
    /// The longest single wait between two attempts.
    pub busy_max_wait: Duration,
    /// Timeout of each GET_DESCRIPTOR read at open.
    pub descriptor_timeout: Duration,
    /// How often the polling fallback lists devices when libusb has no hotplug support.
    pub poll_interval: Duration,
    /// How long the hotplug event thread waits in `libusb_handle_events` before it checks
    /// whether its watch was dropped.
    pub event_wait: Duration,
}

impl Default for OpenPolicy {
    fn default() -> Self {
        Self {
            busy_deadline: Duration::from_secs(3),
            busy_first_wait: Duration::from_millis(10),
            busy_max_wait: Duration::from_millis(250),
            descriptor_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            event_wait: Duration::from_millis(250),
        }
    }
}

/// When to try again after libusb answered Busy: exponential waits, never past a deadline.
///
/// Sans-IO: the caller passes `now` and does the waiting.
///
/// ```
/// use std::time::{Duration, Instant};
/// use usb::libusb::{BusyRetry, OpenPolicy};
///
/// let start = Instant::now();
/// let mut retry = BusyRetry::new(start, &OpenPolicy::default());
/// assert_eq!(retry.after_busy(start), Some(Duration::from_millis(10)));
/// assert_eq!(retry.after_busy(start), Some(Duration::from_millis(20)));
/// assert_eq!(retry.after_busy(start + Duration::from_secs(3)), None); // give up
/// ```
#[derive(Debug, Clone)]
pub struct BusyRetry {
    deadline: Instant,
    next_wait: Duration,
    max_wait: Duration,
    attempts: u32,
}

impl BusyRetry {
    /// A schedule starting at `now`.
    pub fn new(now: Instant, policy: &OpenPolicy) -> Self {
        Self {
            deadline: now + policy.busy_deadline,
            next_wait: policy.busy_first_wait,
            max_wait: policy.busy_max_wait,
            attempts: 0,
        }
    }

    /// The attempt at `now` answered Busy: how long to wait before the next one, or `None`
    /// when the deadline has passed (report Busy). A wait never ends past the deadline.
    pub fn after_busy(&mut self, now: Instant) -> Option<Duration> {
        self.attempts = self.attempts.saturating_add(1);
        let left = self.deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        let wait = self.next_wait.min(left);
        self.next_wait = (self.next_wait * 2).min(self.max_wait);
        Some(wait)
    }

    /// How many attempts answered Busy so far.
    pub fn busy_answers(&self) -> u32 {
        self.attempts
    }
}

/// Runs `attempt` until it does not answer Busy or `policy.busy_deadline` has passed.
///
/// The only place the backend waits on the clock: libusb gives no event for "the kernel has
/// finished binding this device", so retrying on a schedule is the whole remedy.
pub(crate) fn retry_busy<T>(
    policy: &OpenPolicy,
    mut attempt: impl FnMut() -> Result<T, rusb::Error>,
) -> Result<T, rusb::Error> {
    let mut schedule = BusyRetry::new(Instant::now(), policy);
    loop {
        match attempt() {
            Err(rusb::Error::Busy) => match schedule.after_busy(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None => return Err(rusb::Error::Busy),
            },
            other => return other,
        }
    }
}

/// Reads the device descriptor and every configuration descriptor with GET_DESCRIPTOR
/// requests through `control_in(setup, wLength)`, and parses them with this crate's parsers:
/// bytes that are not descriptors become [`crate::ErrorKind::Malformed`] errors naming the
/// descriptor. Each configuration is read in two steps, as the kernel does: its 9-byte header,
/// then `wTotalLength` bytes.
pub fn read_descriptors(
    mut control_in: impl FnMut(Control, u16) -> Result<Vec<u8>, UsbError>,
) -> Result<(DeviceDescriptor, Vec<ConfigurationDescriptor>), UsbError> {
    let op = |descriptor_type, index| Operation::GetDescriptor {
        descriptor_type,
        index,
    };
    let raw = control_in(
        Control::get_descriptor(descriptor_type::DEVICE, 0, 0),
        DeviceDescriptor::LENGTH as u16,
    )?;
    let device = DeviceDescriptor::parse(&raw)
        .map_err(|e| UsbError::malformed(op(descriptor_type::DEVICE, 0), e))?;
    let mut configurations = Vec::with_capacity(usize::from(device.num_configurations));
    for index in 0..device.num_configurations {
        let op = op(descriptor_type::CONFIGURATION, index);
        let setup = Control::get_descriptor(descriptor_type::CONFIGURATION, index, 0);
        let header = control_in(setup, ConfigurationDescriptor::HEADER_LENGTH as u16)?;
        let total = match header.get(..4) {
            Some(&[_, descriptor_type::CONFIGURATION, lo, hi]) => u16::from_le_bytes([lo, hi]),
            // Not a configuration header: let the parser say exactly what is wrong.
            _ => match ConfigurationDescriptor::parse(&header) {
                Err(e) => return Err(UsbError::malformed(op, e)),
                Ok(_) => u16::try_from(header.len()).unwrap_or(u16::MAX),
            },
        };
        let raw = if usize::from(total) <= header.len() {
            header
        } else {
            control_in(setup, total)?
        };
        configurations
            .push(ConfigurationDescriptor::parse(&raw).map_err(|e| UsbError::malformed(op, e))?);
    }
    Ok((device, configurations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::DescriptorError;
    use crate::error::ErrorKind;
    use crate::mux::tests::normal_mode_configurations;

    fn policy() -> OpenPolicy {
        OpenPolicy {
            busy_deadline: Duration::from_millis(100),
            busy_first_wait: Duration::from_millis(10),
            busy_max_wait: Duration::from_millis(40),
            ..OpenPolicy::default()
        }
    }

    #[test]
    fn busy_waits_grow_and_stop_at_the_deadline() {
        let t0 = Instant::now();
        let mut r = BusyRetry::new(t0, &policy());
        let ms = Duration::from_millis;
        let mut now = t0;
        let mut waits = Vec::new();
        while let Some(w) = r.after_busy(now) {
            waits.push(w);
            now += w;
        }
        assert_eq!(waits, [ms(10), ms(20), ms(40), ms(30)]);
        assert_eq!(now, t0 + ms(100));
        assert_eq!(r.busy_answers(), 5);
        // Asking after the deadline gives up at once.
        let mut late = BusyRetry::new(t0, &policy());
        assert_eq!(late.after_busy(t0 + ms(500)), None);
    }

    #[test]
    fn retry_busy_stops_at_the_first_other_answer() {
        let mut calls = 0;
        let r = retry_busy(&policy(), || {
            calls += 1;
            if calls < 3 {
                Err(rusb::Error::Busy)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(3));
        let mut calls = 0;
        let r: Result<(), _> = retry_busy(&policy(), || {
            calls += 1;
            Err(rusb::Error::NoDevice)
        });
        assert_eq!((r, calls), (Err(rusb::Error::NoDevice), 1));
        let r: Result<(), _> = retry_busy(
            &OpenPolicy {
                busy_deadline: Duration::from_millis(5),
                ..policy()
            },
            || Err(rusb::Error::Busy),
        );
        assert_eq!(r, Err(rusb::Error::Busy));
    }

    /// A device that answers GET_DESCRIPTOR from fixed bytes, like a phone does.
    struct Answers {
        device: Vec<u8>,
        configs: Vec<Vec<u8>>,
        requests: Vec<(u16, u16)>,
    }

    impl Answers {
        fn control_in(&mut self, setup: Control, length: u16) -> Result<Vec<u8>, UsbError> {
            assert_eq!((setup.request_type, setup.request), (0x80, 6));
            self.requests.push((setup.value, length));
            let [index, ty] = setup.value.to_le_bytes();
            let bytes = match ty {
                1 => &self.device,
                2 => self
                    .configs
                    .get(usize::from(index))
                    .ok_or_else(|| UsbError::new(ErrorKind::Pipe, Operation::Open))?,
                _ => panic!("unexpected descriptor type {ty}"),
            };
            Ok(bytes.iter().copied().take(usize::from(length)).collect())
        }
    }

    fn normal_phone() -> Answers {
        let configs = normal_mode_configurations();
        let device = DeviceDescriptor {
            usb_version: 0x0200,
            class: 0,
            subclass: 0,
            protocol: 0,
            max_packet_size_0: 64,
            vendor_id: 0x05AC,
            product_id: 0x12A8,
            device_version: 0x1502,
            manufacturer_index: 1,
            product_index: 2,
            serial_number_index: 3,
            num_configurations: configs.len() as u8,
        };
        Answers {
            device: device.to_bytes().to_vec(),
            configs,
            requests: Vec::new(),
        }
    }

    #[test]
    fn reads_all_four_configurations_of_a_normal_mode_phone() {
        let mut phone = normal_phone();
        let (device, configs) = read_descriptors(|s, l| phone.control_in(s, l)).unwrap();
        assert_eq!(device.product_id, 0x12A8);
        assert_eq!(
            configs.iter().map(|c| c.value).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        for (config, raw) in configs.iter().zip(&phone.configs) {
            assert_eq!(&config.to_bytes().unwrap(), raw);
        }
        // Device descriptor, then header + whole set per configuration.
        assert_eq!(phone.requests.len(), 1 + 2 * 4);
        assert_eq!(phone.requests[0], (0x0100, 18));
        assert_eq!(phone.requests[1], (0x0200, 9));
        let total = phone.configs[0].len() as u16;
        assert_eq!(phone.requests[2], (0x0200, total));
        assert_eq!(phone.requests[8].0, 0x0203);
    }

    #[test]
    fn garbled_descriptors_are_malformed_errors_naming_the_descriptor() {
        // Device descriptor cut short.
        let mut phone = normal_phone();
        phone.device.truncate(10);
        let e = read_descriptors(|s, l| phone.control_in(s, l)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert!(matches!(
            e.descriptor_error(),
            Some(DescriptorError::Truncated { .. })
        ));
        // Configuration 2 claims more than it sends.
        let mut phone = normal_phone();
        let c = &mut phone.configs[2];
        let total = u16::from_le_bytes([c[2], c[3]]) + 20;
        c[2..4].copy_from_slice(&total.to_le_bytes());
        let e = read_descriptors(|s, l| phone.control_in(s, l)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert_eq!(
            e.operation(),
            &Operation::GetDescriptor {
                descriptor_type: 2,
                index: 2
            }
        );
        // Configuration 0 answers with a string descriptor.
        let mut phone = normal_phone();
        phone.configs[0] = vec![4, 3, 9, 4];
        let e = read_descriptors(|s, l| phone.control_in(s, l)).unwrap_err();
        assert!(matches!(
            e.descriptor_error(),
            Some(DescriptorError::WrongType { found: 3, .. })
        ));
        // A header of 3 bytes.
        let mut phone = normal_phone();
        phone.configs[1].truncate(3);
        let e = read_descriptors(|s, l| phone.control_in(s, l)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        // A transfer error is passed on as it came.
        let mut phone = normal_phone();
        phone.configs.truncate(3);
        let e = read_descriptors(|s, l| phone.control_in(s, l)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Pipe);
    }

    #[test]
    fn a_bare_configuration_header_is_read_once() {
        let mut phone = normal_phone();
        phone.device[17] = 1;
        phone.configs = vec![vec![9, 2, 9, 0, 0, 1, 0, 0x80, 250]];
        let (_, configs) = read_descriptors(|s, l| phone.control_in(s, l)).unwrap();
        assert!(configs[0].interfaces.is_empty());
        assert_eq!(phone.requests.len(), 2);
    }
}
