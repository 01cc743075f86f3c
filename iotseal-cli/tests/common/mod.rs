//! What the CLI tests share: the built `iotseal` binary, and a gateway made by `gateway init`
//! and run by `gateway run` on a free loopback port, as a user runs them.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `iotseal` binary of this build.
pub(crate) fn iotseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotseal"))
}

/// A child process killed (and reaped) when dropped.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running gateway from `gateway init --dir DIR [--alg ALGS]` + `gateway run`.
pub(crate) struct TestGateway {
    /// Its directory (gateway.toml, gateway.pub.toml, admin.token, keys).
    pub(crate) dir: PathBuf,
    /// `https://127.0.0.1:PORT`, from its "listening on" line.
    pub(crate) url: String,
    /// The process.
    pub(crate) process: Running,
}

impl TestGateway {
    /// Initialises `dir` (`algs`: `--alg`, or every algorithm when `None`) and runs it.
    pub(crate) fn start(dir: &Path, algs: Option<&str>) -> Self {
        Self::start_with(dir, algs, &[])
    }

    /// [`Self::start`] with more arguments for `gateway run` (flags such as
    /// `--worker-threads 1`).
    pub(crate) fn start_with(dir: &Path, algs: Option<&str>, run_args: &[&str]) -> Self {
        let mut init = iotseal();
        init.args(["gateway", "init", "--dir"]).arg(dir);
        if let Some(a) = algs {
            init.args(["--alg", a]);
        }
        let out = init.output().unwrap();
        assert!(out.status.success(), "gateway init: {out:?}");
        let mut child = iotseal()
            .args(["gateway", "run", "--config"])
            .arg(dir.join("gateway.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .args(run_args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let process = Running(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        Self {
            dir: dir.to_path_buf(),
            url,
            process,
        }
    }

    /// `gateway.pub.toml`.
    pub(crate) fn pins(&self) -> PathBuf {
        self.dir.join("gateway.pub.toml")
    }

    /// `admin.token`.
    pub(crate) fn token_file(&self) -> PathBuf {
        self.dir.join("admin.token")
    }

    /// The gateway's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.0.id()
    }
}
