//! What a proxy subscribed to, with name sets shared by every subscription to the
//! same names.
//!
//! Name sets are found by an order-independent hash of the names (computed from a
//! request's bytes without copying them), then compared name by name: two different
//! sets of names may have the same hash, and are never taken for each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use super::lock;

/// A set of resource names, shared by every subscription to the same names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NameSet {
    names: BTreeSet<String>,
    /// Order-independent: the wrapping sum of the names' hashes. Finds a set from a
    /// request's names in any order; different sets may share it.
    hash: u64,
    /// A hash of the names in order, each with its length: what a version says of
    /// the names.
    digest: u64,
}

fn name_hash(n: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(n)
}

/// The order-independent hash of names, and how many there are.
fn hash_names<'a>(names: impl Iterator<Item = &'a [u8]>) -> (u64, usize) {
    names.fold((0u64, 0usize), |(h, len), n| {
        (h.wrapping_add(name_hash(n)), len + 1)
    })
}

impl NameSet {
    fn new(names: BTreeSet<String>) -> Self {
        let (hash, _) = hash_names(names.iter().map(String::as_bytes));
        let mut d = xxhash_rust::xxh3::Xxh3::new();
        for n in &names {
            d.update(&(n.len() as u64).to_le_bytes());
            d.update(n.as_bytes());
        }
        Self {
            names,
            hash,
            digest: d.digest(),
        }
    }

    pub(super) fn digest(&self) -> u64 {
        self.digest
    }

    /// Whether a request's names (in any order, possibly repeated) are exactly these.
    fn is<'a>(&self, names: impl Iterator<Item = &'a [u8]> + Clone) -> bool {
        // Requests list names in order, usually: then one pass compares them.
        let mut mine = self.names.iter();
        let mut prev: Option<&[u8]> = None;
        let mut in_order = true;
        let mut equal = true;
        for n in names.clone() {
            if prev.is_some_and(|p| p >= n) {
                in_order = false;
                break;
            }
            prev = Some(n);
            equal &= mine.next().is_some_and(|m| m.as_bytes() == n);
        }
        if in_order {
            return equal && mine.next().is_none();
        }
        let mut theirs: Vec<&[u8]> = names.collect();
        theirs.sort_unstable();
        theirs.dedup();
        theirs.len() == self.names.len()
            && theirs
                .iter()
                .zip(&self.names)
                .all(|(t, m)| *t == m.as_bytes())
    }
}

impl Default for NameSet {
    fn default() -> Self {
        Self::new(BTreeSet::new())
    }
}

/// What a proxy subscribed to of one type: everything (wildcard), names, or (Delta)
/// both. Shown in the debug API as a list, `"*"` first for a wildcard.
#[derive(Clone, Debug, Default)]
pub struct Subscription {
    wildcard: bool,
    names: Arc<NameSet>,
}

impl Subscription {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The names subscribed to explicitly.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.names.iter().map(String::as_str)
    }

    pub(super) fn name_count(&self) -> usize {
        self.names.names.len()
    }

    pub(super) fn name_set(&self) -> &Arc<NameSet> {
        &self.names
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.names.contains(name)
    }

    /// The same subscription: the same wildcard, the same shared name set.
    pub(super) fn same(&self, other: &Self) -> bool {
        self.wildcard == other.wildcard && Arc::ptr_eq(&self.names, &other.names)
    }

    /// What tells the selected names apart: the shared name set, unless the names
    /// make no difference (a wildcard, or none).
    pub(super) fn identity(&self) -> usize {
        if self.wildcard || self.names.names.is_empty() {
            0
        } else {
            Arc::as_ptr(&self.names) as usize
        }
    }

    pub(super) fn with_wildcard(&self, wildcard: bool) -> Self {
        Self {
            wildcard,
            names: self.names.clone(),
        }
    }
}

impl Serialize for Subscription {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.wildcard.then_some("*").into_iter().chain(self.names()))
    }
}

/// Subscription name sets by hash; connections with the same names share one set.
#[derive(Default)]
struct Interner {
    sets: HashMap<u64, Vec<Weak<NameSet>>>,
    prune_at: usize,
}

impl Interner {
    /// The set of a request's names, if one is alive.
    fn find<'a>(
        &self,
        hash: u64,
        len: usize,
        names: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Option<Arc<NameSet>> {
        self.sets
            .get(&hash)?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.names.len() == len && s.is(names.clone()))
    }

    fn intern(&mut self, names: BTreeSet<String>) -> Arc<NameSet> {
        let set = NameSet::new(names);
        let slot = self.sets.entry(set.hash).or_default();
        slot.retain(|w| w.strong_count() > 0);
        if let Some(s) = slot
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.names == set.names)
        {
            return s;
        }
        let set = Arc::new(set);
        slot.push(Arc::downgrade(&set));
        if self.sets.len() > self.prune_at {
            self.sets.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            self.prune_at = (self.sets.len() * 2).max(64);
        }
        set
    }
}

/// The server's subscription name sets.
#[derive(Default)]
pub(super) struct Names(Mutex<Interner>);

impl Names {
    /// A subscription to the names of a request (`*` excluded), shared with every
    /// other subscription to the same names; `current` is kept if the names are its own.
    pub(super) fn subscription<'a>(
        &self,
        wildcard: bool,
        names: impl Iterator<Item = &'a [u8]> + Clone,
        current: &Subscription,
    ) -> Subscription {
        let (hash, len) = hash_names(names.clone());
        let set = &current.names;
        if set.hash == hash && set.names.len() == len && set.is(names.clone()) {
            return current.with_wildcard(wildcard);
        }
        let mut interner = lock(&self.0);
        let set = match interner.find(hash, len, names.clone()) {
            Some(s) => s,
            None => interner.intern(
                names
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect(),
            ),
        };
        Subscription {
            wildcard,
            names: set,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<'a>(names: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> + Clone {
        names.iter().map(|n| n.as_bytes())
    }

    /// Two pairs of names with the same sum of hashes: found by a generalised birthday
    /// search (pairs from two lists of 2^22 names whose sums end in 22 zero bits,
    /// matched on the other 42), with xxh3-64 as `name_hash` computes it.
    const COLLIDING: [&str; 4] = ["a1101556", "b3166510", "c1523822", "d2665059"];

    #[test]
    fn sets_with_the_same_hash_and_size_are_told_apart_by_their_names() {
        let [a, b, c, d] = COLLIDING;
        let (ab, cd) = ([a, b], [c, d]);
        assert_eq!(
            hash_names(bytes(&ab)),
            hash_names(bytes(&cd)),
            "the two sets collide (if name_hash changed, find another pair)"
        );
        let names = Names::default();
        let first = names.subscription(false, bytes(&ab), &Subscription::default());
        assert_eq!(first.names().collect::<Vec<_>>(), ab);

        // From the subscription the stream holds, and from the interner.
        let second = names.subscription(false, bytes(&cd), &first);
        assert_eq!(second.names().collect::<Vec<_>>(), cd);
        assert!(!second.same(&first));
        let third = names.subscription(false, bytes(&cd), &Subscription::default());
        assert!(third.same(&second), "the same names share one set");
        assert!(!third.same(&first));
        assert_ne!(first.names.digest, second.names.digest);

        // The first set is still found for its own names, in any order.
        let again = names.subscription(false, bytes(&[b, a]), &second);
        assert!(again.same(&first));
    }

    #[test]
    fn a_request_is_compared_name_by_name() {
        let set = NameSet::new(["a", "b", "c"].map(String::from).into());
        assert!(set.is(bytes(&["a", "b", "c"])));
        assert!(set.is(bytes(&["c", "a", "b"])));
        assert!(set.is(bytes(&["c", "a", "b", "a"])), "repeated");
        assert!(!set.is(bytes(&["a", "b"])));
        assert!(!set.is(bytes(&["a", "b", "d"])));
        assert!(!set.is(bytes(&["a", "b", "c", "d"])));
        assert!(!set.is(bytes(&["b", "a", "d"])));
        assert!(!set.is(bytes(&["a", "a", "b"])), "repeated, one missing");
        assert!(NameSet::default().is(bytes(&[])));
        assert!(!NameSet::default().is(bytes(&[""])));
    }

    #[test]
    fn the_same_names_share_one_set_and_a_stream_keeps_its_own() {
        let names = Names::default();
        let a = names.subscription(false, bytes(&["x", "y"]), &Subscription::default());
        let b = names.subscription(true, bytes(&["y", "x"]), &Subscription::default());
        assert!(Arc::ptr_eq(&a.names, &b.names));
        assert!(b.is_wildcard() && !a.is_wildcard());
        let kept = names.subscription(false, bytes(&["x", "y"]), &a);
        assert!(kept.same(&a));
        assert_eq!(
            NameSet::default().digest,
            names.subscription(false, bytes(&[]), &a).names.digest
        );
    }
}
