"""Fault isolation: a bug in one command, completion or delivery costs that
one connection (``BYE internal error``), never the server; a bug outside any
session stops the server in order, losing nothing it accepted.

The bugs are injected from the test: into a Harness (conftest.py) in this
process, or into a real server process started through a small script that
patches sae_server before calling its main().
"""

import logging
import os
import re
import socket
import textwrap
import time

import pytest
import sae_admin
import sae_protocol
import sae_server
from conftest import ITERATIONS, TIMEOUT, ServerProcess
from sae_db import open_store


def address(sock):
    """How the server's log names this client's connection."""
    return "%s:%d" % sock.getsockname()[:2]


def faults(caplog):
    """The log's ERROR records that carry a traceback."""
    return [record for record in caplog.records if record.levelno == logging.ERROR and record.exc_info]


def lines_until(h, sock, pattern):
    """Turn the loop until ``sock`` receives a line matching ``pattern``;
    every line up to it."""
    seen = []
    for _ in range(ITERATIONS):
        h.turn()
        for line in h.lines(sock):
            assert line is not None, "closed while waiting for %r; saw %r" % (pattern, seen)
            seen.append(line)
            if re.match(pattern, line):
                return seen
    raise AssertionError("no %r; saw %r" % (pattern, seen))


def say_round_trip(h, sock, name, text):
    """SAY from an online session, seen back as its MSG: the session chats on."""
    sock.sendall(b"SAY %s\n" % text.encode())
    return lines_until(h, sock, r"MSG \d+ \S+ %s %s$" % (name, re.escape(text)))


def test_a_failing_command_costs_its_session_and_the_others_chat_on(harness, monkeypatch, caplog):
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")

    def broken_who(server, session):
        raise RuntimeError("WHO is broken")
    monkeypatch.setitem(sae_server.COMMANDS, "WHO", broken_who)

    # What alice sent after the failing line is never run.
    alice.sendall(b"WHO\nSAY never said\n")
    assert h.expect_closed(alice)[-1] == "BYE internal error"
    h.expect(bob, r"LEAVE alice internal error$")
    say_round_trip(h, bob, "bob", "still here")
    bob.sendall(b"HISTORY 10\n")
    assert not [line for line in lines_until(h, bob, r"OK HISTORY") if "never said" in line]

    [fault] = faults(caplog)
    assert "the WHO command for %s (alice)" % address(alice) in fault.getMessage()
    assert "RuntimeError: WHO is broken" in caplog.text


def test_a_failing_completion_costs_its_session_and_shutdown_does_not_wait_for_it(
        harness, monkeypatch, caplog):
    make, clock = harness
    h = make()
    alice, bob = h.logged_in("alice"), h.logged_in("bob")
    # A store that hands back what the loop cannot format: the HISTORY
    # completion fails on the loop thread, with alice's HISTORY in flight.
    monkeypatch.setattr(h.server.store, "room_history", lambda *args: [None])

    alice.sendall(b"HISTORY 5\n")
    assert h.expect(alice, r"BYE ") == "BYE internal error"
    h.expect(bob, r"LEAVE alice internal error$")
    monkeypatch.undo()
    # A login whose first completion fails never gets to the end where the
    # session's inflight count comes down: that session waits for good.
    monkeypatch.setattr(h.server.store, "find_account", lambda name: object())
    again = h.connect()
    again.sendall(b"LOGIN alice password1\n")
    assert h.expect(again, r"BYE ") == "BYE internal error"
    monkeypatch.undo()
    say_round_trip(h, bob, "bob", "still here")
    history_fault, login_fault = faults(caplog)
    assert "a worker's completion for %s (alice)" % address(alice) in history_fault.getMessage()
    assert "a worker's completion for %s (not logged in)" % address(again) in login_fault.getMessage()

    # Neither has hung up, so their closed sessions are still there, the
    # login's still counted in flight. The shutdown owes them nothing: it
    # says BYE to bob at once rather than wait out its 10 s for them (a
    # second passes per turn of the shutdown, none otherwise).
    started = time.monotonic()
    assert h.shut_down(clock)
    assert time.monotonic() - started <= sae_server.CLOSE_LINGER + 1
    assert h.lines(bob) == ["BYE server shutting down", None]


def test_a_failing_delivery_closes_that_sender_and_delivers_the_rest(harness, monkeypatch, caplog):
    make, clock = harness
    h = make()
    alice, bob, carol = h.logged_in("alice"), h.logged_in("bob"), h.logged_in("carol")
    format_msg = sae_protocol.format_msg
    poisoned = []

    def format_msg_failing_once(id, created_at, sender, body):
        if body == "poison" and not poisoned:
            poisoned.append(id)
            raise ValueError("cannot format this one")
        return format_msg(id, created_at, sender, body)
    monkeypatch.setattr(sae_server.proto, "format_msg", format_msg_failing_once)

    # Sent before the loop turns: read in one turn, stored in one batch.
    alice.sendall(b"SAY before\n")
    bob.sendall(b"SAY poison\n")
    carol.sendall(b"SAY after\n")
    assert h.expect(bob, r"BYE ") == "BYE internal error"
    h.expect(carol, r"LEAVE bob internal error$")
    heard = [line.split(" ", 3)[3] for line in say_round_trip(h, alice, "alice", "and on")
             if line.startswith("MSG ")]
    assert sorted(heard) == ["alice and on", "alice before", "carol after"]
    say_round_trip(h, carol, "carol", "and on")
    [fault] = faults(caplog)
    assert "delivering its message for %s (bob)" % address(bob) in fault.getMessage()

    # The batch was stored: bob's message is in the history.
    alice.sendall(b"HISTORY 10\n")
    assert h.expect(alice, r"MSG %d " % poisoned[0]).endswith(" bob poison")


@pytest.mark.parametrize("verb, store_method", [("LOGIN", "find_account"), ("REGISTER", "create_account")])
def test_a_failing_login_or_registration_never_logs_the_password(harness, monkeypatch, caplog, verb, store_method):
    make, clock = harness
    h = make()
    bob = h.logged_in("bob")
    if verb == "LOGIN":
        h.logged_in("alice")
    # The worker's answer is not an Account: the completion fails on the loop.
    monkeypatch.setattr(h.server.store, store_method, lambda *args: object())

    alice = h.connect()
    alice.sendall(b"%s alice correct-horse-battery\n" % verb.encode())
    assert h.expect(alice, r"BYE ") == "BYE internal error"
    monkeypatch.undo()
    say_round_trip(h, bob, "bob", "still here")
    [fault] = faults(caplog)
    assert "for %s (not logged in)" % address(alice) in fault.getMessage()
    assert "Traceback" in caplog.text
    assert "correct-horse-battery" not in caplog.text


def test_a_failing_operator_command_costs_that_admin_link(harness, monkeypatch, caplog, tmp_path):
    make, clock = harness
    h = make()
    path = str(tmp_path / "admin.sock")
    h.server.listen_admin(path)
    alice = h.logged_in("alice")

    def broken_who(server, link, rest):
        raise RuntimeError("who is broken")
    monkeypatch.setitem(sae_admin.ADMIN_COMMANDS, "who", broken_who)

    operator = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    operator.connect(path)
    operator.sendall(b"who\n")
    operator.shutdown(socket.SHUT_WR)
    operator.setblocking(False)
    h.buffers[operator] = b""
    assert h.expect_closed(operator) == ["internal error"]
    say_round_trip(h, alice, "alice", "still here")
    [fault] = faults(caplog)
    assert "for the operator on the admin socket" in fault.getMessage()


# A server whose sweep fails once, in the very turn that accepted the SAY
# "the last word", before that message is stored: a bug outside any session.
SWEEP_FAILS_AFTER_THE_LAST_WORD = textwrap.dedent('''
    import sys
    import sae_server

    armed = []
    say, sweep = sae_server.COMMANDS["SAY"], sae_server.Server.sweep

    def say_and_arm(server, session, text):
        say(server, session, text)
        if text == "the last word":
            armed.append(True)
            server.next_sweep = server.now

    def failing_sweep(server):
        if armed:
            armed.clear()
            raise RuntimeError("the sweep is broken")
        sweep(server)

    sae_server.COMMANDS["SAY"] = say_and_arm
    sae_server.Server.sweep = failing_sweep
    sys.exit(sae_server.main(sys.argv[1:]))
''')


def test_a_fault_outside_any_session_shuts_down_in_order(tmp_path):
    path = str(tmp_path / "admin.sock")
    server = ServerProcess(tmp_path, "--admin-socket", path,
                           program=("-c", SWEEP_FAILS_AFTER_THE_LAST_WORD)).start()
    try:
        alice, bob = server.client(), server.client()
        for client, name in ((alice, "alice"), (bob, "bob")):
            client.register(name)
            client.login(name)
        alice.send("SAY the last word")
        for client in (alice, bob):
            lines = client.expect_closed()
            assert lines[-1] == "BYE server shutting down (internal error)"
            assert [line for line in lines if re.match(r"MSG \d+ \S+ alice the last word$", line)]
        assert server.proc.wait(TIMEOUT) == 1
    finally:
        server.stop()
    assert not os.path.exists(path)
    errors = [line for line in server.log if " ERROR " in line]
    assert len(errors) == 1 and "internal error in the loop" in errors[0]
    assert "RuntimeError: the sweep is broken" in "".join(server.log)
    store = open_store(server.db_url)
    try:
        assert [message.body for message in store.room_history(10)] == ["the last word"]
    finally:
        store.close()
