//! I/O command execution against a namespace's bdev (NVM Command Set 1.0
//! section 3): Read, Write, Flush, Write Zeroes, Dataset Management, Compare.

use lull_transport::nvme::{Cqe, Status, io_opc, status};
use lull_transport::target::{Command, TargetQueue};

use crate::bdev::{Bdev, BdevError};
use crate::identify::MAX_TRANSFER;
use crate::subsystem::Subsystem;

fn bdev_status(e: &BdevError) -> Status {
    match e {
        BdevError::OutOfRange { .. } => status::LBA_OUT_OF_RANGE.with_dnr(),
        BdevError::Misaligned { .. } => status::DATA_SGL_LENGTH_INVALID.with_dnr(),
        BdevError::Io(_) => status::INTERNAL_ERROR,
    }
}

/// SLBA and block count (NLB is 0's based) of a Read/Write/Compare/Write Zeroes.
fn range(cmd: &Command) -> (u64, u64) {
    let slba = u64::from(cmd.sqe.cdw(10)) | u64::from(cmd.sqe.cdw(11)) << 32;
    let nlb = u64::from(cmd.sqe.cdw(12) & 0xFFFF) + 1;
    (slba, nlb)
}

/// Checks the range and the transfer size; returns the byte length.
fn transfer(bdev: &dyn Bdev, slba: u64, nlb: u64) -> Result<usize, Status> {
    crate::bdev::check_range(slba, nlb, bdev.num_blocks()).map_err(|e| bdev_status(&e))?;
    let bytes = nlb * u64::from(bdev.block_size());
    if bytes > u64::from(MAX_TRANSFER) {
        return Err(status::INVALID_FIELD.with_dnr());
    }
    Ok(bytes as usize)
}

/// Executes one I/O command and completes it on `q`. `buf` is a scratch
/// buffer reused across commands of this queue.
pub fn execute(q: &mut TargetQueue, cmd: &Command, subsystem: &Subsystem, ready: bool, buf: &mut Vec<u8>) {
    let cid = cmd.sqe.cid();
    let done = |q: &mut TargetQueue, s: Status| {
        q.complete(Cqe {
            cid,
            status: s,
            ..Cqe::default()
        });
    };
    if !ready {
        return done(q, status::COMMAND_SEQUENCE_ERROR);
    }
    let opc = cmd.sqe.opc();
    let nsid = cmd.sqe.nsid();
    if opc == io_opc::FLUSH && nsid == 0xFFFF_FFFF {
        let r = subsystem.namespaces.iter().try_for_each(|ns| ns.bdev.flush());
        return done(q, r.map_or_else(|e| bdev_status(&e), |()| Status::SUCCESS));
    }
    let Some(ns) = subsystem.namespace(nsid) else {
        return done(q, status::INVALID_NAMESPACE.with_dnr());
    };
    let bdev = ns.bdev.as_ref();
    match opc {
        io_opc::READ => {
            let (slba, nlb) = range(cmd);
            let len = match transfer(bdev, slba, nlb) {
                Ok(l) => l,
                Err(s) => return done(q, s),
            };
            if (cmd.c2h_len as usize) < len {
                return done(q, status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            buf.resize(len, 0);
            match bdev.read(slba, &mut buf[..len]) {
                Ok(()) => {
                    subsystem.counters.read(len as u64);
                    q.complete_with_data(Cqe { cid, ..Cqe::default() }, &buf[..len]);
                }
                Err(e) => done(q, bdev_status(&e)),
            }
        }
        io_opc::WRITE | io_opc::COMPARE => {
            let (slba, nlb) = range(cmd);
            let len = match transfer(bdev, slba, nlb) {
                Ok(l) => l,
                Err(s) => return done(q, s),
            };
            if cmd.data.len() != len {
                return done(q, status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            if opc == io_opc::WRITE {
                match bdev.write(slba, &cmd.data) {
                    Ok(()) => {
                        subsystem.counters.wrote(len as u64);
                        done(q, Status::SUCCESS)
                    }
                    Err(e) => done(q, bdev_status(&e)),
                }
            } else {
                buf.resize(len, 0);
                match bdev.read(slba, &mut buf[..len]) {
                    Ok(()) if buf[..len] == cmd.data[..] => done(q, Status::SUCCESS),
                    Ok(()) => done(q, status::COMPARE_FAILURE.with_dnr()),
                    Err(e) => done(q, bdev_status(&e)),
                }
            }
        }
        io_opc::FLUSH => done(q, bdev.flush().map_or_else(|e| bdev_status(&e), |()| Status::SUCCESS)),
        io_opc::WRITE_ZEROES => {
            let (slba, nlb) = range(cmd);
            let r = bdev.write_zeroes(slba, nlb);
            done(q, r.map_or_else(|e| bdev_status(&e), |()| Status::SUCCESS))
        }
        io_opc::DATASET_MANAGEMENT => {
            let nr = (cmd.sqe.cdw(10) & 0xFF) as usize + 1;
            let deallocate = cmd.sqe.cdw(11) & (1 << 2) != 0;
            if cmd.data.len() < nr * 16 {
                return done(q, status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            // Check every range before touching any.
            let ranges: Vec<(u64, u64)> = cmd.data[..nr * 16]
                .chunks(16)
                .map(|r| {
                    let len = u64::from(u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
                    let lba = u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
                    (lba, len)
                })
                .collect();
            if let Some(e) = ranges
                .iter()
                .find_map(|&(l, n)| crate::bdev::check_range(l, n, bdev.num_blocks()).err())
            {
                return done(q, bdev_status(&e));
            }
            if deallocate {
                for (lba, n) in ranges {
                    if let Err(e) = bdev.unmap(lba, n) {
                        return done(q, bdev_status(&e));
                    }
                }
            }
            done(q, Status::SUCCESS)
        }
        _ => done(q, status::INVALID_OPCODE.with_dnr()),
    }
}
