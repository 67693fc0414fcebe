//! A cheap look at a binary plist's object table before the real parser builds a value.
//!
//! Binary plists address objects by reference, so one container can be referenced many times:
//! forty arrays that each hold two references to the next one are a few hundred bytes on the
//! wire and 2^40 values once expanded. This walks the object graph once, memoising each
//! object's expanded [`Cost`], and reports the root's. It never decides validity: anything it
//! does not understand is left to the plist parser (which returns a typed error), and the
//! builder counts again while it builds, so the guard only has to be right about what it reads.
//!
//! The guard charges exactly what the builder charges ([`NODE_COST`] per value plus the bytes of
//! strings and data), except for UTF-16 strings, which it charges 3 bytes per code unit (the
//! most their UTF-8 form can take): it may over-estimate, never under-estimate.

use crate::NODE_COST;

/// The expanded size of a (sub)tree: how many values, and how many bytes the builder charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Cost {
    pub(crate) values: u64,
    pub(crate) bytes: u64,
}

impl Cost {
    fn leaf(payload: u64) -> Cost {
        Cost {
            values: 1,
            bytes: NODE_COST.saturating_add(payload),
        }
    }

    fn add(self, other: Cost) -> Cost {
        Cost {
            values: self.values.saturating_add(other.values),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// A trailer that is consistent with the input: the offset table lies inside the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    offset_size: usize,
    ref_size: usize,
    pub(crate) num_objects: usize,
    root: usize,
    table: usize,
}

/// Reads and checks the trailer, or `None` when the input is not a binary plist this guard can
/// read (the parser will then say what is wrong).
pub(crate) fn trailer(data: &[u8]) -> Option<Trailer> {
    if data.len() < 8 + 32 || !data.starts_with(b"bplist00") {
        return None;
    }
    let bytes = data.get(data.len() - 32..)?;
    let offset_size = usize::from(*bytes.get(6)?);
    let ref_size = usize::from(*bytes.get(7)?);
    if !(1..=8).contains(&offset_size) || !(1..=8).contains(&ref_size) {
        return None;
    }
    let num_objects = usize::try_from(be_uint(bytes.get(8..16)?)?).ok()?;
    let root = usize::try_from(be_uint(bytes.get(16..24)?)?).ok()?;
    let table = usize::try_from(be_uint(bytes.get(24..32)?)?).ok()?;
    let table_end = table.checked_add(num_objects.checked_mul(offset_size)?)?;
    if table_end > data.len() - 32 || root >= num_objects {
        return None;
    }
    Some(Trailer {
        offset_size,
        ref_size,
        num_objects,
        root,
        table,
    })
}

/// Expanded cost of the root object, or `None` when the input is not a binary plist this guard
/// can read (the parser will then say what is wrong).
pub(crate) fn expanded(data: &[u8]) -> Option<Cost> {
    let t = trailer(data)?;
    let graph = Graph {
        data: data.get(..data.len() - 32)?,
        table: data.get(t.table..t.table + t.num_objects * t.offset_size)?,
        offset_size: t.offset_size,
        ref_size: t.ref_size,
    };
    graph.walk(t.root, t.num_objects)
}

struct Graph<'a> {
    data: &'a [u8],
    table: &'a [u8],
    offset_size: usize,
    ref_size: usize,
}

/// One object's own cost and where its child references are.
struct Object {
    own: Cost,
    refs_at: usize,
    children: usize,
}

struct Frame {
    index: usize,
    object: Object,
    next: usize,
    total: Cost,
}

#[derive(Clone, Copy)]
enum Slot {
    Unseen,
    OnStack,
    Done(Cost),
}

impl Graph<'_> {
    fn offset_of(&self, index: usize) -> Option<usize> {
        let at = index.checked_mul(self.offset_size)?;
        let end = at.checked_add(self.offset_size)?;
        usize::try_from(be_uint(self.table.get(at..end)?)?).ok()
    }

    fn child(&self, object: &Object, n: usize) -> Option<usize> {
        let at = object.refs_at.checked_add(n.checked_mul(self.ref_size)?)?;
        let end = at.checked_add(self.ref_size)?;
        usize::try_from(be_uint(self.data.get(at..end)?)?).ok()
    }

    /// Reads an object marker (and its length, if any) at `index`.
    fn object(&self, index: usize) -> Option<Object> {
        let at = self.offset_of(index)?;
        let marker = *self.data.get(at)?;
        let info = usize::from(marker & 0x0f);
        let leaf = |payload: u64| {
            Some(Object {
                own: Cost::leaf(payload),
                refs_at: 0,
                children: 0,
            })
        };
        match marker >> 4 {
            0x0 | 0x1 | 0x2 | 0x3 | 0x8 => leaf(0),
            kind @ (0x4 | 0x5 | 0x6 | 0x7 | 0xa | 0xb | 0xc | 0xd) => {
                let (count, body) = self.count(at, info)?;
                let count64 = u64::try_from(count).ok()?;
                match kind {
                    0x4 | 0x5 | 0x7 => leaf(count64),
                    0x6 => leaf(count64.saturating_mul(3)),
                    _ => {
                        let children = if kind == 0xd {
                            count.checked_mul(2)?
                        } else {
                            count
                        };
                        let end = body.checked_add(children.checked_mul(self.ref_size)?)?;
                        if end > self.data.len() {
                            return None;
                        }
                        Some(Object {
                            own: Cost::leaf(0),
                            refs_at: body,
                            children,
                        })
                    }
                }
            }
            _ => None,
        }
    }

    /// The element count of a sized object and the offset where its body starts.
    fn count(&self, at: usize, info: usize) -> Option<(usize, usize)> {
        if info != 0x0f {
            return Some((info, at.checked_add(1)?));
        }
        // Like the parser: only the low two bits of the length marker count (1, 2, 4, 8 bytes).
        let int_marker = *self.data.get(at.checked_add(1)?)?;
        let width = 1usize << (int_marker & 0x03);
        let start = at.checked_add(2)?;
        let count =
            usize::try_from(be_uint(self.data.get(start..start.checked_add(width)?)?)?).ok()?;
        Some((count, start + width))
    }

    /// Depth-first walk with an explicit stack; each object's expanded cost is computed once.
    fn walk(&self, root: usize, num_objects: usize) -> Option<Cost> {
        let mut slots = vec![Slot::Unseen; num_objects];
        let mut stack = vec![Frame {
            index: root,
            object: self.object(root)?,
            next: 0,
            total: Cost::default(),
        }];
        *slots.get_mut(root)? = Slot::OnStack;
        loop {
            let frame = stack.last_mut()?;
            if frame.next < frame.object.children {
                let child = self.child(&frame.object, frame.next);
                frame.next += 1;
                // A reference the parser will refuse (out of range, unreadable object, cycle)
                // still costs a node: siblings before it would be expanded first.
                let known = match child.and_then(|c| slots.get(c).copied().map(|s| (c, s))) {
                    Some((child, Slot::Unseen)) => match self.object(child) {
                        Some(object) => {
                            if let Some(slot) = slots.get_mut(child) {
                                *slot = Slot::OnStack;
                            }
                            stack.push(Frame {
                                index: child,
                                object,
                                next: 0,
                                total: Cost::default(),
                            });
                            continue;
                        }
                        None => Cost::leaf(0),
                    },
                    Some((_, Slot::OnStack)) | None => Cost::leaf(0),
                    Some((_, Slot::Done(known))) => known,
                };
                frame.total = frame.total.add(known);
            } else {
                let done = stack.pop()?;
                let total = done.total.add(done.object.own);
                *slots.get_mut(done.index)? = Slot::Done(total);
                match stack.last_mut() {
                    Some(parent) => parent.total = parent.total.add(total),
                    None => return Some(total),
                }
            }
        }
    }
}

fn be_uint(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 8 {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(value: &plist::Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.to_writer_binary(&mut out).unwrap();
        out
    }

    fn expanded_size(data: &[u8]) -> Option<u64> {
        expanded(data).map(|cost| cost.bytes)
    }

    #[test]
    fn plain_values_cost_about_their_size() {
        let value = plist::Value::Data(vec![7; 100_000]);
        let cost = expanded_size(&binary(&value)).unwrap();
        assert!((100_000..100_000 + 1000).contains(&cost), "{cost}");
    }

    #[test]
    fn values_are_counted_per_use() {
        let shared = plist::Value::String("same".into());
        let value = plist::Value::Array(vec![shared.clone(), shared.clone(), shared]);
        // The writer stores "same" once; it still expands to three values plus the array.
        assert_eq!(expanded(&binary(&value)).unwrap().values, 4);
    }

    #[test]
    fn shared_subtrees_are_counted_per_use() {
        let cost = expanded(&crate::fuzzing::reference_bomb(30)).unwrap();
        assert!(cost.bytes > 1u64 << 30, "{cost:?}");
        assert!(cost.values > 1u64 << 30, "{cost:?}");
    }

    #[test]
    fn a_bad_reference_after_a_bomb_does_not_hide_it() {
        // Found by the fuzzer: the parser expands the first (valid) child before it reaches
        // the out-of-range second one, so the guard must keep counting past bad references.
        let mut data = crate::fuzzing::reference_bomb(40);
        data[8 + 3 + 2] = 0x42; // object 1's second reference: 66, past the 41 objects
        let cost = expanded_size(&data).unwrap();
        assert!(cost > 1u64 << 38, "{cost}");
        // Same for a length byte whose high nibble is not 0x1 (the parser ignores it).
        let mut data = b"bplist00".to_vec();
        data.extend_from_slice(&[0xaf, 0x00, 0x02, 0x01, 0x01, 0x50]);
        let table = data.len();
        data.extend_from_slice(&[8, 13]);
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1]);
        data.extend_from_slice(&2u64.to_be_bytes());
        data.extend_from_slice(&0u64.to_be_bytes());
        data.extend_from_slice(&(table as u64).to_be_bytes());
        assert_eq!(expanded_size(&data), Some(3 * NODE_COST));
        assert!(plist::Value::from_reader(std::io::Cursor::new(&data)).is_ok());
    }

    #[test]
    fn garbage_is_left_to_the_parser() {
        assert_eq!(expanded_size(b"<plist/>"), None);
        assert_eq!(expanded_size(&[0u8; 64]), None);
        let mut data = b"bplist00".to_vec();
        data.extend_from_slice(&[0xff; 40]);
        assert_eq!(expanded_size(&data), None);
        assert_eq!(trailer(b"<plist/>"), None);
    }
}
