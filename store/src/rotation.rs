//! The rotating secret: a current secret and the one it replaced, still accepted (or still
//! signed with) until the overlap ends. Sources, trusted senders and peers rotate alike,
//! through these three functions.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::{Result, RowExt, Store};

/// The SQL `SET` items that make `new` (a parameter such as `$4`; NULL changes nothing)
/// the `current` secret column, keep the old one in `previous`, and end its overlap `until`
/// the parameter `overlap_secs` seconds from now.
pub(crate) fn rotate_set(
    current: &str,
    previous: &str,
    until: &str,
    new: &str,
    overlap_secs: &str,
) -> String {
    format!(
        "{previous} = CASE WHEN {new}::text IS NULL THEN {previous} ELSE {current} END,
         {until} = CASE WHEN {new}::text IS NULL THEN {until}
                        ELSE now() + make_interval(secs => {overlap_secs}) END,
         {current} = COALESCE({new}, {current})"
    )
}

/// Whether a previous secret whose overlap ends at `until` is still good at `now`.
pub(crate) fn in_overlap(until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    until.is_some_and(|t| t > now)
}

impl Store {
    /// A row's previous secret (columns `previous` and `until`), opened, while its overlap
    /// lasts; None after it. Answers the end of the overlap too.
    pub(crate) fn previous_secret(
        &self,
        r: &Row,
        previous: usize,
        until: usize,
    ) -> Result<(Option<String>, Option<DateTime<Utc>>)> {
        let until: Option<DateTime<Utc>> = r.col(until)?;
        let secret = match in_overlap(until, Utc::now()) {
            true => self.open_opt(r.col(previous)?)?,
            false => None,
        };
        Ok((secret, until))
    }
}
