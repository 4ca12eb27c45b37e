"""The two shared parts of a cluster of sae-server instances, measured
alone, for the capacity plan in docs/BENCHMARKS.md ("several servers"):

  chain    MariaDB: batches and messages per second stored by 1, 2, 3
           concurrent writers (processes, each with its own store, as each
           instance has one storage thread), at --batches sizes (1 10 100),
           with append_chained (what an instance in a cluster calls: every
           batch takes the chain's row lock and holds it until its COMMIT)
           beside append_messages (a single server: no lock, so concurrent
           commits can share one flush of the redo log);
  pubsub   Redis: publications per second one publisher pushes to N
           subscribers (--subscribers 1 3 10), each publication a link of
           1, 10, 100 messages built by sae_cluster.link_event, published
           one at a time as an instance's publisher thread does; each
           subscriber (a process) decodes every link as an instance does
           (sae_cluster.decode, then event_link), so its rate is what one
           instance can take in.

    python benchmarks/bench_cluster_parts.py                       # both, ~3 minutes
    python benchmarks/bench_cluster_parts.py chain --seconds 3
    python benchmarks/bench_cluster_parts.py pubsub --mysql-url none

The MariaDB part runs in a database of its own (sae_bench_parts_<pid>) on
--mysql-url, dropped afterwards; the Redis part starts a redis-server of its
own on a free port (nothing saved). Messages are the Storage section's (one
in ten private, about 80 bytes with an emoji). Every measurement is bounded
in time and stops by itself. A measurement, not a test.
"""

import argparse
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import bench_load  # noqa: E402  (the redis-server starter, CPU readings)
import loadgen  # noqa: E402
from bench_storage import AT, BODY, messages  # noqa: E402

try:
    import sae_cluster
    from sae_db import Message, open_store
except ImportError:  # run from a source tree that is not installed
    sys.exit("sae_db is not importable: pip install -e '.[mysql,cluster]' first")


def percentile(values, point):
    found, _ = loadgen.percentiles(values, (point,))
    return found[point]


# -- chain: MariaDB commits with and without the chain's lock ------------------

def writer(url, how, batch_size, start_at, stop_at, pipe):
    """One writer process: its own store, ``how`` ("append_chained" or
    "append_messages") with batches of ``batch_size`` from start_at to
    stop_at (time.monotonic, the same clock in every process)."""
    try:
        store = open_store(url)
        account = store.find_account("bench1")
        room_id = store.ensure_room("#general", AT).id
        batch = list(messages(account, batch_size, room_id))
        append = getattr(store, how)
        append(batch)  # warm up: connection, statements
        while time.monotonic() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        calls = []
        while True:
            began = time.monotonic()
            if began >= stop_at:
                break
            append(batch)
            calls.append(time.monotonic() - began)
        store.close()
        pipe.send(("done", calls))
    except Exception as error:  # report, do not hang the parent
        pipe.send(("error", "%s: %s" % (error.__class__.__name__, error)))


def bench_chain(args):
    import MySQLdb
    from sae_db.mysql import connect_args
    parts = urlsplit(args.mysql_url)
    database = "sae_bench_parts_%d" % os.getpid()
    url = urlunsplit(parts._replace(path="/" + database))
    server_args = connect_args(url)
    del server_args["database"]
    admin = MySQLdb.connect(**server_args)
    admin.autocommit(True)
    cursor = admin.cursor()
    cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@log_bin, @@sync_binlog, "
                   "@@innodb_autoinc_lock_mode")
    version, flush, log_bin, sync_binlog, lock_mode = cursor.fetchone()
    print("\n## chain: MariaDB %s at %s:%s, innodb_flush_log_at_trx_commit=%s, log_bin=%s, sync_binlog=%s, "
          "innodb_autoinc_lock_mode=%s; %.0f s per run after a warm-up call, writers start together" % (
              version, parts.hostname, parts.port or 3306, flush, log_bin, sync_binlog, lock_mode, args.seconds))
    cursor.execute("CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" % database)
    try:
        store = open_store(url)
        store.create_account("bench1", "h", AT)
        store.create_account("bench2", "h", AT)
        store.ensure_room("#general", AT)
        store.close()
        header = ("writers", "batch", "call", "batches/s", "messages/s", "call p50 ms", "call p99 ms",
                  "chained / plain", "mariadbd CPU", "fsyncs per batch", "loadavg")
        rows = []
        for writers in args.writers:
            for batch_size in args.batches:
                plain = None
                for how in ("append_messages", "append_chained"):
                    before = bench_load.loadavg()
                    fsyncs = fsync_count(cursor)
                    batches, calls, mariadb_cpu = run_writers(url, how, batch_size, writers, args.seconds)
                    fsyncs = fsync_count(cursor) - fsyncs
                    rate = batches / args.seconds
                    ratio = ""
                    if how == "append_messages":
                        plain = rate
                    elif plain:
                        ratio = "%.2f×" % (rate / plain)
                    rows.append((writers, batch_size, how, "%.0f" % rate, "%.0f" % (rate * batch_size),
                                 "%.2f" % (1000 * percentile(calls, 50)), "%.2f" % (1000 * percentile(calls, 99)),
                                 ratio, mariadb_cpu, "%.2f" % (fsyncs / batches) if batches else "n/a",
                                 "%s → %s" % (before, bench_load.loadavg())))
                    print("  %d writer(s), batch %d, %s: %.0f batches/s" % (writers, batch_size, how, rate))
                    sys.stdout.flush()
        bench_load.table(header, rows)
    finally:
        cursor.execute("DROP DATABASE IF EXISTS `%s`" % database)
        admin.close()


def fsync_count(cursor):
    """InnoDB's fsyncs so far, over the whole server: fewer than one per
    batch means commits shared a flush of the redo log (group commit).
    Whatever else uses the server adds to it, so it is an upper bound."""
    cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_data_fsyncs'")
    return int(cursor.fetchone()[1])


def run_writers(url, how, batch_size, count, seconds):
    """(batches stored by all, every call's duration, mariadbd's CPU share
    meanwhile) for ``count`` writers."""
    context = multiprocessing.get_context("fork")
    start_at = time.monotonic() + 1.5  # every writer connected and warmed up by then
    stop_at = start_at + seconds
    pipes, processes = [], []
    for _ in range(count):
        mine, theirs = context.Pipe()
        process = context.Process(target=writer, args=(url, how, batch_size, start_at, stop_at, theirs),
                                  daemon=True)
        process.start()
        pipes.append(mine)
        processes.append(process)
    calls = []
    mariadb = bench_load.database_server_pid()
    try:
        mariadb_cpu = "n/a"
        if mariadb:
            time.sleep(max(0.0, start_at - time.monotonic()))
            before = bench_load.cpu_seconds(mariadb)
            time.sleep(max(0.0, stop_at - time.monotonic()))
            mariadb_cpu = "%.0f %%" % (100 * (bench_load.cpu_seconds(mariadb) - before) / seconds)
        for found in results_of(pipes, seconds + 30, "writer"):
            calls.extend(found)
    finally:
        reap(processes)
    return len(calls), calls, mariadb_cpu


def results_of(pipes, timeout, what):
    """What each child process sent back through its pipe, in order."""
    results = []
    for pipe in pipes:
        if not pipe.poll(timeout):
            raise RuntimeError("a %s did not finish" % what)
        kind, found = pipe.recv()
        if kind == "error":
            raise RuntimeError("a %s failed: %s" % (what, found))
        results.append(found)
    return results


def reap(processes):
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


# -- pubsub: Redis carrying links to N instances ----------------------------------

CHANNEL = "sae-chat:bench"
STOP = b"stop"


def a_link(size, first_id):
    """A link of ``size`` room messages, as an instance publishes it."""
    stored = [(Message(first_id + i, AT, "u%05d" % (i % 1000), None, "%d %s" % (i, BODY), "#general"), 1)
              for i in range(size)]
    return sae_cluster.Link(first_id - 1, first_id + size - 1, stored)


def subscriber(url, pipe, deadline):
    """One subscriber process: says "ready" once subscribed, then decodes
    every publication as an instance does until STOP, and reports what it
    got, when the first and last came, and its CPU time."""
    import redis
    try:
        client = redis.Redis.from_url(url)
        subscription = client.pubsub()
        subscription.subscribe(CHANNEL)
        while subscription.get_message(timeout=5) is None:
            pass  # the subscribe confirmation
        pipe.send(("ready", None))
        received, first, last, cut = 0, None, None, None
        while time.monotonic() < deadline:
            try:
                heard = subscription.get_message(timeout=1.0)
            except redis.RedisError as error:
                cut = "%s: %s" % (error.__class__.__name__, error)  # e.g. Redis's output buffer limit
                break
            if heard is None or heard["type"] != "message":
                continue
            if heard["data"] == STOP:
                break
            event = sae_cluster.decode(heard["data"])
            sae_cluster.event_link(event)
            now = time.monotonic()
            first = first if first is not None else now
            last = now
            received += 1
        usage = os.times()
        pipe.send(("done", dict(received=received, first=first, last=last, cut=cut,
                                cpu=usage.user + usage.system)))
    except Exception as error:
        pipe.send(("error", "%s: %s" % (error.__class__.__name__, error)))


def bench_pubsub(args):
    import redis
    workdir = tempfile.mkdtemp(prefix="sae-bench-")
    server = bench_load.RedisServer(workdir)
    try:
        print("\n## pubsub: Redis %s of its own (127.0.0.1:%d, default client-output-buffer-limit), one publisher "
              "(one PUBLISH per round trip, as an instance's publisher thread), N subscriber processes decoding "
              "each link (decode + event_link); at most %.0f s or %d MB published per run" % (
                  server.version, server.port, args.seconds, args.pubsub_megabytes))
        header = ("subscribers", "link of", "payload bytes", "published/s", "received/s (slowest)",
                  "messages/s carried", "lost or late", "Redis CPU µs/pub", "subscriber CPU µs/pub",
                  "publisher CPU µs/pub", "loadavg")
        rows = []
        for subscribers in args.subscribers:
            for size in args.links:
                before = bench_load.loadavg()
                f = pubsub_once(redis, server, subscribers, size, args.seconds, args.pubsub_megabytes)
                slowest = min(f["received_rates"])
                rows.append((subscribers, size, f["payload"], "%.0f" % f["published_rate"], "%.0f" % slowest,
                             "%.0f" % (slowest * size), f["lost"],
                             "%.1f" % (1e6 * f["redis_cpu"] / f["published"]),
                             "%.1f" % (1e6 * f["subscriber_cpu"] / f["published"]),
                             "%.1f" % (1e6 * f["publisher_cpu"] / f["published"]),
                             "%s → %s" % (before, bench_load.loadavg())))
                print("  %d subscriber(s), links of %d: %.0f published/s, slowest subscriber %.0f/s%s" % (
                    subscribers, size, f["published_rate"], slowest,
                    "; cut: %s" % f["cuts"][:1] if f["cuts"] else ""))
                sys.stdout.flush()
        bench_load.table(header, rows)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pubsub_once(redis, server, count, size, seconds, megabytes):
    payload = sae_cluster.link_event("s1", a_link(size, 1000)).encode()
    context = multiprocessing.get_context("fork")
    deadline = time.monotonic() + seconds + 60
    pipes, processes = [], []
    for _ in range(count):
        mine, theirs = context.Pipe()
        process = context.Process(target=subscriber, args=(server.url, theirs, deadline), daemon=True)
        process.start()
        pipes.append(mine)
        processes.append(process)
    try:
        for pipe in pipes:
            if not pipe.poll(30) or pipe.recv()[0] != "ready":
                raise RuntimeError("a subscriber did not subscribe")
        client = redis.Redis.from_url(server.url)
        limit = max(1, int(megabytes * 1024 * 1024 / len(payload)))
        published = 0
        redis_before = bench_load.cpu_seconds(server.pid)
        cpu_before = os.times()
        began = time.monotonic()
        stop_at = began + seconds
        while published < limit and time.monotonic() < stop_at:
            client.publish(CHANNEL, payload)
            published += 1
        took = time.monotonic() - began
        cpu_after = os.times()
        client.publish(CHANNEL, STOP)
        results = results_of(pipes, seconds + 70, "subscriber")
        redis_cpu = bench_load.cpu_seconds(server.pid) - redis_before
        client.close()
    finally:
        reap(processes)
    rates = []
    for found in results:
        span = (found["last"] - found["first"]) if found["received"] > 1 else 0.0
        # A subscriber that kept up received at the publisher's pace; one
        # that lagged, at its own (first to last publication it decoded).
        rates.append(found["received"] / max(span, took) if found["received"] else 0.0)
    return dict(payload=len(payload), published=published, published_rate=published / took,
                received_rates=rates, lost=sum(published - found["received"] for found in results),
                cuts=[found["cut"] for found in results if found["cut"]], redis_cpu=redis_cpu,
                subscriber_cpu=sum(found["cpu"] for found in results) / len(results),
                publisher_cpu=(cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", help="chain, pubsub (default: both)")
    parser.add_argument("--mysql-url", default=os.environ.get("SAE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
                        help="the MariaDB server for chain (a database of its own is made and dropped)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 100], help="messages per batch")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--links", type=int, nargs="+", default=[1, 10, 100], help="messages per link")
    parser.add_argument("--pubsub-megabytes", type=float, default=24.0,
                        help="publish at most this much per run: under Redis's default 32 MB output buffer "
                             "limit for a subscriber, so that a slow one is measured, not cut")
    args = parser.parse_args()
    parts = args.parts or ["chain", "pubsub"]
    if set(parts) - {"chain", "pubsub"}:
        parser.error("the parts are chain and pubsub")
    print("# sae-chat cluster parts, %s, %d CPUs, %s, Python %s" % (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), os.cpu_count() or 0, platform.platform(),
        platform.python_version()))
    if "chain" in parts:
        bench_load.SAE_DB = args.mysql_url
        bench_chain(args)
    if "pubsub" in parts:
        bench_pubsub(args)


if __name__ == "__main__":
    main()
