//! The shapes every resource's answers share: a list, a page with its cursor, a delete.

use serde::{Deserialize, Serialize};

/// A list answer: `{"items": [...]}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Items<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
}

/// The answer of a delete.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    /// Always true.
    pub deleted: bool,
    /// Outbox rows the delete cancelled (peers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<u64>,
}

/// A page of a listing: `{"items": [...], "next_cursor": N | null}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The cursor of the next page, or null on the last one.
    pub next_cursor: Option<i64>,
}
