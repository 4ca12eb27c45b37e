"""Fan-out, latency, memory, login-storm and single-message figures for
sae-server, side by side with miniircd in the same run.

Starts the servers itself (sae-server on a temporary SQLite database, or
with --sae-db on a database of its own on a MariaDB server, and miniircd
from PATH: `pip install miniircd`), drives them with loadgen.py or the C
generator loadgen_c.c (built here with the system compiler) and prints one
table per scenario. Each figure is most meaningful as a ratio to miniircd
measured minutes apart on the same machine.

    python benchmarks/bench_load.py                    # everything, ~5 minutes
    python benchmarks/bench_load.py fanout latency     # some scenarios
    python benchmarks/bench_load.py fanout --clients 200 --senders 10
    python benchmarks/bench_load.py single             # the single-message regime
    python benchmarks/bench_load.py single --sae-db mysql://root@127.0.0.1:3306/
    python benchmarks/bench_load.py cluster --sae-db mysql://root@127.0.0.1:3306/   # 1, 2, 3 instances

Accounts u00000... are written straight into the database before the server
starts (one scrypt hash shared by all, at the cost the server would use), so
setting up 4000 clients costs 4000 LOGINs rather than 4000 REGISTERs too.
SAE_SCRYPT_N=1024 everywhere except the login storm, which uses the server's
default cost, since password hashing during the storm is the point.
The cluster scenario runs several sae-server instances on one MariaDB
database with a redis-server of its own (sae-server only: miniircd has no
such thing).
This is a measurement, not a test: the figures go in docs/BENCHMARKS.md.
"""

import argparse
import array
import collections
import itertools
import os
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import loadgen  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_DIR = ROOT  # where sae_server.py is run from (--server-dir)
SAE_DB = None  # --sae-db: a mysql:// server URL, or None for SQLite files
KEEP = False  # --keep
KEPT_DATABASES = []  # MariaDB databases left for --keep
SERVER_CPUS = None  # --pin: the CPU the servers run on, the load generators getting the others


def pin_servers_apart():
    """--pin: the servers on one CPU, this process and all it starts (the load
    generators) on the others. On a small machine the generator's reads and
    the server's sends otherwise take turns on the same cores, and a message
    waits for the generator as much as for the server; real clients run on
    other machines."""
    global SERVER_CPUS
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("--pin needs at least 2 CPUs")
    SERVER_CPUS = {cpus[0]}
    os.sched_setaffinity(0, cpus[1:])
    return cpus[0], cpus[1:]


def pin_server(pid):
    """Every thread of a server process onto SERVER_CPUS (threads it starts
    later inherit it), with --pin."""
    if SERVER_CPUS is None:
        return
    try:
        threads = [int(tid) for tid in os.listdir("/proc/%d/task" % pid)]
    except FileNotFoundError:
        return  # it has already gone; its caller finds out why
    for tid in threads:
        try:
            os.sched_setaffinity(tid, SERVER_CPUS)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


# --- the server processes ---------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of a process, all its threads."""
    return cpu_seconds_of("/proc/%d/stat" % pid)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_accounts(count, scrypt_n):
    """Names u00000..u<count-1> and the one password hash they all share."""
    from sae_server import hash_password
    return [loadgen.account_name(i) for i in range(count)], hash_password(loadgen.PASSWORD, scrypt_n)


def seed_accounts(db_path, count, scrypt_n):
    """Create accounts u00000..u<count-1> with loadgen.PASSWORD in an SQLite file."""
    from sae_db import name_key, open_store
    store = open_store("sqlite:///" + db_path)  # creates the schema
    rooms = make_default_room(store)
    store.close()
    names, password_hash = bench_accounts(count, scrypt_n)
    with sqlite3.connect(db_path) as db:
        db.executemany("INSERT INTO users (name, name_key, password_hash, created_at) VALUES (?, ?, ?, ?)",
                       [(n, name_key(n), password_hash, "2026-01-01T00:00:00.000Z") for n in names])
        if rooms:
            db.execute(SEED_MEMBERSHIPS)


# Every seeded account in #general, as REGISTER makes it (a server with rooms
# answers the SAY of an account that is in no room ERR 404).
SEED_MEMBERSHIPS = ("INSERT INTO memberships (account_id, room_id, joined_at)"
                    " SELECT u.id, r.id, u.created_at FROM users u, rooms r WHERE r.name_key = '#general'")


def make_default_room(store):
    """#general made by the store, if it has rooms (--server-dir may name a
    server from before them); whether it does."""
    if not hasattr(store, "ensure_room"):
        return False
    store.ensure_room("#general", "2026-01-01T00:00:00.000Z")
    return True


# --- sae-server on MariaDB (--sae-db) ------------------------------------------------

MYSQL_DATABASES = itertools.count(1)  # sae_bench_<pid>_<n>: one database per server


def with_database(url, database):
    """A mysql:// URL with its database name replaced."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def mysql_connect(url, database=None):
    """An autocommit MySQLdb connection with the store's own settings, to
    `database` or to none."""
    import MySQLdb
    from sae_db.mysql import connect_args
    options = connect_args(with_database(url, database or "unused"))
    if not database:
        del options["database"]
    options["autocommit"] = True
    return MySQLdb.connect(**options)


def mysql_version(url):
    connection = mysql_connect(url)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT VERSION()")
        return cursor.fetchone()[0]
    finally:
        connection.close()


def create_mysql_database(url, count, scrypt_n):
    """A fresh database on the server `url` names, with the schema (from
    sae_db's open_store, as the server would make it) and the accounts of
    seed_accounts, in one multi-row INSERT; returns its name."""
    from sae_db import name_key, open_store
    database = "sae_bench_%d_%d" % (os.getpid(), next(MYSQL_DATABASES))
    admin = mysql_connect(url)
    try:
        admin.cursor().execute("CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" % database)
    finally:
        admin.close()
    try:
        store = open_store(with_database(url, database))  # creates the schema
        rooms = make_default_room(store)
        store.close()
        names, password_hash = bench_accounts(count, scrypt_n)
        values = []
        for name in names:
            values += [name, name_key(name), password_hash, "2026-01-01 00:00:00.000"]
        connection = mysql_connect(url, database)
        try:
            connection.cursor().execute(
                "INSERT INTO users (name, name_key, password_hash, created_at) VALUES "
                + ", ".join(["(%s, %s, %s, %s)"] * len(names)), values)
            if rooms:
                connection.cursor().execute(SEED_MEMBERSHIPS)
        finally:
            connection.close()
    except BaseException:
        drop_mysql_database(url, database)
        raise
    return database


def drop_mysql_database(url, database):
    admin = mysql_connect(url)
    try:
        admin.cursor().execute("DROP DATABASE IF EXISTS `%s`" % database)
    finally:
        admin.close()


class Server:
    """A server process on a free loopback port, stopped with SIGINT.

    database: with --sae-db, the name of a database another Server made
    (one instance of a cluster joining the first): this one neither seeds
    nor drops it."""

    def __init__(self, kind, workdir, scrypt_n=1024, accounts=5000, extra=(), profile=None, environment=None,
                 database=None):
        self.kind = kind
        self.log_path = os.path.join(workdir, "%s-%d.log" % (kind, time.monotonic_ns()))
        self.log = open(self.log_path, "w")
        env = dict(os.environ, **(environment or {}))
        self.mysql_database = None  # the database this Server made, and drops when stopped
        self.database = database  # the database it runs on
        self.stopped_line = None  # sae-server's last words: what its loop did (Counters)
        if kind == "sae":
            default_n = 2 ** 14
            if SAE_DB and database:
                db_url = with_database(SAE_DB, database)
            elif SAE_DB:
                self.mysql_database = self.database = create_mysql_database(SAE_DB, accounts, scrypt_n or default_n)
                db_url = with_database(SAE_DB, self.mysql_database)
            else:
                db_path = os.path.join(workdir, "sae-%d.db" % time.monotonic_ns())
                seed_accounts(db_path, accounts, scrypt_n or default_n)
                db_url = "sqlite:///" + db_path
            if scrypt_n:
                env["SAE_SCRYPT_N"] = str(scrypt_n)
            else:
                env.pop("SAE_SCRYPT_N", None)
            command = [sys.executable]
            if profile:
                command += ["-m", "cProfile", "-o", profile]
            command += ["-m", "sae_server", "--host", "127.0.0.1", "--port", "0",
                        "--db", db_url] + list(extra)
            self.irc_port = None
            if os.path.exists(os.path.join(SERVER_DIR, "sae_ircd.py")):
                command += ["--irc-port", "0"]  # a free port, not 6667: runs never collide
            # The server's own folder first, so that --server-dir can point at
            # another checkout (e.g. `git archive HEAD`) than the one running.
            # The caller's PYTHONPATH after it: e.g. a folder with sae_db -> CHECKOUT/db, for
            # when the installed (editable) sae_db points at a checkout that is gone.
            env["PYTHONPATH"] = os.pathsep.join([SERVER_DIR] + [p for p in [env.get("PYTHONPATH")] if p])
            self.process = subprocess.Popen(command, cwd=SERVER_DIR, env=env, stdout=self.log,
                                            stderr=subprocess.STDOUT)
            pin_server(self.process.pid)  # before it starts its threads, which inherit it
            self.port = self._wait_for_port()
        else:
            self.port = free_port()
            miniircd = shutil.which("miniircd")
            if not miniircd:
                sys.exit("miniircd not found: pip install miniircd")
            command = [sys.executable, miniircd, "--ports", str(self.port), "--listen", "127.0.0.1"]
            if os.geteuid() == 0:  # miniircd refuses root unless told
                command += ["--setuid", "root"]
            self.process = subprocess.Popen(command, cwd=workdir, stdout=self.log,
                                            stderr=subprocess.STDOUT)
            self._wait_for_connect()
        self.pid = self.process.pid
        pin_server(self.pid)  # again, for threads started before the first call took

    def _wait_for_port(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                for line in f:
                    match = re.search(r"IRC port \S+:(\d+)", line)
                    if match:
                        self.irc_port = int(match.group(1))
                    if "listening on" in line:
                        return int(line.split("listening on ")[1].split(",")[0].rsplit(":", 1)[1])
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit("sae-server did not start: see %s" % self.log_path)

    def wait_for_log(self, text, timeout=30):
        """Wait until the server's log has a line containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                if any(text in line for line in f):
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)  # another process's log file: nothing to wait on but the file
        sys.exit("sae-server never logged %r: see %s" % (text, self.log_path))

    def log_lines(self, text):
        """How many lines of the server's log contain ``text``."""
        with open(self.log_path, errors="replace") as f:
            return sum(text in line for line in f)

    def _wait_for_connect(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        sys.exit("miniircd did not start: see %s" % self.log_path)

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        if self.kind == "sae":
            with open(self.log_path, errors="replace") as log:
                for line in log:
                    if "stopped; " in line:
                        self.stopped_line = line[line.index("stopped; "):].rstrip()
        if self.mysql_database:
            if KEEP:
                KEPT_DATABASES.append(self.mysql_database)
            else:
                drop_mysql_database(SAE_DB, self.mysql_database)
            self.mysql_database = None


# --- scenarios ------------------------------------------------------------------

# The block regime floods a room faster than a Python receiver reads it (a
# sender's generator process is busy sending): at sae-server's default
# --sendq-max, 256 KiB, the senders are cut with BYE sendq exceeded, as a
# real client that far behind should be. miniircd buffers without a limit;
# sae-server gets 64 MiB here to compare like with like.
BLAST_ENVIRONMENT = {"SAE_SENDQ_MAX": str(64 * 1024 * 1024)}


def fan_out_once(server, clients, senders, seconds, procs, rooms=False, irc=False):
    """rooms: every client in loadgen.ROOMS_EACH of loadgen.ROOMS_TOTAL rooms,
    each sender saying everything in its first room. irc: sae-server through
    its IRC listener (the accounts log in with PASS), as miniircd is."""
    cpu = {}

    def on_window(phase):
        cpu[phase] = cpu_seconds(server.pid)

    target = server.kind if server.kind == "sae" else "irc"
    port = server.port
    if irc and server.kind == "sae":
        target, port = "irc-accounts", server.irc_port
    elif rooms:
        target += "-rooms"
    result = loadgen.run(target, port, clients, senders, "blast", seconds, procs=procs, on_window=on_window)
    server_cpu = cpu["end"] - cpu["start"]
    deliveries = result["window_lines"]
    recipients = clients if server.kind == "sae" and not irc else clients - 1
    if rooms:  # the members of a sender's first room, on average over the senders
        members = collections.Counter(room for i in range(clients)
                                      for room in loadgen.rooms_of(loadgen.Client(i, False, False)))
        said_in = [loadgen.rooms_of(loadgen.Client(i, True, False))[0] for i in range(senders)]
        recipients = sum(members[room] - (server.kind != "sae") for room in said_in) / max(1, senders)
    return dict(
        deliveries_per_s=deliveries / seconds,
        server_cpu_share=server_cpu / seconds,
        cpu_us_per_delivery=server_cpu / deliveries * 1e6 if deliveries else float("nan"),
        loadgen_cpu=result["loadgen_cpu"], loadgen_user=result["loadgen_user"],
        sent=result["sent"], expected=round(result["sent"] * recipients), received=result["lines"],
        failed=result["failed"], failures=result["failures"], setup=result["setup_seconds"],
        alive=server.alive())


def scenario_ircfanout(args, workdir):
    """scenario_fanout with sae-server spoken to through its IRC listener."""
    scenario_fanout(args, workdir, irc=True)


def scenario_fanout(args, workdir, irc=False):
    print("\n## fan-out%s: N clients, %d senders as fast as the server takes, %.0f s measured" % (
        " over IRC (sae-server's IRC listener, the accounts logging in with PASS)" if irc else "",
        args.senders, args.seconds))
    header = ("clients", "server", "deliveries/s", "server CPU", "CPU µs/delivery",
              "sent", "delivered/expected", "setup s")
    rows, notes = [], []
    for clients in args.clients:
        figures = {}
        for kind in ("sae", "irc"):
            if kind == "irc" and clients > 1000 and not args.irc_over_select:
                rows.append((clients, "miniircd", "n/a: select() stops at fd 1024",) + ("",) * 5)
                continue
            server = Server(kind, workdir, environment=BLAST_ENVIRONMENT)
            try:
                f = fan_out_once(server, clients, args.senders, args.seconds, args.procs, irc=irc)
            except loadgen.LoadError as error:
                rows.append((clients, label(kind), "failed: %s" % str(error)[:120]) + ("",) * 5)
                continue
            finally:
                server.stop()
                notes.append(stopped_note(server, "%d clients, sae-server" % clients))
            figures[kind] = f
            rows.append((clients, label(kind), "%.0f" % f["deliveries_per_s"],
                         "%.0f %%" % (100 * f["server_cpu_share"]), "%.3f" % f["cpu_us_per_delivery"],
                         f["sent"], "%d/%d" % (f["received"], f["expected"]), "%.1f" % f["setup"]))
            print("  %s %d clients: load generator CPU over the whole run %.1f s (user %.1f s), "
                  "setup %.1f s" % (kind, clients, f["loadgen_cpu"], f["loadgen_user"], f["setup"]))
            if f["failed"]:
                print("  %s %d clients: %d failures, e.g. %s" % (kind, clients, f["failed"], f["failures"][:2]))
        if len(figures) == 2:
            s, i = figures["sae"], figures["irc"]
            rows.append((clients, "ratio sae/miniircd", "%.2fx" % (s["deliveries_per_s"] / i["deliveries_per_s"]),
                         "", "%.2fx" % (s["cpu_us_per_delivery"] / i["cpu_us_per_delivery"]), "", "", ""))
    table(header, rows)
    print_notes(notes)


def scenario_rooms(args, workdir):
    """The fan-out of scenario_fanout in many rooms instead of one."""
    clients = args.rooms_clients
    print("\n## rooms: %d clients, each in %d of %d rooms, %d senders as fast as the server takes (each in its "
          "first room, about %d members), %.0f s measured" % (
              clients, loadgen.ROOMS_EACH, loadgen.ROOMS_TOTAL, args.senders,
              clients * loadgen.ROOMS_EACH // loadgen.ROOMS_TOTAL, args.seconds))
    header = ("server", "deliveries/s", "server CPU", "CPU µs/delivery", "sent", "delivered/expected", "setup s")
    rows, notes, figures = [], [], {}
    for kind in ("sae", "irc"):
        server = Server(kind, workdir, environment=BLAST_ENVIRONMENT)
        try:
            f = fan_out_once(server, clients, args.senders, args.seconds, args.procs, rooms=True)
        except loadgen.LoadError as error:
            rows.append((label(kind), "failed: %s" % str(error)[:120]) + ("",) * 5)
            continue
        finally:
            server.stop()
            notes.append(stopped_note(server, "rooms, sae-server"))
        figures[kind] = f
        rows.append((label(kind), "%.0f" % f["deliveries_per_s"], "%.0f %%" % (100 * f["server_cpu_share"]),
                     "%.3f" % f["cpu_us_per_delivery"], f["sent"], "%d/%d" % (f["received"], f["expected"]),
                     "%.1f" % f["setup"]))
        if f["failed"]:
            print("  %s: %d failures, e.g. %s" % (kind, f["failed"], f["failures"][:2]))
    if len(figures) == 2:
        s, i = figures["sae"], figures["irc"]
        rows.append(("ratio sae/miniircd", "%.2fx" % (s["deliveries_per_s"] / i["deliveries_per_s"]), "",
                     "%.2fx" % (s["cpu_us_per_delivery"] / i["cpu_us_per_delivery"]), "", "", ""))
    table(header, rows)
    print_notes(notes)


def scenario_latency(args, workdir):
    print("\n## latency: %d clients, %d senders, %.0f messages/s in total, %.0f s warm-up, %.0f s measured, "
          "every %dth receiver reading, generator(s): %s, %d round(s)" % (
              args.latency_clients, args.latency_senders, args.rate, args.latency_warmup, args.latency_seconds,
              args.latency_sample, " ".join(fixed_load_generators(args)), args.latency_rounds))
    header = ("round", "generator", "server", "p50 ms", "p99 ms", "max ms", "deliveries measured", "server CPU",
              "generator CPU")
    rows, notes = [], []
    for round_ in range(1, args.latency_rounds + 1):
        for generator in fixed_load_generators(args):  # alternately, sae-server then miniircd under each
            rows += latency_rows(args, workdir, args.latency_clients, args.latency_senders, args.rate,
                                 args.latency_seconds, args.latency_sample, warmup=args.latency_warmup,
                                 prefix=(round_, generator), generator=generator, notes=notes)
    table(header, rows)
    print_notes(notes)


def fixed_load_generators(args):
    """The fixed load's generators: --generator, or loadgen.py."""
    return args.generator or ["python"]


def latency_rows(args, workdir, clients, senders, rate, seconds, sample, warmup=1.0, prefix=(), generator="python",
                 notes=None):
    """Fixed-load latency, sae-server then miniircd: table rows and a ratio row.
    generator "c": loadgen_c.c (one process, every receiver reading; sample is ignored).
    notes: a list that gets sae-server's exit line."""
    rows, figures = [], {}
    for kind in ("sae", "irc"):
        server = Server(kind, workdir)
        cpu = {}

        def on_window(phase, cpu=cpu, pid=server.pid):
            cpu[phase] = cpu_seconds(pid)

        try:
            if generator == "c":
                result = run_c_latency(workdir, kind, server.port, clients, senders, rate, seconds, warmup,
                                       on_window)
                p50, p99, top, n = result["p50_ms"], result["p99_ms"], result["max_ms"], int(result["count"])
                result["failed"], result["failures"] = int(result["failed"]), ["see stderr above"]
                gen_cpu = "%.0f %% (system %.0f %%)" % (100 * result["window_cpu_s"] / seconds,
                                                        100 * result["window_sys_s"] / seconds)
                print("  c, %s: per message, first delivery p50 %.2f / p99 %.2f ms (read, store, first send), "
                      "last minus first p50 %.2f / p99 %.2f ms (the pass over the room)" % (
                          label(kind), result["first_p50_ms"], result["first_p99_ms"], result["spread_p50_ms"],
                          result["spread_p99_ms"]))
            else:
                result = loadgen.run("sae" if kind == "sae" else "irc", server.port, clients, senders, "rate",
                                     seconds, rate=rate, procs=args.procs, sample=sample, warmup=warmup,
                                     on_window=on_window)
                p50, p99, top, n = loadgen.latency_ms(result)
                gen_cpu = " / ".join("%.0f %%" % (100 * c / seconds) for c in result["loadgen_window_cpu"])
        finally:
            server.stop()
            if notes is not None:
                notes.append(stopped_note(server, "%s%s generator, sae-server" % (
                    "round %s, " % prefix[0] if prefix else "", generator)))
        figures[kind] = (p50, p99, top)
        rows.append(prefix + (label(kind), "%.2f" % p50, "%.2f" % p99, "%.2f" % top, n,
                              "%.0f %%" % (100 * (cpu["end"] - cpu["start"]) / seconds), gen_cpu))
        if result["failed"]:
            print("  %s: %d failures, e.g. %s" % (kind, result["failed"], result["failures"][:2]))
    s, i = figures["sae"], figures["irc"]
    rows.append(prefix + ("ratio sae/miniircd", "%.2fx" % (s[0] / i[0]), "%.2fx" % (s[1] / i[1]),
                          "%.2fx" % (s[2] / i[2]), "", "", ""))
    return rows


# --- the C generator ------------------------------------------------------------------

C_SOURCE = os.path.join(HERE, "loadgen_c.c")


def c_compiler():
    return shutil.which("cc") or shutil.which("gcc")


def c_generator(workdir):
    """Build loadgen_c.c into the temporary folder (once per run) with the system compiler."""
    binary = os.path.join(workdir, "loadgen_c")
    if not os.path.exists(binary):
        compiler = c_compiler()
        if not compiler:
            sys.exit("--generator c needs a C compiler (cc or gcc)")
        subprocess.run([compiler, "-O2", "-std=c99", "-Wall", "-o", binary, C_SOURCE], check=True)
    return binary


def login_concurrency(kind):
    return 64 if kind == "sae" else 2  # as loadgen.run: miniircd's listen backlog is 5


def c_result(line):
    return {k: float(v) for k, v in (f.split("=") for f in line.split()[1:])}


def run_c_latency(workdir, kind, port, clients, senders, rate, seconds, warmup, on_window):
    """One fixed-load run of the C generator; on_window("start"/"end") at the
    window's edges, as it prints them; returns its result line as a dict."""
    command = [c_generator(workdir), "sae" if kind == "sae" else "irc", str(port), str(clients), str(senders),
               str(rate), str(warmup), str(seconds), "0", str(login_concurrency(kind))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    result = None
    try:
        for line in process.stdout:
            if line.startswith("phase="):
                on_window(line.strip().split("=", 1)[1])
            elif line.startswith("result "):
                result = c_result(line)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if result is None or process.returncode:
        raise loadgen.LoadError("the C generator failed (status %s)" % process.returncode)
    return result


def run_c_closed(workdir, kind, port, clients, senders, window, seconds, warmup, procs, on_window):
    """The closed loop (single-message regime) with the C generator, its
    clients dealt round-robin over `procs` processes as loadgen.run deals
    them to its workers. With more than one, each says "ready" once its
    clients are in, and all get the same start time ("go", CLOCK_MONOTONIC,
    the clock of time.monotonic_ns); on_window is called at the first
    process's phase markers (all share the window). Returns the summed
    counts, the merged send-to-echo latencies (ms) and each process's
    result line."""
    binary = c_generator(workdir)
    processes, latency_files = [], []
    try:
        for part in range(procs):
            latency_files.append(os.path.join(workdir, "latency-%d-%d.bin" % (time.monotonic_ns(), part)))
            command = [binary, "closed", "sae" if kind == "sae" else "irc", str(port), str(clients), str(senders),
                       str(window), str(warmup), str(seconds), "0", str(login_concurrency(kind)), str(part),
                       str(procs), latency_files[-1]]
            processes.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        if procs > 1:
            for process in processes:  # each stops by itself within 180 s if its logins do not finish
                if process.stdout.readline().strip() != "ready":
                    raise loadgen.LoadError("a C generator process did not log its clients in (see stderr above)")
            go = "go %d\n" % (time.monotonic_ns() + 200000000)  # as loadgen._drive: 0.2 s from now
            for process in processes:
                process.stdin.write(go)
                process.stdin.flush()
        results = []
        for part, process in enumerate(processes):
            result = None
            for line in process.stdout:
                if line.startswith("phase=") and part == 0:
                    on_window(line.strip().split("=", 1)[1])
                elif line.startswith("result "):
                    result = c_result(line)
            process.wait(30)
            if result is None or process.returncode:
                raise loadgen.LoadError("the C generator failed (status %s)" % process.returncode)
            results.append(result)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    latency_ns = array.array("q")
    for path in latency_files:
        with open(path, "rb") as f:
            latency_ns.frombytes(f.read())
        os.remove(path)
    found, top = loadgen.percentiles([ns / 1e6 for ns in latency_ns])
    merged = {key: sum(r[key] for r in results)
              for key in ("sent", "echoes", "window_echoes", "lines", "window_lines", "outstanding", "failed")}
    merged.update(p50=found[50], p99=found[99], max=top, timed=len(latency_ns), processes=results)
    return merged


def tls_port_of(server):
    with open(server.log_path) as log:
        for line in log:
            if "listening for TLS v1 on " in line:
                return int(line.rsplit(":", 1)[1])
    raise RuntimeError("sae-server has no TLS listener: see %s" % server.log_path)


def self_signed(workdir):
    """A throwaway certificate, made as the README makes one for a LAN."""
    chain = os.path.join(workdir, "tls.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", chain, "-out", chain + ".crt"],
                   check=True, capture_output=True)
    with open(chain, "a") as key_and_chain, open(chain + ".crt") as certificate:
        key_and_chain.write(certificate.read())
    return chain


def handshakes_once(port, seconds):
    """Full handshakes (no resumption) one after another for ``seconds``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw):
                done += 1
    return done


def idle_connections(port, count, tls):
    """``count`` connections that finished their handshake (if any) and say nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        held.append(context.wrap_socket(sock) if tls else sock)
    return held


def scenario_tls(args, workdir):
    """Plain and TLS on the same server in the same run: the fan-out over
    each, full handshakes per second, and memory per idle connection."""
    print("\n## TLS beside plain, one sae-server: fan-out (%d senders, %.0f s), handshakes, idle memory"
          % (args.senders, args.seconds))
    chain = self_signed(workdir)
    rows = []
    for clients in args.clients:
        for tls in (False, True):
            server = Server("sae", workdir, extra=["--tls-cert", chain, "--tls-port", "0"])
            try:
                port = tls_port_of(server) if tls else server.port
                cpu = {}

                def on_window(phase, cpu=cpu, pid=server.pid):
                    cpu[phase] = cpu_seconds(pid)

                result = loadgen.run("sae", port, clients, args.senders, "blast", args.seconds,
                                     procs=args.procs, on_window=on_window, tls=tls)
                deliveries = result["window_lines"]
                server_cpu = cpu["end"] - cpu["start"]
                rows.append(("fan-out %d clients" % clients, "TLS" if tls else "plain",
                             "%.0f deliveries/s" % (deliveries / args.seconds),
                             "%.3f µs CPU/delivery" % (server_cpu / deliveries * 1e6 if deliveries else float("nan")),
                             "%d failed" % result["failed"]))
            finally:
                server.stop()
    server = Server("sae", workdir, extra=["--tls-cert", chain, "--tls-port", "0"])
    try:
        port = tls_port_of(server)
        before = cpu_seconds(server.pid)
        done = handshakes_once(port, args.seconds)
        spent = cpu_seconds(server.pid) - before
        rows.append(("handshakes, one client after another", "TLS", "%.0f handshakes/s" % (done / args.seconds),
                     "%.0f µs server CPU/handshake" % (spent / done * 1e6), ""))
        for tls in (False, True):
            time.sleep(1.0)
            base = rss_kib(server.pid)
            held = idle_connections(port if tls else server.port, args.tls_idle, tls)
            time.sleep(1.0)
            grown = rss_kib(server.pid) - base
            rows.append(("%d idle connections, not logged in" % args.tls_idle, "TLS" if tls else "plain",
                         "%d KiB RSS more" % grown, "%.2f KiB/connection" % (grown / args.tls_idle), ""))
            for sock in held:
                sock.close()
    finally:
        server.stop()
    table(("what", "transport", "rate or size", "cost", ""), rows)


def scenario_memory(args, workdir):
    print("\n## memory: server RSS with idle logged-in connections")
    header = ("server", "connections", "RSS KiB", "KiB per connection over 0")
    rows = []
    for kind in ("sae", "irc"):
        for clients in args.memory_clients:
            if kind == "irc" and clients > 1000 and not args.irc_over_select:
                rows.append((label(kind), clients, "n/a: select() stops at fd 1024", ""))
                continue
            server = Server(kind, workdir)
            try:
                time.sleep(1.0)
                base = rss_kib(server.pid)
                if clients == 0:
                    rows.append((label(kind), 0, base, ""))
                    continue
                seen = {}

                def on_ready(result, seen=seen, pid=server.pid):
                    time.sleep(2.0)  # let the JOIN lines of the last logins go out
                    seen["rss"] = rss_kib(pid)

                loadgen.run("sae" if kind == "sae" else "irc", server.port, clients, mode="idle",
                            procs=args.procs, on_ready=on_ready)
                rows.append((label(kind), clients, seen["rss"], "%.2f" % ((seen["rss"] - base) / clients)))
            except loadgen.LoadError as error:
                rows.append((label(kind), clients, "failed: %s" % str(error)[:100], ""))
            finally:
                server.stop()
    table(header, rows)


def scenario_kept(args, workdir):
    """Memory a server keeps once a login burst is over: sae-server at its
    default scrypt cost (16 MiB per hash), so that what the hashing threads
    allocated shows; miniircd alike, in the same run."""
    clients = args.kept_clients
    print("\n## kept: server RSS fresh, with %d clients logged in, and 2 s after they all left; "
          "sae-server at its default scrypt cost" % clients)
    header = ("server", "fresh KiB", "online KiB", "after they left KiB", "kept MB")
    rows = []
    for kind in ("sae", "irc"):
        server = Server(kind, workdir, scrypt_n=None, accounts=clients + 10)
        try:
            time.sleep(1.0)
            fresh = rss_kib(server.pid)
            seen = {}

            def on_ready(result, seen=seen, pid=server.pid):
                time.sleep(1.0)
                seen["online"] = rss_kib(pid)

            loadgen.run("sae" if kind == "sae" else "irc", server.port, clients, mode="idle",
                        procs=args.procs, on_ready=on_ready)
            time.sleep(2.0)  # the server notices every hang-up and lets go of its sessions
            after = rss_kib(server.pid)
            rows.append((label(kind), fresh, seen["online"], after, "%.1f" % ((after - fresh) / 1024)))
        except loadgen.LoadError as error:
            rows.append((label(kind), "failed: %s" % str(error)[:100], "", "", ""))
        finally:
            server.stop()
    table(header, rows)


def scenario_storm(args, workdir):
    chatters, storm = args.storm_chatters, args.storm_clients
    print("\n## login storm: %d clients log in at once while %d others chat (%.0f messages/s); "
          "sae-server at its default scrypt cost" % (storm, chatters, args.storm_rate))
    server = Server("sae", workdir, scrypt_n=None, accounts=chatters + storm + 10)
    try:
        result = loadgen.run("sae", server.port, chatters, chatters, "rate", args.storm_seconds,
                             rate=args.storm_rate, procs=args.procs, storm=storm, storm_after=3.0,
                             warmup=0.5, setup_concurrency=16)
    finally:
        server.stop()
    logins = result["storm_logins"]
    storm_at = result["storm_at"]
    if logins:
        all_in = max(at for _, at in logins) - storm_at
        per_login = sorted(took for took, _ in logins)
    else:
        all_in, per_login = float("nan"), [float("nan")]
    before = loadgen.latency_ms(result, result["t_start"], storm_at)
    during = loadgen.latency_ms(result, storm_at, storm_at + all_in)
    header = ("", "value")
    rows = [("storm clients logged in", "%d of %d" % (len(logins), result["storm_wanted"])),
             ("time until all are in", "%.2f s" % all_in),
             ("one login, median / slowest", "%.2f s / %.2f s" % (per_login[len(per_login) // 2], per_login[-1])),
             ("chat before the storm p50 / p99 / max", "%.2f / %.2f / %.2f ms (%d)" % before),
             ("chat during the storm p50 / p99 / max", "%.2f / %.2f / %.2f ms (%d)" % during),
             ("failures", "%d %s" % (result["failed"], result["failures"][:2]))]
    table(header, rows)


# --- the single-message regime ---------------------------------------------------

def thread_cpu_seconds(pid):
    """{tid: utime + stime} of every thread of a process."""
    found = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            found[int(tid)] = cpu_seconds_of("/proc/%d/task/%s/stat" % (pid, tid))
        except OSError:
            pass  # the thread ended
    return found


def cpu_seconds_of(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def single_once(server, args, workdir, generator, seconds=None, on_window=None):
    """One closed-loop run of the single-message regime against one server,
    driven by loadgen.py ("python", --procs processes) or loadgen_c.c ("c",
    --c-procs processes). Server CPU is read at the edges of the measured
    window only, so that the logins (and their password hashing) before it
    are not counted."""
    seconds = seconds or args.single_seconds
    cpu, loop = {}, {}

    def window(phase):
        cpu[phase] = cpu_seconds(server.pid)
        loop[phase] = thread_cpu_seconds(server.pid).get(server.pid, 0.0)  # the main thread runs the loop
        if on_window:
            on_window(phase)

    kind = server.kind if server.kind == "sae" else "irc"
    if generator == "c":
        result = run_c_closed(workdir, kind, server.port, args.single_clients, args.single_senders,
                              args.single_window, seconds, args.single_warmup, args.c_procs, window)
        deliveries, messages = result["window_lines"], result["window_echoes"]
        p50, p99, top, timed = result["p50"], result["p99"], result["max"], result["timed"]
        shares = [r["window_cpu_s"] / seconds for r in result["processes"]]
        generator_cpu = " / ".join("%.0f %% (user %.0f %%, system %.0f %%)" % (
            100 * r["window_cpu_s"] / seconds, 100 * r["window_user_s"] / seconds,
            100 * r["window_sys_s"] / seconds) for r in result["processes"])
        failures, lost = ["see the C generator's stderr above"], int(result["outstanding"])
    else:
        result = loadgen.run(kind, server.port, args.single_clients, args.single_senders, "single", seconds,
                             procs=args.procs, warmup=args.single_warmup, window=args.single_window,
                             on_window=window)
        deliveries, messages = result["window_lines"], result["window_echoes"]
        p50, p99, top, timed = loadgen.latency_ms(result)
        shares = [c / seconds for c in result["loadgen_window_cpu"]]
        generator_cpu = " / ".join("%.0f %%" % (100 * share) for share in shares)
        failures, lost = result["failures"], result["sent"] - result["echoes"]
    server_cpu = cpu["end"] - cpu["start"]
    return dict(
        deliveries_per_s=deliveries / seconds, messages_per_s=messages / seconds,
        deliveries=deliveries, messages=messages, seconds=seconds,
        server_cpu_share=server_cpu / seconds, loop_cpu_share=(loop["end"] - loop["start"]) / seconds,
        cpu_us_per_delivery=server_cpu / deliveries * 1e6 if deliveries else float("nan"),
        p50=p50, p99=p99, max=top, timed=timed, generator=shares, generator_cpu=generator_cpu,
        sent=int(result["sent"]), echoes=int(result["echoes"]), lost=lost, failed=int(result["failed"]),
        failures=failures, alive=server.alive())


def closed_loop_generators(args):
    """The closed loop's generators and why: --generator if given, else the
    C one when there is a compiler to build it, else loadgen.py."""
    if args.generator:
        return args.generator, "as given by --generator"
    compiler = c_compiler()
    if compiler:
        return ["c"], "the default: a C compiler is here (%s)" % compiler
    return ["python"], "the default without a C compiler (neither cc nor gcc found)"


def generator_label(generator, args):
    if generator == "c":
        return "C, %d process%s" % (args.c_procs, "" if args.c_procs == 1 else "es")
    return "Python, %d process%s" % (args.procs, "" if args.procs == 1 else "es")


def stopped_note(server, what):
    """sae-server's exit line (its loop's counters) for the notes under a
    table; None for miniircd."""
    if server.kind != "sae":
        return None
    return "  %s: %s" % (what, server.stopped_line or "no \"stopped;\" line in %s" % server.log_path)


def scenario_single(args, workdir):
    generators, why = closed_loop_generators(args)
    print("\n## single messages, closed loop: %d clients, %d senders with %d single lines outstanding each "
          "(one send() per line, the next on its echo), %.0f s warm-up, %.0f s measured, %d round(s)" % (
              args.single_clients, args.single_senders, args.single_window, args.single_warmup,
              args.single_seconds, args.single_rounds))
    print("  generator: %s (%s); sae-server on %s" % (
        " then ".join(generator_label(g, args) for g in generators), why, storage_label()))
    print("  echo: sae-server, the sender's own MSG; miniircd (no echo of PRIVMSG), the message as one "
          "receiver in the sender's load-generator process gets it")
    header = ("round", "generator", "server", "deliveries/s", "messages/s", "server CPU (loop thread)",
              "CPU µs/delivery", "p50 ms", "p99 ms", "echoes timed", "generator CPU per process")
    rows, notes = [], []
    for round_ in range(1, args.single_rounds + 1):
        for generator in generators:  # in turn, each against sae-server then miniircd
            figures = {}
            for kind in ("sae", "irc"):  # a fresh server each time
                server = Server(kind, workdir)
                try:
                    f = single_once(server, args, workdir, generator)
                except loadgen.LoadError as error:
                    rows.append((round_, generator, label(kind), "failed: %s" % str(error)[:120]))
                    continue
                finally:
                    server.stop()
                    notes.append(stopped_note(server, "round %d, %s generator, sae-server" % (round_, generator)))
                figures[kind] = f
                rows.append((round_, generator, label(kind), "%.0f" % f["deliveries_per_s"],
                             "%.0f" % f["messages_per_s"],
                             "%.0f %% (%.0f %%)" % (100 * f["server_cpu_share"], 100 * f["loop_cpu_share"]),
                             "%.3f" % f["cpu_us_per_delivery"], "%.2f" % f["p50"], "%.2f" % f["p99"], f["timed"],
                             f["generator_cpu"]))
                if f["failed"] or f["lost"] or not f["alive"]:
                    print("  %s round %d, %s generator: %d failures %s, %d messages not seen back, "
                          "server alive: %s" % (kind, round_, generator, f["failed"], f["failures"][:2], f["lost"],
                                                f["alive"]))
            if len(figures) == 2:
                s, i = figures["sae"], figures["irc"]
                rows.append((round_, generator, "ratio sae/miniircd",
                             "%.2fx" % (s["deliveries_per_s"] / i["deliveries_per_s"]),
                             "%.2fx" % (s["messages_per_s"] / i["messages_per_s"]), "",
                             "%.2fx" % (s["cpu_us_per_delivery"] / i["cpu_us_per_delivery"]),
                             "%.2fx" % (s["p50"] / i["p50"]), "%.2fx" % (s["p99"] / i["p99"]), "", ""))
    table(header, rows)
    print_notes(notes)
    if args.single_latency_clients:
        senders, rate = args.single_latency_senders, args.single_latency_rate
        print("\n## single messages at a fixed load: %d clients, %d senders at %.0f messages/s each "
              "(%.0f in total), %.0f s measured, every receiver reading" % (
                  args.single_latency_clients, senders, rate / senders, rate, args.single_latency_seconds))
        header = ("round", "generator", "server", "p50 ms", "p99 ms", "max ms", "deliveries measured",
                  "server CPU", "generator CPU")
        rows, notes = [], []
        for round_ in range(1, args.single_rounds + 1):
            for generator in fixed_load_generators(args):
                rows += latency_rows(args, workdir, args.single_latency_clients, senders, rate,
                                     args.single_latency_seconds, 1, warmup=args.single_warmup,
                                     prefix=(round_, generator), generator=generator, notes=notes)
        table(header, rows)
        print_notes(notes)
    if args.single_strace:
        single_counters(args, workdir, generators[0])


# --- several servers: one MariaDB database, one Redis (scenario cluster) ---------------

class RedisServer:
    """A redis-server of the benchmark's own, on a free loopback port, in
    the temporary folder, keeping nothing on disk (as the tests start one)."""

    def __init__(self, workdir):
        program = shutil.which("redis-server")
        if not program:
            sys.exit("cluster: redis-server not found (apt install redis-server)")
        self.version = subprocess.run([program, "--version"], capture_output=True, text=True).stdout.split()[2]
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        folder = os.path.join(workdir, "redis-%d" % self.port)
        os.mkdir(folder)
        self.log_path = os.path.join(folder, "redis.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", folder],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                sys.exit("redis-server did not start: see %s" % self.log_path)
            time.sleep(0.05)  # a process starting: nothing to wait on but its port

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as probe:
                probe.sendall(b"PING\r\n")
                return probe.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def database_server_pid():
    """mariadbd's (or mysqld's) pid when --sae-db names this machine, else
    None: its CPU is shown beside the instances'."""
    if urlsplit(SAE_DB).hostname not in (None, "127.0.0.1", "localhost", "::1"):
        return None
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as f:
                    if f.read().strip() in ("mariadbd", "mysqld"):
                        return int(entry)
            except OSError:
                continue
    return None


def start_cluster(count, redis, workdir, environment=None):
    """``count`` sae-server instances on one fresh seeded database and one
    Redis, each listening to the others before this returns. The first
    made the database and drops it when it stops. 0: one server without
    --cluster, on MariaDB all the same (what the chain and Redis cost)."""
    if count == 0:
        return [Server("sae", workdir, environment=environment)]
    instances = []
    try:
        for number in range(1, count + 1):
            instance = Server("sae", workdir, environment=environment,
                              database=instances[0].database if instances else None,
                              extra=["--cluster", redis.url, "--instance-name", "s%d" % number])
            instances.append(instance)
            instance.wait_for_log("cluster: listening to the other servers")
    except BaseException:
        stop_cluster(instances)
        raise
    return instances


def stop_cluster(instances, notes=None, what=""):
    for instance in reversed(instances):  # the first last: it drops the database
        instance.stop()
    if notes is not None:
        for number, instance in enumerate(instances, 1):
            outages = instance.log_lines("cluster: Redis unreachable")
            notes.append(stopped_note(instance, "%s, s%d" % (what, number))
                         + ("; Redis lost %d time(s)" % outages if outages else ""))


class ClusterCpu:
    """CPU seconds of the instances, of Redis and of mariadbd, read at the
    edges of the measured window (loadgen's on_window)."""

    def __init__(self, instances, redis):
        self.instances = [instance.pid for instance in instances]
        self.redis = [redis.pid]
        self.mariadb = [pid for pid in [database_server_pid()] if pid]
        self.at = {}
        self.loadavg = {}

    def on_window(self, phase):
        self.at[phase] = {pid: cpu_seconds(pid) for pid in self.instances + self.redis + self.mariadb}
        self.loadavg[phase] = loadavg()

    def spent(self, pids):
        return sum(self.at["end"][pid] - self.at["start"][pid] for pid in pids)

    def shares(self, seconds):
        """Text for the table: the instances' CPU (each), Redis's, mariadbd's."""
        each = [self.spent([pid]) / seconds for pid in self.instances]
        mariadb = "%.0f %%" % (100 * self.spent(self.mariadb) / seconds) if self.mariadb else "n/a"
        return ("%.0f %% (%s)" % (100 * sum(each), " + ".join("%.0f" % (100 * share) for share in each)),
                "%.0f %%" % (100 * self.spent(self.redis) / seconds), mariadb)

    def window_loadavg(self):
        return "%s → %s" % (self.loadavg["start"], self.loadavg["end"])


def instances_label(count):
    return "1, no --cluster" if count == 0 else str(count)


def loadavg():
    """The 1-minute load average: other work on the machine shows here."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def mariadb_background(seconds=2.0):
    """mariadbd's CPU share over ``seconds`` with no load of ours running:
    what other users of the same MariaDB (another session's tests) cost it
    meanwhile, to read its column with."""
    pid = database_server_pid()
    if pid is None:
        return "n/a"
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return "%.0f %%" % (100 * (cpu_seconds(pid) - before) / seconds)


def scenario_cluster(args, workdir):
    """1, 2, 3 ... instances (--cluster-instances) on one MariaDB database
    and one Redis of the benchmark's own: the fan-out, the fixed-load
    latency, and the delay a message takes to reach a client on another
    instance rather than on the sender's."""
    if not SAE_DB:
        sys.exit("cluster: needs --sae-db mysql://... (the instances share one MariaDB database)")
    redis = RedisServer(workdir)
    try:
        print("\n## several servers: sae-server instances on one MariaDB database (%s) and one Redis %s of the "
              "benchmark's own (127.0.0.1:%d), clients dealt round-robin over the instances, a fresh cluster and "
              "database for every run" % (describe_server(SAE_DB), redis.version, redis.port))
        if "fanout" in args.cluster_parts:
            cluster_fanout(args, workdir, redis)
        if "latency" in args.cluster_parts:
            cluster_latency(args, workdir, redis)
        if "probe" in args.cluster_parts:
            cluster_probe(args, workdir, redis)
    finally:
        redis.stop()


def cluster_fanout(args, workdir, redis):
    print("\n### fan-out: N clients over the instances, %d senders as fast as the servers take (block regime), "
          "%.0f s measured" % (args.senders, args.seconds))
    header = ("instances", "clients", "deliveries/s", "instances' CPU (each)", "CPU µs/delivery (instances)",
              "Redis CPU", "mariadbd CPU (idle before)", "µs/delivery, all three", "generator CPU",
              "delivered/expected", "loadavg")
    rows, notes = [], []
    for clients in args.cluster_clients:
        for count in args.cluster_instances:
            instances = start_cluster(count, redis, workdir, environment=BLAST_ENVIRONMENT)
            cpu = ClusterCpu(instances, redis)
            try:
                background = mariadb_background()
                result = loadgen.run("sae", [instance.port for instance in instances], clients, args.senders,
                                     "blast", args.seconds, procs=args.procs, on_window=cpu.on_window)
            except loadgen.LoadError as error:
                rows.append((instances_label(count), clients, "failed: %s" % str(error)[:160]))
                continue
            finally:
                stop_cluster(instances, notes, "%s instance(s), %d clients" % (instances_label(count), clients))
            deliveries = result["window_lines"]
            instances_cpu, redis_cpu, mariadb_cpu = cpu.shares(args.seconds)
            every = cpu.spent(cpu.instances + cpu.redis + cpu.mariadb)
            rows.append((instances_label(count), clients, "%.0f" % (deliveries / args.seconds), instances_cpu,
                         "%.3f" % (cpu.spent(cpu.instances) / deliveries * 1e6) if deliveries else "n/a",
                         redis_cpu, "%s (%s)" % (mariadb_cpu, background),
                         "%.3f" % (every / deliveries * 1e6) if deliveries else "n/a",
                         " / ".join("%.0f %%" % (100 * c / args.seconds) for c in result["loadgen_window_cpu"]),
                         "%d/%d" % (result["lines"], result["sent"] * clients), cpu.window_loadavg()))
            if result["failed"]:
                print("  %s instance(s): %d failures, e.g. %s" % (instances_label(count), result["failed"],
                                                                  result["failures"][:2]))
    table(header, rows)
    print_notes(notes)


def cluster_latency(args, workdir, redis):
    clients, senders, rate = args.cluster_latency_clients, args.cluster_latency_senders, args.cluster_rate
    print("\n### fixed load: %d clients over the instances, %d senders, %.0f messages/s in total, %.0f s warm-up, "
          "%.0f s measured, every %dth receiver reading" % (
              clients, senders, rate, args.latency_warmup, args.cluster_latency_seconds, args.latency_sample))
    header = ("instances", "p50 ms", "p99 ms", "max ms", "deliveries measured", "instances' CPU (each)",
              "Redis CPU", "mariadbd CPU (idle before)", "generator CPU", "loadavg")
    rows, notes = [], []
    for count in args.cluster_instances:
        instances = start_cluster(count, redis, workdir)
        cpu = ClusterCpu(instances, redis)
        try:
            background = mariadb_background()
            result = loadgen.run("sae", [instance.port for instance in instances], clients, senders, "rate",
                                 args.cluster_latency_seconds, rate=rate, procs=args.procs,
                                 sample=args.latency_sample, warmup=args.latency_warmup, on_window=cpu.on_window)
        except loadgen.LoadError as error:
            rows.append((instances_label(count), "failed: %s" % str(error)[:160]))
            continue
        finally:
            stop_cluster(instances, notes, "%s instance(s)" % instances_label(count))
        p50, p99, top, measured = loadgen.latency_ms(result)
        instances_cpu, redis_cpu, mariadb_cpu = cpu.shares(args.cluster_latency_seconds)
        rows.append((instances_label(count), "%.2f" % p50, "%.2f" % p99, "%.2f" % top, measured, instances_cpu,
                     redis_cpu, "%s (%s)" % (mariadb_cpu, background),
                     " / ".join("%.0f %%" % (100 * c / args.cluster_latency_seconds)
                                for c in result["loadgen_window_cpu"]), cpu.window_loadavg()))
        if result["failed"]:
            print("  %s instance(s): %d failures, e.g. %s" % (instances_label(count), result["failed"],
                                                              result["failures"][:2]))
    table(header, rows)
    print_notes(notes)


def cluster_probe(args, workdir, redis):
    count, rate = args.cluster_probe_messages, args.cluster_probe_rate
    print("\n### same instance or another: one sender on instance s1, a receiver on s1 and one on s2, %d messages "
          "at %.0f/s, nothing else running; send-to-receive delay" % (count, rate))
    header = ("instances", "receiver", "p50 ms", "p99 ms", "max ms", "received/sent", "loadavg")
    rows, notes = [], []
    for instances_wanted in args.cluster_instances:
        instances = start_cluster(instances_wanted, redis, workdir)
        try:
            before = loadavg()
            delays = cross_instance_probe(instances[0], instances[1] if len(instances) > 1 else None, count, rate)
            after = loadavg()
        finally:
            stop_cluster(instances, notes, "%s instance(s)" % instances_label(instances_wanted))
        for receiver, found in delays.items():
            points, top = loadgen.percentiles(found)
            rows.append((instances_label(instances_wanted), receiver, "%.2f" % points[50], "%.2f" % points[99],
                         "%.2f" % top, "%d/%d" % (len(found), count), "%s → %s" % (before, after)))
    table(header, rows)
    print_notes(notes)


# The probe's messages as they arrive: those of its sender, u00000.
PROBE_SAID = re.compile(rb"MSG \d+ \S+ u00000 T(\d+) ")


def probe_client(port, index):
    """A logged-in v1 connection as account u<index>, non-blocking, and
    what it read after its login."""
    sock = socket.create_connection(("127.0.0.1", port), 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(loadgen.Sae.login(loadgen.Client(index, False, False)))
    buf = b""
    while not loadgen.Sae.login_done(buf):
        data = sock.recv(65536)
        if not data or loadgen.Sae.login_done(buf + data) is False:
            raise loadgen.LoadError("probe: login of %s refused: %r" % (loadgen.account_name(index), buf + data))
        buf += data
    sock.setblocking(False)
    return sock


def cross_instance_probe(first, second, count, rate):
    """One sender (u00000) on ``first`` sends ``count`` messages at ``rate``
    per second, each carrying its send time; {receiver: [delay ms]} at the
    sender itself (its echo), at u00001 on the same instance and at u00002
    on ``second`` (if not None). One process, one selector: the three
    clocks are one."""
    sender = probe_client(first.port, 0)
    receivers = {"sender's own echo (s1)": sender, "same instance (s1)": probe_client(first.port, 1)}
    if second is not None:
        receivers["other instance (s2)"] = probe_client(second.port, 2)
    selector = selectors.DefaultSelector()
    for receiver, sock in receivers.items():
        selector.register(sock, selectors.EVENT_READ, receiver)
    delays = {receiver: [] for receiver in receivers}
    pending = {receiver: b"" for receiver in receivers}
    start = time.monotonic() + 0.2
    deadline = start + count / rate + 10
    sent = 0
    try:
        while time.monotonic() < deadline:
            while sent < count and time.monotonic() >= start + sent / rate:
                line = ("SAY T%d %s\n" % (time.monotonic_ns(), loadgen.PADDING)).encode()
                if sender.send(line) != len(line):
                    raise loadgen.LoadError("probe: the sender's socket is full")
                sent += 1
            if sent == count and all(len(found) >= count for found in delays.values()):
                break
            timeout = max(0.0, start + sent / rate - time.monotonic()) if sent < count else 0.1
            for key, _ in selector.select(timeout):
                data = key.fileobj.recv(65536)
                now_ns = time.monotonic_ns()
                if not data:
                    raise loadgen.LoadError("probe: %s closed by the server" % key.data)
                buf = pending[key.data] + data
                cut = buf.rfind(b"\n") + 1
                delays[key.data].extend((now_ns - int(stamp)) / 1e6 for stamp in PROBE_SAID.findall(buf, 0, cut))
                pending[key.data] = buf[cut:]
    finally:
        selector.close()
        for sock in receivers.values():
            sock.close()
    return delays


def print_notes(notes):
    """Under a table: what each sae-server run logged at exit."""
    notes = [note for note in notes if note]
    if notes:
        print("  sae-server at exit (its loop's counters over the whole run, logins and warm-up included):")
        for note in notes:
            print("  " + note)
    sys.stdout.flush()


# What strace prints for the storage thread waking the loop: one byte on the
# socketpair (Workers.wake), once per finished job; no logins run in the
# window, so every one is a storage batch.
WAKE = re.compile(r'sendto\(\d+, "[^"]*"(?:\.\.\.)?, 1, ')


def single_counters(args, workdir, generator):
    """Passes, batches and messages per batch, from outside, with strace on
    sae-servers of their own (ptrace slows what it traces, so not in a
    measured run). Two runs: every thread traced (the structure: send()
    calls per storage batch), then only the worker threads (the loop runs
    untraced, so batches per second and messages per batch are near the
    untraced regime's)."""
    seconds = args.single_strace
    print("\n## single messages: counters from outside (strace on a sae-server of its own, %.0f s each)" % seconds)
    strace = shutil.which("strace")
    if not strace:
        print("  skipped: strace is not installed (apt-get install strace)")
        return
    header = ("counter", "every thread traced", "worker threads traced, loop untraced")
    print("  closed loop driven by the %s generator" % generator_label(generator, args))
    if not SAE_DB:
        print("  note: on SQLite the loop stores each batch itself (no storage thread, no 1-byte wake-ups), so "
              "the batch counters below read about 0; the server's exit line (under the closed-loop table) counts "
              "batches and passes exactly")
    runs = [trace_single(args, workdir, strace, seconds, every_thread, generator) for every_thread in (True, False)]
    members = args.single_clients

    def each(render):
        return tuple(render(run) for run in runs)

    def per(a, b, form="%.2f"):
        return form % (a / b) if b else "n/a"

    rows = [
        ("traced span s", *each(lambda r: "%.2f" % r["span"])),
        ("messages/s, deliveries/s (untraced: the table above)",
         *each(lambda r: "%.0f, %.0f" % (r["f"]["messages_per_s"], r["f"]["deliveries_per_s"]))),
        ("loop iterations/s (the loop thread's epoll_wait)",
         *each(lambda r: "%.0f" % (r["iterations"] / r["span"]) if r["iterations"] else "not traced")),
        ("send() calls by the loop per message",
         *each(lambda r: per(r["loop_sends"], r["messages"], "%.1f") if r["loop_sends"] else "not traced")),
        ("send passes per message (send() calls / %d members / messages)" % members,
         *each(lambda r: per(r["loop_sends"] / members, r["messages"], "%.4f") if r["loop_sends"] else "not traced")),
        ("storage batches/s (the storage thread's 1-byte wake-ups)",
         *each(lambda r: "%.0f" % (r["wakes"] / r["span"]))),
        ("messages per batch", *each(lambda r: per(r["messages"], r["wakes"], "%.1f"))),
        ("send passes per batch",
         *each(lambda r: per(r["loop_sends"] / members, r["wakes"]) if r["loop_sends"] else "not traced")),
        ("batches in flight at once", "not visible from outside", "see benchmarks/README.md"),
    ]
    table(header, rows)


def trace_single(args, workdir, strace, seconds, every_thread, generator):
    server = Server("sae", workdir)
    out = os.path.join(workdir, "strace-%d.txt" % time.monotonic_ns())
    tracer = {}

    def on_window(phase):
        if phase == "start":
            if every_thread:
                targets = ["-f", "-p", str(server.pid)]
            else:  # the storage and hashing threads, not the loop (the main thread)
                targets = [a for tid in os.listdir("/proc/%d/task" % server.pid) if int(tid) != server.pid
                           for a in ("-p", tid)]
            tracer["process"] = subprocess.Popen(
                [strace, "-qq", "-ttt", "-s", "1", "-e", "trace=sendto,epoll_wait,epoll_pwait",
                 "-e", "signal=none", "-o", out] + targets, stderr=subprocess.DEVNULL)
        elif "process" in tracer:
            tracer["process"].send_signal(signal.SIGINT)  # detaches and flushes the file
            tracer["process"].wait(30)

    try:
        f = single_once(server, args, workdir, generator, seconds=seconds, on_window=on_window)
    finally:
        if "process" in tracer and tracer["process"].poll() is None:
            tracer["process"].kill()
        server.stop()
    loop_sends = wakes = iterations = 0
    first = last = None
    with open(out) as lines:
        for line in lines:
            fields = line.split(None, 2)
            if len(fields) < 3:
                continue
            if "." in fields[0]:  # one thread traced: no thread id in front
                tid, stamp, call = None, float(fields[0]), line.split(None, 1)[1]
            else:
                tid, stamp, call = int(fields[0]), float(fields[1]), fields[2]
            first = stamp if first is None else first
            last = stamp
            if call.startswith("sendto("):
                if tid == server.pid:
                    loop_sends += 1
                elif WAKE.match(call):
                    wakes += 1
            elif call.startswith("epoll_") and tid == server.pid:
                iterations += 1
    span = (last - first) if first is not None and last > first else float("nan")
    # The messages seen back in the window, scaled to the part strace saw
    # (it starts a moment after the window opens): the closed loop keeps
    # the rate steady.
    return dict(f=f, span=span, messages=f["messages"] * min(1.0, span / seconds), loop_sends=loop_sends,
                wakes=wakes, iterations=iterations)


def label(kind):
    return "sae-server" if kind == "sae" else "miniircd"


def table(header, rows):
    rows = [tuple(str(c) for c in row) for row in rows]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row + ("",) * (len(header) - len(row))) + " |")
    sys.stdout.flush()


SCENARIOS = {"tls": scenario_tls, "fanout": scenario_fanout, "latency": scenario_latency, "memory": scenario_memory,
             "storm": scenario_storm, "single": scenario_single, "kept": scenario_kept, "rooms": scenario_rooms,
             "ircfanout": scenario_ircfanout, "cluster": scenario_cluster}
DEFAULT_SCENARIOS = ["fanout", "latency", "memory", "storm"]  # what runs when none is named


def main(argv=None):
    parser = argparse.ArgumentParser(description="sae-chat load benchmarks against miniircd")
    parser.add_argument("scenarios", nargs="*",
                        help="any of %s (default: all but single, kept, rooms, ircfanout and cluster)"
                             % ", ".join(SCENARIOS))
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 200, 1000, 4000])
    parser.add_argument("--kept-clients", type=int, default=900, help="kept: clients in the login burst")
    parser.add_argument("--rooms-clients", type=int, default=1000,
                        help="rooms: clients, each in 3 of 50 rooms")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--latency-clients", type=int, default=1000)
    parser.add_argument("--latency-senders", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-sample", type=int, default=1,
                        help="only every Nth receiver reads during the latency load (1: all)")
    parser.add_argument("--latency-warmup", type=float, default=1.0)
    parser.add_argument("--latency-rounds", type=int, default=1,
                        help="latency: every generator against sae-server then miniircd, this many times")
    parser.add_argument("--generator", nargs="+", choices=["python", "c"],
                        help="loadgen.py and/or loadgen_c.c (built with cc), each in turn in every round, for "
                             "the fixed-load latency (latency, and single's fixed-load part; default: python) "
                             "and single's closed loop (default: c when cc or gcc is there, else python)")
    parser.add_argument("--c-procs", type=int, default=1,
                        help="single's closed loop with the C generator: processes the clients are dealt to")
    parser.add_argument("--memory-clients", type=int, nargs="+", default=[0, 1000, 4000])
    parser.add_argument("--storm-clients", type=int, default=500)
    parser.add_argument("--tls-idle", type=int, default=1000, help="tls: idle connections for the memory figure")
    parser.add_argument("--storm-chatters", type=int, default=100)
    parser.add_argument("--storm-rate", type=float, default=100.0)
    parser.add_argument("--storm-seconds", type=float, default=25.0)
    parser.add_argument("--single-clients", type=int, default=200, help="single: clients in the room")
    parser.add_argument("--single-senders", type=int, default=10)
    parser.add_argument("--single-window", type=int, default=loadgen.SINGLE_WINDOW,
                        help="single: messages each sender keeps outstanding")
    parser.add_argument("--single-warmup", type=float, default=2.0)
    parser.add_argument("--single-seconds", type=float, default=8.0)
    parser.add_argument("--single-rounds", type=int, default=2,
                        help="single: sae-server and miniircd alternately, this many times each")
    parser.add_argument("--single-latency-clients", type=int, default=1000,
                        help="single: clients of the fixed-load latency part (0: skip it)")
    parser.add_argument("--single-latency-senders", type=int, default=5)
    parser.add_argument("--single-latency-rate", type=float, default=100.0, help="messages/s in total")
    parser.add_argument("--single-latency-seconds", type=float, default=8.0)
    parser.add_argument("--single-strace", type=float, default=4.0,
                        help="single: seconds of strace on a sae-server of its own for the counters "
                             "(0: skip; skipped with a note when strace is missing)")
    parser.add_argument("--cluster-instances", type=int, nargs="+", default=[1, 2, 3],
                        help="cluster: how many instances, in turn (each run a fresh cluster and database; 0: "
                             "one server without --cluster, for comparison)")
    parser.add_argument("--cluster-parts", nargs="+", choices=["fanout", "latency", "probe"],
                        default=["fanout", "latency", "probe"], help="cluster: which measurements")
    parser.add_argument("--cluster-clients", type=int, nargs="+", default=[1000],
                        help="cluster: clients of the fan-out (--senders of them blasting)")
    parser.add_argument("--cluster-latency-clients", type=int, default=600)
    parser.add_argument("--cluster-latency-senders", type=int, default=10)
    parser.add_argument("--cluster-rate", type=float, default=100.0, help="cluster: fixed load, messages/s in total")
    parser.add_argument("--cluster-latency-seconds", type=float, default=10.0)
    parser.add_argument("--cluster-probe-messages", type=int, default=1000)
    parser.add_argument("--cluster-probe-rate", type=float, default=100.0)
    parser.add_argument("--irc-over-select", action="store_true",
                        help="run miniircd beyond 1000 connections too (it cannot: select())")
    parser.add_argument("--server-dir", default=ROOT,
                        help="run sae_server.py from this checkout (default: this one)")
    parser.add_argument("--sae-db", metavar="mysql://USER[:PASSWORD]@HOST:PORT/",
                        help="run sae-server on this MariaDB/MySQL server instead of SQLite: a database of its "
                             "own per server (sae_bench_<pid>_<n>, any name in the URL is replaced), dropped "
                             "afterwards (kept with --keep); the account needs CREATE and DROP")
    parser.add_argument("--keep", action="store_true", help="keep the server logs and databases")
    parser.add_argument("--pin", action="store_true",
                        help="run the servers on one CPU and the load generators on the others, as if the "
                             "clients were on other machines (MariaDB's own server is left where it is)")
    args = parser.parse_args(argv)
    global SERVER_DIR, SAE_DB, KEEP
    SERVER_DIR = os.path.abspath(args.server_dir)
    KEEP = args.keep
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error("unknown scenario: %s" % ", ".join(sorted(unknown)))
    if args.c_procs < 1:
        parser.error("--c-procs must be at least 1")
    if args.sae_db:
        if urlsplit(args.sae_db).scheme not in ("mysql", "mariadb"):
            parser.error("--sae-db takes a mysql:// URL (SQLite is the default)")
        SAE_DB = args.sae_db
    loadgen.raise_fd_limit()
    print("# sae-chat load benchmarks, %s, %d CPUs, python %s" % (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), os.cpu_count(), sys.version.split()[0]))
    print("# sae-server storage: %s" % storage_label(with_version=True))
    if args.pin:
        server_cpu, generator_cpus = pin_servers_apart()
        print("# --pin: servers on CPU %d, load generators on CPU %s" % (
            server_cpu, ", ".join(map(str, generator_cpus))))
    workdir = tempfile.mkdtemp(prefix="sae-bench-")
    try:
        for name in args.scenarios or DEFAULT_SCENARIOS:
            SCENARIOS[name](args, workdir)
    finally:
        if args.keep:
            on_mysql = ", and on %s: %s" % (describe_server(SAE_DB), " ".join(KEPT_DATABASES)) if KEPT_DATABASES else ""
            print("\nlogs and databases kept in %s%s" % (workdir, on_mysql))
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def describe_server(url):
    """host:port of a database URL, without the password."""
    parts = urlsplit(url)
    return "%s:%s" % (parts.hostname, parts.port or 3306)


def storage_label(with_version=False):
    if not SAE_DB:
        return "SQLite%s, a file per server in the temporary folder" % (
            " " + sqlite3.sqlite_version if with_version else "")
    version = ""
    if with_version:
        try:
            version = " " + mysql_version(SAE_DB)
        except Exception as error:  # MySQLdb's errors, or no mysqlclient: stop here, with what went wrong
            sys.exit("--sae-db: cannot reach %s: %s" % (describe_server(SAE_DB), error))
    return "MariaDB/MySQL%s at %s, a database per server (sae_bench_%d_<n>)" % (
        version, describe_server(SAE_DB), os.getpid())


if __name__ == "__main__":
    sys.exit(main())
