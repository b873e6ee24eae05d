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
