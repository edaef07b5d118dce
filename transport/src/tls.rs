//! NVMe/TCP's secure channel: TLS 1.3 with an external pre-shared key
//! (NVMe/TCP Transport 1.0 section 3.6 as amended by TP 8011), in user
//! space with OpenSSL, over the same non-blocking sockets the reactors
//! drive.
//!
//! - TLS 1.3 only; the cipher suites TLS_AES_128_GCM_SHA256 and
//!   TLS_AES_256_GCM_SHA384 only; no certificates; no session tickets (a
//!   resumption PSK would outlive the configured one); no early data.
//! - The PSK and its suite come from `lull_proto::tls_psk` ([`TlsPsk`]):
//!   OpenSSL is handed a session holding the key and the suite through its
//!   session-based PSK callbacks (`SSL_CTX_set_psk_find_session_callback`,
//!   `SSL_CTX_set_psk_use_session_callback`); the older PSK callbacks fix
//!   SHA-256, so a 48-byte key (TLS_AES_256_GCM_SHA384) would not work with
//!   them. rust-openssl does not wrap these five functions, so they are
//!   declared here.
//! - A target looks the client's identity up through a [`PskLookup`]; an
//!   unknown identity finds no PSK and, as there is no certificate either,
//!   the handshake fails.
//!
//! [`Wire`] is a connection's byte stream: plain TCP, or TLS over it. The
//! plain path is the socket calls it always was (one `Option` test in
//! front). On the TLS path a call that cannot go on says `WouldBlock`,
//! whether OpenSSL waits to read or to write ([`Wire::wants_write`] tells
//! which), so the reactor waits on the fd exactly as for a plain socket.

use std::ffi::c_int;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use foreign_types::ForeignTypeRef;
use lull_proto::tls_psk::{PskHash, TlsPsk};
use openssl::ex_data::Index;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef, SslStream, SslVersion,
};

/// Most plaintext bytes of one TLS record (RFC 8446 section 5.1): a send
/// gathers up to this much from the PDUs queued, so a 24-byte header and
/// its data go out in one record rather than two.
pub const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Most PSK identities of one ClientHello a target looks up. OpenSSL asks
/// about each identity offered, in turn, until one is known, and a
/// ClientHello of 64 KB carries thousands (RFC 8446 section 4.2.11 sets no
/// limit); each lookup walks the hosts of every subsystem the port
/// reaches, on the reactor. NVMe hosts offer one (Linux's and SPDK's), a
/// few at most; beyond this many the handshake fails.
pub const MAX_PSK_IDENTITIES: usize = 8;

/// TLS 1.3's protocol version on the wire (RFC 8446 section 4.2.1).
const TLS1_3_VERSION: c_int = 0x0304;

/// Finds the PSK of a client's identity, on a target. Called during the
/// handshake on the connection's reactor: must not block.
pub trait PskLookup: Send + Sync + 'static {
    /// The PSK whose identity is `identity` (the bytes the ClientHello
    /// carries), or `None`: the handshake then fails.
    fn find(&self, identity: &[u8]) -> Option<TlsPsk>;
}

/// Why TLS could not be set up, or a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

impl From<openssl::error::ErrorStack> for TlsError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        TlsError(e.to_string())
    }
}

/// What a session's callbacks need: the lookup (target) or the one PSK
/// (host), and the PSK that keyed the session once chosen.
struct PskSlot {
    lookup: Option<Arc<dyn PskLookup>>,
    own: Option<TlsPsk>,
    chosen: Mutex<Option<TlsPsk>>,
    /// Identities looked up so far (target), within [`MAX_PSK_IDENTITIES`].
    asked: AtomicUsize,
}

fn slot_index() -> Result<Index<Ssl, PskSlot>, TlsError> {
    static INDEX: OnceLock<Result<Index<Ssl, PskSlot>, TlsError>> = OnceLock::new();
    INDEX
        .get_or_init(|| Ssl::new_ex_index::<PskSlot>().map_err(TlsError::from))
        .clone()
}

// The session-based external PSK interface of OpenSSL 1.1.1 and later
// (ssl.h), which openssl-sys does not declare.
type FindSessionCb = unsafe extern "C" fn(
    ssl: *mut openssl_sys::SSL,
    identity: *const u8,
    identity_len: usize,
    sess: *mut *mut openssl_sys::SSL_SESSION,
) -> c_int;
type UseSessionCb = unsafe extern "C" fn(
    ssl: *mut openssl_sys::SSL,
    md: *const openssl_sys::EVP_MD,
    id: *mut *const u8,
    idlen: *mut usize,
    sess: *mut *mut openssl_sys::SSL_SESSION,
) -> c_int;

unsafe extern "C" {
    fn SSL_CTX_set_psk_find_session_callback(ctx: *mut openssl_sys::SSL_CTX, cb: Option<FindSessionCb>);
    fn SSL_CTX_set_psk_use_session_callback(ctx: *mut openssl_sys::SSL_CTX, cb: Option<UseSessionCb>);
    fn SSL_SESSION_new() -> *mut openssl_sys::SSL_SESSION;
    fn SSL_SESSION_set1_master_key(sess: *mut openssl_sys::SSL_SESSION, key: *const u8, len: usize) -> c_int;
    fn SSL_SESSION_set_cipher(sess: *mut openssl_sys::SSL_SESSION, cipher: *const openssl_sys::SSL_CIPHER) -> c_int;
    fn SSL_SESSION_set_protocol_version(sess: *mut openssl_sys::SSL_SESSION, version: c_int) -> c_int;
    fn SSL_CIPHER_find(ssl: *mut openssl_sys::SSL, ptr: *const u8) -> *const openssl_sys::SSL_CIPHER;
    fn SSL_CIPHER_get_handshake_digest(cipher: *const openssl_sys::SSL_CIPHER) -> *const openssl_sys::EVP_MD;
}

/// The two-byte code of a suite (RFC 8446 appendix B.4).
fn suite_code(hash: PskHash) -> [u8; 2] {
    match hash {
        PskHash::Sha256 => [0x13, 0x01],
        PskHash::Sha384 => [0x13, 0x02],
    }
}

/// A TLS 1.3 session holding `psk` as its key, for `ssl`; null on failure.
/// The caller owns the returned reference.
fn psk_session(ssl: *mut openssl_sys::SSL, psk: &TlsPsk) -> *mut openssl_sys::SSL_SESSION {
    let code = suite_code(psk.hash());
    // SAFETY: `ssl` is the live SSL OpenSSL called back with; `code` is two
    // readable bytes. A null cipher is checked below.
    let cipher = unsafe { SSL_CIPHER_find(ssl, code.as_ptr()) };
    if cipher.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a fresh session (or null, checked).
    let sess = unsafe { SSL_SESSION_new() };
    if sess.is_null() {
        return sess;
    }
    let key = psk.key();
    // SAFETY: `sess` is the session made above and owned here; the key
    // slice is valid for its length (OpenSSL copies it); `cipher` is a
    // static OpenSSL table entry.
    let ok = unsafe {
        SSL_SESSION_set1_master_key(sess, key.as_ptr(), key.len()) == 1
            && SSL_SESSION_set_cipher(sess, cipher) == 1
            && SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION) == 1
    };
    if !ok {
        // SAFETY: the reference made above, not handed out.
        unsafe { openssl_sys::SSL_SESSION_free(sess) };
        return std::ptr::null_mut();
    }
    sess
}

/// The slot of the SSL OpenSSL called back with.
///
/// # Safety
/// `ssl` must be a live SSL for the duration of the returned borrow.
unsafe fn slot<'a>(ssl: *mut openssl_sys::SSL) -> Option<&'a PskSlot> {
    let index = slot_index().ok()?;
    // SAFETY: the caller's promise: `ssl` is live while the borrow is used.
    let ssl: &'a SslRef = unsafe { SslRef::from_ptr(ssl) };
    ssl.ex_data(index)
}

/// Target: the session for the identity the client offers; none (and
/// success, so a further identity may still match) when it is unknown;
/// failure past [`MAX_PSK_IDENTITIES`] identities.
unsafe extern "C" fn find_session(
    ssl: *mut openssl_sys::SSL,
    identity: *const u8,
    identity_len: usize,
    sess: *mut *mut openssl_sys::SSL_SESSION,
) -> c_int {
    // SAFETY: OpenSSL passes its live SSL, a readable identity of
    // `identity_len` bytes and a writable `sess` for this call.
    unsafe {
        *sess = std::ptr::null_mut();
        let Some(slot) = slot(ssl) else { return 0 };
        let Some(lookup) = &slot.lookup else { return 0 };
        if slot.asked.fetch_add(1, Ordering::Relaxed) >= MAX_PSK_IDENTITIES {
            tracing::debug!("ClientHello offers more than {MAX_PSK_IDENTITIES} PSK identities: refused");
            return 0;
        }
        let id = if identity.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(identity, identity_len)
        };
        let Some(psk) = lookup.find(id) else {
            tracing::debug!(identity = %String::from_utf8_lossy(id), "TLS PSK identity unknown");
            return 1;
        };
        let s = psk_session(ssl, &psk);
        if s.is_null() {
            return 0;
        }
        *slot.chosen.lock().unwrap_or_else(|p| p.into_inner()) = Some(psk);
        *sess = s;
        1
    }
}

/// Host: the session and identity of our one PSK; none when OpenSSL asks
/// again for a digest (after a HelloRetryRequest) that is not our suite's.
unsafe extern "C" fn use_session(
    ssl: *mut openssl_sys::SSL,
    md: *const openssl_sys::EVP_MD,
    id: *mut *const u8,
    idlen: *mut usize,
    sess: *mut *mut openssl_sys::SSL_SESSION,
) -> c_int {
    // SAFETY: OpenSSL passes its live SSL and writable out-pointers for
    // this call; the identity pointer handed back points into the slot,
    // which lives as long as the SSL (so past the handshake).
    unsafe {
        *sess = std::ptr::null_mut();
        *id = std::ptr::null();
        *idlen = 0;
        let Some(slot) = slot(ssl) else { return 0 };
        let Some(psk) = &slot.own else { return 0 };
        let s = psk_session(ssl, psk);
        if s.is_null() {
            return 0;
        }
        if !md.is_null() {
            let code = suite_code(psk.hash());
            let cipher = SSL_CIPHER_find(ssl, code.as_ptr());
            if cipher.is_null() || SSL_CIPHER_get_handshake_digest(cipher) != md {
                openssl_sys::SSL_SESSION_free(s);
                return 1;
            }
        }
        *id = psk.identity().as_ptr();
        *idlen = psk.identity().len();
        *sess = s;
        1
    }
}

/// The settings both roles share: TLS 1.3 only, the two NVMe/TCP suites,
/// no tickets, OpenSSL's non-blocking write rules.
fn base_context() -> Result<SslContextBuilder, TlsError> {
    let mut b = SslContext::builder(SslMethod::tls())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_ciphersuites("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")?;
    b.set_options(SslOptions::NO_TICKET);
    b.set_num_tickets(0)?;
    // A write that would block is retried with the same bytes from the
    // queue's send buffer, which may have moved (it grows); a partial write
    // reports each record as it goes, so the queue's count stays exact.
    b.set_mode(SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE);
    Ok(b)
}

/// A target's TLS settings: one per secure listener.
pub struct TlsServer {
    ctx: SslContext,
    lookup: Arc<dyn PskLookup>,
}

impl TlsServer {
    /// Settings that find each client's PSK through `lookup`.
    ///
    /// # Errors
    /// When OpenSSL refuses a setting (an OpenSSL without TLS 1.3).
    pub fn new(lookup: Arc<dyn PskLookup>) -> Result<Arc<TlsServer>, TlsError> {
        let b = base_context()?;
        // SAFETY: the builder's live SSL_CTX; the callback has the C
        // signature OpenSSL declares for it.
        unsafe { SSL_CTX_set_psk_find_session_callback(b.as_ptr(), Some(find_session)) };
        Ok(Arc::new(TlsServer { ctx: b.build(), lookup }))
    }

    /// The server side of a new connection's TLS, the handshake not started.
    ///
    /// # Errors
    /// When OpenSSL cannot make the session.
    pub fn accept(&self, sock: Arc<TcpStream>) -> Result<Wire, TlsError> {
        let mut ssl = Ssl::new(&self.ctx)?;
        ssl.set_ex_data(
            slot_index()?,
            PskSlot {
                lookup: Some(self.lookup.clone()),
                own: None,
                chosen: Mutex::new(None),
                asked: AtomicUsize::new(0),
            },
        );
        ssl.set_accept_state();
        Wire::with_tls(sock, ssl)
    }
}

/// The client side of TLS for a connection keyed by `psk` (only its suite
/// is offered), the handshake not started.
///
/// # Errors
/// When OpenSSL cannot make the session.
pub fn client(sock: Arc<TcpStream>, psk: TlsPsk) -> Result<Wire, TlsError> {
    let mut b = base_context()?;
    b.set_ciphersuites(psk.hash().cipher_suite())?;
    // SAFETY: the builder's live SSL_CTX; the callback has the C signature
    // OpenSSL declares for it.
    unsafe { SSL_CTX_set_psk_use_session_callback(b.as_ptr(), Some(use_session)) };
    let ctx = b.build();
    let mut ssl = Ssl::new(&ctx)?;
    ssl.set_ex_data(
        slot_index()?,
        PskSlot {
            lookup: None,
            own: Some(psk.clone()),
            chosen: Mutex::new(Some(psk)),
            asked: AtomicUsize::new(0),
        },
    );
    ssl.set_connect_state();
    Wire::with_tls(sock, ssl)
}

/// The socket as OpenSSL's transport: reads and writes through a shared
/// reference, so the connection keeps the socket for its fd.
struct SockIo(Arc<TcpStream>);

impl Read for SockIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SockIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::send::send_slices(&*self.0, &[IoSlice::new(buf)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a handshake step ended.
#[derive(Debug)]
pub enum Handshake {
    /// Done: the session is keyed; the PSK that keyed it.
    Done(Box<TlsPsk>),
    /// Waiting for the peer: wait until the socket is readable.
    WantRead,
    /// The socket's buffer is full: wait until it is writable.
    WantWrite,
}

struct TlsSide {
    stream: SslStream<SockIo>,
    established: bool,
    /// The last call stopped because OpenSSL must write first.
    wants_write: bool,
    /// Plaintext gathered from several slices for one record.
    stage: Vec<u8>,
}

/// A connection's byte stream: the TCP socket, with TLS over it or not.
pub struct Wire {
    sock: Arc<TcpStream>,
    tls: Option<Box<TlsSide>>,
}

impl Wire {
    /// Plain TCP.
    pub fn plain(sock: TcpStream) -> Wire {
        Wire {
            sock: Arc::new(sock),
            tls: None,
        }
    }

    fn with_tls(sock: Arc<TcpStream>, ssl: Ssl) -> Result<Wire, TlsError> {
        let stream = SslStream::new(ssl, SockIo(sock.clone()))?;
        Ok(Wire {
            sock,
            tls: Some(Box::new(TlsSide {
                stream,
                established: false,
                wants_write: false,
                stage: Vec::new(),
            })),
        })
    }

    /// The TCP socket (its fd for the reactor, its addresses, options).
    pub fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    /// The socket, shared (a poller holds it for its fd).
    pub fn tcp_shared(&self) -> Arc<TcpStream> {
        self.sock.clone()
    }

    /// Whether TLS runs on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the TLS handshake is still to finish (false for plain TCP).
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.established)
    }

    /// Whether the last `WouldBlock` was OpenSSL waiting to write (arm
    /// EPOLLOUT) rather than to read.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write)
    }

    /// Whether decrypted bytes wait inside OpenSSL: the socket may not be
    /// readable, yet a read returns data.
    pub fn buffered(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.stream.ssl().pending() > 0)
    }

    /// The cipher suite in use (`None` before the handshake or without TLS).
    pub fn cipher(&self) -> Option<&'static str> {
        self.tls.as_ref()?.stream.ssl().current_cipher().map(|c| c.name())
    }

    /// Drives the handshake as far as the socket allows.
    ///
    /// # Errors
    /// The handshake failed (unknown identity, wrong key, not TLS at all):
    /// the connection must be closed. Calling it on plain TCP is an error.
    pub fn handshake(&mut self) -> Result<Handshake, TlsError> {
        let Some(t) = self.tls.as_mut() else {
            return Err(TlsError("no TLS on this connection".into()));
        };
        match t.stream.do_handshake() {
            Ok(()) => {
                t.established = true;
                t.wants_write = false;
                let index = slot_index()?;
                let chosen = t
                    .stream
                    .ssl()
                    .ex_data(index)
                    .and_then(|s| s.chosen.lock().unwrap_or_else(|p| p.into_inner()).clone())
                    .ok_or_else(|| TlsError("the handshake finished without the PSK".into()))?;
                Ok(Handshake::Done(Box::new(chosen)))
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                t.wants_write = false;
                Ok(Handshake::WantRead)
            }
            Err(e) if e.code() == ErrorCode::WANT_WRITE => {
                t.wants_write = true;
                Ok(Handshake::WantWrite)
            }
            Err(e) => Err(TlsError(format!("handshake failed: {e}"))),
        }
    }

    /// Reads what is there into `buf`. `Ok(0)`: the peer closed (a TLS
    /// close_notify, or TCP). `WouldBlock`: nothing now (see [`wants_write`](Self::wants_write)).
    ///
    /// # Errors
    /// The socket's, or a TLS failure (a bad record: the connection is done).
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.tls.as_mut() {
            None => (&*self.sock).read(buf),
            Some(t) => t.read(buf),
        }
    }

    /// Sends the start of `slices`, in order; returns the bytes taken.
    /// Plain TCP: one `send`/`sendmsg`. TLS: the slices gathered into
    /// records of up to [`RECORD_PLAINTEXT`] bytes, one record per call.
    ///
    /// # Errors
    /// `WouldBlock` when the socket is full; the socket's or TLS's failure.
    #[inline]
    pub fn send_slices(&mut self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match self.tls.as_mut() {
            None => crate::send::send_slices(&*self.sock, slices),
            Some(t) => t.send_slices(slices),
        }
    }

    /// Sends the start of `buf` (one slice).
    ///
    /// # Errors
    /// As [`send_slices`](Self::send_slices).
    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.tls.as_mut() {
            None => (&*self.sock).write(buf),
            Some(t) => t.write(buf),
        }
    }

    /// Sends a TLS close_notify (best effort; nothing for plain TCP).
    pub fn close_notify(&mut self) {
        if let Some(t) = self.tls.as_mut()
            && t.established
        {
            let _ = t.stream.shutdown();
        }
    }
}

impl TlsSide {
    fn error(&mut self, e: openssl::ssl::Error) -> std::io::Error {
        match e.code() {
            ErrorCode::WANT_READ => {
                self.wants_write = false;
                ErrorKind::WouldBlock.into()
            }
            ErrorCode::WANT_WRITE => {
                self.wants_write = true;
                ErrorKind::WouldBlock.into()
            }
            _ => match e.into_io_error() {
                Ok(io) => io,
                Err(e) => std::io::Error::other(format!("TLS: {e}")),
            },
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stream.ssl_read(buf) {
            Ok(n) => {
                self.wants_write = false;
                Ok(n)
            }
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Ok(0),
            // A TCP close without close_notify reads as an EOF too (the
            // peer is gone either way; what it sent before was authentic).
            Err(e) if e.code() == ErrorCode::SYSCALL && e.io_error().is_none() => Ok(0),
            Err(e) => Err(self.error(e)),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.stream.ssl_write(buf) {
            Ok(n) => {
                self.wants_write = false;
                Ok(n)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn send_slices(&mut self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        // One slice of a record or more: straight from it.
        match slices.iter().position(|s| !s.is_empty()) {
            None => return Ok(0),
            Some(i) if slices[i].len() >= RECORD_PLAINTEXT || slices.len() == i + 1 => {
                return self.write(&slices[i]);
            }
            Some(_) => {}
        }
        let mut stage = std::mem::take(&mut self.stage);
        stage.clear();
        for s in slices {
            let room = RECORD_PLAINTEXT - stage.len();
            stage.extend_from_slice(&s[..s.len().min(room)]);
            if stage.len() == RECORD_PLAINTEXT {
                break;
            }
        }
        let r = self.write(&stage);
        self.stage = stage;
        r
    }
}

#[cfg(test)]
mod tests;
