//! Sending a run of buffers on a socket with the socket calls, not the file
//! ones.
//!
//! `writev` on a socket goes through the VFS first (the file position lock,
//! copying and checking the iovec array, the file's write hooks) before it
//! reaches the same `tcp_sendmsg`; `send`/`sendmsg` go straight to the
//! socket. Measured under 4 KiB random reads at queue depth 32, that
//! difference was about 0.05 us of kernel time per read
//! (docs/performance.md, "The architecture step").

use std::io::IoSlice;
use std::os::fd::AsFd;

use rustix::net::{SendAncillaryBuffer, SendFlags};

/// Sends `slices` in order on the connected socket `fd`, as much as it takes
/// now: `send` for one slice, `sendmsg` for several, both with `MSG_NOSIGNAL`
/// (a peer that closed is an `EPIPE` error, not a signal that kills the
/// process). Returns the bytes sent (0 for no slices).
///
/// # Errors
/// The socket's error: `WouldBlock` when a non-blocking socket's buffer is
/// full, `Interrupted`, or the connection's failure.
pub fn send_slices(fd: impl AsFd, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let sent = match slices {
        [] => Ok(0),
        [one] => rustix::net::send(fd, one, SendFlags::NOSIGNAL),
        many => rustix::net::sendmsg(fd, many, &mut SendAncillaryBuffer::default(), SendFlags::NOSIGNAL),
    };
    sent.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let a = TcpStream::connect(l.local_addr().expect("address")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn slices_arrive_in_order_as_one_stream() {
        let (a, mut b) = pair();
        let parts: [&[u8]; 3] = [b"head", b"", b"-and-tail"];
        let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        assert_eq!(send_slices(&a, &iov).expect("send"), 13);
        assert_eq!(send_slices(&a, &iov[..1]).expect("send one"), 4);
        assert_eq!(send_slices(&a, &[]).expect("send none"), 0);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"head-and-tailhead");
    }

    #[test]
    fn a_full_nonblocking_socket_says_would_block_and_a_closed_peer_is_an_error() {
        let (a, b) = pair();
        a.set_nonblocking(true).expect("nonblocking");
        let chunk = vec![0x5a; 1 << 16];
        let iov = [IoSlice::new(&chunk), IoSlice::new(&chunk)];
        let mut total = 0usize;
        let err = loop {
            match send_slices(&a, &iov) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 1 << 30, "a loopback socket's buffer is not a gigabyte");
        };
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        assert!(total > 0);
        drop(b);
        // The peer is gone: sending fails (reset or broken pipe) instead of
        // raising SIGPIPE, which would end this test process.
        let gone = (0..100).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            send_slices(&a, &iov[..1])
                .err()
                .filter(|e| e.kind() != ErrorKind::WouldBlock)
        });
        assert!(gone.is_some(), "sending to a closed peer keeps failing with an error");
    }
}
