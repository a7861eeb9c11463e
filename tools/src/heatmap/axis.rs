//! The time axis of a heatmap: runs of columns where data exists, the empty stretches between
//! them collapsed into one marked gap column each, and a column width chosen so that the axis
//! holds at most [`MAX_COLUMNS`] columns. Its size follows the data, never the time span.

/// Columns an axis holds at most. Neither image shows more: the PNG plot is about a thousand
/// pixels wide and the HTML canvas, three pixels or more per column, stops drawing beyond
/// 32 767 pixels. Up to 2 h 46 min of data keep one column per second.
pub const MAX_COLUMNS: usize = 10_000;

/// An empty stretch of more columns than this is drawn as one gap column: a minute at one
/// second per column. Shorter ones stay, so idle seconds inside a capture still show.
pub const MIN_GAP_COLUMNS: i64 = 60;

/// Column widths tried in turn, as multiples of the narrowest one (the heatmap sub-window):
/// round numbers of seconds when the sub-window is a second; beyond a day, doublings.
const WIDTH_STEPS: [i64; 18] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
    86_400,
];

/// Consecutive columns: the first one's index and start (Unix µs), and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub first_column: usize,
    pub start_us: i64,
    pub columns: usize,
}

/// Where each column is in time. Between two runs lies one gap column, which holds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeAxis {
    /// Width of every column but the gaps, µs.
    pub column_us: i64,
    pub runs: Vec<Run>,
    /// Columns in all, gaps included.
    pub columns: usize,
}

impl TimeAxis {
    /// The axis of the columns holding data (`starts`: the starts of columns `narrowest_us`
    /// wide, sorted and distinct), with the narrowest width that keeps it within `max_columns`.
    pub fn of(starts: &[i64], narrowest_us: i64, max_columns: usize) -> TimeAxis {
        let narrowest_us = narrowest_us.max(1);
        let mut widths = WIDTH_STEPS
            .iter()
            .map(|&step| narrowest_us.saturating_mul(step))
            .chain((1..62).map(|doubling| {
                (narrowest_us.saturating_mul(86_400)).saturating_mul(1 << doubling)
            }));
        loop {
            let column_us = widths.next().unwrap_or(i64::MAX);
            let axis = TimeAxis::with_width(starts, column_us);
            if axis.columns <= max_columns.max(1) || column_us == i64::MAX {
                return axis;
            }
        }
    }

    /// The axis of `starts` with columns `column_us` wide.
    fn with_width(starts: &[i64], column_us: i64) -> TimeAxis {
        let mut runs: Vec<Run> = Vec::new();
        let mut columns = 0;
        let mut last = None::<i64>;
        for &start in starts {
            let column = start.div_euclid(column_us);
            let Some(previous) = last else {
                runs.push(Run {
                    first_column: 0,
                    start_us: column * column_us,
                    columns: 1,
                });
                columns = 1;
                last = Some(column);
                continue;
            };
            if column == previous {
                continue;
            }
            let step = column - previous;
            let run = runs.last_mut().expect("a run was started");
            if step - 1 > MIN_GAP_COLUMNS {
                // One gap column, then a new run.
                columns += 1;
                runs.push(Run {
                    first_column: columns,
                    start_us: column * column_us,
                    columns: 1,
                });
                columns += 1;
            } else {
                run.columns += step as usize;
                columns += step as usize;
            }
            last = Some(column);
        }
        TimeAxis {
            column_us,
            runs,
            columns,
        }
    }

    /// The run holding `column`, if any (none for a gap column).
    fn run_of(&self, column: usize) -> Option<&Run> {
        let index = self
            .runs
            .partition_point(|r| r.first_column <= column)
            .checked_sub(1)?;
        let run = &self.runs[index];
        (column < run.first_column + run.columns).then_some(run)
    }

    /// The column of the instant `us` (Unix µs), if it falls in a run.
    pub fn column_of(&self, us: i64) -> Option<usize> {
        let index = self
            .runs
            .partition_point(|r| r.start_us <= us)
            .checked_sub(1)?;
        let run = &self.runs[index];
        let offset = (us - run.start_us).div_euclid(self.column_us);
        (offset < run.columns as i64).then(|| run.first_column + offset as usize)
    }

    /// Start of `column` (Unix µs); none for a gap column.
    pub fn start_of(&self, column: usize) -> Option<i64> {
        self.run_of(column)
            .map(|run| run.start_us + (column - run.first_column) as i64 * self.column_us)
    }

    /// Start of the first column.
    pub fn start_us(&self) -> i64 {
        self.runs.first().map_or(0, |r| r.start_us)
    }

    /// Each gap: its column and the empty time it stands for, µs.
    pub fn gaps(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        self.runs.windows(2).map(|pair| {
            let end_us = pair[0].start_us + pair[0].columns as i64 * self.column_us;
            (pair[1].first_column - 1, pair[1].start_us - end_us)
        })
    }
}

/// `30 d 0 h`-style length of a gap: its two largest units.
pub fn gap_label(us: i64) -> String {
    let seconds = us / 1_000_000;
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {minutes} min")
    } else {
        format!("{minutes} min {} s", seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const DAY: i64 = 86_400 * S;

    #[test]
    fn a_capture_without_long_pauses_is_one_run_of_one_second_columns() {
        // 30 s with an idle stretch of 20 s inside: every second keeps its column.
        let starts: Vec<i64> = (0..5).chain(25..30).map(|s| 1_000 * S + s * S).collect();
        let axis = TimeAxis::of(&starts, S, MAX_COLUMNS);
        assert_eq!(axis.column_us, S);
        assert_eq!(axis.columns, 30);
        assert_eq!(axis.gaps().count(), 0);
        assert_eq!(axis.column_of(1_000 * S + 27 * S + 5), Some(27));
        assert_eq!(axis.start_of(27), Some(1_027 * S));
        assert_eq!(axis.column_of(1_030 * S), None);
        assert_eq!(axis.column_of(999 * S), None);
    }

    #[test]
    fn a_month_between_two_captures_is_one_gap_column() {
        let starts: Vec<i64> = (0..30)
            .map(|s| s * S)
            .chain((0..30).map(|s| 30 * DAY + s * S))
            .collect();
        let axis = TimeAxis::of(&starts, S, MAX_COLUMNS);
        assert_eq!(axis.column_us, S);
        assert_eq!(axis.columns, 61);
        assert_eq!(
            axis.gaps().collect::<Vec<_>>(),
            vec![(30, 30 * DAY - 30 * S)]
        );
        assert_eq!(axis.start_of(30), None);
        assert_eq!(axis.column_of(30 * DAY + 2 * S), Some(33));
        assert_eq!(axis.start_of(33), Some(30 * DAY + 2 * S));
        assert_eq!(axis.column_of(40 * S), None);
        assert_eq!(gap_label(30 * DAY - 30 * S), "29 d 23 h");
    }

    #[test]
    fn more_data_than_fits_widens_the_columns() {
        // A day of one-second columns: 86 400 columns, more than fit.
        let starts: Vec<i64> = (0..86_400).map(|s| s * S).collect();
        let axis = TimeAxis::of(&starts, S, MAX_COLUMNS);
        assert_eq!(axis.column_us, 10 * S);
        assert_eq!(axis.columns, 8_640);
        // Widening never leaves a column of data without a column.
        assert!(starts.iter().all(|&s| axis.column_of(s).is_some()));
        // However the data is spread, the axis fits.
        let sparse: Vec<i64> = (0..1_000_000).map(|i| i * 120 * S).collect();
        assert!(TimeAxis::of(&sparse, S, MAX_COLUMNS).columns <= MAX_COLUMNS);
    }
}
