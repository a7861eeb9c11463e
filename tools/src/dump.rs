//! `l7tap dump`: writes each connection of a recording as a `.chunks` fixture (the format
//! of `protocols::fixture`), so real captures become parser test inputs.
//!
//! A syscall whose bytes the kernel did not capture in full gets a fourth field,
//! `cut=<n>`: `n` more bytes of that syscall were never seen (what the pipeline turns into
//! skips or `Parser::gap`); the last bytes of such a syscall, sent on their own, are a line
//! ending with `tail` (the one codec: `protocols::fixture`). Chunks are written in timestamp
//! order, the order in which the actors parse them.
//!
//! The fixtures hold raw payloads, credentials included, like the recording: files are
//! created 0600 in a directory created 0700, and the command says so. With `--scrub`, the
//! credentials the protocols crate knows ([`l7tap_protocols::credentials`]) are replaced by
//! filler of the same length. File names take the process name through
//! [`untrusted::for_file_name`].
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use l7tap_abi::events::{self, ConnId, Event, Flow, Role};
use l7tap_ingest::recording::RecordingReader;
use l7tap_ingest::Tag;
use l7tap_protocols::credentials::scrub_credentials;
use l7tap_protocols::fixture::{format_chunks, Chunk, Cut};
use l7tap_protocols::{Direction, Protocol};

use crate::untrusted;

/// Mode of the fixture files: they hold raw payloads.
const FILE_MODE: u32 = 0o600;
/// Mode of the directories `dump` creates.
const DIR_MODE: u32 = 0o700;

/// One connection of the recording: its file name, protocol (when an event said it) and
/// chunks.
struct Connection {
    name: String,
    protocol: Option<Protocol>,
    chunks: Vec<Chunk>,
}

pub fn dump(file: &Path, out: &Path, scrub: bool) -> Result<()> {
    let mut reader = RecordingReader::open(file)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut conns: HashMap<ConnId, Connection> = HashMap::new();
    let mut body = Vec::new();
    while let Some(tag) = reader.next_frame(&mut body)? {
        if tag != Tag::KernelEvent {
            continue;
        }
        match events::decode(&body) {
            Ok(Event::Open(o)) => {
                let name = format!(
                    "{}-{}-{}-{}-{}",
                    o.header.protocol.map_or("unknown", |p| p.name()),
                    untrusted::for_file_name(&o.comm),
                    o.header.conn.tgid,
                    o.header.conn.fd,
                    o.header.conn.start_ns
                )
                .to_lowercase();
                conns.entry(o.header.conn).or_insert_with(|| Connection {
                    name,
                    protocol: o.header.protocol,
                    chunks: Vec::new(),
                });
            }
            Ok(Event::Data(d)) => {
                let h = d.header;
                let dir = match (h.role, h.flow) {
                    (Role::Server, Flow::Ingress)
                    | (Role::Client | Role::Unknown, Flow::Egress) => Direction::ClientToServer,
                    _ => Direction::ServerToClient,
                };
                let entry = conns.entry(h.conn).or_insert_with(|| Connection {
                    name: format!("unknown-{}-{}-{}", h.conn.tgid, h.conn.fd, h.conn.start_ns),
                    protocol: None,
                    chunks: Vec::new(),
                });
                entry.protocol = entry.protocol.or(h.protocol);
                if d.tail && d.cut() == 0 {
                    entry
                        .chunks
                        .push(Chunk::tail(dir, h.ts_ns, d.payload.to_vec()));
                    continue;
                }
                entry
                    .chunks
                    .push(Chunk::cut_after(dir, h.ts_ns, d.payload.to_vec(), d.cut()));
                if d.cut() > 0 {
                    eprintln!("{}: {} bytes cut at {}", entry.name, d.cut(), h.ts_ns);
                }
            }
            _ => {}
        }
    }
    let mut scrubbed = 0;
    for conn in conns.values_mut() {
        // The recording holds events in the order the buffers were drained; the actors
        // parse them in timestamp order (ties keep arrival order), so the fixture does too.
        conn.chunks.sort_by_key(|c| c.ts_ns);
        if scrub {
            scrubbed += scrub_connection(conn.protocol, &mut conn.chunks);
        }
        let path = out.join(format!("{}.chunks", conn.name));
        write_private(&path, format_chunks(&conn.chunks).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let shown_out = untrusted::for_terminal(&out.display().to_string()).into_owned();
    eprintln!("wrote {} connections to {shown_out}", conns.len());
    if scrub {
        eprintln!("l7tap: --scrub replaced {scrubbed} bytes of credentials (ClickHouse Hello passwords, ZooKeeper session passwords, auth data and SASL tokens); other payload bytes, query text included, are as captured");
    } else {
        eprintln!("l7tap: the files in {shown_out} hold raw payloads, credentials included (ClickHouse passwords, ZooKeeper auth): keep them private, or dump again with --scrub before sharing them");
    }
    Ok(())
}

/// Writes `bytes` to a new or truncated file of mode 0600 (also when the file existed).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)
}

/// Replaces the credentials in the chunks of one connection; returns the bytes replaced.
/// Each direction's bytes are scrubbed as runs of whole syscalls: a run ends at a syscall
/// the kernel cut (its bytes are missing), and the next run starts at a syscall, where a
/// message usually starts. A connection of unknown protocol gets every protocol's scrub.
fn scrub_connection(protocol: Option<Protocol>, chunks: &mut [Chunk]) -> usize {
    let protocols = match protocol {
        Some(p) => vec![p],
        None => Protocol::ALL.to_vec(),
    };
    let mut replaced = 0;
    for direction in [Direction::ClientToServer, Direction::ServerToClient] {
        // (index, whether a run ends after it)
        let indices: Vec<(usize, bool)> = (0..chunks.len())
            .filter(|&i| chunks[i].dir == direction)
            .map(|i| (i, chunks[i].cut != Cut::Whole))
            .collect();
        for run in indices.split_inclusive(|&(_, ends_run)| ends_run) {
            let mut bytes: Vec<u8> = run
                .iter()
                .flat_map(|&(i, _)| chunks[i].bytes.iter().copied())
                .collect();
            for &p in &protocols {
                replaced += scrub_credentials(p, direction, &mut bytes);
            }
            let mut at = 0;
            for &(i, _) in run {
                let len = chunks[i].bytes.len();
                chunks[i].bytes.copy_from_slice(&bytes[at..at + len]);
                at += len;
            }
        }
    }
    replaced
}
