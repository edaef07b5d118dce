//! The initiator's settings, under SPDK `bdev_nvme_set_options` names.

use std::time::Duration;

use lull_transport::host_conn::QueuePolling;

/// Initiator settings (SPDK `bdev_nvme_set_options` names and meanings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmeOptions {
    /// I/O queue poll period, us. 0 = every reactor loop iteration: in a
    /// polling reactor the socket is checked every time, in an interrupt-mode
    /// one the socket's readiness wakes the reactor (event-driven). Longhorn:
    /// `data-engine-nvme-ioq-poll-period-us`. Changeable at run time.
    pub nvme_ioq_poll_period_us: u64,
    /// Admin queue poll period, us (completions and AERs); 0 as above.
    /// Keep Alive has its own timer and does not depend on it. Default 0
    /// (event-driven), not SPDK's 10000: the admin queue always has an AER
    /// outstanding, so a period wakes a sleeping reactor every period (100
    /// times a second at 10 ms, 0.5 to 0.7 % of a core per controller on a
    /// VM) for a queue that almost never has anything to say; a polling
    /// reactor checks the socket on every loop iteration whatever the period,
    /// so 0 costs nothing there either. Any period set explicitly is used.
    pub nvme_adminq_poll_period_us: u64,
    /// KATO asked for in the admin Connect, ms (0 = no keep-alive). Keep
    /// Alive is sent every KATO/2.
    pub keep_alive_timeout_ms: u32,
    /// Seconds between reconnect attempts after the association is lost.
    pub reconnect_delay_sec: u32,
    /// Seconds to keep trying before the controller is declared lost and
    /// every held I/O fails; -1 = forever, 0 = no reconnect at all.
    pub ctrlr_loss_timeout_sec: i32,
    /// Seconds after the loss from which held and new I/O fail at once
    /// (while reconnecting goes on); 0 = hold I/O until the controller is lost.
    pub fast_io_fail_timeout_sec: u32,
    /// A command outstanding this long resets the association, us; 0 = never.
    pub timeout_us: u64,
    /// Entries per I/O queue (the Connect's SQSIZE + 1).
    pub io_queue_size: u16,
    /// Times a command that completed with an error status without DNR is
    /// retried (with a short back-off) before the error is returned.
    pub bdev_retry_count: u32,
    /// Header digest asked for.
    pub hdgst: bool,
    /// Data digest asked for.
    pub ddgst: bool,
}

impl Default for NvmeOptions {
    /// I/O queue period from the design brief, event-driven admin queue (see
    /// `nvme_adminq_poll_period_us`); reconnect timings are Longhorn's
    /// (SPDK's own defaults, all 0, never reconnect); 30 s command timeout
    /// as the Linux host's `io_timeout`; 3 retries as SPDK's `bdev_retry_count`.
    fn default() -> Self {
        NvmeOptions {
            nvme_ioq_poll_period_us: 100,
            nvme_adminq_poll_period_us: 0,
            keep_alive_timeout_ms: 10_000,
            reconnect_delay_sec: 2,
            ctrlr_loss_timeout_sec: 15,
            fast_io_fail_timeout_sec: 10,
            timeout_us: 30_000_000,
            io_queue_size: 128,
            bdev_retry_count: 3,
            hdgst: false,
            ddgst: false,
        }
    }
}

impl NvmeOptions {
    /// Checks the fields against each other and their ranges, naming the field.
    ///
    /// # Errors
    /// One line naming the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        const MAX_PERIOD_US: u64 = 10_000_000;
        if self.nvme_ioq_poll_period_us > MAX_PERIOD_US {
            return Err(format!(
                "nvme_ioq_poll_period_us = {} is out of range: allowed 0..={MAX_PERIOD_US} us (0 = every loop)",
                self.nvme_ioq_poll_period_us
            ));
        }
        if self.nvme_adminq_poll_period_us > MAX_PERIOD_US {
            return Err(format!(
                "nvme_adminq_poll_period_us = {} is out of range: allowed 0..={MAX_PERIOD_US} us (0 = every loop)",
                self.nvme_adminq_poll_period_us
            ));
        }
        if !(2..=4096).contains(&self.io_queue_size) {
            return Err(format!(
                "io_queue_size = {} is out of range: allowed 2..=4096 entries",
                self.io_queue_size
            ));
        }
        if self.keep_alive_timeout_ms != 0 && !(1000..=3_600_000).contains(&self.keep_alive_timeout_ms) {
            return Err(format!(
                "keep_alive_timeout_ms = {} is out of range: allowed 0 (no keep-alive) or 1000..=3600000 ms",
                self.keep_alive_timeout_ms
            ));
        }
        if self.bdev_retry_count > 100 {
            return Err(format!(
                "bdev_retry_count = {} is out of range: allowed 0..=100",
                self.bdev_retry_count
            ));
        }
        if self.ctrlr_loss_timeout_sec < -1 {
            return Err(format!(
                "ctrlr_loss_timeout_sec = {} is out of range: allowed -1 (forever), 0 (no reconnect) or more seconds",
                self.ctrlr_loss_timeout_sec
            ));
        }
        // SPDK's rules: a reconnect needs a delay, and the timeouts must nest.
        if self.ctrlr_loss_timeout_sec != 0 {
            if self.reconnect_delay_sec == 0 {
                return Err("reconnect_delay_sec = 0 is not allowed when ctrlr_loss_timeout_sec is not 0".into());
            }
            if self.ctrlr_loss_timeout_sec > 0 {
                let loss = self.ctrlr_loss_timeout_sec as u32;
                if self.reconnect_delay_sec > loss {
                    return Err(format!(
                        "reconnect_delay_sec = {} must not exceed ctrlr_loss_timeout_sec = {loss}",
                        self.reconnect_delay_sec
                    ));
                }
                if self.fast_io_fail_timeout_sec > loss {
                    return Err(format!(
                        "fast_io_fail_timeout_sec = {} must not exceed ctrlr_loss_timeout_sec = {loss}",
                        self.fast_io_fail_timeout_sec
                    ));
                }
            }
        } else if self.reconnect_delay_sec != 0 || self.fast_io_fail_timeout_sec != 0 {
            return Err(
                "reconnect_delay_sec and fast_io_fail_timeout_sec must be 0 when ctrlr_loss_timeout_sec is 0 (no reconnect)"
                    .into(),
            );
        }
        Ok(())
    }

    /// How I/O queues notice completions.
    pub fn ioq_polling(&self) -> QueuePolling {
        QueuePolling::from_period_us(self.nvme_ioq_poll_period_us)
    }

    /// How the admin queue notices completions.
    pub fn adminq_polling(&self) -> QueuePolling {
        QueuePolling::from_period_us(self.nvme_adminq_poll_period_us)
    }

    /// The command timeout, if any.
    pub fn command_timeout(&self) -> Option<Duration> {
        (self.timeout_us > 0).then(|| Duration::from_micros(self.timeout_us))
    }

    /// Options for a run that must not reconnect (tests, one-shot tools).
    pub fn no_reconnect(mut self) -> Self {
        self.ctrlr_loss_timeout_sec = 0;
        self.reconnect_delay_sec = 0;
        self.fast_io_fail_timeout_sec = 0;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        assert_eq!(NvmeOptions::default().validate(), Ok(()));
        assert_eq!(NvmeOptions::default().no_reconnect().validate(), Ok(()));
        let bad = NvmeOptions {
            nvme_ioq_poll_period_us: 10_000_001,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("nvme_ioq_poll_period_us = 10000001")
        );
        let bad = NvmeOptions {
            fast_io_fail_timeout_sec: 16,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("fast_io_fail_timeout_sec = 16"));
        let bad = NvmeOptions {
            keep_alive_timeout_ms: 1,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("keep_alive_timeout_ms = 1 "));
        let bad = NvmeOptions {
            io_queue_size: 1,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("io_queue_size = 1 "));
        let bad = NvmeOptions {
            ctrlr_loss_timeout_sec: -2,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("ctrlr_loss_timeout_sec = -2"));
        assert_eq!(
            NvmeOptions::default().ioq_polling(),
            QueuePolling::Timed(Duration::from_micros(100))
        );
        let ev = NvmeOptions {
            nvme_ioq_poll_period_us: 0,
            ..Default::default()
        };
        assert_eq!(ev.ioq_polling(), QueuePolling::Event);
        // The admin queue is event-driven unless a period is set.
        assert_eq!(NvmeOptions::default().adminq_polling(), QueuePolling::Event);
        let timed = NvmeOptions {
            nvme_adminq_poll_period_us: 10_000,
            ..Default::default()
        };
        assert_eq!(timed.adminq_polling(), QueuePolling::Timed(Duration::from_millis(10)));
    }
}
