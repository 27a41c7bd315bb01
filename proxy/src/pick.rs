//! Which server of an `upstream` a request goes to first, by the group's method, with
//! nginx's algorithms: smooth weighted round-robin (the default, and the tie-break of
//! `least_conn`), `least_conn` (fewest requests in progress for the weight), `ip_hash`
//! (nginx's hash of an IPv4 address's first three bytes or a whole IPv6 address,
//! rehashed past unusable servers up to 20 times), `hash KEY` (nginx's
//! Cache::Memcached-compatible CRC-32 walk) and `hash KEY consistent` (nginx's ketama
//! ring: 160 points per unit of weight), and `random [two]` (weighted; `two`: the less
//! loaded of two). The hash methods index every primary server, `down` ones included,
//! so marking one `down` moves only its own keys, as nginx documents.

/// nginx gives up rehashing after this many tries and falls back to round-robin.
const MAX_TRIES: usize = 20;

/// Smooth weighted round-robin over `candidates` (indexes into `weights` and
/// `current`): the pick.
pub(crate) fn round_robin(current: &mut [i64], weights: &[i64], candidates: &[usize]) -> usize {
    let total: i64 = candidates.iter().map(|&i| weights[i]).sum();
    let mut best = candidates[0];
    for &i in candidates {
        current[i] += weights[i];
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    best
}

/// The candidates with the fewest requests in progress for their weight (`active[i] /
/// weights[i]`, compared without division).
pub(crate) fn least_loaded(active: &[usize], weights: &[i64], candidates: &[usize]) -> Vec<usize> {
    let load = |i: usize| (active[i] as i128, i128::from(weights[i]));
    let mut best: Vec<usize> = Vec::new();
    for &i in candidates {
        match best.first() {
            None => best.push(i),
            Some(&b) => {
                let ((ai, wi), (ab, wb)) = (load(i), load(b));
                match (ai * wb).cmp(&(ab * wi)) {
                    std::cmp::Ordering::Less => best = vec![i],
                    std::cmp::Ordering::Equal => best.push(i),
                    std::cmp::Ordering::Greater => {}
                }
            }
        }
    }
    best
}

/// The server `hash % total weight` lands on, walking the weights in order.
fn by_weight(mut w: u64, weights: &[i64]) -> usize {
    for (i, &weight) in weights.iter().enumerate() {
        let weight = weight.max(1) as u64;
        if w < weight {
            return i;
        }
        w -= weight;
    }
    weights.len() - 1
}

/// nginx's `ip_hash`: `None` after 20 tries (round-robin then).
pub(crate) fn ip_hash(
    addr: std::net::IpAddr,
    weights: &[i64],
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let bytes: Vec<u8> = match addr.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let total: u64 = weights.iter().map(|&w| w.max(1) as u64).sum();
    let mut hash: u64 = 89;
    for _ in 0..MAX_TRIES {
        for &b in &bytes {
            hash = (hash * 113 + u64::from(b)) % 6271;
        }
        let i = by_weight(hash % total, weights);
        if usable(i) {
            return Some(i);
        }
    }
    None
}

/// nginx's `hash KEY` (compatible with Cache::Memcached): `None` after 20 tries.
pub(crate) fn key_hash(
    key: &[u8],
    weights: &[i64],
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| w.max(1) as u64).sum();
    let mut sum: u64 = 0;
    for rehash in 0..MAX_TRIES {
        let mut crc = crc32fast::Hasher::new();
        if rehash > 0 {
            crc.update(rehash.to_string().as_bytes());
        }
        crc.update(key);
        sum += u64::from((crc.finalize() >> 16) & 0x7fff);
        let i = by_weight(sum % total, weights);
        if usable(i) {
            return Some(i);
        }
    }
    None
}

/// nginx's ring of `hash KEY consistent`: points sorted by hash, each naming a server.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// The ring of servers `names` (`host:port` as written) with their `weights`.
    pub(crate) fn new(names: &[&str], weights: &[i64]) -> Ring {
        let mut points = Vec::new();
        for (server, (name, &weight)) in names.iter().zip(weights).enumerate() {
            let name = name.strip_prefix("unix:").unwrap_or(name);
            // nginx splits a trailing `:digits` port off the host.
            let (host, port) = match name.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
                _ => (name, ""),
            };
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let mut prev: u32 = 0;
            // 160 points per unit of weight, as nginx; at most 10,000 units' worth (a
            // weight of billions must not ask for billions of points).
            for _ in 0..weight.clamp(1, 10_000) * 160 {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push((prev, server));
            }
        }
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring { points }
    }

    /// The first usable server at or after `key`'s point: `None` after 20 points.
    pub(crate) fn pick(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let hash = crc32fast::hash(key);
        let start = self.points.partition_point(|p| p.0 < hash);
        (0..MAX_TRIES)
            .map(|k| self.points[(start + k) % self.points.len()].1)
            .find(|&i| usable(i))
    }
}

/// A weighted random pick among `candidates`.
pub(crate) fn random(weights: &[i64], candidates: &[usize]) -> usize {
    let total: u64 = candidates.iter().map(|&i| weights[i].max(1) as u64).sum();
    let mut w = fastrand::u64(0..total.max(1));
    for &i in candidates {
        let weight = weights[i].max(1) as u64;
        if w < weight {
            return i;
        }
        w -= weight;
    }
    candidates[candidates.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let (weights, mut current) = ([5, 1, 1], [0; 3]);
        let picks: Vec<usize> = (0..7)
            .map(|_| round_robin(&mut current, &weights, &[0, 1, 2]))
            .collect();
        // nginx's sequence for weights 5, 1, 1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_loaded_weighs_the_load() {
        assert_eq!(least_loaded(&[3, 1, 1], &[1, 1, 1], &[0, 1, 2]), [1, 2]);
        // 4 in progress on weight 4 is less loaded than 2 on weight 1.
        assert_eq!(least_loaded(&[4, 2], &[4, 1], &[0, 1]), [0]);
        assert_eq!(least_loaded(&[0, 9], &[1, 1], &[1]), [1], "candidates only");
    }

    #[test]
    fn ip_hash_keeps_a_network_on_one_server_and_skips_unusable_ones() {
        let w = [1, 1, 1];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let a = ip_hash(ip("192.0.2.10"), &w, |_| true).unwrap();
        assert_eq!(
            ip_hash(ip("192.0.2.200"), &w, |_| true),
            Some(a),
            "same /24"
        );
        assert_eq!(
            ip_hash(ip("::ffff:192.0.2.7"), &w, |_| true),
            Some(a),
            "mapped v4"
        );
        let other = ip_hash(ip("192.0.2.10"), &w, |i| i != a).unwrap();
        assert_ne!(other, a);
        assert_eq!(ip_hash(ip("192.0.2.10"), &w, |_| false), None);
        // Spread: many networks reach every server.
        let mut seen = [false; 3];
        for n in 0..64u8 {
            seen[ip_hash(ip(&format!("10.{n}.0.1")), &w, |_| true).unwrap()] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn key_hash_is_stable_and_rehashes_past_unusable_servers() {
        let w = [1, 2, 1];
        let a = key_hash(b"/a", &w, |_| true).unwrap();
        assert_eq!(key_hash(b"/a", &w, |_| true), Some(a));
        assert_ne!(key_hash(b"/a", &w, |i| i != a), Some(a));
        let mut counts = [0; 3];
        for n in 0..3000 {
            counts[key_hash(format!("/k{n}").as_bytes(), &w, |_| true).unwrap()] += 1;
        }
        // Weight 2 gets about half.
        assert!(counts[1] > 1200 && counts[1] < 1800, "{counts:?}");
    }

    #[test]
    fn a_consistent_ring_moves_only_the_keys_of_a_removed_server() {
        let names = ["a:80", "b:80", "c:80", "d:80"];
        let ring = Ring::new(&names, &[1, 1, 1, 1]);
        assert_eq!(ring.points.len(), 640);
        let keys: Vec<String> = (0..2000).map(|n| format!("user{n}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| ring.pick(k.as_bytes(), |_| true).unwrap())
            .collect();
        // `c` down: only its keys move.
        let after: Vec<usize> = keys
            .iter()
            .map(|k| ring.pick(k.as_bytes(), |i| i != 2).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b);
            } else {
                assert_ne!(*a, 2);
            }
        }
        let mut counts = [0; 4];
        for b in &before {
            counts[*b] += 1;
        }
        assert!(counts.iter().all(|&c| c > 300), "{counts:?}");
    }

    #[test]
    fn random_picks_by_weight() {
        let mut counts = [0; 2];
        for _ in 0..4000 {
            counts[random(&[3, 1], &[0, 1])] += 1;
        }
        assert!(counts[0] > 2700 && counts[0] < 3300, "{counts:?}");
        assert_eq!(random(&[3, 1], &[1]), 1);
    }
}
