//! Python tools nobody here wrote (an OpenAPI validator, a property-based API
//! tester), installed on first use into a virtual environment under the
//! target directory, at the versions `fixtures/python-requirements.txt` pins.
//! Needs `python3` with `venv` (Debian's `python3-venv`, installed with
//! `apt-get` when missing) and PyPI.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const REQUIREMENTS: &str = include_str!("fixtures/python-requirements.txt");

/// The `bin` directory of the environment, ready to use.
pub fn tools() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match READY.get_or_init(install) {
        Ok(bin) => bin.clone(),
        Err(problem) => panic!(
            "these tests need Python tools from PyPI: {problem}; they install into {} on first use",
            env_dir().display()
        ),
    }
}

fn env_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-tools")
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("running {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn install() -> Result<PathBuf, String> {
    let dir = env_dir();
    let bin = dir.join("bin");
    // The pinned list, as installed: a changed list reinstalls.
    let marker = dir.join("installed-requirements.txt");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Two test processes of one checkout may get here at once: one installs, the other waits.
    let lock = std::fs::File::create(dir.with_extension("lock")).map_err(|e| e.to_string())?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| e.to_string())?;
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == REQUIREMENTS) {
        return Ok(bin);
    }
    let venv = || Command::new("python3").args(["-m", "venv", "--clear"]).arg(&dir).output();
    if !venv().is_ok_and(|o| o.status.success()) {
        crate::helpers::apt_install(&["python3", "python3-venv"])?;
    }
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&dir))?;
    let requirements = dir.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).map_err(|e| e.to_string())?;
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "--no-input", "-r"])
        .arg(&requirements))?;
    std::fs::write(&marker, REQUIREMENTS).map_err(|e| e.to_string())?;
    Ok(bin)
}
