//! The command's output on stdout. A reader that goes away (`ofa … --json | head -1`) is not an
//! error of `ofa`: the program ends at once with status 0, as ripgrep does. Any other write error
//! (a full disk behind a redirect) ends it with status 1 and the error on stderr.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// Write `args` and a newline to stdout.
pub fn line(args: Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.write_all(b"\n")) {
        failed(&e);
    }
}

/// Write `args` to stdout.
pub fn text(args: Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args) {
        failed(&e);
    }
}

/// Flush stdout (before the program ends).
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        failed(&e);
    }
}

fn failed(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(std::io::stderr(), "error: writing to stdout: {e}");
    std::process::exit(1);
}
