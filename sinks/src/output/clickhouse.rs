//! A ClickHouse output, `clickhouse://[USER@]HOST:PORT/DATABASE` (the HTTP interface, 8123):
//! files are finished in a local spool directory ([`super::spool`]) every second, and each one
//! is inserted ([`super::uploader`]) into the table of its name, `DATABASE.requests`,
//! `.intervals` or `.capture_stats`, as one `INSERT … FORMAT RowBinary` whose columns come
//! from the table's Arrow schema ([`super::clickhouse_columns`]).
//!
//! One file is one block, always encoded the same way: an insert retried after a lost answer
//! (or by the next run, from the spool) sends the identical block, which a `Replicated*`
//! table deduplicates (18.16 has no insert deduplication tokens; a plain `MergeTree` keeps
//! both copies: at-least-once).
//!
//! The user comes from the URL or `L7TAP_CLICKHOUSE_USER` (default `default`); the password
//! from `L7TAP_CLICKHOUSE_PASSWORD` or the file named by `L7TAP_CLICKHOUSE_PASSWORD_FILE`,
//! never from the command line. It is sent in the `Authorization` header and never printed.
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::RecordBatchReader;
use arrow::datatypes::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::clickhouse_columns::{
    columns, quote_identifier, write_string, ClickHouseColumn, ColumnDefinition, UnsupportedColumn,
};
use super::spool::SpooledFile;
use super::uploader::{Destination, SendError};
use super::OutputParseError;
use crate::schema::Table;

/// `--out` / `--sink` text of this kind.
pub const SYNTAX: &str = "clickhouse://[USER@]HOST:PORT/DATABASE";

/// Files roll every second: one insert per table and second at most, and a row waits at most
/// that long (plus the 1 s flush tick) before its file is in the spool, where it survives a
/// crash.
pub const DEFAULT_ROLL_AGE: Duration = Duration::from_secs(1);

/// One HTTP request at most (a frozen server fails the attempt, which is retried later): an
/// insert is a second of rows, sent in well under a second.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Columns every table gets after the schema's, from the file's metadata: which host and run
/// wrote the row (a directory's file names say it; here many hosts share a table).
pub const FILE_COLUMNS: [(&str, &str); 2] = [("host", "l7tap.host"), ("run_id", "l7tap.run_id")];

/// Environment variables of the credentials.
pub const USER_VAR: &str = "L7TAP_CLICKHOUSE_USER";
pub const PASSWORD_VAR: &str = "L7TAP_CLICKHOUSE_PASSWORD";
pub const PASSWORD_FILE_VAR: &str = "L7TAP_CLICKHOUSE_PASSWORD_FILE";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickHouseOutput {
    /// From the URL; `None`: `L7TAP_CLICKHOUSE_USER`, else `default`.
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// `clickhouse://[user@]host:port/database`; `None` for text of another kind.
pub fn parse(text: &Path) -> Option<Result<ClickHouseOutput, OutputParseError>> {
    let text = text.to_str()?;
    let rest = text.strip_prefix("clickhouse://")?;
    let invalid = |why: &str| Some(Err(OutputParseError(format!("{text}: {why} ({SYNTAX})"))));
    if rest
        .split('/')
        .next()
        .is_some_and(|a| a.contains('@') && a.split('@').next().is_some_and(|u| u.contains(':')))
    {
        // Never repeat a password given in the URL.
        return Some(Err(OutputParseError(format!(
            "clickhouse://: no password in the URL: set {PASSWORD_VAR} or {PASSWORD_FILE_VAR}"
        ))));
    }
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, address) = match authority.rsplit_once('@') {
        Some((user, address)) => (Some(user), address),
        None => (None, authority),
    };
    if let Some(user) = user {
        if user.is_empty() {
            return invalid("the user is empty");
        }
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return invalid("the port is missing");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(port) = port.parse::<u16>() else {
        return invalid("the port is not a number");
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return invalid("the host is empty or not a host name");
    }
    let database = database.trim_end_matches('/');
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return invalid("the database must be a name of A-Z, a-z, 0-9 and _");
    }
    Some(Ok(ClickHouseOutput {
        user: user.map(str::to_string),
        host: host.to_string(),
        port,
        database: database.to_string(),
    }))
}

impl fmt::Display for ClickHouseOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("clickhouse://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.database)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.database)
        }
    }
}

/// Why the probe (or an insert) failed, in words a user acts on.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error("{output}: {message}")]
    Config { output: String, message: String },
    #[error("{output}: the server is unreachable: {message}")]
    Unreachable { output: String, message: String },
    #[error("{output}: database {database:?} does not exist (CREATE DATABASE {database})")]
    NoSuchDatabase { output: String, database: String },
    #[error("{output}: the credentials were refused (Code: {code}): check the user and {PASSWORD_VAR} or {PASSWORD_FILE_VAR}")]
    BadCredentials { output: String, code: u32 },
    #[error("{output}: user {user:?} may not write (Code: {code}): a read-only user?")]
    ReadOnly {
        output: String,
        user: String,
        code: u32,
    },
    #[error("{output}: table {table} lacks the columns {missing}: add them (ALTER TABLE {table} ADD COLUMN …; for the types, drop the table and let l7tap create it in a scratch database)")]
    MissingColumns {
        output: String,
        table: String,
        missing: String,
    },
    #[error("{output}: {action} failed: {message}")]
    Server {
        output: String,
        action: String,
        message: String,
    },
}

/// What a request to the server returned.
enum Answer {
    Ok(String),
    /// The server answered with an exception: its code and first line.
    Exception {
        code: u32,
        message: String,
    },
    /// No answer: connection refused, timeout, reset.
    Transport(String),
}

/// The HTTP client of one output, with the credentials it sends.
pub struct Client {
    output: ClickHouseOutput,
    user: String,
    password: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ClickHouseOutput {
    /// The spool directory of this output under the spool root: one per server and database.
    pub fn spool_dir(&self, spool: &Path) -> PathBuf {
        super::spool::destination_dir(
            spool,
            &format!("clickhouse_{}_{}_{}", self.host, self.port, self.database),
        )
    }

    /// A client of this output, with the credentials of the environment.
    pub fn client(&self) -> Result<Client, ClickHouseError> {
        let config = |message: String| ClickHouseError::Config {
            output: self.to_string(),
            message,
        };
        let user = match &self.user {
            Some(user) => user.clone(),
            None => std::env::var(USER_VAR).unwrap_or_else(|_| "default".to_string()),
        };
        let password = match (
            std::env::var(PASSWORD_VAR),
            std::env::var_os(PASSWORD_FILE_VAR),
        ) {
            (Ok(_), Some(_)) => {
                return Err(config(format!(
                    "set {PASSWORD_VAR} or {PASSWORD_FILE_VAR}, not both"
                )))
            }
            (Ok(password), None) => password,
            (Err(_), Some(file)) => std::fs::read_to_string(&file)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| {
                    config(format!(
                        "{PASSWORD_FILE_VAR}: cannot read {}: {e}",
                        Path::new(&file).display()
                    ))
                })?,
            (Err(_), None) => String::new(),
        };
        let http = reqwest::Client::builder()
            // A connection per request: at about one insert per table and second, a pooled
            // one is mostly closed by the server (keep_alive_timeout, 3 s) when it is reused,
            // and the insert fails writing its body.
            .pool_max_idle_per_host(0)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| config(format!("cannot make an HTTP client: {}", one_line(&e))))?;
        let runtime = super::bucket::runtime()
            .map_err(|e| config(format!("cannot start the HTTP client: {e}")))?;
        Ok(Client {
            output: self.clone(),
            user,
            password,
            http,
            runtime,
        })
    }
}

impl Client {
    fn url(&self) -> String {
        let host = if self.output.host.contains(':') {
            format!("[{}]", self.output.host)
        } else {
            self.output.host.clone()
        };
        format!("http://{host}:{}/", self.output.port)
    }

    /// Sends `query` (with `data` after it, for an insert) and reads the answer. The query
    /// goes at the start of the body, the data after a line break: the request line stays
    /// short whatever the column list.
    fn request(&self, query: &str, data: Vec<u8>) -> Answer {
        let mut body = Vec::with_capacity(query.len() + 1 + data.len());
        body.extend_from_slice(query.as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&data);
        let request = self
            .http
            .post(self.url())
            .query(&[("database", &self.output.database)])
            .basic_auth(&self.user, Some(&self.password))
            // 18.16 refuses a POST without a length, which reqwest leaves out of an empty one.
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body);
        self.runtime.block_on(async {
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return Answer::Transport(one_line(&e.without_url())),
            };
            let ok = response.status().is_success();
            let text = match response.text().await {
                Ok(text) => text,
                Err(e) => return Answer::Transport(one_line(&e.without_url())),
            };
            if ok {
                Answer::Ok(text)
            } else {
                let (code, message) = exception(&text);
                Answer::Exception { code, message }
            }
        })
    }

    fn server_error(&self, action: &str, answer: Answer) -> ClickHouseError {
        let output = self.output.to_string();
        match answer {
            Answer::Transport(message) => ClickHouseError::Unreachable { output, message },
            // Unknown user, wrong password, IP not allowed for the user.
            Answer::Exception {
                code: code @ (192..=195 | 516),
                ..
            } => ClickHouseError::BadCredentials { output, code },
            Answer::Exception { code: 81, .. } => ClickHouseError::NoSuchDatabase {
                output,
                database: self.output.database.clone(),
            },
            Answer::Exception {
                code: code @ (164 | 497),
                ..
            } => ClickHouseError::ReadOnly {
                output,
                user: self.user.clone(),
                code,
            },
            Answer::Exception { code, message } => ClickHouseError::Server {
                output,
                action: action.to_string(),
                message: format!("Code: {code}: {message}"),
            },
            Answer::Ok(text) => ClickHouseError::Server {
                output,
                action: action.to_string(),
                message: format!("unexpected answer {:?}", text.trim()),
            },
        }
    }

    fn query(&self, action: &str, query: &str) -> Result<String, ClickHouseError> {
        match self.request(query, Vec::new()) {
            Answer::Ok(text) => Ok(text),
            answer => Err(self.server_error(action, answer)),
        }
    }

    fn table_name(&self, table: Table) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.output.database),
            quote_identifier(table.name())
        )
    }

    /// Checks the server, the credentials and the database, creates each table that is
    /// absent, checks that every table has the columns l7tap writes, and sends an empty insert
    /// into each (which a read-only user is refused): wrong settings are found before anything
    /// else starts. Writes no row.
    pub fn probe(&self) -> Result<(), ClickHouseError> {
        self.query("connecting", "SELECT 1")?;
        let databases = self.query(
            "listing databases",
            &format!(
                "SELECT count() FROM system.databases WHERE name = '{}'",
                self.output.database
            ),
        )?;
        if databases.trim() != "1" {
            return Err(ClickHouseError::NoSuchDatabase {
                output: self.output.to_string(),
                database: self.output.database.clone(),
            });
        }
        for table in Table::ALL {
            let schema = table.schema();
            let (columns, mut definitions) = columns(&schema).map_err(|e| self.unmapped(e))?;
            definitions.extend(
                FILE_COLUMNS
                    .map(|(c, _)| ColumnDefinition(format!("{} String", quote_identifier(c)))),
            );
            let name = self.table_name(table);
            let exists = self.query("looking for a table", &format!("EXISTS TABLE {name}"))?;
            if exists.trim() != "1" {
                self.query(
                    "creating a table",
                    &create_table(&name, table, &definitions),
                )?;
            }
            let described = self.query(
                "reading a table's columns",
                &format!("DESCRIBE TABLE {name}"),
            )?;
            let present: Vec<&str> = described
                .lines()
                .filter_map(|line| line.split('\t').next())
                .collect();
            let missing: Vec<&str> = columns
                .iter()
                .map(|c| c.name.as_str())
                .chain(FILE_COLUMNS.map(|(c, _)| c))
                .filter(|c| !present.contains(c))
                .collect();
            if !missing.is_empty() {
                return Err(ClickHouseError::MissingColumns {
                    output: self.output.to_string(),
                    table: name,
                    missing: missing.join(", "),
                });
            }
            match self.request(&insert_query(&name, &columns), Vec::new()) {
                Answer::Ok(_) => {}
                answer => return Err(self.server_error("a probe insert (no rows)", answer)),
            }
        }
        Ok(())
    }

    fn unmapped(&self, error: UnsupportedColumn) -> ClickHouseError {
        ClickHouseError::Config {
            output: self.output.to_string(),
            message: error.to_string(),
        }
    }

    /// Inserts one spooled file into its table, as one block.
    pub fn insert_file(&self, file: &SpooledFile) -> Result<(), SendError> {
        let Some(table) = file.table else {
            return Err(SendError::Local(format!(
                "{} is not below a table's directory",
                file.relative
            )));
        };
        let (schema, body) = match encode_file(&file.path) {
            Ok(encoded) => encoded,
            Err(EncodeError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SendError::Gone)
            }
            Err(e) => return Err(SendError::Local(e.to_string())),
        };
        let (columns, _) = columns(&schema).map_err(|e| SendError::Local(e.to_string()))?;
        match self.request(&insert_query(&self.table_name(table), &columns), body) {
            Answer::Ok(_) => Ok(()),
            answer => Err(SendError::Remote(
                self.server_error("inserting", answer).to_string(),
            )),
        }
    }
}

impl Destination for Client {
    fn name(&self) -> String {
        self.output.to_string()
    }

    fn send(&self, file: &SpooledFile) -> Result<(), SendError> {
        self.insert_file(file)
    }
}

/// `CREATE TABLE` of a table l7tap makes: MergeTree, partitioned by day, ordered for the
/// report's queries (per server, then time).
pub fn create_table(name: &str, table: Table, definitions: &[ColumnDefinition]) -> String {
    let (time, order) = match table {
        Table::Requests => ("ts", "protocol, server_addr, ts"),
        Table::Intervals => ("window_start", "protocol, server_addr, window_start"),
        Table::CaptureStats => ("window_start", "window_start"),
    };
    let columns: Vec<&str> = definitions.iter().map(|d| d.0.as_str()).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {name} ({}) ENGINE = MergeTree() PARTITION BY toDate({time}) ORDER BY ({order})",
        columns.join(", ")
    )
}

fn insert_query(name: &str, columns: &[ClickHouseColumn]) -> String {
    let names: Vec<String> = columns
        .iter()
        .map(|c| c.name.as_str())
        .chain(FILE_COLUMNS.map(|(c, _)| c))
        .map(quote_identifier)
        .collect();
    format!("INSERT INTO {name} ({}) FORMAT RowBinary", names.join(", "))
}

#[derive(Debug, thiserror::Error)]
enum EncodeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("reading the file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("reading the file: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Unsupported(#[from] UnsupportedColumn),
    #[error("{0}")]
    Mismatch(#[from] super::clickhouse_columns::MismatchedColumn),
}

/// A Parquet file's rows as one `RowBinary` body, with the schema its columns follow (the
/// file's own: a file spooled by an older version inserts the columns it has).
fn encode_file(path: &Path) -> Result<(std::sync::Arc<Schema>, Vec<u8>), EncodeError> {
    let file = std::fs::File::open(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let mut suffix = Vec::new();
    for (_, key) in FILE_COLUMNS {
        let value = metadata
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_deref())
            .unwrap_or("");
        write_string(value, &mut suffix);
    }
    let reader = builder.build()?;
    let schema = reader.schema();
    let (columns, _) = columns(&schema)?;
    let mut body = Vec::new();
    for batch in reader {
        super::clickhouse_columns::write_row_binary(&batch?, &columns, &suffix, &mut body)?;
    }
    Ok((schema, body))
}

/// The code and first line of a ClickHouse exception text (`Code: 60, e.displayText() = …`).
fn exception(text: &str) -> (u32, String) {
    let code = text
        .trim_start()
        .strip_prefix("Code: ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0);
    let message = text
        .split("e.displayText() = ")
        .nth(1)
        .unwrap_or(text)
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches(", e.what() = DB::Exception")
        .chars()
        .take(300)
        .collect();
    (code, message)
}

/// An error and its sources on one line.
fn one_line(error: &dyn std::error::Error) -> String {
    super::bucket::one_line(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_server_and_database_and_never_a_password() {
        let parsed = |t: &str| parse(Path::new(t));
        assert_eq!(
            parsed("clickhouse://127.0.0.1:8123/l7tap")
                .unwrap()
                .unwrap(),
            ClickHouseOutput {
                user: None,
                host: "127.0.0.1".into(),
                port: 8123,
                database: "l7tap".into()
            }
        );
        let with_user = parsed("clickhouse://writer@ch.example:8123/obs/")
            .unwrap()
            .unwrap();
        assert_eq!(with_user.user.as_deref(), Some("writer"));
        assert_eq!(
            with_user.to_string(),
            "clickhouse://writer@ch.example:8123/obs"
        );
        let v6 = parsed("clickhouse://[::1]:8123/db").unwrap().unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.to_string().as_str()),
            ("::1", "clickhouse://[::1]:8123/db")
        );
        let refused = parsed("clickhouse://u:secret@h:8123/db")
            .unwrap()
            .unwrap_err();
        assert!(!refused.to_string().contains("secret"), "{refused}");
        for bad in [
            "clickhouse://h/db",
            "clickhouse://h:x/db",
            "clickhouse://h:8123/",
            "clickhouse://h:8123/a-b",
        ] {
            assert!(parsed(bad).unwrap().is_err(), "{bad}");
        }
        assert!(parsed("s3://bucket").is_none());
    }

    #[test]
    fn exceptions_give_their_code_and_first_line() {
        let (code, message) = exception(
            "Code: 81, e.displayText() = DB::Exception: Database nodb doesn't exist, e.what() = DB::Exception\n",
        );
        assert_eq!(
            (code, message.as_str()),
            (81, "DB::Exception: Database nodb doesn't exist")
        );
    }

    #[test]
    fn created_tables_are_partitioned_by_day_and_ordered_by_server_and_time() {
        let (_, definitions) = columns(&Table::Requests.schema()).unwrap();
        let sql = create_table("`db`.`requests`", Table::Requests, &definitions);
        assert!(
            sql.starts_with(
                "CREATE TABLE IF NOT EXISTS `db`.`requests` (`ts` DateTime('UTC'), `ts_us` Int64,"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                "ENGINE = MergeTree() PARTITION BY toDate(ts) ORDER BY (protocol, server_addr, ts)"
            ),
            "{sql}"
        );
    }
}
