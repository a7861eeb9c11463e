//! `l7tap dump`: writes each connection of a recording as a `.chunks` fixture (the format
//! of `protocols::fixture`), so real captures become parser test inputs.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use l7tap_ingest::recording::RecordingReader;
use l7tap_ingest::Tag;
use l7tap_probes::events::{self, ConnId, Event, Flow, Role};
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
                entry.1.push((dir, h.ts_ns, d.payload.to_vec()));
                if d.cut() > 0 {
                    eprintln!("{}: {} bytes cut at {}", entry.0, d.cut(), h.ts_ns);
                }
            }
            _ => {}
        }
    }
    for (name, chunks) in conns.values() {
        let path = out.join(format!("{name}.chunks"));
        std::fs::write(&path, format_chunks(chunks))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("wrote {} connections to {}", conns.len(), out.display());
    Ok(())
}
