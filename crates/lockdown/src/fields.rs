//! Taking typed fields out of a message dictionary, with errors that name the message.

use plist::{Dictionary, Value};

use crate::frame::type_name;
use crate::CodecError;

/// A message dictionary being taken apart; `message` names it in errors.
///
/// Fields are taken without disturbing the order of the others, so what is left over (and
/// re-encoded verbatim) keeps the peer's order.
pub(crate) struct Fields {
    pub(crate) dict: Dictionary,
    pub(crate) message: String,
    taken: Vec<&'static str>,
}

impl Fields {
    pub(crate) fn new(dict: Dictionary, message: impl Into<String>) -> Self {
        Fields {
            dict,
            message: message.into(),
            taken: Vec::new(),
        }
    }

    fn take(&mut self, field: &'static str) -> Option<Value> {
        if self.taken.contains(&field) {
            return None;
        }
        let slot = self.dict.get_mut(field)?;
        self.taken.push(field);
        Some(std::mem::replace(slot, Value::Boolean(false)))
    }

    pub(crate) fn contains(&self, field: &'static str) -> bool {
        self.dict.contains_key(field) && !self.taken.contains(&field)
    }

    fn wrong(&self, field: &'static str, expected: &'static str, found: &Value) -> CodecError {
        CodecError::WrongType {
            message: self.message.clone(),
            field,
            expected,
            found: type_name(found),
        }
    }

    pub(crate) fn missing(&self, field: &'static str) -> CodecError {
        CodecError::MissingField {
            message: self.message.clone(),
            field,
        }
    }

    pub(crate) fn value(&mut self, field: &'static str) -> Option<Value> {
        self.take(field)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<Option<String>, CodecError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.wrong(field, "string", &other)),
        }
    }

    pub(crate) fn required_string(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.string(field)?.ok_or_else(|| self.missing(field))
    }

    pub(crate) fn boolean(&mut self, field: &'static str) -> Result<Option<bool>, CodecError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Boolean(flag)) => Ok(Some(flag)),
            Some(other) => Err(self.wrong(field, "boolean", &other)),
        }
    }

    pub(crate) fn unsigned(&mut self, field: &'static str) -> Result<Option<u64>, CodecError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Integer(int)) => match int.as_unsigned() {
                Some(n) => Ok(Some(n)),
                None => Err(CodecError::OutOfRange {
                    message: self.message.clone(),
                    field,
                    value: int.to_string(),
                    range: "0..=2^64-1",
                }),
            },
            Some(other) => Err(self.wrong(field, "integer", &other)),
        }
    }

    pub(crate) fn data(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, CodecError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Data(bytes)) => Ok(Some(bytes)),
            Some(other) => Err(self.wrong(field, "data", &other)),
        }
    }

    pub(crate) fn dictionary(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Dictionary>, CodecError> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Dictionary(dict)) => Ok(Some(dict)),
            Some(other) => Err(self.wrong(field, "dictionary", &other)),
        }
    }

    /// Whatever is left.
    pub(crate) fn rest(self) -> Dictionary {
        let Fields {
            mut dict, taken, ..
        } = self;
        if !taken.is_empty() {
            dict.retain(|key, _| !taken.contains(&key.as_str()));
        }
        dict
    }
}

/// Builds a message dictionary field by field; `None` fields are left out.
#[derive(Default)]
pub(crate) struct Builder {
    pub(crate) dict: Dictionary,
}

impl Builder {
    pub(crate) fn put(&mut self, field: &str, value: impl Into<Value>) -> &mut Self {
        self.dict.insert(field.to_owned(), value.into());
        self
    }

    pub(crate) fn opt<V: Into<Value>>(&mut self, field: &str, value: Option<V>) -> &mut Self {
        if let Some(value) = value {
            self.dict.insert(field.to_owned(), value.into());
        }
        self
    }

    pub(crate) fn data(&mut self, field: &str, value: Option<&[u8]>) -> &mut Self {
        if let Some(bytes) = value {
            self.dict
                .insert(field.to_owned(), Value::Data(bytes.to_vec()));
        }
        self
    }

    /// Adds fields that are not already set (typed fields win over leftovers).
    pub(crate) fn extend(&mut self, rest: &Dictionary) -> &mut Self {
        for (key, value) in rest {
            if !self.dict.contains_key(key) {
                self.dict.insert(key.clone(), value.clone());
            }
        }
        self
    }

    pub(crate) fn finish(&mut self) -> Dictionary {
        std::mem::take(&mut self.dict)
    }
}
