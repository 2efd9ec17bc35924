//! TCP channels: one I/O thread per connection writes queued frames, so `send` never
//! blocks on the peer and `exchange` is full duplex.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::frame::{DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, header, read_frame};
use crate::shaping::{LinkClock, NetworkProfile};
use zeroize::Zeroize;

use crate::{Channel, ChannelStats, Error, Result};

/// Options for a TCP channel.
#[derive(Clone, Copy, Debug)]
pub struct TcpOptions {
    /// The cap on one received frame's payload.
    pub max_frame_bytes: usize,
    /// How long a receive waits for the peer before failing.
    pub read_timeout: Duration,
    /// The simulated network applied to received frames.
    pub profile: NetworkProfile,
    /// The most bytes of frames `send` queues for a peer that has not taken them yet; `send` waits (up to the read timeout) beyond it. `None`: unbounded, as
    /// the full-duplex links between the two computing parties need. One frame larger
    /// than the bound is let through when nothing else is queued.
    pub send_queue_bytes: Option<usize>,
    /// How long connecting and the TLS handshake may take. A peer that has not finished
    /// the handshake by then (it sent nothing, or stalled half-way) is disconnected: its
    /// socket is closed and the connection's I/O thread ends.
    pub handshake_timeout: Duration,
    /// TCP keepalive: the idle time before the first probe (`None`: off). A peer whose
    /// machine vanished without closing the connection is then detected by the kernel
    /// (after the probes fail) instead of holding the socket forever.
    pub keepalive: Option<Duration>,
}

/// With [`TcpOptions::send_queue_bytes`] set: waits until `frame_bytes` more fit beside
/// the `sending` bytes a connection's writer has not taken yet (a frame alone always
/// fits), up to the read timeout. Shared by the TCP and the TLS channel.
pub(crate) fn wait_for_send_room(
    sending: &std::sync::atomic::AtomicUsize,
    frame_bytes: usize,
    options: &TcpOptions,
) -> Result<()> {
    let Some(limit) = options.send_queue_bytes else {
        return Ok(());
    };
    let deadline = Instant::now() + options.read_timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        let waiting = sending.load(std::sync::atomic::Ordering::Acquire);
        if waiting == 0 || waiting + frame_bytes <= limit {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                seconds: options.read_timeout.as_secs(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// The default [`TcpOptions::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`TcpOptions::keepalive`] idle time.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            read_timeout: Duration::from_secs(60),
            profile: NetworkProfile::Local,
            send_queue_bytes: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive: Some(DEFAULT_KEEPALIVE_IDLE),
        }
    }
}

/// Turns on TCP keepalive on `stream` as `options` ask: probes after the idle time, then
/// every 10 s, 6 probes.
pub(crate) fn configure_keepalive(stream: &TcpStream, options: &TcpOptions) -> Result<()> {
    let Some(idle) = options.keepalive else {
        return Ok(());
    };
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10));
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let keepalive = keepalive.with_retries(6);
    socket2::SockRef::from(stream)
        .set_tcp_keepalive(&keepalive)
        .map_err(|source| Error::Io {
            context: "turning on TCP keepalive",
            source,
        })
}

/// Connects to the first address `address` resolves to that answers within `timeout`.
pub(crate) fn connect_within(address: &str, timeout: Duration) -> Result<TcpStream> {
    let io_error = |source| Error::Io {
        context: "connecting to the peer",
        source,
    };
    let mut last = None;
    for resolved in address.to_socket_addrs().map_err(|source| Error::Io {
        context: "resolving the address",
        source,
    })? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(io_error(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolved to nothing",
        )
    })))
}

fn refuse_non_loopback(address: &SocketAddr) -> Result<()> {
    if address.ip().is_loopback() {
        Ok(())
    } else {
        Err(Error::InsecureNonLoopback {
            address: address.to_string(),
        })
    }
}

fn resolve(address: &str) -> Result<Vec<SocketAddr>> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|source| Error::Io {
            context: "resolving the address",
            source,
        })?
        .collect();
    for resolved in &addresses {
        refuse_non_loopback(resolved)?;
    }
    Ok(addresses)
}

/// Binds a plain-TCP listener. Refuses any address that is not loopback: plain TCP
/// carries no authentication and exists for local testing only.
pub fn dangerous_listen_insecure(address: &str) -> Result<TcpListener> {
    let addresses = resolve(address)?;
    TcpListener::bind(addresses.as_slice()).map_err(|source| Error::Io {
        context: "binding the listener",
        source,
    })
}

/// Where received frames come from: the socket itself, or (when shaped) a reader thread
/// that stamps each frame's arrival.
enum Incoming {
    Direct(BufReader<TcpStream>),
    Shaped {
        frames: Receiver<Result<(Instant, Vec<u8>)>>,
        clock: LinkClock,
        _reader: JoinHandle<()>,
    },
}

/// A framed TCP connection with a writer thread (and a reader thread when shaped).
pub struct TcpChannel {
    incoming: Incoming,
    stream: TcpStream,
    outgoing: Option<Sender<Vec<u8>>>,
    /// Bytes of the frames queued and not yet written by the writer thread.
    sending: Arc<AtomicUsize>,
    writer: Option<JoinHandle<()>>,
    writer_error: Arc<Mutex<Option<String>>>,
    stats: ChannelStats,
    options: TcpOptions,
}

impl std::fmt::Debug for TcpChannel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TcpChannel")
            .field("peer", &self.stream.peer_addr().ok())
            .field("stats", &self.stats)
            .finish()
    }
}

impl TcpChannel {
    /// Connects with plain TCP to a loopback address (refuses any other).
    pub fn dangerous_connect_insecure(address: &str, options: TcpOptions) -> Result<Self> {
        let addresses = resolve(address)?;
        let mut last = None;
        for resolved in addresses {
            match TcpStream::connect_timeout(&resolved, options.handshake_timeout) {
                Ok(stream) => return Self::from_stream(stream, options),
                Err(error) => last = Some(error),
            }
        }
        Err(Error::Io {
            context: "connecting to the peer",
            source: last.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the address resolved to nothing",
                )
            }),
        })
    }

    /// Accepts one plain-TCP connection on a listener made by
    /// [`dangerous_listen_insecure`]; refuses a non-loopback peer.
    pub fn dangerous_accept_insecure(listener: &TcpListener, options: TcpOptions) -> Result<Self> {
        let (stream, peer) = listener.accept().map_err(|source| Error::Io {
            context: "accepting a connection",
            source,
        })?;
        refuse_non_loopback(&peer)?;
        Self::from_stream(stream, options)
    }

    /// Wraps a connection accepted elsewhere; refuses a non-loopback peer.
    pub fn dangerous_from_accepted_insecure(
        stream: TcpStream,
        options: TcpOptions,
    ) -> Result<Self> {
        let peer = stream.peer_addr().map_err(|source| Error::Io {
            context: "reading the peer address",
            source,
        })?;
        refuse_non_loopback(&peer)?;
        Self::from_stream(stream, options)
    }

    fn from_stream(stream: TcpStream, options: TcpOptions) -> Result<Self> {
        let io_error = |context| move |source| Error::Io { context, source };
        stream
            .set_nodelay(true)
            .map_err(io_error("configuring the socket"))?;
        stream
            .set_read_timeout(Some(options.read_timeout))
            .map_err(io_error("configuring the socket"))?;
        configure_keepalive(&stream, &options)?;
        let mut write_half = stream.try_clone().map_err(io_error("cloning the socket"))?;
        let read_half = stream.try_clone().map_err(io_error("cloning the socket"))?;
        let (outgoing, queue) = channel::<Vec<u8>>();
        let writer_error = Arc::new(Mutex::new(None));
        let error_slot = Arc::clone(&writer_error);
        let sending = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&sending);
        let writer = std::thread::Builder::new()
            .name("veil-net-writer".into())
            .spawn(move || {
                for mut frame in queue {
                    let outcome = write_half.write_all(&frame);
                    written.fetch_sub(frame.len(), Ordering::AcqRel);
                    // Frames carry shares and material: the socket has them now.
                    frame.zeroize();
                    if let Err(error) = outcome {
                        if let Ok(mut slot) = error_slot.lock() {
                            *slot = Some(error.to_string());
                        }
                        return;
                    }
                }
                let _ = write_half.flush();
            })
            .map_err(io_error("starting the writer thread"))?;
        let mut reader = BufReader::with_capacity(1 << 16, read_half);
        let incoming = if options.profile == NetworkProfile::Local {
            Incoming::Direct(reader)
        } else {
            // The reader thread waits indefinitely; `recv` applies the timeout.
            stream
                .set_read_timeout(None)
                .map_err(io_error("configuring the socket"))?;
            let (sink, frames) = channel();
            let max_frame_bytes = options.max_frame_bytes;
            let reader_thread = std::thread::Builder::new()
                .name("veil-net-reader".into())
                .spawn(move || {
                    loop {
                        let frame = read_frame(&mut reader, max_frame_bytes, 0)
                            .map(|frame| (Instant::now(), frame));
                        let failed = frame.is_err();
                        if sink.send(frame).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(io_error("starting the reader thread"))?;
            Incoming::Shaped {
                frames,
                clock: LinkClock::new(options.profile),
                _reader: reader_thread,
            }
        };
        Ok(Self {
            incoming,
            stream,
            outgoing: Some(outgoing),
            sending,
            writer: Some(writer),
            writer_error,
            stats: ChannelStats::default(),
            options,
        })
    }

    fn check_writer(&self) -> Result<()> {
        let failed = self
            .writer_error
            .lock()
            .map(|slot| slot.is_some())
            .unwrap_or(true);
        if failed {
            return Err(Error::PeerClosed);
        }
        Ok(())
    }

    /// The peer's address.
    pub fn peer_address(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

impl Channel for TcpChannel {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.check_writer()?;
        let mut frame = Vec::with_capacity(payload.len() + crate::FRAME_HEADER_BYTES);
        frame.extend_from_slice(&header(payload.len()));
        frame.extend_from_slice(payload);
        wait_for_send_room(&self.sending, frame.len(), &self.options)?;
        self.sending.fetch_add(frame.len(), Ordering::AcqRel);
        self.outgoing
            .as_ref()
            .ok_or(Error::PeerClosed)?
            .send(frame)
            .map_err(|_| Error::PeerClosed)?;
        self.stats.record_send(payload.len());
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>> {
        let timeout = self.options.read_timeout;
        let payload = match &mut self.incoming {
            Incoming::Direct(reader) => {
                read_frame(reader, self.options.max_frame_bytes, timeout.as_secs())?
            }
            Incoming::Shaped { frames, clock, .. } => {
                let (arrival, payload) = match frames.recv_timeout(timeout) {
                    Ok(frame) => frame?,
                    Err(RecvTimeoutError::Timeout) => {
                        return Err(Error::Timeout {
                            seconds: timeout.as_secs(),
                        });
                    }
                    Err(RecvTimeoutError::Disconnected) => return Err(Error::PeerClosed),
                };
                let ready = clock.readable_at(arrival, payload.len() + FRAME_HEADER_BYTES);
                let now = Instant::now();
                if ready > now {
                    std::thread::sleep(ready - now);
                }
                payload
            }
        };
        self.stats.record_receive(payload.len());
        Ok(payload)
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl Drop for TcpChannel {
    fn drop(&mut self) {
        // Let the writer drain what was queued, then tell the peer we are done.
        drop(self.outgoing.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected_pair() -> (TcpChannel, TcpChannel) {
        let listener = dangerous_listen_insecure("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accept = std::thread::spawn(move || {
            TcpChannel::dangerous_accept_insecure(&listener, TcpOptions::default()).unwrap()
        });
        let client =
            TcpChannel::dangerous_connect_insecure(&address, TcpOptions::default()).unwrap();
        (client, accept.join().unwrap())
    }

    #[test]
    fn exchanges_64_megabytes_each_way_without_deadlock() {
        let (mut first, mut second) = connected_pair();
        let size = 64 << 20;
        let first_payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let second_payload: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
        let expected_at_second = first_payload.clone();
        let peer = std::thread::spawn(move || {
            let got = second.exchange(&second_payload).unwrap();
            assert!(got == expected_at_second);
            second.stats()
        });
        let got = first.exchange(&first_payload).unwrap();
        let second_stats = peer.join().unwrap();
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 241) as u8));
        let stats = first.stats();
        assert_eq!(stats.payload_bytes_sent, size as u64);
        assert_eq!(stats.bytes_sent, size as u64 + 4);
        assert_eq!(stats.rounds, 1);
        assert_eq!(second_stats.bytes_received, size as u64 + 4);
    }

    #[test]
    fn shaped_channels_delay_by_bandwidth_and_round_trip() {
        let listener = dangerous_listen_insecure("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let options = TcpOptions {
            profile: NetworkProfile::Wan,
            ..TcpOptions::default()
        };
        let accept = std::thread::spawn(move || {
            TcpChannel::dangerous_accept_insecure(&listener, options).unwrap()
        });
        let mut first = TcpChannel::dangerous_connect_insecure(&address, options).unwrap();
        let mut second = accept.join().unwrap();
        let payload = vec![7u8; 2_000_000 - 4];
        let started = Instant::now();
        let peer = std::thread::spawn(move || {
            let got = second.recv().unwrap();
            second.send(&[1]).unwrap();
            got.len()
        });
        first.send(&payload).unwrap();
        assert_eq!(first.recv().unwrap(), vec![1]);
        assert_eq!(peer.join().unwrap(), payload.len());
        // 2 MB at 400 Mbit/s = 40 ms, plus two half round trips of 20 ms.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
    }

    /// Bounded sends over plain TCP: to a peer that never reads, `send` stops queueing at
    /// the bound (the kernel's buffers hold the rest) and then times out; a reader then
    /// gets every frame in order.
    #[test]
    fn bounded_sends_stop_at_the_bound_for_a_peer_that_does_not_read() {
        let listener = dangerous_listen_insecure("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let bounded = TcpOptions {
            read_timeout: Duration::from_secs(1),
            send_queue_bytes: Some(1 << 20),
            ..TcpOptions::default()
        };
        let accept = std::thread::spawn(move || {
            TcpChannel::dangerous_accept_insecure(&listener, TcpOptions::default()).unwrap()
        });
        let mut sender = TcpChannel::dangerous_connect_insecure(&address, bounded).unwrap();
        let mut reader = accept.join().unwrap();
        let frame = vec![3u8; 64 << 10];
        let mut sent = 0usize;
        let error = loop {
            match sender.send(&frame) {
                Ok(()) => sent += 1,
                Err(error) => break error,
            }
            assert!(sent < 100_000, "sending never stopped");
        };
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        assert!(sender.sending.load(Ordering::Acquire) <= 1 << 20);
        for _ in 0..sent {
            assert_eq!(reader.recv().unwrap(), frame);
        }
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        assert!(matches!(
            dangerous_listen_insecure("0.0.0.0:0"),
            Err(Error::InsecureNonLoopback { .. })
        ));
        assert!(matches!(
            TcpChannel::dangerous_connect_insecure("192.0.2.1:9", TcpOptions::default()),
            Err(Error::InsecureNonLoopback { .. })
        ));
    }

    #[test]
    fn a_vanished_peer_is_a_clear_error() {
        let (mut first, second) = connected_pair();
        drop(second);
        assert!(matches!(first.recv(), Err(Error::PeerClosed)));
    }

    #[test]
    fn a_peer_that_stops_mid_frame_is_truncation() {
        let listener = dangerous_listen_insecure("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let raw = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(&header(100)).unwrap();
            stream.write_all(&[1, 2, 3]).unwrap();
        });
        let mut channel =
            TcpChannel::dangerous_accept_insecure(&listener, TcpOptions::default()).unwrap();
        raw.join().unwrap();
        assert!(matches!(channel.recv(), Err(Error::Truncated { .. })));
    }

    #[test]
    fn keepalive_is_on_unless_turned_off() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(!socket.keepalive().unwrap());
        configure_keepalive(
            &stream,
            &TcpOptions {
                keepalive: None,
                ..TcpOptions::default()
            },
        )
        .unwrap();
        assert!(!socket.keepalive().unwrap());
        configure_keepalive(&stream, &TcpOptions::default()).unwrap();
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(socket.tcp_keepalive_time().unwrap(), DEFAULT_KEEPALIVE_IDLE);
    }

    #[test]
    fn a_silent_peer_times_out() {
        let listener = dangerous_listen_insecure("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let options = TcpOptions {
            read_timeout: Duration::from_millis(200),
            ..TcpOptions::default()
        };
        let _peer = TcpStream::connect(&address).unwrap();
        let mut channel = TcpChannel::dangerous_accept_insecure(&listener, options).unwrap();
        assert!(matches!(channel.recv(), Err(Error::Timeout { .. })));
    }
}
