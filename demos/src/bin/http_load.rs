//! The specification's HTTP load demo (seed section 1.6) as a real program: many GET
//! requests at a fixed concurrency, through a pool, or through the naive
//! "spawn every request, limit with a Semaphore" pattern.
//!
//! Without `--url` it starts a real HTTP/1.1 server (hyper) on 127.0.0.1 on a free port and
//! loads that. It targets loopback addresses only, unless `--allow-remote` is given.
//! `--serve-only` just runs the server, so another load generator (`wrk`) can be pointed
//! at it.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nb_aiopool::CommonAioPool;
use nb_aiopool_demos::child::run_self;
use nb_aiopool_demos::live::{want_bar, Live};
use nb_aiopool_demos::memory::{self, EXIT_REFUSED};
use nb_aiopool_demos::report::{table, ResultLine};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

/// Estimated bytes one naive request task costs while it waits for its permit: the tokio
/// task with its future (client handle, URI, stats handle, semaphore, the pending acquire)
/// and its `JoinHandle`; measured ~2 KiB on x86-64 Linux, rounded up.
const NAIVE_REQUEST_BYTES: u64 = 3072;

#[derive(Parser, Debug)]
#[command(
    name = "http_load",
    about = "HTTP/1.1 load through a pool vs \"spawn every request + Semaphore\" \
             (loopback only by default)"
)]
struct Args {
    /// `pool` (CommonAioPool), `semaphore` (the naive pattern), or `compare` (both, each in
    /// its own process, against one server).
    #[arg(long, value_enum, default_value_t = Mode::Compare)]
    mode: Mode,
    /// Target URL (http only). Without it, a server is started on 127.0.0.1.
    #[arg(long)]
    url: Option<String>,
    /// Number of requests.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Requests in flight at once (also the size of the keep-alive connection pool).
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Queue size of the pool [default: the concurrency].
    #[arg(long)]
    queue_size: Option<usize>,
    /// Per-request timeout in milliseconds (connect + response + body).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Stop starting new requests after this many seconds (the rest count as skipped).
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Allow a target that is not a loopback address. Never point this at a server you
    /// do not own.
    #[arg(long)]
    allow_remote: bool,
    /// Only run the server (on 127.0.0.1) until Ctrl-C or `--serve-seconds`.
    #[arg(long)]
    serve_only: bool,
    /// Port for `--serve-only` (0: a free port, printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// With `--serve-only`: stop after this many seconds.
    #[arg(long)]
    serve_seconds: Option<u64>,
    /// Size of the server's response body in bytes.
    #[arg(long, default_value_t = 32)]
    response_bytes: usize,
    /// Worker threads of the runtime [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Print the process monitor's line every this many milliseconds (0: never).
    #[arg(long, default_value_t = 1000)]
    monitor_interval_ms: u64,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Let the `semaphore` mode run even when its estimated memory exceeds half of the
    /// available memory.
    #[arg(long)]
    i_know_it_may_exhaust_memory: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Through a `CommonAioPool`: `submit(..).await`, handle dropped.
    Pool,
    /// Spawn every request up front; each takes a `Semaphore` permit inside.
    Semaphore,
    /// Both, each in its own process, against one server.
    Compare,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pool => "pool",
            Mode::Semaphore => "semaphore",
            Mode::Compare => "compare",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server

/// Binds 127.0.0.1:`port` with a long accept backlog (a thousand clients connect at once).
fn bind_loopback(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))?;
    socket.listen(4096)
}

/// What the built-in server has done (Relaxed counters: statistics only).
#[derive(Debug, Default)]
struct Served {
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Served {
    fn summary(&self) -> String {
        format!(
            "requests={} connections={}",
            self.requests.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed)
        )
    }
}

/// Serves `GET anything` with `body` on every connection, HTTP/1.1 keep-alive, forever.
async fn serve(listener: TcpListener, body: Bytes, served: Arc<Served>) {
    let mut last_complaint: Option<Instant> = None;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE: say so now and then, back off, go on.
                if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    eprintln!("server: accept failed: {e}");
                    last_complaint = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        served.connections.fetch_add(1, Ordering::Relaxed);
        let (body, served) = (body.clone(), served.clone());
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                // Relaxed: a statistic.
                served.requests.fetch_add(1, Ordering::Relaxed);
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            // A client that goes away mid-request is not the server's problem.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn response_body(bytes: usize) -> Bytes {
    let mut text = "hello from nb-aiopool\n".repeat(bytes / 22 + 1);
    text.truncate(bytes);
    Bytes::from(text)
}

/// Starts the server on the current runtime; returns its URL and request counter.
async fn start_server(port: u16, response_bytes: usize) -> std::io::Result<(String, Arc<Served>)> {
    let listener = bind_loopback(port)?;
    let addr = listener.local_addr()?;
    let served = Arc::new(Served::default());
    tokio::spawn(serve(
        listener,
        response_body(response_bytes),
        served.clone(),
    ));
    Ok((format!("http://{addr}/"), served))
}

async fn serve_only(args: &Args) -> ExitCode {
    let (url, served) = match start_server(args.port, args.response_bytes).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    println!("LISTENING {url}");
    eprintln!("serving on {url} (Ctrl-C to stop)");
    match args.serve_seconds {
        Some(s) => tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(s)) => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    println!("SERVED {}", served.summary());
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------
// The client

/// Refuses anything but plain HTTP to a loopback address, unless `allow_remote`.
fn check_target(url: &str, allow_remote: bool) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid --url `{url}`: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--url `{url}`: only http:// is supported (no TLS client in this demo)"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--url `{url}` has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        return Err(format!(
            "refusing to load `{host}`: not a loopback address. This tool sends a lot of \
             traffic; it targets 127.0.0.1 / localhost / [::1] only, unless you pass \
             --allow-remote for a server you own"
        ));
    }
    Ok(uri)
}

/// Raises the soft open-files limit towards `need` if it is lower (up to the hard limit).
fn ensure_fd_limit(need: u64) -> Result<(), String> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let soft = limit.current.unwrap_or(u64::MAX);
        if soft >= need {
            return Ok(());
        }
        let hard = limit.maximum.unwrap_or(u64::MAX);
        let target = need.max(soft).min(hard);
        let raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        );
        if raised.is_err() || target < need {
            return Err(format!(
                "this run needs about {need} open files (sockets) but the limit is {soft} \
                 (hard limit {hard}); raise it (`ulimit -n {need}`) or lower --concurrency"
            ));
        }
        eprintln!("raised the open-files limit from {soft} to {target}");
    }
    #[cfg(not(unix))]
    let _ = need;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum ErrorKind {
    Connect,
    Timeout,
    Status,
    Body,
    Request,
}

const ERROR_KINDS: [(ErrorKind, &str); 5] = [
    (ErrorKind::Connect, "connect"),
    (ErrorKind::Timeout, "timeout"),
    (ErrorKind::Status, "status"),
    (ErrorKind::Body, "body"),
    (ErrorKind::Request, "request"),
];

/// Counters shared by every request.
struct Stats {
    ok: AtomicU64,
    skipped: AtomicU64,
    errors: [AtomicU64; 5],
    body_bytes: AtomicU64,
    /// Latencies of successful requests, in microseconds.
    latency_us: Mutex<Histogram<u64>>,
}

/// Requests finished (any outcome): the progress bar reads it.
static FINISHED: AtomicU64 = AtomicU64::new(0);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client(concurrency: usize, timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new())
        // Keep every connection of a full concurrency alive between requests.
        .pool_max_idle_per_host(concurrency)
        .build(connector)
}

/// One GET: time it, read the whole body, count the outcome.
async fn request(
    client: HttpClient,
    uri: Uri,
    timeout: Duration,
    deadline: Instant,
    stats: Arc<Stats>,
) {
    // Relaxed everywhere: statistics, read after every request has been awaited.
    if Instant::now() >= deadline {
        stats.skipped.fetch_add(1, Ordering::Relaxed);
        FINISHED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let start = Instant::now();
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| {
            if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Request
            }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| ErrorKind::Body)?
            .to_bytes();
        if status.is_success() {
            Ok(body.len())
        } else {
            Err(ErrorKind::Status)
        }
    };
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ErrorKind::Timeout),
    };
    match outcome {
        Ok(len) => {
            let micros = start.elapsed().as_micros().min(u64::MAX as u128) as u64;
            stats
                .latency_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .saturating_record(micros.max(1));
            stats.body_bytes.fetch_add(len as u64, Ordering::Relaxed);
            stats.ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(kind) => {
            stats.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
    FINISHED.fetch_add(1, Ordering::Relaxed);
}

async fn load(mode: Mode, args: &Args, uri: Uri, stats: Arc<Stats>) -> Result<(), String> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let client = client(args.concurrency, timeout);
    match mode {
        Mode::Pool => {
            let pool = CommonAioPool::new(
                args.concurrency,
                args.queue_size.unwrap_or(args.concurrency),
            );
            for _ in 0..args.requests {
                let job = request(
                    client.clone(),
                    uri.clone(),
                    timeout,
                    deadline,
                    stats.clone(),
                );
                // Backpressure: waits while the pool is full. The handle is detached; the
                // request still runs.
                pool.submit(job)
                    .await
                    .map_err(|e| format!("submit failed: {e}"))?
                    .detach();
            }
            pool.shutdown().await;
        }
        Mode::Semaphore => {
            // The seed's naive version: every request becomes a task now.
            let semaphore = Arc::new(Semaphore::new(args.concurrency));
            let mut tasks = Vec::new();
            for _ in 0..args.requests {
                let job = request(
                    client.clone(),
                    uri.clone(),
                    timeout,
                    deadline,
                    stats.clone(),
                );
                let semaphore = semaphore.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = semaphore.acquire().await.expect("never closed");
                    job.await
                }));
            }
            for task in tasks {
                task.await
                    .map_err(|e| format!("request task failed: {e}"))?;
            }
        }
        Mode::Compare => unreachable!("compare runs children"),
    }
    Ok(())
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        builder.worker_threads(t.max(1));
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the tokio runtime: {e}"))
}

fn run_one(mode: Mode, args: &Args) -> ExitCode {
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    };
    if let Some(url) = &args.url {
        if let Err(message) = check_target(url, args.allow_remote) {
            eprintln!("{message}");
            return ExitCode::from(EXIT_REFUSED as u8);
        }
    }
    if mode == Mode::Semaphore {
        if let Err(message) = memory::check_naive(
            "spawn-every-request + Semaphore",
            args.requests,
            NAIVE_REQUEST_BYTES,
            memory::available_bytes(),
            args.i_know_it_may_exhaust_memory,
        ) {
            eprintln!("{message}");
            return ExitCode::from(EXIT_REFUSED as u8);
        }
    }
    // Client sockets, plus the server's side when it runs in this process. The client can
    // hold more connections than requests in flight for a moment (a connect started for a
    // request that then got a returned idle connection is kept), so count two per slot.
    let sockets = 2 * args.concurrency as u64 * if args.url.is_none() { 2 } else { 1 };
    if let Err(message) = ensure_fd_limit(sockets + 64) {
        return fail(message);
    }
    let runtime = match runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let (url, served) = match &args.url {
        Some(url) => (url.clone(), None),
        None => match runtime.block_on(start_server(0, args.response_bytes)) {
            Ok((url, served)) => (url, Some(served)),
            Err(e) => return fail(format!("cannot start the server: {e}")),
        },
    };
    let uri: Uri = match check_target(&url, args.allow_remote) {
        Ok(uri) => uri,
        Err(e) => return fail(e),
    };

    let every =
        (args.monitor_interval_ms > 0).then(|| Duration::from_millis(args.monitor_interval_ms));
    let live = match Live::start(
        mode.name(),
        "req",
        args.requests,
        &FINISHED,
        want_bar(args.no_progress),
        every,
    ) {
        Ok(live) => live,
        Err(e) => return fail(e.to_string()),
    };
    let base = live.sample_now();
    live.println(&format!(
        "{}: {} GET {url} at concurrency {}{}",
        mode.name(),
        args.requests,
        args.concurrency,
        if served.is_some() {
            " (server in this process)"
        } else {
            ""
        }
    ));

    let stats = Arc::new(Stats {
        ok: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        errors: Default::default(),
        body_bytes: AtomicU64::new(0),
        latency_us: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
        ),
    });
    let start = Instant::now();
    let outcome = runtime.block_on(load(mode, args, uri, stats.clone()));
    let wall = start.elapsed().as_secs_f64();
    let last = live.finish();
    drop(runtime);
    if let Err(e) = outcome {
        return fail(e);
    }
    let (Some(base), Some(last)) = (base, last) else {
        return fail("the process monitor gave no reading".into());
    };

    let ok = stats.ok.load(Ordering::Relaxed);
    let skipped = stats.skipped.load(Ordering::Relaxed);
    let errors: Vec<u64> = stats
        .errors
        .iter()
        .map(|e| e.load(Ordering::Relaxed))
        .collect();
    let total_errors: u64 = errors.iter().sum();
    let hist = stats.latency_us.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    let mib = |b: u64| format!("{:.1}", b as f64 / (1024.0 * 1024.0));

    let mut line = ResultLine::new(mode.name());
    line.push("requests", args.requests)
        .push("ok", ok)
        .push("errors", total_errors);
    for ((_, name), count) in ERROR_KINDS.iter().zip(&errors) {
        line.push(&format!("err_{name}"), count);
    }
    line.push("skipped", skipped)
        .push("concurrency", args.concurrency)
        .push("wall_s", format!("{wall:.3}"))
        .push("rps", format!("{:.0}", ok as f64 / wall.max(1e-9)))
        .push("p50_ms", ms(hist.value_at_quantile(0.50)))
        .push("p90_ms", ms(hist.value_at_quantile(0.90)))
        .push("p99_ms", ms(hist.value_at_quantile(0.99)))
        .push("max_ms", ms(hist.max()))
        .push("mean_ms", format!("{:.3}", hist.mean() / 1000.0))
        .push("body_bytes", stats.body_bytes.load(Ordering::Relaxed))
        .push("base_rss_mib", mib(base.rss_bytes))
        .push("peak_rss_mib", mib(last.peak_rss_bytes))
        .push("cpu_s", format!("{:.2}", last.cpu_seconds))
        .push(
            "server",
            if served.is_some() {
                "in-process"
            } else {
                "external"
            },
        );
    if let Some(served) = &served {
        line.push(
            "server_connections",
            served.connections.load(Ordering::Relaxed),
        );
    }
    println!("{line}");
    if total_errors > 0 {
        eprintln!(
            "{total_errors} requests failed: {}",
            ERROR_KINDS
                .iter()
                .zip(&errors)
                .filter(|(_, n)| **n > 0)
                .map(|((_, name), n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if ok + total_errors + skipped != args.requests {
        return fail(format!(
            "{} requests unaccounted for",
            args.requests - (ok + total_errors + skipped)
        ));
    }
    ExitCode::SUCCESS
}

fn child_args(mode: Mode, args: &Args, url: &str) -> Vec<String> {
    let mut v = vec![
        "--mode".to_string(),
        mode.name().to_string(),
        format!("--url={url}"),
        format!("--requests={}", args.requests),
        format!("--concurrency={}", args.concurrency),
        format!("--timeout-ms={}", args.timeout_ms),
        format!("--max-seconds={}", args.max_seconds),
        format!("--monitor-interval-ms={}", args.monitor_interval_ms),
    ];
    for (flag, on) in [
        ("--allow-remote", args.allow_remote),
        ("--no-progress", args.no_progress),
        (
            "--i-know-it-may-exhaust-memory",
            args.i_know_it_may_exhaust_memory,
        ),
    ] {
        if on {
            v.push(flag.to_string());
        }
    }
    if let Some(q) = args.queue_size {
        v.push(format!("--queue-size={q}"));
    }
    if let Some(t) = args.threads {
        v.push(format!("--threads={t}"));
    }
    v
}

fn compare(args: &Args) -> ExitCode {
    if let Some(url) = &args.url {
        if let Err(message) = check_target(url, args.allow_remote) {
            eprintln!("{message}");
            return ExitCode::from(EXIT_REFUSED as u8);
        }
    }
    if let Err(message) = ensure_fd_limit(2 * args.concurrency as u64 + 64) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let runtime = match runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One server, in this process, for both children: their peak memory is the client's.
    let (url, served) = match &args.url {
        Some(url) => (url.clone(), None),
        None => match runtime.block_on(start_server(0, args.response_bytes)) {
            Ok((url, served)) => (url, Some(served)),
            Err(e) => {
                eprintln!("error: cannot start the server: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    eprintln!(
        "http_load compare: {} requests to {url} at concurrency {}; pool, then semaphore, \
         each in its own process{}",
        args.requests,
        args.concurrency,
        if served.is_some() {
            " (server in the parent process)"
        } else {
            ""
        }
    );

    let mut rows = Vec::new();
    let mut results: Vec<ResultLine> = Vec::new();
    let mut failed = false;
    for mode in [Mode::Pool, Mode::Semaphore] {
        eprintln!();
        let child = child_args(mode, args, &url);
        let run = match runtime
            .block_on(async { tokio::task::spawn_blocking(move || run_self(&child)).await })
        {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => {
                eprintln!("error: cannot start the {} child: {e}", mode.name());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = run.results.into_iter().find(|r| r.mode() == mode.name());
        match (run.status.code(), result) {
            (Some(0), Some(r)) => {
                let cell = |k: &str| r.get(k).unwrap_or("?").to_string();
                rows.push(vec![
                    mode.name().to_string(),
                    cell("ok"),
                    cell("errors"),
                    cell("wall_s"),
                    cell("rps"),
                    cell("p50_ms"),
                    cell("p99_ms"),
                    cell("max_ms"),
                    cell("peak_rss_mib"),
                    cell("cpu_s"),
                ]);
                results.push(r);
            }
            (code, _) => {
                let what = if code == Some(EXIT_REFUSED) {
                    "refused".to_string()
                } else {
                    failed = true;
                    format!(
                        "FAILED ({})",
                        code.map_or("signal".to_string(), |c| c.to_string())
                    )
                };
                let mut row = vec![mode.name().to_string(), what];
                row.resize(10, "-".to_string());
                rows.push(row);
            }
        }
    }
    if let Some(served) = served {
        eprintln!("server: {}", served.summary());
    }
    drop(runtime);

    println!(
        "\nhttp_load: {} requests at concurrency {} (client processes only; latency in ms)",
        args.requests, args.concurrency
    );
    print!(
        "{}",
        table(
            &[
                "mode",
                "ok",
                "errors",
                "wall s",
                "req/s",
                "p50",
                "p99",
                "max",
                "peak RSS MiB",
                "CPU s"
            ],
            &rows
        )
    );
    let peak = |name: &str| {
        results
            .iter()
            .find(|r| r.mode() == name)
            .and_then(|r| r.num("peak_rss_mib"))
    };
    if let (Some(naive), Some(pool)) = (peak("semaphore"), peak("pool")) {
        println!("peak RSS: semaphore / pool = {:.1}x", naive / pool);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.concurrency == 0 {
        eprintln!("error: --concurrency must be at least 1");
        return ExitCode::from(2);
    }
    if args.serve_only {
        return match runtime(args.threads) {
            Ok(rt) => rt.block_on(serve_only(&args)),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match args.mode {
        Mode::Compare => compare(&args),
        mode => run_one(mode, &args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8080/",
            "http://localhost/x",
            "http://[::1]:9/",
            "http://127.3.2.1/",
        ] {
            assert!(check_target(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://example.com/",
            "http://0.0.0.0/",
        ] {
            let err = check_target(bad, false).unwrap_err();
            assert!(err.contains("refusing"), "{bad}: {err}");
            assert!(check_target(bad, true).is_ok(), "{bad}");
        }
        assert!(check_target("https://127.0.0.1/", false).is_err());
        assert!(check_target("not a url", false).is_err());
    }

    #[test]
    fn body_has_the_requested_size() {
        assert_eq!(response_body(0).len(), 0);
        assert_eq!(response_body(32).len(), 32);
        assert_eq!(response_body(1000).len(), 1000);
    }
}
