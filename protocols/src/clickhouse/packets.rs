//! Packet bodies: the handshake (client and server Hello, Addendum), the client's Query
//! (ClientInfo, settings, parameters; every layout from revision 54032 to the newest), and the
//! server's small packets (Exception, Progress, ProfileInfo, TablesStatus, ...).
//!
//! Every function reads from a [`Cursor`] positioned after the packet-type byte and either
//! returns the decoded fields (borrowing the bytes, no allocation) or says `Short`/`Bad`.
//! Which fields exist is decided by the protocol revision `r` (see [`revision`]).
use super::codes::revision;
use super::wire::{
    is_identifier, is_printable, Cursor, WireError, WireResult, MAX_HELLO_STRING, MAX_NAME,
    MAX_STRING,
};

fn bad<T>(what: &'static str) -> WireResult<T> {
    Err(WireError::Bad(what))
}

/// Client Hello (code 0). The password is read past and never returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientHello<'a> {
    pub client_name: &'a [u8],
    pub version_major: u64,
    pub version_minor: u64,
    pub revision: u64,
    pub database: &'a [u8],
    pub user: &'a [u8],
}

/// The `user` of an interserver Hello that authenticates each query with a cluster secret.
pub(crate) const INTERSERVER_SECRET_USER: &[u8] = b" INTERSERVER SECRET ";

pub(crate) fn client_hello<'a>(c: &mut Cursor<'a>) -> WireResult<ClientHello<'a>> {
    let client_name = c.string(MAX_HELLO_STRING)?;
    if client_name.is_empty() || !is_printable(client_name) {
        return bad("client name is not printable");
    }
    let version_major = c.varuint_max(10_000, "bad client major version")?;
    let version_minor = c.varuint_max(10_000, "bad client minor version")?;
    let revision = c.varuint()?;
    let database = c.string(MAX_HELLO_STRING)?;
    let user = c.string(MAX_HELLO_STRING)?;
    if !is_printable(database) || !is_printable(user) {
        return bad("database or user is not printable");
    }
    let password_len = c.string(MAX_HELLO_STRING)?.len();
    if user == INTERSERVER_SECRET_USER && password_len == 0 {
        c.string(MAX_HELLO_STRING)?; // cluster
        c.string(MAX_HELLO_STRING)?; // salt
    }
    Ok(ClientHello {
        client_name,
        version_major,
        version_minor,
        revision,
        database,
        user,
    })
}

/// Server Hello (code 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServerHello<'a> {
    pub server_name: &'a [u8],
    pub version_major: u64,
    pub version_minor: u64,
    pub revision: u64,
    pub timezone: &'a [u8],
    pub display_name: &'a [u8],
    pub version_patch: u64,
}

/// `client_revision`: from the client Hello, when seen (the server gates its fields on it).
pub(crate) fn server_hello<'a>(
    c: &mut Cursor<'a>,
    client_revision: Option<u64>,
) -> WireResult<ServerHello<'a>> {
    let server_name = c.string(MAX_HELLO_STRING)?;
    if !is_printable(server_name) {
        return bad("server name is not printable");
    }
    let version_major = c.varuint_max(10_000, "bad server major version")?;
    let version_minor = c.varuint_max(10_000, "bad server minor version")?;
    let server_revision = c.varuint()?;
    let r = client_revision.map_or(server_revision, |cr| cr.min(server_revision));
    let mut h = ServerHello {
        server_name,
        version_major,
        version_minor,
        revision: server_revision,
        timezone: b"",
        display_name: b"",
        version_patch: 0,
    };
    if r >= revision::VERSIONED_PARALLEL_REPLICAS_PROTOCOL {
        c.varuint()?;
    }
    if r >= revision::SERVER_TIMEZONE {
        h.timezone = c.string(MAX_HELLO_STRING)?;
    }
    if r >= revision::SERVER_DISPLAY_NAME {
        h.display_name = c.string(MAX_HELLO_STRING)?;
    }
    if r >= revision::VERSION_PATCH {
        h.version_patch = c.varuint()?;
    }
    if r >= revision::CHUNKED_PACKETS {
        c.string(MAX_HELLO_STRING)?;
        c.string(MAX_HELLO_STRING)?;
    }
    if r >= revision::PASSWORD_COMPLEXITY_RULES {
        let n = c.varuint_max(256, "too many password rules")?;
        for _ in 0..n {
            c.string(MAX_HELLO_STRING)?;
            c.string(MAX_HELLO_STRING)?;
        }
    }
    if r >= revision::INTERSERVER_SECRET_V2 {
        c.u64_le()?;
    }
    if r >= revision::SERVER_SETTINGS {
        settings_with_flags(c)?;
    }
    if r >= revision::QUERY_PLAN_SERIALIZATION {
        c.varuint()?;
    }
    if r >= revision::VERSIONED_CLUSTER_FUNCTION_PROTOCOL {
        c.varuint()?;
    }
    Ok(h)
}

/// Chunked framing choices of the Addendum (revision >= 54470).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Addendum {
    pub chunked_client_to_server: bool,
    pub chunked_server_to_client: bool,
}

/// The Addendum the client sends (no packet type) after the server Hello, `r >= 54458`.
pub(crate) fn addendum(c: &mut Cursor<'_>, r: u64) -> WireResult<Addendum> {
    let mut a = Addendum::default();
    c.string(MAX_HELLO_STRING)?; // quota key
    if r >= revision::CHUNKED_PACKETS {
        a.chunked_client_to_server = c.string(MAX_HELLO_STRING)? == b"chunked";
        a.chunked_server_to_client = c.string(MAX_HELLO_STRING)? == b"chunked";
    }
    if r >= revision::VERSIONED_PARALLEL_REPLICAS_PROTOCOL {
        c.varuint()?;
    }
    Ok(a)
}

/// `name, VarUInt flags, value` triples up to an empty name (revision >= 54429 settings,
/// query parameters, server settings).
pub(crate) fn settings_with_flags(c: &mut Cursor<'_>) -> WireResult<()> {
    loop {
        let name = c.string(MAX_NAME)?;
        if name.is_empty() {
            return Ok(());
        }
        if !is_identifier(name) {
            return bad("setting name is not an identifier");
        }
        c.varuint_max(0xff, "bad setting flags")?;
        c.string(MAX_STRING)?;
    }
}

/// Settings whose old binary value is a String (floats, enums, strings, chars); every other
/// setting of the binary format (revision < 54429) is a VarUInt or zig-zag VarInt.
const STRING_VALUED_SETTINGS: &[&[u8]] = &[
    b"load_balancing",
    b"totals_mode",
    b"totals_auto_threshold",
    b"distributed_product_mode",
    b"join_default_strictness",
    b"read_overflow_mode",
    b"group_by_overflow_mode",
    b"sort_overflow_mode",
    b"result_overflow_mode",
    b"timeout_overflow_mode",
    b"set_overflow_mode",
    b"join_overflow_mode",
    b"transfer_overflow_mode",
    b"distinct_overflow_mode",
    b"network_compression_method",
    b"send_logs_level",
    b"format_csv_delimiter",
    b"format_schema",
    b"date_time_input_format",
    b"count_distinct_implementation",
    b"max_streams_to_max_threads_ratio",
    b"input_format_allow_errors_ratio",
    b"insert_sample_with_metadata",
    b"output_format_json_escape_forward_slashes",
    b"compile_expressions",
    b"log_queries_min_type",
];

/// Old binary settings (revision < 54429): `name` then a value whose encoding depends on the
/// setting's type. Unknown settings are decided by which reading lets the list go on.
fn binary_settings(c: &mut Cursor<'_>) -> WireResult<()> {
    loop {
        let name = c.string(MAX_NAME)?;
        if name.is_empty() {
            return Ok(());
        }
        if !is_identifier(name) {
            return bad("setting name is not an identifier");
        }
        let string_first = STRING_VALUED_SETTINGS.contains(&name);
        let mut chosen = None;
        let mut short = false;
        for as_string in [string_first, !string_first] {
            let mut t = *c;
            let value = if as_string {
                t.string(MAX_STRING).map(|_| ())
            } else {
                t.varuint().map(|_| ())
            };
            match value.and_then(|()| next_is_setting_or_end(&t)) {
                Ok(()) => {
                    chosen = Some(t);
                    break;
                }
                Err(WireError::Short) => short = true,
                Err(WireError::Bad(_)) => {}
            }
        }
        match chosen {
            Some(t) => *c = t,
            None if short => return Err(WireError::Short),
            None => return bad("setting value fits no encoding"),
        }
    }
}

/// After a setting's value: the list's empty terminator or another identifier name.
fn next_is_setting_or_end(c: &Cursor<'_>) -> WireResult<()> {
    let mut t = *c;
    let name = t.string(MAX_NAME)?;
    if name.is_empty() || is_identifier(name) {
        Ok(())
    } else {
        bad("no setting name after a value")
    }
}

/// The fields of a Query packet up to the length of the query text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueryHead<'a> {
    pub query_id: &'a [u8],
    /// ClientInfo query kind: 0 none, 1 initial, 2 secondary.
    pub kind: u8,
    pub initial_user: &'a [u8],
    pub initial_query_id: &'a [u8],
    pub initial_address: &'a [u8],
    pub interface: u8,
    pub client_name: &'a [u8],
    pub version_major: u64,
    pub version_minor: u64,
    pub version_patch: Option<u64>,
    /// The originating client's own revision (ClientInfo, TCP interface).
    pub client_revision: u64,
    pub stage: u64,
    pub compression: bool,
    /// Length of the query text, which starts at `text_at` (its bytes may lie beyond the
    /// buffer).
    pub text_len: u64,
    pub text_at: usize,
}

const INTERFACE_TCP: u8 = 1;
const INTERFACE_HTTP: u8 = 2;
const MAX_INTERFACE: u8 = 10;
/// Query ids and other identifying strings are short; longer ones are garbage.
const MAX_ID: u64 = 1024;

fn printable_string<'a>(c: &mut Cursor<'a>, max: u64, what: &'static str) -> WireResult<&'a [u8]> {
    let s = c.string(max)?;
    if !is_printable(s) {
        return bad(what);
    }
    Ok(s)
}

fn client_info<'a>(
    c: &mut Cursor<'a>,
    r: u64,
    q: &mut QueryHead<'a>,
    extra: usize,
) -> WireResult<()> {
    q.kind = c.u8()?;
    match q.kind {
        0 => return Ok(()),
        1 | 2 => {}
        _ => return bad("bad query kind"),
    }
    q.initial_user = printable_string(c, MAX_ID, "initial user is not printable")?;
    q.initial_query_id = printable_string(c, MAX_ID, "initial query id is not printable")?;
    q.initial_address = printable_string(c, MAX_ID, "initial address is not printable")?;
    if !q.initial_address.is_empty() && !q.initial_address.contains(&b':') {
        return bad("initial address has no port");
    }
    if r >= revision::INITIAL_QUERY_START_TIME {
        c.u64_le()?;
    }
    q.interface = c.u8()?;
    if q.interface == 0 || q.interface > MAX_INTERFACE {
        return bad("bad interface");
    }
    if q.interface == INTERFACE_TCP {
        printable_string(c, MAX_ID, "os user is not printable")?;
        printable_string(c, MAX_ID, "client hostname is not printable")?;
        q.client_name = printable_string(c, MAX_ID, "client name is not printable")?;
        q.version_major = c.varuint_max(10_000, "bad client major version")?;
        q.version_minor = c.varuint_max(10_000, "bad client minor version")?;
        q.client_revision = c.varuint()?;
    } else if q.interface == INTERFACE_HTTP {
        if c.u8()? > 3 {
            return bad("bad HTTP method");
        }
        c.string(MAX_STRING)?; // user agent
        if r >= revision::X_FORWARDED_FOR_IN_CLIENT_INFO {
            c.string(MAX_STRING)?;
        }
        if r >= revision::REFERER_IN_CLIENT_INFO {
            c.string(MAX_STRING)?;
        }
    }
    if r >= revision::QUOTA_KEY_IN_CLIENT_INFO {
        c.string(MAX_STRING)?;
    }
    if r >= revision::DISTRIBUTED_DEPTH {
        c.varuint_max(10_000, "bad distributed depth")?;
    }
    if q.interface == INTERFACE_TCP && r >= revision::VERSION_PATCH {
        q.version_patch = Some(c.varuint_max(1_000_000, "bad client patch version")?);
    }
    if r >= revision::OPENTELEMETRY {
        match c.u8()? {
            0 => {}
            1 => {
                c.skip(16 + 8)?;
                c.string(MAX_STRING)?;
                c.u8()?;
            }
            _ => return bad("bad trace flag"),
        }
    }
    if r >= revision::PARALLEL_REPLICAS {
        c.varuint()?;
        c.varuint()?;
        c.varuint()?;
    }
    if r >= revision::QUERY_AND_LINE_NUMBERS {
        c.varuint()?;
        c.varuint()?;
    }
    if r >= revision::JWT_IN_INTERSERVER {
        match c.u8()? {
            0 => {}
            1 => {
                c.string(MAX_STRING)?;
            }
            _ => return bad("bad JWT flag"),
        }
    }
    if r >= revision::CLIENT_AGENT_IN_CLIENT_INFO {
        c.string(MAX_ID)?;
    }
    // Revisions above the newest known layout: a few flag bytes of unknown meaning.
    for _ in 0..extra {
        if c.u8()? > 1 {
            return bad("bad trailing ClientInfo flag");
        }
    }
    Ok(())
}

/// How many unknown flag bytes may follow ClientInfo at revision `r` (tried in this order).
fn extra_info_choices(r: u64) -> &'static [usize] {
    if r <= revision::NEWEST_KNOWN_LAYOUT {
        &[0]
    } else if r < 54488 {
        &[1, 0, 2]
    } else {
        &[2, 1, 0]
    }
}

/// Parses a Query packet after its type byte, at revision `r`, up to the text length.
pub(crate) fn query_head(buf: &[u8], r: u64) -> WireResult<QueryHead<'_>> {
    let mut result = bad("no layout");
    for &extra in extra_info_choices(r) {
        result = query_head_with(buf, r, extra);
        if result.is_ok() {
            return result;
        }
    }
    result
}

fn query_head_with(buf: &[u8], r: u64, extra: usize) -> WireResult<QueryHead<'_>> {
    let mut c = Cursor::new(buf);
    let mut q = QueryHead {
        query_id: printable_string(&mut c, MAX_ID, "query id is not printable")?,
        ..Default::default()
    };
    if r >= revision::CLIENT_INFO {
        client_info(&mut c, r, &mut q, extra)?;
    }
    if r >= revision::SETTINGS_SERIALIZED_AS_STRINGS {
        settings_with_flags(&mut c)?;
    } else {
        binary_settings(&mut c)?;
    }
    if r >= revision::INTERSERVER_EXTERNALLY_GRANTED_ROLES {
        c.string(MAX_STRING)?;
    }
    if r >= revision::INTERSERVER_SECRET {
        // SHA-256 (32 bytes) from servers; "" from plain clients; any short string from
        // other implementations.
        c.string(256)?;
    }
    q.stage = c.varuint_max(7, "bad query stage")?;
    q.compression = match c.varuint()? {
        0 => false,
        1 => true,
        _ => return bad("bad compression flag"),
    };
    q.text_len = c.varuint_max(MAX_STRING, "query text too long")?;
    q.text_at = c.pos;
    Ok(q)
}

/// The query parameters list that ends a Query packet at revision >= 54459.
pub(crate) fn query_parameters(c: &mut Cursor<'_>) -> WireResult<()> {
    settings_with_flags(c)
}

/// Revisions at which the Query packet's layout changes, newest first: one representative
/// revision (the threshold itself) per layout, for inferring the layout from the bytes.
pub(crate) const QUERY_LAYOUT_EPOCHS: &[u64] = &[
    revision::NEWEST,
    54486,
    revision::CLIENT_AGENT_IN_CLIENT_INFO,
    revision::JWT_IN_INTERSERVER,
    revision::QUERY_AND_LINE_NUMBERS,
    revision::INTERSERVER_EXTERNALLY_GRANTED_ROLES,
    revision::PARAMETERS,
    revision::PARALLEL_REPLICAS,
    revision::INITIAL_QUERY_START_TIME,
    revision::DISTRIBUTED_DEPTH,
    revision::OPENTELEMETRY,
    revision::INTERSERVER_SECRET,
    revision::SETTINGS_SERIALIZED_AS_STRINGS,
    revision::VERSION_PATCH,
    revision::QUOTA_KEY_IN_CLIENT_INFO,
    revision::CLIENT_INFO,
];

/// The highest revision with the same Query layout as `epoch` (the next epoch's threshold - 1).
pub(crate) fn epoch_upper_bound(epoch: u64) -> u64 {
    QUERY_LAYOUT_EPOCHS
        .iter()
        .rev()
        .find(|&&e| e > epoch)
        .map_or(u64::MAX, |&e| e - 1)
}

/// Exception (code 2), the outermost one; nested exceptions are read past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExceptionHead<'a> {
    pub code: i32,
    pub name: &'a [u8],
    pub message: &'a [u8],
}

pub(crate) fn exception<'a>(c: &mut Cursor<'a>) -> WireResult<ExceptionHead<'a>> {
    let mut first = None;
    for _ in 0..64 {
        let code = c.i32_le()?;
        let name = c.string(MAX_ID)?;
        if name.is_empty() || !is_printable(name) {
            return bad("exception name is not printable");
        }
        let message = c.string(MAX_STRING)?;
        c.string(MAX_STRING)?; // stack trace
        let has_nested = c.u8()?;
        first.get_or_insert(ExceptionHead {
            code,
            name,
            message,
        });
        match has_nested {
            0 => {
                return Ok(first.unwrap_or(ExceptionHead {
                    code,
                    name,
                    message,
                }))
            }
            1 => {}
            _ => return bad("bad has_nested flag"),
        }
    }
    bad("exceptions nested too deep")
}

/// Progress (code 3): increments since the previous Progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub read_rows: u64,
    pub read_bytes: u64,
    pub written_rows: u64,
    pub written_bytes: u64,
}

pub(crate) fn progress(c: &mut Cursor<'_>, r: u64) -> WireResult<Progress> {
    let mut p = Progress {
        read_rows: c.varuint()?,
        read_bytes: c.varuint()?,
        ..Default::default()
    };
    c.varuint()?; // total rows to read
    if r >= revision::TOTAL_BYTES_IN_PROGRESS {
        c.varuint()?;
    }
    if r >= revision::CLIENT_WRITE_INFO {
        p.written_rows = c.varuint()?;
        p.written_bytes = c.varuint()?;
    }
    if r >= revision::SERVER_QUERY_TIME_IN_PROGRESS {
        c.varuint()?;
    }
    Ok(p)
}

/// Revisions at which Progress changes layout (for choosing among candidate revisions).
pub(crate) const PROGRESS_LAYOUT_THRESHOLDS: &[u64] = &[
    revision::CLIENT_WRITE_INFO,
    revision::SERVER_QUERY_TIME_IN_PROGRESS,
    revision::TOTAL_BYTES_IN_PROGRESS,
];

/// ProfileInfo (code 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProfileInfo {
    pub rows: u64,
    pub bytes: u64,
}

pub(crate) fn profile_info(c: &mut Cursor<'_>, r: u64) -> WireResult<ProfileInfo> {
    let rows = c.varuint()?;
    c.varuint()?; // blocks
    let bytes = c.varuint()?;
    if c.u8()? > 1 {
        return bad("bad applied_limit");
    }
    c.varuint()?; // rows before limit
    if c.u8()? > 1 {
        return bad("bad calculated_rows_before_limit");
    }
    if r >= revision::ROWS_BEFORE_AGGREGATION {
        if c.u8()? > 1 {
            return bad("bad applied_aggregation");
        }
        c.varuint()?;
    }
    Ok(ProfileInfo { rows, bytes })
}

pub(crate) const PROFILE_INFO_LAYOUT_THRESHOLDS: &[u64] = &[revision::ROWS_BEFORE_AGGREGATION];

/// TablesStatusRequest (client code 5).
pub(crate) fn tables_status_request(c: &mut Cursor<'_>) -> WireResult<()> {
    let n = c.varuint_max(1 << 20, "too many tables")?;
    for _ in 0..n {
        c.string(MAX_NAME)?;
        c.string(MAX_NAME)?;
    }
    Ok(())
}

/// TablesStatusResponse (server code 9).
pub(crate) fn tables_status_response(c: &mut Cursor<'_>, r: u64) -> WireResult<()> {
    let n = c.varuint_max(1 << 20, "too many tables")?;
    for _ in 0..n {
        c.string(MAX_NAME)?;
        c.string(MAX_NAME)?;
        match c.u8()? {
            0 => {}
            1 => {
                c.varuint()?;
                if r >= revision::TABLE_READ_ONLY_CHECK {
                    c.varuint()?;
                }
            }
            _ => return bad("bad is_replicated flag"),
        }
    }
    Ok(())
}

/// PartUUIDs (server 12) and IgnoredPartUUIDs (client 8): `VarUInt n` + n UUIDs.
pub(crate) fn part_uuids(c: &mut Cursor<'_>) -> WireResult<()> {
    let n = c.varuint_max(1 << 24, "too many part UUIDs")?;
    c.skip(n * 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ch_go_golden_client_hello() {
        // proto/_golden/client_hello.raw after the type byte.
        let b = b"\x02ch\x01\x01\xa8\xc0\x02\x06github\x03neo\x00";
        let h = client_hello(&mut Cursor::new(b)).unwrap();
        assert_eq!(
            (h.client_name, h.revision, h.user),
            (&b"ch"[..], 41000, &b"neo"[..])
        );
    }

    #[test]
    fn ch_go_golden_server_hello() {
        // proto/_golden/type/ServerHello.raw after the type byte, R = 54450.
        let b = b"\x11ClickHouse server\x15\x0b\xb2\xa9\x03\x0dEurope/Moscow\x05alpha\x03";
        let mut c = Cursor::new(b);
        let h = server_hello(&mut c, Some(54450)).unwrap();
        assert_eq!(
            (h.revision, h.timezone, h.version_patch),
            (54450, &b"Europe/Moscow"[..], 3)
        );
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn ch_go_golden_progress_and_profile() {
        let p = progress(
            &mut Cursor::new(b"\x64\xf8\x8e\x25\xe8\x07\xb9\x03\x8f\xc7\x05\x00"),
            54460,
        )
        .unwrap();
        assert_eq!(
            (p.read_rows, p.read_bytes, p.written_rows),
            (100, 608120, 441)
        );
        let i = profile_info(
            &mut Cursor::new(b"\xd2\x09\xf3\xac\x0e\xa8\x03\x01\xa5\x12\x00"),
            54460,
        )
        .unwrap();
        assert_eq!((i.rows, i.bytes), (1234, 424));
    }

    #[test]
    fn binary_settings_are_decided_by_what_follows() {
        // A secondary query's settings from a real 18.16 server (see cli_distributed.chunks).
        let b = b"\x11queue_max_wait_ms\x88\x27\x16use_uncompressed_cache\x00\x0eload_balancing\x06random\x10max_memory_usage\x80\xc8\xaf\xa0\x25\x00\x02";
        let mut c = Cursor::new(b);
        binary_settings(&mut c).unwrap();
        assert_eq!(c.rest(), b"\x02");
    }

    #[test]
    fn layout_epochs_bound_each_other() {
        assert_eq!(epoch_upper_bound(revision::VERSION_PATCH), 54428);
        assert_eq!(epoch_upper_bound(revision::NEWEST), u64::MAX);
        assert!(QUERY_LAYOUT_EPOCHS.windows(2).all(|w| w[0] > w[1]));
    }
}
