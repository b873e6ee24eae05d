//! The README's "Getting started" runs as written: every `sh` block, in order, in bash,
//! against a `kite demo`, with the lines the demo prints to paste (the URLs, the keys and the
//! PATH to `kite`). The `text` block right after an `sh` block is what it prints: each line
//! must match a line of the output, `...` standing for any text and runs of spaces for one. A
//! block may fail only when its text says `kite: error:`. A command that ends in
//! `# until Ctrl-C` runs until its text has been printed, then is stopped.

use super::demo::{demo_name, Demo};
use super::*;

/// One `sh` block and what it prints.
struct Block {
    code: String,
    expect: Vec<String>,
}

/// The `sh` blocks of the README's "Getting started", with the `text` block after each.
fn getting_started() -> Vec<Block> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    let start = readme
        .find("\n## Getting started")
        .expect("a Getting started section");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    // Fenced blocks, in order: (info string, body).
    let mut fences: Vec<(String, String)> = Vec::new();
    let mut lines = section.lines().peekable();
    let mut between_sh_and_text = false;
    let mut after_sh: Vec<bool> = Vec::new();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            after_sh.push(between_sh_and_text);
            between_sh_and_text = info.trim() == "sh";
            fences.push((info.trim().to_owned(), body));
        } else if !line.trim().is_empty() {
            between_sh_and_text = false;
        }
    }
    let mut blocks = Vec::new();
    for (i, (info, body)) in fences.iter().enumerate() {
        if info != "sh" {
            continue;
        }
        let expect = match fences.get(i + 1) {
            Some((next, text)) if next == "text" && after_sh[i + 1] => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        blocks.push(Block {
            code: body.clone(),
            expect,
        });
    }
    blocks
}

/// True if `line` holds the parts of `want` between its `...`, in order.
fn matches(line: &str, want: &str) -> bool {
    let (line, want) = (squeeze(line), squeeze(want));
    let mut rest = line.as_str();
    for part in want.split("...").map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The expected lines no line of `out` matches.
fn unmatched<'a>(out: &str, expect: &'a [String]) -> Vec<&'a String> {
    expect
        .iter()
        .filter(|w| !out.lines().any(|l| matches(l, w)))
        .collect()
}

#[test]
fn matching_takes_dots_for_anything_and_spaces_as_one() {
    assert!(matches("ID  SEQ   EVENT", "ID SEQ EVENT"));
    assert!(matches(
        r#"{"status":"accepted","id":"e","seq":3}"#,
        r#"{"status":"accepted",...,"seq":...}"#
    ));
    assert!(!matches(
        "delivered - accepted 2",
        "... delivered - accepted 1 ..."
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_of_getting_started_works_against_the_demo() {
    let blocks = getting_started();
    assert!(
        blocks.len() >= 10,
        "the README's blocks were found: {}",
        blocks.len()
    );
    let name = demo_name();
    let demo = Demo::start(&name, free_port(), free_port());
    // The last of what it prints to paste is followed by what to try.
    demo.wait_for("Ctrl-C stops them", Duration::from_secs(120));
    let printed = demo.output();
    let mut env: Vec<(String, String)> = Vec::new();
    for line in printed.lines() {
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        for pair in rest.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                env.push((k.to_owned(), v.trim_matches('"').to_owned()));
            }
        }
    }
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the demo printed no {k}:\n{printed}"))
    };
    let (a_url, a_key, b_url, b_key) = (get("A_URL"), get("A_KEY"), get("B_URL"), get("B_KEY"));
    // The PATH line puts the demo's own binary first: `kite` works as pasted.
    let path = get("PATH").replace("$PATH", &std::env::var("PATH").unwrap_or_default());
    let home = tempdir::Dir::new();
    let a = kite_kit::client::ApiClient::new(&a_url, &a_key);
    let b = kite_kit::client::ApiClient::new(&b_url, &b_key);

    for (n, block) in blocks.iter().enumerate() {
        quiet(&a).await;
        quiet(&b).await;
        let follow = block.code.contains("# until Ctrl-C");
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(&block.code)
            .env("A_URL", &a_url)
            .env("A_KEY", &a_key)
            .env("B_URL", &b_url)
            .env("B_KEY", &b_key)
            .env("PATH", &path)
            .env("HOME", home.path())
            .env_remove("KITE_INSTANCE")
            .env_remove("KITE_API_KEY")
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let text = if follow {
            follow_until(cmd, &block.expect).await
        } else {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .unwrap_or_else(|_| panic!("block {n} took over 60 s:\n{}", block.code))
                .expect("run bash");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let may_fail = block.expect.iter().any(|l| l.starts_with("kite: error:"));
            assert!(
                out.status.success() || may_fail,
                "block {n} failed ({}):\n{}\n---\n{text}",
                out.status,
                block.code
            );
            text
        };
        let missing = unmatched(&text, &block.expect);
        assert!(
            missing.is_empty(),
            "block {n} did not print {missing:?}:\n{}\n--- it printed:\n{text}",
            block.code
        );
    }
    drop(demo);
    let _ = home;
}

/// Waits (10 s at most) until no delivery of a peer that takes events (not paused or
/// revoked) is pending at the instance, so a block sees what the one before it set going.
async fn quiet(c: &kite_kit::client::ApiClient) {
    for _ in 0..100 {
        let peers = c.list_peers().await.expect("peers").value.items;
        let busy = peers.iter().any(|p| {
            use kite_api::types::PeerStatus;
            !matches!(p.peer.status, PeerStatus::Paused | PeerStatus::Revoked) && p.pending > 0
        });
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a command that runs until stopped, until every expected line has been printed (20 s
/// at most); answers what it printed.
async fn follow_until(mut cmd: tokio::process::Command, expect: &[String]) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd.spawn().expect("spawn");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("stdout"))
            as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
    }
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !unmatched(&text, expect).is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(l)) => {
                text.push_str(&l);
                text.push('\n');
            }
            _ => break,
        }
    }
    let _ = child.start_kill();
    text
}
