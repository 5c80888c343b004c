//! A TCP proxy the test controls, to put a backend outage between the server
//! and a real service: `set_up(false)` cuts every open connection and closes
//! new ones at once (as a dead host would), `set_hanging()` stops passing
//! bytes on every open connection and holds new ones unanswered (as a
//! blackholed host would), `set_up(true)` lets them through again.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Hanging,
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

/// Holds `sockets` open, passing nothing, until the mode changes.
async fn hold<T>(sockets: T, mode: &mut watch::Receiver<Mode>) {
    let _held = sockets;
    let _ = mode.changed().await;
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Up);
        let task = tokio::spawn({
            let mode = mode.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let mut rx = mode.subscribe();
                    let now = *rx.borrow_and_update();
                    match now {
                        Mode::Down => drop(client),
                        Mode::Hanging => {
                            tokio::spawn(async move { hold(client, &mut rx).await });
                        }
                        Mode::Up => {
                            tokio::spawn(async move {
                                let Ok(server) = TcpStream::connect(target).await else {
                                    return;
                                };
                                let (mut client, mut server) = (client, server);
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    _ = rx.changed() => {
                                        if *rx.borrow_and_update() == Mode::Hanging {
                                            hold((client, server), &mut rx).await;
                                        }
                                    }
                                }
                            });
                        }
                    }
                }
            }
        });
        Self { addr, mode, task }
    }

    pub fn set_up(&self, up: bool) {
        self.set(if up { Mode::Up } else { Mode::Down });
    }

    pub fn set_hanging(&self) {
        self.set(Mode::Hanging);
    }

    /// Open connections see only a real change: up again while up cuts nothing.
    fn set(&self, new: Mode) {
        self.mode.send_if_modified(|mode| {
            let changed = *mode != new;
            *mode = new;
            changed
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
