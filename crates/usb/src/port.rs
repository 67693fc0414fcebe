//! Physical port identity: the Linux sysfs devpath (`1-2.3`), which survives re-enumeration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a device is plugged in: bus number and the chain of hub ports from the root hub, as
/// Linux writes it in sysfs (`/sys/bus/usb/devices/1-2.3`) and udev in `ID_PATH`.
///
/// Unlike the bus address, this stays the same when a phone re-enumerates in another mode, so
/// it is how a bench slot is named. The text form is canonical: `parse(p.to_string()) == p`,
/// and serde writes it as that string.
///
/// ```
/// use usb::PortPath;
///
/// let p: PortPath = "1-2.3".parse()?;
/// assert_eq!((p.bus(), p.ports()), (1, &[2, 3][..]));
/// assert_eq!(p.parent().map(|h| h.to_string()).as_deref(), Some("1-2"));
/// assert_eq!(p.to_string(), "1-2.3");
/// assert!("1-2.3:1.0".parse::<PortPath>().is_err()); // an interface, not a port
/// # Ok::<(), usb::PortPathError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPath {
    bus: u8,
    ports: Vec<u8>,
}

/// How a port path can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPathProblem {
    /// Nothing between the separators, or an empty string.
    Empty,
    /// No `-` between the bus number and the ports (e.g. `usb1`, a root hub).
    NoPorts,
    /// The bus is not a decimal number in 1..=255.
    BadBus,
    /// A port is not a decimal number in 1..=255 (or has a leading zero).
    BadPort,
    /// More hub tiers than USB allows.
    TooDeep,
    /// `:` names an interface (`1-2:1.0`), not a device.
    Interface,
}

impl fmt::Display for PortPathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty component",
            Self::NoPorts => "no port chain after the bus number (expected e.g. 1-2.3)",
            Self::BadBus => "bus must be a decimal number 1..=255 without leading zeros",
            Self::BadPort => "ports must be decimal numbers 1..=255 without leading zeros",
            Self::TooDeep => "more than 7 ports in the chain",
            Self::Interface => "this names an interface (contains ':'), not a device",
        })
    }
}

/// A string that is not a sysfs device path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid USB port path {input:?}: {problem}")]
pub struct PortPathError {
    /// What was given (cut to 64 characters).
    pub input: String,
    /// What is wrong with it.
    pub problem: PortPathProblem,
}

impl PortPath {
    /// The deepest chain USB allows below a root hub (USB 3.2 §10.1.3, libusb's limit).
    pub const MAX_DEPTH: usize = 7;

    /// A path from its parts, checked like [`str::parse`] checks text.
    pub fn new(bus: u8, ports: &[u8]) -> Result<Self, PortPathError> {
        let err = |problem| {
            Err(PortPathError {
                input: format!("bus {bus} ports {ports:?}"),
                problem,
            })
        };
        if bus == 0 {
            return err(PortPathProblem::BadBus);
        }
        if ports.is_empty() {
            return err(PortPathProblem::NoPorts);
        }
        if ports.len() > Self::MAX_DEPTH {
            return err(PortPathProblem::TooDeep);
        }
        if ports.contains(&0) {
            return err(PortPathProblem::BadPort);
        }
        Ok(Self {
            bus,
            ports: ports.to_vec(),
        })
    }

    /// The bus number (`1` in `1-2.3`).
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// The hub ports from the root hub down (`[2, 3]` in `1-2.3`); never empty.
    pub fn ports(&self) -> &[u8] {
        &self.ports
    }

    /// How many ports are in the chain (1 = plugged into the root hub).
    pub fn depth(&self) -> usize {
        self.ports.len()
    }

    /// The path of the hub this device is plugged into, `None` for the root hub.
    pub fn parent(&self) -> Option<PortPath> {
        match self.ports.split_last() {
            Some((_, rest)) if !rest.is_empty() => Some(Self {
                bus: self.bus,
                ports: rest.to_vec(),
            }),
            _ => None,
        }
    }

    /// Whether `self` is `hub` itself or below it.
    pub fn is_within(&self, hub: &PortPath) -> bool {
        self.bus == hub.bus && self.ports.starts_with(&hub.ports)
    }
}

fn parse_number(text: &str) -> Option<u8> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    match text.parse::<u8>() {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

impl FromStr for PortPath {
    type Err = PortPathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| PortPathError {
            input: s.chars().take(64).collect(),
            problem,
        };
        if s.is_empty() {
            return Err(err(PortPathProblem::Empty));
        }
        if s.contains(':') {
            return Err(err(PortPathProblem::Interface));
        }
        let (bus, chain) = s
            .split_once('-')
            .ok_or_else(|| err(PortPathProblem::NoPorts))?;
        if bus.is_empty() {
            return Err(err(PortPathProblem::Empty));
        }
        let bus = parse_number(bus).ok_or_else(|| err(PortPathProblem::BadBus))?;
        let mut ports = Vec::new();
        for part in chain.split('.') {
            if part.is_empty() {
                return Err(err(PortPathProblem::Empty));
            }
            if ports.len() == Self::MAX_DEPTH {
                return Err(err(PortPathProblem::TooDeep));
            }
            ports.push(parse_number(part).ok_or_else(|| err(PortPathProblem::BadPort))?);
        }
        Ok(Self { bus, ports })
    }
}

impl fmt::Display for PortPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.bus)?;
        for (i, p) in self.ports.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Serialize for PortPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_paths() {
        let p: PortPath = "3-1.4.2".parse().unwrap();
        assert_eq!(p.bus(), 3);
        assert_eq!(p.ports(), &[1, 4, 2]);
        assert_eq!(p.depth(), 3);
        assert_eq!(p.to_string(), "3-1.4.2");
        let deep: PortPath = "1-1.3.2.2".parse().unwrap();
        assert!(deep.is_within(&"1-1.3".parse().unwrap()));
        assert!(!deep.is_within(&"1-1.4".parse().unwrap()));
        assert!(!deep.is_within(&"2-1.3".parse().unwrap()));
        assert_eq!("1-7".parse::<PortPath>().unwrap().parent(), None);
    }

    #[test]
    fn rejects_what_is_not_a_device_path() {
        let cases = [
            ("", PortPathProblem::Empty),
            ("usb1", PortPathProblem::NoPorts),
            ("1", PortPathProblem::NoPorts),
            ("-2", PortPathProblem::Empty),
            ("1-", PortPathProblem::Empty),
            ("1-2..3", PortPathProblem::Empty),
            ("1-2.", PortPathProblem::Empty),
            ("0-1", PortPathProblem::BadBus),
            ("256-1", PortPathProblem::BadBus),
            ("01-1", PortPathProblem::BadBus),
            ("1-0", PortPathProblem::BadPort),
            ("1-02", PortPathProblem::BadPort),
            ("1-+2", PortPathProblem::BadPort),
            ("1-2-3", PortPathProblem::BadPort),
            ("1-x", PortPathProblem::BadPort),
            ("1-1.1.1.1.1.1.1.1", PortPathProblem::TooDeep),
            ("1-2:1.0", PortPathProblem::Interface),
        ];
        for (text, problem) in cases {
            let e = text.parse::<PortPath>().unwrap_err();
            assert_eq!(e.problem, problem, "{text:?}");
        }
        assert!("1-1.1.1.1.1.1.1".parse::<PortPath>().is_ok());
    }

    #[test]
    fn new_checks_like_parse() {
        assert_eq!(PortPath::new(1, &[2, 3]).unwrap().to_string(), "1-2.3");
        assert_eq!(
            PortPath::new(0, &[1]).unwrap_err().problem,
            PortPathProblem::BadBus
        );
        assert_eq!(
            PortPath::new(1, &[]).unwrap_err().problem,
            PortPathProblem::NoPorts
        );
        assert_eq!(
            PortPath::new(1, &[1, 0]).unwrap_err().problem,
            PortPathProblem::BadPort
        );
        assert_eq!(
            PortPath::new(1, &[1; 8]).unwrap_err().problem,
            PortPathProblem::TooDeep
        );
    }

    #[test]
    fn serde_is_the_string() {
        let p: PortPath = "2-4.1".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"2-4.1\"");
        assert_eq!(serde_json::from_str::<PortPath>("\"2-4.1\"").unwrap(), p);
        assert!(serde_json::from_str::<PortPath>("\"2-0\"").is_err());
    }
}
