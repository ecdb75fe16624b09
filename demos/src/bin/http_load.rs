//! The specification's HTTP load demo (seed section 1.6) as a real program: many GET
//! requests at a fixed concurrency, through a pool, or through the naive
//! "spawn every request, limit with a Semaphore" pattern.
//!
//! Without `--url` it starts a real HTTP/1.1 server (hyper) on 127.0.0.1 on a free port and
//! loads that. It targets loopback addresses only, unless `--allow-remote` is given.
//! `--serve-only` just runs the server, so another load generator (`wrk`) can be pointed
//! at it.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::builder::RangedU64ValueParser;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn;
use hyper::header::{HeaderValue, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nb_aiopool::CommonAioPool;
use nb_aiopool_demos::child::run_self;
use nb_aiopool_demos::live::{want_bar, Live};
use nb_aiopool_demos::memory::{self, EXIT_REFUSED};
use nb_aiopool_demos::report::{table, ResultLine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Estimated bytes one naive request task costs while it waits for its permit: the tokio
/// task with its future (client handle, URI, stats handle, semaphore, the pending acquire)
/// and its `JoinHandle`; measured ~2 KiB on x86-64 Linux, rounded up.
const NAIVE_REQUEST_BYTES: u64 = 3072;

/// Largest `--concurrency`: a million keep-alive connections (the usual ceiling of open
/// files, and more than the ephemeral ports towards one address).
const MAX_CONCURRENCY: u64 = 1_000_000;
/// Largest `--queue-size`.
const MAX_QUEUE_SIZE: u64 = 100_000_000;
/// Largest `--max-seconds` and `--duration-s`: a year.
const MAX_RUN_SECONDS: u64 = 365 * 24 * 3600;
/// Largest `--timeout-ms`: a year.
const MAX_TIMEOUT_MS: u64 = MAX_RUN_SECONDS * 1000;
/// Largest `--monitor-interval-ms`: a day.
const MAX_MONITOR_INTERVAL_MS: u64 = 24 * 3600 * 1000;
/// Largest `--response-bytes`: 1 GiB (one body, shared by every response).
const MAX_RESPONSE_BYTES: u64 = 1 << 30;
/// Largest `--threads`.
const MAX_THREADS: u64 = 1024;

/// `--url`: an `http://` URL with a host and, if it names a port, a port from 1 to 65535
/// (whether the host is allowed is checked later, with `--allow-remote`).
///
/// `Uri` keeps a port it cannot read (`:99999`, `:8o8o`) as text, and its `port_u16()`
/// then says "no port", which the clients read as port 80: such a URL is refused here.
fn parse_url(url: &str) -> Result<String, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        None => return Err("not an http:// URL (such as http://127.0.0.1:8080/)".into()),
        Some(_) => {
            return Err("only http:// is supported (no TLS client in this demo)".into());
        }
    }
    let Some(authority) = uri.authority().filter(|_| uri.host().is_some()) else {
        return Err("the URL has no host".into());
    };
    // What follows the host: `:port`, or nothing (an IPv6 host is in brackets).
    let host_and_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, rest)| rest);
    let after_host = match host_and_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => host_and_port
            .find(':')
            .map_or("", |at| &host_and_port[at..]),
    };
    if let Some(port) = after_host.strip_prefix(':').filter(|p| !p.is_empty()) {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("the port `{port}` is not a port (1 to 65535)")),
        }
    }
    Ok(url.to_string())
}

/// `--duration-s`: a number of seconds above 0, at most a year.
fn parse_duration_s(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!(
            "must be a finite number of seconds above 0 (at most {MAX_RUN_SECONDS}, a year)"
        ));
    }
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())?;
    if duration > Duration::from_secs(MAX_RUN_SECONDS) {
        return Err(format!("at most {MAX_RUN_SECONDS} seconds (a year)"));
    }
    Ok(seconds)
}

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
    #[arg(long, value_parser = parse_url)]
    url: Option<String>,
    /// Number of requests (with `--duration-s`: at most this many; give a large number for
    /// a run that lasts the whole duration).
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Requests in flight at once (also the number of keep-alive connections), 1 to
    /// 1,000,000.
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CONCURRENCY)
    )]
    concurrency: usize,
    /// Send no request after this many seconds (above 0, at most a year; then `--requests`
    /// is only an upper bound), as `wrk -d` does. Requests in flight finish; requests not
    /// sent by then are not counted.
    #[arg(long, value_parser = parse_duration_s)]
    duration_s: Option<f64>,
    /// HTTP client: `conn` (one persistent connection per slot, driven inside the
    /// request), `raw` (a minimal keep-alive HTTP/1.1 client, as `wrk` has) or `legacy`
    /// (hyper-util's pooled `Client`).
    #[arg(long, value_enum, default_value_t = ClientKind::Conn)]
    client: ClientKind,
    /// Tokio runtime of the client: `current` (one thread, as `wrk -t1`) or `multi`.
    #[arg(long, value_enum, default_value_t = Flavor::Current)]
    runtime: Flavor,
    /// Queue size of the pool, at most 100,000,000 [default: the concurrency]; not with
    /// `--mode semaphore`, which has none.
    #[arg(
        long,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_QUEUE_SIZE)
    )]
    queue_size: Option<usize>,
    /// Per-request timeout in milliseconds (connect + response + body), at least 1.
    #[arg(
        long,
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS)
    )]
    timeout_ms: u64,
    /// Stop starting new requests after this many seconds (the rest count as skipped; the
    /// run ends once the requests in flight finish), 1 to a year.
    #[arg(
        long,
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=MAX_RUN_SECONDS)
    )]
    max_seconds: u64,
    /// Allow a target that is not a loopback address. Never point this at a server you
    /// do not own.
    #[arg(long)]
    allow_remote: bool,
    /// Only run the server (on 127.0.0.1) until Ctrl-C or `--serve-seconds`; the client's
    /// flags do not go with it.
    #[arg(long)]
    serve_only: bool,
    /// Port for `--serve-only` (0: a free port, printed on stdout).
    #[arg(long, default_value_t = 0, requires = "serve_only")]
    port: u16,
    /// With `--serve-only`: stop after this many seconds.
    #[arg(long, requires = "serve_only")]
    serve_seconds: Option<u64>,
    /// Size of the built-in server's response body in bytes (at most 1 GiB); not with
    /// `--url`, whose server is not ours.
    #[arg(
        long,
        conflicts_with = "url",
        default_value_t = 32,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_RESPONSE_BYTES)
    )]
    response_bytes: usize,
    /// Worker threads of the multi-thread runtime (and of the server), 1 to 1024
    /// [default: one per core].
    #[arg(
        long,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS)
    )]
    threads: Option<usize>,
    /// Print the process monitor's line every this many milliseconds (0: never; at most a
    /// day).
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(0..=MAX_MONITOR_INTERVAL_MS)
    )]
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
                    nb_aiopool_demos::errln!("server: accept failed: {e}");
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
            nb_aiopool_demos::errln!("error: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    nb_aiopool_demos::outln!("LISTENING {url}");
    nb_aiopool_demos::errln!("serving on {url} (Ctrl-C to stop)");
    match args.serve_seconds {
        Some(s) => tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(s)) => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    nb_aiopool_demos::outln!("SERVED {}", served.summary());
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------
// The client

/// Refuses anything but plain HTTP to a loopback address, unless `allow_remote`. (The
/// command-line parser already rejected what is not an `http://` URL with a host, exit 2;
/// what is left to refuse here, exit 3, is a host that is not loopback.)
fn check_target(url: &str, allow_remote: bool) -> Result<Uri, String> {
    let uri: Uri = parse_url(url)
        .and_then(|url| url.parse().map_err(|e| format!("{e}")))
        .map_err(|e| format!("invalid --url `{url}`: {e}"))?;
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
        nb_aiopool_demos::errln!("raised the open-files limit from {soft} to {target}");
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
    /// Not sent: `--max-seconds` had passed (counted in `requests`).
    skipped: AtomicU64,
    /// Not sent: `--duration-s` had passed when its turn came (not counted in `requests`).
    unsent: AtomicU64,
    errors: [AtomicU64; 5],
    body_bytes: AtomicU64,
    /// Latencies of successful requests, in microseconds.
    latency_us: Mutex<Histogram<u64>>,
}

/// Requests finished (any outcome): the progress bar reads it.
static FINISHED: AtomicU64 = AtomicU64::new(0);

/// The three HTTP clients the demo can drive through the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// One persistent HTTP/1.1 connection per concurrency slot (hyper's `client::conn::http1`),
    /// driven inside the request's own job: no connection task, no per-host pool lookup.
    Conn,
    /// hyper-util's legacy pooled `Client` (keep-alive pool sized to the concurrency; each
    /// connection runs as its own task).
    Legacy,
    /// A minimal HTTP/1.1 keep-alive client written here, as `wrk` has: one connection per
    /// slot, a request prepared once, the response head parsed in place, `Content-Length`
    /// bodies counted and discarded (anything else counts as a body error).
    Raw,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Conn => "conn",
            ClientKind::Legacy => "legacy",
            ClientKind::Raw => "raw",
        }
    }
}

/// Tokio runtime flavour of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flavor {
    /// Current-thread: one thread runs the submitting loop and every request (as `wrk -t1`).
    Current,
    /// Multi-thread (`--threads` workers).
    Multi,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Current => "current",
            Flavor::Multi => "multi",
        }
    }
}

type LegacyClient = Client<HttpConnector, Empty<Bytes>>;

/// The length of a response's body, counted frame by frame as it arrives: nothing is
/// copied or collected. Cancel safe (dropping it drops the body).
async fn body_len<B>(mut body: B) -> Result<usize, ErrorKind>
where
    B: hyper::body::Body + Unpin,
    B::Data: bytes::Buf,
{
    use bytes::Buf;
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ErrorKind::Body)?;
        if let Some(data) = frame.data_ref() {
            len += data.remaining();
        }
    }
    Ok(len)
}

fn legacy_client(concurrency: usize, timeout: Duration) -> LegacyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new())
        // Keep every connection of a full concurrency alive between requests.
        .pool_max_idle_per_host(concurrency)
        .build(connector)
}

type Http1Connection = conn::http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>;

/// One keep-alive HTTP/1.1 connection: the request half and the connection's I/O half,
/// which whoever uses the connection polls (no task of its own).
struct KeptConnection {
    sender: conn::http1::SendRequest<Empty<Bytes>>,
    io: Pin<Box<Http1Connection>>,
}

impl KeptConnection {
    /// One GET on this connection; the number of body bytes, and whether the connection
    /// can be used again (only after `Ok`, and not once the server has closed it).
    async fn get(&mut self, path: &Uri, host: &HeaderValue) -> Result<(usize, bool), ErrorKind> {
        let Self { sender, io } = self;
        let exchange = async {
            sender.ready().await.map_err(|_| ErrorKind::Request)?;
            let mut request = Request::new(Empty::new());
            *request.uri_mut() = path.clone();
            request.headers_mut().insert(HOST, host.clone());
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| ErrorKind::Request)?;
            let status = response.status();
            let len = body_len(response.into_body()).await?;
            if status.is_success() {
                Ok(len)
            } else {
                Err(ErrorKind::Status)
            }
        };
        let mut exchange = std::pin::pin!(exchange);
        tokio::select! {
            // The connection's I/O first, so a response it reads is seen in the same poll.
            biased;
            // It ends when the connection closes or fails. A server without keep-alive
            // (HTTP/1.0, `Connection: close`) closes it right after its response, which
            // the I/O has then read whole and handed over: the exchange completes with it
            // in one more poll (unconstrained: tokio's cooperative budget must not make a
            // ready response look pending). Anything else is lost with the connection:
            // the exchange cannot progress without the I/O (awaiting it could hang until
            // the timeout). Either way the connection is not used again.
            _ = io.as_mut() => {
                let mut rest = tokio::task::unconstrained(exchange.as_mut());
                tokio::select! {
                    biased;
                    outcome = &mut rest => outcome.map(|len| (len, false)),
                    () = std::future::ready(()) => Err(ErrorKind::Request),
                }
            }
            outcome = &mut exchange => outcome.map(|len| (len, true)),
        }
    }
}

/// Keep-alive connections to one server, at most one per concurrency slot: a request takes
/// an idle one (or opens one), and puts it back when its exchange succeeded.
struct KeptConnections {
    addr: SocketAddr,
    /// Origin-form target (`/path?query`) of every request.
    path: Uri,
    host: HeaderValue,
    idle: Mutex<Vec<KeptConnection>>,
    opened: AtomicU64,
}

/// The address every connection of a run goes to: the first of `addrs` that accepts a
/// connection, tried in order (as `curl` does), when there are several (`localhost` may
/// resolve to `::1` first while the server listens on 127.0.0.1 only); otherwise, or if
/// none accepts, the first (its connections then fail and are counted so). Each probe
/// waits at most `within` (`--timeout-ms`, as a request's connect would): an address that
/// never answers (a dropped SYN) does not hold the run for the kernel's connect timeout.
/// The probe's connection is closed at once; with one address none is made, so a server's
/// count of connections stays the run's own.
async fn reachable(addrs: &[SocketAddr], within: Duration) -> Option<SocketAddr> {
    if addrs.len() > 1 {
        for &addr in addrs {
            if let Ok(Ok(_)) = tokio::time::timeout(within, TcpStream::connect(addr)).await {
                return Some(addr);
            }
        }
    }
    addrs.first().copied()
}

impl KeptConnections {
    async fn new(uri: &Uri, concurrency: usize, timeout: Duration) -> Result<Self, String> {
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{uri}` has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
            .collect();
        let addr = reachable(&addrs, timeout)
            .await
            .ok_or_else(|| format!("`{authority}` resolves to no address"))?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| format!("bad path in `{uri}`: {e}"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("bad host in `{uri}`: {e}"))?;
        Ok(Self {
            addr,
            path,
            host,
            idle: Mutex::new(Vec::with_capacity(concurrency)),
            opened: AtomicU64::new(0),
        })
    }

    async fn connect(&self) -> Result<KeptConnection, ErrorKind> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, io) = conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Relaxed: a statistic.
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(KeptConnection {
            sender,
            io: Box::pin(io),
        })
    }

    async fn get(&self) -> Result<usize, ErrorKind> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut connection = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        // On an error (or a timeout, which drops this future) the connection is closed;
        // the next request opens a new one.
        let (len, reusable) = connection.get(&self.path, &self.host).await?;
        if reusable {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(connection);
        }
        Ok(len)
    }
}

/// Where `target` first occurs in `haystack`.
fn find(haystack: &[u8], target: &[u8]) -> Option<usize> {
    haystack.windows(target.len()).position(|w| w == target)
}

/// What a response head says: the status and how long the body is.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
    close: bool,
}

/// Parses an HTTP/1.x response head (without its final blank line). Only bodies framed by
/// `Content-Length` (or none, for 1xx/204/304) are supported.
fn parse_head(head: &[u8]) -> Result<Head, ErrorKind> {
    let text = std::str::from_utf8(head).map_err(|_| ErrorKind::Body)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") {
        return Err(ErrorKind::Body);
    }
    let status: u16 = status_line
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or(ErrorKind::Body)?;
    let mut content_length = None;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ErrorKind::Body)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| ErrorKind::Body)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ErrorKind::Body);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let bodiless = status < 200 || status == 204 || status == 304;
    let content_length = match content_length {
        _ if bodiless => 0,
        Some(n) => n,
        None => return Err(ErrorKind::Body),
    };
    Ok(Head {
        status,
        content_length,
        close,
    })
}

/// One keep-alive connection of the raw client, with its read buffer.
struct RawConnection {
    stream: TcpStream,
    buf: Box<[u8]>,
}

impl RawConnection {
    /// Reads more bytes into `buf[filled..]`; a closed connection is an error.
    async fn fill(&mut self, filled: usize) -> Result<usize, ErrorKind> {
        match self.stream.read(&mut self.buf[filled..]).await {
            Ok(0) | Err(_) => Err(ErrorKind::Request),
            Ok(n) => Ok(n),
        }
    }

    /// One request; the body length and whether the connection can be used again.
    async fn exchange(&mut self, request: &[u8]) -> Result<(usize, bool), ErrorKind> {
        self.stream
            .write_all(request)
            .await
            .map_err(|_| ErrorKind::Request)?;
        let mut filled = 0;
        let (head, body_start) = loop {
            if filled == self.buf.len() {
                return Err(ErrorKind::Body); // a head longer than the buffer
            }
            let searched = filled.saturating_sub(3);
            filled += self.fill(filled).await?;
            if let Some(at) = find(&self.buf[searched..filled], b"\r\n\r\n") {
                let end = searched + at;
                break (parse_head(&self.buf[..end])?, end + 4);
            }
        };
        // Count the body and throw it away.
        let mut body = filled - body_start;
        while body < head.content_length {
            body += self.fill(0).await?;
        }
        if body > head.content_length {
            return Err(ErrorKind::Body); // more than announced: nothing was pipelined
        }
        if !(200..300).contains(&head.status) {
            return Err(ErrorKind::Status);
        }
        Ok((body, !head.close))
    }
}

/// The raw client's connections: as `KeptConnections`, with the request bytes built once.
struct RawConnections {
    addr: SocketAddr,
    request: Box<[u8]>,
    idle: Mutex<Vec<RawConnection>>,
    opened: AtomicU64,
}

impl RawConnections {
    async fn new(uri: &Uri, concurrency: usize, timeout: Duration) -> Result<Self, String> {
        let kept = KeptConnections::new(uri, 0, timeout).await?;
        let host = kept.host.to_str().map_err(|e| format!("bad host: {e}"))?;
        let request = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", kept.path);
        Ok(Self {
            addr: kept.addr,
            request: request.into_bytes().into_boxed_slice(),
            idle: Mutex::new(Vec::with_capacity(concurrency)),
            opened: AtomicU64::new(0),
        })
    }

    async fn get(&self) -> Result<usize, ErrorKind> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut connection = match idle {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .map_err(|_| ErrorKind::Connect)?;
                let _ = stream.set_nodelay(true);
                self.opened.fetch_add(1, Ordering::Relaxed);
                RawConnection {
                    stream,
                    buf: vec![0; 8192].into_boxed_slice(),
                }
            }
        };
        // On an error (or a timeout) the connection is dropped, hence closed.
        let (len, reusable) = connection.exchange(&self.request).await?;
        if reusable {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(connection);
        }
        Ok(len)
    }
}

enum HttpClient {
    Conn(KeptConnections),
    /// The client, the target, and the client-side addresses of the connections that
    /// carried a response (hyper-util attaches them to each response as `HttpInfo`).
    Legacy(LegacyClient, Uri, Mutex<HashSet<SocketAddr>>),
    Raw(RawConnections),
}

impl HttpClient {
    async fn get(&self) -> Result<usize, ErrorKind> {
        match self {
            HttpClient::Conn(connections) => connections.get().await,
            HttpClient::Raw(connections) => connections.get().await,
            HttpClient::Legacy(client, uri, seen) => {
                let response = client.get(uri.clone()).await.map_err(|e| {
                    if e.is_connect() {
                        ErrorKind::Connect
                    } else {
                        ErrorKind::Request
                    }
                })?;
                if let Some(info) = response.extensions().get::<HttpInfo>() {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(info.local_addr());
                }
                let status = response.status();
                // Counted as the other clients do; collecting it held every body whole
                // (concurrency x --response-bytes).
                let len = body_len(response.into_body()).await?;
                if status.is_success() {
                    Ok(len)
                } else {
                    Err(ErrorKind::Status)
                }
            }
        }
    }

    /// Connections this client opened. The legacy client does not say: for it, the
    /// connections that carried at least one response (told apart by their local address).
    fn opened(&self) -> u64 {
        match self {
            HttpClient::Conn(c) => c.opened.load(Ordering::Relaxed),
            HttpClient::Raw(c) => c.opened.load(Ordering::Relaxed),
            HttpClient::Legacy(_, _, seen) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
            }
        }
    }
}

/// When requests stop being sent.
#[derive(Clone, Copy)]
struct Limits {
    /// `--max-seconds`: later requests are skipped.
    deadline: Instant,
    /// `--duration-s`: later requests are not sent (nor counted).
    stop: Option<Instant>,
}

/// One GET: time it, read the whole body, count the outcome.
async fn request(client: Arc<HttpClient>, timeout: Duration, limits: Limits, stats: Arc<Stats>) {
    // Relaxed everywhere: statistics, read after every request has been awaited.
    let start = Instant::now();
    // Checked here, not only in the submitting loop: a request waiting in the pool's queue
    // or for a semaphore permit may get its turn after the end.
    if limits.stop.is_some_and(|stop| start >= stop) {
        stats.unsent.fetch_add(1, Ordering::Relaxed);
        FINISHED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if start >= limits.deadline {
        stats.skipped.fetch_add(1, Ordering::Relaxed);
        FINISHED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let outcome = match tokio::time::timeout_at((start + timeout).into(), client.get()).await {
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

/// Sends the requests; returns how many were started (submitted or spawned) and the
/// connections the client opened.
async fn load(mode: Mode, args: &Args, uri: Uri, stats: Arc<Stats>) -> Result<(u64, u64), String> {
    // The parser bounds these (a year at most), so the sums below cannot overflow `Instant`;
    // checked all the same.
    let timeout = Duration::from_millis(args.timeout_ms);
    let start = Instant::now();
    let after = |d: Duration| {
        start
            .checked_add(d)
            .ok_or_else(|| format!("{d:?} from now is past what the clock can represent"))
    };
    let deadline = after(Duration::from_secs(args.max_seconds))?;
    // With --duration-s: no new request after it (the ones in flight finish).
    let stop = match args.duration_s {
        Some(s) => Some(after(
            Duration::try_from_secs_f64(s).map_err(|e| format!("--duration-s {s}: {e}"))?,
        )?),
        None => None,
    };
    let limits = Limits { deadline, stop };
    // Whether the submitting loop ends before request `started`: at --duration-s, or at
    // --max-seconds (then the requests not submitted are skipped, below). The loop reads
    // the clock every 64 requests only; each request reads it too.
    let mut past_deadline = false;
    let mut ended = |started: u64| {
        if !started.is_multiple_of(64) {
            return false;
        }
        let now = Instant::now();
        if stop.is_some_and(|t| now >= t) {
            return true;
        }
        past_deadline = now >= deadline;
        past_deadline
    };
    let client = Arc::new(match args.client {
        ClientKind::Conn => {
            HttpClient::Conn(KeptConnections::new(&uri, args.concurrency, timeout).await?)
        }
        ClientKind::Legacy => HttpClient::Legacy(
            legacy_client(args.concurrency, timeout),
            uri,
            Mutex::new(HashSet::new()),
        ),
        ClientKind::Raw => {
            HttpClient::Raw(RawConnections::new(&uri, args.concurrency, timeout).await?)
        }
    });
    let mut started = 0;
    match mode {
        Mode::Pool => {
            let pool = CommonAioPool::new(
                args.concurrency,
                args.queue_size.unwrap_or(args.concurrency),
            );
            while started < args.requests && !ended(started) {
                let job = request(client.clone(), timeout, limits, stats.clone());
                // Backpressure: waits while the pool is full. The handle is detached; the
                // request still runs.
                pool.submit(job)
                    .await
                    .map_err(|e| format!("submit failed: {e}"))?
                    .detach();
                started += 1;
            }
            pool.shutdown().await;
        }
        Mode::Semaphore => {
            // The seed's naive version: every request becomes a task now.
            let semaphore = Arc::new(Semaphore::new(args.concurrency));
            let mut tasks = Vec::new();
            while started < args.requests && !ended(started) {
                let job = request(client.clone(), timeout, limits, stats.clone());
                let semaphore = semaphore.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = semaphore.acquire().await.expect("never closed");
                    job.await
                }));
                started += 1;
                // With --duration-s, let the spawned requests run while the spawning goes
                // on: on the current-thread runtime none runs before this loop yields, so
                // they would all get their turn after the end, and none would be sent.
                if stop.is_some() && started.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            for task in tasks {
                task.await
                    .map_err(|e| format!("request task failed: {e}"))?;
            }
        }
        Mode::Compare => unreachable!("compare runs children"),
    }
    if past_deadline {
        // No new request after --max-seconds: the rest are skipped at once, not one job
        // (or task) each, which made the run last as long as skipping them all took.
        let rest = args.requests - started;
        stats.skipped.fetch_add(rest, Ordering::Relaxed);
        FINISHED.fetch_add(rest, Ordering::Relaxed);
        started = args.requests;
    }
    Ok((started, client.opened()))
}

fn build_runtime(
    flavor: Flavor,
    threads: Option<usize>,
) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = match flavor {
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread(),
    };
    if let (Flavor::Multi, Some(t)) = (flavor, threads) {
        builder.worker_threads(t);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the tokio runtime: {e}"))
}

fn run_one(mode: Mode, args: &Args) -> ExitCode {
    let fail = |message: String| {
        nb_aiopool_demos::errln!("error: {message}");
        ExitCode::FAILURE
    };
    if let Some(url) = &args.url {
        if let Err(message) = check_target(url, args.allow_remote) {
            nb_aiopool_demos::errln!("{message}");
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
            nb_aiopool_demos::errln!("{message}");
            return ExitCode::from(EXIT_REFUSED as u8);
        }
    }
    // Client sockets, plus the server's side when it runs in this process. The client can
    // hold more connections than requests in flight for a moment (a connect started for a
    // request that then got a returned idle connection is kept), so count two per slot.
    let sockets = (args.concurrency as u64)
        .saturating_mul(if args.url.is_none() { 4 } else { 2 })
        .saturating_add(64);
    if let Err(message) = ensure_fd_limit(sockets) {
        return fail(message);
    }
    let runtime = match build_runtime(args.runtime, args.threads) {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    // The in-process server gets a multi-thread runtime of its own, never the client's.
    let server_runtime = match args.url {
        Some(_) => None,
        None => match build_runtime(Flavor::Multi, args.threads) {
            Ok(rt) => Some(rt),
            Err(e) => return fail(e),
        },
    };
    let (url, served) = match (&args.url, &server_runtime) {
        (Some(url), _) => (url.clone(), None),
        (None, None) => unreachable!("a server runtime without --url"),
        (None, Some(server)) => match server.block_on(start_server(0, args.response_bytes)) {
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
        "{}: {} GET {url} at concurrency {} ({} client, {} runtime){}",
        mode.name(),
        match args.duration_s {
            Some(s) => format!("up to {} over {s} s:", args.requests),
            None => args.requests.to_string(),
        },
        args.concurrency,
        args.client.name(),
        args.runtime.name(),
        if served.is_some() {
            " (server in this process)"
        } else {
            ""
        }
    ));

    let stats = Arc::new(Stats {
        ok: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        unsent: AtomicU64::new(0),
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
    drop(server_runtime);
    let (started, opened) = match outcome {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let (Some(base), Some(last)) = (base, last) else {
        return fail("the process monitor gave no reading".into());
    };

    let ok = stats.ok.load(Ordering::Relaxed);
    let skipped = stats.skipped.load(Ordering::Relaxed);
    let unsent = stats.unsent.load(Ordering::Relaxed);
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
    // Requests whose turn came after --duration-s were never sent: not counted.
    line.push("requests", started.saturating_sub(unsent))
        .push("ok", ok)
        .push("errors", total_errors);
    for ((_, name), count) in ERROR_KINDS.iter().zip(&errors) {
        line.push(&format!("err_{name}"), count);
    }
    line.push("skipped", skipped)
        .push("concurrency", args.concurrency)
        .push("client", args.client.name())
        .push("runtime", args.runtime.name())
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
        // CPU of the whole client process (startup included) per finished request.
        .push(
            "cpu_us_per_req",
            format!(
                "{:.1}",
                last.cpu_seconds * 1e6 / (ok + total_errors).max(1) as f64
            ),
        )
        .push(
            "server",
            if served.is_some() {
                "in-process"
            } else {
                "external"
            },
        );
    line.push("client_connections", opened);
    if let Some(served) = &served {
        line.push(
            "server_connections",
            served.connections.load(Ordering::Relaxed),
        );
    }
    nb_aiopool_demos::outln!("{line}");
    if total_errors > 0 {
        nb_aiopool_demos::errln!(
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
    let accounted = ok + total_errors + skipped + unsent;
    if accounted != started {
        return fail(format!(
            "{} requests unaccounted for",
            started.abs_diff(accounted)
        ));
    }
    if ok == 0 && args.requests > 0 {
        // Nothing was measured: every request failed, was skipped or was never sent.
        return fail(format!(
            "no request succeeded ({total_errors} failed, {skipped} skipped after \
             --max-seconds, {unsent} not sent before --duration-s ended)"
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
        format!("--client={}", args.client.name()),
        format!("--runtime={}", args.runtime.name()),
    ];
    if let Some(s) = args.duration_s {
        v.push(format!("--duration-s={s}"));
    }
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
    // Only the pool has a queue (the semaphore mode refuses the flag).
    if let (Some(q), Mode::Pool) = (args.queue_size, mode) {
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
            nb_aiopool_demos::errln!("{message}");
            return ExitCode::from(EXIT_REFUSED as u8);
        }
    }
    if let Err(message) = ensure_fd_limit(2 * args.concurrency as u64 + 64) {
        nb_aiopool_demos::errln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let runtime = match build_runtime(Flavor::Multi, args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            nb_aiopool_demos::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One server, in this process, for both children: their peak memory is the client's.
    let (url, served) = match &args.url {
        Some(url) => (url.clone(), None),
        None => match runtime.block_on(start_server(0, args.response_bytes)) {
            Ok((url, served)) => (url, Some(served)),
            Err(e) => {
                nb_aiopool_demos::errln!("error: cannot start the server: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    nb_aiopool_demos::errln!(
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
        nb_aiopool_demos::errln!();
        let child = child_args(mode, args, &url);
        let run = match runtime
            .block_on(async { tokio::task::spawn_blocking(move || run_self(&child)).await })
        {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => {
                nb_aiopool_demos::errln!("error: cannot start the {} child: {e}", mode.name());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                nb_aiopool_demos::errln!("error: {e}");
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
        nb_aiopool_demos::errln!("server: {}", served.summary());
    }
    drop(runtime);

    nb_aiopool_demos::outln!(
        "\nhttp_load: {} requests at concurrency {} (client processes only; latency in ms)",
        args.requests,
        args.concurrency
    );
    nb_aiopool_demos::out!(
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
        nb_aiopool_demos::outln!("peak RSS: semaphore / pool = {:.1}x", naive / pool);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Parses the command line; what clap's attributes cannot say is checked here, with the
/// same kind of message and exit code (2).
fn parse_args() -> Args {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let usage = |message: &str| -> ! {
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit()
    };
    if args.serve_only {
        // (Not clap's `conflicts_with`: an argument that conflicts with one given is no
        // longer required, which would undo `--port`'s `requires = "serve_only"`.)
        for id in CLIENT_ONLY {
            if matches.value_source(id) == Some(ValueSource::CommandLine) {
                usage(&format!(
                    "--serve-only runs the server alone; --{} is the load client's",
                    id.replace('_', "-")
                ));
            }
        }
    }
    if args.mode == Mode::Semaphore && args.queue_size.is_some() {
        usage("--queue-size sizes the pool's queue; --mode semaphore has none");
    }
    args
}

/// The flags of the load client (their `Args` field names), refused with `--serve-only`.
const CLIENT_ONLY: [&str; 12] = [
    "mode",
    "url",
    "requests",
    "concurrency",
    "duration_s",
    "client",
    "runtime",
    "queue_size",
    "timeout_ms",
    "max_seconds",
    "allow_remote",
    "i_know_it_may_exhaust_memory",
];

fn main() -> ExitCode {
    let args = parse_args();
    if args.serve_only {
        return match build_runtime(Flavor::Multi, args.threads) {
            Ok(rt) => rt.block_on(serve_only(&args)),
            Err(e) => {
                nb_aiopool_demos::errln!("error: {e}");
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

    /// `localhost` resolving to `::1` first while the server listens on 127.0.0.1 only
    /// (finding 233): the run goes to the address that accepts, not the first.
    #[tokio::test]
    async fn the_first_address_that_accepts_is_used() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = closed.local_addr().unwrap();
        drop(closed);
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listening = open.local_addr().unwrap();
        assert_eq!(
            reachable(&[refused, listening], Duration::from_secs(10)).await,
            Some(listening)
        );
        assert_eq!(
            reachable(&[listening, refused], Duration::from_secs(10)).await,
            Some(listening)
        );
        assert_eq!(
            reachable(&[refused], Duration::from_secs(10)).await,
            Some(refused),
            "one address: no probe"
        );
        assert_eq!(reachable(&[], Duration::from_secs(10)).await, None);
    }

    /// Finding 248. The address probe had no deadline: a first address that never answers (a dropped
    /// SYN: a filtered port, or here a listener whose accept queue is full) held the run
    /// for the kernel's connect timeout (about two minutes), whatever `--timeout-ms`.
    #[tokio::test]
    async fn an_address_that_never_answers_does_not_hold_the_probe() {
        // Backlog 0 and one connection never accepted: the queue is full, later SYNs dropped.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let silent = socket.listen(0).unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let _filler = TcpStream::connect(silent_addr).await.unwrap();
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listening = open.local_addr().unwrap();
        let probed = tokio::time::timeout(
            Duration::from_secs(10),
            reachable(&[silent_addr, listening], Duration::from_millis(500)),
        )
        .await;
        assert_eq!(
            probed,
            Ok(Some(listening)),
            "the probe waited on the address that never answers"
        );
    }

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
    fn url_and_duration_are_checked_when_parsed() {
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        for ok in [
            "http://127.0.0.1:65535/",
            "http://127.0.0.1:/",
            "http://[::1]:8080/",
            "http://[::1]/",
            "http://user:pw@localhost:8000/",
        ] {
            assert!(parse_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "not a url",
            "https://127.0.0.1/",
            "/just/a/path",
            "",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:65536/",
            "http://[::1]:99999/",
            "http://127.0.0.1:8o8o/",
            "http://user:pw@localhost:99999/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_s("0.5"), Ok(0.5));
        assert!(parse_duration_s("31536000").is_ok());
        for bad in ["0", "-5", "NaN", "inf", "1e30", "31536001", "ten"] {
            assert!(parse_duration_s(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_response_heads() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 32\r\ndate: x").unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                content_length: 32,
                close: false
            }
        );
        let head = parse_head(b"HTTP/1.1 204 No Content\r\nConnection: close").unwrap();
        assert_eq!(
            (head.status, head.content_length, head.close),
            (204, 0, true)
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK").is_err(), "no framing");
        assert!(parse_head(b"SSH-2.0").is_err());
        assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
    }

    #[test]
    fn body_has_the_requested_size() {
        assert_eq!(response_body(0).len(), 0);
        assert_eq!(response_body(32).len(), 32);
        assert_eq!(response_body(1000).len(), 1000);
    }
}
