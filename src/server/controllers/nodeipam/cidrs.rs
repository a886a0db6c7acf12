//! The node ranges of the cluster range and which are taken (kube-controller-manager's
//! CIDR set): the cluster range cut into ranges of the node mask size, each free or taken.
//! Pure, so that its rules are tested without a server.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OccupyError {
    #[error("{cidr} is not inside the cluster range {cluster}")]
    Outside { cidr: Ipv4Net, cluster: Ipv4Net },
    #[error("{cidr} is already taken by another node")]
    Taken { cidr: Ipv4Net },
}

pub struct CidrSet {
    cluster: Ipv4Net,
    mask: u8,
    taken: BTreeSet<u32>,
    /// Where the next search starts: after the last range given (as kube's
    /// nextCandidate), so that a range just freed is not handed out again at once.
    next: u32,
}

impl CidrSet {
    /// `mask` is at least the cluster prefix and at most 16 bits longer
    /// (`ClusterNetwork::check`).
    pub fn new(cluster: Ipv4Net, mask: u8) -> CidrSet {
        CidrSet { cluster, mask, taken: BTreeSet::new(), next: 0 }
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    fn count(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix_len())
    }

    fn range(&self, index: u32) -> Ipv4Net {
        let step = 1u64 << (32 - u32::from(self.mask));
        let base = u64::from(u32::from(self.cluster.network())) + u64::from(index) * step;
        // In range: index < count, so base stays inside the cluster range.
        Ipv4Net::new(Ipv4Addr::from(base as u32), self.mask).unwrap_or(self.cluster)
    }

    /// The node ranges `cidr` covers (a range of another size counts for every node range
    /// it overlaps, as kube's getBeginningAndEndIndices).
    fn indices(&self, cidr: Ipv4Net) -> Result<std::ops::RangeInclusive<u32>, OccupyError> {
        let cidr = cidr.trunc();
        if !self.cluster.contains(&cidr) {
            return Err(OccupyError::Outside { cidr, cluster: self.cluster });
        }
        let shift = 32 - u32::from(self.mask);
        let base = u32::from(self.cluster.network());
        let first = (u32::from(cidr.network()) - base) >> shift;
        let last = (u32::from(cidr.broadcast()) - base) >> shift;
        Ok(first..=last)
    }

    /// A free range, now taken; None when every one is taken.
    pub fn allocate(&mut self) -> Option<Ipv4Net> {
        let n = self.count();
        let i = (0..n).map(|k| (self.next + k) % n).find(|i| !self.taken.contains(i))?;
        self.taken.insert(i);
        self.next = (i + 1) % n;
        Some(self.range(i))
    }

    /// Marks `cidr` taken (a node's own, or one found at start); refused if it is outside
    /// the cluster range or overlaps a taken one.
    pub fn occupy(&mut self, cidr: Ipv4Net) -> Result<(), OccupyError> {
        let span = self.indices(cidr)?;
        if span.clone().any(|i| self.taken.contains(&i)) {
            return Err(OccupyError::Taken { cidr: cidr.trunc() });
        }
        self.taken.extend(span);
        Ok(())
    }

    /// Frees `cidr` (nothing if it is outside the range).
    pub fn release(&mut self, cidr: Ipv4Net) {
        if let Ok(span) = self.indices(cidr) {
            for i in span {
                self.taken.remove(&i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_handed_out_once_each_until_none_is_left() {
        let mut set = CidrSet::new(net("10.244.0.0/22"), 24);
        let got: Vec<_> = (0..4).map(|_| set.allocate().unwrap().to_string()).collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        assert_eq!(set.allocate(), None);
        set.release(net("10.244.1.0/24"));
        assert_eq!(set.allocate(), Some(net("10.244.1.0/24")));
    }

    #[test]
    fn a_nodes_own_range_is_kept_if_free_and_inside() {
        let mut set = CidrSet::new(net("10.244.0.0/16"), 24);
        set.occupy(net("10.244.7.0/24")).unwrap();
        assert_eq!(set.occupy(net("10.244.7.0/24")), Err(OccupyError::Taken { cidr: net("10.244.7.0/24") }));
        // A larger range takes every node range it covers.
        set.occupy(net("10.244.8.0/23")).unwrap();
        assert!(set.occupy(net("10.244.9.128/25")).is_err());
        assert_eq!(
            set.occupy(net("10.0.0.0/24")),
            Err(OccupyError::Outside { cidr: net("10.0.0.0/24"), cluster: net("10.244.0.0/16") })
        );
        let mut small = CidrSet::new(net("10.244.0.0/23"), 24);
        small.occupy(net("10.244.0.0/24")).unwrap();
        assert_eq!(small.allocate(), Some(net("10.244.1.0/24")));
        assert_eq!(small.allocate(), None);
    }
}
