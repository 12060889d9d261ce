//! Rows read back into domain values and events: each body with the
//! columns stored beside it laid over it (see [`super::codec`]). Shared by
//! both dialects' queries in [`super::sql`].

use serde_json::Value;
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use super::StoreError;
use super::codec::{parse, with_columns};
use crate::domain::{Lease, Run};

/// A run's header from a row of [`super::sql::Sql::run_select`]: its body with the
/// columns laid over it.
pub(super) fn run_from_row<DB>(r: &DB::Row) -> Result<Run, StoreError>
where
    DB: Database,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let labels: Value = parse("run labels", &r.try_get::<String, _>(7)?)?;
    let template = r
        .try_get::<Option<String>, _>(9)?
        .map(|t| ("template", Value::from(t)));
    with_columns(
        "run",
        &r.try_get::<String, _>(8)?,
        [
            ("id", Value::from(r.try_get::<String, _>(0)?)),
            ("name", Value::from(r.try_get::<String, _>(1)?)),
            ("state", Value::from(r.try_get::<String, _>(2)?)),
            ("created_at", Value::from(r.try_get::<i64, _>(3)?)),
            (
                "idempotency_key",
                Value::from(r.try_get::<Option<String>, _>(4)?),
            ),
            ("submitted_by", Value::from(r.try_get::<String, _>(5)?)),
            ("finished_at", Value::from(r.try_get::<Option<i64>, _>(6)?)),
            ("labels", labels),
            ("steps", Value::Array(Vec::new())),
        ]
        .into_iter()
        .chain(template),
    )
}

pub(super) fn lease_from_row<DB>(r: &DB::Row) -> Result<Lease, StoreError>
where
    DB: Database,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    with_columns(
        "lease",
        &r.try_get::<String, _>(3)?,
        [
            ("id", Value::from(r.try_get::<String, _>(0)?)),
            ("run_id", Value::from(r.try_get::<String, _>(1)?)),
            ("state", Value::from(r.try_get::<String, _>(2)?)),
        ],
    )
}

/// The least string greater than every string starting with `prefix`, in
/// byte order: the prefix with its last character one higher. `None` when
/// there is none to make (no upper bound then).
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(u32::from(last) + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod id_tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_at_the_next_string_in_byte_order() {
        assert_eq!(prefix_end("01HR1G").as_deref(), Some("01HR1H"));
        assert_eq!(prefix_end("build-").as_deref(), Some("build."));
        assert_eq!(prefix_end("AZ").as_deref(), Some("A["));
        assert_eq!(prefix_end(""), None);
        assert!(prefix_end("01HR1GZ").is_some_and(|end| end.as_str() > "01HR1GZZZZZ"));
    }
}
