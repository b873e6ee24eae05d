//! `scripts/services`: stopped services reported with the command that fixes them, running ones left alone.

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory of stand-ins for every command that installs or starts a service; each one
/// records its name in `calls` and fails. Put first on PATH, they show whether the script
/// tried to change anything.
fn tripwires() -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let calls = dir.path().join("calls");
    for name in [
        "apt-get",
        "apt",
        "sudo",
        "systemctl",
        "service",
        "pg_ctlcluster",
        "pg_createcluster",
        "rabbitmq-server",
        "rabbitmqctl",
        "docker",
    ] {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 1\n",
                calls.display()
            ),
        )
        .expect("write stand-in");
        let mut perm = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
    }
    (dir, calls)
}

/// Runs `scripts/services ARGS` with the tripwires first on PATH and `env`; answers exit
/// success, stdout and stderr.
fn services(tripwires: &Path, args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        tripwires.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(repo().join("scripts/services"));
    cmd.args(args)
        .env("PATH", path)
        .stdin(Stdio::null())
        .env_remove("KITE_PG_HOST")
        .env_remove("KITE_PG_PORT")
        .env_remove("KITE_AMQP_HOST")
        .env_remove("KITE_AMQP_PORT")
        .env_remove("KITE_SERVICES_INSTALL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/services");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn services_script_reports_stopped_services_and_touches_nothing() {
    let (dir, calls) = tripwires();
    let (pg, amqp) = (free_port(), free_port());
    let env = [
        ("KITE_PG_PORT", pg.to_string()),
        ("KITE_AMQP_PORT", amqp.to_string()),
    ];
    let (ok, _, err) = services(dir.path(), &["postgres"], &env);
    assert!(!ok, "a stopped PostgreSQL must fail the script:\n{err}");
    assert!(err.contains(&format!("127.0.0.1:{pg}")), "{err}");
    assert!(
        err.contains(&format!("KITE_PG_PORT={pg} docker compose up -d postgres")),
        "the fix is printed:\n{err}"
    );
    let (ok, _, err) = services(dir.path(), &["rabbitmq"], &env);
    assert!(!ok, "a stopped RabbitMQ must fail the script:\n{err}");
    assert!(err.contains(&format!("127.0.0.1:{amqp}")), "{err}");
    assert!(
        err.contains(&format!(
            "KITE_AMQP_PORT={amqp} docker compose up -d rabbitmq"
        )),
        "the fix is printed:\n{err}"
    );
    // The same through the URLs kite itself reads.
    let (ok, _, err) = services(
        dir.path(),
        &["postgres"],
        &[(
            "KITE_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{pg}/kite"),
        )],
    );
    assert!(
        !ok && err.contains(&format!("127.0.0.1:{pg} (KITE_DATABASE_URL)")),
        "{err}"
    );
    assert!(
        !calls.exists(),
        "the script ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn services_script_changes_nothing_where_services_run() {
    let (dir, calls) = tripwires();
    let (ok, out, err) = services(
        dir.path(),
        &["postgres", "rabbitmq"],
        &[
            ("KITE_DATABASE_URL", format!("{}/postgres", pg_server())),
            ("KITE_AMQP_URL", amqp_url()),
        ],
    );
    assert!(ok, "services run here: the script must pass:\n{out}\n{err}");
    assert_eq!(
        out.matches("nothing to do").count(),
        2,
        "both reported as running:\n{out}"
    );
    assert!(
        !calls.exists(),
        "the script ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

/// A stand-in `apt-get` that fails as apt does while another process holds the dpkg lock
/// for its first `held` calls, then succeeds; every call is recorded in `calls`.
fn locked_apt(dir: &Path, calls: &Path, held: u32) {
    let path = dir.join("apt-get");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"apt-get $*\" >> '{calls}'\nn=$(wc -l < '{calls}')\n\
             if [ \"$n\" -le {held} ]; then\n  echo 'E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)' >&2\n  exit 100\nfi\nexit 0\n",
            calls = calls.display()
        ),
    )
    .expect("write apt-get");
    let mut perm = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
}

#[test]
fn services_script_waits_for_a_held_dpkg_lock_and_gives_up_after_its_bound() {
    if not_root() {
        eprintln!("skipped: scripts/services installs only as root");
        return;
    }
    // The browser is missing (a path that does not exist), so the script installs it with
    // apt-get, whose lock another process holds for the first two calls.
    let dir = tempdir::Dir::new();
    let calls = dir.path().join("apt-calls");
    locked_apt(dir.path(), &calls, 2);
    let missing = dir.path().join("no-chromium").display().to_string();
    let (ok, out, err) = services(
        dir.path(),
        &["chromium"],
        &[
            ("KITE_TEST_CHROMIUM", missing.clone()),
            ("KITE_SERVICES_LOCK_WAIT", "30".into()),
        ],
    );
    assert!(ok, "the lock was let go: the script goes on\n{out}\n{err}");
    assert!(out.contains("holds the dpkg/apt lock: waiting"), "{out}");
    let log = std::fs::read_to_string(&calls).expect("apt-get calls");
    assert_eq!(
        log.lines().filter(|l| l.contains("update")).count(),
        3,
        "update tried until the lock was free:\n{log}"
    );
    assert!(log.contains("install"), "then the install ran:\n{log}");

    // A lock held for longer than the bound: it fails, saying why.
    let dir = tempdir::Dir::new();
    let calls = dir.path().join("apt-calls");
    locked_apt(dir.path(), &calls, 1000);
    let (ok, _, err) = services(
        dir.path(),
        &["chromium"],
        &[
            ("KITE_TEST_CHROMIUM", missing),
            ("KITE_SERVICES_LOCK_WAIT", "4".into()),
        ],
    );
    assert!(!ok, "a lock held past the bound fails the script");
    assert!(
        err.contains("still held after 4s (KITE_SERVICES_LOCK_WAIT)"),
        "{err}"
    );
}

/// True unless this runs as root (the script installs only as root).
fn not_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
        .unwrap_or(true)
}
