//! raid1: a bdev that mirrors every write onto several base bdevs.

pub mod superblock;
