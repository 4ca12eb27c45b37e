"""Time-driven behaviour (pings, ping and login timeouts), with the clock
moved by freezegun instead of waiting.

The server runs in this process and the test turns its loop by hand
(``Harness`` in conftest.py), so the frozen clock is the only clock it sees;
the clients are real sockets on loopback.
"""

import time

def test_silent_client_is_pinged_then_timed_out(harness):
    make, clock = harness
    h = make(ping_interval=60, ping_timeout=30)
    alice = h.logged_in("alice")
    watcher = h.logged_in("bob")

    clock.tick(61)
    h.expect(alice, r"PING \S+")
    clock.tick(31)
    assert h.expect(alice, r"BYE ").startswith("BYE ping timeout")
    assert "LEAVE alice ping timeout" in h.expect(watcher, r"LEAVE alice")


def test_answering_ping_keeps_the_session(harness):
    make, clock = harness
    h = make(ping_interval=60, ping_timeout=30)
    alice = h.logged_in("alice")

    clock.tick(61)
    token = h.expect(alice, r"PING (\S+)").split(" ", 1)[1]
    # PONG is the answer to PING, and nothing answers it: the next line
    # alice hears is the answer to the PING sent after it.
    alice.sendall(b"PONG " + token.encode() + b"\nPING mark\n")
    assert h.expect(alice, r".") == "PONG mark"
    clock.tick(31)
    alice.sendall(b"PING still-here\n")
    assert h.expect(alice, r".") == "PONG still-here"


def test_any_line_resets_the_silence(harness):
    make, clock = harness
    h = make(ping_interval=60, ping_timeout=30)
    alice = h.logged_in("alice")
    for _ in range(5):
        clock.tick(50)
        alice.sendall(b"WHO\n")
        # No PING arrives before the answer: 50 s of silence is below the interval.
        assert h.expect(alice, r"USERS|PING").startswith("USERS")


def test_connection_that_never_logs_in_is_closed(harness):
    make, clock = harness
    h = make(login_timeout=30)
    idle = h.connect()
    patient = h.logged_in("carol")
    clock.tick(29)
    idle.sendall(b"PING early\n")
    h.expect(idle, r"PONG early")
    clock.tick(2)
    assert h.expect_closed(idle) == ["BYE login timeout"]
    patient.sendall(b"PING\n")
    h.expect(patient, r"PONG")


def test_kick_lasts_its_seconds_on_the_monotonic_clock(harness):
    make, clock = harness
    h = make(kick_seconds=120)
    h.logged_in("bob")
    h.server.kick("bob", 120, "cool down")

    clock.tick(119)
    retry = h.connect()
    retry.sendall(b"LOGIN bob password1\n")
    assert h.expect(retry, r"ERR") == "ERR 423 1 kicked, try again in 1 seconds"
    assert h.expect_closed(retry) == []

    clock.tick(1)
    back = h.connect()
    back.sendall(b"LOGIN BOB password1\n")
    assert h.expect(back, r"OK|ERR") == "OK LOGIN bob"


def test_wall_clock_jump_does_not_end_a_kick(harness, monkeypatch):
    make, clock = harness
    h = make()
    h.logged_in("bob")
    h.server.kick("bob", 120, "cool down")
    # An NTP correction or an operator's `date -s` moves the wall clock a
    # day ahead; the monotonic clock, which kicks are measured on, does not.
    wall = time.time()
    monkeypatch.setattr(time, "time", lambda: wall + 86400)
    clock.tick(10)
    retry = h.connect()
    retry.sendall(b"LOGIN bob password1\n")
    assert h.expect(retry, r"ERR") == "ERR 423 110 kicked, try again in 110 seconds"
