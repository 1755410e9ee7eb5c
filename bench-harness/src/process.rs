//! Processes the harness starts, and what `/proc` says about them.
//!
//! Owns the lifetime rule: every child runs in its own process group, is
//! told to die with the harness (`PR_SET_PDEATHSIG`), and is stopped —
//! SIGTERM to the group, then SIGKILL after a bounded grace period — when
//! its [`Supervised`] handle is dropped. Also owns the `/proc` readers
//! (CPU time, RSS, bytes written) and the data-dir size walk.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a stopped child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// A child process that is stopped, with its whole group, when dropped.
pub struct Supervised {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `command` in a new process group.
    pub fn spawn(command: &mut Command) -> io::Result<Self> {
        command.process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Self {
            child: command.spawn()?,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has ended (does not block).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The child's stdout, for the caller to read.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Stops the process group: SIGTERM, up to `grace` to exit, then SIGKILL.
    /// Returns the exit status and whether SIGKILL was needed.
    pub fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.exit_status() {
            // The leader is gone; make sure helpers it left behind go too.
            self.signal_group(libc::SIGKILL);
            return (Some(status), false);
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                self.signal_group(libc::SIGKILL);
                return (Some(status), false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group(libc::SIGKILL);
        self.exited = self.child.wait().ok();
        (self.exited, true)
    }

    fn signal_group(&self, signal: libc::c_int) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's process group; ESRCH when it
            // is already gone is harmless.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcUsage {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    pub rss_bytes: u64,
    /// Bytes the process caused to be written to storage (`/proc/PID/io`).
    pub write_bytes: u64,
}

/// Reads `/proc/PID/{stat,statm,io}`; `None` once the process is gone.
pub fn usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let write_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Some(ProcUsage {
        cpu_s: (utime + stime) as f64 / clock_ticks(),
        rss_bytes: resident * page_size(),
        write_bytes,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Seconds of CPU the whole machine has spent busy (all cores, everything
/// but idle and iowait) since boot, from the first line of `/proc/stat`.
pub fn host_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …; guest time is
    // already counted in user and nice.
    let busy: u64 = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
    Some(busy as f64 / clock_ticks())
}

/// Most entries [`dir_bytes`] visits, so a runaway data dir cannot stall
/// the sampler.
const MAX_DIR_ENTRIES: usize = 1_000_000;

/// Total apparent size of the regular files under `root` (not following
/// symlinks). Files vanishing mid-walk (compaction) are skipped.
pub fn dir_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    let mut visited = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > MAX_DIR_ENTRIES {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Raises this process's open-file limit to its hard limit: a fleet holds
/// one listener and one connection per target, and children inherit it.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let me = usage(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(me.cpu_s >= 0.0);
    }

    #[test]
    fn stop_ends_the_whole_group() {
        let mut child =
            Supervised::spawn(Command::new("sh").args(["-c", "sleep 30 & sleep 30; wait"]))
                .unwrap();
        let pid = child.pid();
        std::thread::sleep(Duration::from_millis(100));
        let (status, killed) = child.stop(Duration::from_secs(5));
        assert!(status.is_some());
        assert!(!killed, "SIGTERM was enough");
        assert!(usage(pid).is_none(), "leader reaped");
        // No live process of the group survives (zombies awaiting a reaper
        // in a container without init are already dead).
        let survivors = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let rest = &stat[stat.rfind(')').unwrap() + 1..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields[0] != "Z" && fields[2] == pid.to_string()
            })
            .count();
        assert_eq!(survivors, 0);
    }

    #[test]
    fn host_busy_time_grows() {
        let before = host_busy_s().unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(host_busy_s().unwrap() >= before);
    }

    #[test]
    fn sums_files_below_a_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("y"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 123);
    }
}
