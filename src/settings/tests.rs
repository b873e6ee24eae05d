use super::*;
use clap::{CommandFactory, Parser};
use std::ffi::OsString;

#[derive(Debug, Parser)]
#[command(name = "kite")]
enum Cli {
    Serve(Settings),
}

fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let args = with_settings_file(Cli::command(), "serve", args)?;
    let Cli::Serve(s) = Cli::try_parse_from(args)?;
    Ok(s)
}

#[test]
fn out_of_range_values_are_errors_naming_the_setting() {
    for (flag, value) in [
        ("--retry-base-ms", "0"),
        ("--db-pool-size", "0"),
        ("--max-connections", "0"),
        ("--header-timeout-ms", "5"),
        ("--delivery-lease-ms", "99"),
    ] {
        let e = parse(&["kite", "serve", flag, value]).expect_err(flag);
        assert!(e.to_string().contains(flag), "{flag}: {e}");
    }
    let s = parse(&[
        "kite",
        "serve",
        "--retry-base-ms",
        "5000",
        "--retry-max-delay-ms",
        "10",
    ])
    .expect("parses");
    let e = s.validate().expect_err("conflict");
    assert!(e.to_string().contains("KITE_RETRY_MAX_DELAY_MS"), "{e}");
}

#[test]
fn the_file_fills_what_flags_and_environment_leave_unset() {
    let dir = std::env::temp_dir().join(format!("kite-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("kite.env");
    std::fs::write(
        &file,
        "# a comment\nKITE_SWEEP_GRACE_MS=1234\nKITE_PORT=7799\nKITE_DEV=true\nKITE_ROLES=router,delivery\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    let s = parse(&["kite", "serve", "--config", path, "--port", "7701"]).expect("parses");
    assert_eq!(s.sweep_grace_ms, 1234);
    assert_eq!(s.port, 7701, "a flag wins over the file");
    assert!(s.dev);
    assert_eq!(s.roles, [Role::Router, Role::Delivery]);

    std::fs::write(&file, "KITE_SWEEP_GRACE_MS=1\nKITE_RETRY_BASE_MS=0\n").expect("write");
    let e = parse(&["kite", "serve", "--config", path]).expect_err("invalid");
    let text = e.to_string();
    assert!(
        text.contains(":2:") && text.contains("--retry-base-ms"),
        "{text}"
    );

    std::fs::write(&file, "KITE_NO_SUCH=1\n").expect("write");
    let e = parse(&["kite", "serve", "--config", path]).expect_err("unknown");
    assert!(
        e.to_string().contains("KITE_NO_SUCH is not a setting"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
