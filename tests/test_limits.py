"""The limits that keep one misbehaving client from hurting the others: the
send queue, flood control, login and registration strikes, connection caps,
running out of file descriptors.

Two kinds of test, as elsewhere. Limits that need no clock run against a
real sae-server process (``make_server``) and check the command-line options
too. Limits measured in time (the token bucket, strikes per minute, the
accept pause) run in this process on the ``Harness`` of conftest.py, whose
loop the test turns by hand under a frozen clock, so "one second later" is
``clock.tick(1)``, not a sleep.

Loopback is exempt from the per-address and rate limits by default, so the
tests of those limits turn the exemption off (``--exempt ""``, ``exempt=""``)
and, to stand for a second machine, bind a client to 127.0.0.2 (all of
127.0.0.0/8 is loopback).

To show that something did *not* happen, a test waits for a later line that
the server would have sent after it (a marker message, a PONG) and looks at
what came before.
"""

import logging
import os
import re
import resource
import socket
import threading

import pytest

from conftest import ITERATIONS, TIMEOUT, LineClient, chat_until_cut
import sae_protocol
from sae_server import ACCEPT_PAUSE

PASSWORD = "password1"
MSG_RE = re.compile(r"MSG (\d+) (\S+) (\S+) (.*)\Z", re.S)


# --- helpers -------------------------------------------------------------

class Client(LineClient):
    """conftest's LineClient, with what must be set before connecting: a
    source address (another "machine" on loopback) and a receive buffer."""

    def __init__(self, port, source="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        if rcvbuf:
            # Before connect(), so the window is small from the handshake on.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""
        self.seen = []


def connect(server, **options):
    client = Client(server.port, **options)
    server.clients.append(client)  # closed by the fixture
    return client


def sign_up(server, *names):
    client = server.client()
    for name in names:
        client.register(name, PASSWORD)
    client.send("QUIT")
    client.expect_closed()


def newcomer(server, name, **options):
    """Register and log in on one connection (no extra connection to count)."""
    client = connect(server, **options)
    client.register(name, PASSWORD)
    client.login(name, PASSWORD)
    return client


def online(server, name, **options):
    client = connect(server, **options)
    client.login(name, PASSWORD)
    return client


def short(lines):
    """Lines for a failure message, the 3000-byte ones cut down."""
    return [line if line is None or len(line) < 100 else line[:40] + "..." + line[-40:]
            for line in lines]


def texts_from(lines, sender):
    """The texts of the room messages by ``sender`` among ``lines``."""
    return [m.group(4) for m in map(MSG_RE.match, lines) if m and m.group(3) == sender]


def connect_from(h, source):
    """A Harness client from another loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", h.server.port))
    sock.setblocking(False)
    h.buffers[sock] = b""
    return sock


def until(h, sock, pattern):
    """Turn the loop until ``sock`` gets a line matching ``pattern``; return
    every line it got up to and including that one."""
    seen = []
    for _ in range(ITERATIONS):
        h.turn()
        for line in h.lines(sock):
            if line is None:
                raise AssertionError("closed while waiting for %r; saw %r" % (pattern, short(seen)))
            seen.append(line)
            if re.match(pattern, line):
                return seen
    raise AssertionError("no %r; saw %r" % (pattern, short(seen)))


def ask(h, sock, line, pattern=r"OK|ERR"):
    """Send one line and return the answer matching ``pattern``."""
    sock.sendall(line.encode() + b"\n")
    return until(h, sock, pattern)[-1]


def marked(h, sender, watcher, text):
    """``sender`` says ``text``; the lines ``watcher`` got up to that message."""
    sender.sendall(b"SAY " + text.encode() + b"\n")
    return until(h, watcher, r"MSG \S+ \S+ \S+ %s\Z" % re.escape(text))


# --- send queue ----------------------------------------------------------

def test_a_client_that_stops_reading_is_cut_at_its_sendq_and_the_others_get_everything(
        make_server):
    server = make_server("--sendq-max", "65536")
    sign_up(server, "alice", "bob", "carol")
    alice, bob = online(server, "alice"), online(server, "bob")
    # carol's window is small, so the server's own queue for her grows soon
    # (loopback's kernel buffers would otherwise absorb megabytes first).
    carol = online(server, "carol", rcvbuf=4096)
    for watcher in (alice, bob):
        watcher.expect(r"JOIN carol")
    # carol reads no more from here on.

    padding = "x" * 3000
    sent, cut_at, bob_lines = chat_until_cut(server, alice, bob, "carol", most=4000, padding=padding)

    got = texts_from(bob_lines, "alice")
    assert [t.split(" ")[0] for t in got] == [str(n) for n in range(sent)], short(bob_lines)
    assert all(t.endswith(" " + padding) for t in got)
    server.wait_log(r".*carol.*sendq exceeded")
    # carol's last line is the BYE, whole, after whole lines only.
    rest = carol.expect_closed()
    assert rest and rest[-1] == "BYE sendq exceeded", short(rest[-3:])
    assert all(MSG_RE.match(line) and line.endswith(padding) for line in rest[:-1]), short(rest)
    # alice and bob chat on.
    bob.send("SAY still here")
    alice.expect(r"MSG \S+ \S+ bob still here\Z")


# --- flood control -------------------------------------------------------

def flooder(h, clock, name):
    """A logged-in session with a full token bucket (logging in cost two)."""
    sock = h.logged_in(name)
    clock.tick(10)
    return sock


def test_a_pasted_block_is_held_back_then_runs_at_the_flood_rate(harness):
    make, clock = harness
    h = make(exempt="", flood_burst=10, flood_rate=5)
    alice, bob = flooder(h, clock, "alice"), flooder(h, clock, "bob")
    until(h, alice, r"JOIN bob")

    block = "".join("SAY line %d\n" % n for n in range(30)) + "PING end of block\n"
    alice.sendall(block.encode())
    # The burst: ten messages, and not an eleventh, although bob, who is
    # not held, gets his marker through meanwhile.
    seen = until(h, bob, r"MSG \S+ \S+ alice line 9\Z")
    seen += marked(h, bob, bob, "bob is not held up")
    assert texts_from(seen, "alice") == ["line %d" % n for n in range(10)]

    clock.tick(1)  # five tokens
    seen = until(h, bob, r"MSG \S+ \S+ alice line 14\Z")
    seen += marked(h, bob, bob, "one second later")
    assert texts_from(seen, "alice") == ["line %d" % n for n in range(10, 15)]

    clock.tick(5)  # the bucket holds ten at most: ten more ...
    seen = until(h, bob, r"MSG \S+ \S+ alice line 24\Z")
    seen += marked(h, bob, bob, "five seconds later")
    assert texts_from(seen, "alice") == ["line %d" % n for n in range(15, 25)]
    clock.tick(1)  # ... and the last five
    alice_saw = until(h, alice, r"PONG end of block")
    assert texts_from(alice_saw, "alice") == ["line %d" % n for n in range(30)]
    assert [line for line in alice_saw if not line.startswith(("MSG", "JOIN"))] == [
        "PONG end of block"]  # nothing refused, nothing else
    seen = marked(h, bob, bob, "the end")
    assert texts_from(seen, "alice") == ["line %d" % n for n in range(25, 30)]


def test_loopback_is_not_held_back_by_default(harness):
    make, clock = harness
    h = make()
    alice = h.logged_in("alice")
    alice.sendall("".join("SAY line %d\n" % n for n in range(30)).encode())
    seen = until(h, alice, r"MSG \S+ \S+ alice line 29\Z")  # the clock never moves
    assert texts_from(seen, "alice") == ["line %d" % n for n in range(30)]


def test_a_flood_past_the_held_cap_is_closed_with_excess_flood(harness):
    make, clock = harness
    # 100 held lines of at most 64 bytes each fit exactly; the 101st does not.
    h = make(exempt="", flood_burst=10, flood_rate=5, flood_held_max=100 * 64)
    alice, bob = flooder(h, clock, "alice"), flooder(h, clock, "bob")
    until(h, alice, r"JOIN bob")

    alice.sendall("".join("SAY f%d\n" % n for n in range(110)).encode())
    seen = until(h, bob, r"MSG \S+ \S+ alice f9\Z")
    seen += marked(h, bob, bob, "marker")
    assert texts_from(seen, "alice") == ["f%d" % n for n in range(10)]
    alice_saw = h.lines(alice)
    assert None not in alice_saw  # held back, not closed

    alice.sendall(b"SAY one too many\n")
    alice_saw += h.expect_closed(alice)
    assert alice_saw[-1] == "BYE excess flood", alice_saw
    assert texts_from(alice_saw, "alice") == ["f%d" % n for n in range(10)]
    assert [line for line in alice_saw if line.startswith("ERR")] == []
    assert until(h, bob, r"LEAVE alice")[-1] == "LEAVE alice excess flood"
    # What was held was never run.
    seen = marked(h, bob, bob, "after the flood")
    assert texts_from(seen, "alice") == []


def test_a_persistent_flooder_is_closed_while_others_chat(harness):
    make, clock = harness
    h = make(exempt="")
    alice, bob = flooder(h, clock, "alice"), flooder(h, clock, "bob")
    until(h, alice, r"JOIN bob")
    # A script in a loop: it never stops, and the server never stops
    # reading it while it waits, so it finds out.
    closed, sent = False, 0
    while not closed:
        assert sent < 5000, "never closed"
        try:
            alice.sendall("".join("SAY spam %d\n" % (sent + n) for n in range(100)).encode())
        except BlockingIOError:
            pass
        sent += 100
        h.turn()
        clock.tick(0.1)
        lines = h.lines(alice)
        closed = None in lines
    assert lines[-2] == "BYE excess flood", lines[-5:]
    assert until(h, bob, r"LEAVE alice")[-1] == "LEAVE alice excess flood"
    marked(h, bob, bob, "bob chats on")


def test_flood_options_on_the_command_line(make_server):
    server = make_server("--exempt", "", "--flood-burst", "3", "--flood-held-max", "1024")
    sign_up(server, "alice", "bob")
    bob = online(server, "bob")
    alice = online(server, "alice")
    bob.expect(r"JOIN alice")
    # One token went on LOGIN: two SAYs run, 38 held at 64 bytes > 1024.
    alice.send_raw(b"".join(b"SAY f%d\n" % n for n in range(40)))
    lines = alice.expect_closed()
    assert lines[-1] == "BYE excess flood", lines
    bob.send("SAY marker")
    seen = [bob.next()]
    while not seen[-1].endswith(" bob marker"):
        seen.append(bob.next())
    assert "LEAVE alice excess flood" in seen, seen
    # The two that ran were stored and delivered; the held ones never ran.
    assert texts_from(seen, "alice") == ["f0", "f1"], seen


# --- logins and registrations -------------------------------------------

LOGIN_429 = r"ERR 429 (\d+) \S"


def test_failed_logins_are_limited_per_address_and_per_account(harness):
    make, clock = harness
    h = make(exempt="", login_failures=5, login_timeout=600)
    setup = h.connect()
    for name in ("alice", "bob"):
        assert ask(h, setup, "REGISTER %s %s" % (name, PASSWORD)) == "OK REGISTER %s" % name

    guesser = h.connect()
    for n in range(5):
        assert ask(h, guesser, "LOGIN alice guess%04d" % n) == "ERR 401 wrong name or password"
    # The sixth try is refused unchecked, even with the right password.
    refused = ask(h, guesser, "LOGIN alice %s" % PASSWORD)
    assert re.match(LOGIN_429, refused) and 0 < int(refused.split()[2]) <= 60, refused
    # Per account: from another address too ...
    elsewhere = connect_from(h, "127.0.0.2")
    refused = ask(h, elsewhere, "LOGIN alice %s" % PASSWORD)
    assert re.match(LOGIN_429, refused), refused
    # ... and per address: another account from the guesser's address.
    neighbour = h.connect()
    refused = ask(h, neighbour, "LOGIN bob %s" % PASSWORD)
    assert re.match(LOGIN_429, refused), refused
    # bob from elsewhere is neither.
    assert ask(h, elsewhere, "LOGIN bob %s" % PASSWORD) == "OK LOGIN bob"

    clock.tick(59)
    refused = ask(h, neighbour, "LOGIN alice %s" % PASSWORD)
    assert re.match(r"ERR 429 1 ", refused), refused
    clock.tick(1)
    assert ask(h, neighbour, "LOGIN alice %s" % PASSWORD) == "OK LOGIN alice"
    assert ask(h, guesser, "LOGIN bob %s" % PASSWORD) == "OK LOGIN bob"


def test_failures_from_many_addresses_add_up_per_account(harness):
    make, clock = harness
    h = make(exempt="", login_failures=5, login_timeout=600)
    setup = h.connect()
    assert ask(h, setup, "REGISTER alice %s" % PASSWORD) == "OK REGISTER alice"
    for n in range(5):
        guesser = connect_from(h, "127.0.0.%d" % (2 + n))  # one guess per address
        assert ask(h, guesser, "LOGIN alice guess%04d" % n) == "ERR 401 wrong name or password"
    owner = connect_from(h, "127.0.0.20")
    assert re.match(LOGIN_429, ask(h, owner, "LOGIN alice %s" % PASSWORD))
    clock.tick(60)
    assert ask(h, owner, "LOGIN alice %s" % PASSWORD) == "OK LOGIN alice"


def test_registrations_are_limited_per_address(harness):
    make, clock = harness
    h = make(exempt="", registrations=5, login_timeout=600)
    here = h.connect()
    for n in range(5):
        assert ask(h, here, "REGISTER user%d %s" % (n, PASSWORD)) == "OK REGISTER user%d" % n
    refused = ask(h, here, "REGISTER user5 %s" % PASSWORD)
    assert re.match(r"ERR 429 (\d+) \S", refused) and 0 < int(refused.split()[2]) <= 60, refused
    # Another address may register; the refused name was not taken.
    elsewhere = connect_from(h, "127.0.0.2")
    assert ask(h, elsewhere, "REGISTER user5 %s" % PASSWORD) == "OK REGISTER user5"
    clock.tick(60)
    assert ask(h, here, "REGISTER user6 %s" % PASSWORD) == "OK REGISTER user6"


def test_loopback_is_exempt_from_the_login_limits_by_default(harness):
    make, clock = harness
    h = make()
    client = h.connect()
    assert ask(h, client, "REGISTER alice %s" % PASSWORD) == "OK REGISTER alice"
    for n in range(8):
        assert ask(h, client, "LOGIN alice guess%04d" % n) == "ERR 401 wrong name or password"
        assert ask(h, client, "REGISTER user%d %s" % (n, PASSWORD)) == "OK REGISTER user%d" % n
    assert ask(h, client, "LOGIN alice %s" % PASSWORD) == "OK LOGIN alice"


def test_login_limit_options_on_the_command_line(make_server):
    server = make_server("--exempt", "", "--login-failures", "2", "--registrations", "1")
    client = server.client()
    client.register("alice", PASSWORD)
    client.send("REGISTER bob %s" % PASSWORD)
    assert re.match(r"ERR 429 \d+ \S", client.next())
    for n in range(2):
        client.send("LOGIN alice guess%04d" % n)
        assert client.next() == "ERR 401 wrong name or password"
    client.send("LOGIN alice %s" % PASSWORD)
    assert re.match(r"ERR 429 \d+ \S", client.next())


# --- connections ---------------------------------------------------------

def test_connections_over_the_per_address_cap_are_refused(make_server):
    server = make_server("--exempt", "", "--max-per-address", "3")
    alice = newcomer(server, "alice")
    bob = newcomer(server, "bob")
    alice.expect(r"JOIN bob")
    idle = connect(server)

    over = connect(server)
    assert over.expect_closed() == ["ERR 503 too many connections"]
    # Another address is not counted against this one.
    other = connect(server, source="127.0.0.2")
    other.send("PING other address")
    assert other.next() == "PONG other address"
    # The three are untouched.
    alice.send("SAY still chatting")
    assert bob.expect(r"MSG ").string.endswith("alice still chatting")
    idle.send("PING idle")
    assert idle.next() == "PONG idle"
    # One leaves: there is room again.
    alice.close()
    bob.expect(r"LEAVE alice")
    again = connect(server)
    again.send("PING room again")
    assert again.next() == "PONG room again"
    server.wait_log(r".*refused connection from 127\.0\.0\.1: too many connections")


def test_connections_over_the_global_cap_are_refused_even_from_loopback(make_server):
    server = make_server("--max-connections", "3")
    alice = newcomer(server, "alice")
    bob = newcomer(server, "bob")
    alice.expect(r"JOIN bob")
    third = connect(server, source="127.0.0.2")
    third.send("PING third")
    assert third.next() == "PONG third"

    for source in ("127.0.0.1", "127.0.0.3"):
        over = connect(server, source=source)
        assert over.expect_closed() == ["ERR 503 too many connections"]
    alice.send("SAY still chatting")
    assert bob.expect(r"MSG ").string.endswith("alice still chatting")
    third.send("PING still here")
    assert third.next() == "PONG still here"


# --- out of file descriptors ---------------------------------------------

def listener_watched(server):
    try:
        server.selector.get_key(server.listener)
    except KeyError:
        return False
    return True


def test_running_out_of_descriptors_pauses_accepting_and_recovers(harness, caplog):
    caplog.set_level(logging.INFO, logger="sae-server")
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    until(h, alice, r"JOIN bob")
    waiting = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # its descriptor, before the limit
    h.buffers[waiting] = b""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    try:
        # Every descriptor below the lowest free one is taken: nothing more opens.
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        waiting.connect(("127.0.0.1", h.server.port))  # into the backlog
        waiting.sendall(b"PING let me in\n")
        waiting.setblocking(False)
        for _ in range(ITERATIONS):
            h.turn()
            if not listener_watched(h.server):
                break
        assert not listener_watched(h.server), "the listener is still watched after EMFILE"
        # Those connected are served meanwhile.
        marked(h, alice, bob, "still chatting")
        bob.sendall(b"PING bob\n")
        until(h, bob, r"PONG bob")
        assert h.lines(waiting) == []
        # The pause ends while descriptors are still short: paused again.
        clock.tick(ACCEPT_PAUSE)
        for _ in range(3):
            h.turn()
        assert not listener_watched(h.server)
        assert h.lines(waiting) == []
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    clock.tick(ACCEPT_PAUSE)
    assert until(h, waiting, r"PONG")[-1] == "PONG let me in"
    assert listener_watched(h.server)
    marked(h, bob, alice, "all well")
    # Two pauses, one line: a server short of descriptors for hours must not
    # fill its log.
    said = [record.getMessage() for record in caplog.records]
    assert len([line for line in said if line.startswith("cannot accept")]) == 1
    assert "accepting connections again" in said


# --- timers under load ---------------------------------------------------

def test_timeouts_still_fire_while_a_client_floods(harness):
    make, clock = harness
    h = make(exempt="", login_timeout=30, ping_interval=60, ping_timeout=30)
    alice, silent = flooder(h, clock, "alice"), flooder(h, clock, "carol")
    idle = h.connect()
    assert ask(h, idle, "PING here", r"PONG") == "PONG here"  # accepted now
    # alice pastes 100 lines (held, run 5 a second) and keeps pasting.
    alice.sendall("".join("SAY f%d\n" % n for n in range(100)).encode())
    clock.tick(31)
    assert h.expect_closed(idle) == ["BYE login timeout"]
    alice.sendall(b"SAY more\n")
    clock.tick(30)
    until(h, silent, r"PING ")
    alice.sendall(b"SAY more\n")
    clock.tick(30)
    assert until(h, silent, r"BYE ")[-1] == "BYE ping timeout"
    assert None not in h.lines(alice)


# --- hanging up while a worker has the line -------------------------------

@pytest.mark.parametrize("line, pool, then", [
    ("REGISTER carol password1", "hashing", "REGISTER dave password1"),
    ("LOGIN alice password1", "hashing", "LOGIN alice password1"),
    ("HISTORY 10", "storage", "LOGIN alice password1"),
])
def test_a_client_gone_mid_command_does_not_touch_the_one_that_took_its_descriptor(
        harness, line, pool, then):
    """Found by the fuzz test: a client hangs up while its REGISTER, LOGIN or
    HISTORY is with a worker; the kernel gives its descriptor number to the
    next connection; the worker's answer must not reach the new one (nor
    crash the server on the old, closed socket)."""
    make, clock = harness
    h = make(hash_threads=1, storage_on_loop=False)  # a storage thread to hold back
    if line.startswith("HISTORY"):
        gone = h.logged_in("alice")
    else:
        gone = h.connect()
        assert ask(h, gone, "REGISTER alice password1") == "OK REGISTER alice"
    assert ask(h, gone, "PING ready", r"PONG") == "PONG ready"
    # Hold the worker back until the client is gone and replaced.
    gate = threading.Event()
    h.server.workers.pools[pool].submit(gate.wait, TIMEOUT)
    try:
        gone.sendall(line.encode() + b"\n")
        for _ in range(ITERATIONS):
            h.turn()
            if any(session.inflight for session in h.server.sessions.values()):
                break
        old_fd = next(session.fd for session in h.server.sessions.values() if session.inflight)
        gone.close()
        del h.buffers[gone]
        for _ in range(ITERATIONS):
            h.turn()
            if old_fd not in h.server.sessions:
                break
        assert old_fd not in h.server.sessions
        newcomer = h.connect()
        assert ask(h, newcomer, "PING first", r"PONG") == "PONG first"
        assert old_fd in h.server.sessions, "the descriptor was not reused: the test proves nothing"
    finally:
        gate.set()
    # The newcomer's line goes through the same workers after the gone
    # client's, so its answer comes after the gone client's was dealt with.
    assert ask(h, newcomer, then) == "OK " + " ".join(then.split()[:2])
    newcomer.sendall(b"PING second\n")
    assert until(h, newcomer, r"PONG")[-1] == "PONG second"


def test_a_flood_read_at_once_is_answered_before_it_is_cut_off(harness):
    """The ERR 413 of a flood's first 4 KiB comes before the BYE even when
    the whole flood is read in one recv(), as it is here."""
    make, clock = harness
    h = make()
    flooder = h.logged_in("alice")
    # 64 KiB may not fit in one read (TCP's first window): a smaller limit
    # on this session does, so that the framer meets both in one chunk.
    [session] = [s for s in h.server.sessions.values() if s.name == "alice"]
    session.framer = sae_protocol.LineFramer(max_unterminated=8192)
    flooder.sendall(b"SAY " + b"f" * 9000)
    lines = h.expect_closed(flooder)
    assert lines[0].startswith("ERR 413 line too long") and lines[-1] == "BYE line too long", lines
