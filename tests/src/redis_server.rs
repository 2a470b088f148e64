//! A real `redis-server` (Debian package `redis-server`) for tests and benchmarks: started
//! on a free loopback port with persistence off (`--save '' --appendonly no`) in a temporary
//! directory, ready once it answers `PING`, killed on drop.
//!
//! The binary is `$TOLLGATE_REDIS_SERVER`, else `/usr/bin/redis-server`, else the first
//! `redis-server` on `PATH`. When it is missing, [`RedisServer::start_or_skip`] fails the
//! test with an install hint if the environment variable `CI` is set, and otherwise prints a
//! `SKIPPED` line and returns `None`.
//!
//! A tiny blocking RESP client ([`RedisServer::command`]) lets tests inspect the server
//! (`PTTL`, `SCRIPT FLUSH`, ...) independently of the client under test.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The install hint printed when the binary is missing.
pub const INSTALL_HINT: &str = "apt-get install -y redis-server";

/// A reply of the RESP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n ...` (`None` for the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*n ...` (`None` for the null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The integer of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a status or bulk reply.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A running `redis-server`; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Where the `redis-server` binary is, if anywhere.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("TOLLGATE_REDIS_SERVER").filter(|p| !p.is_empty()) {
            // Set means "this one": no fallback, so a wrong path reads as missing.
            let p = PathBuf::from(p);
            return p.is_file().then_some(p);
        }
        let debian = Path::new("/usr/bin/redis-server");
        if debian.is_file() {
            return Some(debian.to_path_buf());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    }

    /// Starts a server, or when the binary is missing: panics with an install hint under CI
    /// (`CI` set), else prints `SKIPPED: {what}: ...` and returns `None`. Panics if a present
    /// binary fails to start.
    pub fn start_or_skip(what: &str) -> Option<RedisServer> {
        Self::start_with_args_or_skip(what, &[])
    }

    /// [`RedisServer::start_or_skip`] with extra `redis-server` arguments.
    pub fn start_with_args_or_skip(what: &str, args: &[&str]) -> Option<RedisServer> {
        if Self::binary().is_none() {
            let msg = format!(
                "redis-server not found (looked at $TOLLGATE_REDIS_SERVER, /usr/bin/redis-server, PATH); \
                 install it with `{INSTALL_HINT}`"
            );
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{what}: {msg} (CI is set, so this is a failure, not a skip)");
            }
            eprintln!("SKIPPED: {what}: {msg}");
            return None;
        }
        match Self::start_with_args(args) {
            Ok(s) => Some(s),
            Err(e) => panic!("{what}: starting redis-server: {e:#}"),
        }
    }

    /// Starts a server on a free loopback port.
    pub fn start() -> anyhow::Result<RedisServer> {
        Self::start_with_args(&[])
    }

    /// Starts a server on a free loopback port with extra arguments (e.g.
    /// `["--requirepass", "secret"]`).
    pub fn start_with_args(args: &[&str]) -> anyhow::Result<RedisServer> {
        let bin = Self::binary().with_context(|| format!("redis-server not found: {INSTALL_HINT}"))?;
        let mut last_err = None;
        // A port picked free may be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let mut s = RedisServer {
                child: None,
                bin: bin.clone(),
                port,
                extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
                dir: tempfile::tempdir()?,
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log_path)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("redis-server exited with {status}; log:\n{}", self.logs());
            }
            if self.ping().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "redis-server did not answer PING within 10 s; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on (stable across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's own log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The password given with `--requirepass`, if any.
    fn password(&self) -> Option<&str> {
        let i = self.extra_args.iter().position(|a| a == "--requirepass")?;
        self.extra_args.get(i + 1).map(String::as_str)
    }

    /// Sends `PING` and expects `PONG` (authenticating first if a password is set).
    pub fn ping(&self) -> anyhow::Result<()> {
        match self.command(&["PING"])? {
            Reply::Status(s) if s == "PONG" => Ok(()),
            other => bail!("PING answered {other:?}"),
        }
    }

    /// Runs one command on a fresh connection and returns its reply (a server error is a
    /// [`Reply::Error`], not an `Err`).
    pub fn command(&self, args: &[&str]) -> anyhow::Result<Reply> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        if let Some(pw) = self.password() {
            stream.write_all(&encode(&["AUTH", pw]))?;
            if let Reply::Error(e) = read_reply(&mut reader)? {
                bail!("AUTH: {e}");
            }
        }
        stream.write_all(&encode(args))?;
        read_reply(&mut reader)
    }

    /// Kills the server (SIGKILL) and waits for it; the data is gone (no persistence).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port and with the same arguments.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, like a
    /// hung or partitioned Redis. [`RedisServer::resume`] undoes it.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Resumes a server frozen by [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("redis-server is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{sig} {} failed: {status}", child.id());
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> anyhow::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("connection closed");
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line.split_at_checked(1).context("empty RESP line")?;
    Ok(match tag {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse()?),
        "$" => {
            let n: i64 = rest.parse()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n: i64 = rest.parse()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        other => bail!("unexpected RESP type {other:?} in {line:?}"),
    })
}
