//! Starting the real Prometheus (Debian's package, which `scripts/test.sh`
//! installs) on 127.0.0.1 with a config and a temporary data directory,
//! for the tests that compare kiln's answers with its answers.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::request;

/// A running Prometheus, killed when dropped.
pub struct Prometheus {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts Prometheus with `config` and waits until it is ready.
pub fn start_prometheus(config: &std::path::Path) -> Prometheus {
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("`prometheus` must be installed (scripts/test.sh installs it with apt)");
    let p = Prometheus {
        child,
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(p.addr).is_ok()
            && request(p.addr, "GET", "/-/ready", &[], b"").status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}
