//! The runs an output directory holds ([`runs_in`]), told apart by the run id in each file's
//! name; files written before run ids existed form one run, [`UNNAMED_RUN`].
use std::collections::BTreeMap;
use std::path::Path;

use l7tap_sinks::{run_id_of_file_name, Table};

use super::error::ReadError;

/// The run of the files whose names hold no run id (written by older versions).
pub const UNNAMED_RUN: &str = "unnamed";

/// The run a published file belongs to, by its name.
pub fn run_of_file_name(name: &str) -> &str {
    run_id_of_file_name(name).unwrap_or(UNNAMED_RUN)
}

/// Whether `text` names a run as `--run` takes it: a run id or [`UNNAMED_RUN`].
pub fn is_run_name(text: &str) -> bool {
    text == UNNAMED_RUN || l7tap_sinks::RunId::parse(text).is_some()
}

/// Runs of a directory: published files per run id, in run id order (which is start order;
/// [`UNNAMED_RUN`] sorts after the ids).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runs(pub BTreeMap<String, usize>);

impl Runs {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn files(&self) -> usize {
        self.0.values().sum()
    }

    pub fn contains(&self, run: &str) -> bool {
        self.0.contains_key(run)
    }

    /// The run ids, comma-separated.
    pub fn ids(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The runs of `dir` ([`runs_in`]) when `selected` (`--run`) names only runs it holds.
pub fn runs_selected(dir: &Path, selected: &[String]) -> Result<Runs, ReadError> {
    let runs = runs_in(dir)?;
    if let Some(missing) = selected.iter().find(|run| !runs.contains(run)) {
        return Err(ReadError::UnknownRun {
            dir: dir.to_path_buf(),
            run: missing.clone(),
            runs: runs.ids(),
        });
    }
    Ok(runs)
}

/// What a reader says when `dir` holds several runs: which it reads (`selected`, empty for all)
/// and how to choose; `None` for a directory of one run.
pub fn several_runs_note(dir: &Path, runs: &Runs, selected: &[String]) -> Option<String> {
    if runs.len() < 2 {
        return None;
    }
    let holds = format!(
        "{} holds {} runs ({})",
        dir.display(),
        runs.len(),
        runs.ids()
    );
    Some(if selected.is_empty() {
        format!("{holds}: all are read, their counts added; choose with --run ID")
    } else {
        format!("{holds}: reading {}", selected.join(", "))
    })
}

/// The runs of the published files under `dir`'s three tables (`.tmp` files of a run in
/// progress or killed are not published). A missing directory or table holds none.
pub fn runs_in(dir: &Path) -> Result<Runs, ReadError> {
    let mut runs = Runs::default();
    for table in Table::ALL {
        for date in subdirectories(&dir.join(table.name()))? {
            for hour in subdirectories(&date)? {
                let entries =
                    std::fs::read_dir(&hour).map_err(|e| ReadError::Io(hour.clone(), e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| ReadError::Io(hour.clone(), e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".parquet") && !name.starts_with('.') {
                        *runs
                            .0
                            .entry(run_of_file_name(&name).to_string())
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    Ok(runs)
}

/// The directories in `dir` (none when it does not exist).
fn subdirectories(dir: &Path) -> Result<Vec<std::path::PathBuf>, ReadError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReadError::Io(dir.to_path_buf(), e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| ReadError::Io(dir.to_path_buf(), e))?
            .path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_run_id_are_the_unnamed_run() {
        let run = "20240601T100000Z_0a9f3c";
        assert_eq!(
            run_of_file_name(&format!("h-{run}-20240601T100512Z-000003.parquet")),
            run
        );
        assert_eq!(
            run_of_file_name("my-host-20240601T100512Z-000003.parquet"),
            UNNAMED_RUN
        );
        assert!(is_run_name(run) && is_run_name(UNNAMED_RUN));
        assert!(!is_run_name("20240601T100000Z") && !is_run_name("all"));
    }

    #[test]
    fn a_note_names_the_runs_read_when_there_are_several() {
        let dir = Path::new("/out");
        let one = Runs(BTreeMap::from([("a".to_string(), 3)]));
        assert_eq!(several_runs_note(dir, &one, &[]), None);
        let two = Runs(BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1)]));
        assert_eq!(
            several_runs_note(dir, &two, &[]).unwrap(),
            "/out holds 2 runs (a, b): all are read, their counts added; choose with --run ID"
        );
        assert_eq!(
            several_runs_note(dir, &two, &["b".to_string()]).unwrap(),
            "/out holds 2 runs (a, b): reading b"
        );
    }

    #[test]
    fn runs_count_the_published_files_of_every_table() {
        let dir = tempfile::tempdir().unwrap();
        assert!(runs_in(&dir.path().join("missing")).unwrap().is_empty());
        let run = "20240601T100000Z_0a9f3c";
        for (table, name) in [
            (
                "requests",
                format!("h-{run}-20240601T100000Z-000000.parquet"),
            ),
            (
                "intervals",
                format!("h-{run}-20240601T100000Z-000000.parquet"),
            ),
            ("intervals", "h-20240601T090000Z-000000.parquet".to_string()),
            (
                "intervals",
                format!(".h-{run}-20240601T100000Z-000001.parquet.tmp"),
            ),
        ] {
            let hour = dir.path().join(table).join("date=2024-06-01/hour=10");
            std::fs::create_dir_all(&hour).unwrap();
            std::fs::write(hour.join(name), b"").unwrap();
        }
        let runs = runs_in(dir.path()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs.0[run], 2);
        assert_eq!(runs.0[UNNAMED_RUN], 1);
        assert_eq!(runs.files(), 3);
        assert_eq!(runs.ids(), format!("{run}, {UNNAMED_RUN}"));
    }
}
