//! Test support: a private `redis-server` per test, on a free loopback port, killed on
//! drop. Included with `mod support;`.
#![allow(dead_code)]

pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process with its own directory.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    persistent: bool,
}

fn server_binary() -> String {
    if let Ok(p) = std::env::var("NB_REDIS_SERVER") {
        return p;
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("redis-server").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "redis-server not found: install it (apt-get update && apt-get install -y redis-server redis-tools) \
         or set NB_REDIS_SERVER to its path; .ci/run installs it"
    );
    "redis-server".to_owned()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn unique_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "nb-aiopool-redis-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl RedisServer {
    /// No persistence (`--save "" --appendonly no`).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// AOF on, fsync on every write: a restart loses nothing acknowledged.
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        let dir = unique_dir();
        for _ in 0..10 {
            let mut s = RedisServer {
                child: None,
                port: free_port(),
                dir: dir.clone(),
                persistent,
            };
            if s.spawn() {
                return s;
            }
        }
        panic!(
            "could not start redis-server (see {}/redis.log)",
            dir.display()
        );
    }

    /// Starts the server process on `self.port`; false if it did not come up (port taken).
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(server_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no");
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                if pong.is_ok() {
                    self.child = Some(child);
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (the AOF is replayed if persistent).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn used_memory(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut self.conn())
            .unwrap();
        info_field(&info, "used_memory")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

pub fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Key names of a queue, for raw inspection.
pub fn stream_key(q: &str) -> String {
    format!("nbq:{{{q}}}:jobs")
}
pub fn dead_key(q: &str) -> String {
    format!("nbq:{{{q}}}:dead")
}
/// Writes a dead letter of queue `q` as a worker writes it: job `job`, task "t", JSON
/// payload `payload`, 5 attempts, reason "smtp down".
pub fn add_dead_letter(c: &mut redis::Connection, q: &str, job: &str, payload: &str) {
    let _: String = redis::cmd("XADD")
        .arg(dead_key(q))
        .arg("*")
        .arg(&[
            "j",
            job,
            "t",
            "t",
            "p",
            payload,
            "a",
            "5",
            "r",
            "0",
            "reason",
            "smtp down",
            "at",
            "1",
        ])
        .query(c)
        .unwrap();
}

pub fn delayed_key(q: &str) -> String {
    format!("nbq:{{{q}}}:delayed")
}
/// The queue's count of completed jobs.
pub fn completed(c: &mut redis::Connection, q: &str) -> u64 {
    redis::cmd("GET")
        .arg(format!("nbq:{{{q}}}:completed"))
        .query::<Option<u64>>(c)
        .unwrap()
        .unwrap_or(0)
}

/// The length of the stream (or any stream) at `key`.
pub fn xlen(c: &mut redis::Connection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(c).unwrap()
}

/// The stored result of job `id`, as JSON, if any.
pub fn result_json(c: &mut redis::Connection, q: &str, id: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("nbq:{{{q}}}:result:{id}"))
        .query(c)
        .unwrap()
}

/// Ids pending in the group, with their consumer.
pub fn pending(c: &mut redis::Connection, q: &str) -> Vec<(String, String)> {
    let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream_key(q))
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(1000)
        .query(c)
        .unwrap();
    v.into_iter().map(|(id, who, _, _)| (id, who)).collect()
}

/// Runs of each job number, counted by a test's handler.
pub type Runs = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, u64>>>;

/// How many times job `n` ran.
pub fn runs_of(runs: &Runs, n: u64) -> u64 {
    runs.lock().unwrap().get(&n).copied().unwrap_or(0)
}

/// Entries pending per consumer (XPENDING summary).
pub fn pending_per_consumer(c: &mut redis::Connection, q: &str) -> Vec<(String, u64)> {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream_key(q))
        .arg("workers")
        .query(c)
        .unwrap();
    let redis::Value::Array(parts) = v else {
        return Vec::new();
    };
    let Some(redis::Value::Array(cs)) = parts.get(3) else {
        return Vec::new();
    };
    cs.iter()
        .filter_map(|c| match c {
            redis::Value::Array(kv) => {
                let name: String = redis::from_redis_value(kv.first()?.clone()).ok()?;
                let n: u64 = redis::from_redis_value(kv.get(1)?.clone()).ok()?;
                Some((name, n))
            }
            _ => None,
        })
        .collect()
}

/// Fails the test with a clear message instead of hanging.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out ({secs} s) waiting for: {what}"),
    }
}

/// Polls `cond` every 10 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    within(secs, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Polls `cond` every 10 ms, up to `polls` times: whether it came true. For a test that
/// asserts it only after cleaning up, with a message of its own.
pub async fn comes_true(polls: u32, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..polls {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Runs the `nb-aiopool-redis` CLI against `url`: (exit status, stdout, stderr).
pub fn cli_run(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nb-aiopool-redis"))
        .arg("--url")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flushes the server, then writes job `{"n":n}` of task `t` to queue `q`'s stream with
/// the id of the entry that was first in it: the id a submit in the same millisecond gets
/// once the stream is lost (ids restart from the clock). Returns that id.
#[allow(dead_code)]
pub fn flush_and_reuse_first_id(c: &mut redis::Connection, q: &str, n: u64) -> String {
    let first: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream_key(q))
        .arg("-")
        .arg("+")
        .query(c)
        .unwrap();
    let id = first[0].0.clone();
    let _: () = redis::cmd("FLUSHALL").query(c).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream_key(q))
        .arg(&id)
        .arg("t")
        .arg("t")
        .arg("p")
        .arg(format!(r#"{{"n":{n}}}"#))
        .query(c)
        .unwrap();
    id
}

/// The job most tests submit: a number.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub struct Job {
    pub n: u64,
}

/// Runs `w` in a task of its own, until it is shut down.
pub fn spawn_run(
    w: &nb_aiopool_redis::Worker,
) -> tokio::task::JoinHandle<nb_aiopool_redis::ShutdownReport> {
    let w = w.clone();
    tokio::spawn(async move { w.run().await.expect("run") })
}

/// Submits `payload` to `task` with a result (kept a minute) and waits up to 10 s for it.
pub async fn submit_for_result<P, T>(
    queue: &nb_aiopool_redis::RedisQueue,
    task: &str,
    payload: &P,
) -> T
where
    P: serde::Serialize,
    T: serde::de::DeserializeOwned,
{
    let id = queue
        .submit_with_result(task, payload, Duration::from_secs(60))
        .await
        .expect("submit");
    queue
        .wait_result(&id, Duration::from_secs(10))
        .await
        .expect("the job's result")
}

/// `CONFIG SET name value` on the server of connection `c`.
pub fn config_set(c: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
        .unwrap();
}
