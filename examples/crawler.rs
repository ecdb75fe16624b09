//! A crawler-shaped program: many URLs over a few hosts through one pool, with at most 4
//! requests per host at once, at most 50 at once overall, and at most 200 starts per
//! second, against a local HTTP server (loopback only) that measures what it sees.
//!
//! `cargo run --release --example crawler`
//!
//! The server answers every request after 20 ms and records, per `Host`, how many
//! requests it served at once at most; the program prints that next to the limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::{CommonAioPool, SubmitOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const HOSTS: usize = 6;
const PAGES_PER_HOST: usize = 100;
const PER_HOST: usize = 4;
const CONCURRENCY: usize = 50;
const STARTS_PER_SECOND: u32 = 200;

/// What the server saw: requests in progress and the most at once, per host.
#[derive(Default)]
struct Seen {
    now: HashMap<String, usize>,
    max: HashMap<String, usize>,
}

async fn serve(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            let mut host = String::new();
            let mut line = String::new();
            // Read the request head; note the Host header.
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if let Some(h) = line.strip_prefix("Host: ") {
                    host = h.trim().to_string();
                }
                if line == "\r\n" {
                    break;
                }
            }
            {
                let mut s = seen.lock().unwrap();
                let n = s.now.entry(host.clone()).or_insert(0);
                *n += 1;
                let n = *n;
                let m = s.max.entry(host.clone()).or_insert(0);
                *m = (*m).max(n);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.lock().unwrap().now.entry(host).and_modify(|n| *n -= 1);
            let body = "<html>ok</html>";
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = reader.get_mut().write_all(reply.as_bytes()).await;
        });
    }
}

/// GET http://{host}{path} from the server at `addr` (HTTP/1.0, one connection each).
async fn fetch(addr: std::net::SocketAddr, host: String, path: String) -> std::io::Result<usize> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response.len())
}

#[tokio::main]
async fn main() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = tokio::spawn(serve(listener, seen.clone()));

    let pool = CommonAioPool::builder()
        .name("crawler")
        .max_concurrency(CONCURRENCY)
        .max_queue_size(1000)
        .max_per_key(PER_HOST)
        .rate_limit(STARTS_PER_SECOND, Duration::from_secs(1))
        .build();

    let started = Instant::now();
    let starts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for page in 0..PAGES_PER_HOST {
        for h in 0..HOSTS {
            let host = format!("host{h}.test");
            let path = format!("/page/{page}");
            let starts = starts.clone();
            let failed = failed.clone();
            let job = async move {
                starts.lock().unwrap().push(started.elapsed());
                if fetch(addr, host, path).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            };
            let opts = SubmitOptions::new().key(format!("host{h}.test"));
            handles.push(pool.submit_with(job, opts).await.expect("pool open"));
        }
    }
    for h in handles {
        h.await.expect("crawl job");
    }
    pool.shutdown().await;
    let wall = started.elapsed();
    server.abort();

    let starts = starts.lock().unwrap().clone();
    let busiest_second = (0..=wall.as_secs())
        .map(|s| starts.iter().filter(|t| t.as_secs() == s).count())
        .max()
        .unwrap_or(0);
    let seen = seen.lock().unwrap();
    let max_per_host = seen.max.values().copied().max().unwrap_or(0);
    println!(
        "{} pages from {HOSTS} hosts in {:.2} s ({} failed)",
        starts.len(),
        wall.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    println!("most requests at once to one host: {max_per_host} (limit {PER_HOST})");
    println!(
        "most starts in one calendar second: {busiest_second} (limit {STARTS_PER_SECOND} per \
         sliding second)"
    );
    println!("pool: {}", pool.stats());
    assert!(max_per_host <= PER_HOST, "per-host limit exceeded");
    assert!(
        busiest_second <= STARTS_PER_SECOND as usize,
        "rate limit exceeded"
    );
}
