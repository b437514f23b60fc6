//! Consistent hashing: which node owns a key, and where its keys go while it is out.
//!
//! Each node stands on the ring at `vnodes` points, hashed from its address, so a node's
//! points never depend on the other nodes: adding or removing one moves only the keys
//! between its points and their predecessors, about 1/N of them.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Nodes placed on a 64-bit hash ring at several points each.
#[derive(Debug, Clone)]
pub struct Ring {
    /// `(position, node index)`, sorted by position (then index, so that a collision
    /// still gives one order).
    points: Vec<(u64, usize)>,
    nodes: usize,
}

impl Ring {
    /// Places every node of `nodes` (by address) at `vnodes` points.
    #[must_use]
    pub fn new(nodes: &[String], vnodes: usize) -> Ring {
        let mut points: Vec<(u64, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(index, address)| {
                (0..vnodes as u64).map(move |v| (xxh3_64_with_seed(address.as_bytes(), v), index))
            })
            .collect();
        points.sort_unstable();
        Ring {
            points,
            nodes: nodes.len(),
        }
    }

    /// The first node clockwise from `key`'s hash for which `usable` holds, asking
    /// `usable` at most once per node; `None` if no node is usable.
    pub fn owner(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let hash = xxh3_64(key);
        let start = self
            .points
            .partition_point(|&(position, _)| position < hash);
        // Allocated only once a node is refused: the common case asks one node.
        let mut refused: Vec<bool> = Vec::new();
        let mut refused_count = 0;
        let around = self.points[start..].iter().chain(&self.points[..start]);
        for &(_, node) in around {
            if refused.get(node).copied().unwrap_or(false) {
                continue;
            }
            if usable(node) {
                return Some(node);
            }
            if refused.is_empty() {
                refused = vec![false; self.nodes];
            }
            refused[node] = true;
            refused_count += 1;
            if refused_count == self.nodes {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: usize = 100_000;
    const VNODES: usize = 160;

    fn addresses(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("10.0.0.{i}:7501")).collect()
    }

    fn key(i: usize) -> Vec<u8> {
        format!("subscribers:user{i}@example.com").into_bytes()
    }

    /// The owner's address of each of the test keys.
    fn owners(ring_nodes: &[String], usable: impl Fn(usize) -> bool) -> Vec<Option<String>> {
        let ring = Ring::new(ring_nodes, VNODES);
        (0..KEYS)
            .map(|i| ring.owner(&key(i), &usable).map(|n| ring_nodes[n].clone()))
            .collect()
    }

    fn moved(before: &[Option<String>], after: &[Option<String>]) -> usize {
        before.iter().zip(after).filter(|(a, b)| a != b).count()
    }

    /// Asserts `moved` keys out of [`KEYS`] are within 0.5/`nodes`..1.6/`nodes` of them.
    fn assert_about_one_nth(moved: usize, nodes: usize) {
        let tenths_of_a_share = moved * nodes * 10;
        assert!(
            (5 * KEYS..16 * KEYS).contains(&tenths_of_a_share),
            "{moved} of {KEYS} keys moved, expected about 1/{nodes}"
        );
    }

    #[test]
    fn test_keys_spread_roughly_evenly() {
        for count in [2, 5, 10] {
            let nodes = addresses(count);
            let mut per_node = vec![0usize; count];
            let ring = Ring::new(&nodes, VNODES);
            for i in 0..KEYS {
                per_node[ring.owner(&key(i), |_| true).expect("every node is usable")] += 1;
            }
            let fair = KEYS / count;
            for (node, &held) in per_node.iter().enumerate() {
                assert!(
                    (fair * 3 / 4..fair * 5 / 4).contains(&held),
                    "node {node} of {count} holds {held} keys, a fair share is {fair}"
                );
            }
        }
    }

    #[test]
    fn test_adding_a_node_moves_about_one_nth_of_the_keys_and_only_to_it() {
        for count in [3, 8] {
            let before = owners(&addresses(count), |_| true);
            let grown = addresses(count + 1);
            let after = owners(&grown, |_| true);
            let newcomer = Some(grown[count].clone());
            assert!(before
                .iter()
                .zip(&after)
                .all(|(was, is)| was == is || *is == newcomer));
            assert_about_one_nth(moved(&before, &after), count + 1);
        }
    }

    #[test]
    fn test_removing_a_node_moves_only_its_keys() {
        for count in [4, 9] {
            let nodes = addresses(count);
            let before = owners(&nodes, |_| true);
            let after = owners(&nodes[1..], |_| true);
            let removed = Some(nodes[0].clone());
            assert!(before
                .iter()
                .zip(&after)
                .all(|(was, is)| was == is || *was == removed));
            assert_about_one_nth(moved(&before, &after), count);
        }
    }

    #[test]
    fn test_an_unusable_nodes_keys_go_elsewhere_and_no_other_key_moves() {
        let nodes = addresses(5);
        let before = owners(&nodes, |_| true);
        let after = owners(&nodes, |node| node != 2);
        let out = Some(nodes[2].clone());
        for (was, is) in before.iter().zip(&after) {
            if *was == out {
                assert!(is.is_some() && *is != out);
            } else {
                assert_eq!(was, is);
            }
        }
        // They land where the ring without that node would put them.
        let without = owners(&[&nodes[..2], &nodes[3..]].concat(), |_| true);
        assert_eq!(after, without);
    }

    #[test]
    fn test_no_usable_node_is_none_and_each_node_is_asked_once() {
        let ring = Ring::new(&addresses(4), VNODES);
        let asked = std::cell::RefCell::new(Vec::new());
        let owner = ring.owner(b"k", |node| {
            asked.borrow_mut().push(node);
            false
        });
        assert_eq!(owner, None);
        let mut asked = asked.into_inner();
        asked.sort_unstable();
        assert_eq!(asked, vec![0, 1, 2, 3]);
        assert_eq!(Ring::new(&[], VNODES).owner(b"k", |_| true), None);
    }
}
