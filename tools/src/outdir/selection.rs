//! Which rows to read ([`Selection`]: runs, protocol, server, client, time range), and the
//! command-line filters that describe one ([`FilterArgs`]).
use super::runs::{is_run_name, UNNAMED_RUN};
use super::time::parse_time;

/// Which rows to read: runs, protocol, server, client and a time range (Unix µs, half-open).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only files of these runs (see [`super::runs`]); empty: every run.
    pub runs: Vec<String>,
    pub protocol: Option<String>,
    pub server: Option<String>,
    /// Client IP (a port, if given, is ignored).
    pub client: Option<String>,
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

    pub(crate) fn key_matches(&self, protocol: &str, server: &str, client_ip: &str) -> bool {
        self.protocol.as_deref().is_none_or(|p| p == protocol)
            && self.server.as_deref().is_none_or(|s| s == server)
            && self.client.as_deref().is_none_or(|c| ip_of(c) == client_ip)
    }
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
            since_us: self.since,
            until_us: self.until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(ip_of("10.0.0.2:40001"), "10.0.0.2");
        assert_eq!(ip_of("10.0.0.2"), "10.0.0.2");
        assert_eq!(ip_of("[::1]:9000"), "::1");
        assert_eq!(ip_of("::1"), "::1");
    }
}
