//! Which rows to read ([`Selection`]: runs, protocol, server, client, application, time range),
//! and the command-line filters that describe one ([`FilterArgs`]).
use super::runs::{is_run_name, UNNAMED_RUN};
use super::time::parse_time;

/// Which rows to read: runs, protocol, server, client and a time range (Unix µs, half-open).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only files of these runs (see [`super::runs`]); empty: every run.
    pub runs: Vec<String>,
    pub protocol: Option<String>,
    pub server: Option<String>,
    /// Client IP (a port, if given, is ignored), application or process name.
    pub client: Option<String>,
    /// Client application (`client_app`).
    pub app: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

impl Selection {
    /// Whether files of `run` are read.
    pub(crate) fn run_matches(&self, run: &str) -> bool {
        self.runs.is_empty() || self.runs.iter().any(|r| r == run)
    }

    pub(crate) fn time_matches(&self, t_us: i64) -> bool {
        self.since_us.is_none_or(|s| t_us >= s) && self.until_us.is_none_or(|u| t_us < u)
    }

    pub(crate) fn key_matches(&self, protocol: &str, server: &str, client: &ClientOf<'_>) -> bool {
        self.protocol.as_deref().is_none_or(|p| p == protocol)
            && self.server.as_deref().is_none_or(|s| s == server)
            && self.client_matches(client)
    }

    /// Whether `--client` (address, application or process name) and `--app` match.
    pub(crate) fn client_matches(&self, client: &ClientOf<'_>) -> bool {
        self.client
            .as_deref()
            .is_none_or(|c| ip_of(c) == ip_of(client.ip) || c == client.app || c == client.process)
            && self.app.as_deref().is_none_or(|a| a == client.app)
    }

    /// Whether rows must be matched by client (address, application or process).
    pub(crate) fn selects_clients(&self) -> bool {
        self.client.is_some() || self.app.is_some()
    }
}

/// What a row says of its client: address (`ip` or `ip:port`), application and process name
/// (empty when unknown).
pub struct ClientOf<'a> {
    pub ip: &'a str,
    pub app: &'a str,
    pub process: &'a str,
}

/// The IP part of `ip:port` / `[ip6]:port` (a bare IP is returned as is).
pub fn ip_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rfind(':') {
        Some(i) if addr[..i].parse::<std::net::Ipv4Addr>().is_ok() => &addr[..i],
        _ => addr,
    }
}

/// The families of the registry's protocols, each once, as `--protocol` takes them.
fn protocol_families() -> clap::builder::PossibleValuesParser {
    let mut families: Vec<&'static str> = l7tap_protocols::Protocol::ALL
        .iter()
        .map(|p| p.family())
        .collect();
    families.sort_unstable();
    families.dedup();
    clap::builder::PossibleValuesParser::new(families)
}

/// Row filters shared by `report` and `heatmap`.
#[derive(clap::Args, Clone)]
pub struct FilterArgs {
    /// Only these runs of the directory (repeat, or comma-separate; `unnamed` is the files
    /// written without a run id). Default: every run, and a note when there are several.
    #[arg(long = "run", value_name = "ID", value_delimiter = ',')]
    pub runs: Vec<String>,
    /// Only this protocol family (`protocol` column: every interface of it).
    #[arg(long, value_parser = protocol_families())]
    pub protocol: Option<String>,
    /// Only this server (`ip:port`, as in `server_addr`).
    #[arg(long)]
    pub server: Option<String>,
    /// Only this client application (`client_app`: container, systemd unit or process
    /// name, ` :PORT` for a listening process).
    #[arg(long)]
    pub app: Option<String>,
    /// From this time on (UTC `2026-11-25T11:30:00Z` or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Before this time (same formats as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

impl FilterArgs {
    /// Checks what each flag's parser could not: that `--run` values look like run ids and
    /// that the time range is not empty.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self.runs.iter().find(|r| !is_run_name(r)) {
            return Err(format!(
                "--run {bad:?} is not a run id (one like 20240601T100000Z_0a9f3c, or {UNNAMED_RUN})"
            ));
        }
        if self.app.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err("--app is empty: name an application as `client_app` shows it".into());
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err("--since must be before --until".to_string());
            }
        }
        Ok(())
    }

    /// The selection these filters describe (for `client`, an IP or `ip:port`).
    pub fn selection(&self, client: Option<String>) -> Selection {
        Selection {
            runs: self.runs.clone(),
            protocol: self.protocol.clone(),
            server: self.server.clone(),
            client,
            app: self.app.clone(),
            since_us: self.since,
            until_us: self.until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_chosen_by_address_application_or_process_and_app_by_application() {
        let batch = ClientOf {
            ip: "127.0.0.1",
            app: "nightly.service",
            process: "batch",
        };
        let by = |client: Option<&str>, app: Option<&str>| Selection {
            client: client.map(str::to_string),
            app: app.map(str::to_string),
            ..Selection::default()
        };
        for client in ["127.0.0.1", "127.0.0.1:40000", "nightly.service", "batch"] {
            assert!(by(Some(client), None).client_matches(&batch), "{client}");
        }
        assert!(!by(Some("dashboard"), None).client_matches(&batch));
        assert!(by(None, Some("nightly.service")).client_matches(&batch));
        assert!(!by(None, Some("batch")).client_matches(&batch));
    }

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(ip_of("10.0.0.2:40001"), "10.0.0.2");
        assert_eq!(ip_of("10.0.0.2"), "10.0.0.2");
        assert_eq!(ip_of("[::1]:9000"), "::1");
        assert_eq!(ip_of("::1"), "::1");
    }
}
