//! Change notices for file_sd files through inotify, so that a change is
//! picked up at once rather than at the next poll.
//!
//! The directories holding the `files` patterns are watched (a glob is
//! allowed in the last path element only, so the directory is literal);
//! files there are usually replaced by a rename, which a watch on the file
//! itself would miss. Notices for names matching no pattern are ignored. A
//! directory that does not exist yet, or that was removed, is watched again
//! at the next [`FileWatch::rewatch`] (the caller's poll tick). The poll
//! stays the fallback for whatever inotify cannot see (network file
//! systems, a watch limit reached).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What counts as a change: a file written and closed, renamed into or out
/// of the directory, or deleted. A bare creation is not (the file is still
/// empty; its close-after-write follows).
fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// One watched directory.
struct Dir {
    /// Patterns of the file names that matter there.
    names: Vec<glob::Pattern>,
    /// The watch, when the directory could be watched.
    wd: Option<WatchDescriptor>,
}

/// The inotify instance and its watches.
pub struct FileWatch {
    /// Not registered with the runtime until first awaited (the first
    /// configuration is applied before the runtime runs).
    idle: Option<Inotify>,
    fd: Option<AsyncFd<Inotify>>,
    watches: Watches,
    dirs: BTreeMap<PathBuf, Dir>,
    buf: Vec<u8>,
}

impl FileWatch {
    /// A watcher with no watches; `None` (logged) when inotify is
    /// unavailable.
    pub fn new() -> Option<FileWatch> {
        match Inotify::init() {
            Ok(i) => Some(FileWatch {
                watches: i.watches(),
                idle: Some(i),
                fd: None,
                dirs: BTreeMap::new(),
                buf: vec![0; 4096],
            }),
            Err(e) => {
                log::warn!("file discovery: inotify unavailable ({e}); files are polled only");
                None
            }
        }
    }

    /// Watches the directories of `patterns` and no others.
    pub fn set_patterns<'a>(&mut self, patterns: impl IntoIterator<Item = &'a str>) {
        let mut wanted: BTreeMap<PathBuf, Vec<glob::Pattern>> = BTreeMap::new();
        for p in patterns {
            let path = Path::new(p);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // A bad pattern fails discovery itself, which reports it.
            if let Ok(pat) = glob::Pattern::new(name) {
                wanted.entry(dir).or_default().push(pat);
            }
        }
        let old = std::mem::take(&mut self.dirs);
        for (path, dir) in old {
            match (wanted.contains_key(&path), dir.wd) {
                (true, wd) => {
                    self.dirs.insert(
                        path,
                        Dir {
                            names: Vec::new(),
                            wd,
                        },
                    );
                }
                (false, Some(wd)) => {
                    // Fails only when the kernel already dropped the watch.
                    let _ = self.watches.remove(wd);
                }
                (false, None) => {}
            }
        }
        for (path, names) in wanted {
            self.dirs
                .entry(path)
                .or_insert(Dir {
                    names: Vec::new(),
                    wd: None,
                })
                .names = names;
        }
        self.rewatch();
    }

    /// Adds the watches that are missing (directories that did not exist,
    /// or were removed since).
    pub fn rewatch(&mut self) {
        for (path, dir) in &mut self.dirs {
            if dir.wd.is_some() {
                continue;
            }
            match self.watches.add(path, mask()) {
                Ok(wd) => dir.wd = Some(wd),
                Err(e) => log::debug!("file discovery: cannot watch {}: {e}", path.display()),
            }
        }
    }

    /// Waits for a change to a file that matters; returns the paths
    /// noticed (a directory's own path when it went away). Cancel-safe.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        if let Some(i) = self.idle.take() {
            // SAFETY: an `Inotify` owns its descriptor until dropped and
            // always reports that same one; the `AsyncFd` owns the `Inotify`.
            match unsafe { AsyncFd::register_with_interest(i, Interest::READABLE) } {
                Ok(fd) => self.fd = Some(fd),
                Err(e) => log::warn!("file discovery: inotify: {e}; files are polled only"),
            }
        }
        let Some(fd) = self.fd.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    log::warn!("file discovery: inotify: {e}; files are polled only");
                    self.fd = None;
                    return std::future::pending().await;
                }
            };
            let buf = &mut self.buf;
            let dirs = &mut self.dirs;
            let read = guard.try_io(|i| {
                let events = i.get_mut().read_events(buf)?;
                let mut noticed = Vec::new();
                for ev in events {
                    let Some((path, dir)) =
                        dirs.iter_mut().find(|(_, d)| d.wd == Some(ev.wd.clone()))
                    else {
                        continue;
                    };
                    if ev.mask.intersects(
                        EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF,
                    ) {
                        // The directory went away: watch it again when it is back.
                        dir.wd = None;
                        noticed.push(path.clone());
                        continue;
                    }
                    let Some(name) = ev.name.and_then(|n| n.to_str()) else {
                        continue;
                    };
                    if dir.names.iter().any(|p| p.matches(name)) {
                        noticed.push(path.join(name));
                    }
                }
                Ok::<_, io::Error>(noticed)
            });
            drop(guard);
            match read {
                Ok(Ok(noticed)) if !noticed.is_empty() => return noticed,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    log::warn!(
                        "file discovery: reading inotify events: {e}; files are polled only"
                    );
                    self.fd = None;
                    return std::future::pending().await;
                }
                // Spurious readiness: wait again.
                Err(_) => {}
            }
        }
    }
}
