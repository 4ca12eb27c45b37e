"""How many messages per second each storage backend stores.

Stores the same messages three ways and prints messages per second:
  batched     append_messages() with --batch messages at a time, one
              transaction and one commit each, as the server does with the
              messages one loop iteration accepted;
  row-by-row  (MySQL only) the same batches, inserted one row per INSERT in
              the transaction instead of one multi-row INSERT;
  per-commit  append_messages() with one message at a time: a commit per
              message, what the server avoids.

    python benchmarks/bench_storage.py [--mysql-url mysql://root@127.0.0.1:3306/]

SQLite runs in a temporary folder. For MySQL, a URL without a database name
makes the benchmark create its own database (sae_bench_<pid>) and drop it
afterwards (the user needs CREATE and DROP); a URL with a name uses that
database as it is and leaves the messages in it. --mysql-url none skips it.
This is a measurement, not a test: the figures go in docs/BENCHMARKS.md.
"""

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

try:
    from sae_db import NewMessage, describe_url, open_store
except ImportError:  # run from a source tree that is not installed
    sys.exit("sae_db is not importable: pip install -e '.[mysql]' first")

AT = "2026-11-24T13:05:01.123Z"
# A typical chat line; about one in ten messages is private.
BODY = "see you at the club tonight, bring the slides and the projector cable 🎉"


def messages(account, count):
    for i in range(count):
        recipient = "bench2" if i % 10 == 9 else None
        yield NewMessage(account.id, account.name, recipient, "%d %s" % (i, BODY), AT)


def measure(store, account, count, batch_size):
    """Messages per second storing ``count`` messages ``batch_size`` at a time."""
    pending = list(messages(account, count))
    start = time.perf_counter()
    for first in range(0, count, batch_size):
        stored = store.append_messages(pending[first:first + batch_size])
        assert all(m is not None for m in stored)
    elapsed = time.perf_counter() - start
    return count / elapsed, elapsed


def run_backend(label, store, args, row_by_row=False):
    account = store.create_account("bench1", "h", AT) or store.find_account("bench1")
    if store.find_account("bench2") is None:
        store.create_account("bench2", "h", AT)
    store.append_messages(list(messages(account, 50)))  # warm up: connection, caches
    modes = [("batched (%d per commit)" % args.batch, args.messages, args.batch, True)]
    if row_by_row:
        modes.append(("batched, row by row", args.messages, args.batch, False))
    modes.append(("one commit per message", args.single_messages, 1, True))
    for mode, count, batch, one_insert in modes:
        if hasattr(store, "allow_multirow"):  # MySQL
            store.allow_multirow = one_insert
        rate, elapsed = measure(store, account, count, batch)
        print("%-8s %-26s %7d messages %7.2fs %9.0f messages/s" % (label, mode, count, elapsed, rate))
        sys.stdout.flush()


def bench_sqlite(args):
    with tempfile.TemporaryDirectory(prefix="sae-bench-") as folder:
        store = open_store("sqlite:///%s" % os.path.join(folder, "bench.db"))
        try:
            run_backend("SQLite", store, args)
        finally:
            store.close()


def bench_mysql(args):
    import MySQLdb
    from sae_db.mysql import connect_args
    url = args.mysql_url
    parts = urlsplit(url)
    own_database = not parts.path.strip("/")
    if own_database:
        database = "sae_bench_%d" % os.getpid()
        server_args = connect_args(urlunsplit(parts._replace(path="/" + database)))
        del server_args["database"]
        admin = MySQLdb.connect(**server_args)
        admin.autocommit(True)
        admin.cursor().execute("CREATE DATABASE `%s` CHARACTER SET utf8mb4" % database)
        url = urlunsplit(parts._replace(path="/" + database))
    try:
        store = open_store(url)
        try:
            server = MySQLdb.connect(**connect_args(url))
            cursor = server.cursor()
            cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@innodb_autoinc_lock_mode")
            version, flush, lock_mode = cursor.fetchone()
            server.close()
            print("MySQL    %s at %s, innodb_flush_log_at_trx_commit=%s, innodb_autoinc_lock_mode=%s"
                  % (version, describe_url(url), flush, lock_mode))
            run_backend("MySQL", store, args, row_by_row=True)
        finally:
            store.close()
    finally:
        if own_database:
            admin.cursor().execute("DROP DATABASE IF EXISTS `%s`" % database)
            admin.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mysql-url", default=os.environ.get("SAE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
                        help="a MariaDB/MySQL server or database, or 'none' (default: %(default)s)")
    parser.add_argument("--messages", type=int, default=20000, help="messages stored batched")
    parser.add_argument("--single-messages", type=int, default=2000, help="messages stored one commit each")
    parser.add_argument("--batch", type=int, default=50, help="messages per batch")
    args = parser.parse_args()
    print("%s, Python %s, SQLite %s, %s, %d CPUs" % (
        time.strftime("%Y-%m-%d %H:%M:%S %Z"), platform.python_version(), sqlite3.sqlite_version,
        platform.platform(), os.cpu_count() or 0))
    bench_sqlite(args)
    if args.mysql_url != "none":
        bench_mysql(args)


if __name__ == "__main__":
    main()
