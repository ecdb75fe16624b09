//! A TCP proxy between a worker and its `redis-server` that forwards every byte but can
//! lose, hold back or slow down chosen calls: how the acker tests make a call's reply
//! come too late, or a call go missing, while Redis answers everything else.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the proxy does with one call (a RESP array of bulk strings, the arguments).
pub enum OnCall {
    /// Passed on as it is.
    Forward,
    /// Passed on at once (Redis applies it), its reply delivered this long after the
    /// call arrived; as replies come in order on a connection, so is every reply behind.
    LateReply(Duration),
    /// Not passed on until the flag is set (with the calls behind it on its connection).
    HoldUntil(Arc<std::sync::atomic::AtomicBool>),
    /// Lost: not passed on, and its connection closed (both ways).
    Close,
}

/// The arguments of the RESP array of bulk strings starting at `at`, and its end, if
/// `buf` holds all of it (the calls a client sends).
fn call_at(buf: &[u8], at: usize) -> Option<(Vec<&[u8]>, usize)> {
    let (items, mut next) = header(buf, at, b'*')?;
    let mut args = Vec::new();
    for _ in 0..items {
        let (len, from) = header(buf, next, b'$')?;
        let end = from + len as usize;
        if buf.len() < end + 2 {
            return None;
        }
        args.push(&buf[from..end]);
        next = end + 2;
    }
    Some((args, next))
}

/// The number in the RESP line starting at `at` (of type `kind`), and where the line ends.
fn header(buf: &[u8], at: usize, kind: u8) -> Option<(i64, usize)> {
    let cr = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    assert_eq!(buf[at], kind, "unexpected RESP type {:?}", buf[at] as char);
    let n = std::str::from_utf8(&buf[at + 1..cr]).ok()?.parse().ok()?;
    Some((n, cr + 2))
}

/// The end of the RESP reply starting at `at`, if `buf` holds all of it.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    let cr = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let next = cr + 2;
    let n = || {
        std::str::from_utf8(&buf[at + 1..cr])
            .expect("RESP header")
            .parse::<i64>()
            .expect("RESP length")
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
        b'$' | b'!' | b'=' => {
            if n() < 0 {
                return Some(next);
            }
            let end = next + n() as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let items = if kind == b'%' { n() * 2 } else { n() };
            let mut end = next;
            for _ in 0..items.max(0) {
                end = reply_end(buf, end)?;
            }
            Some(end)
        }
        other => panic!("unexpected RESP type {:?}", other as char),
    }
}

/// A proxy to the `redis-server` at `port` that asks `on_call` what to do with each call
/// of each connection (in order). Returns its URL.
pub async fn proxy(
    port: u16,
    on_call: impl Fn(&[&[u8]]) -> OnCall + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let on_call = Arc::new(on_call);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (mut c_rd, mut c_wr) = client.into_split();
            let (mut s_rd, mut s_wr) = server.into_split();
            // One entry per call passed on, in order: when its reply may be delivered.
            let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Option<tokio::time::Instant>>();
            let on_call = Arc::clone(&on_call);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match c_rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut start = 0;
                    while let Some((args, end)) = call_at(&buf, start) {
                        let due = match on_call(&args) {
                            OnCall::Forward => None,
                            OnCall::LateReply(by) => Some(tokio::time::Instant::now() + by),
                            OnCall::HoldUntil(flag) => {
                                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(2)).await;
                                }
                                None
                            }
                            OnCall::Close => return,
                        };
                        // Known before the server can answer it.
                        let _ = due_tx.send(due);
                        if s_wr.write_all(&buf[start..end]).await.is_err() {
                            return;
                        }
                        start = end;
                    }
                    buf.drain(..start);
                }
            });
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match s_rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut start = 0;
                    while let Some(end) = reply_end(&buf, start) {
                        if let Some(Some(due)) = due_rx.recv().await {
                            tokio::time::sleep_until(due).await;
                        }
                        if c_wr.write_all(&buf[start..end]).await.is_err() {
                            return;
                        }
                        start = end;
                    }
                    buf.drain(..start);
                }
            });
        }
    });
    url
}
