//! Reading result sets by column name, and values from Rust types.

use crate::db::{RowSet, Value};

impl RowSet {
    /// Rows as views that look values up by column name.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows
            .iter()
            .map(move |values| Row { set: self, values })
    }
}

/// One row of a [`RowSet`].
pub struct Row<'a> {
    set: &'a RowSet,
    values: &'a [Value],
}

impl<'a> Row<'a> {
    /// The value of a column; `Value::Null` when there is no such column.
    pub fn get(&self, column: &str) -> &'a Value {
        self.set
            .columns
            .iter()
            .position(|c| c == column)
            // A row shorter than its columns (host data is not trusted to
            // be rectangular) reads as null, not a trap.
            .and_then(|i| self.values.get(i))
            .unwrap_or(&Value::Null)
    }

    pub fn text(&self, column: &str) -> Option<&'a str> {
        self.get(column).as_text()
    }

    pub fn int(&self, column: &str) -> Option<i64> {
        self.get(column).as_int()
    }
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Json(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Boolean(b) => Some(*b as i64),
            Value::Float(f) => Some(*f as i64),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    /// Microseconds since the epoch, for timestamp values.
    pub fn as_timestamp(&self) -> Option<i64> {
        match self {
            Value::Timestamp(t) => Some(*t),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_row_reads_null() {
        let set = RowSet {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![Value::Int(1)]],
        };
        let row = set.iter().next().unwrap();
        assert_eq!(row.int("a"), Some(1));
        assert!(matches!(row.get("b"), Value::Null));
        assert!(matches!(row.get("c"), Value::Null));
    }
}
