//! A table of in-flight entries addressed by a small index, whose freed
//! slots are reused: once it has grown to the peak number in flight, adding
//! and removing entries allocates nothing.

/// Entries addressed by `u32` indexes; freed indexes are reused (last freed,
/// first reused).
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// An empty table with room for `n` entries before it allocates.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Slab {
            slots: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
        }
    }

    /// Stores `value`; returns its index.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(value);
                i
            }
            None => {
                self.slots.push(Some(value));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Takes the entry at `index` out, freeing the index; `None` if empty.
    pub(crate) fn remove(&mut self, index: u32) -> Option<T> {
        let value = self.slots.get_mut(index as usize)?.take()?;
        self.free.push(index);
        Some(value)
    }

    /// The entry at `index`.
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.as_ref()
    }

    /// The entry at `index`, to change.
    pub(crate) fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots.get_mut(index as usize)?.as_mut()
    }

    /// The entries stored, to change, in index order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(Option::as_mut)
    }

    /// Entries stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_indexes_are_reused_and_entries_stay_where_they_were_put() {
        let mut s = Slab::default();
        let a = s.insert('a');
        let b = s.insert('b');
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.remove(a), Some('a'));
        assert_eq!(s.remove(a), None, "removed once");
        assert_eq!(s.insert('c'), 0, "index 0 reused");
        assert_eq!(s.get_mut(1), Some(&mut 'b'));
        assert_eq!((s.get(0), s.get(2)), (Some(&'c'), None));
        assert_eq!(s.len(), 2);
        assert_eq!(s.values_mut().map(|c| *c).collect::<Vec<_>>(), vec!['c', 'b']);
        assert_eq!(s.remove(7), None);
    }
}
