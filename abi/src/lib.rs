//! The kernel ABI: what the eBPF programs send to user space, and the list of protocols they
//! classify, both from one C header (`c/l7tap_events.h`).
//!
//! Architecture invariant: this crate is the only Rust definition of the event layout and of
//! protocol identity. It does no I/O and loads nothing: crates that only decode events
//! (actors, replay, dump) depend on it, not on the loader.
pub mod events;

pub use events::layout::Protocol;

impl Protocol {
    /// The protocol named `name` ([`Protocol::name`]); none for a name the list lacks.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_and_indexes_round_trip() {
        for (i, p) in Protocol::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
            assert_eq!(Protocol::from_wire_id(p.wire_id()), Some(p));
            assert_eq!(Protocol::NAMES[i], p.name());
            assert_eq!(Protocol::from_name(p.name()), Some(p));
        }
        assert_eq!(Protocol::from_wire_id(0), None);
        assert_eq!(Protocol::from_name("redis"), None);
        assert_eq!(Protocol::from_wire_id(Protocol::COUNT as u8 + 1), None);
        assert_eq!(events::layout::PROTO_LIMIT as usize, Protocol::COUNT + 1);
    }

    #[test]
    fn names_are_unique() {
        let mut names = Protocol::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Protocol::COUNT);
    }
}
