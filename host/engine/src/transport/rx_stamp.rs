//! TCP reads stamped by the kernel. With `SO_TIMESTAMPNS` Linux stamps each packet as the
//! network stack receives it and `recvmsg` returns the stamp of the last packet a read copied,
//! so a stream's chunk keeps the time it reached this machine even when the client was busy with
//! other connections and read it late (a burst of first tokens across 1,000 streams). Elsewhere,
//! or when the kernel gives no stamp, the read's own time stands.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// When a read's bytes reached the machine, and how long they then waited for the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The kernel's receive stamp of the last packet the read copied.
    pub at: Instant,
    /// From that stamp to the read's return: time in the socket buffer while the client was
    /// busy elsewhere. Chunks that arrived apart within this time share the one stamp.
    pub waited: Duration,
}

/// Something read from a connection that may know when its last read's bytes arrived.
pub trait ReadArrival {
    /// When the bytes of the latest read reached the machine, if known (then forgotten).
    fn take_arrival(&mut self) -> Option<Arrival> {
        None
    }
}

impl<T: ReadArrival + ?Sized> ReadArrival for Box<T> {
    fn take_arrival(&mut self) -> Option<Arrival> {
        (**self).take_arrival()
    }
}

/// Over TLS, the stamp of the TCP read that completed the decrypted bytes.
impl<T: ReadArrival> ReadArrival for tokio_rustls::client::TlsStream<T> {
    fn take_arrival(&mut self) -> Option<Arrival> {
        self.get_mut().0.take_arrival()
    }
}

/// A TCP stream whose reads carry the kernel's receive stamp.
pub struct RxStampedTcp {
    tcp: TcpStream,
    stamps: bool,
    last: Option<Arrival>,
}

impl RxStampedTcp {
    /// Turns kernel receive stamps on for `tcp` (when the system allows; else reads are plain).
    pub fn new(tcp: TcpStream) -> Self {
        let stamps = enable(&tcp);
        Self {
            tcp,
            stamps,
            last: None,
        }
    }
}

#[cfg(target_os = "linux")]
fn enable(tcp: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and an int option value of the right size.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn enable(_tcp: &TcpStream) -> bool {
    false
}

/// One `recvmsg` into `buf`: the bytes read and the kernel's receive stamp (wall clock).
#[cfg(target_os = "linux")]
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<libc::timespec>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS control message (and alignment).
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: walking the control buffer the kernel filled, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                stamp = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::timespec>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}

/// A wall-clock kernel stamp as an [`Arrival`]: now, less how long ago the stamp was by the wall
/// clock (the two clocks only need to agree over that short interval).
#[cfg(target_os = "linux")]
fn to_arrival(stamp: libc::timespec) -> Option<Arrival> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    // A stamp the kernel could not mean (negative, nanoseconds out of range) is not believed.
    let secs = u64::try_from(stamp.tv_sec).ok()?;
    let nanos = u32::try_from(stamp.tv_nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    let at = UNIX_EPOCH.checked_add(Duration::new(secs, nanos))?;
    let ago = wall.duration_since(at).ok()?;
    // A stamp from before this connection's last second is not believed.
    if ago >= Duration::from_secs(1) {
        return None;
    }
    Some(Arrival {
        at: now.checked_sub(ago)?,
        waited: ago,
    })
}

impl ReadArrival for RxStampedTcp {
    fn take_arrival(&mut self) -> Option<Arrival> {
        self.last.take()
    }
}

impl AsyncRead for RxStampedTcp {
    #[cfg(target_os = "linux")]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use std::os::fd::AsRawFd;
        let this = self.get_mut();
        if !this.stamps {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let fd = this.tcp.as_raw_fd();
            // SAFETY: recvmsg only writes into the unfilled part, and `assume_init` covers
            // exactly the bytes it reported.
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            // A short read drained the socket (edge-triggered epoll): it is handed back as
            // WouldBlock so tokio clears the readiness it saw before the read, as its own
            // `TcpStream::poll_read` does, instead of a second `recvmsg` that fails with EAGAIN.
            let mut drained = None;
            let read = this.tcp.try_io(tokio::io::Interest::READABLE, || {
                let (n, stamp) = recv_stamped(fd, unfilled)?;
                if n > 0 && n < room {
                    drained = Some((n, stamp));
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok((n, stamp))
            });
            let (n, stamp) = match (read, drained) {
                (_, Some(got)) => got,
                (Ok(got), None) => got,
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (Err(e), None) => return Poll::Ready(Err(e)),
            };
            // SAFETY: recvmsg initialized the first `n` unfilled bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            this.last = stamp.and_then(to_arrival);
            return Poll::Ready(Ok(()));
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for RxStampedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn timespec(secs: i64, nanos: i64) -> libc::timespec {
        // SAFETY: timespec is plain data; zeroed is a valid value.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        ts.tv_sec = secs as _;
        ts.tv_nsec = nanos as _;
        ts
    }

    #[test]
    fn stamps_the_kernel_could_not_mean_are_not_believed() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let (secs, nanos) = (now.as_secs() as i64, i64::from(now.subsec_nanos()));
        let fresh = to_arrival(timespec(secs, nanos)).expect("a stamp of just now");
        assert!(fresh.waited < Duration::from_millis(100), "{fresh:?}");
        // Negative, nanoseconds out of range, beyond any clock, in the future, too old.
        for (s, n) in [
            (-1, 0),
            (secs, 1_000_000_000),
            (secs, -1),
            (i64::MAX, 0),
            (secs + 60, 0),
            (secs - 2, nanos),
        ] {
            assert_eq!(to_arrival(timespec(s, n)), None, "{s} s {n} ns");
        }
    }

    #[tokio::test]
    async fn reads_carry_the_kernels_receive_stamp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut client = RxStampedTcp::new(client);
        assert!(client.stamps, "SO_TIMESTAMPNS refused");
        // Linux turns packet stamping on a moment after the first socket asks (a static key
        // flipped from a work queue): the first exchange may come unstamped.
        let mut buf = [0u8; 16];
        let mut stamped = None;
        for _ in 0..5 {
            server.write_all(b"hello").await.unwrap();
            let written = Instant::now();
            // Read well after the bytes arrived: the stamp stays at their arrival.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
            if let Some(arrived) = client.take_arrival() {
                stamped = Some((written, arrived, Instant::now()));
                break;
            }
        }
        let (written, arrival, read_at) = stamped.expect("no read carried a kernel stamp");
        let arrived = arrival.at;
        assert!(
            read_at.duration_since(arrived) >= Duration::from_millis(25),
            "stamped {:?} before the read",
            read_at.duration_since(arrived)
        );
        // The wait is the time in the socket buffer: the 30 ms sleep, give or take the clocks.
        assert!(
            arrival.waited >= Duration::from_millis(25) && arrival.waited < Duration::from_secs(1),
            "waited {:?}",
            arrival.waited
        );
        assert!(
            arrived.saturating_duration_since(written) < Duration::from_millis(5)
                || written.saturating_duration_since(arrived) < Duration::from_millis(5),
            "the stamp is not the arrival"
        );
    }
}
