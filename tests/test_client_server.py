"""The client's model and the server, against each other.

Each side has its own tests; these put the two halves of the protocol
together, so that a rule one side assumes and the other does not keep
cannot pass unnoticed (the client once answered the server's PING with a
PONG the server did not accept, and each side's tests approved of its own
half). The client is ``Chat`` (sae_client_curses.py) with no screen; the
server is a real ``Server`` in this process (conftest's Harness) on a clock
frozen by freezegun, so that idle minutes pass at once; between them, a real
loopback socket.
"""

import socket

import pytest

from sae_client_curses import Chat, clock, row_text
from sae_protocol import MAX_LINE_BYTES, format_command

TURNS = 500  # loop turns a step may take before the test gives up


class Wire:
    """A Chat on a real socket to the harness's server: ``turn`` moves
    bytes both ways once, turns the server's loop once and lets the
    client's timers fire, as the client's own Loop would."""

    def __init__(self, harness, name, password="password1", register=False):
        self.h = harness
        self.chat = Chat("127.0.0.1", harness.server.port, name, password)
        self.sock = None
        self.chat.submit_login(register=register)

    def turn(self):
        chat = self.chat
        if chat.want_close:
            self._close()
            chat.want_close = ""
        if chat.want_connect and self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.h.server.port))
            self.sock.setblocking(False)
            self.h.buffers[self.sock] = b""  # the harness hangs it up at the end
            chat.connection_made()
        if chat.outbox and self.sock is not None:
            self.sock.sendall(bytes(chat.outbox))
            chat.outbox.clear()
        self.h.turn()
        while self.sock is not None:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self._close()
                chat.connection_lost("connection closed by the server")
                break
            chat.receive(data)
        chat.tick(clock())

    def _close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def until(self, what, predicate):
        for _ in range(TURNS):
            self.turn()
            if predicate():
                return
        raise AssertionError("never %s; screen:\n%s" % (what, self.screen()))

    def online(self):
        self.until("online", lambda: self.chat.state == "online" and not self.chat.exchange)
        return self

    def type(self, line):
        self.chat.input.set(line)
        self.chat.key("\r")

    def screen(self):
        return "\n".join(row_text(row) for row in self.chat.scrollback.view(120, 200))

    def errors(self):
        return [entry.text for entry in self.chat.scrollback.entries if entry.kind == "error"]


def test_an_idle_client_stays_online_for_an_hour_without_an_error(harness):
    make, clock = harness
    h = make(ping_interval=60, ping_timeout=30)
    alice = Wire(h, "alice", register=True).online()
    for _ in range(60):  # an hour, a minute at a time
        clock.tick(60)
        alice.until("pinged", lambda: alice.chat.outbox.startswith(b"PONG "))
        alice.turn()
    assert alice.chat.state == "online"
    assert alice.errors() == []
    assert not alice.chat.exchange
    alice.type("still here")
    alice.until("confirmed", lambda: not alice.chat.exchange)
    assert "<alice> still here" in alice.screen()
    assert alice.errors() == []


@pytest.mark.parametrize("pong_first", [False, True], ids=["say-then-pong", "pong-then-say"])
def test_a_say_in_flight_while_the_server_pings_is_delivered_and_confirmed(harness, pong_first):
    make, clock = harness
    h = make(ping_interval=60, ping_timeout=30)
    alice = Wire(h, "alice", register=True).online()
    bob = Wire(h, "bob", register=True).online()
    clock.tick(61)
    # The server's sweep sends its PING before it reads anything more of
    # alice; she types while it is on its way, before or after her client
    # has answered it.
    h.turn()
    if pong_first:
        alice.turn()
        assert alice.chat.outbox.startswith(b"PONG ")
    alice.type("typed during the ping")
    alice.until("confirmed", lambda: not alice.chat.exchange)
    bob.until("delivered", lambda: "typed during the ping" in bob.screen())
    assert alice.errors() == []
    assert alice.screen().count("<alice> typed during the ping") == 1
    assert alice.chat.input.text == ""


def test_wrong_password_is_said_on_the_login_form(harness):
    make, clock = harness
    h = make()
    Wire(h, "alice", register=True).online()
    intruder = Wire(h, "alice", password="not-her-password")
    intruder.until("refused", lambda: intruder.chat.form.error)
    assert intruder.chat.form.error == "wrong name or password"
    assert intruder.chat.screen == "login" and not intruder.chat.exchange


def test_a_taken_name_is_said_on_the_login_form(harness):
    make, clock = harness
    h = make()
    Wire(h, "alice", register=True).online()
    copycat = Wire(h, "ALICE", register=True)
    copycat.until("refused", lambda: copycat.chat.form.error)
    assert copycat.chat.form.error == "that name is taken"


def test_too_many_failed_logins_say_when_to_try_again(harness):
    make, clock = harness
    h = make(exempt="", login_failures=1)
    Wire(h, "alice", register=True).online()
    first = Wire(h, "alice", password="wrong-password")
    first.until("refused", lambda: first.chat.form.error)
    second = Wire(h, "alice", password="wrong-password")
    second.until("refused", lambda: second.chat.form.error)
    assert second.chat.form.error.startswith("too fast: try again in 60 seconds")


def test_a_message_to_nobody_says_no_such_account(harness):
    make, clock = harness
    h = make()
    alice = Wire(h, "alice", register=True).online()
    alice.type("/msg nobody hello")
    alice.until("answered", lambda: not alice.chat.exchange)
    [error] = alice.errors()
    assert error == "not sent: nobody has no account here"


def test_the_longest_lines_the_client_sends_are_delivered(harness):
    make, clock = harness
    h = make()
    alice = Wire(h, "alice", register=True).online()
    bob = Wire(h, "bob", register=True).online()
    said = "y" * (MAX_LINE_BYTES - len("SAY "))
    told = "x" * (MAX_LINE_BYTES - len("TELL bob "))
    assert len(format_command("TELL", "bob", told)) == MAX_LINE_BYTES + 1  # with its newline
    alice.type(said)
    alice.type("/msg bob " + told)
    alice.until("confirmed", lambda: not alice.chat.exchange)
    # What the server sends back is longer than what was sent (id, time,
    # names): both arrive whole.
    # The TELL is in bob's window for alice, the SAY in the room's.
    bob.until("delivered", lambda: sum(e.text in (said, told) for window in bob.chat.windows
                                       for e in window.scrollback.entries) == 2)
    assert alice.errors() == [] and bob.errors() == []
    alice.type("/win 1")  # /msg went to bob's window; back to the room, where text is a SAY
    alice.type("/msg bob " + told + "x")
    alice.type(said + "y")
    too_long = "too long to send: %d bytes, at most %d" % (MAX_LINE_BYTES + 1, MAX_LINE_BYTES)
    assert alice.errors() == [too_long, too_long]
    assert not alice.chat.exchange


def test_kicked_waits_it_out_then_logs_back_in(harness):
    make, clock = harness
    h = make()
    alice = Wire(h, "alice", register=True).online()
    assert h.operator("kick alice 30 calm down") == "kicked alice for 30s (1 session closed)"
    alice.until("kicked", lambda: alice.chat.state == "offline")
    assert "you were kicked for 30 seconds: calm down" in alice.errors()
    clock.tick(31)
    alice.until("back", lambda: alice.chat.state == "online" and not alice.chat.exchange)


def test_banned_says_so_and_does_not_come_back(harness):
    make, clock = harness
    h = make()
    alice = Wire(h, "alice", register=True).online()
    assert h.operator("ban alice spamming") == "banned alice (1 session closed)"
    alice.until("banned", lambda: alice.chat.state == "offline")
    assert "you are banned from this server (spamming); /quit to leave" in alice.errors()
    clock.tick(3600)
    for _ in range(5):
        alice.turn()
    assert alice.chat.state == "offline" and alice.chat.reconnect_at is None
    again = Wire(h, "alice")
    again.until("refused", lambda: again.chat.form.error)
    assert again.chat.form.error == "this account is banned: spamming"


def test_storage_down_gives_the_text_back_and_chat_resumes(harness, mysql_url, mysql_proxy):
    make, clock = harness
    h = make(db_url=mysql_proxy.url(mysql_url))
    alice = Wire(h, "alice", register=True).online()
    mysql_proxy.cut()
    alice.type("important")
    alice.until("refused", lambda: not alice.chat.exchange)
    assert alice.errors() == ["not sent: the server cannot store messages right now"]
    assert alice.chat.input.text == "important"
    assert alice.chat.state == "online"
    mysql_proxy.resume()
    clock.tick(10)  # past the store's wait before it tries the database again
    alice.until("stored", lambda: not h.server.storage_down)
    alice.chat.key("\r")
    alice.until("confirmed", lambda: not alice.chat.exchange)
    assert "<alice> important" in alice.screen()
    assert len(alice.errors()) == 1


def test_an_action_reaches_the_others_as_an_action(harness):
    make, clock = harness
    h = make()
    alice = Wire(h, "alice", register=True).online()
    bob = Wire(h, "bob", register=True).online()
    alice.type("/me waves at everyone")
    alice.until("confirmed", lambda: not alice.chat.exchange)
    bob.until("shown", lambda: "* alice waves at everyone" in bob.screen())
    assert "* alice waves at everyone" in alice.screen()
    assert alice.errors() == []
