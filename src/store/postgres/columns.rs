//! The columns of `requests` written from a record, listed once
//! ([`COLUMNS`]): the record itself and what the queries select by (its
//! state, due time, deadline …), derived from it. The insert, the update
//! and the check are written from the list, so a column added there is
//! written, rewritten and checked alike.

use std::sync::LazyLock;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::conn::{Db, Tx};
use super::ms;
use crate::store::{encode_text, RequestRecord, Work};

/// A column of `requests` and how its value comes from a record.
pub(super) struct Column {
    pub name: &'static str,
    pub role: Role,
    pub derive: Derive,
}

/// What a column is to its record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The request's id: the row's key.
    Key,
    /// Written when the request is stored; a record never changes it.
    Fixed,
    /// The record itself, which the others are derived from.
    Record,
    /// Derived from the record, written again with each change.
    Derived,
}

/// A column's value for a record, by its SQL type.
pub(super) enum Derive {
    Text(fn(&RequestRecord) -> Option<String>),
    Int8(fn(&RequestRecord) -> Option<i64>),
    Bool(fn(&RequestRecord) -> bool),
}

/// Every column written from a record, the key first, in the order of
/// the table (and of [`SELECT`]).
pub(super) const COLUMNS: [Column; 11] = [
    Column {
        name: "id",
        role: Role::Key,
        derive: Derive::Text(|r| Some(r.id.to_string())),
    },
    Column {
        name: "case_no",
        role: Role::Fixed,
        derive: Derive::Text(|r| Some(r.case.to_string())),
    },
    Column {
        name: "state",
        role: Role::Derived,
        derive: Derive::Text(|r| Some(r.state.name().to_owned())),
    },
    Column {
        name: "registry",
        role: Role::Fixed,
        derive: Derive::Text(|r| Some(r.registry.to_string())),
    },
    Column {
        name: "due_ms",
        role: Role::Derived,
        derive: Derive::Int8(|r| r.due_ms.map(ms)),
    },
    Column {
        name: "work",
        role: Role::Derived,
        derive: Derive::Text(|r| Work::of(r).map(|w| w.code().to_owned())),
    },
    Column {
        name: "record",
        role: Role::Record,
        derive: Derive::Text(|r| Some(encode_text(r))),
    },
    Column {
        name: "deadline_ms",
        role: Role::Derived,
        derive: Derive::Int8(|r| Some(ms(r.deadline_ms))),
    },
    Column {
        name: "attention",
        role: Role::Derived,
        derive: Derive::Bool(|r| r.needs_attention()),
    },
    Column {
        name: "at_risk",
        role: Role::Derived,
        derive: Derive::Bool(|r| r.at_risk_open()),
    },
    Column {
        // When the evidence job is next to try for its document (a pending
        // timestamp or signed document).
        name: "stamp_ms",
        role: Role::Derived,
        derive: Derive::Int8(|r| r.evidence_due_ms().map(ms)),
    },
];

impl Column {
    fn sql_type(&self) -> &'static str {
        match self.derive {
            Derive::Text(_) => "text",
            Derive::Int8(_) => "int8",
            Derive::Bool(_) => "bool",
        }
    }

    /// This column of several records: an array for `unnest`.
    fn array(&self, records: &[&RequestRecord]) -> Box<dyn ToSql + Sync + Send> {
        match self.derive {
            Derive::Text(f) => Box::new(records.iter().map(|r| f(r)).collect::<Vec<_>>()),
            Derive::Int8(f) => Box::new(records.iter().map(|r| f(r)).collect::<Vec<_>>()),
            Derive::Bool(f) => Box::new(records.iter().map(|r| f(r)).collect::<Vec<_>>()),
        }
    }

    /// Does the value at `i` of a row read by [`SELECT`] agree with `r`?
    pub(super) fn agrees(&self, r: &RequestRecord, row: &Row, i: usize) -> bool {
        match self.derive {
            Derive::Text(f) => f(r) == row.get::<_, Option<String>>(i),
            Derive::Int8(f) => f(r) == row.get::<_, Option<i64>>(i),
            Derive::Bool(f) => Some(f(r)) == row.get::<_, Option<bool>>(i),
        }
    }
}

/// The columns' names, comma-separated.
fn names<'a>(cols: impl Iterator<Item = &'a Column>) -> String {
    cols.map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// A multi-row statement: one array parameter per column, in order.
pub(super) struct Statement {
    sql: String,
    columns: Vec<&'static Column>,
}

impl Statement {
    fn new(columns: Vec<&'static Column>, sql: impl FnOnce(&str, &str) -> String) -> Statement {
        let arrays = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = sql(&names(columns.iter().copied()), &arrays);
        Statement { sql, columns }
    }

    /// Runs the statement over `records`.
    pub(super) async fn run(
        &self,
        t: &Tx<'_>,
        records: &[&RequestRecord],
    ) -> Result<u64, tokio_postgres::Error> {
        let arrays: Vec<_> = self.columns.iter().map(|c| c.array(records)).collect();
        let p: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| &**a as _).collect();
        t.run(&self.sql, &p).await
    }
}

/// New records, every column.
pub(super) static INSERT: LazyLock<Statement> = LazyLock::new(|| {
    Statement::new(COLUMNS.iter().collect(), |names, arrays| {
        format!("INSERT INTO requests ({names}) SELECT * FROM unnest({arrays})")
    })
});

/// Changed records, by id: the record and what is derived from it.
pub(super) static UPDATE: LazyLock<Statement> = LazyLock::new(|| {
    let columns: Vec<_> = COLUMNS.iter().filter(|c| c.role != Role::Fixed).collect();
    let set = columns
        .iter()
        .filter(|c| c.role != Role::Key)
        .map(|c| format!("{0} = u.{0}", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    Statement::new(columns, |names, arrays| {
        format!(
            "UPDATE requests AS r SET {set} FROM unnest({arrays}) AS u({names}) WHERE r.id = u.id"
        )
    })
});

/// A page of rows in id order, after `$1`, at most `$2`: every column, as
/// [`COLUMNS`] lists them.
pub(super) static SELECT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM requests WHERE id > $1 ORDER BY id LIMIT $2",
        names(COLUMNS.iter())
    )
});

/// Where [`SELECT`] puts the record (a list without one does not build).
pub(super) const RECORD: usize = {
    let mut i = 0;
    while !matches!(COLUMNS[i].role, Role::Record) {
        i += 1;
    }
    i
};

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The statements written from the list are those the store sent when
    /// each was written out by hand: the same columns, types and order.
    #[test]
    fn the_statements_are_written_from_the_list() {
        assert_eq!(
            words(&INSERT.sql),
            words(
                "INSERT INTO requests (id, case_no, state, registry, due_ms, work, record, \
                 deadline_ms, attention, at_risk, stamp_ms) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
                 $6::text[], $7::text[], $8::int8[], $9::bool[], $10::bool[], $11::int8[])"
            )
        );
        assert_eq!(
            words(&UPDATE.sql),
            words(
                "UPDATE requests AS r SET state = u.state, due_ms = u.due_ms, work = u.work, \
                 record = u.record, deadline_ms = u.deadline_ms, attention = u.attention, \
                 at_risk = u.at_risk, stamp_ms = u.stamp_ms \
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], \
                 $6::int8[], $7::bool[], $8::bool[], $9::int8[]) \
                 AS u(id, state, due_ms, work, record, deadline_ms, attention, at_risk, stamp_ms) \
                 WHERE r.id = u.id"
            )
        );
        assert_eq!(
            words(&SELECT),
            words(
                "SELECT id, case_no, state, registry, due_ms, work, record, deadline_ms, \
                 attention, at_risk, stamp_ms FROM requests WHERE id > $1 ORDER BY id LIMIT $2"
            )
        );
        assert_eq!(COLUMNS[RECORD].name, "record");
        assert!(matches!(COLUMNS[0].role, Role::Key));
    }
}
