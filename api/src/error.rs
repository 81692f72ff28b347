//! The body of every error reply of the REST API.

use serde::{Deserialize, Serialize};

use crate::import::LineError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// A stable, machine-readable code: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_input`, `too_large`, `rate_limited`, `internal`, or a conflict's own code.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ErrorDetails>,
}

/// More about an `invalid_input` error: the line-numbered problems of a rejected import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetails {
    pub errors: Vec<LineError>,
}
