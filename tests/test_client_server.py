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

import sae_ircd
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


# --- rooms (protocol v1.1) --------------------------------------------------

def rooms_online(harness, name, register=True):
    """A Wire logged in with rooms, or the test is skipped while the server
    does not serve them (it answers CAP with ERR 421, as v1.0 did)."""
    wire = Wire(harness, name, register=register).online()
    if wire.chat.rooms is not True:
        pytest.skip("this server does not serve rooms yet (CAP is ERR 421)")
    return wire


def window_text(wire, name):
    window = next(w for w in wire.chat.windows if w.name.lower() == name.lower())
    return "\n".join(row_text(row) for row in window.scrollback.view(120, 200))


def test_against_the_server_the_client_knows_whether_it_has_rooms(harness):
    make, clock = harness
    h = make()
    alice = Wire(h, "alice", register=True).online()
    no_rooms = "this server has no rooms (protocol v1): one room, #general, and private conversations"
    said = [entry.text for entry in alice.chat.scrollback.entries]
    # Either way the client is online, without an error, and says once
    # which protocol the server speaks.
    assert alice.chat.rooms in (True, False) and alice.errors() == []
    assert said.count(no_rooms) == (0 if alice.chat.rooms else 1)


def test_an_irc_guest_is_marked_a_guest_in_the_client_s_list_of_who_is_online(harness):
    make, clock = harness
    h = make(irc=True)
    h.server.irc = sae_ircd.irc_options("irc.test", guests=True)
    visitor = socket.create_connection(("127.0.0.1", h.irc_port))
    visitor.setblocking(False)
    h.buffers[visitor] = b""
    visitor.sendall(b"NICK visitor\r\nUSER visitor 0 * :v\r\n")
    h.expect(visitor, r".* 001 visitor ")
    alice = Wire(h, "alice", register=True).online()
    assert alice.chat.users == ["alice", "visitor"] or alice.chat.users == ["visitor", "alice"]
    assert "2 online: " in alice.screen() and "visitor (guest)" in alice.screen()
    assert ("visitor (guest)", "@visitor") in alice.chat.names_pane(10)
    assert alice.errors() == []


def test_two_accounts_talk_in_a_room_of_their_own(harness):
    make, clock = harness
    h = make()
    alice = rooms_online(h, "alice")
    bob = rooms_online(h, "bob")
    alice.type("/join #Homework")
    alice.until("joined", lambda: not alice.chat.exchange)
    assert [w.name for w in alice.chat.windows] == ["#general", "#Homework"]
    assert alice.chat.windows.active.name == "#Homework"
    assert "#Homework: 1 member, 1 online: alice" in alice.screen()
    alice.type("/topic Maths until Friday")
    alice.until("topic set", lambda: not alice.chat.exchange)
    bob.type("/join #homework")                 # spelled otherwise: the same room
    bob.until("joined", lambda: not bob.chat.exchange and bob.chat.windows.active.joined)
    assert bob.chat.windows.active.name == "#Homework"
    assert "topic of #Homework: Maths until Friday (set by alice" in bob.screen()
    alice.until("bob's join", lambda: "--> bob joined #Homework" in alice.screen())
    bob.type("page 12, exercise 3")
    bob.until("confirmed", lambda: not bob.chat.exchange)
    alice.until("delivered", lambda: "<bob> page 12, exercise 3" in alice.screen())
    alice.type("/win 1")
    bob.type("alice: done?")
    bob.until("confirmed", lambda: not bob.chat.exchange)
    alice.until("mention", lambda: alice.chat.windows.get(2).activity == 2)
    assert alice.chat.status_line(80)[0].startswith(" [1:#general 2:#Homework!] ")
    assert "done?" not in window_text(alice, "#general")
    bob.type("/part see you")
    bob.until("parted", lambda: len(bob.chat.windows) == 1)
    alice.until("bob's part", lambda: "<-- bob left #Homework (see you)" in window_text(alice, "#Homework"))
    assert alice.errors() == [] and bob.errors() == []


def test_a_room_and_a_conversation_page_back_through_the_servers_history(harness):
    make, clock = harness
    h = make()
    alice = rooms_online(h, "alice")
    bob = rooms_online(h, "bob")
    for wire in (alice, bob):
        wire.type("/join #homework")
        wire.until("joined", lambda wire=wire: not wire.chat.exchange)
    for number in range(60):
        bob.chat.send("RSAY", "#homework", "line %d" % number)
        bob.chat.send("TELL", "alice", "whisper %d" % number)
        bob.until("confirmed", lambda: not bob.chat.exchange)
    fresh = rooms_online(h, "alice", register=False)    # a second session: nothing on hand
    fresh.type("/win 2")
    fresh.until("recent history", lambda: "line 59" in fresh.screen() and not fresh.chat.exchange)
    assert "line 9\n" not in fresh.screen()
    fresh.chat.scrollback.view(120, 10)
    for _ in range(30):
        fresh.chat.key("KEY_PPAGE")
        fresh.until("page", lambda: not fresh.chat.exchange)
    assert "no older messages" in fresh.screen()
    room = fresh.screen()
    assert all(room.count("<bob> line %d\n" % n) == 1 for n in range(59))
    fresh.type("/query bob")
    fresh.until("conversation", lambda: "whisper 59" in fresh.screen() and not fresh.chat.exchange)
    fresh.chat.scrollback.view(120, 10)
    for _ in range(30):
        fresh.chat.key("KEY_PPAGE")
        fresh.until("page", lambda: not fresh.chat.exchange)
    assert all(fresh.screen().count("<bob> whisper %d\n" % n) == 1 for n in range(59))
    assert fresh.errors() == []


def test_a_reconnect_catches_up_rooms_and_private_messages_received_while_away(harness):
    make, clock = harness
    h = make()
    alice = rooms_online(h, "alice")
    bob = rooms_online(h, "bob")
    for wire in (alice, bob):
        wire.type("/join #homework")
        wire.until("joined", lambda wire=wire: not wire.chat.exchange)
    bob.type("before the drop")
    bob.until("confirmed", lambda: not bob.chat.exchange)
    alice.until("delivered", lambda: "before the drop" in alice.screen())
    alice.type("/win 1")
    alice._close()
    alice.chat.connection_lost("reset by the test")
    bob.until("alice gone", lambda: "<-- alice went offline" in window_text(bob, "#homework"))
    bob.type("while you were away")
    bob.type("/msg alice psst, while you were away")
    bob.until("confirmed", lambda: not bob.chat.exchange)
    clock.tick(2)
    alice.until("back", lambda: alice.chat.state == "online" and not alice.chat.exchange)
    assert [w.name for w in alice.chat.windows] == ["#general", "#homework", "bob"]
    homework = window_text(alice, "#homework")
    assert homework.count("before the drop") == 1 and homework.count("while you were away") == 1
    assert "psst, while you were away" in window_text(alice, "bob")
    assert alice.chat.status_line(120)[0].startswith(" [1:#general 2:#homework* 3:bob!] ")
    assert alice.errors() == ["connection lost (reset by the test); reconnecting"]
