//! Pieces of markup several pages share: data tables, form fields, status badges and
//! progress bars, loading placeholders, and the SVG charts.

mod charts;
mod forms;
mod status;
mod table;

pub use charts::{LeaderboardChart, LineChart, VotesChart};
pub use forms::{CampaignFields, Select};
pub use status::{Loading, ProgressBar, StatusBadge};
pub use table::{Column, DataTable, TableCard};
