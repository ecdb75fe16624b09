//! `rediss://` with a password, against a private TLS redis-server with a self-signed
//! certificate. Needs the `tls-insecure` feature (the URL's `#insecure` skips the
//! certificate check):
//!
//! ```text
//! cargo test -p nb-aiopool-redis --features tls-insecure --test tls
//! ```
#![cfg(feature = "tls-insecure")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nb_aiopool_redis::{RedisQueue, Worker};
use support::submit_for_result;

struct Server(Child, std::path::PathBuf);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_tls_server() -> (Server, u16) {
    let dir = std::env::temp_dir().join(format!("nb-aiopool-redis-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl on PATH");
    assert!(ok.success(), "openssl req failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("key.pem"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("cert.pem"))
        .args(["--tls-auth-clients", "no", "--requirepass", "s3cret"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let server = Server(child, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_password_roundtrip() {
    let (_server, port) = start_tls_server();
    let url = format!("rediss://:s3cret@127.0.0.1:{port}/#insecure");
    let queue = RedisQueue::connect(&url, "tls").await.unwrap();
    let worker = Worker::builder(&url, "tls")
        .task("echo", |n: u64| async move { Ok::<u64, String>(n + 1) })
        .build()
        .await
        .unwrap();
    let run = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await.unwrap() })
    };
    let v: u64 = submit_for_result(&queue, "echo", &41u64).await;
    assert_eq!(v, 42);
    worker.shutdown().await;
    run.await.unwrap();
    // Wrong password, and plain TCP to the TLS port: errors, not hangs.
    let bad = format!("rediss://:wrong@127.0.0.1:{port}/#insecure");
    assert!(RedisQueue::connect(&bad, "tls").await.is_err());
    let plain = format!("redis://:s3cret@127.0.0.1:{port}/");
    let t = Instant::now();
    assert!(RedisQueue::connect(&plain, "tls").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(30));
}
