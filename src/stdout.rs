//! Writing a command's output: a reader that goes away (`kite admin ... | head`) ends the
//! command quietly, as it does any Unix tool, instead of a panic about a broken pipe.

use std::io::Write;

/// Writes `text` to standard output; exits 0 when the reader has gone away.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Writes `text` and a line break to standard output; exits 0 when the reader has gone away.
pub fn println(text: &str) {
    print(&format!("{text}\n"));
}
