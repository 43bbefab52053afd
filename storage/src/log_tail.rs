//! The newest log entries, kept decoded in memory.
//!
//! Every entry is read back soon after it is appended: by the state machine when it
//! commits, and on the leader by each follower's replication stream. Read from RocksDB,
//! each of those reads walks an iterator and decodes the entry again (5.7% of all node CPU
//! in the 64-client admin-write benchmark, half of it decoding). The tail keeps the entries
//! the store appended last, as the appends handed them over, and serves any read that
//! starts inside it.
//!
//! Invariant: when the tail is not empty it holds consecutive indexes, and its last entry
//! is the last entry of the log. Appends, truncation and purging keep it so, and a read
//! that starts before the tail falls back to RocksDB.

use std::collections::VecDeque;
use std::ops::RangeBounds;

use cluster::types::Entry;

/// Most entries kept. An entry carries a batch of up to 256 writes.
const MAX_ENTRIES: usize = 512;
/// Most encoded bytes kept, a bound on the tail's memory whatever the entries' size.
const MAX_BYTES: usize = 16 << 20;

/// The tail of the log.
#[derive(Debug, Default)]
pub(crate) struct LogTail {
    /// Entries with their encoded size, oldest first.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl LogTail {
    /// Adds entries just written to the log, each with its encoded size. An entry that
    /// does not follow the tail's last one starts the tail afresh.
    pub(crate) fn appended(&mut self, entries: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in entries {
            if self.next_index() != Some(entry.log_id.index) {
                self.clear();
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Forgets entries from `index` on, as the log deleted them.
    pub(crate) fn truncated(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(entry, _)| entry.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries up to and including `index`, as the log purged them.
    pub(crate) fn purged(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(entry, _)| entry.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// Returns the entries of `range`, or `None` if the range starts before the tail (or
    /// the tail is empty): then only RocksDB has them.
    pub(crate) fn read(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        use std::ops::Bound;
        let first = self.entries.front()?.0.log_id.index;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(entry, _)| entry)
                .take_while(|entry| range.contains(&entry.log_id.index))
                .cloned()
                .collect(),
        )
    }

    fn next_index(&self) -> Option<u64> {
        self.entries
            .back()
            .map(|(entry, _)| entry.log_id.index.saturating_add(1))
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use cluster::types::LogId;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64, term: u64) -> (Entry, usize) {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        };
        (entry, 100)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|e| {
            e.iter()
                .map(|e| (e.log_id.index, e.log_id.leader_id.term))
                .collect()
        })
    }

    #[test]
    fn a_read_inside_the_tail_is_served_and_one_before_it_is_not() {
        let mut tail = LogTail::default();
        tail.appended((5..=9).map(|i| entry(i, 1)));
        assert_eq!(indexes(tail.read(&(6..8))), Some(vec![(6, 1), (7, 1)]));
        assert_eq!(indexes(tail.read(&(8..))), Some(vec![(8, 1), (9, 1)]));
        assert_eq!(indexes(tail.read(&(10..20))), Some(vec![]), "past the last entry");
        assert_eq!(tail.read(&(4..8)), None, "starts before the tail");
        assert_eq!(tail.read(&(..8)), None);
        assert_eq!(LogTail::default().read(&(0..)), None);
    }

    #[test]
    fn entries_replacing_a_truncated_suffix_are_read_not_the_old_ones() {
        let mut tail = LogTail::default();
        tail.appended((1..=5).map(|i| entry(i, 1)));
        tail.truncated(3);
        tail.appended((3..=4).map(|i| entry(i, 2)));
        assert_eq!(
            indexes(tail.read(&(1..10))),
            Some(vec![(1, 1), (2, 1), (3, 2), (4, 2)])
        );
    }

    #[test]
    fn purged_entries_are_not_served() {
        let mut tail = LogTail::default();
        tail.appended((1..=5).map(|i| entry(i, 1)));
        tail.purged(3);
        assert_eq!(tail.read(&(2..)), None);
        assert_eq!(indexes(tail.read(&(4..))), Some(vec![(4, 1), (5, 1)]));
        tail.purged(9);
        assert_eq!(tail.read(&(6..)), None, "an empty tail serves nothing");
    }

    #[test]
    fn an_entry_that_does_not_follow_starts_the_tail_afresh() {
        let mut tail = LogTail::default();
        tail.appended((1..=3).map(|i| entry(i, 1)));
        tail.appended([entry(7, 1)]);
        assert_eq!(tail.read(&(1..)), None);
        assert_eq!(indexes(tail.read(&(7..))), Some(vec![(7, 1)]));
    }

    #[test]
    fn the_tail_keeps_at_most_its_bound_of_newest_entries() {
        let mut tail = LogTail::default();
        let last = MAX_ENTRIES as u64 + 100;
        tail.appended((1..=last).map(|i| entry(i, 1)));
        assert_eq!(tail.entries.len(), MAX_ENTRIES);
        assert_eq!(tail.read(&(1..)), None);
        let first_kept = last - MAX_ENTRIES as u64 + 1;
        assert_eq!(tail.read(&(first_kept..)).map(|e| e.len()), Some(MAX_ENTRIES));
        assert_eq!(tail.bytes, MAX_ENTRIES * 100);

        let mut large = LogTail::default();
        large.appended((1..=3).map(|i| (entry(i, 1).0, MAX_BYTES / 2)));
        assert_eq!(
            indexes(large.read(&(1..))),
            None,
            "the oldest went over the byte bound"
        );
        assert_eq!(large.read(&(2..)).map(|e| e.len()), Some(2));
    }
}
