//! The processes under test (the fake upstream, HAProxy and `tollgate-proxy`), each killed on
//! drop, and readings from `/proc` about them and the machine.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `fake-anthropic --no-record` process.
pub struct Fake {
    child: Child,
    /// Kept open: the fake must never see a closed stdout.
    _stdout: BufReader<ChildStdout>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Fake {
    /// Starts `bin --listen 127.0.0.1:0 --api-key KEY --no-record` and reads its
    /// `listening on IP:PORT` line.
    pub fn start(bin: &Path, api_key: &str) -> anyhow::Result<Fake> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--api-key", api_key, "--no-record"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("fake-anthropic stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("reading fake-anthropic stdout")?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("fake-anthropic did not print `listening on IP:PORT` (got {line:?})");
        };
        Ok(Fake {
            child,
            _stdout: stdout,
            addr,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `haproxy` on `PATH`, or in `/usr/sbin` (Debian's location, often missing from the
/// `PATH` of unprivileged users).
pub fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// A HAProxy process in the foreground (`-db`): `mode http`, a plain reverse proxy to one
/// server, `http-reuse always`, no logging.
pub struct Haproxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// First line of `haproxy -v`.
    pub version: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Writes the configuration, starts `bin -db -f CONFIG` and waits until it accepts.
    pub fn start(bin: &Path, upstream: SocketAddr, threads: usize) -> anyhow::Result<Haproxy> {
        let version = command_first_line(bin, &["-v"]).unwrap_or_else(|| "haproxy (unknown version)".into());
        let addr = free_port()?;
        let config = format!(
            "global\n\
             \x20   nbthread {threads}\n\
             \x20   maxconn 4096\n\
             defaults\n\
             \x20   mode http\n\
             \x20   option http-keep-alive\n\
             \x20   http-reuse always\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             \x20   timeout http-keep-alive 60s\n\
             frontend bench\n\
             \x20   bind {addr}\n\
             \x20   default_backend fake\n\
             backend fake\n\
             \x20   server fake {upstream}\n"
        );
        let dir = tempfile::tempdir()?;
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, &config)?;
        let log_path = dir.path().join("haproxy.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut haproxy = Haproxy {
            child,
            addr,
            version,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(addr).is_ok() {
                return Ok(haproxy);
            }
            if let Some(status) = haproxy.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("haproxy exited with {status}:\n{log}");
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("haproxy did not start listening on {addr}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tollgate-proxy` process with the production logging (JSON, `info`) written to a file.
pub struct Tollgate {
    child: Child,
    /// Proxy listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// `tollgate-proxy --version`.
    pub version: String,
    log_path: PathBuf,
    _dirs: [tempfile::TempDir; 2],
}

/// Environment variable the bench policy reads the provider credential from.
const CREDENTIAL_ENV: &str = "BENCH_PROVIDER_KEY";
/// Environment variable the Bedrock bench policy reads the AWS access key id from.
const AWS_KEY_ID_ENV: &str = "BENCH_AWS_KEY_ID";
/// Environment variable the Bedrock bench policy reads the AWS secret access key from.
const AWS_SECRET_ENV: &str = "BENCH_AWS_SECRET";

/// The one provider of a bench `tollgate-proxy`; its `claude-*` route goes there.
pub enum Target<'a> {
    /// A `kind: anthropic` provider with a provider key, the route a passthrough.
    Anthropic {
        /// The provider key (`x-api-key`).
        provider_key: &'a str,
    },
    /// A `kind: bedrock` provider (region `us-east-1`, static SigV4 credentials), the route
    /// mapping every model to `model`.
    Bedrock {
        /// Access key id.
        access_key_id: &'a str,
        /// Secret access key.
        secret_access_key: &'a str,
        /// The Bedrock model id (a cross-region inference profile).
        model: &'a str,
    },
}

impl Tollgate {
    /// Writes a policy with one virtual key, one provider pointing at `upstream` (see [`Target`];
    /// credentials from environment variables) and a `claude-*` route to it, then starts
    /// `bin --policy FILE --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers N` and waits
    /// for its `tollgate-proxy listening` log line. `log_level` overrides the default (`info`)
    /// through `TOLLGATE_LOG` (except for the binary's own startup lines). It runs in a temporary
    /// directory, where files it creates by default (such as its ledger journal) end up.
    pub fn start(
        bin: &Path,
        upstream: SocketAddr,
        target: &Target<'_>,
        virtual_key: &str,
        workers: usize,
        log_level: Option<&str>,
    ) -> anyhow::Result<Tollgate> {
        let version = command_first_line(bin, &["--version"]).unwrap_or_else(|| "tollgate-proxy".into());
        let hash = hash_key(bin, virtual_key)?;
        let dir = tempfile::tempdir()?;
        let policy = dir.path().join("policy.yaml");
        let (provider, route, env) = match target {
            Target::Anthropic { provider_key } => (
                format!(
                    "{{id: fake, kind: anthropic, endpoint: \"http://{upstream}\", credential: {{env: {CREDENTIAL_ENV}}}}}"
                ),
                "{provider: fake}".to_owned(),
                vec![(CREDENTIAL_ENV, *provider_key)],
            ),
            Target::Bedrock {
                access_key_id,
                secret_access_key,
                model,
            } => (
                format!(
                    "{{id: bedrock, kind: bedrock, endpoint: \"http://{upstream}\", region: us-east-1, \
                     aws: {{access_key_id: {{env: {AWS_KEY_ID_ENV}}}, secret_access_key: {{env: {AWS_SECRET_ENV}}}}}}}"
                ),
                format!("{{provider: bedrock, model: \"{model}\"}}"),
                vec![
                    (AWS_KEY_ID_ENV, *access_key_id),
                    (AWS_SECRET_ENV, *secret_access_key),
                ],
            ),
        };
        std::fs::write(
            &policy,
            format!(
                "version: 1\n\
                 organization: {{name: bench}}\n\
                 keys:\n\
                 \x20 - {{id: bench, sha256: {hash}, user: bench@bench.example}}\n\
                 providers:\n\
                 \x20 - {provider}\n\
                 routes:\n\
                 \x20 - {{match: \"claude-*\", targets: [{route}]}}\n"
            ),
        )?;
        // Not next to the policy: tollgate-proxy watches the policy's directory and reloads on any
        // event there, which every log line would trigger.
        let log_dir = tempfile::tempdir()?;
        let log_path = log_dir.path().join("tollgate-proxy.log");
        let log = std::fs::File::create(&log_path)?;
        let workers = workers.to_string();
        let mut cmd = Command::new(bin);
        cmd.current_dir(log_dir.path())
            .arg("--policy")
            .arg(&policy)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--workers", &workers])
            // The production configuration: default (`info`) JSON logging.
            .env_remove("TOLLGATE_LOG")
            .env_remove("TOLLGATE_LOG_FORMAT")
            .env_remove("TOLLGATE_WORKERS")
            .env_remove("TOLLGATE_PRICES")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(level) = log_level {
            // The binary's own target stays at info: its `listening` line carries the address.
            cmd.env("TOLLGATE_LOG", format!("{level},tollgate_proxy=info"));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let unset: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut tollgate = Tollgate {
            child,
            addr: unset,
            admin: unset,
            version,
            log_path,
            _dirs: [dir, log_dir],
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((listen, admin)) = listening_line(&tollgate.logs()) {
                tollgate.addr = listen;
                tollgate.admin = admin;
                return Ok(tollgate);
            }
            if let Some(status) = tollgate.child.try_wait()? {
                bail!("tollgate-proxy exited with {status}; logs:\n{}", tollgate.logs());
            }
            if Instant::now() > deadline {
                bail!("tollgate-proxy did not start; logs:\n{}", tollgate.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `fields.listen` and `fields.admin` of the `tollgate-proxy listening` JSON log line.
fn listening_line(logs: &str) -> Option<(SocketAddr, SocketAddr)> {
    logs.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["fields"]["message"] != "tollgate-proxy listening" {
            return None;
        }
        let listen = v["fields"]["listen"].as_str()?.parse().ok()?;
        let admin = v["fields"]["admin"].as_str()?.parse().ok()?;
        Some((listen, admin))
    })
}

/// The hex SHA-256 of a virtual key, as computed by `tollgate-proxy hash-key` itself.
fn hash_key(bin: &Path, key: &str) -> anyhow::Result<String> {
    let mut child = Command::new(bin)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawning {} hash-key", bin.display()))?;
    child
        .stdin
        .take()
        .context("hash-key stdin")?
        .write_all(key.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("tollgate-proxy hash-key failed: {}", out.status);
    }
    let hash = String::from_utf8(out.stdout)?.trim().to_owned();
    if hash.len() != 64 {
        bail!("tollgate-proxy hash-key printed {hash:?}");
    }
    Ok(hash)
}

/// A loopback address with a port that was free a moment ago (for HAProxy, which cannot report
/// the port it picked for `:0`).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The first line of `bin args...`'s standard output, if it runs.
pub fn command_first_line(bin: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(bin).args(args).stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/PID/status`.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// User plus system CPU time of a process (all its threads), in clock ticks of 10 ms
/// (`USER_HZ` is 100 on Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized command name start at field 3 (`state`); utime and stime
    // are fields 14 and 15.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Machine-wide busy time from `/proc/stat`, in 10 ms ticks: (user + nice + system, steal).
/// Interrupt time is left out: loopback traffic of the bench itself is processed there.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some((at(0) + at(1) + at(2), at(7)))
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples `VmRSS` of a process on a background thread and keeps the maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            loop {
                max = max.max(status_kb(pid, "VmRSS").unwrap_or(0));
                if flag.load(Ordering::Relaxed) {
                    return max;
                }
                std::thread::sleep(every);
            }
        });
        RssSampler { stop, handle }
    }

    /// Stops sampling and returns the largest `VmRSS` seen, in kB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// What the header says about the machine.
pub struct Machine {
    /// CPUs available to this process.
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` in MiB.
    pub mem_mib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads `/proc`.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_mib: mem_kb / 1024,
            kernel,
        }
    }
}
