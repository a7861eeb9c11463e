//! `l7tap dump`: writes each connection of a recording as a `.chunks` fixture (the format
//! of `protocols::fixture`), so real captures become parser test inputs.
//!
//! A syscall whose bytes the kernel did not capture in full gets a fourth field,
//! `cut=<n>`: `n` more bytes of that syscall were never seen (what the pipeline turns into
//! skips or `Parser::gap`); the last bytes of such a syscall, sent on their own, are a line
//! ending with `tail`. Chunks are written in timestamp order, the order in which the actors
//! parse them.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use l7tap_abi::events::{self, ConnId, Event, Flow, Role};
use l7tap_ingest::recording::RecordingReader;
use l7tap_ingest::Tag;
use l7tap_protocols::fixture::{format_chunks, Chunk};
use l7tap_protocols::Direction;

pub fn dump(file: &Path, out: &Path) -> Result<()> {
    let mut reader = RecordingReader::open(file)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut conns: HashMap<ConnId, (String, Vec<Chunk>)> = HashMap::new();
    let mut body = Vec::new();
    while let Some(tag) = reader.next_frame(&mut body)? {
        if tag != Tag::KernelEvent {
            continue;
        }
        match events::decode(&body) {
            Ok(Event::Open(o)) => {
                let name = format!(
                    "{:?}-{}-{}-{}-{}",
                    o.header.protocol,
                    o.comm,
                    o.header.conn.tgid,
                    o.header.conn.fd,
                    o.header.conn.start_ns
                )
                .to_lowercase();
                conns
                    .entry(o.header.conn)
                    .or_insert_with(|| (name, Vec::new()));
            }
            Ok(Event::Data(d)) => {
                let h = d.header;
                let dir = match (h.role, h.flow) {
                    (Role::Server, Flow::Ingress)
                    | (Role::Client | Role::Unknown, Flow::Egress) => Direction::ClientToServer,
                    _ => Direction::ServerToClient,
                };
                let entry = conns.entry(h.conn).or_insert_with(|| {
                    (
                        format!("unknown-{}-{}-{}", h.conn.tgid, h.conn.fd, h.conn.start_ns),
                        Vec::new(),
                    )
                });
                if d.tail && d.cut() == 0 {
                    entry.1.push(Chunk::tail(dir, h.ts_ns, d.payload.to_vec()));
                    continue;
                }
                entry
                    .1
                    .push(Chunk::cut_after(dir, h.ts_ns, d.payload.to_vec(), d.cut()));
                if d.cut() > 0 {
                    eprintln!("{}: {} bytes cut at {}", entry.0, d.cut(), h.ts_ns);
                }
            }
            _ => {}
        }
    }
    for (name, chunks) in conns.values_mut() {
        // The recording holds events in the order the buffers were drained; the actors
        // parse them in timestamp order (ties keep arrival order), so the fixture does too.
        chunks.sort_by_key(|c| c.ts_ns);
        let path = out.join(format!("{name}.chunks"));
        std::fs::write(&path, format_chunks(chunks))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("wrote {} connections to {}", conns.len(), out.display());
    Ok(())
}
