"""Shared fixtures: a real sae-server on a free loopback port with its own
empty database (SQLite by default, MariaDB where a module asks for the
``mysql`` backend), and a line client that waits for what it expects.

Nothing here sleeps to synchronise: a test waits for the line it expects,
with a timeout, and fails with what it saw instead.
"""

import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time

import freezegun
import pytest
from freezegun import freeze_time
from mysql_fixtures import mysql_admin, mysql_proxy, mysql_url  # noqa: F401
from redis_fixtures import redis_server  # noqa: F401
from sae_db import open_store
from sae_server import Limits, Server

TIMEOUT = 10.0
# scrypt at its real cost makes each REGISTER/LOGIN take tens of
# milliseconds; the hashes record their own parameters, so a cheaper cost in
# tests changes nothing else. Failed logins are answered at once, except in
# the tests of that delay.
TEST_ENV = {"SAE_SCRYPT_N": "1024", "SAE_LOGIN_FAILURE_DELAY": "0", "PYTHONUNBUFFERED": "1",
            # The IRC listener only where a test asks for one (--irc-port 0):
            # 6667 is one port for every server a test run starts.
            "SAE_IRC_PORT": "off"}
# pytest times tests with the clock functions _pytest.timing imported; left
# to freezegun, --durations reports the frozen date as a setup time. Only that
# module: freezegun also treats any caller within a few frames of an ignored
# module as wanting real time, and a test function is called from
# _pytest.python, so ignoring all of "_pytest" would unfreeze the tests.
freezegun.configure(extend_ignore_list=["_pytest.timing"])


class LineClient:
    """A protocol v1 client over a real socket, for tests."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = b""
        self.seen = []

    def send(self, line):
        data = line if isinstance(line, bytes) else line.encode("utf-8")
        if not data.endswith(b"\n"):
            data += b"\n"
        self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_line(self, timeout=TIMEOUT):
        """The next line (str, without its newline), or None at end of stream."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no complete line within %.1fs; lines so far: %r"
                                     % (timeout, self.seen[-20:]))
            # Over TLS, bytes already decrypted are not the kernel's to report.
            pending = getattr(self.sock, "pending", None)
            if not (pending and pending()) and not select.select([self.sock], [], [], left)[0]:
                continue
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                if self.buffer:
                    line, self.buffer = self.buffer, b""
                    return line.decode("utf-8", "replace")
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        text = line.decode("utf-8", "replace")
        self.seen.append(text)
        return text

    def expect(self, pattern, timeout=TIMEOUT):
        """Read lines until one matches ``pattern`` (a regex, anchored at the
        start); returns the match. Lines before it are skipped."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError("connection closed while waiting for %r; saw %r"
                                     % (pattern, self.seen[-20:]))
            match = regex.match(line)
            if match:
                return match

    def next(self, timeout=TIMEOUT):
        """The very next line; fails at end of stream."""
        line = self.read_line(timeout)
        if line is None:
            raise AssertionError("connection closed; saw %r" % (self.seen[-20:],))
        return line

    def lines_until(self, pattern, timeout=TIMEOUT):
        """Every line up to and including the first that matches ``pattern``."""
        regex = re.compile(pattern)
        lines = []
        while True:
            lines.append(self.next(timeout))
            if regex.match(lines[-1]):
                return lines

    def expect_closed(self, timeout=TIMEOUT):
        """Read until the server closes the connection, then hang up as a
        client does (the server waits for that, up to a linger time, before
        it lets go of the socket); returns the lines read."""
        lines = []
        while True:
            line = self.read_line(timeout)
            if line is None:
                self.sock.close()
                return lines
            lines.append(line)

    def register(self, name, password="password1"):
        self.send("REGISTER %s %s" % (name, password))
        self.expect(r"OK REGISTER ")

    def login(self, name, password="password1"):
        """Log in and read through the login burst (history, USERS)."""
        self.send("LOGIN %s %s" % (name, password))
        self.expect(r"OK LOGIN ")
        self.expect(r"OK HISTORY \d+")
        return self.expect(r"USERS ")

    def close(self):
        self.sock.close()


def account_client(server, name, register=True, password="password1"):
    """A LineClient of ``server`` (a ServerProcess) logged in as ``name``,
    registering the account first unless told not to."""
    client = server.client()
    if register:
        client.register(name, password)
    client.login(name, password)
    return client


def chat_until_cut(server, alice, bob, victim, most, padding="x" * 3000):
    """alice says numbered messages (``"<n> <padding>"``), ten at a time,
    until bob has seen ``LEAVE <victim> sendq exceeded`` and twenty more of
    them; at most ``most`` messages. Returns (messages said, how many were
    said when the cut was seen, every line bob read)."""
    said, bob_lines, cut_after = 0, [], None
    while cut_after is None or said < cut_after + 20:
        assert said < most, "%s was never cut; server log: %s" % (victim, "".join(server.log[-20:]))
        for _ in range(10):
            alice.send("SAY %d %s" % (said, padding))
            said += 1
        alice.expect(r"MSG \S+ \S+ alice %d " % (said - 1))
        while True:
            line = bob.next()
            bob_lines.append(line)
            if line == "LEAVE %s sendq exceeded" % victim:
                cut_after = said
            if line.startswith("MSG ") and " alice %d " % (said - 1) in line:
                break
    return said, cut_after, bob_lines


class ServerProcess:
    """sae-server in a child process, as a user starts it. Its log (stderr)
    is read as it comes by a thread, so that a chatty server never blocks on
    a full pipe; ``log`` holds its lines. ``program`` is what follows the
    interpreter on the command line: a test that must break the server from
    inside passes ``("-c", script)``, a script that patches sae_server and
    calls its main()."""

    def __init__(self, tmp_path, *args, env=None, db_url=None, program=("-m", "sae_server")):
        self.tmp_path = tmp_path
        self.program = list(program)
        self.db_url = db_url or "sqlite:///%s" % (tmp_path / "sae.db")
        self.args = list(args)
        self.env = dict(os.environ, **TEST_ENV)
        self.env.update(env or {})
        self.proc = None
        self.port = None
        self.log = []
        self._log_read = 0  # lines of log that wait_log has looked at
        self._log_changed = threading.Condition()
        self._log_reader = None
        self.clients = []

    def start(self, port=0, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        cmd = [sys.executable] + self.program + [
            "--host", "127.0.0.1", "--port", str(port), "--db", self.db_url] + self.args
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                     env=self.env, cwd=str(self.tmp_path))
        self._log_reader = threading.Thread(target=self._read_log, args=(self.proc.stderr,), daemon=True)
        self._log_reader.start()
        try:
            match = self.wait_log(r".*listening on 127\.0\.0\.1:(\d+)")
        except AssertionError:
            self.stop()  # a server that never got ready must not outlive the test
            raise
        self.port = int(match.group(1))
        return self

    def _read_log(self, stderr):
        for line in iter(stderr.readline, b""):
            with self._log_changed:
                self.log.append(line.decode("utf-8", "replace"))
                self._log_changed.notify_all()
        with self._log_changed:
            self.log.append("")  # end of the log: the server has exited
            self._log_changed.notify_all()

    def wait_log(self, pattern, timeout=TIMEOUT):
        """Wait for a log line matching ``pattern``, after those earlier
        calls looked at; fails if the server exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                while self._log_read < len(self.log):
                    line = self.log[self._log_read]
                    self._log_read += 1
                    if line == "":
                        raise AssertionError("server exited (%s); log: %s"
                                             % (self.proc.wait(), "".join(self.log[-30:])))
                    match = regex.match(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no log line %r within %ss; log: %s"
                                         % (pattern, timeout, "".join(self.log[-30:])))
                self._log_changed.wait(left)

    def client(self):
        client = LineClient(self.port)
        self.clients.append(client)
        return client

    def stop(self):
        for client in self.clients:
            client.close()
        self.clients = []
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_reader is not None:
            self._log_reader.join(TIMEOUT)
            self._log_reader = None
            self.proc.stderr.close()
            self._log_read = len(self.log)  # a restart waits on the new log only

    def restart(self):
        port = self.port
        self.stop()
        return self.start(port)


@pytest.fixture
def backend():
    """The storage the server fixtures use: SQLite, unless a test module
    runs on both with ``pytestmark = pytest.mark.parametrize("backend",
    ["sqlite", "mysql"])``."""
    return "sqlite"


@pytest.fixture
def db_url(backend, tmp_path, request):
    """The --db URL of an empty database for ``backend``: an SQLite file in
    the test's temporary folder, or a fresh database on the test MariaDB
    (skipped where there is none, a failure under CI=true)."""
    if backend == "sqlite":
        return "sqlite:///%s" % (tmp_path / "sae.db")
    if backend == "mysql":
        return request.getfixturevalue("mysql_url")
    raise ValueError("unknown backend %r" % backend)


@pytest.fixture
def server(tmp_path, db_url):
    """A running sae-server on an empty database, in a temporary folder."""
    running = ServerProcess(tmp_path, db_url=db_url).start()
    yield running
    running.stop()


@pytest.fixture
def make_server(tmp_path, db_url):
    """Start servers with extra arguments: ``make_server("--history", "5")``."""
    started = []

    def make(*args, **kwargs):
        kwargs.setdefault("db_url", db_url)
        running = ServerProcess(tmp_path, *args, **kwargs).start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


_names = iter(range(1, 1_000_000))


@pytest.fixture
def unique_name():
    """A fresh account name for each call."""
    return lambda prefix="user": "%s%d" % (prefix, next(_names))


# --- a server in this process, for time-driven tests ---------------------

# A turn of the harness's loop waits for a socket at most TURN_WAIT of real
# time: the frozen clock never reaches the next timer, so without the cap
# each idle turn would wait the loop's whole second. A passing test needs a
# few turns (one per line read, per worker's answer); a broken one gives up
# after ITERATIONS, about five seconds of turns where nothing happens.
TURN_WAIT = 0.01
ITERATIONS = 500


class Harness:
    """A Server in this process whose loop the test turns by hand
    (``turn``), so that a frozen clock is the only clock it sees; its
    clients are real sockets on loopback."""

    def __init__(self, tmp_path, db_url=None, storage_on_loop=None, tls=None, irc=False, **limits):
        self.folder = tmp_path
        limits.setdefault("scrypt_n", 1024)
        limits.setdefault("login_failure_delay", 0.0)
        # With a TlsCertificate, a v1 TLS listener too (``tls_port``); with
        # ``irc``, the IRC listener (``irc_port``) and, with the certificate,
        # IRC over TLS (``irc_tls_port``): every listener on a free port.
        self.server = Server(open_store(db_url or "sqlite:///%s" % (tmp_path / "sae.db")), "127.0.0.1", 0,
                             Limits(**limits), storage_on_loop=storage_on_loop,
                             tls=tls, tls_port=0 if tls else None)
        self.server.listen()
        if irc:
            self.server.listen_irc(0, 0 if tls else None)
        ports = {(listener.kind, listener.tls is not None): listener.port for listener in self.server.listeners}
        self.tls_port = ports.get(("v1", True))
        self.irc_port = ports.get(("irc", False))
        self.irc_tls_port = ports.get(("irc", True))
        self.buffers = {}
        self.stopped = False

    def turn(self):
        """One turn of the server's loop."""
        self.server.iterate(max_wait=TURN_WAIT)

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.server.port))
        sock.setblocking(False)
        self.buffers[sock] = b""
        return sock

    def connect_tls(self, port, context):
        """A TLS connection to ``port``, its handshake done by turns of the
        loop (the server's side of it runs there); non-blocking like connect's."""
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost",
                                   do_handshake_on_connect=False)
        sock.setblocking(False)
        self.buffers[sock] = b""
        self.finish_handshake(sock)
        return sock

    def finish_handshake(self, sock):
        for _ in range(ITERATIONS):
            try:
                sock.do_handshake()
                return
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                self.turn()
        raise AssertionError("the TLS handshake never ended")

    def lines(self, sock):
        """Lines that have arrived so far (None marks the end of the stream).
        Over TLS, bytes already decrypted are not the kernel's to report, and
        a record that has not all arrived is no line yet."""
        found = []
        pending = getattr(sock, "pending", None)
        while (pending and pending()) or select.select([sock], [], [], 0)[0]:
            try:
                chunk = sock.recv(65536)
            except ssl.SSLWantReadError:
                break
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                found.append(None)
                break
            self.buffers[sock] += chunk
        *complete, self.buffers[sock] = self.buffers[sock].split(b"\n")
        return [line.decode() for line in complete] + found

    def expect(self, sock, pattern):
        """Turn the loop until ``sock`` receives a line matching ``pattern``."""
        seen = []
        for _ in range(ITERATIONS):
            self.turn()
            for line in self.lines(sock):
                seen.append(line)
                if line is not None and re.match(pattern, line):
                    return line
                if line is None:
                    raise AssertionError("closed while waiting for %r; saw %r" % (pattern, seen))
        raise AssertionError("no %r; saw %r" % (pattern, seen))

    def expect_closed(self, sock):
        seen = []
        for _ in range(ITERATIONS):
            self.turn()
            for line in self.lines(sock):
                if line is None:
                    return seen
                seen.append(line)
        raise AssertionError("still open; saw %r" % seen)

    def operator(self, line):
        """One command on the server's admin socket (opened on first use,
        in the harness's folder); returns its answer."""
        return self.operator_answer(self.operator_link(line))

    def operator_link(self, line):
        """An operator's command on the admin socket, sent, not waited for."""
        path = str(self.folder / "admin.sock")
        if self.server.admin_listener is None:
            self.server.listen_admin(path)
        link = socket.socket(socket.AF_UNIX)
        link.connect(path)
        link.sendall(line.encode() + b"\n")
        link.setblocking(False)
        return link

    def operator_answer(self, link):
        """Turn the loop until the operator's link has its answer."""
        answer = b""
        for _ in range(ITERATIONS):
            self.turn()
            try:
                answer += link.recv(4096)
            except BlockingIOError:
                pass
            if answer.endswith(b"\n"):
                link.close()
                return answer.decode().strip()
        raise AssertionError("no answer; got %r" % answer)

    def logged_in(self, name):
        sock = self.connect()
        sock.sendall(("REGISTER %s password1\nLOGIN %s password1\n" % (name, name)).encode())
        self.expect(sock, r"USERS ")
        return sock

    def shut_down(self, clock):
        """Stop the server as ``kill`` does; what its shutdown returns. The
        shutdown's deadlines (answers still owed, the linger) must pass on a
        frozen clock too, or a session that waits forever (a bug) hangs the
        test instead of failing it: each turn moves the clock a second."""
        turn = self.server.iterate

        def ticking_turn(max_wait=TURN_WAIT):
            clock.tick(1)
            turn(max_wait=TURN_WAIT)
        self.server.iterate = ticking_turn
        self.server.stop()
        self.stopped = True
        return self.server.run()  # stopped already: it only shuts down

    def close(self, clock):
        # The server lingers for its clients' end of stream, so the clients
        # hang up first.
        for sock in self.buffers:
            sock.close()
        if not self.stopped:
            self.shut_down(clock)


@pytest.fixture
def harness(tmp_path):
    """``make, clock = harness``: ``make(**limits)`` builds a Harness under
    a clock frozen by freezegun, which ``clock.tick(seconds)`` moves;
    ``make(db_url=...)`` puts it on another database than a fresh SQLite;
    ``make(storage_on_loop=False)`` gives SQLite a storage thread, as
    MariaDB has, for a test that holds that thread back; ``make(tls=...,
    irc=True)`` adds the TLS and IRC listeners (see Harness)."""
    with freeze_time("2026-11-28 12:00:00") as clock:
        made = []

        def make(db_url=None, storage_on_loop=None, tls=None, irc=False, **limits):
            made.append(Harness(tmp_path, db_url, storage_on_loop, tls, irc, **limits))
            return made[-1]

        yield make, clock
        for each in made:
            each.close(clock)


def turn_until(h, predicate, what):
    """Turn the Harness's loop until predicate() holds (at most 500 turns)."""
    for _ in range(500):
        h.turn()
        if predicate():
            return
    raise AssertionError("never " + what)


def record_batches(h, monkeypatch):
    """The bodies of each batch the Harness's server stores from now on, in a
    list that fills as it does."""
    batches = []
    store_batch = h.server.store.append_messages

    def recorded(batch):
        batches.append([message.body for message in batch])
        return store_batch(batch)

    monkeypatch.setattr(h.server.store, "append_messages", recorded)
    return batches


# --- TLS in front of the server, until sae-server speaks it --------------

class TlsTerminator:
    """Takes TLS on a free loopback port and forwards the plain bytes to a
    server on ``target_port``: a stand-in for the server's own TLS listener
    (issue 15), so that the client's TLS can be tested before it exists;
    the server's --tls-port replaces it later. A thread accepts, and one
    thread per connection does its handshake (blocking, with a timeout) and
    then carries bytes both ways.

    ``use_certificate`` changes the certificate shown to new connections
    (a renewal, or an attacker's); ``cut`` closes every connection (a
    network drop); with ``stall`` it accepts connections and never answers
    a handshake."""

    def __init__(self, target_port, chain_file, stall=False):
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(chain_file))
        self.stall = stall
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets = []           # every socket open, for cut() and close()
        self.handshakes = 0         # connections that finished their handshake
        self.stopping = False
        threading.Thread(target=self._accept, name="TlsTerminator", daemon=True).start()

    def use_certificate(self, chain_file):
        self.context.load_cert_chain(str(chain_file))

    def cut(self):
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.stopping = True
        self.listener.close()
        self.cut()

    def _keep(self, *sockets):
        with self.lock:
            if self.stopping:
                for sock in sockets:
                    sock.close()
                return False
            self.sockets.extend(sockets)
            return True

    def _accept(self):
        while not self.stopping:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return          # closed
            if self._keep(raw) and not self.stall:
                threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(TIMEOUT)
        try:
            secure = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ValueError):
            raw.close()         # a client that gave up, or refused our certificate
            return
        with self.lock:
            self.handshakes += 1
        try:
            plain = socket.create_connection(("127.0.0.1", self.target_port), timeout=TIMEOUT)
        except OSError:
            secure.close()
            return
        if not self._keep(secure, plain):
            return
        try:
            while True:
                readable, _, _ = select.select([secure, plain], [], [], TIMEOUT)
                if secure in readable:
                    data = secure.recv(65536)
                    while data and secure.pending():
                        data += secure.recv(secure.pending())
                    if not data:
                        break
                    plain.sendall(data)
                if plain in readable:
                    data = plain.recv(65536)
                    if not data:
                        break
                    secure.sendall(data)
        except (OSError, ValueError):
            pass                # cut, closed, or the client went away
        for sock in (secure, plain):
            sock.close()
