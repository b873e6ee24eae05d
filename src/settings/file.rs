//! The settings file: `KITE_NAME=value` lines filling what flags and the environment left
//! unset.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

use super::SettingsError;

/// The settings file's `KITE_NAME=value` lines, in order, with their line numbers.
fn read_file(path: &Path) -> Result<Vec<(usize, String, String)>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(SettingsError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message: "expected KITE_NAME=value".into(),
            });
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.push((i + 1, name.trim().to_string(), value.to_string()));
    }
    Ok(out)
}

/// The command line `args` of `command` (the binary's whole command), with the lines of
/// the settings file of subcommand `sub` added as flags where neither a flag nor the
/// environment set that setting. Each file line is checked on its own first, so an invalid
/// value is reported with its file and line. Without a settings file, `args` as they are.
pub fn with_settings_file(
    command: clap::Command,
    sub: &str,
    args: Vec<OsString>,
) -> Result<Vec<OsString>, clap::Error> {
    let matches = command.clone().try_get_matches_from(&args)?;
    let Some(given) = matches.subcommand_matches(sub) else {
        return Ok(args);
    };
    let Some(path) = given.get_one::<PathBuf>("config").cloned() else {
        return Ok(args);
    };
    let fail = |e: SettingsError| {
        command
            .clone()
            .error(clap::error::ErrorKind::ValueValidation, e)
    };
    let Some(settings) = command.find_subcommand(sub).cloned() else {
        return Ok(args);
    };
    let mut out = args;
    for (line, name, value) in read_file(&path).map_err(fail)? {
        let Some(arg) = settings
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        else {
            return Err(fail(SettingsError::Line {
                path,
                line,
                message: format!("{name} is not a setting of `kite {sub}`"),
            }));
        };
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            continue;
        };
        let flag: Vec<OsString> = if arg.get_action().takes_values() {
            vec![format!("--{long}").into(), value.clone().into()]
        } else {
            // A switch (`--dev`): on for a true value, nothing for a false one.
            match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => vec![format!("--{long}").into()],
                "false" | "0" | "no" | "off" | "" => vec![],
                _ => {
                    return Err(fail(SettingsError::Line {
                        path,
                        line,
                        message: format!("{name}: expected true or false, got {value:?}"),
                    }))
                }
            }
        };
        // Checked alone, so the error names the file's line.
        let mut alone = vec![OsString::from("kite"), OsString::from(sub)];
        alone.extend(flag.iter().cloned());
        if let Err(e) = command.clone().try_get_matches_from(alone) {
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                return Err(fail(SettingsError::Line {
                    path,
                    line,
                    message: e.render().to_string().trim().to_string(),
                }));
            }
        }
        if given.value_source(id) == Some(ValueSource::DefaultValue)
            || given.value_source(id).is_none()
        {
            out.extend(flag);
        }
    }
    Ok(out)
}
