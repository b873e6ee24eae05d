//! Tools the tests run that kite did not write, from PyPI, in one virtualenv under
//! `target/test-tools/venv` made on first use (`scripts/services python` makes it ahead): the
//! official Standard Webhooks library; the CloudEvents Python SDK; schemathesis, which fuzzes the HTTP API from its
//! OpenAPI document; openapi-spec-validator, which checks that document; and
//! openapi-python-client, which generates a client from it.

use std::path::PathBuf;
use std::process::Command;

/// The version of the official library the tests verify with.
pub const STANDARDWEBHOOKS_VERSION: &str = "1.1.0";
/// The version of the CloudEvents Python SDK binary-mode deliveries are read with.
pub const CLOUDEVENTS_VERSION: &str = "2.2.0";
/// The version of schemathesis the OpenAPI test runs.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The version of openapi-spec-validator the OpenAPI test checks the document with.
pub const OPENAPI_SPEC_VALIDATOR_VERSION: &str = "0.9.0";
/// The version of openapi-python-client the OpenAPI test generates a client with.
pub const OPENAPI_PYTHON_CLIENT_VERSION: &str = "0.29.1";

/// The test tools' virtualenv, with every tool installed (once).
fn venv() -> PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv");
    let python = venv.join("bin/python");
    let has = || {
        Command::new(&python)
            .args([
                "-c",
                "import standardwebhooks, cloudevents.core.bindings.http, schemathesis, \
                 openapi_spec_validator, openapi_python_client",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has() {
        return venv;
    }
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (needed to run the test tools from PyPI)");
        assert!(made.success(), "python3 -m venv {}", venv.display());
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            &format!("standardwebhooks=={STANDARDWEBHOOKS_VERSION}"),
            &format!("cloudevents=={CLOUDEVENTS_VERSION}"),
            &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
            &format!("openapi-spec-validator=={OPENAPI_SPEC_VALIDATOR_VERSION}"),
            &format!("openapi-python-client=={OPENAPI_PYTHON_CLIENT_VERSION}"),
        ])
        .status()
        .expect("pip");
    assert!(pip.success(), "pip install the test tools");
    assert!(has(), "the test tools importable after install");
    venv
}

/// A Python with the official `standardwebhooks` library.
pub fn standardwebhooks_python() -> PathBuf {
    venv().join("bin/python")
}

/// The `schemathesis` command.
pub fn schemathesis() -> PathBuf {
    venv().join("bin/schemathesis")
}

/// The `openapi-spec-validator` command.
pub fn openapi_spec_validator() -> PathBuf {
    venv().join("bin/openapi-spec-validator")
}

/// The `openapi-python-client` command.
pub fn openapi_python_client() -> PathBuf {
    venv().join("bin/openapi-python-client")
}

/// The test tools' Python.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// Reads a binary-mode delivery as an ordinary receiver would: verifies it with the official
/// Standard Webhooks library (`Webhook(secret).verify(body, headers)`) and parses it with
/// the CloudEvents Python SDK (`from_binary`). Answers the SDK's attributes (as text) and
/// data, or the error either raised.
pub fn cloudevents_binary(
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<serde_json::Value, String> {
    let script = "import sys, json\n\
                  from standardwebhooks import Webhook\n\
                  from cloudevents.core.bindings.http import HTTPMessage, from_binary\n\
                  from cloudevents.core.formats.json import JSONFormat\n\
                  headers = json.loads(sys.argv[2])\n\
                  body = sys.stdin.buffer.read()\n\
                  Webhook(sys.argv[1]).verify(body, headers)\n\
                  ev = from_binary(HTTPMessage(headers=headers, body=body), JSONFormat())\n\
                  print(json.dumps({'attributes': {k: str(v) for k, v in ev.get_attributes().items()},\n\
                                    'data': ev.get_data()}))\n";
    let out = run_on_delivery(script, secret, headers, body)?;
    serde_json::from_slice(&out).map_err(|e| e.to_string())
}

/// Verifies a delivery with the official library: `Webhook(secret).verify(body, headers)`,
/// unchanged. Answers the library's verdict (`Ok`) or its error text.
pub fn standardwebhooks_verify(
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    let script = "import sys, json\n\
                  from standardwebhooks import Webhook\n\
                  Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))\n";
    run_on_delivery(script, secret, headers, body).map(|_| ())
}

/// Runs a Python `script` of the test tools on a delivery: `secret` as its first argument,
/// the headers as a JSON object its second, the body on stdin. Answers its stdout, or its
/// stderr when it fails.
fn run_on_delivery(
    script: &str,
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut child = Command::new(python())
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
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Prometheus' `promtool` (`KITE_TEST_PROMTOOL`, else `target/test-tools/bin/promtool`,
/// which `scripts/services promtool` takes out of Debian's prometheus package on first use).
pub fn promtool() -> PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tool = std::env::var_os("KITE_TEST_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/test-tools/bin/promtool"));
    if !tool.exists() {
        let got = Command::new(root.join("scripts/services"))
            .arg("promtool")
            .current_dir(&root)
            .status()
            .expect("scripts/services promtool");
        assert!(got.success(), "scripts/services promtool");
    }
    tool
}
