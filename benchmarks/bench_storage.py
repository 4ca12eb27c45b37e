"""How many messages per second each storage backend stores, and (with
--rooms) how long history reads take at a million messages.

Stores the same messages three ways and prints messages per second:
  batched     append_messages() with --batch messages at a time, one
              transaction and one commit each, as the server does with the
              messages one loop iteration accepted;
  row-by-row  (MySQL only) the same batches, inserted one row per INSERT in
              the transaction instead of one multi-row INSERT;
  per-commit  append_messages() with one message at a time: a commit per
              message, what the server avoids.
Room messages go to #general by its id, as the server sends them; the
private ones all to one account, or with --peers N to N accounts in turn
(each a conversation of its own, kept in the same transaction).

    python benchmarks/bench_storage.py [--mysql-url mysql://root@127.0.0.1:3306/] [--peers 1]

--rooms instead fills a store with --rooms-messages messages (default one
million: 200 accounts, 50 rooms, each account in 3 of them, one message in
ten private, one every 10 ms of the messages' time), then times every
history read the server makes (a room's last 50, before and after an id; a
conversation's; everything an account missed after a short and a long
absence; a moment as ids, for CHATHISTORY's timestamp=; an account's
CHATHISTORY TARGETS over all of its history and over its last hour) over
--reads different rooms, accounts and ids, and prints each query plan
(SQLite EXPLAIN QUERY PLAN, MariaDB EXPLAIN) and the median and slowest
time. A read the sae_db on the path does not have (an older one, for a
before/after) is left out:

    python benchmarks/bench_storage.py --rooms [--rooms-messages 1000000]

SQLite runs in a temporary folder. For MySQL, a URL without a database name
makes the benchmark create its own database (sae_bench_<pid>) and drop it
afterwards (the user needs CREATE and DROP); a URL with a name uses that
database as it is and leaves the messages in it. --mysql-url none skips it.
This is a measurement, not a test: the figures go in docs/BENCHMARKS.md.
"""

import argparse
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

try:
    from sae_db import NewMessage, describe_url, open_store, sql
except ImportError:  # run from a source tree that is not installed
    sys.exit("sae_db is not importable: pip install -e '.[mysql]' first")

AT = "2026-11-24T13:05:01.123Z"
# --rooms: the first message's time, and the time between two messages.
FILL_START = 1796130000000  # 2026-12-01T13:00:00.000Z, in milliseconds
FILL_STEP_MS = 10
# A typical chat line; about one in ten messages is private.
BODY = "see you at the club tonight, bring the slides and the projector cable 🎉"


def messages(account, count, room_id, peers=1):
    """``count`` messages from ``account``, one in ten private: to bench2,
    or in turn to each of ``peers`` accounts (bench2, bench-peer1 ...)."""
    for i in range(count):
        if i % 10 == 9:
            recipient = peer_name(i // 10 % peers)
            yield NewMessage(account.id, account.name, recipient, "%d %s" % (i, BODY), AT)
        else:
            yield NewMessage(account.id, account.name, None, "%d %s" % (i, BODY), AT, room_id)


def peer_name(number):
    return "bench-peer%d" % number if number else "bench2"


def measure(store, account, count, batch_size, room_id, peers=1):
    """Messages per second storing ``count`` messages ``batch_size`` at a time."""
    pending = list(messages(account, count, room_id, peers))
    start = time.perf_counter()
    for first in range(0, count, batch_size):
        stored = store.append_messages(pending[first:first + batch_size])
        assert all(m is not None for m in stored)
    elapsed = time.perf_counter() - start
    return count / elapsed, elapsed


def run_backend(label, store, args, row_by_row=False):
    account = store.create_account("bench1", "h", AT) or store.find_account("bench1")
    for number in range(args.peers):
        if store.find_account(peer_name(number)) is None:
            store.create_account(peer_name(number), "h", AT)
    room_id = store.ensure_room("#general", AT).id
    store.append_messages(list(messages(account, 50, room_id)))  # warm up: connection, caches
    modes = [("batched (%d per commit)" % args.batch, args.messages, args.batch, True)]
    if row_by_row:
        modes.append(("batched, row by row", args.messages, args.batch, False))
    modes.append(("one commit per message", args.single_messages, 1, True))
    for mode, count, batch, one_insert in modes:
        if hasattr(store, "allow_multirow"):  # MySQL
            store.allow_multirow = one_insert
        rate, elapsed = measure(store, account, count, batch, room_id, args.peers)
        print("%-8s %-26s %7d messages %7.2fs %9.0f messages/s" % (label, mode, count, elapsed, rate))
        sys.stdout.flush()


# -- rooms: history reads at a million messages ------------------------------

ROOMS = 50
ACCOUNTS = 200
ROOMS_PER_ACCOUNT = 3


def fill(store, args):
    """Accounts, rooms and --rooms-messages messages, the same on every
    backend (a fixed seed); returns (accounts, rooms, {account id: its rooms})."""
    chance = random.Random(13)
    rooms = [store.ensure_room("#room%02d" % i, AT) for i in range(ROOMS)]
    accounts = [store.create_account("user%03d" % i, "h", AT) or store.find_account("user%03d" % i)
                for i in range(ACCOUNTS)]
    rooms_of = {}
    for account in accounts:
        rooms_of[account.id] = chance.sample(rooms, ROOMS_PER_ACCOUNT)
        for room in rooms_of[account.id]:
            store.join_room(account.id, room.id, AT)
    start = time.perf_counter()
    batch = []
    for i in range(args.rooms_messages):
        sender = chance.choice(accounts)
        at = moment(i)
        if chance.random() < 0.1:
            peer = chance.choice(accounts)
            batch.append(NewMessage(sender.id, sender.name, peer.name, "%d %s" % (i, BODY), at))
        else:
            room = chance.choice(rooms_of[sender.id])
            batch.append(NewMessage(sender.id, sender.name, None, "%d %s" % (i, BODY), at, room.id))
        if len(batch) == 1000:
            store.append_messages(batch)
            batch = []
    if batch:
        store.append_messages(batch)
    print("filled with %d messages in %.1fs" % (args.rooms_messages, time.perf_counter() - start))
    sys.stdout.flush()
    return accounts, rooms, rooms_of


def moment(i):
    """The time of the i-th message of the fill, in the store's form."""
    ms = FILL_START + i * FILL_STEP_MS
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def timed(call, arguments):
    """(median, slowest) milliseconds of ``call(*a)`` for each a in arguments."""
    times = []
    for each in arguments:
        start = time.perf_counter()
        call(*each)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2], times[-1]


def run_rooms(label, store, args, explain):
    """``explain(statement, parameters)`` -> the plan's lines."""
    accounts, rooms, rooms_of = fill(store, args)
    last = store.room_history(1, room_id=rooms[0].id)[-1].id
    chance = random.Random(7)
    reads = args.reads

    def some_ids():
        return [chance.randrange(last // 10, last) for _ in range(reads)]

    def some_rooms():
        return [chance.choice(rooms).id for _ in range(reads)]

    def some_pairs():
        return [(chance.choice(accounts).id, chance.choice(accounts).id) for _ in range(reads)]

    ids, room_ids, pairs = some_ids(), some_rooms(), some_pairs()
    readers = [chance.choice(accounts).id for _ in range(reads)]
    cases = [
        ("room: last 50", store.room_history, [(50, None, None, r) for r in room_ids],
         sql.room_history_query(rooms[0].id, 50)),
        ("room: 50 before an id", store.room_history, [(50, i, None, r) for i, r in zip(ids, room_ids)],
         sql.room_history_query(rooms[0].id, 50, before=ids[0])),
        ("room: 50 after an id", store.room_history, [(50, None, i, r) for i, r in zip(ids, room_ids)],
         sql.room_history_query(rooms[0].id, 50, after=ids[0])),
        ("conversation: last 50", store.conversation_history, [(a, b, 50) for a, b in pairs],
         sql.conversation_query(pairs[0][0], pairs[0][1], 50)),
        ("conversation: 50 before an id", store.conversation_history,
         [(a, b, 50, i) for (a, b), i in zip(pairs, ids)],
         sql.conversation_query(pairs[0][0], pairs[0][1], 50, before=ids[0])),
        ("conversation: 50 after an id", store.conversation_history,
         [(a, b, 50, None, i) for (a, b), i in zip(pairs, ids)],
         sql.conversation_query(pairs[0][0], pairs[0][1], 50, after=ids[0])),
        ("missed: 1000 after the last 5000", store.missed, [(a, last - 5000, 1000) for a in readers],
         sql.missed_query(readers[0], [r.id for r in rooms_of[readers[0]]], last - 5000, 1000)),
        ("missed: 1000 after an id far back", store.missed, [(a, i, 1000) for a, i in zip(readers, ids)],
         sql.missed_query(readers[0], [r.id for r in rooms_of[readers[0]]], ids[0], 1000)),
    ]
    times = [moment(chance.randrange(args.rooms_messages)) for _ in range(reads)]
    last_hour = moment(args.rooms_messages - 360000)
    cases += [
        ("a moment as ids (ids_at)", store.ids_at, [(at,) for at in times],
         (sql.MESSAGE_AT_OR_BELOW, [ids[0]], False) if hasattr(sql, "MESSAGE_AT_OR_BELOW")
         else (sql.LAST_ID_UNTIL, [times[0]], False)),
    ]
    if hasattr(sql, "targets_query"):
        targets_of = [(a, [r.id for r in rooms_of[a]]) for a in readers]
        cases += [
            ("targets: 100, all history", store.targets, [(a, r, None, None, 100) for a, r in targets_of],
             sql.targets_query(readers[0], targets_of[0][1], None, None, 100)),
            ("targets: 100, the last hour", store.targets, [(a, r, last_hour, None, 100) for a, r in targets_of],
             sql.targets_query(readers[0], targets_of[0][1], last - 360000, None, 100)),
        ]
    for what, call, arguments, (statement, parameters, _) in cases:
        median, slowest = timed(call, arguments)
        print("%-8s %-36s %d reads  median %7.3f ms  slowest %7.3f ms" % (label, what, reads, median, slowest))
        for line in explain(statement, parameters):
            print("           plan: %s" % line)
        sys.stdout.flush()
    # The hot path on a big table: the server's batches, as in the other mode.
    account = accounts[0]
    if store.find_account("bench2") is None:
        store.create_account("bench2", "h", AT)
    rate, elapsed = measure(store, account, args.messages, args.batch, rooms_of[account.id][0].id)
    print("%-8s %-36s %7d messages %7.2fs %9.0f messages/s" % (
        label, "batched (%d per commit), 1M stored" % args.batch, args.messages, elapsed, rate))


def sqlite_plan(store):
    def explain(statement, parameters):
        return [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                if "PRIMARY KEY (rowid=?)" not in row[3]]
    return explain


def mysql_plan(store):
    from sae_db.mysql import _to_datetime

    def explain(statement, parameters):
        # A moment as the store hands it to MariaDB: a DATETIME, not text.
        parameters = [_to_datetime(p) if isinstance(p, str) else p for p in parameters]

        def run(cursor):
            cursor.execute("EXPLAIN " + sql.for_mysql(statement), parameters)
            return cursor.fetchall()
        # id, select_type, table, type, key, rows, Extra: what says whether it scans.
        return ["%s %s %s type=%s key=%s rows=%s %s" % (row[0], row[1], row[2], row[3], row[5], row[8], row[9])
                for row in store._run(run) if row[2] not in ("s", "r", "g")]
    return explain


def bench_sqlite(args):
    with tempfile.TemporaryDirectory(prefix="sae-bench-") as folder:
        store = open_store("sqlite:///%s" % os.path.join(folder, "bench.db"))
        try:
            if args.rooms:
                run_rooms("SQLite", store, args, sqlite_plan(store))
            else:
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
            if args.rooms:
                run_rooms("MySQL", store, args, mysql_plan(store))
            else:
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
    parser.add_argument("--peers", type=int, default=1,
                        help="accounts the private messages go to in turn (default 1: all to bench2)")
    parser.add_argument("--rooms", action="store_true",
                        help="time history reads at --rooms-messages messages instead")
    parser.add_argument("--rooms-messages", type=int, default=1000000, help="messages stored before reading")
    parser.add_argument("--reads", type=int, default=200, help="reads timed per kind of read")
    parser.add_argument("--sqlite", default="yes", choices=("yes", "no"), help="run SQLite too (default yes)")
    args = parser.parse_args()
    print("%s, Python %s, SQLite %s, %s, %d CPUs" % (
        time.strftime("%Y-%m-%d %H:%M:%S %Z"), platform.python_version(), sqlite3.sqlite_version,
        platform.platform(), os.cpu_count() or 0))
    if args.sqlite == "yes":
        bench_sqlite(args)
    if args.mysql_url != "none":
        bench_mysql(args)


if __name__ == "__main__":
    main()
