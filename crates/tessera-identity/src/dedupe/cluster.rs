//! Clustering: from matching pairs to groups of records that are one entity.
//!
//! Plain connected components chain: A~B and B~C put A and C together even when
//! they are plainly different, and at scale one weak link can glue two large groups.
//! Links are therefore taken strongest first (Kruskal's order); a record joins a
//! group through any link, but two groups of two or more records merge only when
//! *average linkage* holds: the mean match probability over all their cross pairs,
//! scored directly, is at least one half. Large groups are tested on an even sample
//! of `max_check_pairs` cross pairs, and a refusal is remembered until one of the two
//! groups grows, so the cost stays linear in the number of links.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Settings of the clustering.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Check average linkage before merging two groups of two or more records.
    pub average_linkage: bool,
    /// The mean cross-pair match probability two groups need to merge.
    pub min_average_probability: f64,
    /// Cross pairs scored at most per test; larger groups are tested on an even
    /// sample of their cross pairs.
    pub max_check_pairs: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            average_linkage: true,
            min_average_probability: 0.5,
            max_check_pairs: 256,
        }
    }
}

/// What the clustering did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// Clusters, singletons included.
    pub clusters: u64,
    /// Records in the largest cluster.
    pub largest: u64,
    /// Links that would have merged two groups and failed the average-linkage test.
    pub refused_links: u64,
    /// Average-linkage tests of large groups estimated on a sample of cross pairs.
    pub sampled_checks: u64,
}

/// The mean match probability over the cross pairs of two groups, or over an even
/// sample of `max_pairs` of them.
fn mean_cross_probability(
    a: &[u32],
    b: &[u32],
    max_pairs: usize,
    probability: &(dyn Fn(u32, u32) -> f64 + Sync),
) -> f64 {
    let total = a.len() * b.len();
    if total == 0 {
        return 0.0;
    }
    let count = total.min(max_pairs.max(1));
    // Every `step`-th cross pair, in row-major order (step 1 when all fit).
    let step = total as f64 / count as f64;
    let sum: f64 = (0..count)
        .map(|k| {
            let index = ((k as f64 * step) as usize).min(total - 1);
            probability(a[index / b.len()], b[index % b.len()])
        })
        .sum();
    sum / count as f64
}

/// Union–find with member lists (small groups are moved into large ones).
struct Groups {
    parent: Vec<u32>,
    members: Vec<Vec<u32>>,
}

impl Groups {
    fn new(n: usize) -> Self {
        Groups {
            parent: (0..n as u32).collect(),
            members: (0..n as u32).map(|i| vec![i]).collect(),
        }
    }

    fn find(&mut self, x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let mut node = x;
        while self.parent[node as usize] != root {
            let next = self.parent[node as usize];
            self.parent[node as usize] = root;
            node = next;
        }
        root
    }

    fn union(&mut self, a: u32, b: u32) {
        let (big, small) = if self.members[a as usize].len() >= self.members[b as usize].len() {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small as usize] = big;
        let moved = std::mem::take(&mut self.members[small as usize]);
        self.members[big as usize].extend(moved);
    }
}

/// Clusters `n` records linked by `links` `(i, j, weight)`; `probability(i, j)`
/// scores any pair directly for the average-linkage test. Returns each record's
/// cluster number (dense, in order of each cluster's first record) and statistics.
pub fn cluster(
    n: usize,
    links: &mut [(u32, u32, f32)],
    settings: &ClusterSettings,
    probability: &(dyn Fn(u32, u32) -> f64 + Sync),
) -> (Vec<u32>, ClusterStats) {
    links.sort_unstable_by(|x, y| y.2.total_cmp(&x.2).then((x.0, x.1).cmp(&(y.0, y.1))));
    let mut groups = Groups::new(n);
    let mut stats = ClusterStats::default();
    // Refusals stay valid while neither group changes: keyed by both roots, with
    // each group's size at the time (a group only ever grows).
    let mut refused: HashMap<(u32, u32), (usize, usize)> = HashMap::new();
    for &(a, b, _) in links.iter() {
        let (ra, rb) = (groups.find(a), groups.find(b));
        if ra == rb {
            continue;
        }
        let (sa, sb) = (
            groups.members[ra as usize].len(),
            groups.members[rb as usize].len(),
        );
        if settings.average_linkage && sa >= 2 && sb >= 2 {
            let key = (ra.min(rb), ra.max(rb));
            let sizes = if ra < rb { (sa, sb) } else { (sb, sa) };
            if refused.get(&key) == Some(&sizes) {
                stats.refused_links += 1;
                continue;
            }
            let mean = mean_cross_probability(
                &groups.members[ra as usize],
                &groups.members[rb as usize],
                settings.max_check_pairs,
                probability,
            );
            if sa.saturating_mul(sb) > settings.max_check_pairs {
                stats.sampled_checks += 1;
            }
            if mean < settings.min_average_probability {
                stats.refused_links += 1;
                refused.insert(key, sizes);
                continue;
            }
        }
        groups.union(ra, rb);
    }
    if stats.sampled_checks > 0 {
        tracing::info!(
            sampled = stats.sampled_checks,
            max_check_pairs = settings.max_check_pairs,
            "average linkage of large groups was estimated on a sample of their cross pairs"
        );
    }
    let mut labels = vec![u32::MAX; n];
    let mut next = 0u32;
    for i in 0..n as u32 {
        let root = groups.find(i);
        if labels[root as usize] == u32::MAX {
            labels[root as usize] = next;
            stats.largest = stats
                .largest
                .max(groups.members[root as usize].len() as u64);
            next += 1;
        }
        labels[i as usize] = labels[root as usize];
    }
    stats.clusters = u64::from(next);
    (labels, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_form_connected_groups() {
        let mut links = vec![(0, 1, 10.0), (1, 2, 9.0), (3, 4, 8.0)];
        let (labels, stats) = cluster(6, &mut links, &ClusterSettings::default(), &|_, _| 1.0);
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 2]);
        assert_eq!(stats.clusters, 3);
        assert_eq!(stats.largest, 3);
    }

    #[test]
    fn weak_link_between_two_solid_groups_is_refused() {
        // {0,1} and {2,3} are solid; 1~2 is a weak link; 0/3, 0/2, 1/3 do not match.
        let mut links = vec![(0, 1, 20.0), (2, 3, 20.0), (1, 2, 5.0)];
        let probability = |a: u32, b: u32| {
            let pair = (a.min(b), a.max(b));
            if pair == (0, 1) || pair == (2, 3) || pair == (1, 2) {
                0.9
            } else {
                0.0
            }
        };
        let (labels, stats) = cluster(4, &mut links, &ClusterSettings::default(), &probability);
        assert_eq!(labels, vec![0, 0, 1, 1]);
        assert_eq!(stats.refused_links, 1);

        let plain = ClusterSettings {
            average_linkage: false,
            ..ClusterSettings::default()
        };
        let mut links = vec![(0, 1, 20.0), (2, 3, 20.0), (1, 2, 5.0)];
        let (labels, _) = cluster(4, &mut links, &plain, &probability);
        assert_eq!(labels, vec![0, 0, 0, 0]);
    }

    #[test]
    fn a_record_joins_a_group_through_one_link() {
        let mut links = vec![(0, 1, 20.0), (1, 2, 3.0)];
        let (labels, _) = cluster(3, &mut links, &ClusterSettings::default(), &|_, _| 0.0);
        assert_eq!(labels, vec![0, 0, 0]);
    }

    proptest::proptest! {
        /// People of two or more records each, every record linked to the others
        /// of its person (strong links), and chains of single links between
        /// records of different people (each link above the threshold, at most
        /// one between two people, every other cross pair plainly different): no
        /// cluster ever holds two people, however the chains run.
        #[test]
        fn a_chain_of_weak_links_never_merges_two_people(
            sizes in proptest::collection::vec(2usize..5, 2..8),
            chain in proptest::collection::vec((0usize..64, 0usize..64), 1..20),
            weak_probability in 0.5f64..0.95,
        ) {
            let mut person = Vec::new();
            for (p, &size) in sizes.iter().enumerate() {
                person.extend(std::iter::repeat_n(p as u32, size));
            }
            let n = person.len();
            let mut links = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    if person[a] == person[b] {
                        links.push((a as u32, b as u32, 20.0f32));
                    }
                }
            }
            let mut chained = std::collections::HashSet::new();
            let mut linked_people = std::collections::HashSet::new();
            for &(a, b) in &chain {
                let (a, b) = (a % n, b % n);
                let people = (person[a].min(person[b]), person[a].max(person[b]));
                if person[a] != person[b] && linked_people.insert(people) {
                    links.push((a.min(b) as u32, a.max(b) as u32, 1.0f32));
                    chained.insert((a.min(b) as u32, a.max(b) as u32));
                }
            }
            // The chained pairs themselves look like matches; every other cross
            // pair is plainly different.
            let probability = |a: u32, b: u32| {
                let pair = (a.min(b), a.max(b));
                if person[a as usize] == person[b as usize] {
                    0.99
                } else if chained.contains(&pair) {
                    weak_probability
                } else {
                    0.01
                }
            };
            let (labels, _) = cluster(n, &mut links, &ClusterSettings::default(), &probability);
            for a in 0..n {
                for b in 0..n {
                    if person[a] == person[b] {
                        proptest::prop_assert_eq!(labels[a], labels[b], "one person split");
                    } else {
                        proptest::prop_assert_ne!(labels[a], labels[b], "two people merged");
                    }
                }
            }
        }
    }
}
