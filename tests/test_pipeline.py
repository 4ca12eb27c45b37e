"""Two batches of messages stored at once on MariaDB (issue 11), end to end.

A server alone on its database hands the next batch to storage while the
last one is still being written, on a second connection; the store gives
the ids itself, reserved in the order the batches were made (see
db/mysql.py and sae_server.StorageThreads). What held with one batch at a
time must still hold, and these tests look for it from the clients' side,
on a real sae-server and a real MariaDB: every receiver gets every message
once and in id order; a LOGIN's history burst meets the live messages
without a gap or a repeat; a room deleted while its members talk takes
every message stored before with it and refuses the rest, with no storage
error; and when the database goes away under two batches, nothing
acknowledged is lost and the refused messages are answered as such.

Nothing sleeps to synchronise: clients wait for the lines they expect; what
happens inside the database (a batch waiting for a lock) is polled for.
"""

import re
import subprocess
import sys
import threading
import types

import sae_server
from conftest import TIMEOUT, ServerProcess, account_client
from mysql_fixtures import accounts_held, mysql_connect, wait_for, inserting_in

MSG = re.compile(r"MSG (\d+) \S+ (\S+) (.*)\Z")
RMSG = re.compile(r"RMSG (\d+) \S+ #club (\S+) (.*)\Z")
PRIV = re.compile(r"PRIV (\d+) \S+ (\S+) \S+ (.*)\Z")
SENDERS = 6
EACH = 100
WINDOW = 4


# --- the storage threads' rule, alone -----------------------------------------

def gated(name, log):
    """A job that notes when it starts, waits for its gate, and notes when it ends."""
    gate = threading.Event()

    def job():
        log.append("%s started" % name)
        assert gate.wait(TIMEOUT)
        log.append("%s ended" % name)
        return name
    return job, gate


def test_two_batches_run_at_once_and_anything_else_alone():
    storage = sae_server.StorageThreads(2)
    try:
        log = []
        jobs = {name: gated(name, log) for name in ("batch 1", "batch 2", "read", "batch 3")}
        futures = {name: storage.submit(job, batch=name.startswith("batch")) for name, (job, _) in jobs.items()}
        wait_for(lambda: len(log) == 2, "two batches started")
        assert sorted(log) == ["batch 1 started", "batch 2 started"]
        jobs["batch 1"][1].set()
        futures["batch 1"].result(TIMEOUT)
        # The read waits for every batch before it, the next batch for the read.
        assert log[2:] == ["batch 1 ended"] and not futures["read"].running()
        jobs["batch 2"][1].set()
        wait_for(lambda: "read started" in log, "the read started")
        assert log[3:] == ["batch 2 ended", "read started"] and not futures["batch 3"].running()
        jobs["read"][1].set()
        jobs["batch 3"][1].set()
        assert futures["batch 3"].result(TIMEOUT) == "batch 3"
        assert log[5:] == ["read ended", "batch 3 started", "batch 3 ended"]
    finally:
        for _, gate in jobs.values():
            gate.set()
        storage.shutdown()


def test_the_loop_gets_storage_jobs_back_in_the_order_they_were_handed_over():
    workers = sae_server.Workers(1, storage_threads=2)
    try:
        log = []
        first, first_gate = gated("first", log)
        workers.submit("storage", "first", first, batch=True)
        workers.submit("storage", "second", lambda: "second", batch=True)
        workers.storage_pending[1][1].result(TIMEOUT)
        wait_for(lambda: workers.done, "the second handed back")
        assert list(workers.completed()) == [] and workers.storage_jobs == 2  # held behind the first
        first_gate.set()
        workers.storage_pending[0][1].result(TIMEOUT)
        wait_for(lambda: workers.done, "the first handed back")
        assert [(context, future.result()) for _, context, future in workers.completed()] == [
            ("first", "first"), ("second", "second")]
        assert workers.storage_jobs == 0
    finally:
        first_gate.set()
        workers.close(types.SimpleNamespace(close=lambda: None))


# --- a real server on a real MariaDB ---------------------------------------------

def said(client, count, pattern=MSG):
    """The next ``count`` messages the client gets, as (id, sender, text)."""
    found = []
    while len(found) < count:
        match = pattern.match(client.next())
        if match:
            found.append((int(match.group(1)), match.group(2), match.group(3)))
    return found


def parsed(lines, pattern=MSG):
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in map(pattern.match, lines) if m]


def talk(senders, line, pattern):
    """Each sender (name, client), on a thread of its own, says EACH lines
    (``line % (name, n)``) in a closed loop, as the benchmark's senders do:
    WINDOW of them outstanding, each in a send() of its own, the next once
    one is answered (its own message back, ``pattern``, or an ERR).
    Returns a function that waits for them all and gives each one's lines."""
    read = {name: [] for name, _ in senders}

    def say_all(client, name):
        sent = answered = 0
        while answered < EACH:
            while sent < EACH and sent - answered < WINDOW:
                client.send(line % (name, sent))
                sent += 1
            text = client.next()
            read[name].append(text)
            own = pattern.match(text)
            answered += (own is not None and own.group(2) == name) or text.startswith("ERR ")

    threads = [threading.Thread(target=say_all, args=(client, name), daemon=True) for name, client in senders]
    for thread in threads:
        thread.start()

    def finished():
        for thread in threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "a sender never got all its answers"
        return [read[name] for name, _ in senders]
    return finished


def batches_beside_another(server):
    """Stop the server; how many of its batches were handed to storage
    while another was being stored (its last log line says)."""
    server.stop()
    found = re.search(r"stored in \d+ batches \([\d.]+ per batch\), (\d+) of them beside another", "".join(server.log))
    return int(found.group(1)) if found else 0


def in_order_once(messages):
    ids = [message_id for message_id, _, _ in messages]
    return ids == sorted(set(ids))


def talk_with_two_batches_in_flight(mysql_url, senders, others, line, pattern):
    """talk(), from two batches in flight for sure: the senders' first batch
    waits inside MariaDB (their accounts' rows held) until the loop has
    handed a second one beside it. Left to timing, a run now and then had
    none, and the test proved nothing about two at once."""
    with accounts_held(mysql_url, [name for name, _ in senders]):
        # A batch just before, from someone else: the first after a quiet
        # second goes alone, numbered by the database.
        others[0].send("SAY warming up")
        for client in [client for _, client in senders] + others:
            assert said(client, 1)[0][2] == "warming up"
        finished = talk(senders, line, pattern)
        wait_for(lambda: len(inserting_in(mysql_url)) == 2, "a second batch stored beside the first")
    return finished


def senders_of(server):
    return [("sender%d" % n, account_client(server, "sender%d" % n)) for n in range(SENDERS)]


def test_every_receiver_gets_every_message_once_in_id_order(tmp_path, mysql_url):
    server = ServerProcess(tmp_path, db_url=mysql_url).start()
    try:
        senders = senders_of(server)
        readers = [account_client(server, "reader%d" % n) for n in range(2)]
        finished = talk_with_two_batches_in_flight(mysql_url, senders, readers, "SAY %s %d", MSG)
        seen = [said(reader, SENDERS * EACH) for reader in readers]
        heard = [parsed(lines) for lines in finished()]
    finally:
        overlapped = batches_beside_another(server)
    assert seen[0] == seen[1]
    assert in_order_once(seen[0]), "ids strictly increasing, each once"
    for (name, _), theirs in zip(senders, heard):
        # Each one's messages in the order it said them; what a sender got
        # is what everyone got, as far as it read.
        assert [text for _, sender, text in seen[0] if sender == name] == ["%s %d" % (name, n) for n in range(EACH)]
        assert theirs == seen[0][:len(theirs)]
    assert overlapped > 0, "the test never had two batches in flight"


def test_private_messages_from_many_at_once_reach_their_reader_once_in_order(tmp_path, mysql_url):
    # Batches of private messages also update each conversation's latest
    # message: two at once lock the same rows, and wait for each other.
    server = ServerProcess(tmp_path, db_url=mysql_url).start()
    try:
        senders = senders_of(server)
        reader = account_client(server, "reader")
        finished = talk_with_two_batches_in_flight(mysql_url, senders, [reader], "TELL reader %s %d", PRIV)
        seen = said(reader, SENDERS * EACH, PRIV)
        lines = finished()
    finally:
        overlapped = batches_beside_another(server)
    assert in_order_once(seen), "ids strictly increasing, each once"
    for (name, _), theirs in zip(senders, lines):
        assert not [line for line in theirs if line.startswith("ERR ")]
        assert [text for _, sender, text in seen if sender == name] == ["%s %d" % (name, n) for n in range(EACH)]
    assert overlapped > 0, "the test never had two batches in flight"


def test_a_login_while_everyone_talks_gets_each_message_once(tmp_path, mysql_url):
    # The newcomer's history (the last 20) is read while batches are in
    # flight; what it does not hold must come live, and nothing twice.
    server = ServerProcess(tmp_path, "--history", "20", db_url=mysql_url).start()
    try:
        senders = senders_of(server)
        watcher = account_client(server, "watcher")
        newcomer = server.client()
        newcomer.register("newcomer")
        finished = talk(senders, "SAY %s %d", MSG)
        seen = said(watcher, 100)
        newcomer.send("LOGIN newcomer password1")
        newcomer.expect(r"OK LOGIN ")
        seen += said(watcher, SENDERS * EACH - len(seen))
        burst = newcomer.lines_until(r"OK HISTORY \d+")
        got = parsed(burst)
        while got[-1] != seen[-1]:
            got += parsed([newcomer.next()])
        finished()
    finally:
        server.stop()
    assert in_order_once(got), "nothing twice"
    start = seen.index(got[0])
    assert got == seen[start:], "nothing missed between the history and the live messages"
    assert 0 < len(parsed(burst)) < len(got), "logged in while the room was busy: history, then live messages"


def admin(path, *command):
    return subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", path] + list(command),
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_a_room_deleted_while_its_members_talk(tmp_path, mysql_url):
    path = str(tmp_path / "admin.sock")
    server = ServerProcess(tmp_path, "--admin-socket", path, db_url=mysql_url).start()
    try:
        senders = senders_of(server)
        watcher = account_client(server, "watcher")
        for _, client in senders + [("watcher", watcher)]:
            client.send("JOIN #club")
            client.expect(r"OK JOIN #club")
        finished = talk(senders, "RSAY #club %s %d", RMSG)
        said(watcher, 50, RMSG)
        deleted = admin(path, "delete-room", "#club", "delete-history")
        assert deleted.returncode == 0 and deleted.stdout.startswith("deleted #club, history deleted"), deleted
        for (name, client), lines in zip(senders, finished()):
            # Each line is answered once: its echo while the room was
            # there, then ERR 404; never a storage error.
            errors = [line for line in lines if line.startswith("ERR ")]
            assert set(errors) <= {"ERR 404 no such room #club, or you are not in it"}, errors
            echoed = [text for _, sender, text in parsed(lines, RMSG) if sender == name]
            assert echoed == ["%s %d" % (name, n) for n in range(EACH - len(errors))]
            client.send("PING after")
            assert not [line for line in client.lines_until(r"PONG after\Z")
                        if line.startswith("ERR ") or line.startswith("RMSG ") and " %s " % name in line]
        db = mysql_connect(mysql_url)
        try:
            cursor = db.cursor()
            cursor.execute("SELECT COUNT(*) FROM messages")
            assert cursor.fetchone()[0] == 0, "the room's history went with it, and nothing was stored after"
        finally:
            db.close()
    finally:
        server.stop()
    log = "".join(server.log)
    assert " ERROR " not in log and "storage unavailable" not in log, log


def test_an_outage_under_two_batches_loses_nothing_acknowledged(tmp_path, mysql_url, mysql_proxy):
    server = ServerProcess(tmp_path, db_url=mysql_proxy.url(mysql_url)).start()
    try:
        alice, bob, carol = (account_client(server, name) for name in ("alice", "bob", "carol"))
        # alice's and bob's next messages wait inside MariaDB, as two
        # batches, each on a connection of its own. (carol speaks first: a
        # batch after a quiet second goes alone, numbered by the database.)
        with accounts_held(mysql_url, ["alice", "bob"]) as holder:
            carol.send("SAY before")
            for client in (alice, bob, carol):
                assert said(client, 1)[0][1:] == ("carol", "before")
            alice.send("SAY held one")
            wait_for(lambda: len(inserting_in(mysql_url)) == 1, "alice's batch waiting in MariaDB")
            bob.send("SAY held two")
            wait_for(lambda: len(inserting_in(mysql_url)) == 2, "bob's batch waiting beside it")
            stranded = inserting_in(mysql_url)
            mysql_proxy.cut()
            # Each is told its message was not stored: neither acknowledged.
            for client in (alice, bob):
                assert client.expect(r"ERR .*").group(0) == "ERR 503 storage unavailable, message not sent"
            # The database goes down for good under them (as in a restart):
            # the INSERTs cut from the server are not left to commit later.
            for connection in stranded:
                try:
                    holder.cursor().execute("KILL %d" % connection)
                except Exception:  # MySQLdb.OperationalError: it ended by itself
                    pass
        mysql_proxy.resume()
        server.wait_log(r".*storage available again", timeout=20.0)
        alice.send("SAY after")
        for client in (alice, bob, carol):
            assert said(client, 1)[0][1:] == ("alice", "after")
    finally:
        server.stop()
    db = mysql_connect(mysql_url)
    try:
        cursor = db.cursor()
        cursor.execute("SELECT body FROM messages ORDER BY id")
        assert [body for (body,) in cursor.fetchall()] == ["before", "after"]
    finally:
        db.close()
    log = "".join(server.log)
    assert len(re.findall(r"ERROR storage unavailable", log)) == 1, log


def written_behind(url, first, count):
    """Messages written with ids of its own by someone else (a second server
    on the database), from ``first`` on; their bodies."""
    bodies = ["not ours %d" % n for n in range(first, first + count)]
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute("SELECT id FROM users ORDER BY id LIMIT 1")
        [(sender,)] = cursor.fetchall()
        for message_id, body in zip(range(first, first + count), bodies):
            cursor.execute("INSERT INTO messages (id, sender_id, body, created_at) VALUES (%s, %s, %s, NOW())",
                           (message_id, sender, body))
    finally:
        db.close()
    return bodies


def test_another_writer_costs_one_batch_while_busy_and_none_after_a_quiet_moment(harness, mysql_url):
    make, clock = harness
    h = make(db_url=mysql_url)
    alice = h.logged_in("alice")
    said_lines = []
    for text in ("first", "second"):
        alice.sendall(b"SAY %s\n" % text.encode())
        said_lines.append(h.expect(alice, r"MSG \d+ \S+ alice %s\Z" % text))
    # Busy (a batch came back just now): the next batch has its ids from the
    # store's count, which another writer has just used.
    behind = written_behind(mysql_url, h.server.store.reserve_ids(0), 2)
    alice.sendall(b"SAY clash\n")
    assert h.expect(alice, r"ERR ") == "ERR 503 storage unavailable, message not sent"
    alice.sendall(b"SAY resumed\n")
    said_lines.append(h.expect(alice, r"MSG \d+ \S+ alice resumed\Z"))
    # Quiet for a while, then someone else writes again: the database
    # numbers the next batch, past what was written meanwhile.
    behind += written_behind(mysql_url, h.server.store.reserve_ids(0), 2)
    clock.tick(2)
    alice.sendall(b"SAY after a quiet moment\n")
    said_lines.append(h.expect(alice, r"MSG \d+ \S+ alice after a quiet moment\Z"))
    ids = [int(line.split()[1]) for line in said_lines]
    assert ids == sorted(set(ids))
    db = mysql_connect(mysql_url)
    try:
        cursor = db.cursor()
        cursor.execute("SELECT body FROM messages ORDER BY id")
        assert [body for (body,) in cursor.fetchall()] == [
            "first", "second"] + behind[:2] + ["resumed"] + behind[2:] + ["after a quiet moment"]
    finally:
        db.close()
