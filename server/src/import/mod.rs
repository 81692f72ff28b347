//! Import of prompts and responses into a campaign from JSONL: `parse` validates the whole
//! file first (a file with any bad line imports nothing), `write` stores it in one
//! transaction.

pub mod parse;
pub mod write;

use pairwise_api::error::ErrorDetails;
use pairwise_api::import::{ImportReport, PairingOptions};

pub use parse::{ImportItem, ItemBody, ResponseIn, parse_import};
pub use write::import_items;

use pairwise_api::import::LineError;

use crate::error::{ApiError, ApiResult};
use crate::metrics::metrics;
use crate::store::Db;

/// Parses, validates and imports a file; the error lists every bad line.
pub async fn import_jsonl(db: &Db, campaign_id: i64, data: &[u8], options: &PairingOptions) -> ApiResult<ImportReport> {
    let items = parse_import(data).map_err(bad_lines)?;
    let report = import_items(db, campaign_id, items, options).await?;
    metrics().import_stored(report.pairs_created);
    Ok(report)
}

/// The error for a file with bad lines: the first problem in the message, all in the details.
pub(crate) fn bad_lines(errors: Vec<LineError>) -> ApiError {
    let first = &errors[0];
    let message = if first.field.is_empty() {
        format!("line {}: {} ({} problem(s), nothing imported)", first.line, first.message, errors.len())
    } else {
        format!(
            "line {}: field `{}` {} ({} problem(s), nothing imported)",
            first.line,
            first.field,
            first.message,
            errors.len()
        )
    };
    ApiError::BadRequest { message, details: Some(ErrorDetails { errors }) }
}
