//! Builds a [`Value`] from plist events with an explicit stack, charging every value against the
//! limits as it arrives.
//!
//! Nothing deeper than `max_depth` is ever built, so whatever is dropped (the partial tree on an
//! error, or the finished value later) has bounded depth and `Value`'s recursive `Drop` is safe.

use std::borrow::Cow;

use plist::stream::Event;
use plist::{Dictionary, Value};

use crate::{kind, Error, Format, Limits, Measure, NODE_COST};

/// Largest capacity reserved for an array from its announced length (binary plists announce it;
/// the rest grows as elements arrive).
const MAX_ARRAY_RESERVE: usize = 1024;

enum Open {
    Array(Vec<Value>),
    Dict {
        dict: Dictionary,
        key: Option<String>,
    },
}

pub(crate) struct Builder<'l> {
    limits: &'l Limits,
    format: Format,
    stack: Vec<Open>,
    root: Option<Value>,
    values: u64,
    bytes: u64,
}

impl<'l> Builder<'l> {
    pub(crate) fn new(limits: &'l Limits, format: Format) -> Builder<'l> {
        Builder {
            limits,
            format,
            stack: Vec::new(),
            root: None,
            values: 0,
            bytes: 0,
        }
    }

    /// Feeds every event, then returns the root value.
    pub(crate) fn build<'e, I>(mut self, events: I, len: usize) -> Result<Value, Error>
    where
        I: Iterator<Item = Result<Event<'e>, plist::Error>>,
    {
        for event in events {
            let event = event.map_err(|source| Error::Parse {
                format: self.format,
                len,
                source,
            })?;
            self.event(event)?;
        }
        match (self.root.take(), self.stack.len()) {
            (Some(root), 0) => Ok(root),
            (_, open) => Err(Error::Unfinished {
                format: self.format,
                open,
            }),
        }
    }

    fn event(&mut self, event: Event<'_>) -> Result<(), Error> {
        match event {
            Event::StartArray(len) => {
                let reserve = len
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0)
                    .min(MAX_ARRAY_RESERVE);
                self.open(Open::Array(Vec::with_capacity(reserve)), "array")
            }
            Event::StartDictionary(_) => self.open(
                Open::Dict {
                    dict: Dictionary::new(),
                    key: None,
                },
                "dictionary",
            ),
            Event::EndCollection => self.close(),
            Event::Boolean(b) => self.scalar(Value::Boolean(b), 0),
            Event::Data(data) => {
                let len = data.len();
                self.scalar(Value::Data(data.into_owned()), len)
            }
            Event::Date(date) => self.scalar(Value::Date(date), 0),
            Event::Integer(int) => self.scalar(Value::Integer(int), 0),
            Event::Real(real) => self.scalar(Value::Real(real), 0),
            Event::String(text) => {
                let len = text.len();
                self.scalar(Value::String(Cow::into_owned(text)), len)
            }
            Event::Uid(uid) => self.scalar(Value::Uid(uid), 0),
            // `Event` is non-exhaustive: a kind this crate does not know is not built.
            _ => Err(Error::Unsupported {
                format: self.format,
            }),
        }
    }

    /// Charges one value of `payload` bytes.
    fn charge(&mut self, payload: usize) -> Result<(), Error> {
        self.values = self.values.saturating_add(1);
        let payload = u64::try_from(payload).unwrap_or(u64::MAX);
        self.bytes = self.bytes.saturating_add(NODE_COST.saturating_add(payload));
        if self.values > self.limits.max_values() {
            return Err(Error::TooLarge {
                format: self.format,
                measure: Measure::Values,
                max: self.limits.max_values(),
                found: self.values,
            });
        }
        if self.bytes > self.limits.max_bytes() {
            return Err(Error::TooLarge {
                format: self.format,
                measure: Measure::Bytes,
                max: self.limits.max_bytes(),
                found: self.bytes,
            });
        }
        Ok(())
    }

    /// Refuses a value that cannot go where the stream is (a container as a dictionary key, a
    /// second root).
    fn check_slot(&self, found: &'static str) -> Result<(), Error> {
        match self.stack.last() {
            Some(Open::Dict { key: None, .. }) => Err(Error::KeyNotString {
                format: self.format,
                found,
            }),
            None if self.root.is_some() => Err(Error::TrailingValue {
                format: self.format,
                found,
            }),
            _ => Ok(()),
        }
    }

    fn open(&mut self, open: Open, found: &'static str) -> Result<(), Error> {
        self.check_slot(found)?;
        if self.stack.len() >= self.limits.max_depth() {
            return Err(Error::TooDeep {
                format: self.format,
                max: self.limits.max_depth(),
            });
        }
        self.charge(0)?;
        self.stack.push(open);
        Ok(())
    }

    fn close(&mut self) -> Result<(), Error> {
        let value = match self.stack.pop() {
            None => {
                return Err(Error::UnbalancedEnd {
                    format: self.format,
                })
            }
            Some(Open::Array(items)) => Value::Array(items),
            Some(Open::Dict { dict, key: None }) => Value::Dictionary(dict),
            Some(Open::Dict { key: Some(key), .. }) => {
                return Err(Error::MissingValue {
                    format: self.format,
                    key: key.chars().take(64).collect(),
                })
            }
        };
        self.place(value)
    }

    fn scalar(&mut self, value: Value, payload: usize) -> Result<(), Error> {
        self.charge(payload)?;
        self.place(value)
    }

    fn place(&mut self, value: Value) -> Result<(), Error> {
        match self.stack.last_mut() {
            None => {
                if self.root.is_some() {
                    return Err(Error::TrailingValue {
                        format: self.format,
                        found: kind(&value),
                    });
                }
                self.root = Some(value);
            }
            Some(Open::Array(items)) => items.push(value),
            Some(Open::Dict { dict, key }) => match key.take() {
                Some(key) => {
                    // A repeated key replaces the earlier value, as in plist's own builder.
                    dict.insert(key, value);
                }
                None => match value {
                    Value::String(text) => *key = Some(text),
                    other => {
                        return Err(Error::KeyNotString {
                            format: self.format,
                            found: kind(&other),
                        })
                    }
                },
            },
        }
        Ok(())
    }
}
