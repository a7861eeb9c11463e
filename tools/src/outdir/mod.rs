//! Reading an output directory of `l7tap capture` (`requests/`, `intervals/`, `capture_stats/`),
//! for `l7tap report` and `l7tap heatmap`.
//!
//! Time filters select windows (`intervals`, `capture_stats`) by their start and requests by `ts`;
//! files are skipped by their `date=`/`hour=` partition ([`partitions`]) and row groups by their
//! min/max statistics ([`read`]) before any row is decoded. Runs (`--run`) are selected by the
//! run id in file names ([`runs`]). An object-storage output is listed and its selected objects
//! downloaded first ([`remote`]), then read the same way.
pub mod error;
pub mod intervals;
pub mod partitions;
pub mod read;
pub mod remote;
pub mod runs;
pub mod selection;
pub mod time;

pub use error::ReadError;
pub use intervals::{for_each_interval, heatmap_counts, server_sides, IntervalColumns, ShownSides};
pub use partitions::{check_output_dir, table_files};
pub use read::{
    column, column_if_present, read_files_in_parallel, read_projected, read_projected_where,
    read_rows,
};
pub use remote::open_output;
pub use runs::{runs_in, runs_selected, several_runs_note, Runs};
pub use selection::{ip_of, ClientOf, FilterArgs, Selection};
pub use time::format_time_us;
