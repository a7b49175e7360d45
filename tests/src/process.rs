//! A supervised child process: its output goes to a log file, the log is
//! printed when the test fails, and the process is killed on drop, whether
//! the test passed or panicked.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How much of a log to print when a test fails: the end is where the cause is.
const LOG_TAIL_BYTES: usize = 64 * 1024;

/// A child process owned by a test.
pub struct Supervised {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl Supervised {
    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> anyhow::Result<Self> {
        let log = File::create(log_path)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|err| anyhow::anyhow!("cannot start {name} ({command:?}): {err}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_path_buf(),
        })
    }

    /// The process id, for reading its CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Prints the end of the log to stderr, headed by the process's name.
    pub fn print_log(&self) {
        let log = self.log();
        let start = log.len().saturating_sub(LOG_TAIL_BYTES);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        eprintln!(
            "----- {} log ({}) -----\n{}\n----- end of {} log -----",
            self.name,
            self.log_path.display(),
            &log[start..],
            self.name
        );
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
