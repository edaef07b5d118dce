//! The CIDs a target queue has received and not yet completed.
//!
//! A bitmap of all 65,536 CIDs (8 KiB per queue, allocated once) answers
//! "is this CID outstanding?" with one load and is updated with one store,
//! where a hash map hashed every CID three times per command. The few
//! Asynchronous Event Requests of an admin queue are also listed by CID, so
//! a command may take over the CID of an AER its host abandoned (see
//! `TargetQueue::on_capsule`).

use crate::nvme::admin_opc;

/// The outstanding CIDs of one queue.
pub(crate) struct CidSet {
    bits: Box<[u64; 1024]>,
    count: usize,
    /// CIDs of outstanding AERs (admin queue only; at most AERL + 1 of them
    /// plus what a host overruns with, bounded by the queue size).
    aers: Vec<u16>,
}

impl Default for CidSet {
    fn default() -> Self {
        CidSet {
            bits: Box::new([0; 1024]),
            count: 0,
            aers: Vec::new(),
        }
    }
}

/// What [`CidSet::lookup`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Not outstanding.
    Free,
    /// Outstanding as an Asynchronous Event Request.
    ByAer,
    /// Outstanding as any other command.
    ByCommand,
}

impl CidSet {
    fn slot(cid: u16) -> (usize, u64) {
        (usize::from(cid >> 6), 1u64 << (cid & 63))
    }

    /// Commands outstanding.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Whether `cid` is outstanding.
    pub(crate) fn contains(&self, cid: u16) -> bool {
        let (w, b) = Self::slot(cid);
        self.bits[w] & b != 0
    }

    /// Whether and by what `cid` is held.
    pub(crate) fn lookup(&self, cid: u16) -> Held {
        if !self.contains(cid) {
            Held::Free
        } else if self.aers.contains(&cid) {
            Held::ByAer
        } else {
            Held::ByCommand
        }
    }

    /// Marks `cid` outstanding for a command with opcode `opc` (an admin
    /// opcode when `admin`). A CID held by an AER is taken over.
    pub(crate) fn insert(&mut self, cid: u16, opc: u8, admin: bool) {
        let (w, b) = Self::slot(cid);
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.count += 1;
        } else {
            self.aers.retain(|&c| c != cid);
        }
        if admin && opc == admin_opc::ASYNC_EVENT_REQUEST {
            self.aers.push(cid);
        }
    }

    /// Completes `cid`; returns whether it was outstanding.
    pub(crate) fn remove(&mut self, cid: u16) -> bool {
        let (w, b) = Self::slot(cid);
        if self.bits[w] & b == 0 {
            return false;
        }
        self.bits[w] &= !b;
        self.count -= 1;
        if !self.aers.is_empty() {
            self.aers.retain(|&c| c != cid);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_map_over_random_operations() {
        let mut set = CidSet::default();
        let mut model: HashMap<u16, bool> = HashMap::new();
        let mut x: u32 = 12345;
        for _ in 0..200_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let cid = (x >> 8) as u16 % 300 + if x & 1 == 0 { 0 } else { 65_000 };
            let aer = x & 0x30 == 0;
            if x & 0xC0 == 0 {
                assert_eq!(set.remove(cid), model.remove(&cid).is_some());
            } else {
                let opc = if aer {
                    admin_opc::ASYNC_EVENT_REQUEST
                } else {
                    admin_opc::IDENTIFY
                };
                set.insert(cid, opc, true);
                model.insert(cid, aer);
            }
            let want = match model.get(&cid) {
                None => Held::Free,
                Some(true) => Held::ByAer,
                Some(false) => Held::ByCommand,
            };
            assert_eq!(set.lookup(cid), want);
            assert_eq!(set.len(), model.len());
        }
    }

    #[test]
    fn io_queue_aer_opcode_is_not_an_aer() {
        let mut set = CidSet::default();
        // Opcode 0Ch on an I/O queue is not an AER.
        set.insert(7, admin_opc::ASYNC_EVENT_REQUEST, false);
        assert_eq!(set.lookup(7), Held::ByCommand);
        assert!(set.remove(7));
        assert!(!set.remove(7));
        assert_eq!(set.len(), 0);
    }
}
