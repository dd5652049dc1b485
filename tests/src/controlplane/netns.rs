//! Reaching a network namespace from the root namespace: run code on a thread that has joined it
//! ([`in_netns`]), or forward a root-namespace loopback port into it ([`Forwarder`]).
//!
//! A network namespace is a per-thread property in Linux: `setns(CLONE_NEWNET)` moves only the
//! calling thread, sockets remember the namespace they were created in, and threads spawned later
//! inherit it. So a dedicated thread is enough; the rest of the process stays where it is.

use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use anyhow::Context;

/// Moves the calling thread into the network namespace `/run/netns/<name>` (as made by
/// `ip netns add`).
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = PathBuf::from("/run/netns").join(name);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns only reads the fd, which `file` keeps open for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setns into {} (needs root)", path.display()));
    }
    Ok(())
}

/// Runs `work` on a new OS thread inside network namespace `name` and returns its result.
/// Sockets it creates (and threads or tokio runtimes it starts) live in that namespace, e.g.
/// `in_netns("flb-cp", || tokio::runtime::Runtime::new()?.block_on(async { ... }))`.
pub fn in_netns<T, F>(name: &str, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let name = name.to_owned();
    let thread_name = format!("netns-{name}");
    thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            enter_netns(&name)?;
            work()
        })
        .context("spawning netns thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the thread running in netns panicked"))?
}

/// A TCP forwarder from `127.0.0.1:<port>` in the caller's namespace to `target` inside a
/// network namespace. Each accepted connection gets a thread that enters the namespace, connects,
/// and copies both directions. Stops accepting when dropped.
#[derive(Debug)]
pub struct Forwarder {
    local: SocketAddr,
    stopped: Arc<AtomicBool>,
}

impl Forwarder {
    pub fn start(netns: &str, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding forwarder port")?;
        let local = listener.local_addr()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let netns = netns.to_owned();
        let stop_flag = Arc::clone(&stopped);
        thread::Builder::new()
            .name(format!("forward-{local}"))
            .spawn(move || {
                for incoming in listener.incoming() {
                    if stop_flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = incoming else { continue };
                    let netns = netns.clone();
                    let _ = thread::Builder::new().spawn(move || {
                        if let Err(error) = forward_one(&netns, target, client) {
                            tracing::debug!(%error, "forwarder connection failed");
                        }
                    });
                }
            })
            .context("spawning forwarder thread")?;
        Ok(Forwarder { local, stopped })
    }

    /// The root-namespace address to dial instead of the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.local);
    }
}

fn forward_one(netns: &str, target: SocketAddr, client: TcpStream) -> anyhow::Result<()> {
    enter_netns(netns)?;
    let upstream =
        TcpStream::connect(target).with_context(|| format!("connecting {target} in {netns}"))?;
    let (mut client_read, mut upstream_write) = (client.try_clone()?, upstream.try_clone()?);
    let upload = thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = upload.join();
    Ok(())
}
