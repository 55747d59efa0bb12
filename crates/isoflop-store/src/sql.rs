//! What the store's SQL needs from a database, and nothing more: a transaction that executes
//! statements and returns rows of plain [`Value`]s. Both backends implement it ([`Tx`] over a
//! rusqlite or a postgres transaction), so every verb's SQL and decision logic is written once
//! (in [`crate::store`]) and the conformance suite proves it on both.
//!
//! The SQL is the subset SQLite and PostgreSQL share: `?N` placeholders (rewritten to `$N`
//! for PostgreSQL), `INSERT ... ON CONFLICT`, `RETURNING`, row values. Both schemas name the
//! insertion order of `sweeps` and `sweep_runs` `rowid` (SQLite's own; a `BIGSERIAL` in
//! PostgreSQL).

use crate::{Result, StoreError};

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// What can be bound as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Parameters of a statement: `args![run_id, attempt]`.
macro_rules! args {
    ($($e:expr),* $(,)?) => { &[$($crate::sql::ToValue::to_value(&$e)),*][..] };
}
pub(crate) use args;

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
    const EXPECTED: &'static str;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "an integer";
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i as u64)
    }
    const EXPECTED: &'static str = "an integer";
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "a number";
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "text";
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
    const EXPECTED: &'static str = T::EXPECTED;
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as a `T`; a missing column or another type is [`StoreError::Corrupt`].
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))?;
        T::from_value(v).ok_or_else(|| StoreError::Corrupt(format!("column {i}: expected {}, found {v:?}", T::EXPECTED)))
    }
}

/// A transaction of a backend. Every verb of the store is one (see [`Backend::transact`]).
pub trait Tx {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<usize>;
    /// Runs a query; its rows.
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>>;
    /// Called before an event is inserted: from then until commit no other transaction inserts
    /// one, so event ids become visible in increasing order (a reader that follows the log by
    /// id never skips one committed late). SQLite's writers are serial already.
    fn order_events(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called after rows were inserted with their ids (a store copy): the next event id is
    /// past them. SQLite's AUTOINCREMENT follows by itself.
    fn copied_ids(&mut self) -> Result<()> {
        Ok(())
    }
}

impl dyn Tx + '_ {
    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
    /// The first column of the first row (a query that always returns one, like `COUNT`).
    pub fn scalar<T: FromValue>(&mut self, sql: &str, args: &[Value]) -> Result<T> {
        self.query_opt(sql, args)?.ok_or_else(|| StoreError::Corrupt(format!("no row from `{sql}`")))?.get(0)
    }
}

/// A database the store runs on: it runs a closure as one transaction. A write transaction
/// may run the closure again when the database could not serialise it with another
/// (PostgreSQL's serialisation failures), so the closure must not act outside the
/// transaction.
pub trait Backend: Send + Sync + 'static {
    fn transact<T>(&self, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<T>) -> Result<T>;
}
