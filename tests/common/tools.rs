//! Tools the tests run that kite did not write: the official Standard Webhooks library
//! (PyPI `standardwebhooks`), in a virtualenv under `target/test-tools` made on first use
//! (`.ci/run` makes it ahead).

use std::path::PathBuf;
use std::process::Command;

/// The version of the official library the tests verify with.
pub const STANDARDWEBHOOKS_VERSION: &str = "1.1.0";

/// A Python with the official `standardwebhooks` library, installing it on first use.
pub fn standardwebhooks_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv");
    let python = venv.join("bin/python");
    let has = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has(&python) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 (needed to run the official Standard Webhooks library)");
    assert!(made.success(), "python3 -m venv {}", venv.display());
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            &format!("standardwebhooks=={STANDARDWEBHOOKS_VERSION}"),
        ])
        .status()
        .expect("pip");
    assert!(pip.success(), "pip install standardwebhooks");
    assert!(has(&python), "standardwebhooks importable after install");
    python
}

/// Verifies a delivery with the official library: `Webhook(secret).verify(body, headers)`,
/// unchanged. Answers the library's verdict (`Ok`) or its error text.
pub fn standardwebhooks_verify(
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    use std::io::Write;
    let script = "import sys, json\n\
                  from standardwebhooks import Webhook\n\
                  Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))\n";
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut child = Command::new(standardwebhooks_python())
        .args([
            "-c",
            script,
            secret,
            &serde_json::Value::Object(headers).to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write body");
    let out = child.wait_with_output().expect("python ran");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
