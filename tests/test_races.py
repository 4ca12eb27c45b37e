"""What is checked before a hand-off to a worker holds when its result
comes back.

A LOGIN is checked (ban, kick, failed-login limits), then its password is
hashed on a worker thread while the loop serves everyone else: a ban can be
stored, or other guesses can arrive, in between. These tests open that
window on purpose: the server runs in this process (conftest's Harness) and
the password check is held at a gate until the test lets it through.
"""

import logging
import re
import select
import socket
import threading
import types

import pytest

import sae_server
from conftest import record_batches, turn_until

GATE_TIMEOUT = 10.0


@pytest.fixture
def gate(monkeypatch):
    """Password checks wait here until ``gate.open()``; ``gate.entered``
    is set once one of them is waiting."""

    class Gate:
        def __init__(self):
            self.entered = threading.Event()
            self.released = threading.Event()

        def open(self):
            self.released.set()

    held = Gate()
    real_verify = sae_server.verify_password

    def verify_at_the_gate(password, stored):
        held.entered.set()
        held.released.wait(GATE_TIMEOUT)
        return real_verify(password, stored)

    monkeypatch.setattr(sae_server, "verify_password", verify_at_the_gate)
    yield held
    held.open()


def test_a_ban_stored_while_the_password_is_checked_keeps_the_account_out(harness, gate):
    make, clock = harness
    h = make()
    alice = h.connect()
    alice.sendall(b"REGISTER alice password1\n")
    gate.open()
    h.expect(alice, r"OK REGISTER")
    gate.released.clear()
    gate.entered.clear()

    alice.sendall(b"LOGIN alice password1\n")
    turn_until(h, gate.entered.is_set, "hashing alice's password")
    assert h.operator("ban alice spamming") == "banned alice (0 sessions closed)"
    gate.open()
    assert h.expect(alice, r"ERR|OK") == "ERR 403 spamming"
    assert h.expect_closed(alice) == []
    watcher = h.logged_in("bob")
    watcher.sendall(b"WHO\n")
    assert h.expect(watcher, r"USERS") == "USERS 1 bob"


def test_guesses_in_flight_count_against_the_failed_login_limit(harness, gate):
    make, clock = harness
    h = make(exempt="", login_failures=5)
    owner = h.connect()
    owner.sendall(b"REGISTER alice right-password\n")
    gate.open()
    h.expect(owner, r"OK REGISTER")
    gate.released.clear()

    # 31 guesses from one address at once, the right one last: all of them
    # are read before the first password check is over.
    guessers = [h.connect() for _ in range(31)]
    for number, guesser in enumerate(guessers):
        password = "right-password" if number == 30 else "guess-%04d" % number
        guesser.sendall(("LOGIN alice %s\n" % password).encode())
    answers = {}

    def all_answered():
        for guesser in guessers:
            if guesser not in answers:
                lines = h.lines(guesser)
                if lines:
                    answers[guesser] = lines[0]
        return len(answers) == len(guessers)

    turn_until(h, lambda: all_answered() or len(answers) >= 26, "the guesses beyond the limit refused")
    assert len(answers) == 26  # the five in flight are still being checked
    gate.open()
    turn_until(h, all_answered, "every guess answered")
    checked = [line for line in answers.values() if not line.startswith("ERR 429")]
    assert len(checked) == 5
    assert all(line == "ERR 401 wrong name or password" for line in checked)
    assert re.match(r"ERR 429 \d+ too many failed logins", answers[guessers[30]])


def test_a_failed_login_takes_the_same_time_whether_or_not_the_name_exists(harness, caplog):
    caplog.set_level(logging.INFO, logger="sae-server")
    make, clock = harness
    # The accounts were made at a lower cost than new ones get now, as
    # after a restart with a higher --scrypt-n: their hashes are quicker.
    h = make(scrypt_n=1024, login_failure_delay=1.0)
    h.logged_in("alice")
    h.server.dummy_hash = sae_server.hash_password("not a password", 4096)

    for name in ("alice", "nobody"):
        guesser = h.connect()
        guesser.sendall(("LOGIN %s wrong-password\n" % name).encode())
        logged = "failed to log in as %s" % name
        turn_until(h, lambda logged=logged: logged in caplog.text, "checked %s" % name)
        for _ in range(20):
            h.turn()
        assert h.lines(guesser) == []  # checked, but not answered before its time
        clock.tick(1.0)
        assert h.expect(guesser, r".") == "ERR 401 wrong name or password"


def test_what_is_said_while_a_batch_is_stored_goes_next_as_one_batch(harness, monkeypatch):
    make, clock = harness
    h = make(storage_on_loop=False)  # MariaDB's way: a storage thread
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    batches, stored = [], threading.Event()
    store_batch = h.server.store.append_messages

    def held_first_batch(batch):
        batches.append([message.body for message in batch])
        if len(batches) == 1:
            stored.wait(GATE_TIMEOUT)
        return store_batch(batch)

    monkeypatch.setattr(h.server.store, "append_messages", held_first_batch)
    alice.sendall(b"SAY first\n")
    turn_until(h, lambda: batches, "the first batch with the storage thread")
    # Said one by one, each read in a turn of its own, while the first batch
    # is being stored: none of them starts a batch of its own.
    for number in range(5):
        bob.sendall(b"SAY meanwhile %d\n" % number)
        turn_until(h, lambda number=number: len(h.server.outbox) == number + 1, "read")
    assert batches == [["first"]]
    stored.set()
    assert h.expect(alice, r"MSG \d+ \S+ bob meanwhile 4").endswith("meanwhile 4")
    assert batches == [["first"], ["meanwhile %d" % number for number in range(5)]]


def test_on_sqlite_a_turn_s_messages_are_one_batch_delivered_in_that_turn(harness, monkeypatch):
    """SQLite is called by the loop itself (Store.on_loop): what one turn
    reads is stored as one batch and goes out in that turn's pass, with no
    thread to wait for."""
    make, clock = harness
    h = make()
    assert "storage" not in h.server.workers.pools
    alice = h.logged_in("alice")
    batches = record_batches(h, monkeypatch)
    alice.sendall(b"SAY one\nSAY two\nSAY three\n")
    turn_until(h, lambda: batches, "stored")
    assert batches == [["one", "two", "three"]]
    # No further turn: the pass of the turn that stored them sent them.
    alice.settimeout(GATE_TIMEOUT)
    received = b""
    while received.count(b"\n") < 3:
        received += alice.recv(4096)
    assert [line.split(" ", 4)[-1] for line in received.decode().splitlines()] == ["one", "two", "three"]


def test_input_already_there_joins_the_pass_of_this_turn(harness, monkeypatch):
    """Under load (the last pass over the room took a while), input that
    is ready by the time a turn's messages would be stored is read first:
    one batch, one pass, carries both."""
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    batches = record_batches(h, monkeypatch)
    h.server.last_pass_cost = 0.001
    alice.sendall(b"SAY one\n")
    # bob's line arrives while the turn that read alice's runs (a timer of
    # that turn sends it), after its select.
    h.server.call_at(h.server.now, lambda: bob.sendall(b"SAY two\n"))
    turn_until(h, lambda: batches, "stored")
    assert batches == [["one", "two"]]
    assert h.expect(bob, r"MSG \d+ \S+ bob two").endswith("two")


def test_a_quiet_room_is_not_gathered_for(harness, monkeypatch):
    """Nothing more ready: the turn's messages go at once, as two batches
    when they come in two turns."""
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    batches = record_batches(h, monkeypatch)
    h.server.last_pass_cost = 0.001
    alice.sendall(b"SAY one\n")
    turn_until(h, lambda: batches, "stored")
    bob.sendall(b"SAY two\n")
    turn_until(h, lambda: len(batches) == 2, "stored")
    assert batches == [["one"], ["two"]]


def test_after_a_full_batch_a_turn_waits_for_the_next_lines_a_moment(harness, monkeypatch):
    """In a flood (the last batch was big), a turn whose batch is smaller
    than the last one waits for input not yet there, at most as long as
    the last pass took: on a busy machine the senders' next lines come a
    moment later, and one pass carrying them all costs a member one send()
    where two passes cost two."""
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    batches = record_batches(h, monkeypatch)
    h.server.last_batch_size = sae_server.GATHER_WAIT_BATCH_MIN
    h.server.last_pass_cost = GATE_TIMEOUT
    waiting = threading.Event()
    real_select = h.server.selector.select

    def select(timeout=None):
        if timeout and h.server.outbox:
            waiting.set()  # alice's line is read, nothing else is ready
        return real_select(timeout)

    monkeypatch.setattr(h.server.selector, "select", select)
    sender = threading.Thread(target=lambda: waiting.wait(GATE_TIMEOUT) and bob.sendall(b"SAY two\n"))
    sender.start()
    alice.sendall(b"SAY one\n")
    turn_until(h, lambda: batches, "stored")
    sender.join()
    assert batches == [["one", "two"]]
    assert h.expect(alice, r"MSG \d+ \S+ bob two").endswith("two")


def test_after_a_small_batch_a_turn_does_not_wait(harness, monkeypatch):
    """Below GATHER_WAIT_BATCH_MIN the room is a chat, not a flood: a
    message goes at once, however long the last pass took."""
    make, clock = harness
    h = make()
    alice = h.logged_in("alice")
    batches = record_batches(h, monkeypatch)
    h.server.last_batch_size = sae_server.GATHER_WAIT_BATCH_MIN - 1
    h.server.last_pass_cost = GATE_TIMEOUT
    timeouts = []
    real_select = h.server.selector.select

    def select(timeout=None):
        if h.server.outbox:
            timeouts.append(timeout)
        return real_select(timeout)

    monkeypatch.setattr(h.server.selector, "select", select)
    alice.sendall(b"SAY one\n")
    turn_until(h, lambda: batches, "stored")
    assert batches == [["one"]]
    assert not any(timeouts)


def test_batches_wait_while_the_store_holds_them_back(harness, monkeypatch):
    """While the SQLite store copies the end of its WAL it asks for no batch
    (batches_held): messages wait, everything else goes on, and they are
    stored and delivered once the store lets them go."""
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    batches = record_batches(h, monkeypatch)
    checkpoints = h.server.store.checkpoints
    checkpoints.hold_wanted = True
    alice.sendall(b"SAY one\n")
    bob.sendall(b"PING still-here\n")
    assert h.expect(bob, r"PONG") == "PONG still-here"
    assert batches == [] and checkpoints.loop_holds.is_set()
    checkpoints.hold_wanted = False
    h.server.store.on_batches_free()
    assert h.expect(bob, r"MSG").endswith("alice one")
    assert batches == [["one"]]


def test_a_message_said_during_a_long_pass_reaches_the_rest_of_that_pass(harness, monkeypatch):
    """A pass over a big room looks for input as it goes (every PASS_SLICE,
    here after every member): a message said meanwhile goes out with the
    members not yet passed in the same send(), and to the others next."""
    make, clock = harness
    h = make()
    monkeypatch.setattr(sae_server, "PASS_CHUNK", 1)
    monkeypatch.setattr(sae_server, "PASS_SLICE", 0.0)
    alice, bob, carol = h.logged_in("alice"), h.logged_in("bob"), h.logged_in("carol")
    flushed = record_sends(monkeypatch, (b" one\n", b" two\n"), bob)
    alice.sendall(b"SAY one\n")
    turn_until(h, lambda: len(flushed) >= 4, "both messages sent to everyone")
    first = flushed[0][0]
    rest = [(name, data) for name, data in flushed[1:3]]
    # The two members passed after bob's line came: both messages, one send().
    assert all(data.count(b"MSG ") == 2 and data.index(b" one\n") < data.index(b" two\n") for _, data in rest)
    assert first not in [name for name, _ in rest]
    # The first member gets "two" in the next pass, after "one".
    assert flushed[3][0] == first and flushed[3][1].endswith(b" two\n") and b" one\n" not in flushed[3][1]
    for client in (alice, bob, carol):
        assert h.expect(client, r"MSG \d+ \S+ bob two").endswith("two")


def test_a_flood_s_pass_is_not_cut_into_pieces(harness, monkeypatch):
    """Batches of more than PASS_POLL_BATCH_MAX messages are a flood: its
    passes are full anyway, and the pass does not stop to take input."""
    make, clock = harness
    h = make()
    monkeypatch.setattr(sae_server, "PASS_CHUNK", 1)
    monkeypatch.setattr(sae_server, "PASS_SLICE", 0.0)
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    h.logged_in("carol")  # a third member to pass
    flushed = record_sends(monkeypatch, (b" flood ", b" two\n"), bob)
    flood = sae_server.PASS_POLL_BATCH_MAX + 1
    alice.sendall(b"".join(b"SAY flood %d\n" % n for n in range(flood)))
    turn_until(h, lambda: len(flushed) >= 6, "both sent to everyone")
    # The whole pass carries the flood alone; "two" comes in a pass of its own.
    assert [data.count(b"MSG ") for _, data in flushed[:3]] == [flood] * 3
    assert all(data.endswith(b" two\n") and data.count(b"MSG ") == 1 for _, data in flushed[3:6])


def test_a_batch_stored_during_a_pass_reaches_the_rest_of_that_pass(harness, mysql_url, monkeypatch):
    """On MariaDB two batches are stored at once. One handed back while the
    other's pass goes over a big room is delivered then: the members not
    yet passed get both in one send(), the others get it in the next pass,
    rather than everyone after this pass has ended."""
    make, clock = harness
    h = make(db_url=mysql_url)
    assert h.server.batches_at_once == 2
    monkeypatch.setattr(sae_server, "PASS_CHUNK", 1)
    monkeypatch.setattr(sae_server, "PASS_SLICE", GATE_TIMEOUT)  # no look for input: only storage's answers
    alice, bob, carol = h.logged_in("alice"), h.logged_in("bob"), h.logged_in("carol")
    gates = {body: (threading.Event(), threading.Event()) for body in ("zero", "one", "two")}  # entered, released
    real_append = h.server.store.append_messages

    def append_at_its_gate(batch, *args):
        entered, released = gates[batch[0].body]
        entered.set()
        released.wait(GATE_TIMEOUT)
        return real_append(batch, *args)

    monkeypatch.setattr(h.server.store, "append_messages", append_at_its_gate)
    # A batch first, so that the next one is not the first after a quiet
    # moment (which the database numbers alone, with no other beside it).
    gates["zero"][1].set()
    alice.sendall(b"SAY zero\n")
    h.expect(carol, r"MSG .* zero$")
    alice.sendall(b"SAY one\n")
    turn_until(h, gates["one"][0].is_set, "storing one")
    bob.sendall(b"SAY two\n")
    turn_until(h, gates["two"][0].is_set, "storing two beside it")
    sends = []
    flush = sae_server.Connection.flush

    def recorded(session):
        data = b"".join(chunk for chunk in session.sendq if chunk.__class__ is bytes)
        if b" one\n" in data or b" two\n" in data:
            sends.append((session.name, data))
            if len(sends) == 1:
                # "two" is stored while this pass goes on: wait until it is
                # handed back (the storage thread wakes the loop).
                gates["two"][1].set()
                assert select.select([h.server.workers.wakeup], [], [], GATE_TIMEOUT)[0]
        return flush(session)

    monkeypatch.setattr(sae_server.Connection, "flush", recorded)
    gates["one"][1].set()
    turn_until(h, lambda: len(sends) >= 4, "both messages sent to everyone")
    first, data = sends[0]
    assert b" one\n" in data and b" two\n" not in data
    rest = sends[1:3]
    assert {name for name, _ in rest} == {"alice", "bob", "carol"} - {first}
    assert all(b" one\n" in data and b" two\n" in data and data.index(b" one\n") < data.index(b" two\n")
               for _, data in rest), rest
    assert sends[3][0] == first and b" two\n" in sends[3][1] and b" one\n" not in sends[3][1]


def record_sends(monkeypatch, marks, bob):
    """[(account, the bytes of one send)] of the sends that carry any of
    ``marks``; once the first is made, bob says "two" (while the pass has
    just begun)."""
    flushed = []
    flush = sae_server.Connection.flush

    def recorded(session):
        data = b"".join(chunk for chunk in session.sendq if chunk.__class__ is bytes)
        if any(mark in data for mark in marks):
            flushed.append((session.name, data))
            if len(flushed) == 1:
                bob.sendall(b"SAY two\n")
        return flush(session)

    monkeypatch.setattr(sae_server.Connection, "flush", recorded)
    return flushed


def hold_the_next_batch(h, monkeypatch):
    """Storage (on its thread) holds the next batch until
    ``released`` is set; ``entered`` is set once it holds one."""
    held = types.SimpleNamespace(entered=threading.Event(), released=threading.Event())
    real_append = h.server.store.append_messages

    def append_at_the_gate(batch):
        held.entered.set()
        held.released.wait(GATE_TIMEOUT)
        return real_append(batch)

    monkeypatch.setattr(h.server.store, "append_messages", append_at_the_gate)
    return held


@pytest.mark.parametrize("request_line", ["HISTORY 50 after=0", "HISTORY * 50 after=0", "HISTORY #general 50 after=0"])
def test_a_catch_up_asked_while_a_message_is_stored_gives_it_once(harness, monkeypatch, request_line):
    # bob asks for what came after an id while alice's message is being
    # stored: the message comes to him live once it is stored, so the
    # answer (read after it, on the same storage thread) must not hold it
    # again. A client that is not the curses client would show it twice.
    make, clock = harness
    h = make(storage_on_loop=False)
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    if "#" in request_line or "*" in request_line:
        bob.sendall(b"CAP rooms\n")
        h.expect(bob, r"OK CAP")
    h.lines(alice)
    held = hold_the_next_batch(h, monkeypatch)
    alice.sendall(b"SAY while you were asking\n")
    turn_until(h, held.entered.is_set, "storing alice's message")
    bob.sendall(request_line.encode() + b"\n")
    for _ in range(5):
        h.turn()  # bob's request is read and queued behind the batch
    held.released.set()
    seen = []
    while not any(line.startswith("OK HISTORY") for line in seen):
        h.turn()
        seen += [line for line in h.lines(bob) if line is not None]
        assert len(seen) < 1000
    assert sum("while you were asking" in line for line in seen) == 1, seen


def test_an_irc_chathistory_asked_while_a_message_is_stored_gives_it_once(harness, monkeypatch):
    # The same window as above, for IRC's CHATHISTORY: the message comes
    # live (PRIVMSG), so the batch must not hold it again.
    make, clock = harness
    h = make(storage_on_loop=False, irc=True)
    alice = h.logged_in("alice")
    h.logged_in("bob").close()
    bob = socket.create_connection(("127.0.0.1", h.irc_port))
    bob.setblocking(False)
    h.buffers[bob] = b""
    bob.sendall(b"CAP LS 302\r\nCAP REQ :batch server-time draft/chathistory\r\nPASS bob:password1\r\n"
                b"NICK bob\r\nUSER bob 0 * :b\r\nCAP END\r\n")
    h.expect(bob, r".* 366 bob #general ")
    h.lines(alice)
    held = hold_the_next_batch(h, monkeypatch)
    alice.sendall(b"SAY while you were asking\n")
    turn_until(h, held.entered.is_set, "storing alice's message")
    bob.sendall(b"CHATHISTORY LATEST #general * 50\r\n")
    for _ in range(5):
        h.turn()
    held.released.set()
    seen = []
    while not any(re.match(r":\S+ BATCH -", line) for line in seen):
        h.turn()
        seen += [line.rstrip("\r") for line in h.lines(bob) if line is not None]
        assert len(seen) < 1000
    assert sum("while you were asking" in line for line in seen) == 1, seen
