//! The benchmark floor: a program that returns at once, attached to every tracepoint of
//! [`PROGRAMS`]. The watched programs' slowdown under it is the part of the probes' cost that
//! no tracepoint-based agent can remove (`ci/bench.sh`, mode `floor`).
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};

use crate::{check_privileges, ensure_tracefs, ProbeError, PROGRAMS};

/// The floor object, built from `bpf/floor.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));

const PROGRAM: &str = "nothing";

/// The floor program, attached to the probes' tracepoints until dropped.
pub struct Floor {
    ebpf: Ebpf,
    links: Vec<TracePointLinkId>,
}

impl Floor {
    /// Loads the program and attaches it to each tracepoint the probes attach to.
    pub fn attach() -> Result<Floor, ProbeError> {
        check_privileges()?;
        ensure_tracefs()?;
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(ProbeError::Load)?;
        let mut floor = Floor {
            links: Vec::new(),
            ebpf: {
                program(&mut ebpf)?
                    .load()
                    .map_err(|source| ProbeError::Program {
                        name: PROGRAM,
                        source,
                    })?;
                ebpf
            },
        };
        for &(_, category, tracepoint) in PROGRAMS {
            let link = program(&mut floor.ebpf)?
                .attach(category, tracepoint)
                .map_err(|source| ProbeError::Program {
                    name: PROGRAM,
                    source,
                })?;
            floor.links.push(link);
        }
        Ok(floor)
    }

    /// Tracepoints the program is attached to.
    pub fn attached(&self) -> usize {
        self.links.len()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        if let Ok(program) = program(&mut self.ebpf) {
            for link in self.links.drain(..) {
                let _ = program.detach(link);
            }
        }
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut TracePoint, ProbeError> {
    ebpf.program_mut(PROGRAM)
        .ok_or(ProbeError::MissingProgram { name: PROGRAM })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            name: PROGRAM,
            source,
        })
}
