//! Per-protocol settings of the probes (capture and tail bytes), and their kernel form: an
//! array indexed by wire id.
use std::ops::{Index, IndexMut};

use l7tap_abi::events::layout::PROTO_LIMIT;
use l7tap_abi::Protocol;

/// One value per protocol of the list, indexed by [`Protocol`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerProtocol<T>([T; Protocol::COUNT]);

impl<T: Copy> PerProtocol<T> {
    pub fn from_fn(f: impl FnMut(Protocol) -> T) -> Self {
        PerProtocol(Protocol::ALL.map(f))
    }

    /// Every protocol with its value, in wire id order.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, T)> + '_ {
        Protocol::ALL.into_iter().map(|p| (p, self[p]))
    }
}

impl PerProtocol<u32> {
    /// The kernel's array (`capture_bytes[L7_PROTO_LIMIT]`, ...): each value at its protocol's
    /// wire id, at most `max`; 0 at the unknown protocol's id 0.
    pub(crate) fn by_wire_id(&self, max: u32) -> [u32; PROTO_LIMIT as usize] {
        let mut out = [0; PROTO_LIMIT as usize];
        for (p, value) in self.iter() {
            out[usize::from(p.wire_id())] = value.min(max);
        }
        out
    }
}

impl<T> Index<Protocol> for PerProtocol<T> {
    type Output = T;
    fn index(&self, p: Protocol) -> &T {
        &self.0[p.index()]
    }
}

impl<T> IndexMut<Protocol> for PerProtocol<T> {
    fn index_mut(&mut self, p: Protocol) -> &mut T {
        &mut self.0[p.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_array_puts_each_value_at_its_wire_id_within_the_maximum() {
        let values = PerProtocol::from_fn(|p| 100_000 + u32::from(p.wire_id()));
        let kernel = values.by_wire_id(100_001);
        assert_eq!(kernel[0], 0);
        for p in Protocol::ALL {
            let expected = (100_000 + u32::from(p.wire_id())).min(100_001);
            assert_eq!(kernel[usize::from(p.wire_id())], expected, "{p}");
        }
    }

    #[test]
    fn index_by_protocol_reads_what_was_written() {
        let mut values = PerProtocol::from_fn(|_| 0u32);
        values[Protocol::ZooKeeper] = 7;
        assert_eq!(values[Protocol::ZooKeeper], 7);
        assert_eq!(values[Protocol::ClickHouse], 0);
        assert_eq!(values.iter().map(|(_, v)| v).sum::<u32>(), 7);
    }
}
