//! One NDJSON line checked without building a `serde_json::Value`: whether it is JSON and an
//! object, its shape (the key and kind of every value, which is all schema inference looks
//! at), and, for declared integer columns, a number with a fraction. Building a `Value` per
//! line, a map of owned strings, took a quarter of ingesting an inferred NDJSON file, and
//! more in the guest, whose allocator is slower; most lines share a handful of shapes, so
//! only a line of a new shape is built as a `Value` for inference.

use std::collections::HashSet;
use std::fmt;

use datafusion::arrow::datatypes::{DataType, Schema};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What [`LineScan::scan`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    Object,
    NotObject,
}

/// Scans lines one after another, reusing its buffers.
pub(crate) struct LineScan {
    /// The declared integer columns, in the schema's order.
    int_columns: Vec<(String, DataType)>,
    /// Per integer column: its value in the last line, when it has a fraction.
    fractions: Vec<Option<f64>>,
    /// Whether shapes are wanted (inference); not when the schema is declared.
    shapes: bool,
    shape: String,
    seen: HashSet<String>,
}

impl LineScan {
    pub(crate) fn new(declared: Option<&Schema>) -> Self {
        let int_columns: Vec<_> = declared
            .map(|s| {
                s.fields()
                    .iter()
                    .filter(|f| f.data_type().is_integer())
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect()
            })
            .unwrap_or_default();
        LineScan {
            fractions: vec![None; int_columns.len()],
            int_columns,
            shapes: declared.is_none(),
            shape: String::new(),
            seen: HashSet::new(),
        }
    }

    /// Reads `text` as one JSON value, with the errors `serde_json::from_str` gives.
    pub(crate) fn scan(&mut self, text: &str) -> Result<Line, serde_json::Error> {
        self.shape.clear();
        self.fractions.fill(None);
        let mut de = serde_json::Deserializer::from_str(text);
        let line = Top(self).deserialize(&mut de)?;
        de.end()?;
        Ok(line)
    }

    /// Whether the last line scanned is the first of its shape: only such a line adds
    /// anything to an inferred schema, since inference only joins the types it has seen.
    pub(crate) fn new_shape(&mut self) -> bool {
        !self.seen.contains(&self.shape) && self.seen.insert(self.shape.clone())
    }

    /// Why the last line cannot go into the declared schema: a declared integer column
    /// holding a number with a fraction (`7.9`), which the JSON decoder would truncate to 7.
    /// (`-0` reads as a float, and is the integer 0.)
    pub(crate) fn non_integral(&self) -> Option<String> {
        self.int_columns
            .iter()
            .zip(&self.fractions)
            .find_map(|((name, t), v)| {
                let n = serde_json::Number::from_f64((*v)?)?;
                Some(format!("column `{name}`: {n} is not an integer ({t})"))
            })
    }
}

/// The line's top level: an object's keys are matched against the integer columns.
struct Top<'s>(&'s mut LineScan);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Line;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Line, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Line;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let scan = self.0;
        scan.shape.push('{');
        loop {
            let out = scan.shapes.then_some(&mut scan.shape);
            let Some(column) = map.next_key_seed(Key(out))? else {
                break;
            };
            let int = scan.int_columns.iter().position(|(n, _)| *n == column);
            let mut number = None;
            map.next_value_seed(Shape {
                out: &mut scan.shape,
                number: &mut number,
                shapes: scan.shapes,
            })?;
            // A key seen twice keeps its last value, as in a `Value`.
            if let Some(i) = int {
                scan.fractions[i] = number.filter(|v| *v != 0.0);
            }
        }
        scan.shape.push('}');
        Ok(Line::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Line, A::Error> {
        let mut number = None;
        Shape {
            out: &mut self.0.shape,
            number: &mut number,
            shapes: false,
        }
        .visit_seq(seq)?;
        Ok(Line::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_unit<E>(self) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
}

/// An object key, written into the shape (when shapes are wanted) with its length first, so
/// no key can be mistaken for shape marks. Answers the key, owned only when it has escapes.
struct Key<'s>(Option<&'s mut String>);

impl Key<'_> {
    fn write(self, v: &str) {
        if let Some(out) = self.0 {
            // By hand: `write!` took a tenth of the guest's time here.
            let mut n = v.len();
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend(digits[at..].iter().map(|&d| char::from(d)));
            out.push(':');
            out.push_str(v);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.write(v);
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.write(v);
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// A value below the top level: its kind written into the shape as inference sees it (an
/// integer that fits i64, any other number, …); the number itself kept for the caller.
struct Shape<'s> {
    out: &'s mut String,
    number: &'s mut Option<f64>,
    shapes: bool,
}

impl Shape<'_> {
    fn mark<E>(self, kind: char) -> Result<(), E> {
        if self.shapes {
            self.out.push(kind);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Shape<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.mark('n')
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.mark('b')
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.mark('i')
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        // Inference takes only what fits i64 as an integer.
        self.mark(if i64::try_from(v).is_ok() { 'i' } else { 'f' })
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        *self.number = Some(v);
        self.mark('f')
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.mark('s')
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, shapes) = (self.out, self.shapes);
        if shapes {
            out.push('[');
        }
        // A run of elements of one shape is written once: inference joins the elements'
        // types, so repeating one adds nothing, and long lists keep short shapes.
        let mut last: Option<(usize, usize)> = None;
        loop {
            let start = out.len();
            let mut ignored = None;
            let more = seq.next_element_seed(Shape {
                out,
                number: &mut ignored,
                shapes,
            })?;
            if more.is_none() {
                break;
            }
            let end = out.len();
            match last {
                Some((s, e)) if out[s..e] == out[start..end] => out.truncate(start),
                _ => last = Some((start, end)),
            }
        }
        if shapes {
            out.push(']');
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (out, shapes) = (self.out, self.shapes);
        if shapes {
            out.push('{');
        }
        loop {
            let key = map.next_key_seed(Key(shapes.then_some(&mut *out)))?;
            if key.is_none() {
                break;
            }
            let mut ignored = None;
            map.next_value_seed(Shape {
                out,
                number: &mut ignored,
                shapes,
            })?;
        }
        if shapes {
            out.push('}');
        }
        Ok(())
    }
}
