//! Writing to standard output the way command-line tools do: when the
//! reader has gone (`lull rpc bdev_get_bdevs | head -1`, `... | grep -q`),
//! the process ends quietly with status 141, as a process killed by SIGPIPE
//! reports, instead of panicking in `println!` (Rust ignores SIGPIPE, so a
//! write to a closed pipe is an `EPIPE` error, which `println!` turns into a
//! panic). `main.rs` shadows `print!`/`println!` with [`print`].

use std::io::{ErrorKind, Write};

/// Status of a process that stopped because its output pipe closed (128 + SIGPIPE).
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// Writes `args` (and a newline when `newline`) to standard output; ends the
/// process with [`BROKEN_PIPE_STATUS`] when the reader has gone, and says so
/// on standard error for any other write error.
pub fn print(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(BROKEN_PIPE_STATUS),
        Err(e) => eprintln!("lull: cannot write to standard output: {e}"),
    }
}
