"""IRC's CHATHISTORY TARGETS end to end: which channels and private
conversations an account had, each at its latest message, ordered by it.

The server runs in this process (conftest's Harness) under a frozen clock
that the test moves a second between messages, so that every message has a
time of its own and the windows below fall between known moments; its
clients are real IRC connections on loopback, and its store a real SQLite
file or a real MariaDB database (both, for each test).
"""

import collections
import re
import socket

import pytest

from conftest import ITERATIONS

BOTH_BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "mysql"])

CAPS = "batch server-time message-tags echo-message draft/chathistory"
START = "2026-11-28T12:00:%02d.000Z"  # the harness's clock, a second at a time
BEFORE_ALL = "timestamp=2020-01-01T00:00:00.000Z"
AFTER_ALL = "timestamp=2262-01-01T00:00:00.000Z"


class Irc:
    """An IRC client of the Harness's server, logged in with PASS (or a
    guest, without)."""

    def __init__(self, h, nick, password="password1", caps=CAPS):
        self.h, self.nick = h, nick
        self.pending = collections.deque()
        self.sock = socket.create_connection(("127.0.0.1", h.irc_port))
        self.sock.setblocking(False)
        h.buffers[self.sock] = b""
        login = "PASS %s:%s\r\n" % (nick, password) if password else ""
        self.send("CAP LS 302\r\nCAP REQ :%s\r\n%sNICK %s\r\nUSER %s 0 * :%s\r\nCAP END" % (
            caps, login, nick, nick, nick))
        self.expect(r"366 %s #general " % nick)

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def next(self):
        """The next line, turning the server's loop until there is one."""
        for _ in range(ITERATIONS):
            if self.pending:
                return self.pending.popleft()
            self.h.turn()
            for line in self.h.lines(self.sock):
                assert line is not None, "closed"
                self.pending.append(line.rstrip("\r"))
        raise AssertionError("no line came")

    def expect(self, pattern):
        """The next line that matches, without its tags and source."""
        while True:
            match = re.match(pattern, strip(self.next()))
            if match:
                return match

    def say(self, target, text):
        """Send, and wait for the echo: the message is stored."""
        self.send("PRIVMSG %s :%s" % (target, text))
        self.expect(r"PRIVMSG %s :%s" % (re.escape(target), re.escape(text)))

    def targets(self, first=BEFORE_ALL, second=AFTER_ALL, limit=100):
        """The (target, time) pairs of a TARGETS answer, checked to be one
        draft/chathistory-targets batch."""
        self.send("CHATHISTORY TARGETS %s %s %d" % (first, second, limit))
        ref = self.expect(r"BATCH \+(\S+) draft/chathistory-targets$").group(1)
        found = []
        while True:
            line = self.next()
            if strip(line) == "BATCH -" + ref:
                return found
            assert line.startswith("@batch=%s " % ref), line
            target, moment = re.match(r"CHATHISTORY TARGETS (\S+) (\S+)$", strip(line)).groups()
            found.append((target, moment))


def strip(line):
    """A line without its tags and its source."""
    return re.sub(r"^(@\S+ )?(:\S+ )?", "", line)


def at(second):
    return START % second


@pytest.fixture
def chat(harness, db_url):
    """``(h, clock, users)``: a Harness on ``db_url`` with the IRC listener,
    and ``users(*names)`` making each account and logging it in over IRC."""
    make, clock = harness
    h = make(db_url=db_url, irc=True)

    def users(*names):
        for name in names:
            h.logged_in(name).close()
        return [Irc(h, name) for name in names]
    return h, clock, users


@BOTH_BACKENDS
def test_targets_are_channels_and_nicks_by_their_latest_message(chat):
    h, clock, users = chat
    alice, bob, carol = users("alice", "bob", "carol")
    for client in (alice, bob):
        client.send("JOIN #club")
        client.expect(r"366 %s #club " % client.nick)
    # A second apart, at 12:00:01 to 12:00:07.
    for speaker, target, text in [(alice, "#general", "hello all"), (alice, "bob", "hello bob"),
                                  (bob, "#club", "in the club"), (carol, "alice", "hello alice"),
                                  (carol, "bob", "not alice's business"), (alice, "alice", "a note to myself"),
                                  (bob, "alice", "bob again")]:
        clock.tick(1)
        speaker.say(target, text)
    everything = [("#general", at(1)), ("#club", at(3)), ("carol", at(4)), ("alice", at(6)), ("bob", at(7))]
    assert alice.targets() == everything
    # The first ones, from the earlier moment on; from the later one
    # backwards, the last ones, still oldest first.
    assert alice.targets(limit=2) == everything[:2]
    assert alice.targets(AFTER_ALL, BEFORE_ALL, 2) == everything[-2:]
    # Strictly between two moments.
    assert alice.targets("timestamp=" + at(1), "timestamp=" + at(6)) == everything[1:3]
    assert alice.targets("timestamp=" + at(6), "timestamp=" + at(1)) == everything[1:3]
    assert alice.targets("timestamp=" + at(4), "timestamp=" + at(4)) == []
    # bob's side, with a channel alice is not in.
    assert bob.targets() == [("#general", at(1)), ("#club", at(3)), ("carol", at(5)), ("alice", at(7))]


@BOTH_BACKENDS
def test_a_conversation_whose_latest_message_is_later_is_not_in_an_earlier_window(chat):
    h, clock, users = chat
    alice, bob = users("alice", "bob")
    for second in (1, 2, 3):
        clock.tick(1)
        alice.say("bob", "message %d" % second)
    # Two of its messages are in the window, its latest is not.
    assert alice.targets(BEFORE_ALL, "timestamp=" + at(3)) == []
    assert alice.targets() == [("bob", at(3))]
    # A channel the account leaves is no target of it any more.
    alice.send("JOIN #club")
    alice.expect(r"366 alice #club ")
    clock.tick(1)
    alice.say("#club", "bye")
    assert alice.targets() == [("bob", at(3)), ("#club", at(4))]
    alice.send("PART #club")
    alice.expect(r"PART #club")
    assert alice.targets() == [("bob", at(3))]


@BOTH_BACKENDS
def test_the_next_guest_of_a_nick_has_none_of_the_conversations_before(chat):
    h, clock, users = chat
    h.server.irc = h.server.irc._replace(guests=True)
    [alice] = users("alice")
    first = Irc(h, "baz", password=None)
    clock.tick(1)
    first.say("alice", "a secret from the first baz")
    assert [target for target, _ in first.targets()] == ["alice"]
    first.send("QUIT")
    h.expect_closed(first.sock)
    second = Irc(h, "baz", password=None)
    assert second.targets() == []
    assert alice.targets() == [("baz", at(1))]
    clock.tick(1)
    second.say("alice", "hello from the second baz")
    assert second.targets() == [("alice", at(2))]
    assert alice.targets() == [("baz", at(2))]


def test_targets_without_the_database_is_a_fail_and_the_client_stays(harness, mysql_url, mysql_proxy):
    make, clock = harness
    h = make(db_url=mysql_proxy.url(mysql_url), irc=True)
    h.logged_in("alice").close()
    alice = Irc(h, "alice")
    assert alice.targets() == []
    mysql_proxy.cut()
    alice.send("CHATHISTORY TARGETS %s %s 10" % (BEFORE_ALL, AFTER_ALL))
    alice.expect(r"FAIL CHATHISTORY MESSAGE_ERROR TARGETS \* :Storage unavailable, try again$")
    alice.send("PING still-here")
    alice.expect(r"PONG \S+ :?still-here$")
    mysql_proxy.resume()
