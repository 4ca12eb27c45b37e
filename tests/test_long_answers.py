"""Long answers: a HISTORY (or LOGIN's history burst) of megabytes reaches a
client that reads, however small its TCP window, and is never mistaken for
a client that does not read.

The send-queue cap (--sendq-max, 256 KiB) is for clients that stop reading.
An answer to a client's own request is produced as its socket drains, so it
never counts against the cap, while what is queued behind it still does.

Each test puts 1000 messages of about 4000 bytes (some 4 MB of history;
3000 where the client pauses mid-answer, see LONG_HISTORY) into a fresh
database before the server starts, and reads through a socket
whose receive buffer is set to 4096 bytes before connecting: its window is
small, so the server's queue for it would grow at once (loopback's kernel
buffers would otherwise absorb megabytes).
"""

import re
import select
import socket
import subprocess
import sys

import pytest

from conftest import TIMEOUT, LineClient, chat_until_cut
from sae_db import NewMessage, open_store
from sae_server import hash_password

PASSWORD = "password1"
HISTORY = 1000
BODY = "x" * 3990  # with its number in front, about 4000 bytes a message
T0 = "2026-11-24T13:05:01.123Z"
MSG_RE = re.compile(r"MSG (\d+) \S+ (\S+) (.*)\Z", re.S)


# Tests that stop reading mid-answer need an answer larger than what the
# kernel buffers on the way: the server's send buffer grows up to tcp_wmem's
# maximum (4 MiB by default), and some 700 of the 1000 lines fit in it.
LONG_HISTORY = 3000


def seed(tmp_path, count):
    """A database with accounts hist, reader, alice, bob and ``count`` room
    messages by hist, ids 1 to ``count``; returns its URL."""
    url = "sqlite:///%s" % (tmp_path / ("history-%d.db" % count))
    store = open_store(url)
    try:
        password_hash = hash_password(PASSWORD, 1024)
        # Members of #general, as REGISTER makes them: an account in no room
        # has no room to say things in, nor a history to ask for.
        general = store.ensure_room("#general", T0)
        accounts = {name: store.create_account(name, password_hash, T0, general.id)
                    for name in ("hist", "reader", "alice", "bob")}
        hist = accounts["hist"]
        stored = store.append_messages([NewMessage(hist.id, hist.name, None, "%d %s" % (n, BODY), T0)
                                        for n in range(1, count + 1)])
        assert [message.id for message in stored] == list(range(1, count + 1))
    finally:
        store.close()
    return url


@pytest.fixture
def history_db(tmp_path):
    return seed(tmp_path, HISTORY)


@pytest.fixture
def long_server(make_server, tmp_path):
    """``long_server(*args)``: a server on LONG_HISTORY messages that answers
    HISTORY LONG_HISTORY."""
    url = seed(tmp_path, LONG_HISTORY)
    return lambda *args: make_server("--history-max", str(LONG_HISTORY), *args, db_url=url)


class Client(LineClient):
    """A LineClient whose receive buffer is set before connecting, so that
    its window is small from the handshake on."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""
        self.seen = []


def connect(server, rcvbuf=None):
    client = Client(server.port, rcvbuf)
    server.clients.append(client)  # closed by the fixture
    return client


def short(lines):
    """Lines for a failure message, the 4000-byte ones cut down."""
    return [line if line is None or len(line) < 100 else line[:40] + "..." + line[-20:] for line in lines]


def history_ids(lines):
    """The ids of the history's messages among ``lines``; fails on anything else."""
    ids = []
    for line in lines:
        match = MSG_RE.match(line)
        assert match and match.group(2) == "hist", "not a history line: %r" % short([line])
        number, body = match.group(3).split(" ", 1)
        assert number == match.group(1) and body == BODY, short([line])
        ids.append(int(match.group(1)))
    return ids


def still_there(client):
    """The very next line answers a PING: nothing came after what was read, no BYE."""
    client.send("PING still there")
    line = client.next()
    assert line == "PONG still there", short([line])


def wait_until_readable(client):
    """The first bytes of an answer have reached ``client``, which has not read them."""
    ready, _, _ = select.select([client.sock], [], [], TIMEOUT)
    assert ready, "nothing arrived within %ss" % TIMEOUT


def test_history_of_4_mb_reaches_a_client_with_a_small_window(make_server, history_db):
    server = make_server(db_url=history_db)
    reader = connect(server, rcvbuf=4096)
    reader.login("reader", PASSWORD)

    reader.send("HISTORY %d" % HISTORY)
    lines = reader.lines_until(r"OK HISTORY |BYE ")
    assert lines[-1] == "OK HISTORY %d" % HISTORY, short(lines[-3:])
    assert history_ids(lines[:-1]) == list(range(1, HISTORY + 1))
    still_there(reader)
    assert not [line for line in server.log if "sendq exceeded" in line]


def test_login_burst_of_4_mb_reaches_a_client_with_a_small_window(make_server, history_db):
    server = make_server("--history", str(HISTORY), db_url=history_db)
    reader = connect(server, rcvbuf=4096)

    reader.send("LOGIN reader %s" % PASSWORD)
    lines = reader.lines_until(r"USERS |BYE ")
    assert lines[0] == "OK LOGIN reader", short(lines[:3])
    assert lines[-2:] == ["OK HISTORY %d" % HISTORY, "USERS 1 reader"], short(lines[-3:])
    assert history_ids(lines[1:-2]) == list(range(1, HISTORY + 1))
    still_there(reader)


def test_a_client_that_asks_and_never_reads_is_cut_once_what_queues_behind_the_answer_passes_the_cap(
        long_server):
    server = long_server()
    alice, bob = connect(server), connect(server)
    alice.login("alice", PASSWORD)
    bob.login("bob", PASSWORD)
    deaf = connect(server, rcvbuf=4096)
    deaf.login("reader", PASSWORD)
    for watcher in (alice, bob):
        watcher.expect(r"JOIN reader")
    deaf.send("HISTORY %d" % LONG_HISTORY)
    # Its answer has begun (nothing else was owed to it); it reads no more.
    wait_until_readable(deaf)

    # alice chats on until the queue behind the answer reaches 256 KiB: at
    # about 3000 bytes a message, not before 64 of them (the unsent rest of
    # one piece of the answer, at most 64 KiB, counts too).
    padding = "y" * 3000
    said, cut_after, bob_lines = chat_until_cut(server, alice, bob, "reader", most=1000, padding=padding)
    assert cut_after > 60, "cut after only %d messages of 3000 bytes" % cut_after
    server.wait_log(r".*reader.*sendq exceeded")

    # bob got every message of alice's, in order.
    texts = [m.group(3) for m in map(MSG_RE.match, bob_lines) if m and m.group(2) == "alice"]
    assert texts == ["%d %s" % (n, padding) for n in range(said)]
    # The reader got the start of its answer, whole lines with nothing
    # inside it, then BYE as a line of its own.
    rest = deaf.expect_closed()
    assert rest and rest[-1] == "BYE sendq exceeded", short(rest[-3:])
    ids = history_ids(rest[:-1])
    assert ids == list(range(1, len(ids) + 1))
    # alice and bob chat on.
    bob.send("SAY still here")
    alice.expect(r"MSG \S+ \S+ bob still here\Z")


def test_a_history_pipelined_behind_a_long_one_is_answered_after_it_and_chat_waits_between(long_server):
    server = long_server()
    alice = connect(server)
    alice.login("alice", PASSWORD)
    reader = connect(server, rcvbuf=4096)
    reader.login("reader", PASSWORD)
    alice.expect(r"JOIN reader")

    reader.send_raw(b"HISTORY %d\nHISTORY 500 before=501\nPING end\n" % LONG_HISTORY)
    reader.expect(r"MSG 1 ")  # the first answer is under way; the reader pauses
    for n in range(3):
        alice.send("SAY during the answer %d" % n)
    # Once alice has her own last message, the reader's copies are queued too.
    alice.expect(r"MSG \S+ \S+ alice during the answer 2\Z")

    lines = reader.lines_until(r"PONG end")
    first = lines.index("OK HISTORY %d" % LONG_HISTORY)
    assert history_ids(lines[:first]) == list(range(2, LONG_HISTORY + 1))
    chat = lines[first + 1:first + 4]
    assert [MSG_RE.match(line).group(2, 3) for line in chat] == [
        ("alice", "during the answer %d" % n) for n in range(3)], short(chat)
    second = lines.index("OK HISTORY 500")
    assert second > first + 3
    assert history_ids(lines[first + 4:second]) == list(range(1, 501))
    assert lines[second + 1:] == ["PONG end"], short(lines[second + 1:])


def test_quit_behind_a_long_answer_is_answered_after_all_of_it(make_server, history_db):
    server = make_server(db_url=history_db)
    reader = connect(server, rcvbuf=4096)
    reader.login("reader", PASSWORD)

    reader.send_raw(b"HISTORY %d\nQUIT done\n" % HISTORY)
    lines = reader.expect_closed()
    assert lines[-2:] == ["OK HISTORY %d" % HISTORY, "BYE done"], short(lines[-3:])
    assert history_ids(lines[:-2]) == list(range(1, HISTORY + 1))


def test_a_kick_during_a_long_answer_cuts_it_at_a_line_and_says_why(long_server, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = long_server("--admin-socket", path)
    alice = connect(server)
    alice.login("alice", PASSWORD)
    reader = connect(server, rcvbuf=4096)
    reader.login("reader", PASSWORD)
    reader.send("HISTORY %d" % LONG_HISTORY)
    reader.expect(r"MSG 1 ")  # under way; the reader pauses

    kick = subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", path,
                           "kick", "reader", "60", "enough"], capture_output=True, text=True, timeout=TIMEOUT)
    assert kick.stdout == "kicked reader for 60s (1 session closed)\n", kick
    alice.expect(r"LEAVE reader kicked\Z")
    # What was produced of the answer comes whole, then at once the reason,
    # not the megabytes the answer had left.
    rest = reader.expect_closed()
    assert rest and rest[-1] == "KICKED 60 enough", short(rest[-3:])
    ids = history_ids(rest[:-1])
    assert ids == list(range(2, len(ids) + 2)) and len(ids) < LONG_HISTORY - 1
    alice.send("PING serving on")
    assert alice.next() == "PONG serving on"
    assert "Traceback" not in "".join(server.log)


def test_a_shutdown_during_a_long_answer_finishes_it_then_says_bye(long_server):
    server = long_server()
    reader = connect(server, rcvbuf=4096)
    reader.login("reader", PASSWORD)
    reader.send("HISTORY %d" % LONG_HISTORY)
    reader.expect(r"MSG 1 ")  # under way; the reader pauses

    server.proc.terminate()
    server.wait_log(r".*shutting down")
    rest = reader.expect_closed()
    assert rest[-2:] == ["OK HISTORY %d" % LONG_HISTORY, "BYE server shutting down (SIGTERM)"], short(rest[-3:])
    assert history_ids(rest[:-2]) == list(range(2, LONG_HISTORY + 1))
    assert server.proc.wait(TIMEOUT) == 0
    assert "Traceback" not in "".join(server.log)
