"""sae-server: the sae-chat server, one thread, one selectors loop.

How a message travels, top to bottom of this file:

  socket bytes -> Session.framer (sae_protocol.LineFramer) -> parsed commands
  held in Session.held -> a command function (cmd_say, cmd_login, ...) ->
  Server.outbox -> one storage job (append_messages, one transaction) for all
  that was accepted in the turn (or, with storage threads, while the
  previous one was stored; on MariaDB two such batches are written at once,
  and come back in order) -> back on the loop: the Room renders it once per protocol ->
  the same bytes appended to every member's sendq -> one send() per socket
  at the end of the iteration (Connection.flush); EVENT_WRITE only while
  something is left over.

The parts, in the order the file gives them: limits; Strikes and Guards
(who may do what, and when); the clock; passwords; Connection (a socket
and its send queue), Session and AdminConnection; Workers (the threads for
what may block, and the way back to the loop); Room (members, and fan-out
by protocol); Server (the loop, accepting, reading, the sweep, delivery,
shutdown, and the wiring of the rest); the commands; main().

One thread owns every session and the room. What may block (password
hashing, a database across the network) runs on Workers' threads; results
come back through a socketpair registered in the same selector, and only the
loop thread looks at them. A store whose calls are as short as a send()
(SQLite: Store.on_loop) is called by the loop itself, its results taken the
same way at the end of the turn. A command that waits for them is a generator that yields what it
waits for (storage, hashing, a moment) and is resumed with the result. A
session's commands are answered in the order it sent them: while one of its
commands waits, its later lines wait too, except that SAY/TELL lines may
join a batch behind earlier SAY/TELL lines (their order is kept by the
batch).

The room and sessions know nothing of the wire format: each session speaks a
protocol whose format_* functions the room renders events with, so that
another listener (IRC) adds a formatter, not a second room.

As in asyncio's loop, a bug met while serving one session (its command, a
worker's completion for it, its part of a delivery) is logged with its
traceback and costs that session (BYE internal error), never the server. A
bug outside any session stops the server with the same orderly shutdown as
kill, and main() returns 1.
"""
import argparse
import base64
import collections
import concurrent.futures
import datetime
import errno
import hashlib
import heapq
import hmac
import itertools
import ipaddress
import math
import logging
import os
import resource
import selectors
import signal
import socket
import ssl
import stat
import sys
import threading
import time
from functools import partial
from typing import NamedTuple

import sae_cluster
import sae_irc
import sae_protocol as proto
from sae_admin import KICK_SECONDS_MAX, AdminLink, add_admin_options, admin_main, admin_password, set_terminal_echo
from sae_db import (DEFAULT_ROOM, LiveMessage, NewMessage, RoomInfo, StorageUnavailable, describe_url, name_key,
                    open_store)
from sae_protocol import room_key

log = logging.getLogger("sae-server")

# --- limits and defaults ------------------------------------------------
# Every limit the server enforces, with its default, its command-line option
# and environment variable (SAE_<NAME>), and why it is there.
LIMITS = {
    "history": (50, "room messages sent after LOGIN"),
    "history_max": (1000, "most messages one HISTORY returns"),
    "ping_interval": (60.0, "seconds of silence before the server sends PING"),
    "ping_timeout": (30.0, "seconds to answer a PING before BYE ping timeout"),
    "login_timeout": (60.0, "seconds a connection may stay without logging in"),
    "sendq_max": (256 * 1024, "bytes queued for a client that does not read before it is cut"),
    "held_lines_max": (64, "lines read ahead for one session before its socket is left unread"),
    "max_connections": (4096, "connections at once (kept below the open-file limit)"),
    "max_per_address": (32, "connections at once from one address"),
    "flood_burst": (10, "SAY, TELL, HISTORY, REGISTER, LOGIN (and JOIN, PART, TOPIC, RSAY, LIST) lines a "
                        "session may send at once"),
    "flood_rate": (5.0, "such lines per second after the burst; faster ones are held back"),
    "flood_held_max": (64 * 1024, "bytes of held-back lines before BYE excess flood"),
    "login_failures": (5, "failed LOGINs per minute per address and per account, then ERR 429"),
    "registrations": (5, "REGISTERs per minute per address, then ERR 429"),
    "login_failure_delay": (1.0, "seconds a failed LOGIN takes at least, so that its timing tells nothing"),
    "exempt": ("127.0.0.0/8,::1", "addresses (CIDR, comma-separated) exempt from per-address and rate limits"),
    "kick_seconds": (120, "default length of a kick"),
    "scrypt_n": (2 ** 14, "scrypt cost N for new password hashes (r=8, p=1)"),
    "hash_threads": (2, "threads hashing passwords"),
    "default_room": (DEFAULT_ROOM, "the room of protocol v1's SAY, MSG and HISTORY (made at start if missing)"),
    "rooms_max": (10000, "rooms on the server: each is kept in memory, and a JOIN that would make one more "
                         "is refused"),
    "rooms_per_account": (64, "rooms one account may be in"),
    "topic_max": (300, "bytes of a room's topic"),
    "tls_handshake_timeout": (10.0, "seconds a TLS connection may take to finish its handshake"),
    "password_min_bytes": (proto.PASSWORD_MIN_BYTES, "shortest password a new account may have (both protocols)"),
}
# Limits that cannot be 0: a rate divides, an interval or a cap of 0 would
# spin the loop or refuse everyone. (The others may be 0: no history, no
# failed logins allowed, no delay.)
POSITIVE_LIMITS = frozenset(("history_max", "ping_interval", "ping_timeout", "login_timeout", "sendq_max",
                             "held_lines_max", "max_connections", "max_per_address", "flood_burst",
                             "flood_rate", "flood_held_max", "hash_threads", "rooms_max", "rooms_per_account",
                             "tls_handshake_timeout", "password_min_bytes"))
# scrypt takes a power of two, and n * 128 * r bytes must fit in the memory
# hash_password allows it (256 MiB): 2 to 2**18.
SCRYPT_N_MAX = 2 ** 18
# Bytes read per recv(): large reads let one wake-up take a whole burst.
RECV_BYTES = 256 * 1024
# How long a closing connection may take to receive its last lines.
CLOSE_LINGER = 2.0
# Longest sleep of the loop: timers (pings, timeouts) are swept this often.
SWEEP_INTERVAL = 1.0
# How long a ban heard from another server of a cluster is checked at LOGIN
# besides the store: far longer than a LOGIN's read of its account takes.
BAN_HEARD_SECONDS = 60.0
# A server that has stored no batch for this long lets the database number
# the next one (see Server._store_outbox).
IDS_QUIET = 1.0
# At most this many more looks for ready input before a pass (_gather): a
# bound that does not depend on the clock, which tests freeze.
GATHER_ROUNDS = 16
# A batch at least this big was a flood: the next one may wait for input a
# moment (_gather). One CPU burner on two cores left passes at 115 messages
# of 160 in flight; waiting, at 146 (docs/BENCHMARKS.md).
GATHER_WAIT_BATCH_MIN = 32
# A pass over a big room looks for input every PASS_SLICE seconds, between
# chunks of PASS_CHUNK members (Server._pass).
PASS_SLICE = 0.001
PASS_CHUNK = 64
# With this many sessions behind (EVENT_WRITE pending) the room is flooded:
# passes are full anyway, and a look for input would mostly find sockets
# ready for writing (the flood's fan-out to 1000 clients lost half its
# throughput to those looks).
BEHIND_MANY = 16
# ... nor while the batches are bigger than this (a flood, not a chat).
PASS_POLL_BATCH_MAX = 8
ACCEPTS_PER_WAKEUP = 64
WRITE = selectors.EVENT_WRITE
# Out of file descriptors, the listener stays readable: stop watching it
# for this long rather than spin on accept() failing.
ACCEPT_PAUSE = 0.5
# Descriptors kept for the database, logs, the admin socket and the console.
FD_RESERVE = 32
# A held line costs at least this much of flood_held_max, so that a flood
# of tiny lines is bounded in lines as well as bytes.
HELD_LINE_COST = 64
# Lines that cost the server work (storage, hashing), and so are rate-limited.
COSTLY_VERBS = frozenset(("SAY", "TELL", "HISTORY", "REGISTER", "LOGIN",
                          "JOIN", "PART", "TOPIC", "RSAY", "LIST", proto.ROOM_HISTORY))
# An answer longer than this (HISTORY 1000, a large --history at LOGIN) is
# queued a piece of whole lines at a time, each once the client has taken
# the one before: it answers the client's own request, so it is paced by the
# client's reading instead of counting against sendq_max, which is for
# clients that do not read. Big enough for few send()s to a fast reader,
# small beside sendq_max (pieces are capped at half of it).
ANSWER_PIECE_BYTES = 64 * 1024
# TLS listeners (issue 15): the standard ports, and how soon before its
# certificate expires the server starts warning (Let's Encrypt renews 30
# days before; 14 days left means the renewal has failed for two weeks).
TLS_PORT = 12346
IRC_TLS_PORT = 6697
CERT_WARN_DAYS = 14
CERT_CHECK_INTERVAL = 24 * 3600.0
# The first byte of a TLS record that carries a handshake: a ClientHello sent
# to a plain port starts with it (0x16, then the version's 0x03).
TLS_HANDSHAKE_RECORD = 0x16


class Limits:
    def __init__(self, **values):
        for name, (default, _) in LIMITS.items():
            setattr(self, name, type(default)(values.get(name, default)))
        self.exempt_networks = [ipaddress.ip_network(net.strip(), strict=False)
                                for net in self.exempt.split(",") if net.strip()]

    def is_exempt(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return any(address in network for network in self.exempt_networks)


class Strikes:
    """At most ``allowed`` strikes per key in any ``window`` seconds: failed
    logins per address or account, registrations per address."""

    def __init__(self, allowed, window=60.0):
        self.allowed, self.window = allowed, window
        self.strikes = {}  # key -> deque of monotonic times, oldest first

    def wait(self, key, now) -> float:
        """Seconds until ``key`` may strike again (0: now)."""
        times = self.strikes.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.allowed:
            return 0.0
        return times[0] + self.window - now

    def add(self, key, now):
        self.strikes.setdefault(key, collections.deque()).append(now)

    def forgive(self, key, at):
        """Take back the strike added at ``at`` (an attempt counted while in
        flight that turned out not to be a failure)."""
        times = self.strikes.get(key)
        if times is not None and at in times:
            times.remove(at)

    def forget_old(self, now):
        for key in [key for key, times in self.strikes.items() if not times or times[-1] <= now - self.window]:
            del self.strikes[key]


class Guards:
    """Who may do what, and when: connections per address, failed logins
    and registrations, kicks, and each session's flood bucket. Bookkeeping
    only, on the loop's clock (``now`` is handed in): the Server asks before
    it acts, and does what the answer says."""

    def __init__(self, limits):
        self.limits = limits
        self.per_address = collections.Counter()  # ip -> connections
        self.login_failures_by_address = Strikes(limits.login_failures)
        self.login_failures_by_account = Strikes(limits.login_failures)
        self.registrations = Strikes(limits.registrations)
        self.kicks = {}  # account name_key -> monotonic expiry
        self.throttled = {}  # Session -> monotonic time its next costly line may run

    # -- connections --

    def admits(self, ip, exempt) -> bool:
        return exempt or self.per_address[ip] < self.limits.max_per_address

    def connected(self, ip):
        self.per_address[ip] += 1

    def disconnected(self, session):
        self.per_address[session.ip] -= 1
        if not self.per_address[session.ip]:
            del self.per_address[session.ip]
        self.throttled.pop(session, None)

    # -- logins and registrations --

    def login_wait(self, ip, key, now) -> float:
        """Seconds before this address may try this account again (0: now)."""
        return max(self.login_failures_by_address.wait(ip, now), self.login_failures_by_account.wait(key, now))

    def login_started(self, ip, key, now):
        """A LOGIN counts as failed until its password proves right, so that
        guesses sent in parallel see each other while they are hashed."""
        self.login_failures_by_address.add(ip, now)
        self.login_failures_by_account.add(key, now)

    def login_forgiven(self, ip, key, started):
        """The LOGIN started at ``started`` did not fail after all."""
        self.login_failures_by_address.forgive(ip, started)
        self.login_failures_by_account.forgive(key, started)

    def registration_wait(self, ip, now) -> float:
        return self.registrations.wait(ip, now)

    def registered(self, ip, now):
        self.registrations.add(ip, now)

    # -- kicks --

    def kick(self, name, until):
        self.kicks[name_key(name)] = until

    def unkick(self, name, now) -> int:
        """Lift the account's kick; the seconds it had left, 0 if none."""
        left = self.kick_left(name, now)
        self.kicks.pop(name_key(name), None)
        return left

    def kick_left(self, name, now) -> int:
        """Seconds left of a kick on the account, 0 if none."""
        until = self.kicks.get(name_key(name))
        if until is None or until <= now:
            return 0
        return max(1, int(until - now + 0.999))

    # -- flood --

    def take_token(self, session, now):
        """The session's token bucket: flood_burst lines at once, then
        flood_rate per second. None if a token was taken; else the line
        waits (fake lag) and this is the monotonic time it may go on."""
        limits = self.limits
        tokens = min(float(limits.flood_burst),
                     session.flood_tokens + (now - session.flood_stamp) * limits.flood_rate)
        session.flood_stamp = now
        if tokens >= 1.0:
            session.flood_tokens = tokens - 1.0
            return None
        session.flood_tokens = tokens
        ready_at = self.throttled[session] = now + (1.0 - tokens) / limits.flood_rate
        return ready_at

    def throttle_over(self, session) -> bool:
        """The session's wait is over; False if it was no longer held back."""
        return self.throttled.pop(session, None) is not None

    def forget_old(self, now):
        """Kicks and strikes that have run out."""
        for key in [key for key, until in self.kicks.items() if until <= now]:
            del self.kicks[key]
        for strikes in (self.login_failures_by_address, self.login_failures_by_account, self.registrations):
            strikes.forget_old(now)


def raise_open_file_limit(wanted):
    """Raise the soft open-file limit to the hard one if it is below
    ``wanted``; returns the soft limit in force. A normal user's soft limit
    is usually 1024 while the hard one is far higher, and raising it is
    allowed: a server that needs the descriptors takes them rather than
    warn at every start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted or soft == hard:
        return soft
    # An unlimited hard limit still stops at the kernel's nr_open: ask for
    # what is wanted, not for infinity, which setrlimit refuses.
    raised = wanted if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    except (ValueError, OSError) as error:
        log.debug("cannot raise the open-file limit from %d to %d: %s", soft, raised, error)
        return soft
    log.debug("open-file limit raised from %d to %d", soft, raised)
    return raised


# --- the clock ----------------------------------------------------------
# The only places that read time: monotonic() for every timeout and expiry,
# wall_ms() for message timestamps. Tests move both with freezegun.

def monotonic() -> float:
    return time.monotonic()


def wall_ms() -> int:
    return int(time.time() * 1000)


# --- passwords ----------------------------------------------------------

SCRYPT_R, SCRYPT_P = 8, 1


def hash_password(password: str, n: int) -> str:
    """scrypt with a random salt; the parameters are stored with the hash so
    that the cost can be raised later without breaking old accounts."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=256 * 1024 * 1024, dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (n, SCRYPT_R, SCRYPT_P, base64.b64encode(salt).decode(),
                                      base64.b64encode(digest).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt),
                                n=int(n), r=int(r), p=int(p), maxmem=256 * 1024 * 1024,
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def give_freed_hash_memory_back():
    """Make the C library return scrypt's buffers to the system once freed.

    A hash at the default cost (n=2**14, r=8) allocates 16 MiB. glibc serves
    a block that large with mmap at first, but once one is freed it raises
    its threshold (up to 32 MiB) and serves the next from the heap, where it
    stays after it is freed: after a login burst the server kept some 70 MB
    it no longer used, a seventh of a small Raspberry Pi. A fixed threshold
    keeps such blocks on mmap, so that freeing one gives it back. Elsewhere
    than glibc this does nothing."""
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD: blocks of 1 MiB and more
    except (ImportError, OSError, AttributeError):
        pass


# --- sessions -----------------------------------------------------------

CONNECTED, ONLINE, CLOSING = "connected", "online", "closing"
# What an idle session holds instead of an empty deque (some 600 bytes each).
NO_LINES = ()
# The rooms of a session that is not logged in.
NO_ROOMS = frozenset()


class Connection:
    """A non-blocking socket and what is owed to its peer, in the manner of
    asyncio's selector transports: bytes are queued, sent in as few send()
    calls as possible (``flush``), what the kernel does not take is kept,
    and the socket is watched for EVENT_WRITE only while something is left.
    Sessions and admin socket links are Connections, and this is the one
    place where any of them sends."""

    __slots__ = ("sock", "fd", "sendq", "sendq_bytes", "answer", "events")

    def __init__(self, sock, events):
        self.sock = sock
        self.fd = sock.fileno()
        self.sendq = []  # chunks owed to the peer, oldest first: bytes, and at most one LongAnswer
        self.sendq_bytes = 0  # the bytes in sendq; not what its LongAnswer has yet to produce
        self.answer = None  # the LongAnswer in sendq, if any
        self.events = events  # what the selector watches for

    def send(self, data: bytes) -> None:
        """Queue bytes for the peer; the loop sends at the end of its iteration."""
        self.sendq.append(data)
        self.sendq_bytes += len(data)

    def flush(self) -> bool:
        """Send what is queued (up to a LongAnswer, which Server._write
        feeds) in one send(), and keep the rest. False if the socket failed."""
        sendq = self.sendq
        count = len(sendq) if self.answer is None else sendq.index(self.answer)
        if not count:
            return True
        data = sendq[0] if count == 1 else b"".join(sendq[:count])
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        self.sendq_bytes -= sent
        if sent == len(data):
            del sendq[:count]
        else:
            sendq[:count] = [data[sent:]]
        return True


class Session(Connection):
    """One client connection: its buffers, its account once logged in, and
    where it stands in the conversation. Only the loop thread touches it."""

    __slots__ = ("ip", "address", "exempt", "protocol", "framer", "held", "held_bytes",
                 "account", "state", "inflight", "inflight_messages", "reading",
                 "connected_at", "last_heard", "ping_sent_at", "close_deadline",
                 "flood_tokens", "flood_stamp", "rooms_on", "guests_on", "rooms")

    def __init__(self, sock, ip, port, exempt, now, flood_burst, protocol=proto):
        Connection.__init__(self, sock, selectors.EVENT_READ)
        self.ip = ip
        # Renders the room's events for this client (the format_* functions
        # of sae_protocol for protocol v1).
        self.protocol = protocol
        self.address = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
        self.exempt = exempt  # from per-address and rate limits
        self.framer = proto.LineFramer()
        self.held = NO_LINES  # (cost, parsed line) not yet executed; a deque while any
        self.held_bytes = 0  # their cost, against flood_held_max
        self.account = None
        self.state = CONNECTED
        self.inflight = 0  # commands waiting for a worker
        self.inflight_messages = 0  # of which SAY/TELL waiting to be stored
        self.reading = True
        self.connected_at = now
        self.last_heard = now
        self.ping_sent_at = None
        self.close_deadline = None
        self.flood_tokens = float(flood_burst)
        self.flood_stamp = now
        # Protocol v1.1: the session has said it understands rooms (CAP
        # rooms, or any v1.1 line); until then it gets v1's lines only.
        self.rooms_on = False
        self.guests_on = False  # CAP guests: IRC guests are marked in its USERS lines
        # Once logged in, the set of Rooms its account is in: one set for
        # every session of the account (Server.account_rooms), so that a
        # JOIN from one session puts them all in the room.
        self.rooms = NO_ROOMS

    @property
    def name(self):
        return self.account.name if self.account else None

    def __repr__(self):
        return "<Session %s %s %s>" % (self.fd, self.address, self.name or "-")


class IrcSession(Session):
    """A client of the IRC listener: a Session (rooms, limits, sendq are
    the same) whose ``protocol`` is the sae_irc.IrcFormatter of its
    rendering capabilities, with IRC's framer and what registration needs.
    Its commands are sae_ircd's; the Server only routes to them."""

    __slots__ = ("nick", "user_given", "caps", "cap_version", "cap_negotiating", "sasl", "credentials",
                 "registered", "away", "echo", "pending_login", "label", "guest", "realname", "labels",
                 "multiline")

    def __init__(self, sock, ip, port, exempt, now, flood_burst, protocol):
        Session.__init__(self, sock, ip, port, exempt, now, flood_burst, protocol)
        self.framer = sae_irc.new_framer()
        self.rooms_on = True  # IRC has channels from the start: every room of the account
        self.nick = None  # until NICK; the account's name once logged in
        self.user_given = False  # USER was sent
        self.caps = frozenset()
        self.cap_version = 0
        self.cap_negotiating = False  # CAP LS/REQ seen, no CAP END yet: registration waits
        self.sasl = None  # the SaslPlain exchange under way
        self.credentials = None  # from PASS, tried when registration ends
        self.registered = False  # 001 sent
        self.away = ""  # AWAY text, kept per session
        self.echo = False  # echo-message: the sender gets its own messages
        self.pending_login = None  # (account, rooms) logged in before registration ended
        self.label = None  # labeled-response: the label of the command being answered
        self.guest = False  # chatting under a guest account (--irc-guests) until it registers
        self.realname = ""  # USER's, shown by WHOIS and WHO ("": the account's name instead)
        self.labels = collections.deque()  # the label (or None) of each message in flight, in order
        self.multiline = None  # the draft/multiline batch it is sending (sae_irc.MultilineBatch)

    def __repr__(self):
        return "<IrcSession %s %s %s>" % (self.fd, self.address, self.name or "-")


class AdminConnection(Connection):
    """An operator on the admin socket (sae_admin.AdminLink is what is said)."""

    __slots__ = ("link", "peer_done")

    def __init__(self, sock):
        Connection.__init__(self, sock, 0)
        self.link = None
        self.peer_done = False  # the peer has sent all it will


class LongAnswer:
    """The lines of an answer too long to queue at once, standing in a
    session's sendq where their bytes would be. Server._write takes a piece
    from it whenever everything queued before it is out, so nothing else
    goes on the wire inside the answer, and broadcasts queue behind it.

    A deque rather than an iterator: the answer knows it is over as it
    hands out its last piece (its request is done then, and the next one
    may run), and the lines already sent are freed as it goes."""

    __slots__ = ("lines", "piece_bytes")

    def __init__(self, lines, piece_bytes):
        self.lines = collections.deque(lines)  # encoded lines, not yet produced
        self.piece_bytes = piece_bytes

    def piece(self) -> bytes:
        """The next whole lines, at most piece_bytes of them (but at least one)."""
        lines = self.lines
        taken = [lines.popleft()]
        size = len(taken[0])
        while lines and size + len(lines[0]) <= self.piece_bytes:
            size += len(lines[0])
            taken.append(lines.popleft())
        return b"".join(taken)


# --- TLS ----------------------------------------------------------------

class TlsSocket(ssl.SSLSocket):
    """A TLS connection that the loop reads and writes as it does a plain
    socket: Session, Connection.flush and Server._read call recv() and
    send() and know nothing of TLS, so a plain connection pays nothing for
    it. The TLS layer's "try again" (want-read, want-write) is the kernel's
    EAGAIN here: the same sendq is kept and the selector says when to go on.

    CPython sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER but not partial writes:
    send() takes all it is given or raises want-write, and OpenSSL then
    remembers the records it has already made. The retry must start with the
    same bytes, at least as many: Connection.flush keeps the queue as it was
    and joins it again, with whatever was queued since behind it. ``owed``
    is how many bytes that is: the length of the last send refused, 0 once
    one has gone through (Server._sendq_exceeded keeps those bytes)."""

    owed = 0

    def recv(self, size, flags=0):
        try:
            data = super().recv(size, flags)
            # A readable event comes from the kernel: bytes TLS has already
            # taken in and decrypted would wait for the next one.
            while data and self.pending():
                data += super().recv(self.pending(), flags)
            return data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError(errno.EAGAIN, "TLS record incomplete") from None

    def send(self, data, flags=0):
        try:
            sent = super().send(data, flags)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self.owed = len(data)
            raise BlockingIOError(errno.EAGAIN, "TLS wants the socket") from None
        self.owed = 0
        return sent

    def close_notify(self) -> bool:
        """Tell the peer, in TLS, that nothing more comes (close_notify), so
        that its TLS layer can tell our end from a cut connection: a clean
        end of stream rather than "EOF in violation of protocol". Done only
        if the socket takes it now: the loop never waits for it, nor for the
        peer's close_notify in return. True if it went."""
        try:
            self.unwrap()  # SSL_shutdown; raises want-read once ours is sent
        except ssl.SSLWantReadError:
            return True
        except (ssl.SSLWantWriteError, OSError, ValueError):
            # The kernel is full (a client that does not read), or the
            # connection is broken: it is closed without.
            return False
        return True  # the peer's close_notify had come already


def make_tls_context(cert_file, key_file):
    """A server context for this certificate and key: TLS 1.2 and newer, the
    ssl module's defaults for a server (no compression, its ciphers), and no
    renegotiation, which a client could use to make the server work."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.load_cert_chain(cert_file, key_file or None)
    context.sslsocket_class = TlsSocket
    return context


def describe_certificate(cert_file):
    """(subject, expiry as a Unix time) of the first certificate in the file,
    or None if there is none that can be read.

    Read from the certificate's DER here, for want of a public way in the
    ssl module: it decodes a certificate only for a verified peer
    (getpeercert) or a CA (get_ca_certs, which leaves out a server's own
    certificate), and _test_decode_cert is private. Only the two fields
    the log needs are read."""
    try:
        with open(cert_file, encoding="ascii", errors="replace") as pem:
            text = pem.read()
        # The key may come first (one file for both), the chain after.
        begin = text.index(PEM_BEGIN)
        end = text.index(PEM_END, begin) + len(PEM_END)
        (certificate,) = der_elements(ssl.PEM_cert_to_DER_cert(text[begin:end]))
        fields = der_sequence(der_sequence(certificate)[0])  # the tbsCertificate's
        if fields[0][0] == DER_VERSION:
            del fields[0]  # absent from version 1 certificates
        # serialNumber, signature, issuer, validity, subject, ...
        validity, subject = der_sequence(fields[3]), der_sequence(fields[4])
        return der_name(subject), der_time(*validity[1])
    except (OSError, ValueError, IndexError):
        return None


PEM_BEGIN, PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
DER_SEQUENCE = 0x30
DER_VERSION = 0xA0  # [0] EXPLICIT, before the serial number
# The names OpenSSL gives the attributes of a subject, as the log has always
# shown them; any other appears as its dotted OID.
X509_ATTRIBUTES = {
    "2.5.4.3": "commonName", "2.5.4.4": "surname", "2.5.4.5": "serialNumber", "2.5.4.6": "countryName",
    "2.5.4.7": "localityName", "2.5.4.8": "stateOrProvinceName", "2.5.4.9": "streetAddress",
    "2.5.4.10": "organizationName", "2.5.4.11": "organizationalUnitName", "2.5.4.12": "title",
    "2.5.4.42": "givenName", "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "userId", "0.9.2342.19200300.100.1.25": "domainComponent",
}
# How each ASN.1 string type of a name's values is encoded (TeletexString
# read as Latin-1, as OpenSSL does); any other type is read as Latin-1.
DER_STRINGS = {0x0C: "utf-8", 0x12: "ascii", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii",
               0x1C: "utf-32-be", 0x1E: "utf-16-be"}


def der_elements(data):
    """The (tag, contents) of each DER element in ``data``, in order; a
    ValueError if they do not fill it exactly."""
    elements, at = [], 0
    while at < len(data):
        if at + 2 > len(data) or data[at] & 0x1F == 0x1F:
            raise ValueError("not DER that a certificate is made of")
        tag, length = data[at], data[at + 1]
        at += 2
        if length & 0x80:  # long form: the length's length, then the length
            size = length & 0x7F
            if not 1 <= size <= 4 or at + size > len(data):
                raise ValueError("bad DER length")
            length = int.from_bytes(data[at:at + size], "big")
            at += size
        if at + length > len(data):
            raise ValueError("DER element longer than what holds it")
        elements.append((tag, data[at:at + length]))
        at += length
    return elements


def der_sequence(element):
    """The elements of a SEQUENCE."""
    tag, contents = element
    if tag != DER_SEQUENCE:
        raise ValueError("not a certificate: a SEQUENCE was expected")
    return der_elements(contents)


def der_oid(contents):
    """An OBJECT IDENTIFIER's dotted form ("2.5.4.3")."""
    arcs, arc = [], 0
    for byte in contents:
        arc = arc << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
    if not arcs:
        raise ValueError("empty OID")
    first = min(arcs[0] // 40, 2)  # the first two arcs share a number
    return ".".join(map(str, [first, arcs[0] - 40 * first] + arcs[1:]))


def der_name(relative_names):
    """An X.509 name as the log gives it: "commonName=chat.lan, organizationName=..."."""
    pairs = []
    for _, relative in relative_names:  # each a SET of types and values
        for _, attribute in der_elements(relative):
            (_, oid), (value_tag, value) = der_elements(attribute)
            name = der_oid(oid)
            pairs.append("%s=%s" % (X509_ATTRIBUTES.get(name, name),
                                    value.decode(DER_STRINGS.get(value_tag, "latin-1"), "replace")))
    return ", ".join(pairs)


def der_time(tag, contents):
    """A certificate's UTCTime (YYMMDDHHMMSSZ, 1950 to 2049) or
    GeneralizedTime (YYYYMMDDHHMMSSZ) as a Unix time."""
    text = contents.decode("ascii")
    digits = {0x17: 12, 0x18: 14}.get(tag)
    if digits is None or len(text) != digits + 1 or text[-1] != "Z" or not text[:-1].isdigit():
        raise ValueError("not a certificate's time: %r" % text)
    if tag == 0x17:
        year, rest = int(text[:2]), text[2:]
        year += 1900 if year >= 50 else 2000
    else:
        year, rest = int(text[:4]), text[4:]
    month, day, hour, minute, second = (int(rest[at:at + 2]) for at in range(0, 10, 2))
    return int(datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc).timestamp())


class TlsCertificate:
    """The server's certificate and key, and the context that TLS listeners
    hand to new connections. ``reload`` makes a new context from the files
    (a renewal); open connections keep the one they were made with."""

    def __init__(self, cert_file, key_file):
        self.cert_file, self.key_file = cert_file, key_file
        self.context = make_tls_context(cert_file, key_file)
        self.described = describe_certificate(cert_file)

    def reload(self):
        """None, or why the files were not taken (the old ones stay)."""
        try:
            context = make_tls_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError, ValueError) as error:
            return "%s" % (getattr(error, "strerror", None) or error)
        self.context = context
        self.described = describe_certificate(self.cert_file)
        return None

    def summary(self):
        if self.described is None:
            return "%s (subject and expiry unknown)" % self.cert_file
        subject, expires = self.described
        return "%s: %s, expires %s" % (self.cert_file, subject,
                                       time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires)))

    def days_left(self, now_wall):
        return None if self.described is None else (self.described[1] - now_wall) / 86400.0


# The protocols a listener may speak. IRC (issue 14) adds "irc" here and a
# branch in Server._open_session.
V1 = "v1"
IRC = "irc"


class Listener:
    """One listening socket: the port it asks for, the protocol its
    connections speak, and its TlsCertificate (None: plain). The server's
    listeners are a list of these."""

    __slots__ = ("kind", "port", "tls", "sock")

    def __init__(self, kind, port, tls=None):
        self.kind, self.port, self.tls = kind, port, tls
        self.sock = None

    def describe(self, host):
        return "%s%s on %s:%d" % ("TLS " if self.tls else "", self.kind, host, self.port)


class TlsHandshake:
    """A TLS connection before its handshake is done: no Session yet, but it
    counts against the connection limits. Driven by the loop (want-read,
    want-write), closed at its deadline by a timer."""

    __slots__ = ("sock", "fd", "ip", "port", "exempt", "listener", "address", "events")

    def __init__(self, sock, ip, port, exempt, listener):
        self.sock, self.fd, self.ip, self.port = sock, sock.fileno(), ip, port
        self.exempt, self.listener = exempt, listener
        self.address = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
        self.events = selectors.EVENT_READ


def is_loopback(ip):
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def clear_password_refusal(server, session):
    """Why this session may not send a password (None: it may). With
    --require-tls, passwords do not cross the network in clear: a session on
    a plain listener from another machine is told to use TLS. One rule for
    every protocol: v1's LOGIN and REGISTER ask it, and so do IRC's PASS,
    AUTHENTICATE (SASL), REGISTER and NickServ's IDENTIFY and REGISTER,
    each naming the TLS port of its own protocol."""
    if not server.require_tls or session.sock.__class__ is TlsSocket or is_loopback(session.ip):
        return None
    ports = [listener.port for listener in server.listeners
             if listener.tls is not None and listener.kind == session_kind(session)]
    if not ports:
        # v1 always has one (--require-tls needs --tls-port); IRC's may be off.
        return "passwords are only accepted over TLS here, and this server has no TLS port for IRC"
    return "passwords are only accepted over TLS here: reconnect with TLS to port %d" % ports[0]


def log_in_first(server, session):
    """ERR 401's text before LOGIN. Where --require-tls would refuse this
    session's password, it says where to log in instead, before the user
    types a password here (v1 has no greeting to say it in). Its words
    leave out "password": clients read a 401 that names one as a failed
    LOGIN."""
    if clear_password_refusal(server, session) is None:
        return "log in first"
    ports = [listener.port for listener in server.listeners if listener.tls is not None and listener.kind == V1]
    return "log in first, over TLS here" + (": reconnect with TLS to port %d" % ports[0] if ports else "")


def session_kind(session):
    return IRC if session.__class__ is IrcSession else V1


# --- work off the loop --------------------------------------------------

class StorageThreads:
    """The storage threads, as an executor: every call runs alone, after
    every call submitted before it and before any submitted after it, as on
    one thread, except batches of messages (``submit(..., batch=True)``),
    up to ``width`` of which may run at once, one per thread, each on a
    connection of the store's own (Store.concurrent_batches). So a read
    still sees every message accepted before it and nothing accepted after
    it, and delete_room never meets a batch halfway, while the next batch
    is written as the last one's commit is flushed to disk. Calls end in
    any order; Workers hands them back to the loop in order."""

    def __init__(self, threads):
        self.width = threads  # batches at once; a cluster's chain takes them one at a time
        self.waiting = collections.deque()  # (future, batch, work, args), in the order submitted
        self.batches = 0  # batches running
        self.alone = False  # whether a call that is no batch is running
        self.stopping = False
        self.condition = threading.Condition()
        self.threads = [threading.Thread(target=self._serve, name="sae-storage-%d" % number, daemon=True)
                        for number in range(threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, work, *args, batch=False):
        future = concurrent.futures.Future()
        with self.condition:
            self.waiting.append((future, batch, work, args))
            self.condition.notify()
        return future

    def _startable(self):
        if not self.waiting or self.alone:
            return False
        if self.waiting[0][1]:
            return self.batches < self.width
        return not self.batches

    def _serve(self):
        condition = self.condition
        while True:
            with condition:
                while not self._startable():
                    if self.stopping and not self.waiting:
                        return
                    condition.wait()
                future, batch, work, args = self.waiting.popleft()
                if batch:
                    self.batches += 1
                else:
                    self.alone = True
                condition.notify()  # the next may be a batch that can start beside this one
            if future.set_running_or_notify_cancel():
                try:
                    result = work(*args)
                except BaseException as error:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            with condition:
                if batch:
                    self.batches -= 1
                else:
                    self.alone = False
                condition.notify_all()

    def shutdown(self):
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        for thread in self.threads:
            thread.join()


class Workers:
    """The threads for what may block, and the way back from them.

    Storage runs on threads of its own (StorageThreads: its calls run one
    at a time, in the order they were made, so that a read sees every write
    queued before it; only batches of messages may overlap, two at a time
    on MariaDB), unless the store is one whose calls are as short as a
    send() (``Store.on_loop``: a local SQLite file, whose commits go to the
    page cache), which the loop calls itself: no hand-over to a thread and
    back for every batch, which cost more than the batch itself. Password
    hashing always runs on a few hashing threads. Either way a finished job
    is put on ``done``, and the loop takes it at the end of its turn
    (``completed``: storage jobs in the order they were submitted, whichever
    ended first); a thread also wakes the loop through a socketpair it
    watches (``wakeup``). Only the loop thread calls anything here but
    ``wake``, which signal handlers use too."""

    def __init__(self, hash_threads, storage_on_loop=False, storage_threads=1):
        self.pools = {"hashing": concurrent.futures.ThreadPoolExecutor(hash_threads, thread_name_prefix="sae-hash")}
        self.threaded_storage = not storage_on_loop
        if self.threaded_storage:
            self.pools["storage"] = StorageThreads(storage_threads)
        self.storage_jobs = 0  # submitted to storage and not yet back on the loop
        # (context, future) of those storage jobs, in the order submitted:
        # one is handed back once every one before it is.
        self.storage_pending = collections.deque()
        self.done = collections.deque()  # (pool, context, future), appended by worker threads
        self.wakeup, self.waker = socket.socketpair()
        self.wakeup.setblocking(False)
        self.waker.setblocking(False)

    def submit(self, pool, context, work, *args, batch=False):
        """Run work(*args) in ``pool``; ``completed`` hands back ``context``
        with the future once it is done. ``batch``: a batch of messages,
        which may be stored beside another (see StorageThreads)."""
        executor = self.pools.get(pool)
        if executor is None:  # storage on the loop: done now, taken at the end of the turn
            future = concurrent.futures.Future()
            try:
                future.set_result(work(*args))
            except Exception as error:
                future.set_exception(error)
        elif pool == "storage":
            future = executor.submit(work, *args, batch=batch)
        else:
            future = executor.submit(work, *args)
        if pool == "storage":
            self.storage_jobs += 1
            self.storage_pending.append((context, future))
            context = None  # the entry on ``done`` only says that one has ended
        if executor is None:
            self.done.append((pool, context, future))
            return
        # On the worker thread: hand over, touch nothing else.
        future.add_done_callback(lambda done: (self.done.append((pool, context, done)), self.wake()))

    def wake(self):
        """Wake the loop (from any thread, or a signal handler)."""
        try:
            self.waker.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the loop is already due to wake up

    def woken(self):
        """Read the wake-ups: what woke the loop is taken at the end of the turn."""
        try:
            while self.wakeup.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def completed(self):
        """The jobs done since the last call, as (pool, context, future)."""
        done, pending = self.done, self.storage_pending
        while done:
            pool, context, future = done.popleft()
            if pool != "storage":
                yield pool, context, future
                continue
            # Whichever storage job this was, what is handed back is every
            # job done at the head of the queue: a batch that ended before
            # the one submitted before it waits for that one.
            while pending and pending[0][1].done():
                context, future = pending.popleft()
                self.storage_jobs -= 1
                yield pool, context, future

    def close(self, store):
        """Close the store on a thread of its own, then stop every thread."""
        if "storage" in self.pools:
            self.pools["storage"].submit(store.close).result()
        else:
            store.close()
        for pool in self.pools.values():
            pool.shutdown()
        self.wakeup.close()
        self.waker.close()


class Counters:
    """What the loop has done, for the operator (``stats``) and the log at
    exit: how many messages each storage batch and each pass over the room
    carried is what the cost of a message comes down to."""

    __slots__ = ("started_at", "turns", "batches", "overlapped", "stored", "passes", "links_heard", "ranges_read")

    def __init__(self, now):
        self.started_at = now
        self.turns = 0  # of the loop
        self.batches = 0  # handed to storage
        self.overlapped = 0  # of them, handed over while another was being stored
        self.stored = 0  # messages stored
        self.passes = 0  # over the room's members, sending
        # In a cluster: links of the other servers heard over Redis, and
        # ranges of the chain read back from the database instead.
        self.links_heard = 0
        self.ranges_read = 0

    def describe(self, now):
        per = lambda part, whole: part / whole if whole else 0.0  # noqa: E731
        cluster = ""
        if self.links_heard or self.ranges_read:
            cluster = ", %d links heard from the other servers, %d ranges read back from the database" % (
                self.links_heard, self.ranges_read)
        overlapped = " %d of them beside another," % self.overlapped if self.overlapped else ""
        return ("up %ds: %d messages stored in %d batches (%.1f per batch),%s %d passes over the room "
                "(%.1f messages per pass), %d loop turns%s" % (
                    now - self.started_at, self.stored, self.batches, per(self.stored, self.batches), overlapped,
                    self.passes, per(self.stored, self.passes), self.turns, cluster))


# --- rooms ------------------------------------------------------------

class Room:
    """A room's sessions online, and the fan-out of what is said and done in it.

    It knows no wire format: each member session speaks a protocol (a
    module with sae_protocol's format_* functions), an event is rendered once
    per protocol among the members by ``render(protocol) -> bytes``, and the
    same bytes are queued for every member who speaks it. Queuing puts the
    room on ``flushes`` (the Server's list), and the Server sends at the
    end of the loop iteration.

    ``members`` holds the sessions that get the room's messages: every
    session of a member account in the default room (whose messages are
    v1's MSG lines), only those that opted in to protocol v1.1 in any other.
    ``accounts`` is which member accounts are online (for LIST); who is a
    member at all is the store's to say. The Server also keeps a Room of
    every online session (``info`` None), for what is said to everyone."""

    __slots__ = ("info", "members", "accounts", "pending", "flushes")

    def __init__(self, info, flushes):
        self.info = info  # the RoomInfo as stored (id, name as made, topic, ...)
        self.members = {}  # protocol -> set of member sessions
        self.accounts = set()  # name_keys of the member accounts online
        self.pending = False  # members have bytes queued in this iteration
        self.flushes = flushes

    @property
    def name(self):
        return self.info.name if self.info is not None else "(everyone online)"

    def __len__(self):
        return sum(len(sessions) for sessions in self.members.values())

    def __repr__(self):
        return "<Room %s>" % self.name

    def add(self, session):
        self.members.setdefault(session.protocol, set()).add(session)

    def discard(self, session):
        self.members.get(session.protocol, set()).discard(session)

    def has(self, session):
        return session in self.members.get(session.protocol, ())

    def sessions(self):
        return [session for sessions in self.members.values() for session in sessions]

    def send(self, render):
        """Render an event once per protocol and queue it for every member."""
        self.queue(self.render(render))

    def render(self, render):
        """An event as each protocol among the members says it: {protocol: bytes}."""
        return {protocol: render(protocol) for protocol, sessions in self.members.items() if sessions}

    def queue(self, rendered):
        """Queue rendered bytes for every member, the same bytes for all who
        speak one protocol."""
        for protocol, sessions in self.members.items():
            data = rendered.get(protocol)
            if data is not None:
                size = len(data)
                for session in sessions:
                    session.sendq.append(data)
                    session.sendq_bytes += size
        if not self.pending:
            self.pending = True
            self.flushes.append(self)


def render_topic(info):
    """A room's TOPIC line, for ``Room.send`` or ``Server.send_each``."""
    if info.topic_set_by is None:  # never set
        return lambda protocol: protocol.format_topic(info.name)
    return lambda protocol: protocol.format_topic(info.name, info.topic_set_by, info.topic_set_at, info.topic)


def describe_owner(owner):
    """Whom the log says a fault or a failed job was for."""
    if isinstance(owner, Session):
        return "%s (%s)" % (owner.address, owner.name or "not logged in")
    return "the operator on the %s" % ("console" if owner.prompt else "admin socket")


# --- the server ---------------------------------------------------------

class Server:
    def __init__(self, store, host="0.0.0.0", port=12345, limits=None, admin_password=None, storage_on_loop=None,
                 tls=None, tls_port=None, require_tls=False, irc=None):
        self.store = store
        # The IRC listener's settings (sae_ircd.IrcOptions); listen_irc opens it.
        self.irc = irc or sae_ircd.IrcOptions()
        self.admin_password = admin_password  # None: the operator needs none
        self.limits = limits or Limits()
        self.host, self.port = host, port
        self.selector = selectors.DefaultSelector()
        self.sessions = {}  # fd -> Session
        self.flushes = []  # Rooms with bytes queued in this iteration
        # Every live room, loaded here, before any thread uses the store,
        # and kept up to date as JOINs make them and the operator deletes
        # them. The room protocol v1 speaks of (--default-room) is made sure
        # of first; its Room is ``room``, whose id goes with every message
        # said in it, every v1 HISTORY and every new account.
        default = store.ensure_room(self.limits.default_room, proto.format_timestamp(wall_ms()))
        self.rooms = {room_key(info.name): Room(info, self.flushes) for info, _ in store.list_rooms()}
        self.room = self.rooms[room_key(default.name)]
        self.default_only = frozenset([self.room])  # the rooms of most accounts
        if len(self.rooms) > self.limits.rooms_max:
            log.warning("the database holds %d rooms, more than --rooms-max %d: no JOIN makes a new one "
                        "until some are deleted", len(self.rooms), self.limits.rooms_max)
        self.everyone = Room(None, self.flushes)  # every online session: presence, the operator's say
        # The name_keys of the IRC guests' accounts (--irc-guests), online or
        # not, kept as they are made and registered: what marks a guest to
        # others (no account tag on IRC, a "~" in v1's USERS). Read once here
        # (a guest's hash is no real one, so the read is of every account).
        self.guests = {name_key(name) for name in store.names_with_hash(GUEST_HASH)}
        self.online = {}  # account name_key -> [Session], in login order
        # account name_key -> the set of Rooms it is in, while it is online
        # (read with the account at LOGIN; the store has it the rest of the time).
        self.account_rooms = {}  # name_key of an online account -> frozenset of its Rooms (see _set_rooms)
        self.guards = Guards(self.limits)
        self.timers = []  # heap of (monotonic time, sequence, owner, function): work due later
        self._timer_order = itertools.count()
        self.max_connections = self.limits.max_connections
        self.accept_paused_until = None
        self.accept_failing = False  # out of descriptors since the last accept
        self.outbox = []  # (Session, NewMessage) accepted and not yet handed to storage
        self.batches_in_flight = 0  # handed to storage, not yet delivered
        self.dirty = set()  # sessions with output queued in this iteration
        self.last_pass_cost = 0.0  # seconds the last pass over the room took (see _gather)
        # Sessions the kernel would not take all from, waiting for EVENT_WRITE.
        # While there are many, input is not looked for between passes
        # (_gather, _pass): select() would hand back every one of them.
        self.behind_count = 0
        self.last_batch_size = 0  # messages in the last batch stored
        # Every message with an id up to this one is stored and was
        # delivered (or was history before the server started); every one
        # after it will be delivered. A catch-up (HISTORY ... after=)
        # answers up to the mark as it was when asked: what comes after
        # reaches the session live, and must not come twice.
        self.delivered_upto = store.last_message_id()
        self.now = monotonic()
        self.counters = Counters(self.now)
        self._timestamp = None  # this iteration's message timestamp
        self.next_sweep = self.now + SWEEP_INTERVAL
        self.listener = None  # the plain v1 Listener's socket
        # Every port the server listens on: (protocol, port, TlsCertificate
        # or None). IRC and IRC over TLS are two more rows.
        self.listeners = [Listener(V1, port)]
        self.tls = tls  # the TlsCertificate, if any
        if tls is not None and tls_port is not None:
            self.listeners.append(Listener(V1, tls_port, tls))
        self.require_tls = require_tls
        self.handshakes = {}  # fd -> TlsHandshake not yet done
        self.console = None  # the AdminLink on stdin, if any
        self.admin_listener = None
        self.admin_path = None
        self.admin_links = set()  # AdminLinks on the admin socket
        self.stop_reason = None
        self.storage_down = False
        # Several servers, one chat (sae_cluster; start_cluster): None alone.
        self.cluster = None  # the RedisLink
        self.instance = None  # this server's name in the cluster
        self.sequencer = None  # links of the chain delivered in order
        self.cluster_heard = collections.deque()  # (kind, payload) from the RedisLink's threads
        self.redis_up = None  # None until the first subscription
        self.chain_reading = False  # a read of missed links is due or under way
        self.elsewhere = {}  # instance name -> sae_cluster.Peer: the other servers heard of
        # Bans another server stored lately: name_key -> (reason, when heard).
        # A LOGIN here may have read its account just before that ban was
        # committed; its second check (login_checked) looks here too.
        self.bans_heard = {}
        self.next_beat = 0.0
        # The session (or operator's AdminLink) whose command or completion
        # runs now, as asyncio keeps a callback's context: work it offloads
        # is charged to it, so that a failing completion costs that session.
        self.running_for = None
        self.workers = Workers(self.limits.hash_threads,
                               store.on_loop if storage_on_loop is None else storage_on_loop,
                               store.concurrent_batches)
        store.on_batches_free = self.workers.wake  # see _batch_may_go
        # Batches of messages stored at once (see _settle): two on MariaDB
        # alone, one in a cluster, whose chain takes them in turn.
        self.batches_at_once = store.concurrent_batches if self.workers.threaded_storage else 1
        # Batches in flight whose ids the database gives (see _store_outbox),
        # and when the last batch came back.
        self.numbering = 0
        self.last_batch_back = -math.inf
        self.selector.register(self.workers.wakeup, selectors.EVENT_READ, self.workers.woken)
        # Unknown names are checked against this, so they cost what a real
        # account costs and the answer does not tell whether a name exists.
        self.dummy_hash = hash_password("not a password", self.limits.scrypt_n)

    # -- start and stop --

    def listen(self):
        for listener in self.listeners:
            self._open_listener(listener)
        self.listener = self.listeners[0].sock
        self.port = self.listeners[0].port
        if self.tls is not None:
            self.check_certificate()
        soft = raise_open_file_limit(self.max_connections + FD_RESERVE)
        if soft != resource.RLIM_INFINITY and self.max_connections > soft - FD_RESERVE:
            self.max_connections = max(1, soft - FD_RESERVE)
            log.warning("open-file limit is %d, and the hard limit lets it go no higher: at most %d connections "
                        "instead of %d (raise the hard limit: LimitNOFILE= in the systemd unit, or "
                        "/etc/security/limits.conf, or lower --max-connections)",
                        soft, self.max_connections, self.limits.max_connections)

    def listen_irc(self, port, tls_port=None):
        """The IRC listener on the same host (port 0 picks a free one), and
        with a certificate, IRC over TLS on ``tls_port``; the plain one's port."""
        added = [Listener(IRC, port)]
        if self.tls is not None and tls_port is not None:
            added.append(Listener(IRC, tls_port, self.tls))
        for listener in added:
            self._open_listener(listener)
            self.listeners.append(listener)
        return added[0].port

    def _open_listener(self, listener):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener.sock = socket.create_server((self.host, listener.port), family=family, backlog=1024)
        listener.sock.setblocking(False)
        listener.port = listener.sock.getsockname()[1]
        self.selector.register(listener.sock, selectors.EVENT_READ, partial(self._accept, listener))

    def listen_admin(self, path):
        """The admin socket: mode 0600, so only the server's user (and root)
        can reach it; removed again on exit."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        # Only a socket may be replaced: a mistyped path can name the
        # database, and unlinking it would lose every account and message.
        if mode is not None and not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, "%s exists and is not a socket; not replacing it" % path)
        if mode is not None:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # left behind by a server that died
            else:
                raise OSError(errno.EADDRINUSE, "another server answers on %s" % path)
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_mask)
        os.chmod(path, 0o600)
        listener.listen(16)
        listener.setblocking(False)
        self.admin_listener, self.admin_path = listener, path
        self.selector.register(listener, selectors.EVENT_READ, self._accept_admin)
        log.info("admin socket %s", path)

    def open_console(self, fd_in, fd_out):
        """Commands from the operator's terminal, read by this loop."""
        def write(text):
            data = text.encode("utf-8")
            try:
                while data:
                    data = data[os.write(fd_out, data):]
            except OSError:  # the terminal is gone (hung up)
                self.console.end()

        self.console = AdminLink(self, fd_in, write, self._close_console, prompt=True)
        self.selector.register(fd_in, selectors.EVENT_READ, self._console_readable)
        self.console.start()

    def _console_readable(self):
        console = self.running_for = self.console
        try:
            self._console_read()
        except Exception:
            # The console is closed rather than fail on every key; the admin
            # socket and signals still reach the server.
            self._fault(console, "an operator's command")
        finally:
            self.running_for = None

    def _console_read(self):
        try:
            data = os.read(self.console.read_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.console.feed(data)
        else:
            log.info("console closed (end of input); still serving")
            self.console.end()

    def _close_console(self):
        if self.console is None:
            return
        set_terminal_echo(self.console.read_fd, True)
        self.selector.unregister(self.console.read_fd)
        self.console = None

    def _accept_admin(self):
        try:
            sock, _ = self.admin_listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        connection = AdminConnection(sock)
        connection.link = AdminLink(self, sock.fileno(), lambda text: self._admin_write(connection, text),
                                    lambda: self._admin_close(connection))
        self.admin_links.add(connection.link)
        self._admin_update(connection)
        connection.link.start()

    def _admin_event(self, connection):
        self.running_for = connection.link
        try:
            self._admin_io(connection)
        except Exception:
            self._fault(connection.link, "an operator's command")
        finally:
            self.running_for = None

    def _admin_io(self, connection):
        link = connection.link
        if connection.sendq:
            self._admin_write(connection, "")
        if link.ended or connection.peer_done:
            return
        try:
            data = connection.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            link.feed(data)
        else:
            connection.peer_done = True  # answer what was asked, then close
        self._admin_update(connection)

    def _admin_write(self, connection, text):
        if connection.link.ended:
            return
        if text:
            connection.send(text.encode("utf-8"))
        if not connection.flush():
            connection.sendq.clear()
            connection.peer_done = True
        self._admin_update(connection)

    def _admin_update(self, connection):
        link = connection.link
        if link.ended:
            return
        if connection.peer_done and not connection.sendq and not link.waiting:
            link.end()
            return
        events = (0 if connection.peer_done else selectors.EVENT_READ) | (WRITE if connection.sendq else 0)
        if events != connection.events:
            if connection.events == 0:
                self.selector.register(connection.sock, events, lambda: self._admin_event(connection))
            elif events == 0:
                self.selector.unregister(connection.sock)
            else:
                self.selector.modify(connection.sock, events, lambda: self._admin_event(connection))
            connection.events = events

    def _admin_close(self, connection):
        connection.flush()  # the last words, if the kernel takes them
        if connection.events:
            self.selector.unregister(connection.sock)
        connection.sock.close()
        self.admin_links.discard(connection.link)

    def stop(self, reason="server shutting down"):
        """Ask for a graceful stop: callable from any thread."""
        self.stop_reason = self.stop_reason or reason
        self.workers.wake()

    def wakeup_fd(self) -> int:
        """A descriptor whose write wakes the loop (for signal.set_wakeup_fd)."""
        return self.workers.waker.fileno()

    def run(self) -> bool:
        """Serve until stop(); then finish what was accepted and say BYE.
        False if a fault outside any session stopped it: the shutdown is the
        same orderly one, so that nothing accepted is lost."""
        in_order = True
        try:
            while self.stop_reason is None:
                self.iterate()
        except Exception:
            log.exception("internal error in the loop: shutting down")
            self.stop_reason = self.stop_reason or "server shutting down (internal error)"
            in_order = False
        return self._shut_down() and in_order

    def iterate(self, max_wait=SWEEP_INTERVAL):
        """One turn of the loop. A caller turning it by hand under a clock
        that does not move (the tests) caps the wait with ``max_wait``."""
        wake_at = self.next_sweep
        if self.accept_paused_until is not None:
            wake_at = min(wake_at, self.accept_paused_until)
        if self.timers:
            wake_at = min(wake_at, self.timers[0][0])
        ready = self.selector.select(max(0.0, min(wake_at - self.now, SWEEP_INTERVAL, max_wait)))
        self.now = monotonic()
        self._timestamp = None
        self.counters.turns += 1
        # Only the timers due when the turn began: one a timer sets for "now"
        # (a flood wait rounded to nothing) waits for the next turn.
        due = []
        while self.timers and self.timers[0][0] <= self.now:
            due.append(heapq.heappop(self.timers))
        for _, _, owner, function in due:
            self.running_for = owner
            try:
                function()
            except Exception:
                self._fault(owner, "a timer")
            self.running_for = None
        if self.accept_paused_until is not None and self.now >= self.accept_paused_until:
            self.accept_paused_until = None
            for listener in self.listeners:
                if listener.sock is not None:
                    self.selector.register(listener.sock, selectors.EVENT_READ, partial(self._accept, listener))
        self._dispatch(ready)
        # Messages wait to be stored and delivered: whatever input is already
        # there goes into the same batch and the same pass over the room.
        if self.outbox and self._batch_may_go() and self.last_pass_cost and self.behind_count < BEHIND_MANY:
            self._gather()
        if self.now >= self.next_sweep:
            self.sweep()
        self._settle()
        self._flush()

    def _settle(self):
        """Store what was accepted, and take what storage has done, until
        neither is left for now.

        Group commit: while as many batches are being stored as the store
        takes at once (``batches_at_once``), what is accepted meanwhile
        waits for one of them and then goes as one batch. Fewer, fuller
        batches mean fewer passes over the room to deliver them. On MariaDB
        alone two overlap: a message said while a batch is stored waits
        about one storage time (its own) instead of up to two (the rest of
        that one, then its own), and the two commits can share a flush of
        the database's log. Storage on the loop is done at once: this turn's
        messages are one batch, delivered in this turn's pass, and what a
        completion starts (the next lines of a session that waited) is done
        in the same turn."""
        while True:
            if self.outbox and self._batch_may_go():
                self._store_outbox()
            if self.cluster_heard:
                self._cluster_news()
            if not self.workers.done:
                break
            self._run_completed()

    def _dispatch(self, ready):
        for key, mask in ready:
            target = key.data
            # Almost free while nothing is raised; a bug costs this one event's connection.
            try:
                if target.__class__ is Session or target.__class__ is IrcSession:
                    if mask & selectors.EVENT_READ:
                        self._read(target)
                    if mask & selectors.EVENT_WRITE and self.sessions.get(target.fd) is target:
                        self._write(target)
                else:
                    target()
            except Exception:
                self.running_for = None  # in case the fault left it set
                if isinstance(target, Session):
                    self._fault(target, "its socket")
                else:
                    self._fault(None, getattr(target, "__name__", "a callback"))

    def _gather(self):
        """Read on while more input is ready, before the pass that delivers
        this turn's messages: a pass costs one send() per member, however
        many messages it carries (a send of 7 KB costs the kernel not much
        more than one of 100 bytes), so under load fuller passes are most of
        what a message costs. A pass waits at most as long as the last one
        took. When nothing more is ready it waits on only in a flood (the
        last batch had GATHER_WAIT_BATCH_MIN messages or more), and only
        until the batch is as big as the last one: on a busy machine the
        senders' next lines come a moment later, and a quiet room's message
        goes at once."""
        until = self.now + self.last_pass_cost
        expected = self.last_batch_size if self.last_batch_size >= GATHER_WAIT_BATCH_MIN else 0
        for _ in range(GATHER_ROUNDS):
            ready = self.selector.select(0)
            if not ready:
                if len(self.outbox) >= expected:
                    return
                left = until - monotonic()
                if left <= 0:
                    return
                ready = self.selector.select(left)
                if not ready:
                    return
            self._dispatch(ready)
            if monotonic() >= until:
                return

    def _shut_down(self) -> bool:
        """False if a fault cut the goodbyes short; the admin socket and the
        database are closed all the same."""
        reason = self.stop_reason
        log.info("shutting down: %s", reason)
        # Nothing the sweep does matters any more (the linger below has its
        # own deadline), and a sweep that failed must not fail again now.
        self.next_sweep = math.inf
        in_order = True
        try:
            for listener in self.listeners:
                if listener.sock is not None:
                    if self.accept_paused_until is None:  # else it is not registered
                        self.selector.unregister(listener.sock)
                    listener.sock.close()
                    listener.sock = None
            self.listener = None
            for handshake in list(self.handshakes.values()):
                self._end_handshake(handshake, None)
            # Lines already read but not executed were never answered: drop them.
            # What was accepted is stored and delivered before anyone gets BYE.
            for session in list(self.sessions.values()):
                session.held = NO_LINES
                session.reading = False
                self._update_events(session)
            deadline = self.now + 10.0
            while (self.workers.storage_jobs or self.outbox or self._sessions_waiting()) and self.now < deadline:
                self.iterate()
            for session in list(self.sessions.values()):
                self.close_session(session, proto.format_bye(reason), "server shutting down")
            deadline = self.now + CLOSE_LINGER
            while self.sessions and self.now < deadline:
                self.iterate()
        except Exception:
            log.exception("internal error while shutting down: closing what is left")
            in_order = False
        for session in list(self.sessions.values()):
            self._drop(session, None)
        for link in list(self.admin_links):
            link.end()
        if self.admin_listener is not None:
            self.selector.unregister(self.admin_listener)
            self.admin_listener.close()
            try:
                os.unlink(self.admin_path)
            except OSError:
                pass
        if self.console is not None:
            self.console.end()
        if self.cluster is not None:
            self.relay("gone")
            self.cluster.close()
        self.workers.close(self.store)
        self.selector.close()
        log.info("stopped; %s", self.counters.describe(self.now))
        return in_order

    def _sessions_waiting(self):
        # A closed session's answers are of no use to it: one whose
        # completion failed keeps its inflight count and is not waited for.
        return any(s.inflight and s.state is not CLOSING for s in self.sessions.values())

    # -- work off the loop --

    def offload(self, pool, on_done, work, *args, batch=False):
        """Run work(*args) on the workers' ``pool`` ("storage" or "hashing");
        on_done(result, error) runs later on the loop thread, charged to the
        session (or operator) this was started for. ``batch``: a batch of
        messages (see StorageThreads)."""
        self.workers.submit(pool, (on_done, self.running_for), work, *args, batch=batch)

    def _run_completed(self):
        for pool, (on_done, owner), future in self.workers.completed():
            error = future.exception()
            if isinstance(error, StorageUnavailable):
                if not self.storage_down:
                    log.error("storage unavailable: %s", error)
                self.storage_down = True
            elif error is not None:
                # on_done answers for it; the log says whose it was.
                log.error("worker failed%s", " for %s" % describe_owner(owner) if owner else "", exc_info=error)
            elif pool == "storage" and self.storage_down:
                log.info("storage available again")
                self.storage_down = False
            self.running_for = owner
            try:
                on_done(None if error else future.result(), error)
            except Exception:
                self._fault(owner, "a worker's completion")
        self.running_for = None

    def _fault(self, owner, where):
        """Called in an except block: a bug met while serving ``owner`` (a
        Session, an AdminLink, or None for no one) is logged with its
        traceback and costs that connection; everyone else is served on.
        Never the line or its fields: a LOGIN line holds a password."""
        if owner is None:
            log.exception("internal error in %s: dropped", where)
            return
        log.exception("internal error in %s for %s: closing it", where, describe_owner(owner))
        if isinstance(owner, Session):
            self.close_session(owner, owner.protocol.format_bye("internal error"), "internal error")
        elif not owner.ended:
            owner.answer("internal error")
            owner.end()

    def store_call(self, on_done, method, *args):
        """A storage call, queued behind the messages accepted so far so that
        reads see every message accepted before them."""
        if self.outbox:
            self._store_outbox()
        self.offload("storage", on_done, method, *args)

    def start_command(self, session, steps):
        """Drive a command that waits (a generator, see Wait) to its end."""
        try:
            wait = next(steps)
        except StopIteration:
            return  # answered without waiting
        session.inflight += 1
        self._wait(session, steps, wait)

    def _resume(self, session, steps, result, error):
        try:
            wait = steps.send(result) if error is None else steps.throw(error)
        except StopIteration:
            # The one place that decides what runs next for a session whose
            # command waited: its next lines, in order.
            session.inflight -= 1
            self.run_held(session)
            return
        # An exception out of the command (a bug, or a worker's error it does
        # not expect) reaches the loop's handler, which closes this session.
        self._wait(session, steps, wait)

    def _wait(self, session, steps, wait):
        if wait.pool == "timer":
            self.call_at(wait.work, lambda: self._resume(session, steps, None, None))
            return
        resume = lambda result, error: self._resume(session, steps, result, error)  # noqa: E731
        if wait.pool == "storage":
            self.store_call(resume, wait.work, *wait.args)
        else:
            self.offload(wait.pool, resume, wait.work, *wait.args)

    def call_at(self, when, function, owner=None):
        """Run function() on the loop at monotonic time ``when``, charged
        (like offloaded work) to ``owner``, by default whom it is done for now."""
        heapq.heappush(self.timers, (when, next(self._timer_order), owner or self.running_for, function))

    def _throttle_over(self, session):
        if self.guards.throttle_over(session) and self.sessions.get(session.fd) is session:
            self.run_held(session)

    def timestamp(self) -> str:
        if self._timestamp is None:
            self._timestamp = proto.format_timestamp(wall_ms())
        return self._timestamp

    # -- connections --

    def _accept(self, listener):
        if self.accept_paused_until is not None:
            # Another listener ran out of descriptors earlier in this turn
            # and paused them all: this one was ready in the same select().
            return
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The connection waits in the backlog; the connections we
                    # have keep being served. Said once, not every pause.
                    if not self.accept_failing:
                        log.error("cannot accept: %s; trying again every %.1fs", error.strerror, ACCEPT_PAUSE)
                        self.accept_failing = True
                    # Every listener: the descriptors are the process's.
                    for each in self.listeners:
                        self.selector.unregister(each.sock)
                    self.accept_paused_until = self.now + ACCEPT_PAUSE
                return
            if self.accept_failing:
                log.info("accepting connections again")
                self.accept_failing = False
            ip, port = address[:2]
            exempt = self.limits.is_exempt(ip)
            if (len(self.sessions) + len(self.handshakes) >= self.max_connections
                    or not self.guards.admits(ip, exempt)):
                log.warning("refused connection from %s: too many connections", ip)
                # On a TLS port the client expects a handshake: plain text
                # would read as a TLS error, and a handshake is what a flood
                # must not cost. It gets a clean close; the log says why.
                if listener.tls is None:
                    try:
                        sock.send(proto.format_err(proto.UNAVAILABLE, "too many connections")
                                  if listener.kind != IRC
                                  else sae_irc.format_line("ERROR", "Closing Link: too many connections"))
                    except OSError:
                        pass
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.guards.connected(ip)
            if listener.tls is None:
                self._open_session(sock, ip, port, exempt, listener)
            else:
                self._start_handshake(sock, ip, port, exempt, listener)

    def _open_session(self, sock, ip, port, exempt, listener):
        if listener.kind == IRC:
            session = sae_ircd.new_session(self, sock, ip, port, exempt)
        else:
            session = Session(sock, ip, port, exempt, self.now, self.limits.flood_burst)
        self.sessions[session.fd] = session
        self.selector.register(sock, selectors.EVENT_READ, session)
        if listener.tls is None:
            log.info("connection from %s", session.address)
        else:
            log.info("connection from %s (%s)", session.address, sock.version())
        return session

    # -- TLS --

    def _start_handshake(self, sock, ip, port, exempt, listener):
        try:
            sock = listener.tls.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as error:  # the peer is gone already
            log.info("TLS connection from %s failed at once: %s", ip, error)
            self.guards.disconnected(TlsHandshake(sock, ip, port, exempt, listener))
            sock.close()
            return
        handshake = TlsHandshake(sock, ip, port, exempt, listener)
        self.handshakes[handshake.fd] = handshake
        self.selector.register(sock, selectors.EVENT_READ, partial(self._handshake, handshake))
        # A timer, not a sweep: a stalled handshake costs nothing until then.
        self._call_at_for_no_one(self.now + self.limits.tls_handshake_timeout,
                                 partial(self._handshake_timeout, handshake))

    def _handshake(self, handshake):
        """The handshake's socket is ready: take it a step further."""
        if self.handshakes.get(handshake.fd) is not handshake:
            return
        sock = handshake.sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            events = selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            events = selectors.EVENT_WRITE
        except (ssl.SSLError, OSError) as error:
            # Plain text on a TLS port, a client that refused the
            # certificate, a reset: one line, no traceback.
            reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
            self._end_handshake(handshake, "TLS handshake with %s failed: %s" % (handshake.address, reason))
            return
        else:
            del self.handshakes[handshake.fd]
            self.selector.unregister(sock)
            session = self._open_session(sock, handshake.ip, handshake.port, handshake.exempt,
                                         handshake.listener)
            if sock.pending():  # the client's first lines came with its last handshake message
                self._read(session)
            return
        if events != handshake.events:
            self.selector.modify(sock, events, partial(self._handshake, handshake))
            handshake.events = events

    def _handshake_timeout(self, handshake):
        if self.handshakes.get(handshake.fd) is handshake:
            self._end_handshake(handshake, "TLS handshake with %s timed out after %gs" % (
                handshake.address, self.limits.tls_handshake_timeout))

    def _end_handshake(self, handshake, why):
        if why:
            log.info("%s", why)
        del self.handshakes[handshake.fd]
        self.selector.unregister(handshake.sock)
        self.guards.disconnected(handshake)
        handshake.sock.close()

    def check_certificate(self):
        """Log the certificate's subject and expiry, with a warning from
        CERT_WARN_DAYS before it expires; again every day."""
        days = self.tls.days_left(time.time())
        if days is not None and days < 0:
            log.warning("TLS certificate EXPIRED %.0f days ago: %s", -days, self.tls.summary())
        elif days is not None and days < CERT_WARN_DAYS:
            log.warning("TLS certificate expires in %.1f days: %s (renew it, then SIGHUP or reload-tls)",
                        days, self.tls.summary())
        else:
            log.info("TLS certificate %s", self.tls.summary())
        self._call_at_for_no_one(self.now + CERT_CHECK_INTERVAL, self._daily_certificate_check)

    def _daily_certificate_check(self):
        if self.tls is not None:
            self.check_certificate()

    def reload_tls(self):
        """Take the certificate and key files again (SIGHUP, admin
        reload-tls): new connections get them, open ones keep theirs. What
        happened, in a line."""
        if self.tls is None:
            return "no TLS: the server was started without --tls-cert"
        problem = self.tls.reload()
        if problem:
            log.error("TLS reload failed, keeping the certificate in use: %s", problem)
            return "reload failed, the certificate in use is kept: %s" % problem
        log.info("TLS certificate reloaded")
        days = self.tls.days_left(time.time())
        if days is not None and days < CERT_WARN_DAYS:
            log.warning("TLS certificate expires in %.1f days: %s", days, self.tls.summary())
        else:
            log.info("TLS certificate %s", self.tls.summary())
        return "reloaded: %s" % self.tls.summary()

    def reload_tls_soon(self):
        """From a signal handler: the reload runs as a timer of the loop,
        not in the middle of whatever the handler interrupted."""
        self._call_at_for_no_one(0.0, self.reload_tls)
        self.workers.wake()

    def _call_at_for_no_one(self, when, function):
        # Not charged to the session or operator whose turn it is now.
        heapq.heappush(self.timers, (when, next(self._timer_order), None, function))

    def _read(self, session):
        try:
            data = session.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(session, "connection closed")
            return
        if session.state is CLOSING:
            return  # what a closing client still says is read and ignored
        if data[0] == TLS_HANDSHAKE_RECORD and self._tls_on_plain_port(session, data):
            return
        session.last_heard = self.now
        session.ping_sent_at = None
        if session.__class__ is IrcSession:
            sae_ircd.take_input(self, session, data)
            return
        held = session.held
        if held is NO_LINES:
            held = session.held = collections.deque()
        for frame in session.framer.feed(data):
            if frame.__class__ is bytes:
                command = proto.parse_command(frame)
                if command is not None:
                    cost = max(len(frame), HELD_LINE_COST)
                    held.append((cost, command))
                    session.held_bytes += cost
            elif frame.__class__ is proto.LineTooLong:
                held.append((HELD_LINE_COST, proto.ProtocolError(
                    proto.TOO_LONG, "line too long (max %d bytes)" % proto.MAX_LINE_BYTES)))
                session.held_bytes += HELD_LINE_COST
            else:
                # What came before the flood is answered first (its ERR 413
                # too), whether the flood arrived in one read or in several.
                self.run_held(session)
                self.close_session(session, proto.format_bye("line too long"), "line too long")
                return
        self.run_held(session)

    def _tls_on_plain_port(self, session, data):
        """A TLS ClientHello as a connection's first bytes (a client set to
        TLS, on the plain port): a line a person debugging it can read, then
        close, rather than a TLS client waiting for the login timeout."""
        if (data[1:2] != b"\x03" or session.last_heard != session.connected_at
                or session.state is not CONNECTED or session.sock.__class__ is TlsSocket):
            return False
        ports = [listener.port for listener in self.listeners
                 if listener.tls is not None and listener.kind == session_kind(session)]
        hint = ("this port speaks plain text; use TLS on port %d" % ports[0] if ports
                else "this port speaks plain text, and this server has no TLS")
        self.close_session(session, proto.format_err(proto.BAD_REQUEST, hint), "TLS sent to the plain port")
        return True

    def run_held(self, session):
        """Execute the session's waiting lines, in order, as far as they may run."""
        if session.__class__ is IrcSession:
            sae_ircd.run_held(self, session)
            return
        held = session.held
        while held and session.state is not CLOSING:
            cost, line = held[0]
            if line.__class__ is proto.Command:
                # A message may join a batch behind the session's earlier
                # ones; not one that will be refused at once (a room its
                # account is not in): its ERR would overtake their echoes.
                if session.inflight and not (
                        line.verb in proto.MESSAGE_VERBS and session.inflight == session.inflight_messages
                        and self.message_refusal(session, line.verb, line.args) is None):
                    break
                if line.verb in COSTLY_VERBS and not session.exempt:
                    if session in self.guards.throttled:
                        break  # its timer (below) runs its lines again
                    ready_at = self.guards.take_token(session, self.now)
                    if ready_at is not None:
                        self.call_at(ready_at, lambda: self._throttle_over(session), owner=session)
                        break
            elif session.inflight:
                break
            held.popleft()
            session.held_bytes -= cost
            if line.__class__ is proto.ProtocolError:
                self.reply(session, proto.format_err(line.code, line.text))
                continue
            if line.verb in proto.ROOM_VERBS and not session.rooms_on:
                # Any v1.1 line that parses opts in, whatever its answer.
                self.opt_in(session)
            if session.account is None and line.verb not in proto.PRE_LOGIN_VERBS:
                self.reply(session, proto.format_err(proto.UNAUTHORIZED, log_in_first(self, session)))
            else:
                outer, self.running_for = self.running_for, session
                try:
                    steps = COMMANDS[line.verb](self, session, *line.args)
                    if steps is not None:
                        self.start_command(session, steps)
                except Exception:
                    self._fault(session, "the %s command" % line.verb)
                    return
                finally:
                    self.running_for = outer
        self.pace_reading(session, held)

    def pace_reading(self, session, held):
        """After a session's held lines ran (both protocols): close one that
        floods past --flood-held-max, and read it on or
        not. While it waits for us (storage, hashing), a client is read only
        so far ahead and then slowed down by TCP. While it waits for its
        flood rate it is read on, so that one that will not stop can be told
        so."""
        if not held and held is not NO_LINES:
            session.held = NO_LINES
        throttled = session in self.guards.throttled
        if throttled and session.held_bytes > self.limits.flood_held_max:
            log.warning("%s (%s) floods: closing", session.address, session.name or "not logged in")
            # IRC clients know the words their servers use.
            words = "Excess Flood" if session.__class__ is IrcSession else "excess flood"
            self.close_session(session, session.protocol.format_bye(words), "excess flood")
            return
        reading = (len(held) < self.limits.held_lines_max or throttled) and session.state is not CLOSING
        if reading != session.reading:
            session.reading = reading
            self._update_events(session)

    def reply(self, session, data: bytes):
        if session.state is CLOSING:
            return
        session.send(data)
        self.dirty.add(session)

    def reply_lines(self, session, lines):
        """An answer of many lines (a history). One longer than a piece is
        produced as the socket drains (_write), not queued at once: the
        client asked for it, and sendq_max is for clients that do not read.
        Until its last piece the session counts it in ``inflight``, so that
        its next request waits (answers stay in order, and a client that
        does not read holds at most one), and is registered for EVENT_WRITE,
        so that _send_to, which leaves such sessions to _write, never meets it."""
        if session.state is CLOSING:
            return
        piece_bytes = min(ANSWER_PIECE_BYTES, self.limits.sendq_max // 2)
        if sum(map(len, lines)) <= piece_bytes:
            self.reply(session, b"".join(lines))
            return
        session.answer = LongAnswer(lines, piece_bytes)
        session.sendq.append(session.answer)
        session.inflight += 1
        self._update_events(session)

    def send_each(self, sessions, render):
        """An event to some sessions, rendered once per protocol among them."""
        rendered = {}
        for session in sessions:
            data = rendered.get(session.protocol)
            if data is None:
                data = rendered[session.protocol] = render(session.protocol)
            session.send(data)
        self.dirty.update(sessions)

    def _flush(self):
        """Send what each session is owed, in one send() per socket.

        The loops only send: a session the kernel did not take everything
        from is dealt with afterwards (_behind), because that may close it,
        which changes the room being walked."""
        flushes = self.flushes
        while flushes or self.dirty:
            behind = []
            if flushes:
                rooms = flushes[:]
                del flushes[:]  # the Rooms hold this very list
                started = monotonic()
                for room in rooms:
                    # Cleared first: what the pass itself takes in for this
                    # room flags it again, for the members already passed.
                    room.pending = False
                    self.counters.passes += 1
                    self._pass(room, behind)
                self.last_pass_cost = monotonic() - started
            if self.dirty:
                dirty, self.dirty = self.dirty, set()
                self._send_to(dirty, behind)
            for session in behind:
                self._behind(session)

    def _pass(self, room, behind):
        """Send each member of the room what it is owed. In a big room a pass
        takes a while (some 5 us per member, mostly the kernel's): every
        PASS_SLICE it looks for input, and a message said meanwhile is stored
        and queued at once, so that the members not yet passed get it in
        this pass's send() and the others in the next pass, rather than all
        of them after this pass has ended. A batch that storage hands back
        meanwhile (on MariaDB, the one stored beside this pass's) is
        delivered between two chunks the same way."""
        slice_over = monotonic() + PASS_SLICE
        # Only while messages come one by one: in a flood, passes are full
        # anyway, and a pass cut into pieces costs more send()s per message
        # (a flood to 1000 clients lost a third of its throughput to it).
        polling = self.last_batch_size <= PASS_POLL_BATCH_MAX and self.behind_count < BEHIND_MANY
        for members in list(room.members.values()):
            if len(members) <= PASS_CHUNK:
                self._send_to(members, behind)
                continue
            # A copy: the input taken meanwhile may close members.
            members = list(members)
            for start in range(0, len(members), PASS_CHUNK):
                self._send_to(members[start:start + PASS_CHUNK], behind)
                if polling and monotonic() >= slice_over:
                    ready = self.selector.select(0)
                    if ready:
                        self._dispatch(ready)
                        self._settle()
                    slice_over = monotonic() + PASS_SLICE
                elif self.workers.done:
                    # A batch stored meanwhile (on MariaDB) is delivered
                    # now, to the members not yet passed in this pass's
                    # send(), and the next one goes to storage at once,
                    # rather than both waiting for the pass to end.
                    self._settle()

    @staticmethod
    def _send_to(sessions, behind):
        # The hot path of every broadcast: one flush per session, nothing
        # else. What needs more than that (a send the kernel did not take
        # whole, a failed socket, a closing session) is left to _behind,
        # because dealing with it may close a session of the room being walked.
        for session in sessions:
            if not session.sendq:
                continue
            if session.events & WRITE:
                behind.append(session)  # the kernel is full; EVENT_WRITE will come
            elif not session.flush() or session.sendq or session.state is CLOSING:
                behind.append(session)

    def _behind(self, session):
        if self.sessions.get(session.fd) is not session:
            return
        if not session.sendq:
            if session.state is CLOSING:
                self._finish_close(session)
            return
        if not session.events & WRITE:
            self._write(session)  # a send that failed: find out why
        elif session.sendq_bytes > self.limits.sendq_max and session.state is not CLOSING:
            # Waiting for EVENT_WRITE, but a client that does not read must
            # not grow our memory without bound.
            self._sendq_exceeded(session)

    def _write(self, session):
        """The socket is writable (or a send needs a second look): send on,
        feeding a long answer a piece at a time once all before it is out."""
        sendq = session.sendq
        answered = False  # a long answer handed out its last piece
        while sendq:
            answer = session.answer
            if answer is not None and sendq[0] is answer:
                piece = answer.piece()
                session.sendq_bytes += len(piece)
                if answer.lines:
                    sendq.insert(0, piece)
                else:  # the last one, bytes like any other from here on
                    sendq[0] = piece
                    session.answer = None
                    session.inflight -= 1
                    answered = True
            if not session.flush():
                self._drop(session, "connection lost")
                return
            if sendq and sendq[0] is not session.answer:
                break  # the kernel is full
        if not sendq and session.state is CLOSING:
            self._finish_close(session)
            return
        if session.sendq_bytes > self.limits.sendq_max and session.state is not CLOSING:
            self._sendq_exceeded(session)
            return
        self._update_events(session)
        if answered:
            self.run_held(session)

    def _sendq_exceeded(self, session):
        log.warning("%s (%s) does not read: sendq exceeded %d bytes, disconnecting",
                    session.address, session.name or "not logged in", self.limits.sendq_max)
        sendq = session.sendq
        if session.sock.__class__ is TlsSocket:
            # OpenSSL has already made records of the last send it refused
            # (some may be on the wire), and the next send must begin with
            # those bytes, at least as many, or it fails ("bad length") and
            # the BYE is lost with the connection. They are whole chunks,
            # whole lines, at the head of the queue: kept; the rest goes.
            kept, size = [], 0
            for chunk in sendq:
                if size >= session.sock.owed or chunk is session.answer:
                    break
                kept.append(chunk)
                size += len(chunk)
            sendq[:] = kept
        else:
            # The kernel may hold the start of a line: finish that line, drop
            # the rest, so that the client can still read BYE as a line of its
            # own. A long answer at the head left nothing partial: it hands
            # out whole lines.
            head = sendq[0]
            sendq[:] = [] if head is session.answer else [head[:head.find(b"\n") + 1]]
        session.sendq_bytes = sum(map(len, sendq))
        self.close_session(session, session.protocol.format_bye("sendq exceeded"), "sendq exceeded")

    def _update_events(self, session):
        if self.sessions.get(session.fd) is not session:
            return
        events = 0
        # A closing session is still read, to see the peer's end of stream.
        if session.reading or session.state is CLOSING:
            events |= selectors.EVENT_READ
        if session.sendq:
            events |= selectors.EVENT_WRITE
        if events != session.events:
            if session.events == 0:
                self.selector.register(session.sock, events, session)
            elif events == 0:
                self.selector.unregister(session.sock)
            else:
                self.selector.modify(session.sock, events, session)
            if (events ^ session.events) & WRITE:
                self.behind_count += 1 if events & WRITE else -1
            session.events = events

    def close_session(self, session, last_line, leave_reason):
        """End a session politely: it is off the room at once, its last line
        (BYE, KICKED, ...) is sent after everything it was owed, and the
        socket is closed once that is out or CLOSE_LINGER has passed."""
        if session.state is CLOSING or self.sessions.get(session.fd) is not session:
            return
        self._leave(session, leave_reason)
        session.state = CLOSING
        session.held = NO_LINES
        session.held_bytes = 0
        self.guards.throttled.pop(session, None)
        session.close_deadline = self.now + CLOSE_LINGER
        if session.answer is not None:
            # The rest of a long answer is not produced: the last line says
            # why at once, after whole lines, not after megabytes.
            session.sendq[:] = [chunk for chunk in session.sendq if chunk is not session.answer]
            session.answer = None
            session.inflight -= 1
        if last_line:
            session.send(last_line)
        log.info("closing %s (%s): %s", session.address, session.name or "not logged in", leave_reason)
        if session.sendq:
            self._write(session)
        else:
            self._finish_close(session)

    def _finish_close(self, session):
        # Half-close, then wait for the peer's end of stream: closing at once
        # with unread input would send a reset that can destroy the last line.
        # Over TLS, close_notify first: the last line was the last one meant.
        if session.sock.__class__ is TlsSocket:
            session.sock.close_notify()
        try:
            session.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(session, None)
            return
        self._update_events(session)

    def _drop(self, session, reason):
        """Forget a connection now (the peer is gone or time is up)."""
        if self.sessions.get(session.fd) is not session:
            return
        if session.state is not CLOSING:
            self._leave(session, reason or "connection closed")
            log.info("%s (%s) disconnected: %s", session.address, session.name or "not logged in",
                     reason)
        del self.sessions[session.fd]
        self.guards.disconnected(session)
        self.dirty.discard(session)
        session.state = CLOSING
        if session.events:
            self.selector.unregister(session.sock)
            if session.events & WRITE:
                self.behind_count -= 1
            session.events = 0
        session.sock.close()

    def _leave(self, session, reason):
        if session.state is not ONLINE:
            return
        self.everyone.discard(session)
        for room in session.rooms:
            room.discard(session)
        session.rooms = NO_ROOMS
        key = name_key(session.account.name)
        sessions = self.online[key]
        sessions.remove(session)
        if not sessions:
            del self.online[key]
            for room in self.account_rooms.pop(key):
                room.accounts.discard(key)
            name = session.account.name
            if not self.online_elsewhere(key):
                self.everyone.send(lambda protocol: protocol.format_leave(name, reason))
                # Its private messages from now on are the ones it misses
                # (an IRC login replays them: Store.missed_private).
                self.store_call(lambda result, error: None, self.store.went_offline, session.account.id)
            self.relay("off", n=name, r=reason)

    def sweep(self):
        """Once a second: pings, ping and login timeouts, closing sockets."""
        now = self.now
        self.next_sweep = now + SWEEP_INTERVAL
        limits = self.limits
        for session in list(self.sessions.values()):
            if session.state is CLOSING:
                if now >= session.close_deadline:
                    self._drop(session, None)
            elif session.state is CONNECTED:
                if now - session.connected_at >= limits.login_timeout and not session.inflight:
                    self.close_session(session, session.protocol.format_bye("login timeout"), "login timeout")
            elif session.ping_sent_at is not None:
                if now - session.ping_sent_at >= limits.ping_timeout:
                    self.close_session(session, session.protocol.format_bye("ping timeout"), "ping timeout")
            elif now - session.last_heard >= limits.ping_interval:
                session.ping_sent_at = now
                self.reply(session, session.protocol.format_ping(str(int(now))))
        # Storage is probed while it is down, so that it comes back (and the
        # log says so) without waiting for a client to need it.
        if self.storage_down and not self.workers.storage_jobs:
            self.offload("storage", lambda result, error: None, self.store.ping)
        # Kicks and strikes that have run out are forgotten here.
        self.guards.forget_old(now)
        if self.cluster is not None:
            self._cluster_sweep()

    # -- moderation --

    def kick(self, name, seconds, reason):
        """Close the account's sessions and refuse its LOGIN for ``seconds``,
        measured on the monotonic clock. Returns how many sessions ended."""
        self.guards.kick(name, self.now + seconds)
        log.info("operator kicked %s for %ds: %s", name, seconds, reason)
        self.relay("kick", n=name, s=seconds, r=reason)
        return self._kicked(name, seconds, reason)

    def _kicked(self, name, seconds, reason):
        return self.end_account(name, lambda session: (
            sae_ircd.kicked_lines(self, session, seconds, reason) if session.__class__ is IrcSession
            else proto.format_kicked(seconds, reason)), "kicked")

    def unkick(self, name):
        """Let a kicked account log in again; the seconds its kick had left (0: none)."""
        left = self.guards.unkick(name, self.now)
        if left:
            log.info("operator lifted the kick of %s (%ds left)", name, left)
        self.relay("unkick", n=name)
        return left

    def banned(self, name, reason):
        """The account's ban is stored: its sessions end, on every server."""
        self.relay("ban", n=name, r=reason)
        return self.end_account(name, lambda session: session.protocol.format_banned(reason), "banned")

    def unbanned(self, name):
        """The account's ban is lifted in the store: on every server."""
        self.bans_heard.pop(name_key(name), None)
        self.relay("unban", n=name)

    def operator_say(self, text):
        """The operator's announcement to everyone online, on every server."""
        self.relay("say", x=text)
        self.everyone.send(lambda protocol: protocol.format_info(text))
        return len(self.everyone)

    def count_registration(self, ip):
        """A registration from ``ip`` starts: it counts against the
        address's limit here and on the other servers."""
        self.guards.registered(ip, self.now)
        self.relay("registered", a=ip)

    def login_failed(self, ip, key):
        """A LOGIN failed (its strikes are counted already, see login_steps):
        the other servers count it too."""
        self.relay("failed", a=ip, k=key)

    def end_account(self, name, last_line, leave_reason):
        """Close every session of the account; ``last_line`` is bytes, or
        a function of the session (each protocol says it its way)."""
        sessions = list(self.online.get(name_key(name), ()))
        for session in sessions:
            self.close_session(session, last_line(session) if callable(last_line) else last_line, leave_reason)
        return len(sessions)

    # -- rooms --

    def go_online(self, session, account, stored_rooms):
        """The session is logged in as ``account``, a member of
        ``stored_rooms`` (RoomInfos, as read with the account)."""
        # The hash is not needed any more; thousands of sessions need not keep it.
        session.account = account._replace(password_hash="")
        session.state = ONLINE
        key = name_key(account.name)
        rooms = self.account_rooms.get(key)
        if rooms is None:
            # Everyone else hears of the account's first session only (in a
            # cluster: on any server).
            if not self.online_elsewhere(key):
                self.everyone.send(lambda protocol: protocol.format_join(account.name))
            self.relay("on", n=account.name)
            # While the account is online its rooms are kept here, changed
            # as its JOINs and PARTs are stored; so only its first session's
            # read counts. A room deleted since the read is left out.
            found = self.rooms_here(stored_rooms)
            for room in found:
                room.accounts.add(key)
            rooms = self._set_rooms(key, frozenset(found))
        self.online.setdefault(key, []).append(session)
        self.everyone.add(session)
        session.rooms = rooms
        for room in rooms:
            if room is self.room or session.rooms_on:
                room.add(session)
        log.info("%s logged in as %s", session.address, account.name)

    def rooms_here(self, infos):
        """The Rooms of these RoomInfos (as the store read them), but those
        deleted since."""
        found = []
        for info in infos:
            room = self.rooms.get(room_key(info.name))
            if room is not None and room.info.id == info.id:
                found.append(room)
        return found

    def log_out(self, session, reason):
        """The session leaves its account, to log in to another at once
        (IRC: SASL or IDENTIFY after registration): it is offline as that
        one, as if it had closed, and stays connected."""
        self._leave(session, reason)

    def opt_in(self, session):
        """The session speaks protocol v1.1 from now on: it gets the
        messages of its account's other rooms too."""
        session.rooms_on = True
        for room in session.rooms:
            room.add(session)

    def member_room(self, session, name):
        """The Room of that name if the session's account is in it, else None."""
        room = self.rooms.get(room_key(name))
        return room if room in session.rooms else None

    def room_event(self, room, render, but=None):
        """A v1.1 line about the room (JOINED, PARTED, TOPIC, DELETED) to
        every opted-in session of its members (``but`` one, which gets it
        in its own answer); the sessions it went to."""
        sessions = [session for session in room.sessions() if session.rooms_on and session is not but]
        self.send_each(sessions, render)
        return sessions

    def joined(self, room, account, announce=True, relay=True, but=None):
        """The account's JOIN of the room is stored: every session of it
        is in the room, and (``announce``) the members hear of it, its own
        sessions too (but ``but``); the sessions that heard."""
        if relay:
            self.relay("joined", room=list(room.info), n=account.name, j=announce)
        key = name_key(account.name)
        rooms = self.account_rooms.get(key)
        if rooms is not None:  # else it is offline by now: its next LOGIN reads it
            self._set_rooms(key, rooms | {room})
            room.accounts.add(key)
            for session in self.online[key]:
                if room is self.room or session.rooms_on:
                    room.add(session)
        if not announce:
            return []
        return self.room_event(room, lambda protocol: protocol.format_joined(room.info.name, account.name), but)

    def parted(self, room, account, reason, relay=True, but=None):
        """The account's PART of the room is stored: the members hear of it
        (its own sessions too, but ``but``), then its sessions are out of the room."""
        if relay:
            self.relay("parted", room=list(room.info), n=account.name, r=reason)
        sent = self.room_event(room, lambda protocol: protocol.format_parted(room.info.name, account.name, reason),
                               but)
        key = name_key(account.name)
        rooms = self.account_rooms.get(key)
        if rooms is not None and room in rooms:
            self._set_rooms(key, rooms - {room})
            room.accounts.discard(key)
            for session in self.online[key]:
                room.discard(session)
        return sent

    def _set_rooms(self, key, rooms):
        """The rooms of an online account are now ``rooms`` (a frozenset,
        which every session of the account shares). Most accounts are in the
        default room alone: they share one frozenset, not one set each,
        which was a tenth of what a logged-in connection costs."""
        if rooms == self.default_only:
            rooms = self.default_only
        self.account_rooms[key] = rooms
        for session in self.online.get(key, ()):
            session.rooms = rooms
        return rooms

    def make_room(self, info):
        """The Room in memory for a live room the store has (made if new)."""
        key = room_key(info.name)
        room = self.rooms.get(key)
        if room is None or room.info.id != info.id:
            room = self.rooms[key] = Room(info, self.flushes)
        return room

    def topic_changed(self, room, info, relay=True):
        """The room's new topic is stored (``info``): its members hear of
        it; the sessions that heard."""
        if relay:
            self.relay("topic", room=list(info))
        if self.rooms.get(room_key(info.name)) is room:
            room.info = info
        return self.room_event(room, render_topic(info))

    def room_deleted(self, info, reason, relay=True):
        """The operator's deletion of the room is stored: its members
        online hear of it and are out of it. How many accounts that was."""
        if relay:
            self.relay("deleted", room=list(info), r=reason)
        key = room_key(info.name)
        room = self.rooms.get(key)
        if room is None or room.info.id != info.id:
            return 0
        sent = self.room_event(room, lambda protocol: protocol.format_deleted(room.info.name, reason))
        for session in sent:
            if session.__class__ is IrcSession:  # IRC clients leave a channel only by a KICK or PART
                self.reply(session, sae_irc.kick_line(self.irc.server_name, room.info.name, session.nick,
                                                      reason or "room deleted"))
        online = len(room.accounts)
        for account in room.accounts:
            self._set_rooms(account, self.account_rooms[account] - {room})
        room.members.clear()
        room.accounts.clear()
        del self.rooms[key]
        return online

    def online_names(self):
        names = [sessions[0].account.name for sessions in self.online.values()]
        if self.elsewhere:
            seen = set(self.online)
            for peer in self.elsewhere.values():
                for key, name in peer.accounts.items():
                    if key not in seen:
                        seen.add(key)
                        names.append(name)
        return names

    def online_elsewhere(self, key):
        """Whether the account is online on another server of the cluster."""
        return any(key in peer.accounts for peer in self.elsewhere.values())

    def where_elsewhere(self, key):
        """(instance, account name) of another server the account is online
        on, or None."""
        for instance, peer in self.elsewhere.items():
            if key in peer.accounts:
                return instance, peer.accounts[key]
        return None

    def users_line(self, session):
        """USERS for this session: who is online, guests marked if it asked."""
        return proto.format_users(self.online_names(), self.guests if session.guests_on else ())

    def kick_left(self, name) -> int:
        """Seconds left of a kick on the account, 0 if none."""
        return self.guards.kick_left(name, self.now)

    def message_refusal(self, session, verb, args):
        """Why the session may not say this SAY or RSAY now (the error's
        bytes), or None: a room its account is not in."""
        if verb == "SAY":
            if self.room not in session.rooms:
                return refusal(proto.not_in_room(self.room.info.name))
        elif verb == "RSAY":
            if self.member_room(session, args[0]) is None:
                return refusal(proto.not_in_room(args[0]))
        return None

    def accept_message(self, session, recipient, text, room=None, notice=False, client_tags=None):
        """Take a SAY, RSAY (in ``room``, by default the default room) or
        TELL (to ``recipient``), or an IRC PRIVMSG or NOTICE (``notice``,
        with the sender's ``client_tags``, relayed live and not stored): it
        is delivered once stored (_deliver)."""
        account = session.account
        session.inflight += 1
        session.inflight_messages += 1
        if recipient is None:
            room = room or self.room
            room_id = room.info.id
        else:
            room_id = None
        self.outbox.append((session, NewMessage(account.id, account.name, recipient, text, self.timestamp(),
                                                room_id, notice, client_tags), room))

    def _batch_may_go(self):
        """Whether one more batch may be handed to storage now."""
        return (self.batches_in_flight < (1 if self.numbering else self.batches_at_once)
                and not self.store.batches_held())

    def _store_outbox(self):
        batch, self.outbox = self.outbox, []
        self.last_batch_size = len(batch)
        if self.batches_in_flight:
            self.counters.overlapped += 1
        self.batches_in_flight += 1
        messages = [message for _, message, _ in batch]
        numbered = False
        if self.cluster:
            work, args = self.store.append_chained, (messages,)
        elif self.batches_at_once == 1:
            work, args = self.store.append_messages, (messages,)
        elif self.numbering or (self.batches_in_flight == 1 and self.now - self.last_batch_back >= IDS_QUIET):
            # After a quiet moment the database numbers the batch, alone, as
            # when batches went one at a time: another server may have
            # written meanwhile (one this one takes over from), which the
            # store's count knows nothing of. The store counts on from its
            # ids; till then, a batch that must go (store_call) goes alone too.
            numbered = True
            self.numbering += 1
            work, args = self.store.append_messages, (messages,)
        else:
            # Two batches may be written at once, and either INSERT may end
            # first: the ids are given here, in the order of the batches.
            work, args = self.store.append_messages, (messages, self.store.reserve_ids(len(messages)))
        # Many sessions' messages: _deliver answers for each session itself,
        # so the batch is no one session's (even when a command stores it).
        outer, self.running_for = self.running_for, None
        self.offload("storage", lambda stored, error: self._stored(batch, stored, error, numbered), work, *args,
                     batch=not numbered)
        self.running_for = outer

    def _stored(self, batch, stored, error, numbered=False):
        self.batches_in_flight -= 1
        self.numbering -= numbered
        self.last_batch_back = self.now
        # With storage threads, what was accepted while this batch was
        # stored goes to storage before this one's pass, not after it: the
        # database works on the next batch while the loop delivers, where
        # one waited for the other. Batches still come back, and are
        # delivered, in the order they were made (Workers.completed).
        if self.outbox and self.workers.threaded_storage and self._batch_may_go():
            self._store_outbox()
        if self.cluster is None or error is not None:
            self._deliver(batch, stored, error)
            return
        # In a cluster the batch is a link of the chain, delivered once
        # every link before it is.
        previous, last, stored = stored
        if previous == last:  # nothing stored: only refusals to answer
            self._deliver(batch, stored, None)
            return
        link = sae_cluster.Link(previous, last, [(live_form(entry[1], message), entry[1].room_id)
                                                 for entry, message in zip(batch, stored) if message is not None],
                                (batch, stored))
        self.cluster.publish(partial(sae_cluster.link_event, self.instance, link))
        self.sequencer.add(link)
        self._deliver_links()

    def _deliver(self, batch, stored, error):
        """A batch is stored (or not): tell everyone concerned, in id order.
        Room messages in a row in one room go out as one rendering per
        protocol; a change of room, or a private message, ends the run."""
        self.counters.batches += 1
        self.counters.stored += len(batch) if error is None else 0
        said = []  # (sender's session, Message): room messages not yet sent, in id order
        said_in = None  # their Room
        quiet = []  # IRC senders among them without echo-message, or with a labeled one
        labels = {}  # message id: the label of the IRC command that sent it (labeled-response)

        def send_said():
            if quiet:
                pieces = {}
                rendered = self._render_said(said_in, said, pieces)
                self._queue_without_echo(said_in, said, rendered, pieces, quiet, labels)
                quiet.clear()
            else:
                said_in.queue(self._render_said(said_in, said))
            said.clear()

        for (session, message, room), result in zip(batch, stored or [None] * len(batch)):
            session.inflight -= 1
            session.inflight_messages -= 1
            if message.notice or message.client_tags:
                result = live_form(message, result)
            label = session.labels.popleft() if session.__class__ is IrcSession and session.labels else None
            try:
                if result is not None and room is not None:
                    if said and room is not said_in:
                        send_said()
                    said_in = room
                    said.append((session, result))
                    if label is not None:
                        labels[result.id] = label
                    if (session.__class__ is IrcSession and (not session.echo or label is not None)
                            and session not in quiet):
                        quiet.append(session)
                    if not room.has(session) and session.state is ONLINE:
                        # Checked again now that it is stored: the account
                        # may have left the room (PART from another session)
                        # while the message was in flight. It is stored, and
                        # in the room's history, so it goes to the members
                        # as they are now, like any message of the room;
                        # refusing it now would be untrue (ERR says nothing
                        # was done), so the sender gets its echo as the
                        # answer to its request, and no one else outside
                        # the room hears of it.
                        echo = self._render_one(room, session.protocol, result)
                        self.reply(session, echo if label is None else sae_ircd.own_message(self, label, echo))
                    continue
                if said:
                    send_said()
                if session.__class__ is IrcSession and (error is not None or result is None):
                    self.reply(session, sae_ircd.message_not_sent(self, session, message, room, error, label))
                elif error is not None:
                    self.reply(session, proto.format_err(proto.UNAVAILABLE, "storage unavailable, message not sent"))
                elif result is None and room is not None:
                    # The room was deleted while the message was in flight.
                    self.reply(session, refusal(proto.not_in_room(room.info.name)))
                elif result is None:
                    self.reply(session, proto.format_err(proto.NOT_FOUND, "no such account %s" % message.recipient))
                else:
                    targets = set(self.online.get(name_key(result.recipient), ()))
                    targets.update(self.online.get(name_key(result.sender), ()))
                    if session.state is not CLOSING:
                        targets.add(session)
                    # Without echo-message the sender does not get its own
                    # message back, unless it wrote to itself: then it is
                    # the recipient too (once, echo or not).
                    echo = session.__class__ is not IrcSession or session.echo or \
                        name_key(result.recipient) == name_key(result.sender)
                    if not echo or label is not None:
                        targets.discard(session)
                    self._send_private(result, targets)
                    if label is not None and session.state is ONLINE:
                        # Its answer: the echo, or ACK, with the label.
                        self.reply(session, sae_ircd.own_message(
                            self, label, self._render_private(result, session.protocol) if echo else None))
            except Exception:
                # The batch is stored: the others' messages still go out,
                # after those before this one, and this session is closed.
                if said:
                    send_said()
                self._fault(session, "delivering its message")
        if said:
            send_said()
        for result in reversed(stored or ()):
            if result is not None:
                self.delivered_upto = max(self.delivered_upto, result.id)
                break
        for session in {entry[0] for entry in batch}:
            if self.sessions.get(session.fd) is session:
                try:
                    self.run_held(session)
                except Exception:
                    self._fault(session, "its held lines")

    def _send_private(self, message, targets):
        self.send_each([target for target in targets if target.state is ONLINE],
                       lambda protocol: self._render_private(message, protocol))

    def _render_private(self, message, protocol):
        if protocol is proto:
            return proto.format_priv(message.id, message.created_at, message.sender, message.recipient,
                                     v1_text(message.body))
        if message.__class__ is LiveMessage:
            return protocol.format_live(message, message.recipient)
        return protocol.format_priv(message.id, message.created_at, message.sender, message.recipient, message.body)

    # -- the cluster (sae_cluster) --

    def start_cluster(self, url, instance):
        """Join the cluster of servers that share this database, through
        Redis at ``url``, as ``instance``."""
        self.instance = instance
        # The chain's links are stored one at a time (append_chained).
        self.batches_at_once = 1
        if self.workers.threaded_storage:
            self.workers.pools["storage"].width = 1
        # Links stored before this moment are history, not news.
        self.sequencer = sae_cluster.Sequencer(self.store.chain_last())
        self.cluster = sae_cluster.RedisLink(url, sae_cluster.channel_name(self.store.url), instance,
                                             self._cluster_hand_over)
        self.cluster.start()
        log.info("cluster: instance %s, Redis %s, channel %s", instance, sae_cluster.describe(url),
                 self.cluster.channel)

    def _cluster_hand_over(self, kind, payload):
        # On a RedisLink thread: hand over, touch nothing else.
        self.cluster_heard.append((kind, payload))
        self.workers.wake()

    def _cluster_news(self):
        heard = self.cluster_heard
        while heard:
            kind, payload = heard.popleft()
            try:
                if kind == "event":
                    self._cluster_event(payload)
                elif kind == "up":
                    if self.redis_up is None:
                        log.info("cluster: listening to the other servers")
                    elif self.redis_up is False:
                        log.warning("cluster: Redis is back; reading what the other servers stored meanwhile")
                    self.redis_up = True
                    # Whatever was published while this server did not
                    # listen is in the database; who is online where, the
                    # other servers say again.
                    self._read_chain()
                    self.relay("hello")
                    self.relay("beat", c=len(self.online), l=self.sequencer.last)
                    for peer in self.elsewhere.values():
                        peer.heard_at = self.now  # not their fault
                elif self.redis_up is not False:
                    log.error("cluster: Redis unreachable (%s): messages are still stored and delivered to this "
                              "server's clients; the other servers' are read from the database", payload)
                    self.redis_up = False
            except Exception:
                self._fault(None, "news from the cluster")

    def relay(self, kind, **fields):
        """Tell the other servers of the cluster, if there is one."""
        if self.cluster is not None:
            self.cluster.publish(sae_cluster.encode(self.instance, kind, **fields))

    def _cluster_event(self, event):
        """What another server said (see sae_cluster for the events)."""
        kind, instance = event["t"], event["i"]
        peer = self.elsewhere.get(instance)
        if peer is None:
            if kind == "gone":
                return
            peer = self.elsewhere[instance] = sae_cluster.Peer(self.now)
            log.info("cluster: %s joined", instance)
            # What it said before this server heard of it: its roster.
            self.relay("hello", to=instance)
        peer.heard_at = self.now
        if kind == "said":
            link = event.get("link")
            self.counters.links_heard += 1
            if link is None:
                log.warning("cluster: a malformed link from %s, ignored: it is read from the database", instance)
                return
            self.sequencer.add(link)
            self._deliver_links()
        elif kind == "on":
            self._online_elsewhere(peer, {name_key(event["n"]): event["n"]}, {})
        elif kind == "off":
            key = name_key(event["n"])
            if key in peer.accounts:
                self._online_elsewhere(peer, {}, {key: event["n"]}, event.get("r", ""))
        elif kind == "beat":
            if event.get("c") != len(peer.accounts):
                self.relay("hello", to=instance)  # an "on" or "off" was missed
            if event.get("l", 0) > self.sequencer.last and not self.chain_reading:
                # A link it published never came (dropped while Redis was
                # away, or still on its way): the database has it.
                self._read_chain()
        elif kind == "hello":
            if event.get("to") in (None, self.instance):
                self.relay("roster", names=[sessions[0].account.name for sessions in self.online.values()],
                           kicks={key: left for key in list(self.guards.kicks)
                                  if (left := self.guards.kick_left(key, self.now))})
        elif kind == "roster":
            now_on = {name_key(name): name for name in event["names"]}
            self._online_elsewhere(peer, {key: name for key, name in now_on.items() if key not in peer.accounts},
                                   {key: name for key, name in peer.accounts.items() if key not in now_on})
            for key, left in event.get("kicks", {}).items():
                if self.guards.kick_left(key, self.now) < left:
                    self.guards.kick(key, self.now + left)
        elif kind == "gone":
            self._peer_gone(instance, "left the cluster")
        elif kind == "kick":
            self.guards.kick(event["n"], self.now + event["s"])
            self._kicked(event["n"], event["s"], event["r"])
        elif kind == "unkick":
            self.guards.unkick(event["n"], self.now)
        elif kind == "ban":
            self.bans_heard[name_key(event["n"])] = (event["r"], self.now)
            self.end_account(event["n"], lambda session: session.protocol.format_banned(event["r"]), "banned")
        elif kind == "unban":
            self.bans_heard.pop(name_key(event["n"]), None)
        elif kind == "say":
            self.everyone.send(lambda protocol: protocol.format_info(event["x"]))
        elif kind == "failed":
            self.guards.login_started(event["a"], event["k"], self.now)
        elif kind == "registered":
            self.guards.registered(event["a"], self.now)
        elif kind in ("joined", "parted", "topic", "deleted"):
            self._room_news(kind, event)
        elif kind == "tagmsg":
            sae_ircd.tagmsg_heard(self, event)
        elif kind == "account":
            sae_ircd.account_heard(self, event)

    def _room_news(self, kind, event):
        """A change to a room that another server stored."""
        info = RoomInfo(*event["room"])
        if kind == "deleted":
            self.room_deleted(info, event["r"], relay=False)
            return
        room = self.rooms.get(room_key(info.name))
        if kind == "joined":
            room = self.make_room(info)
            self.joined(room, sae_cluster.Someone(event["n"]), announce=event["j"], relay=False)
        elif room is None or room.info.id != info.id:
            return  # a room this server does not know (yet): nothing here to change
        elif kind == "parted":
            self.parted(room, sae_cluster.Someone(event["n"]), event["r"], relay=False)
        else:
            self.topic_changed(room, info, relay=False)

    def _online_elsewhere(self, peer, came, left, reason="gone"):
        """Accounts came online (``came``) or went offline (``left``) on
        another server ({name_key: name}): the sessions here hear of those
        that are online nowhere else, as of an account's first and last
        session on a single server."""
        for key, name in came.items():
            if key not in self.online and not self.online_elsewhere(key):
                self.everyone.send(lambda protocol, name=name: protocol.format_join(name))
            peer.accounts[key] = name
        for key, name in left.items():
            peer.accounts.pop(key, None)
            if key not in self.online and not self.online_elsewhere(key):
                self.everyone.send(lambda protocol, name=name: protocol.format_leave(name, reason))

    def _peer_gone(self, instance, why):
        peer = self.elsewhere.pop(instance, None)
        if peer is None:
            return
        log.warning("cluster: %s %s; its %d account%s online are offline", instance, why, len(peer.accounts),
                    "" if len(peer.accounts) == 1 else "s")
        left, peer.accounts = peer.accounts, {}
        self._online_elsewhere(peer, {}, left, "server gone")
        # A server killed between a COMMIT and its publication told no one
        # of that link: the database has it.
        if not self.chain_reading:
            self._read_chain()

    def _cluster_sweep(self):
        """Once a second, in a cluster: say this server is alive, and
        forget the servers not heard of for the ping timeout, and old bans."""
        for key in [key for key, (_, heard) in self.bans_heard.items() if self.now - heard > BAN_HEARD_SECONDS]:
            del self.bans_heard[key]
        if self.redis_up is not True:
            return  # no one hears, and no one could be heard
        if self.now >= self.next_beat:
            # Three beats at least within the ping timeout: one lost is no death.
            self.next_beat = self.now + min(sae_cluster.BEAT_INTERVAL, self.limits.ping_timeout / 3)
            self.relay("beat", c=len(self.online), l=self.sequencer.last)
        for instance, peer in list(self.elsewhere.items()):
            if self.now - peer.heard_at > self.limits.ping_timeout:
                self._peer_gone(instance, "silent for %ds" % (self.now - peer.heard_at))

    def _deliver_links(self):
        """Deliver the links that are next in the chain; if some wait for a
        range no one told this server of, read it from the database soon."""
        for link in self.sequencer.ready():
            if link.batch is not None:
                self._deliver(*link.batch, None)
            else:
                self._deliver_remote(link.messages)
        self.delivered_upto = max(self.delivered_upto, self.sequencer.last)
        if self.sequencer.waiting and not self.chain_reading:
            self.chain_reading = True
            grace = sae_cluster.GAP_GRACE if self.redis_up else 0.0
            self.call_at(self.now + grace, self._read_chain)

    def _read_chain(self):
        """Read the links after the last delivered from the database."""
        self.chain_reading = True
        self.counters.ranges_read += 1
        after = self.sequencer.last
        self.offload("storage", lambda found, error: self._chain_read(after, found, error),
                     self.store.chain_since, after, sae_cluster.GAP_READ_MAX)

    def _chain_read(self, after, found, error):
        self.chain_reading = False
        if error is not None:
            # Storage is down; the sweep probes it. Try again in a while.
            self.chain_reading = True
            self.call_at(self.now + 1.0, self._read_chain)
            return
        upto, messages = found
        # Never past a link of this server's own that waits: its senders'
        # echoes go with it.
        waiting = [previous for previous, link in self.sequencer.waiting.items() if link.batch is not None]
        if waiting and upto > min(waiting):
            upto = min(waiting)
            messages = [entry for entry in messages if entry[0].id <= upto]
        if upto > after:
            self.sequencer.add(sae_cluster.Link(after, upto, messages))
        more = len(messages) >= sae_cluster.GAP_READ_MAX
        self._deliver_links()
        if more and not self.chain_reading:
            self._read_chain()

    def _deliver_remote(self, messages):
        """Messages another server stored, to this server's sessions: runs
        of one room's messages rendered once per protocol, as _deliver does."""
        said, said_in = [], None
        for message, room_id in messages:
            if message.room is None:
                if said:
                    said_in.queue(self._render_said(said_in, said))
                    said = []
                targets = set(self.online.get(name_key(message.recipient), ()))
                targets.update(self.online.get(name_key(message.sender), ()))
                self._send_private(message, targets)
                continue
            room = self.rooms.get(room_key(message.room))
            if room is None or room.info.id != room_id:
                continue  # a room no one here is in
            if said and room is not said_in:
                said_in.queue(self._render_said(said_in, said))
                said = []
            said_in = room
            said.append((None, message))
        if said:
            said_in.queue(self._render_said(said_in, said))

    def _render_one(self, room, protocol, message):
        body = message.body if protocol is not proto else v1_text(message.body)
        if message.__class__ is LiveMessage and protocol is not proto:
            return protocol.format_live(message, room.info.name)
        if room is self.room:
            return protocol.format_msg(message.id, message.created_at, message.sender, body)
        return protocol.format_rmsg(message.id, message.created_at, room.info.name, message.sender, body)

    def _queue_without_echo(self, room, said, rendered, pieces, quiet, labels):
        """A run of a room's messages, some by IRC sessions that get it
        put together for them alone from the run's rendered ``pieces`` (one
        per message, by protocol): without echo-message, without their own
        messages; for a labeled one (``labels``, by message id), with its
        echo labeled, or an ACK without echo-message. Everyone else gets
        the shared bytes. (A sender no longer in the room had its answer.)"""
        inside = [session for session in quiet if room.has(session)]
        for session in inside:
            room.discard(session)
        room.queue(rendered)
        for session in inside:
            room.add(session)
            if session.state is not ONLINE:
                continue
            # Its protocol's pieces, as every session with its capabilities
            # gets them, but for its own messages: no per-sender rendering.
            out = []
            for (sender, message), piece in zip(said, pieces[session.protocol]):
                if sender is not session:
                    out.append(piece)
                    continue
                label = labels.get(message.id)
                echo = piece if session.echo else None
                if label is not None:
                    out.append(sae_ircd.own_message(self, label, echo))
                elif echo is not None:
                    out.append(echo)
            if out:
                self.reply(session, b"".join(out))

    def _render_said(self, room, said, pieces_by_protocol=None):
        """A run of one room's messages as each protocol among its members
        says it, {protocol: bytes}, one join per protocol: MSG lines in the
        default room, RMSG in any other; with each message's own bytes in
        ``pieces_by_protocol`` if given. A message that fails to render (a
        bug) costs its sender; the run goes out without it."""
        name = room.info.name
        while said:
            culprit = None
            try:
                rendered = {}
                for protocol, sessions in room.members.items():
                    if sessions:
                        pieces = []
                        # Two loops that differ in one call, rather than one
                        # with a test or a wrapper per message: this runs for
                        # every message and every protocol of the room.
                        if room is self.room:  # the hot path: as before rooms
                            format_msg = protocol.format_msg
                            v1 = protocol is proto
                            for culprit in said:
                                message = culprit[1]
                                body = message.body
                                if v1 and not body.isprintable():  # IRC formatting codes, or a tab
                                    body = v1_text(body)
                                if message.__class__ is LiveMessage and not v1:
                                    pieces.append(protocol.format_live(message, name))
                                    continue
                                pieces.append(format_msg(message.id, message.created_at, message.sender, body))
                        else:
                            format_rmsg = protocol.format_rmsg
                            v1 = protocol is proto
                            for culprit in said:
                                message = culprit[1]
                                body = message.body
                                if v1 and not body.isprintable():
                                    body = v1_text(body)
                                if message.__class__ is LiveMessage and not v1:
                                    pieces.append(protocol.format_live(message, name))
                                    continue
                                pieces.append(format_rmsg(message.id, message.created_at, name, message.sender, body))
                        rendered[protocol] = b"".join(pieces)
                        if pieces_by_protocol is not None:
                            pieces_by_protocol[protocol] = pieces
                return rendered
            except Exception:
                if culprit is None:
                    raise
                said.remove(culprit)
                self._fault(culprit[0], "delivering its message")
        return {}


# --- commands -----------------------------------------------------------
# One function per verb: (server, session, *fields). Syntax was checked by
# sae_protocol.parse_command, and whether the session may use the verb by
# Server.run_held.
#
# A command that needs a worker (the database, password hashing) or a
# moment in the future is a generator: it yields what it waits for
# (``storage(...)``, ``hashing(...)``, ``until(...)``) and is resumed with
# the result, or with the StorageUnavailable it raised, so it reads top to
# bottom. Server.start_command drives it: the session counts as busy until
# the command returns, and only then do its next lines run.

class Wait(NamedTuple):
    """What a command waits for: ``work(*args)`` on the storage thread or a
    hashing thread, or (``pool`` "timer") the monotonic time ``work``."""
    pool: str
    work: object
    args: tuple = ()


def storage(work, *args):
    return Wait("storage", work, args)


def hashing(work, *args):
    return Wait("hashing", work, args)


def until(when):
    return Wait("timer", when)


STORAGE_UNAVAILABLE = proto.format_err(proto.UNAVAILABLE, "storage unavailable, try again")


class Refused(NamedTuple):
    """Why a login or registration did not happen, for each protocol to say
    its way: ``kind`` is one of the constants below, ``detail`` the seconds
    to wait, the ban's reason, the kick's seconds left or the problem."""
    kind: str
    detail: object = None


TOO_FAST, UNAVAILABLE, WRONG, BANNED, KICKED, GONE, BAD, TAKEN = (
    "too fast", "unavailable", "wrong", "banned", "kicked", "gone", "bad", "taken")


def password_problem(password, min_bytes):
    """Why a new account cannot have this password, or None (v1's words)."""
    size = len(password.encode("utf-8"))
    if min_bytes <= size <= proto.PASSWORD_MAX_BYTES:
        return None
    return "passwords are %d to %d bytes" % (min_bytes, proto.PASSWORD_MAX_BYTES)


def register_steps(server, session, name, password):
    """Make an account, for v1's REGISTER and IRC's: the new Account, or
    Refused. A generator, for ``yield from``."""
    problem = proto.check_name(name) or password_problem(password, server.limits.password_min_bytes)
    if problem:
        return Refused(BAD, problem)
    if not session.exempt:
        wait = server.guards.registration_wait(session.ip, server.now)
        if wait:
            return Refused(TOO_FAST, wait)
        server.count_registration(session.ip)
    password_hash = yield hashing(hash_password, password, server.limits.scrypt_n)
    try:
        account = yield storage(server.store.create_account, name, password_hash, server.timestamp(),
                                server.room.info.id)
    except StorageUnavailable:
        return Refused(UNAVAILABLE)
    if account is None:
        # The name may be an IRC guest's (--irc-guests): anyone may chat
        # under it while its guest is away, so anyone may make it theirs.
        try:
            claimed = yield storage(claim_guest_account, server.store, name, password_hash,
                                    name_key(name) in server.online)
        except StorageUnavailable:
            return Refused(UNAVAILABLE)
        if claimed is None:
            return Refused(TAKEN)
        account, rooms = claimed
        # Its guest is away, but its channels show its nick all the same.
        sae_ircd.guest_registered(server, account.name, server.rooms_here(rooms))
    log.info("%s registered %s", session.address, account.name)
    return account


# The password hash of an IRC guest's account (sae_ircd): no password
# matches it, as verify_password refuses anything but scrypt.
GUEST_HASH = "!guest"


def claim_guest_account(store, name, password_hash, online):
    """On the storage thread: the guest account ``name`` with its new
    password and its rooms, or None if it is no guest's (or its guest is
    online)."""
    account = store.find_account(name)
    if online or account is None or account.password_hash != GUEST_HASH:
        return None
    if not store.replace_password(name, GUEST_HASH, password_hash):
        return None
    # Whoever registers it is not the guests who chatted under it before:
    # their private messages are not its to read.
    store.start_private_history(account.id)
    return account._replace(password_hash=password_hash), store.rooms_of(account.id)


def cmd_register(server, session, name, password):
    in_clear = clear_password_refusal(server, session)
    if in_clear:
        server.reply(session, proto.format_err(proto.BAD_REQUEST, in_clear))
        return
    password = password.rstrip(" \t")  # see cmd_login
    outcome = yield from register_steps(server, session, name, password)
    if outcome.__class__ is not Refused:
        server.reply(session, proto.format_ok("REGISTER", outcome.name))
    elif outcome.kind == BAD:
        server.reply(session, proto.format_err(proto.BAD_REQUEST, outcome.detail))
    elif outcome.kind == TOO_FAST:
        server.reply(session, too_fast(outcome.detail, "too many registrations from your address"))
    elif outcome.kind == UNAVAILABLE:
        server.reply(session, STORAGE_UNAVAILABLE)
    else:
        server.reply(session, proto.format_err(proto.NAME_TAKEN, "name %s is taken" % name))


def login_steps(server, session, name, password, history_count=0):
    """Check a name and password, for v1's LOGIN and every IRC way of
    logging in: (account, its rooms, the default room's last
    ``history_count`` messages), or Refused. The session is not online yet:
    the caller says so (go_online) in its protocol's words. A generator,
    for ``yield from``."""
    started = server.now
    key = name_key(name)
    if not session.exempt:
        # Guessing is slowed per address and per account, whoever asks.
        wait = server.guards.login_wait(session.ip, key, started)
        if wait:
            return Refused(TOO_FAST, wait)
        server.guards.login_started(session.ip, key, started)

    def not_a_failure():
        if not session.exempt:
            server.guards.login_forgiven(session.ip, key, started)

    # Trailing spaces and tabs are not part of a password (REGISTER trims
    # them too): typed by hand or pasted, they are never meant.
    typed, password = password, password.rstrip(" \t")
    account = None
    if not (proto.check_name(name) or password_problem(password, 1)):
        try:
            account = yield storage(server.store.find_account, name)
        except StorageUnavailable:
            not_a_failure()
            return Refused(UNAVAILABLE)
    # A name that is no account's is checked against a dummy hash, so that
    # it costs what a real one costs.
    correct = yield hashing(verify_password, password, account.password_hash if account else server.dummy_hash)
    if not correct and account is not None and typed != password:
        # Registered before REGISTER trimmed: the spaces may be in its hash.
        correct = yield hashing(verify_password, typed, account.password_hash)
    if not correct or account is None:
        log.info("%s failed to log in as %s", session.address, name)
        if not session.exempt:
            server.login_failed(session.ip, key)
        # Answered at the same moment whether or not the name exists and
        # whatever the cost its hash was made with (--scrypt-n changes).
        yield until(started + server.limits.login_failure_delay)
        return Refused(WRONG)
    not_a_failure()
    return (yield from login_checked(server, session, account.name, history_count))


def login_checked(server, session, name, history_count=0):
    """The second half of a login, once the password checked out (or the
    account was just made): the account is read again with its rooms and
    the history, because an operator's ban may have been stored while the
    password was hashed. A ban stored after this read is answered after
    it, and closes the session, which is online by then."""
    try:
        account, rooms, history = yield storage(account_and_history, server.store, name,
                                                history_count, server.room.info.id)
    except StorageUnavailable:
        return Refused(UNAVAILABLE)
    if session.state is CLOSING:
        return Refused(GONE)
    if account is None or account.banned:
        return Refused(BANNED, account.ban_reason if account else "")
    heard = server.bans_heard.get(name_key(account.name))
    if heard is not None:  # banned on another server after the read
        return Refused(BANNED, heard[0])
    left = server.kick_left(account.name)
    if left:
        return Refused(KICKED, left)
    return account, rooms, history


def cmd_login(server, session, name, password):
    if session.account is not None:
        server.reply(session, proto.format_err(proto.BAD_REQUEST, "already logged in"))
        return
    in_clear = clear_password_refusal(server, session)
    if in_clear:
        server.reply(session, proto.format_err(proto.BAD_REQUEST, in_clear))
        return
    outcome = yield from login_steps(server, session, name, password, server.limits.history)
    if outcome.__class__ is Refused:
        kind = outcome.kind
        if kind == TOO_FAST:
            server.reply(session, too_fast(outcome.detail, "too many failed logins, try again later"))
        elif kind == UNAVAILABLE:
            server.reply(session, STORAGE_UNAVAILABLE)
        elif kind == WRONG:
            server.reply(session, proto.format_err(proto.UNAUTHORIZED, "wrong name or password"))
        elif kind == BANNED:
            server.close_session(session, proto.format_err(proto.BANNED, outcome.detail or "banned"), "banned")
        elif kind == KICKED:
            server.close_session(session, kicked_error(outcome.detail), "kicked")
        return
    account, rooms, history = outcome
    server.go_online(session, account, rooms)
    if server.room not in session.rooms:
        history = []  # the account has left the default room (and its other sessions say so)
    lines = [proto.format_ok("LOGIN", account.name)] + proto.format_history(v1_history(history))
    lines.append(server.users_line(session))
    server.reply_lines(session, lines)


def account_and_history(store, name, count, room_id):
    """On the storage thread, for a LOGIN whose password checked out: the
    account as it is now, the rooms it is in, and the last ``count``
    messages of the room ``room_id`` (none if it is not in it)."""
    account = store.find_account(name)
    if account is None:
        return None, [], []
    rooms = store.rooms_of(account.id)
    if not count or not any(room.id == room_id for room in rooms):
        return account, rooms, []
    return account, rooms, store.room_history(count, None, None, room_id)


def live_form(new, stored):
    """``stored`` (the Message that ``new`` became, or None) as it goes out
    live: a LiveMessage when it was sent as a NOTICE or with client tags."""
    if stored is not None and (new.notice or new.client_tags):
        return LiveMessage(stored, new.notice, new.client_tags)
    return stored


def v1_text(body):
    """A stored text as protocol v1 may carry it: a message said on IRC
    may hold formatting codes, which v1 refuses and a terminal would obey;
    v1's own texts come back unchanged."""
    if body.isprintable():
        return body
    text = sae_irc.irc_text_for_v1(body)
    return text if text is not None else ""


def v1_history(history):
    """Stored messages with v1-safe texts (see v1_text)."""
    if all(message.body.isprintable() for message in history):
        return history
    return [message._replace(body=v1_text(message.body)) for message in history]


def refusal(error):
    """A ProtocolError of sae_protocol's (not_in_room, ...) as its ERR line."""
    return proto.format_err(error.code, error.text)


def too_fast(wait, text):
    return proto.format_err(proto.SLOW_DOWN, "%d %s" % (math.ceil(wait), text))


def kicked_error(seconds_left):
    return proto.format_err(proto.KICKED, "%d kicked, try again in %d seconds" % (seconds_left, seconds_left))


def cmd_say(server, session, text):
    if server.room not in session.rooms:
        server.reply(session, refusal(proto.not_in_room(server.room.info.name)))
        return
    server.accept_message(session, None, text)


def cmd_tell(server, session, name, text):
    server.accept_message(session, name, text)


def cmd_who(server, session):
    server.reply(session, server.users_line(session))


def cmd_history(server, session, count, where):
    query = proto.parse_history(count, where, server.limits.history_max)
    if isinstance(query, proto.ProtocolError):
        server.reply(session, proto.format_err(query.code, query.text))
        return
    if server.room not in session.rooms:
        server.reply(session, refusal(proto.not_in_room(server.room.info.name)))
        return
    upto = server.delivered_upto
    try:
        history = yield storage(server.store.room_history, query.count, query.before, query.after,
                                server.room.info.id)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    if query.after is not None:
        history = caught_up(history, upto)
    server.reply_lines(session, proto.format_history(v1_history(history)))


def caught_up(history, upto):
    """A catch-up's messages up to ``upto``, the server's delivered_upto
    when it was asked: the ones after it reach the session live."""
    if any(message.id > upto for message in history):
        return [message for message in history if message.id <= upto]
    return history


def cmd_ping(server, session, token):
    server.reply(session, proto.format_pong(token))


def cmd_pong(server, session, token):
    """The answer to our PING. Any line proves the client alive (_read), so
    there is nothing left to do, and nothing answers a PONG."""


def cmd_help(server, session):
    lines = proto.format_help(rooms=session.rooms_on)
    in_clear = clear_password_refusal(server, session)
    if in_clear:
        # Read before a first LOGIN, so said before the password is sent.
        lines.insert(-1, proto.format_info("LOGIN, REGISTER: " + in_clear))
    server.reply_lines(session, lines)


def cmd_quit(server, session, reason):
    server.close_session(session, proto.format_bye(reason or "goodbye"), reason or "quit")


# Protocol v1.1: rooms and private conversations. run_held has opted the
# session in already. What changes a room (JOIN, PART, TOPIC) changes the
# Rooms in memory only once the store has done it, so that memory never
# says what the database does not.

def cmd_cap(server, session, capability):
    if capability == proto.GUESTS_CAPABILITY:
        session.guests_on = True
    server.reply(session, proto.format_cap(server.room.info.name, capability))


def cmd_join(server, session, name):
    limits = server.limits
    room = server.rooms.get(room_key(name))
    if room is None or room not in session.rooms:
        if len(session.rooms) >= limits.rooms_per_account:
            server.reply(session, refusal(proto.too_many_rooms(limits.rooms_per_account)))
            return
        if room is None and len(server.rooms) >= limits.rooms_max:
            server.reply(session, refusal(proto.too_many_rooms(limits.rooms_max, on_server=True)))
            return
    account = session.account
    try:
        full, info, joined, members = yield storage(join_room, server.store, account.id, name, server.timestamp(),
                                                    limits.rooms_max, limits.rooms_per_account)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    if full == "server":
        server.reply(session, refusal(proto.too_many_rooms(limits.rooms_max, on_server=True)))
        return
    if full == "account":
        server.reply(session, refusal(proto.too_many_rooms(limits.rooms_per_account)))
        return
    key = name_key(account.name)
    if not any(name_key(member) == key for member in members):
        # Deleted by the operator between the store's steps.
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    room = server.make_room(info)
    sent = []
    if joined or room not in session.rooms:
        # Joined now, or before without memory knowing (a LOGIN that read
        # its rooms just before a JOIN of another session was stored):
        # every session of the account is in the room from here on.
        sent = server.joined(room, account, announce=joined)
    protocol = session.protocol
    lines = [render_topic(room.info)(protocol)] + protocol.format_members(info.name, members)
    lines.append(proto.format_ok("JOIN", info.name))
    if joined and session not in sent:
        lines.insert(0, protocol.format_joined(info.name, account.name))
    server.reply_lines(session, lines)


def join_room(store, account_id, name, at, rooms_max, rooms_per_account):
    """On the storage thread, for a JOIN: (what is full, or None; the room;
    whether the account joined it now; its members). The limits are checked
    again here, where no other JOIN runs meanwhile."""
    info = store.find_room(name)
    if info is None:
        if store.count_rooms() >= rooms_max:
            return "server", None, False, []
        info = store.ensure_room(name, at)
    rooms = store.rooms_of(account_id)
    if all(room.id != info.id for room in rooms) and len(rooms) >= rooms_per_account:
        return "account", info, False, []
    joined = store.join_room(account_id, info.id, at)
    return None, info, joined, store.room_members(info.id)


def cmd_part(server, session, name, reason):
    room = server.member_room(session, name)
    if room is None:
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    account = session.account
    try:
        left = yield storage(server.store.leave_room, account.id, room.info.id)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    if not left and room not in session.rooms:
        # Another session of the account left it (or the operator deleted
        # it) while this PART was in flight: that one got the PARTED.
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    sent = server.parted(room, account, reason)
    if session not in sent:
        server.reply(session, session.protocol.format_parted(room.info.name, account.name, reason))
    server.reply(session, proto.format_ok("PART", room.info.name))


def cmd_topic(server, session, name, text):
    room = server.member_room(session, name)
    if room is None:
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    if not text:
        server.reply_lines(session, [render_topic(room.info)(session.protocol),
                                     proto.format_ok("TOPIC", room.info.name)])
        return
    topic = "" if text == proto.CLEAR_TOPIC else text
    problem = proto.check_topic(topic, server.limits.topic_max)
    if problem:
        too_long = len(topic.encode("utf-8")) > server.limits.topic_max
        server.reply(session, proto.format_err(proto.TOO_LONG if too_long else proto.BAD_REQUEST, problem))
        return
    try:
        info = yield storage(server.store.set_topic, room.info.id, topic, session.account.name, server.timestamp())
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    if info is None:  # deleted meanwhile
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    sent = server.topic_changed(room, info)
    if session not in sent:  # its account left the room meanwhile: the line is still its answer
        server.reply(session, render_topic(info)(session.protocol))
    server.reply(session, proto.format_ok("TOPIC", info.name))


def cmd_rsay(server, session, name, text):
    room = server.member_room(session, name)
    if room is None:
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    server.accept_message(session, None, text, room)


def room_lines(server, listed, protocol):
    """ROOM lines for (RoomInfo, members) pairs, sorted by name."""
    lines = []
    for info, members in sorted(listed, key=lambda pair: room_key(pair[0].name)):
        room = server.rooms.get(room_key(info.name))
        online = len(room.accounts) if room is not None and room.info.id == info.id else 0
        lines.append(protocol.format_room(info.name, online, members, info.topic))
    return lines


def cmd_list(server, session):
    try:
        listed = yield storage(server.store.list_rooms)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    lines = room_lines(server, listed, session.protocol)
    server.reply_lines(session, lines + [proto.format_ok("LIST", str(len(lines)))])


def cmd_rooms(server, session):
    try:
        listed = yield storage(server.store.list_rooms)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    # Which rooms the account is in is memory's to say (it has every JOIN
    # and PART stored so far); the store, how many members each has.
    ids = {room.info.id for room in session.rooms}
    lines = room_lines(server, [pair for pair in listed if pair[0].id in ids], session.protocol)
    server.reply_lines(session, lines + [proto.format_ok("ROOMS", str(len(lines)))])


def cmd_names(server, session, name):
    room = server.member_room(session, name)
    if room is None:
        server.reply(session, refusal(proto.not_in_room(name)))
        return
    try:
        members = yield storage(server.store.room_members, room.info.id)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    server.reply_lines(session, session.protocol.format_members(room.info.name, members)
                       + [proto.format_ok("NAMES", room.info.name)])


def cmd_room_history(server, session, target, count, where):
    """HISTORY <#room|@name|*> <count> [bound]: parse_command has checked
    every field but the cap."""
    query = proto.parse_history(count, where, server.limits.history_max)
    if isinstance(query, proto.ProtocolError):
        server.reply(session, refusal(query))
        return
    target = proto.history_target(target)
    store, account = server.store, session.account
    if target.kind == "room":
        room = server.member_room(session, target.name)
        if room is None:
            server.reply(session, refusal(proto.not_in_room(target.name)))
            return
        work = (store.room_history, query.count, query.before, query.after, room.info.id)
    elif target.kind == "peer":
        work = (conversation, store, account.id, target.name, query)
    else:
        work = (store.missed, account.id, query.after, query.count)
    upto = server.delivered_upto
    try:
        history = yield storage(*work)
    except StorageUnavailable:
        server.reply(session, STORAGE_UNAVAILABLE)
        return
    if history is None:
        server.reply(session, proto.format_err(proto.NOT_FOUND, "no such account %s" % target.name))
        return
    if query.after is not None:
        history = caught_up(history, upto)
    server.reply_lines(session, proto.format_history_of(v1_history(history), server.room.info.name))


def conversation(store, account_id, peer_name, query):
    """On the storage thread: the private conversation with ``peer_name``,
    or None if there is no such account."""
    peer = store.find_account(peer_name)
    if peer is None:
        return None
    return store.conversation_history(account_id, peer.id, query.count, query.before, query.after)


COMMANDS = {
    "REGISTER": cmd_register,
    "LOGIN": cmd_login,
    "SAY": cmd_say,
    "TELL": cmd_tell,
    "WHO": cmd_who,
    "HISTORY": cmd_history,
    "PING": cmd_ping,
    "PONG": cmd_pong,
    "QUIT": cmd_quit,
    "HELP": cmd_help,
    "CAP": cmd_cap,
    "JOIN": cmd_join,
    "PART": cmd_part,
    "TOPIC": cmd_topic,
    "RSAY": cmd_rsay,
    "LIST": cmd_list,
    "ROOMS": cmd_rooms,
    "NAMES": cmd_names,
    proto.ROOM_HISTORY: cmd_room_history,
}


# --- command line -------------------------------------------------------

class FromEnvironment(str):
    """An option's value taken from its SAE_* variable: argparse converts a
    string default with the option's type, as it does a flag's value, and
    the type's error names the variable so the user knows where to look."""
    variable = ""


def environment_default(variable, default):
    value = os.environ.get(variable)
    if value is None:
        return default
    from_environment = FromEnvironment(value)
    from_environment.variable = variable
    return from_environment


def option_type(convert, expected):
    """An argparse type: ``convert(text)``, or an error saying what was
    expected and, for a value from the environment, which variable held it."""
    def parse(text):
        try:
            return convert(text)
        except ValueError:
            where = " (from %s)" % text.variable if isinstance(text, FromEnvironment) else ""
            raise argparse.ArgumentTypeError("%r is not %s%s" % (str(text), expected, where)) from None
    return parse


def port_number(text):
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def port_or_off(text):
    """A port number, or None for ``off``."""
    return None if str(text).strip().lower() == "off" else port_number(text)


def not_negative(convert):
    def parse(text):
        value = convert(text)
        if not 0 <= value < math.inf:  # also refuses nan
            raise ValueError(text)
        return value
    return parse


def limits_problem(limits):
    """Why these limits cannot run a server (a value the option's type lets
    through but the server cannot use), or None."""
    for name in sorted(POSITIVE_LIMITS):
        if not getattr(limits, name) > 0:
            return "--%s must be above 0" % name.replace("_", "-")
    n = limits.scrypt_n
    if not 2 <= n <= SCRYPT_N_MAX or n & (n - 1):
        return "--scrypt-n must be a power of two from 2 to %d" % SCRYPT_N_MAX
    if not 1 <= limits.kick_seconds <= KICK_SECONDS_MAX:
        return "--kick-seconds must be 1 to %d" % KICK_SECONDS_MAX
    if proto.check_room(limits.default_room):
        return "--default-room must be a room name: %s" % proto.check_room(limits.default_room)
    return None


def tls_problem(args):
    """Why these TLS options cannot run a server, or None."""
    if args.tls_key and not args.tls_cert:
        return "--tls-key needs --tls-cert"
    if args.require_tls and not args.tls_cert:
        return "--require-tls needs --tls-cert (and --tls-port): clients need a TLS port to log in on"
    if args.require_tls and args.tls_port is None:
        return "--require-tls needs a TLS port: --tls-port is off"
    return None


def networks(text):
    for network in text.split(","):
        if network.strip():
            ipaddress.ip_network(network.strip(), strict=False)
    return text


def instance_name(text):
    """An instance's name: it goes into log lines and IRC replies, so one
    word of printable ASCII, at most 64 bytes (host:port fits); "" for
    the default."""
    text = str(text)
    if text and not (len(text) <= 64 and text.isascii() and text.isprintable() and " " not in text):
        raise ValueError(text)
    return text


def room_name(text):
    if proto.check_room(text):
        raise ValueError(text)
    return text


def log_level(text):
    if text.upper() not in LOG_LEVELS:
        raise ValueError(text)
    return text.upper()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EXPECTED = {int: "a whole number of 0 or more", float: "a number of 0 or more"}


class TerminalLog(logging.StreamHandler):
    """The log, on stderr. When stderr is the terminal the console asks its
    admin password on, a line logged meanwhile would bury the question: the
    prompt is written again after it."""

    console_of = None  # the Server whose console shares the terminal

    def emit(self, record):
        super().emit(record)
        if self.console_of is not None and self.console_of.console is not None:
            self.console_of.console.ask_again()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="sae-server", description="sae-chat server. Every option can also be set "
        "with an environment variable SAE_<OPTION> (e.g. SAE_DB, SAE_PORT). "
        "`sae-server admin COMMAND` sends one command to a running server's admin socket.")
    parser.add_argument("--host", default=environment_default("SAE_HOST", "0.0.0.0"),
                        help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=option_type(port_number, "a port number (0 to 65535)"),
                        default=environment_default("SAE_PORT", 12345),
                        help="TCP port (default 12345; 0 picks a free one)")
    parser.add_argument("--db", default=environment_default("SAE_DB", "sqlite:///sae.db"),
                        help="sqlite:///FILE (default sqlite:///sae.db) or mysql://USER:PASSWORD@HOST:PORT/NAME")
    add_admin_options(parser)
    parser.add_argument("--tls-cert", default=environment_default("SAE_TLS_CERT", ""),
                        help="PEM file of the certificate (and its chain, and the key if --tls-key is not "
                             "given): turns on the TLS listeners")
    parser.add_argument("--tls-key", default=environment_default("SAE_TLS_KEY", ""),
                        help="PEM file of the certificate's private key")
    parser.add_argument("--tls-port", type=option_type(port_or_off, "a port number (0 to 65535) or off"),
                        default=environment_default("SAE_TLS_PORT", TLS_PORT),
                        help="TCP port of protocol v1 over TLS (default %d; off: none)" % TLS_PORT)
    parser.add_argument("--irc-tls-port", type=option_type(port_or_off, "a port number (0 to 65535) or off"),
                        default=environment_default("SAE_IRC_TLS_PORT", IRC_TLS_PORT),
                        help="TCP port of IRC over TLS, with --tls-cert and the IRC listener (default %d; "
                             "off: none)" % IRC_TLS_PORT)
    parser.add_argument("--require-tls", action="store_true",
                        default=os.environ.get("SAE_REQUIRE_TLS", "").lower() in ("1", "yes", "true", "on"),
                        help="refuse passwords (LOGIN, REGISTER; IRC's PASS, SASL, REGISTER, NickServ) on the "
                             "plain ports from other machines than this one: they must use TLS")
    parser.add_argument("--irc-port", type=option_type(port_or_off, "a port number (0 to 65535) or off"),
                        default=environment_default("SAE_IRC_PORT", str(sae_ircd.IRC_PORT)),
                        help="TCP port of the IRC listener, on the same --host (default %d; off: none)"
                        % sae_ircd.IRC_PORT)
    parser.add_argument("--server-name", default=environment_default("SAE_SERVER_NAME", None),
                        help="the server's name in IRC replies (default: the host name)")
    parser.add_argument("--network-name", default=environment_default("SAE_NETWORK_NAME", sae_ircd.NETWORK),
                        help="the network's name IRC clients are told (default %s)" % sae_ircd.NETWORK)
    parser.add_argument("--motd-file", default=environment_default("SAE_MOTD_FILE", None),
                        help="text IRC clients get as the message of the day (default: none)")
    parser.add_argument("--irc-guests", action="store_true",
                        default=os.environ.get("SAE_IRC_GUESTS", "").lower() not in ("", "0", "no", "off"),
                        help="let IRC clients that do not log in chat as guests under their nick")
    parser.add_argument("--cluster", default=environment_default("SAE_CLUSTER", ""),
                        help="redis://HOST:6379/0 (rediss:// for TLS): serve one chat with the other servers "
                             "on the same MariaDB --db, through this Redis (pip install 'sae-chat[cluster]')")
    parser.add_argument("--instance-name", default=environment_default("SAE_INSTANCE_NAME", ""),
                        type=option_type(instance_name, "one word of printable ASCII, at most 64 characters"),
                        help="this server's name in the cluster, in logs and the admin's who "
                             "(default: host name:port)")
    parser.add_argument("--log-level", default=environment_default("SAE_LOG_LEVEL", "INFO"),
                        type=option_type(log_level, "one of " + ", ".join(LOG_LEVELS)),
                        help="one of %s (default INFO)" % ", ".join(LOG_LEVELS))
    for name, (default, help_text) in LIMITS.items():
        if name == "exempt":
            convert = option_type(networks, "a comma-separated list of addresses or networks (CIDR)")
        elif name == "default_room":
            convert = option_type(room_name, "a room name (# and 1 to 32 characters of A-Z a-z 0-9 _ . -)")
        else:
            convert = option_type(not_negative(type(default)), EXPECTED[type(default)])
        parser.add_argument("--" + name.replace("_", "-"), type=convert,
                            default=environment_default("SAE_" + name.upper(), default),
                            help="%s (default %s)" % (help_text, default))
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    give_freed_hash_memory_back()
    if argv[:1] == ["admin"]:
        return admin_main(argv[1:])
    args = parse_args(argv)
    terminal_log = TerminalLog(sys.stderr)
    terminal_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[terminal_log])
    limits = Limits(**{name: getattr(args, name) for name in LIMITS})
    problem = limits_problem(limits)
    if problem:
        log.error("%s", problem)
        return 1
    problem = tls_problem(args)
    if problem:
        log.error("%s", problem)
        return 1
    tls = None
    if args.tls_cert:
        try:
            tls = TlsCertificate(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.error("cannot use the TLS certificate %s: %s", args.tls_cert,
                      getattr(error, "strerror", None) or error)
            return 1
    try:
        password = admin_password(args)
    except OSError as error:
        log.error("cannot read the admin password file: %s", error)
        return 1
    if args.cluster:
        problem = sae_cluster.cluster_problem(args.cluster)
        if problem:
            log.error("%s", problem)
            return 1
    label = describe_url(args.db)
    try:
        store = open_store(args.db)
    except (ValueError, StorageUnavailable) as error:
        log.error("cannot open the database: %s", error)
        return 1
    if args.cluster and not store.chained:
        log.error("--cluster needs a database every server of the cluster can reach (--db mysql://...), "
                  "not %s", label)
        store.close()
        return 1
    try:
        irc = sae_ircd.irc_options(args.server_name, args.network_name, args.motd_file, args.irc_guests)
    except OSError as error:
        log.error("cannot read the MOTD file: %s", error.strerror or error)
        store.close()
        return 1
    try:
        server = Server(store, args.host, args.port, limits, admin_password=password,
                        tls=tls, tls_port=args.tls_port, require_tls=args.require_tls, irc=irc)
    except StorageUnavailable as error:
        log.error("cannot open the database: %s", error)
        store.close()
        return 1
    try:
        server.listen()
        if args.irc_port is not None:
            irc_port = server.listen_irc(args.irc_port, args.irc_tls_port)
            log.info("IRC port %s:%d, server name %s", server.host, irc_port, irc.server_name)
        if args.admin_socket:
            server.listen_admin(args.admin_socket)
        if args.cluster:
            instance = args.instance_name or "%s:%d" % (socket.gethostname(), server.port)
            # Several instances' logs end up side by side (one journal, one
            # terminal): each line says whose it is.
            terminal_log.setFormatter(logging.Formatter(
                "%(asctime)s %(levelname)s [" + instance.replace("%", "%%") + "] %(message)s"))
            server.start_cluster(args.cluster, instance)
        for listener in server.listeners[1:]:
            log.info("listening for %s", listener.describe(server.host))
        # Written once everything is ready: tests and scripts wait for it.
        log.info("listening on %s:%d, database %s", server.host, server.port, label)
    except OSError as error:
        log.error("cannot listen: %s", error.strerror or error)
        store.close()
        return 1
    # Signals only wake the loop; the loop itself shuts down in order.
    signal.set_wakeup_fd(server.wakeup_fd())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: server.stop(
            "server shutting down (%s)" % signal.Signals(number).name))
    if tls is not None:
        # A renewed certificate (certbot's deploy hook): taken without a restart.
        signal.signal(signal.SIGHUP, lambda number, frame: server.reload_tls_soon())
    # Under systemd, nohup or a pipe there is no one to type: no console.
    if sys.stdin is not None and sys.stdin.isatty():
        server.open_console(sys.stdin.fileno(), sys.stdout.fileno())
        if sys.stderr is not None and sys.stderr.isatty():
            terminal_log.console_of = server
    try:
        in_order = server.run()
    finally:
        if server.console is not None:
            set_terminal_echo(server.console.read_fd, True)
    # A fault stopped it (logged by run()): systemd's Restart=on-failure
    # brings it back.
    return 0 if in_order else 1


# The IRC commands (they use this module's Server, storage() and the
# shared login steps): imported last, when everything they need is here.
import sae_ircd  # noqa: E402

if __name__ == "__main__":
    # sae_ircd imported the module "sae_server", a second copy of this one
    # run as __main__: run that one, so that both see the same classes.
    import sae_server
    sys.exit(sae_server.main())
