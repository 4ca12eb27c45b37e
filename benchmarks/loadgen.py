"""Load generator for sae-chat protocol v1 and, for comparison, IRC.

Many client connections, spread over several worker processes, each worker
one epoll loop over non-blocking sockets (so the generator scales with cores
and never waits on one slow socket). A run goes in three phases:

  setup    every worker connects and logs in its clients (sae: LOGIN, the
           accounts must exist; irc: NICK/USER/JOIN #bench), at most
           --setup-concurrency logins in flight per worker, and says ready;
  load     the parent picks a common start time (CLOCK_MONOTONIC is the same
           clock in every process) and the senders send, either as fast as
           the server takes it ("blast", fan-out) or at a fixed total rate
           ("rate", latency), or each keeping a window of single messages
           outstanding ("single", closed loop: the next line goes out when
           an earlier one has come back); every received line is counted,
           and the send time carried in each message (T<monotonic_ns>) gives
           its send-to-delivery latency at each recipient (rate mode) or
           its send-to-echo latency at the sender (single mode);
  drain    senders stop; receivers read until the server is quiet (bounded),
           so that "sent x recipients == delivered" can be checked.

Optional: storm clients that are not logged in at setup but connect and log
in all at once at a given time (the login storm), and idle runs that only
hold the connections while the caller measures the server (memory).

Every phase has a deadline: a run always stops by itself. Loopback only.

Used as a library by bench_load.py (which starts the servers and prints the
figures), or by hand against a running server:

    python benchmarks/loadgen.py --target sae --port 12345 --clients 200 \
        --senders 10 --seconds 10 --mode blast
"""

import argparse
import array
import errno
import multiprocessing
import os
import re
import resource
import selectors
import socket
import sys
import time

PASSWORD = "bench-password"
CHANNEL = "#bench"
# What each chat line carries after its send time: about the length of a
# typical chat line, the same for both protocols.
PADDING = "the quick brown fox jumps over the lazy dog, twice"
# A blasting sender sends blocks of BLAST_LINES chat lines, each followed by
# a PING, and keeps at most BLAST_WINDOW blocks unanswered by PONG: "as fast
# as the server takes it" without megabytes queued in kernel buffers, which
# would take minutes to drain and blur the measured window.
BLAST_LINES = 64
BLAST_WINDOW = 16
RECV_BYTES = 256 * 1024
SEND_TIME = re.compile(rb"[ :]T(\d+) ")
# Single mode: messages a sender keeps outstanding (sent, echo not yet seen).
SINGLE_WINDOW = 16


def raise_fd_limit():
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def account_name(index):
    return "u%05d" % index


# --- the two protocols ----------------------------------------------------

class Sae:
    name = "sae"

    @staticmethod
    def login(client):
        return ("LOGIN %s %s\n" % (client.name, PASSWORD)).encode()

    @staticmethod
    def login_done(buf):
        """True once logged in, False if refused, None while waiting."""
        if b"USERS " in buf and b"OK LOGIN" in buf:
            return True
        if b"ERR " in buf or b"BYE " in buf:
            return False
        return None

    @staticmethod
    def line(text, client=None):
        return ("SAY %s\n" % text).encode()

    ping = b"PING b\n"

    echoes = True  # the sender gets its own MSG back
    # A room message as delivered: (sender, send time). In single mode a
    # sender reads its own back on its own connection.
    said = re.compile(rb"MSG \d+ \S+ (u\d+) T(\d+) ")


class Irc:
    name = "irc"

    @staticmethod
    def login(client):
        return ("NICK {0}\r\nUSER {0} 0 * :{0}\r\nJOIN {1}\r\n".format(client.name, CHANNEL)).encode()

    @staticmethod
    def login_done(buf):
        if b" 366 " in buf:  # end of NAMES: joined
            return True
        if b"ERROR" in buf or b" 433 " in buf:
            return False
        return None

    @staticmethod
    def line(text, client=None):
        return ("PRIVMSG %s :%s\r\n" % (CHANNEL, text)).encode()

    ping = b"PING :b\r\n"

    # IRC does not echo a PRIVMSG to its sender: in single mode one
    # receiver per worker (a room member like the others) watches for the
    # senders' messages instead, see Worker.
    echoes = False
    said = re.compile(rb":(u\d+)!\S* PRIVMSG \S+ :T(\d+) ")


# Rooms: each client in ROOMS_EACH of ROOMS_TOTAL rooms (#r00 ...), a sender
# saying everything in its first room. For the rooms benchmark (blast and
# rate modes: in single mode an IRC watcher would see only its own rooms).
ROOMS_TOTAL = 50
ROOMS_EACH = 3


def rooms_of(client):
    # Offsets 0, 17, 34 of 50: three different rooms, spread evenly.
    return ["#r%02d" % ((client.index + k * 17) % ROOMS_TOTAL) for k in range(ROOMS_EACH)]


class SaeRooms(Sae):
    name = "sae-rooms"

    @staticmethod
    def login(client):
        return ("CAP rooms\nLOGIN %s %s\n" % (client.name, PASSWORD)
                + "".join("JOIN %s\n" % room for room in rooms_of(client))).encode()

    @staticmethod
    def login_done(buf):
        if buf.count(b"OK JOIN ") >= ROOMS_EACH:
            return True
        if b"ERR " in buf or b"BYE " in buf:
            return False
        return None

    @staticmethod
    def line(text, client=None):
        return ("RSAY %s %s\n" % (rooms_of(client)[0], text)).encode()

    said = re.compile(rb"RMSG \d+ \S+ \S+ (u\d+) T(\d+) ")


class IrcRooms(Irc):
    name = "irc-rooms"

    @staticmethod
    def login(client):
        return ("NICK {0}\r\nUSER {0} 0 * :{0}\r\nJOIN {1}\r\n".format(
            client.name, ",".join(rooms_of(client)))).encode()

    @staticmethod
    def login_done(buf):
        if buf.count(b" 366 ") >= ROOMS_EACH:
            return True
        if b"ERROR" in buf or b" 433 " in buf:
            return False
        return None

    @staticmethod
    def line(text, client=None):
        return ("PRIVMSG %s :%s\r\n" % (rooms_of(client)[0], text)).encode()


class IrcAccounts(Irc):
    """IRC to sae-server's IRC listener: the seeded accounts log in with
    PASS (sae-server wants an account; miniircd takes any nick)."""
    name = "irc-accounts"

    @staticmethod
    def login(client):
        return ("PASS {0}:{2}\r\nNICK {0}\r\nUSER {0} 0 * :{0}\r\nJOIN {1}\r\n".format(
            client.name, CHANNEL, PASSWORD)).encode()


PROTOCOLS = {"sae": Sae, "irc": Irc, "sae-rooms": SaeRooms, "irc-rooms": IrcRooms, "irc-accounts": IrcAccounts}


# --- one worker process -------------------------------------------------------

class Client:
    __slots__ = ("index", "name", "sender", "storm", "port", "sock", "state", "buf", "wbuf",
                 "started_at", "online_at", "next_send", "events", "outstanding", "watcher")

    def __init__(self, index, sender, storm, port=None):
        self.index = index
        self.name = account_name(index)
        self.sender = sender
        self.storm = storm
        self.port = port  # the server (of several, in a cluster) it connects to
        self.sock = None
        self.state = "new"  # new, connecting, login, online, failed
        self.buf = b""
        self.wbuf = b""
        self.started_at = self.online_at = None
        self.next_send = None
        self.events = 0
        self.outstanding = 0  # blast blocks not yet answered by PONG; single mode: messages
        self.watcher = False  # single mode: parses room messages to see the senders' come back


class Worker:
    def __init__(self, spec, clients, pipe):
        self.spec = spec
        self.proto = PROTOCOLS[spec["target"]]
        self.clients = clients
        self.pipe = pipe
        self.selector = selectors.EpollSelector()
        self.selector.register(pipe.fileno(), selectors.EVENT_READ, None)
        self.lines = 0  # every line received
        self.window_lines = 0  # lines received inside [t_start, t_end)
        self.sent = 0  # chat lines sent
        self.window = None
        self.latency_parse = spec["mode"] in ("rate",)
        self.single = spec["mode"] == "single"
        self.single_window = spec.get("window") or SINGLE_WINDOW
        self.single_sending = False  # single mode, between t_send and t_end
        self.echoes = 0  # single mode: senders' messages seen back
        self.window_echoes = 0  # ... inside [t_start, t_end)
        self.senders_by_name = {c.name.encode(): c for c in clients if c.sender}
        self.sample = max(1, spec.get("sample") or 1)  # clients measured: index % sample == 0
        self.send_ns = array.array("q")
        self.latency_ns = array.array("q")
        self.recv_ns = array.array("q")
        self.failures = []
        self.pending_logins = 0
        self.blasting = False

    # -- sockets --

    def _set_events(self, client, events):
        if events == client.events:
            return
        if client.events == 0:
            self.selector.register(client.sock, events, client)
        elif events == 0:
            self.selector.unregister(client.sock)
        else:
            self.selector.modify(client.sock, events, client)
        client.events = events

    def start_login(self, client, now):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.sock = sock
        client.started_at = now
        client.state = "connecting"
        self.pending_logins += 1
        err = sock.connect_ex((self.spec["host"], client.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(client, "connect: %s" % os.strerror(err))
            return
        self._set_events(client, selectors.EVENT_WRITE)

    def _start_tls(self, client):
        """--tls: the handshake, blocking (setup only), then the socket as the
        server's TlsSocket has it: want-read/want-write as EAGAIN, so that the
        rest of the generator is the same for both."""
        import ssl

        import sae_server
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the server's own throwaway certificate
        context.sslsocket_class = sae_server.TlsSocket
        self._set_events(client, 0)
        client.sock.setblocking(True)
        client.sock.settimeout(30)
        client.sock = context.wrap_socket(client.sock)
        client.sock.setblocking(False)
        self._set_events(client, selectors.EVENT_READ)

    def fail(self, client, why):
        if client.state in ("connecting", "login"):
            self.pending_logins -= 1
        client.state = "failed"
        self.failures.append("%s: %s" % (client.name, why))
        if client.sock is not None:
            self._set_events(client, 0)
            client.sock.close()

    def on_event(self, client, mask, now):
        if client.state == "connecting":
            err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(client, "connect: %s" % os.strerror(err))
                return
            client.state = "login"
            if self.spec.get("tls"):
                self._start_tls(client)
            client.sock.send(self.proto.login(client))
            self._set_events(client, selectors.EVENT_READ)
            return
        if mask & selectors.EVENT_READ:
            self.on_readable(client, now)
        if mask & selectors.EVENT_WRITE and client.state == "online":
            self.on_writable(client)

    def on_readable(self, client, now):
        try:
            data = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            data = b""
            why = str(error)
        else:
            why = "closed by the server"
        if not data:
            if client.state == "online":
                tail = client.buf[-200:].decode("utf-8", "replace").strip()
                why += " (last: %s)" % tail.splitlines()[-1:] if tail else ""
            self.fail(client, why)
            return
        if client.state == "login":
            client.buf += data
            done = self.proto.login_done(client.buf)
            if done is None:
                return
            if not done:
                self.fail(client, "login refused: %r" % client.buf[-200:])
                return
            client.state = "online"
            client.online_at = now
            self.pending_logins -= 1
            client.buf = client.buf[client.buf.rfind(b"\n") + 1:]
            return
        count = data.count(b"\n")
        if client.sender:
            pongs = data.count(b"PONG ")
            if pongs:
                count -= pongs
                client.outstanding -= pongs
                if self.blasting and not client.events & selectors.EVENT_WRITE:
                    self._set_events(client, selectors.EVENT_READ | selectors.EVENT_WRITE)
        self.lines += count
        window = self.window
        if window is not None and window[0] <= now < window[1]:
            self.window_lines += count
        if client.watcher:
            self.on_said(client, data, now)
        elif self.latency_parse and not client.index % self.sample:
            buf = client.buf + data
            cut = buf.rfind(b"\n") + 1
            client.buf = buf[cut:]
            now_ns = int(now * 1e9)
            stamps = SEND_TIME.findall(buf, 0, cut)
            if stamps:
                self.send_ns.extend(int(s) for s in stamps)
                self.latency_ns.extend(now_ns - int(s) for s in stamps)
        else:
            # Keep the last bytes only to explain a disconnection.
            client.buf = data[-200:]

    def on_said(self, watcher, data, now):
        """Single mode: senders' messages seen back (sae: a sender its own,
        irc: the worker's watcher everyone's in this worker); each one that
        comes back lets its sender send the next."""
        buf = watcher.buf + data
        cut = buf.rfind(b"\n") + 1
        watcher.buf = buf[cut:]
        found = self.proto.said.findall(buf, 0, cut)
        if not found:
            return
        now_ns = int(now * 1e9)
        window = self.window
        in_window = window is not None and window[0] <= now < window[1]
        by_name = self.senders_by_name
        for name, stamp in found:
            sender = by_name.get(name)
            if sender is None or (self.proto.echoes and sender is not watcher):
                continue
            sender.outstanding -= 1
            self.echoes += 1
            if in_window:
                self.window_echoes += 1
            sent_ns = int(stamp)
            self.send_ns.append(sent_ns)
            self.latency_ns.append(now_ns - sent_ns)
            if self.single_sending and sender.state == "online":
                self.send_single(sender)

    def send_single(self, client):
        """One chat line in one send() of its own (the single-message regime)."""
        line = self.proto.line("T%d %s" % (time.monotonic_ns(), PADDING), client)
        client.outstanding += 1
        self.sent += 1
        if client.wbuf:  # the kernel was full last time: keep the order
            client.wbuf += line
            return
        try:
            sent = client.sock.send(line)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self.fail(client, "send: %s" % error)
            return
        if sent < len(line):
            client.wbuf = line[sent:]
            self._set_events(client, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def on_writable(self, client):
        if self.single:
            if client.wbuf:
                self.send_rest(client)
            if not client.wbuf:
                self._set_events(client, selectors.EVENT_READ)
            return
        if not client.wbuf:
            if not self.blasting or client.outstanding >= BLAST_WINDOW:
                self._set_events(client, selectors.EVENT_READ)
                return
            client.wbuf = self.blast_blocks[client]
            client.outstanding += 1
            self.sent += BLAST_LINES
        self.send_rest(client)

    def send_rest(self, client):
        try:
            sent = client.sock.send(client.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.fail(client, str(error))
            return
        client.wbuf = client.wbuf[sent:]

    # -- the run --

    def report(self, what, **values):
        self.pipe.send((what, values))

    def poll(self, timeout):
        """One loop turn; returns the parent's message if one came."""
        message = None
        for key, mask in self.selector.select(timeout):
            now = time.monotonic()
            if key.data is None:
                message = self.pipe.recv()
            else:
                self.on_event(key.data, mask, now)
        return message

    def run(self):
        spec = self.spec
        deadline = time.monotonic() + spec["setup_timeout"]
        waiting = [c for c in self.clients if not c.storm]
        waiting.reverse()
        while (waiting or self.pending_logins) and time.monotonic() < deadline:
            now = time.monotonic()
            while waiting and self.pending_logins < spec["setup_concurrency"]:
                self.start_login(waiting.pop(), now)
            self.poll(0.05)
        setup = [c for c in self.clients if not c.storm]
        online = [c for c in setup if c.state == "online"]
        self.report("ready", online=len(online), wanted=len(setup),
                    failures=self.failures[:5], failed=len(self.failures))
        # Keep reading (JOIN lines from other workers' logins) until told to go.
        go = None
        while go is None:
            go = self.poll(1.0)
        if go.get("stop"):
            return self.finish()
        self.go(go)

    def go(self, go):
        spec = self.spec
        mode = spec["mode"]
        self.window = (go["t_start"], go["t_end"])
        t_send, t_end, t_drain = go["t_send"], go["t_end"], go["t_drain"]
        senders = [c for c in self.clients if c.sender and c.state == "online"]
        if mode == "blast":
            self.blast_blocks = {c: self.proto.line("T0 " + PADDING, c) * BLAST_LINES + self.proto.ping
                                 for c in senders}
        elif mode == "single":
            for c in senders:
                c.watcher = self.proto.echoes
            if not self.proto.echoes and senders:
                # IRC: the first receiver of this worker watches for its
                # senders' messages; it is one of the room's members, so the
                # room is as big as with sae, and what it times is one
                # delivery of the fan-out, as a sae sender's own echo is.
                watchers = [c for c in self.clients if not c.sender and c.state == "online"]
                if not watchers:
                    raise RuntimeError("single mode on irc needs a receiver in every worker with senders")
                watchers[0].watcher = True
            for c in self.clients:
                if c.watcher:
                    c.buf = b""
        elif mode == "rate" and senders:
            # Each sender sends every `interval` seconds, all staggered evenly.
            interval = spec["total_senders"] / spec["rate"]
            for c in senders:
                c.next_send = t_send + interval * (c.index % spec["total_senders"]) / spec["total_senders"]
        # Rate mode with a sample: the other receivers do not read while the
        # load runs (the kernel buffers what they are sent, a few KiB each)
        # and drain it afterwards, so that 1000 reading sockets do not make
        # the generator, on the same two cores, the source of the latency.
        sample = spec.get("sample") or 0
        resting = []
        if mode == "rate" and sample > 1:
            resting = [c for c in self.clients if not c.sender and c.state == "online"
                       and c.index % sample]
            for c in resting:
                self._set_events(c, 0)
        storm = [c for c in self.clients if c.storm]
        storm_at = go.get("storm_at")
        while True:
            now = time.monotonic()
            if now >= t_drain:
                break
            if storm and storm_at is not None and now >= storm_at:
                for c in storm:
                    self.start_login(c, now)
                storm = []
            timeout = 0.05
            if mode == "blast":
                if not self.blasting and t_send <= now < t_end:
                    self.blasting = True
                    for c in senders:
                        if c.state == "online":
                            self._set_events(c, selectors.EVENT_READ | selectors.EVENT_WRITE)
                elif self.blasting and now >= t_end:
                    # A block already started is finished; no new one begins.
                    self.blasting = False
            elif mode == "single":
                if not self.single_sending and t_send <= now < t_end:
                    self.single_sending = True
                    for c in senders:
                        for _ in range(self.single_window):
                            if c.state == "online":
                                self.send_single(c)
                elif self.single_sending and now >= t_end:
                    self.single_sending = False  # what is outstanding comes back; nothing new
                timeout = 0.05 if self.single_sending or now >= t_end else max(0.0, t_send - now)
            elif mode == "rate" and t_send <= now < t_end:
                next_due = t_end
                for c in senders:
                    if c.state != "online":
                        continue
                    while c.next_send <= now:
                        line = self.proto.line("T%d %s" % (int(time.monotonic() * 1e9), PADDING), c)
                        try:
                            c.sock.send(line)
                            self.sent += 1
                        except OSError as error:
                            self.fail(c, "send: %s" % error)
                            break
                        c.next_send += spec["total_senders"] / spec["rate"]
                    if c.next_send < next_due:
                        next_due = c.next_send
                timeout = max(0.0, min(timeout, next_due - time.monotonic()))
            if resting and now >= t_end + 0.5:
                for c in resting:
                    if c.state == "online":
                        self._set_events(c, selectors.EVENT_READ)
                resting = []
            self.poll(timeout)
            if now >= t_end and not resting and not self.pending_logins and self.quiet_since(now):
                break
        return self.finish()

    def quiet_since(self, now):
        """True once nothing has arrived for half a second after the load."""
        if self.lines != getattr(self, "_last_lines", -1):
            self._last_lines = self.lines
            self._quiet_from = now
            return False
        return now - self._quiet_from >= 0.5

    def finish(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        logins = [(c.online_at - c.started_at, c.online_at) for c in self.clients
                  if c.storm and c.online_at is not None]
        self.report("done", lines=self.lines, window_lines=self.window_lines, sent=self.sent,
                    echoes=self.echoes, window_echoes=self.window_echoes,
                    online=sum(c.state == "online" for c in self.clients),
                    failed=len(self.failures), failures=self.failures[:5],
                    cpu=usage.ru_utime + usage.ru_stime, cpu_user=usage.ru_utime,
                    send_ns=self.send_ns.tobytes(), latency_ns=self.latency_ns.tobytes(),
                    storm_logins=logins, storm_wanted=sum(c.storm for c in self.clients))
        for c in self.clients:
            if c.sock is not None:
                c.sock.close()


def _worker_main(spec, clients, pipe):
    raise_fd_limit()
    try:
        Worker(spec, clients, pipe).run()
    except Exception as error:  # report, do not hang the parent
        import traceback
        pipe.send(("error", {"error": "%s\n%s" % (error, traceback.format_exc())}))


# --- the parent -----------------------------------------------------------------

class LoadError(Exception):
    pass


def run(target, ports, clients, senders=0, mode="blast", seconds=5.0, rate=100.0, procs=2,
        warmup=1.0, storm=0, storm_after=2.0, host="127.0.0.1", first_index=0,
        setup_concurrency=None, setup_timeout=180.0, sample=0, drain=10.0, on_ready=None, on_window=None,
        window=SINGLE_WINDOW, tls=False):
    """One bounded load run; returns a dict of figures.

    ports: the server's port, or a list of ports (several servers of one
    cluster): client i connects to ports[i % len(ports)], so the senders,
    the first clients, are spread over the servers like everyone else.
    clients: connections logged in at setup; the first `senders` of them send.
    mode: "blast" (senders as fast as the server reads), "rate" (`rate` lines
    per second in total), "single" (each sender keeps `window` single
    lines outstanding, one send() each, closed loop), or "idle" (nothing is sent: on_ready(result) is
    called with every client online, then the run ends).
    tls: every client speaks TLS (ports are then the servers' TLS ports).
    storm: that many more clients connect and log in all at once
    `storm_after` seconds after the load starts.
    on_window(phase): called with "start" and "end" at the edges of the
    measured window (the caller reads the server's CPU time there).
    The result's "loadgen_window_cpu" is each worker process's CPU seconds
    inside the window (utime + stime from /proc), to see whether the
    generator, on the same cores, had headroom.
    """
    raise_fd_limit()
    ports = [ports] if isinstance(ports, int) else list(ports)
    if setup_concurrency is None:
        # miniircd listens with a backlog of 5: more connects at once are
        # dropped and retried by TCP a second later.
        setup_concurrency = 64 if target.startswith("sae") else 2
    spec = dict(target=target, host=host, mode=mode, rate=rate,
                total_senders=max(1, senders), sample=sample, setup_concurrency=setup_concurrency,
                setup_timeout=setup_timeout, window=window, tls=tls)
    procs = max(1, min(procs, clients + storm))
    shares = [[] for _ in range(procs)]
    # Senders spread round-robin like everyone else, so each worker has some.
    for i in range(clients):
        shares[i % procs].append(Client(first_index + i, i < senders, False, ports[i % len(ports)]))
    for i in range(storm):
        shares[i % procs].append(Client(first_index + clients + i, False, True, ports[(clients + i) % len(ports)]))
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    for share in shares:
        mine, theirs = context.Pipe()
        worker = context.Process(target=_worker_main, args=(spec, share, theirs), daemon=True)
        worker.start()
        pipes.append(mine)
        workers.append(worker)
    try:
        return _drive(pipes, spec, clients, storm, seconds, warmup, storm_after, drain,
                      setup_timeout, on_ready, on_window, [w.pid for w in workers])
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
                worker.join()


def _receive(pipes, what, timeout):
    answers = []
    deadline = time.monotonic() + timeout
    for pipe in pipes:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise LoadError("a worker did not report %r within %.0f s" % (what, timeout))
        kind, values = pipe.recv()
        if kind == "error":
            raise LoadError("worker failed: " + values["error"])
        answers.append(values)
    return answers


def process_cpu(pid):
    """utime + stime of a process (all threads), seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(pipes, spec, clients, storm, seconds, warmup, storm_after, drain, setup_timeout,
           on_ready, on_window, worker_pids):
    t0 = time.monotonic()
    ready = _receive(pipes, "ready", setup_timeout + 10)
    setup_seconds = time.monotonic() - t0
    online = sum(r["online"] for r in ready)
    if online < clients:
        failures = [f for r in ready for f in r["failures"]]
        raise LoadError("only %d of %d clients logged in: %s" % (online, clients, failures[:5]))
    result = {"clients": clients, "setup_seconds": setup_seconds}
    if spec["mode"] == "idle":
        if on_ready:
            on_ready(result)
        for pipe in pipes:
            pipe.send({"stop": True})
        _receive(pipes, "done", 30)
        return result
    now = time.monotonic()
    t_send = now + 0.2
    t_start = t_send + warmup
    t_end = t_start + seconds
    go = dict(t_send=t_send, t_start=t_start, t_end=t_end, t_drain=t_end + drain,
              storm_at=(t_send + storm_after) if storm else None)
    for pipe in pipes:
        pipe.send(go)
    time.sleep(max(0.0, t_start - time.monotonic()))
    if on_window:
        on_window("start")
    workers_cpu = [process_cpu(pid) for pid in worker_pids]
    time.sleep(max(0.0, t_end - time.monotonic()))
    workers_cpu = [process_cpu(pid) - before for pid, before in zip(worker_pids, workers_cpu)]
    if on_window:
        on_window("end")
    done = _receive(pipes, "done", drain + seconds + 30)
    result.update(
        seconds=seconds, t_send=t_send, t_start=t_start, t_end=t_end, storm_at=go["storm_at"],
        sent=sum(d["sent"] for d in done),
        echoes=sum(d["echoes"] for d in done),
        window_echoes=sum(d["window_echoes"] for d in done),
        loadgen_window_cpu=workers_cpu,
        lines=sum(d["lines"] for d in done),
        window_lines=sum(d["window_lines"] for d in done),
        failed=sum(d["failed"] for d in done),
        failures=[f for d in done for f in d["failures"]][:5],
        loadgen_cpu=sum(d["cpu"] for d in done),
        loadgen_user=sum(d["cpu_user"] for d in done),
        online_after=sum(d["online"] for d in done),
        storm_wanted=sum(d["storm_wanted"] for d in done),
        storm_logins=sorted(x for d in done for x in d["storm_logins"]),
    )
    send_ns, latency_ns = array.array("q"), array.array("q")
    for d in done:
        send_ns.frombytes(d["send_ns"])
        latency_ns.frombytes(d["latency_ns"])
    result["send_ns"], result["latency_ns"] = send_ns, latency_ns
    result["deliveries_per_second"] = result["window_lines"] / seconds
    return result


def percentiles(values, points=(50, 99)):
    """{point: value} and max, nearest-rank, of a list of numbers."""
    if not values:
        return {p: float("nan") for p in points}, float("nan")
    ordered = sorted(values)
    n = len(ordered)
    found = {p: ordered[min(n - 1, max(0, int(round(p / 100.0 * n + 0.5)) - 1))] for p in points}
    return found, ordered[-1]


def latency_ms(result, since=None, until=None):
    """p50, p99, max (ms) and the count, of messages sent within the window
    (default: the measured window) at every recipient."""
    since = result["t_start"] if since is None else since
    until = result["t_end"] if until is None else until
    lo, hi = int(since * 1e9), int(until * 1e9)
    chosen = [lat / 1e6 for sent, lat in zip(result["send_ns"], result["latency_ns"]) if lo <= sent < hi]
    found, top = percentiles(chosen)
    return found[50], found[99], top, len(chosen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(PROTOCOLS), default="sae")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, nargs="+", required=True,
                        help="one server's port, or several servers' of one cluster (clients dealt round-robin)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--mode", choices=["blast", "rate", "single", "idle"], default="blast")
    parser.add_argument("--window", type=int, default=SINGLE_WINDOW,
                        help="single mode: messages each sender keeps outstanding")
    parser.add_argument("--rate", type=float, default=100.0, help="lines per second in total (rate mode)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=0,
                        help="rate mode: only every SAMPLE-th receiver reads during the load")
    parser.add_argument("--first-index", type=int, default=0,
                        help="sae accounts u<first-index>... must exist with password %s" % PASSWORD)
    args = parser.parse_args(argv)
    result = run(args.target, args.port, args.clients, args.senders, args.mode, args.seconds,
                 args.rate, args.procs, host=args.host, first_index=args.first_index,
                 sample=args.sample, window=args.window)
    if args.mode == "idle":
        print("%d clients logged in in %.1f s" % (args.clients, result["setup_seconds"]))
        return
    print("sent %d, received %d lines, %.0f deliveries/s in the window, %d failures %s" % (
        result["sent"], result["lines"], result["deliveries_per_second"], result["failed"],
        result["failures"]))
    if args.mode in ("rate", "single"):
        p50, p99, top, n = latency_ms(result)
        what = "send to own echo" if args.mode == "single" else "latency"
        print("%s p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d deliveries" % (what, p50, p99, top, n))


if __name__ == "__main__":
    sys.exit(main())
