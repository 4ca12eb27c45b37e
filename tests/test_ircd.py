"""The IRC listener end to end: real sae-server processes, real sockets on
loopback, IRC clients speaking raw lines as irssi and WeeChat do, beside
protocol v1 clients in the same rooms.

Each test reads like a user's story: connect, log in (SASL, PASS,
NickServ, REGISTER), join, say, see. Every wait is for an expected line,
with a timeout.
"""

import base64
import re
import socket

import pytest
from conftest import TIMEOUT, LineClient, ServerProcess

SERVER_NAME = "irc.test"


class IrcClient(LineClient):
    """An IRC client over a real socket: lines end in CR LF, and
    ``expect`` matches a line with its tags and source stripped unless the
    pattern asks for them (``raw=True``)."""

    def __init__(self, port):
        LineClient.__init__(self, port)
        self.nick = None

    def send(self, line):
        LineClient.send(self, line.rstrip("\r\n") + "\r\n")

    def next(self, timeout=TIMEOUT):
        return LineClient.next(self, timeout).rstrip("\r")

    def expect(self, pattern, timeout=TIMEOUT, raw=False):
        regex = re.compile(pattern)
        while True:
            line = self.next(timeout)
            text = line if raw else strip_prefix(line)
            match = regex.match(text)
            if match:
                return match

    def expect_closed(self, timeout=TIMEOUT):
        return [line.rstrip("\r") for line in LineClient.expect_closed(self, timeout)]

    def register_connection(self, nick, caps=(), sasl=None, password=None):
        """Connect as a client does: CAP LS 302, REQ, SASL PLAIN, NICK, USER,
        CAP END; returns once 001 arrived (and, logged in, the end of MOTD)."""
        self.nick = nick
        self.send("CAP LS 302")
        self.expect(r"CAP \* LS :")
        wanted = list(caps) + (["sasl"] if sasl else [])
        if wanted:
            self.send("CAP REQ :" + " ".join(wanted))
            self.expect(r"CAP \* ACK")
        if password:
            self.send("PASS " + password)
        self.send("NICK " + nick)
        self.send("USER %s 0 * :%s" % (nick, nick))
        if sasl:
            self.send("AUTHENTICATE PLAIN")
            self.expect(r"AUTHENTICATE \+")
            payload = base64.b64encode(("%s\0%s\0%s" % (sasl[0], sasl[0], sasl[1])).encode()).decode()
            self.send("AUTHENTICATE " + payload)
            self.expect(r"903 ")
        self.send("CAP END")
        self.expect(r"001 ")
        self.expect(r"(376|422) ")


def strip_prefix(line):
    """A line without its tags and source: ``PRIVMSG #general :hi``."""
    if line.startswith("@"):
        line = line.split(" ", 1)[1]
    if line.startswith(":"):
        line = line.split(" ", 1)[1]
    return line


def tags_of(line):
    if not line.startswith("@"):
        return {}
    return dict(item.partition("=")[::2] for item in line[1:line.index(" ")].split(";"))


@pytest.fixture
def ircd(tmp_path, db_url):
    """A server with its IRC listener on a free port; ``ircd.irc()`` connects."""
    started = []

    def make(*args):
        running = ServerProcess(tmp_path, "--irc-port", "0", "--server-name", SERVER_NAME, *args,
                                db_url=db_url)
        running.start()
        running.irc_port = int(re.search(r"IRC port [^ ]*:(\d+)", "".join(running.log)).group(1))

        def irc():
            client = IrcClient(running.irc_port)
            running.clients.append(client)
            return client
        running.irc = irc
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def v1_user(server, name, password="password1"):
    client = server.client()
    client.register(name, password)
    client.login(name, password)
    return client


def irc_user(server, name, password="password1", caps=()):
    """An account made on v1, logged in over IRC with SASL, its join burst read."""
    maker = server.client()
    maker.register(name, password)
    return irc_login(server, name, password, caps)


def irc_login(server, name, password="password1", caps=()):
    """A new IRC session of an account, logged in with SASL, its join burst read."""
    client = server.irc()
    client.register_connection(name, caps=caps, sasl=(name, password))
    client.expect(r"366 %s #general " % name)
    return client


def test_sasl_login_joins_the_account_rooms_with_topic_names_and_history(ircd):
    server = ircd()
    alice = v1_user(server, "alice")
    alice.send("SAY hello from v1")
    alice.expect(r"MSG \d+ \S+ alice hello from v1")
    bob = server.client()
    bob.register("bob")
    irc = server.irc()
    irc.register_connection("bob", sasl=("bob", "password1"))
    irc.expect(r"JOIN #general", raw=False)
    names = irc.expect(r"353 bob = #general :(.*)")
    assert set(names.group(1).split()) == {"alice", "bob"}
    irc.expect(r"366 bob #general ")
    # Without server-time the replayed message starts with its time.
    irc.expect(r"PRIVMSG #general :\[\d{4}-\d\d-\d\d \d\d:\d\d UTC\] hello from v1")


def test_wrong_sasl_password_is_904_and_the_account_is_not_logged_in(ircd):
    server = ircd()
    server.client().register("carol")
    irc = server.irc()
    irc.send("CAP LS 302")
    irc.send("CAP REQ :sasl")
    irc.expect(r"CAP \* ACK")
    irc.send("NICK carol")
    irc.send("USER carol 0 * :c")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect(r"AUTHENTICATE \+")
    irc.send("AUTHENTICATE " + base64.b64encode(b"carol\0carol\0wrongpass1").decode())
    irc.expect(r"904 ")
    irc.send("CAP END")
    irc.expect(r"001 carol")
    irc.expect(r"NOTICE carol :.*SASL.*NickServ")
    irc.send("JOIN #general")
    irc.expect(r"NOTICE carol :Log in first")


def sasl_plain(client, name, password, expect=r"903 "):
    """AUTHENTICATE PLAIN at any time (before or after registration)."""
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    for chunk in irc_chunks(("%s\0%s\0%s" % (name, name, password)).encode()):
        client.send("AUTHENTICATE " + chunk)
    return client.expect(expect)


def irc_chunks(payload):
    encoded = base64.b64encode(payload).decode()
    chunks = [encoded[i:i + 400] for i in range(0, len(encoded), 400)]
    return chunks + ["+"] if not chunks or len(chunks[-1]) == 400 else chunks


def test_a_guest_logs_in_with_sasl_after_registration_and_becomes_its_account(ircd):
    """A guest that logs in later (SASL, as IRCv3 allows at any time) is
    its account from then on: renamed, out of the channels that were the
    guest's alone, the account's channels joined, the others told that
    the guest went and the account came."""
    server = ircd("--irc-guests")
    alice = v1_user(server, "alice")
    alice.send("JOIN #alices")
    alice.expect(r"OK JOIN #alices")
    alice.send("QUIT")
    watcher = irc_user(server, "watcher", caps=("away-notify",))
    watching = v1_user(server, "olly")
    guest = server.irc()
    guest.register_connection("visitor", caps=("sasl",))
    guest.expect(r"366 visitor #general ")
    guest.send("JOIN #guests")
    guest.expect(r"366 visitor #guests ")
    guest.send("PRIVMSG #general :said as a guest")
    watcher.expect(r"PRIVMSG #general :said as a guest")
    sasl_plain(guest, "alice", "wrong-password", expect=r"904 visitor ")
    sasl_plain(guest, "alice", "password1", expect=r"900 visitor visitor!visitor@\S+ alice ")
    guest.expect(r"903 visitor ")
    assert guest.next() == ":visitor!visitor@%s NICK alice" % SERVER_NAME
    # #guests was the guest's; #general is both's: its members anew (the
    # guest is still one); #alices is new to this client.
    assert guest.next() == ":alice!alice@%s PART #guests" % SERVER_NAME
    assert guest.next() == ":alice!alice@%s JOIN #alices" % SERVER_NAME
    guest.expect(r"366 alice #alices ")
    assert guest.expect(r"353 alice = #general :(.*)").group(1).split() == ["alice", "olly", "visitor", "watcher"]
    guest.expect(r"366 alice #general ")
    watcher.expect(r":visitor!visitor@\S+ AWAY :offline \(logged in as alice\)$", raw=True)
    watcher.expect(r":alice!alice@\S+ AWAY$", raw=True)
    watching.expect(r"LEAVE visitor logged in as alice")
    watching.expect(r"JOIN alice")
    guest.send("PRIVMSG #alices :now as alice")
    guest.send("PRIVMSG #general :and here")
    said = watcher.expect(r".*PRIVMSG #general :and here", raw=True).group(0)
    assert said.startswith(":alice!alice@")
    alice = server.client()
    alice.login("alice")
    alice.send("HISTORY #alices 1")
    alice.expect(r"RMSG \d+ \S+ #alices alice now as alice")


def test_a_guest_may_identify_to_its_account_with_nickserv(ircd):
    server = ircd("--irc-guests")
    server.client().register("alice")
    guest = server.irc()
    guest.register_connection("wanderer")
    guest.expect(r"NOTICE wanderer :You are a guest here\. .* /msg NickServ IDENTIFY <name> <password>$")
    guest.send("PRIVMSG NickServ :IDENTIFY alice password1")
    guest.expect(r"NOTICE wanderer :You are now identified as alice")
    guest.expect(r"900 wanderer \S+ alice ")
    assert guest.next() == ":wanderer!wanderer@%s NICK alice" % SERVER_NAME
    guest.send("PRIVMSG NickServ :IDENTIFY alice password1")
    guest.expect(r"NOTICE alice :You are already logged in")


def test_sasl_again_after_login_switches_accounts(ircd):
    """Logged in, a client may authenticate again: to another account
    (it becomes that one) or to its own (nothing changes); a wrong
    password leaves it as it was."""
    server = ircd()
    server.client().register("bob")
    carol = irc_user(server, "carol", caps=("sasl",))
    sasl_plain(carol, "carol", "password1", expect=r"900 carol carol!\S+ carol ")
    carol.expect(r"903 carol ")
    carol.send("PING same-account")
    assert strip_prefix(carol.next()) == "PONG %s same-account" % SERVER_NAME
    sasl_plain(carol, "bob", "not-bobs", expect=r"904 carol ")
    sasl_plain(carol, "bob", "password1", expect=r"900 carol \S+ bob ")
    carol.expect(r"903 carol ")
    assert carol.next() == ":carol!carol@%s NICK bob" % SERVER_NAME
    assert carol.expect(r"353 bob = #general :(.*)").group(1).split() == ["bob", "carol"]
    carol.send("WHOIS bob")
    carol.expect(r"330 bob bob bob ")


def test_a_client_that_did_not_log_in_may_authenticate_after_registration(ircd):
    server = ircd()
    server.client().register("dora")
    late = server.irc()
    late.send("CAP REQ :sasl")
    late.send("NICK dora")
    late.send("USER d 0 * :d")
    late.send("CAP END")
    late.expect(r"NOTICE dora :This server needs an account")
    sasl_plain(late, "dora", "password1", expect=r"900 dora ")
    late.expect(r"903 dora ")
    late.expect(r":dora!dora@\S+ JOIN #general$", raw=True)
    late.expect(r"366 dora #general ")


def test_sasl_payload_of_two_full_chunks_and_a_stream_that_never_ends(ircd):
    """800 bytes of base64 come as two chunks of 400 and "+"; a client that
    sends chunk after chunk is refused (904) as soon as it passes what any
    login can be, not after it has sent them all."""
    server = ircd()
    password = "x" * 592  # foo NUL foo NUL password: 600 bytes, 800 in base64
    server.client().register("foo", password)
    client = server.irc()
    client.send("CAP REQ :sasl")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    chunks = irc_chunks(("foo\0foo\0" + password).encode())
    assert [len(chunk) for chunk in chunks] == [400, 400, 1]
    for chunk in chunks:
        client.send("AUTHENTICATE " + chunk)
    client.expect(r"900 \* \S+ foo ")
    client.expect(r"903 ")
    endless = server.irc()
    endless.send("CAP REQ :sasl")
    endless.send("AUTHENTICATE PLAIN")
    endless.expect(r"AUTHENTICATE \+")
    for _ in range(5):
        endless.send("AUTHENTICATE " + "eHh4" * 100)
    assert endless.next() == ":%s 904 * :SASL authentication failed: payload too long" % SERVER_NAME


def test_pass_name_colon_password_and_pass_with_nick(ircd):
    server = ircd()
    server.client().register("dave")
    first = server.irc()
    first.send("PASS dave:password1")
    first.send("NICK whatever")
    first.send("USER d 0 * :d")
    first.expect(r"001 dave ")
    first.expect(r"366 dave #general ")
    second = server.irc()
    second.send("PASS password1")
    second.send("NICK dave")
    second.send("USER d 0 * :d")
    second.expect(r"001 dave ")
    second.expect(r"366 dave #general ")
    wrong = server.irc()
    wrong.send("PASS dave:not-the-password")
    wrong.send("NICK dave")
    wrong.send("USER d 0 * :d")
    wrong.expect(r"464 ")
    assert any(line.startswith("ERROR :Closing Link") for line in wrong.expect_closed())


def test_nickserv_register_then_identify_on_a_new_connection(ircd):
    server = ircd()
    irc = server.irc()
    irc.send("NICK erin")
    irc.send("USER e 0 * :e")
    irc.expect(r"001 erin")
    irc.send("PRIVMSG NickServ :HELP")
    irc.expect(r"NOTICE erin :REGISTER <password>", raw=False)
    irc.send("PRIVMSG NickServ :REGISTER sesame-open")
    irc.expect(r"NOTICE erin :Account erin registered")
    irc.expect(r"900 erin ")
    irc.expect(r"366 erin #general ")
    again = server.irc()
    again.send("NICK erin")
    again.send("USER e 0 * :e")
    again.expect(r"001 erin")
    again.send("PRIVMSG NickServ :IDENTIFY wrong-password")
    again.expect(r"NOTICE erin :Wrong name or password")
    again.send("PRIVMSG NickServ :IDENTIFY erin sesame-open")
    again.expect(r"NOTICE erin :You are now identified as erin")
    again.expect(r"366 erin #general ")
    # The account works on protocol v1 too.
    v1 = server.client()
    v1.login("erin", "sesame-open")


def test_account_registration_before_connect_and_weak_passwords(ircd):
    server = ircd("--password-min-bytes", "10")
    irc = server.irc()
    irc.send("CAP LS 302")
    irc.expect(r"CAP \* LS :.*draft/account-registration=before-connect")
    irc.send("NICK frank")
    irc.send("REGISTER * * short")
    irc.expect(r"FAIL REGISTER WEAK_PASSWORD frank :Passwords are at least 10 bytes")
    irc.send("REGISTER * * long-enough-1")
    irc.expect(r"REGISTER SUCCESS frank ")
    irc.send("USER f 0 * :f")
    irc.send("CAP END")
    irc.expect(r"001 frank ")
    irc.expect(r"366 frank #general ")
    taken = server.irc()
    taken.send("NICK frank")
    taken.send("REGISTER * * long-enough-2")
    taken.expect(r"FAIL REGISTER ACCOUNT_EXISTS frank ")
    # v1's REGISTER follows the same minimum.
    v1 = server.client()
    v1.send("REGISTER gina password1")
    v1.expect(r"ERR 400 passwords are 10 to \d+ bytes")


def test_v1_and_irc_talk_both_ways_in_a_room_and_in_private(ircd):
    server = ircd()
    alice = v1_user(server, "alice")
    bob = irc_user(server, "bob")
    bob.send("PRIVMSG #general :hi from \x02irc\x02")
    # v1 gets a form without control characters.
    alice.expect(r"MSG \d+ \S+ bob hi from irc$")
    bob.send("PRIVMSG #general :\x01ACTION waves\x01")
    alice.expect(r"MSG \d+ \S+ bob /me waves$")
    alice.send("SAY hello irc")
    bob.expect(r":alice!alice@%s PRIVMSG #general :hello irc$" % SERVER_NAME, raw=True)
    alice.send("SAY /me nods")
    bob.expect(r"PRIVMSG #general :\x01ACTION nods\x01")
    # Without echo-message bob never sees his own lines.
    assert not any("hi from" in line for line in bob.seen)
    bob.send("PRIVMSG alice :psst")
    alice.expect(r"PRIV \d+ \S+ bob alice psst")
    alice.send("TELL bob secret")
    bob.expect(r":alice!alice@%s PRIVMSG bob :secret" % SERVER_NAME, raw=True)
    bob.send("PRIVMSG nobody1 :anyone?")
    bob.expect(r"401 bob nobody1 ")


def test_a_notice_arrives_as_a_notice_on_irc_and_as_a_message_on_v1(ircd):
    """A NOTICE stays a NOTICE for the IRC clients that get it live (no
    client may answer one automatically: two bots cannot loop), in a
    channel and in private, echoed as one; v1 clients and history, which
    know no notices, have it as any message. Nothing answers a NOTICE that
    cannot be delivered."""
    server = ircd()
    carol = v1_user(server, "carol")
    bob = irc_user(server, "bob", caps=("message-tags",))
    bot = irc_user(server, "bot", caps=("echo-message", "batch", "server-time", "message-tags"))
    quiet = irc_user(server, "quiet")
    bot.send("NOTICE #general :feed updated")
    line = bob.expect(r".*NOTICE #general :feed updated", raw=True).group(0)
    assert line.startswith("@msgid=") and line.endswith(" :bot!bot@%s NOTICE #general :feed updated" % SERVER_NAME)
    assert quiet.next() == ":bot!bot@%s NOTICE #general :feed updated" % SERVER_NAME
    assert strip_prefix(bot.next()) == "NOTICE #general :feed updated"
    carol.expect(r"MSG \d+ \S+ bot feed updated")
    quiet.send("NOTICE #general :said quietly")  # no echo-message: the others only
    assert bob.expect(r".*said quietly", raw=True).group(0).endswith("NOTICE #general :said quietly")
    assert strip_prefix(bot.next()) == "NOTICE #general :said quietly"
    bot.send("NOTICE bob :just so you know")
    assert strip_prefix(bob.next()) == "NOTICE bob :just so you know"
    assert strip_prefix(bot.next()) == "NOTICE bob :just so you know"
    bot.send("NOTICE carol :to v1")
    carol.expect(r"PRIV \d+ \S+ bot carol to v1")
    assert strip_prefix(bot.next()) == "NOTICE carol :to v1"
    bot.send("NOTICE nobody-here :lost")
    bot.send("NOTICE #nowhere :lost too")
    bot.send("PING after-notices")
    assert strip_prefix(bot.next()) == "PONG %s after-notices" % SERVER_NAME
    bot.send("CHATHISTORY LATEST #general * 2")
    lines = bot.lines_until(r".* BATCH -")
    assert [strip_prefix(line) for line in lines[1:-1]] == ["PRIVMSG #general :feed updated",
                                                            "PRIVMSG #general :said quietly"]


def test_a_labeled_privmsg_is_answered_by_its_labeled_echo_or_an_ack(ircd):
    """labeled-response: clients that match what they sent by its label
    (to show it sent, or failed) get the echo with the label, an ACK
    without echo-message, the error with it when the message cannot be
    stored; the others get the message as ever."""
    server = ircd()
    caps = ("labeled-response", "batch", "message-tags", "server-time")
    watcher = irc_user(server, "watcher")
    echoing = irc_user(server, "echoing", caps=caps + ("echo-message",))
    echoing.send("@label=m1 PRIVMSG #general :hello with a label")
    line = echoing.next()
    assert tags_of(line)["label"] == "m1" and tags_of(line)["msgid"].isdigit()
    assert strip_prefix(line) == "PRIVMSG #general :hello with a label"
    assert watcher.next() == ":echoing!echoing@%s PRIVMSG #general :hello with a label" % SERVER_NAME
    echoing.send("@label=m2 PRIVMSG watcher :a private one")
    line = echoing.next()
    assert tags_of(line)["label"] == "m2" and strip_prefix(line) == "PRIVMSG watcher :a private one"
    assert strip_prefix(watcher.next()) == "PRIVMSG watcher :a private one"
    echoing.send("@label=m3 PRIVMSG #general :" + "long " * 96)  # longer than one line once sourced
    ref = echoing.expect(r"@label=m3 :\S+ BATCH \+(\S+) labeled-response$", raw=True).group(1)
    inside = echoing.lines_until(r".*BATCH -%s$" % ref)[:-1]
    assert len(inside) == 2 and all(tags_of(line)["batch"] == ref for line in inside)
    watcher.expect(r"PRIVMSG #general :long")
    watcher.expect(r"PRIVMSG #general :long")
    quiet = irc_user(server, "quiet", caps=caps)
    quiet.expect(r"BATCH -")  # the channel's history, replayed at login
    quiet.send("@label=q1 PRIVMSG #general :without echo")
    assert quiet.next() == "@label=q1 :%s ACK" % SERVER_NAME
    assert strip_prefix(watcher.next()) == "PRIVMSG #general :without echo"
    assert strip_prefix(echoing.next()) == "PRIVMSG #general :without echo"
    quiet.send("@label=q2 PRIVMSG no-such-account :anyone?")
    assert quiet.next() == "@label=q2 :%s 401 quiet no-such-account :No such nick/channel" % SERVER_NAME
    quiet.send("@label=q3 NOTICE no-such-account :anyone?")
    assert quiet.next() == "@label=q3 :%s ACK" % SERVER_NAME
    # Unlabeled, as before: no echo without echo-message.
    quiet.send("PRIVMSG #general :plain")
    quiet.send("PING after-plain")
    assert strip_prefix(quiet.next()) == "PONG %s after-plain" % SERVER_NAME


def test_senders_without_echo_get_everyone_else_s_messages_in_the_room_s_order(ircd):
    """A run of a room's messages is rendered once per set of capabilities.
    Senders without echo-message are given the same bytes less their own
    lines (a labeled one an ACK in their place), in the order everyone
    else sees them, however the messages fell into batches."""
    server = ircd()
    caps = ("labeled-response", "batch", "message-tags")
    labeled = irc_user(server, "labeled", caps=caps)
    watcher = irc_user(server, "watcher")
    senders = [irc_user(server, "sender%d" % i) for i in range(3)]
    for round_ in range(4):
        for i, sender in enumerate(senders):
            sender.send_raw(b"".join(b"PRIVMSG #general :r%d from %d #%d\r\n" % (round_, i, n) for n in range(5)))
        labeled.send_raw(b"@label=L%d PRIVMSG #general :r%d labeled\r\n" % (round_, round_))
    total = 4 * (3 * 5 + 1)
    seen = [watcher.next() for _ in range(total)]
    said = [(line.split("!", 1)[0].lstrip(":"), strip_prefix(line)) for line in seen]
    for sender in senders:
        wanted = [text for nick, text in said if nick != sender.nick]
        assert [strip_prefix(sender.next()) for _ in wanted] == wanted
    wanted = ["ACK" if nick == "labeled" else text for nick, text in said]
    assert [strip_prefix(labeled.next()) for _ in wanted] == wanted
    for client in senders + [labeled, watcher]:
        client.send("PING end")
        assert strip_prefix(client.next()) == "PONG %s end" % SERVER_NAME


def test_a_long_v1_message_is_split_not_cut(ircd):
    server = ircd()
    alice = v1_user(server, "alice")
    bob = irc_user(server, "bob")
    text = " ".join("word%d" % i for i in range(400))
    alice.send("SAY " + text)
    got = []
    while " ".join(got).count("word") < 400:
        got.append(bob.expect(r"PRIVMSG #general :(.*)").group(1).strip())
    assert " ".join(got).split() == text.split()


MULTILINE = ("draft/multiline", "batch", "message-tags", "server-time")


def read_batch(client, kind="draft/multiline"):
    """The next batch of ``kind`` a client gets: (its BATCH line, the lines
    in it, its end), skipping what comes before it."""
    start = client.expect(r"(@\S+ )?:\S+ BATCH \+(\S+) %s" % kind, raw=True)
    inside = client.lines_until(r"(@\S+ )?(:\S+ )?BATCH -%s$" % start.group(2))
    return start.string, inside[:-1], inside[-1]


def test_a_multiline_message_reaches_each_client_in_the_form_it_can_read(ircd):
    """alice pastes four lines, the second split by her client: bob
    (draft/multiline) gets them as she sent them, in one batch that
    carries the msgid; carol (message-tags alone) as PRIVMSGs, the blank
    line left out and the msgid on the first; dave (no caps) the same
    lines bare; erin (v1) one message, its lines joined by an arrow. Her
    labeled batch is answered by its echo, the label on its BATCH line."""
    server = ircd()
    erin = v1_user(server, "erin")
    dave = irc_user(server, "dave")
    carol = irc_user(server, "carol", caps=("message-tags",))
    bob = irc_user(server, "bob", caps=MULTILINE)
    alice = irc_user(server, "alice", caps=MULTILINE + ("echo-message", "labeled-response"))
    alice.send("@label=p1;+draft/reply=1 BATCH +paste draft/multiline #general")
    alice.send("@batch=paste PRIVMSG #general :hello")
    alice.send("@batch=paste PRIVMSG #general :how is ")
    alice.send("@batch=paste;draft/multiline-concat PRIVMSG #general :everyone?")
    alice.send("@batch=paste PRIVMSG #general :")
    alice.send("@batch=paste PRIVMSG #general :\x02bye\x02")
    alice.send("BATCH -paste")
    texts = ["hello", "how is ", "everyone?", "", "\x02bye\x02"]
    start, inside, end = read_batch(alice)
    tags = tags_of(start)
    assert tags["label"] == "p1" and tags["msgid"].isdigit() and tags["+draft/reply"] == "1" and "time" in tags
    assert re.search(r" :alice!alice@%s BATCH \+\S+ draft/multiline #general$" % SERVER_NAME, start)
    assert [strip_prefix(line).split(" :", 1)[1] if " :" in line else None for line in inside] == texts
    assert [("draft/multiline-concat" in tags_of(line)) for line in inside] == [False, False, True, False, False]
    start, relayed, _ = read_batch(bob)
    assert tags_of(start)["msgid"] == tags["msgid"] and "label" not in tags_of(start)
    assert [strip_prefix(line) for line in relayed] == ["PRIVMSG #general :" + text for text in texts]
    assert all(set(tags_of(line)) <= {"batch", "draft/multiline-concat"} for line in relayed)
    fallback = [carol.next() for _ in range(4)]
    assert [strip_prefix(line) for line in fallback] == ["PRIVMSG #general :" + text for text in texts if text]
    assert [tags_of(line).get("msgid") for line in fallback] == [tags["msgid"], None, None, None]
    assert all(tags_of(line)["+draft/reply"] == "1" for line in fallback)
    assert [dave.next() for _ in range(4)] == [":alice!alice@%s PRIVMSG #general :%s" % (SERVER_NAME, text)
                                              for text in texts if text]
    erin.expect(r"MSG %s \S+ alice hello \u21b5 how is everyone\? \u21b5  \u21b5 bye$" % tags["msgid"])
    # One message in the history, as it was said: a batch in the batch.
    bob.send("CHATHISTORY LATEST #general * 5")
    outer, replayed, _ = read_batch(bob, "chathistory")
    assert tags_of(replayed[0])["batch"] == outer.split("+")[1].split()[0]
    assert tags_of(replayed[0])["msgid"] == tags["msgid"] and " BATCH +" in replayed[0]
    assert [strip_prefix(line) for line in replayed[1:-1]] == ["PRIVMSG #general :" + text for text in texts]
    assert tags_of(replayed[-1])["batch"] == tags_of(replayed[0])["batch"]
    for client in (alice, bob, carol, dave):
        client.send("PING after")
        assert strip_prefix(client.next()) == "PONG %s after" % SERVER_NAME


def test_a_long_v1_message_is_one_multiline_batch_live_and_in_history(ircd):
    """A v1 message longer than an IRC line goes to a multiline client as
    one batch of pieces that join back into it, live, in CHATHISTORY and
    in the replay at login; a private multiline message too."""
    server = ircd()
    alice = v1_user(server, "alice")
    bob = irc_user(server, "bob", caps=MULTILINE)
    text = " ".join("word%d" % i for i in range(450))
    alice.send("SAY " + text)
    start, inside, _ = read_batch(bob)
    assert tags_of(start)["msgid"].isdigit() and len(inside) > 5
    assert [("draft/multiline-concat" in tags_of(line)) for line in inside] == [False] + [True] * (len(inside) - 1)
    assert "".join(strip_prefix(line).split(" :", 1)[1] for line in inside) == text
    bob.send("CHATHISTORY LATEST #general * 1")
    _, replayed, _ = read_batch(bob, "chathistory")
    assert "".join(strip_prefix(line).split(" :", 1)[1] for line in replayed[1:-1]) == text
    again = irc_login(server, "bob", caps=MULTILINE)
    _, replayed, _ = read_batch(again, "chathistory")
    assert " BATCH +" in replayed[0] and len(replayed) == len(inside) + 2
    bob.send("BATCH +p draft/multiline alice")
    bob.send("@batch=p PRIVMSG alice :one")
    bob.send("@batch=p PRIVMSG alice :two")
    bob.send("BATCH -p")
    alice.expect(r"PRIV \d+ \S+ bob alice one \u21b5 two$")


def test_a_multiline_batch_that_breaks_the_rules_fails_and_says_nothing(ircd):
    """Each limit and rule of draft/multiline as a FAIL BATCH, the batch
    dropped (nothing of it stored or relayed), the connection kept; a
    labeled batch's FAIL carries its label; without echo-message, a
    labeled batch is acknowledged."""
    server = ircd()
    watcher = irc_user(server, "watcher", caps=("message-tags", "server-time"))
    alice = irc_user(server, "alice", caps=MULTILINE + ("labeled-response",))

    def batch(lines, target="#general", opening=None):
        alice.send(opening or "BATCH +b draft/multiline %s" % target)
        alice.send_raw("".join(line + "\r\n" for line in lines).encode())
        alice.send("BATCH -b")
        return strip_prefix(alice.next())

    assert batch(["@batch=b PRIVMSG #general :hi"] * 33) == \
        "FAIL BATCH MULTILINE_MAX_LINES 32 :Multiline batch max-lines exceeded"
    assert batch(["@batch=b PRIVMSG #general :" + "x" * 400] * 10) == \
        "FAIL BATCH MULTILINE_MAX_BYTES 3968 :Multiline batch max-bytes exceeded"
    assert batch(["@batch=b PRIVMSG #general :hi", "@batch=b PRIVMSG #other :hi"]) == \
        "FAIL BATCH MULTILINE_INVALID_TARGET #general #other :Invalid multiline target"
    assert batch(["@batch=b PRIVMSG #general :hi", "@batch=b;draft/multiline-concat PRIVMSG #general :"]) \
        .startswith("FAIL BATCH MULTILINE_INVALID :")
    assert batch(["@batch=b PRIVMSG #general :", "@batch=b PRIVMSG #general : "]) \
        .startswith("FAIL BATCH MULTILINE_INVALID :")
    assert batch(["@batch=b PRIVMSG #general :hi", "@batch=b NOTICE #general :hi"]) \
        .startswith("FAIL BATCH MULTILINE_INVALID :")
    assert batch(["@batch=other PRIVMSG #general :hi"]).startswith("FAIL BATCH MULTILINE_INVALID :")
    assert batch(["@batch=b PRIVMSG #general :hi"], opening="BATCH +b netsplit a b") \
        .startswith("FAIL BATCH MULTILINE_INVALID :")
    assert strip_prefix(alice.next()).startswith("FAIL BATCH MULTILINE_INVALID :")  # the line: no batch open
    assert strip_prefix(alice.next()).startswith("FAIL BATCH MULTILINE_INVALID :")  # and its end
    # A line outside the open batch fails it, and is said as ever.
    alice.send("BATCH +c draft/multiline #general")
    alice.send("@batch=c PRIVMSG #general :in the batch")
    alice.send("PRIVMSG #general :outside")
    assert strip_prefix(alice.next()).startswith("FAIL BATCH MULTILINE_INVALID :")
    assert strip_prefix(watcher.next()) == "PRIVMSG #general :outside"
    alice.send("BATCH -c")
    alice.send("@label=L1 BATCH +d draft/multiline #general")
    alice.send("@batch=d PRIVMSG #nowhere :hi")
    assert alice.next().startswith("@label=L1 :%s FAIL BATCH MULTILINE_INVALID_TARGET " % SERVER_NAME)
    alice.send("BATCH -d")
    alice.send("@label=L2 BATCH +e draft/multiline #not-joined")
    alice.send("@batch=e PRIVMSG #not-joined :hi")
    alice.send("BATCH -e")
    assert alice.next() == "@label=L2 :%s 403 alice #not-joined :No such channel" % SERVER_NAME
    alice.send("@label=L3 BATCH +f draft/multiline #general")
    alice.send("@batch=f PRIVMSG #general :one")
    alice.send("@batch=f PRIVMSG #general :two")
    alice.send("BATCH -f")
    assert alice.next() == "@label=L3 :%s ACK" % SERVER_NAME
    assert [strip_prefix(watcher.next()) for _ in range(2)] == ["PRIVMSG #general :one", "PRIVMSG #general :two"]
    # Without the capability there is no BATCH, as before.
    watcher.send("BATCH +g draft/multiline #general")
    watcher.expect(r"421 watcher BATCH ")
    watcher.send("CHATHISTORY LATEST #general * 10")
    history = watcher.lines_until(r".*BATCH -")
    assert [strip_prefix(line) for line in history if " PRIVMSG " in line] == \
        ["PRIVMSG #general :outside", "PRIVMSG #general :one", "PRIVMSG #general :two"]


def test_the_lines_of_a_multiline_batch_count_against_the_flood_bucket(ircd):
    server = ircd("--exempt", "", "--flood-burst", "2", "--flood-rate", "1", "--flood-held-max", "2000")
    bob = irc_user(server, "bob", caps=MULTILINE)
    bob.send("BATCH +b draft/multiline #general")
    bob.send_raw(b"".join(b"@batch=b PRIVMSG #general :line %d\r\n" % n for n in range(40)))
    assert "Excess Flood" in bob.expect_closed()[-1]


def quit_and_wait(server, client, name):
    client.send("QUIT")
    client.expect_closed()
    server.wait_log(r".*closing .*\(%s\): quit" % name)


def test_private_messages_that_came_while_away_are_replayed_at_the_next_login(ircd):
    """Away (no session anywhere), alice gets private messages from a v1
    and an IRC user; her next IRC login says how many and replays them
    after her channels, with their time; a second session while she is
    online, and the next login, replay nothing again."""
    server = ircd()
    alice = irc_user(server, "alice")
    bob = v1_user(server, "bob")
    carol = irc_user(server, "carol")
    bob.send("TELL alice seen live")
    alice.expect(r"PRIVMSG alice :seen live")
    quit_and_wait(server, alice, "alice")
    bob.send("TELL alice are you there?")
    bob.expect(r"PRIV \d+ \S+ bob alice are you there\?")
    carol.send("PRIVMSG alice :call me")
    bob.send("TELL alice /me waves")
    bob.expect(r"PRIV \d+ \S+ bob alice /me waves")
    back = irc_login(server, "alice")
    assert back.next() == ":%s NOTICE alice :3 private messages came while you were away:" % SERVER_NAME
    replayed = [back.next() for _ in range(3)]
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d UTC\] "
    assert re.match(r":bob!bob@%s PRIVMSG alice :%sare you there\?$" % (SERVER_NAME, stamp), replayed[0])
    assert re.match(r":bob!bob@%s PRIVMSG alice :\x01ACTION %swaves\x01$" % (SERVER_NAME, stamp), replayed[1])
    assert re.match(r":carol!carol@%s PRIVMSG alice :%scall me$" % (SERVER_NAME, stamp), replayed[2])
    second = irc_login(server, "alice")
    second.send("PING nothing-more")
    assert strip_prefix(second.next()) == "PONG %s nothing-more" % SERVER_NAME
    quit_and_wait(server, second, "alice")
    quit_and_wait(server, back, "alice")
    again = irc_login(server, "alice")
    again.send("PING nothing-again")
    assert strip_prefix(again.next()) == "PONG %s nothing-again" % SERVER_NAME


def test_missed_private_messages_come_in_a_batch_per_conversation_and_at_most_history(ircd):
    server = ircd("--history", "2")
    alice = irc_user(server, "alice")
    quit_and_wait(server, alice, "alice")
    bob = v1_user(server, "bob")
    for text in ("one", "two", "three"):
        bob.send("TELL alice " + text)
        bob.expect(r"PRIV \d+ \S+ bob alice " + text)
    back = irc_login(server, "alice", caps=("batch", "server-time", "message-tags"))
    assert strip_prefix(back.expect(r".* NOTICE alice :.*", raw=True).group(0)) == (
        "NOTICE alice :More than 2 private messages came while you were away: the last 2 follow, the others "
        "are in each conversation's history (CHATHISTORY).")
    ref = back.expect(r"BATCH \+(\S+) chathistory bob$").group(1)
    lines = back.lines_until(r".*BATCH -%s$" % ref)[:-1]
    assert [strip_prefix(line) for line in lines] == ["PRIVMSG alice :two", "PRIVMSG alice :three"]
    assert all(tags_of(line)["batch"] == ref and "time" in tags_of(line) for line in lines)


def test_a_message_to_oneself_arrives_once_with_or_without_echo_message(ircd):
    """A note to oneself (/msg mynick ...) is delivered to the sender as
    its recipient, with or without echo-message, once, and is in the
    history of the conversation with oneself."""
    server = ircd()
    plain = irc_user(server, "notes")
    plain.send("PRIVMSG notes :remember the milk")
    plain.send("PING after-first")
    assert strip_prefix(plain.next()) == "PRIVMSG notes :remember the milk"
    assert strip_prefix(plain.next()) == "PONG %s after-first" % SERVER_NAME
    echoing = server.irc()
    echoing.register_connection("notes", caps=("echo-message", "batch", "server-time", "message-tags"),
                                sasl=("notes", "password1"))
    echoing.expect(r"366 notes #general ")
    echoing.send("PRIVMSG notes :and the bread")
    echoing.send("PING after-second")
    assert strip_prefix(echoing.next()) == "PRIVMSG notes :and the bread"
    assert strip_prefix(echoing.next()) == "PONG %s after-second" % SERVER_NAME
    assert strip_prefix(plain.next()) == "PRIVMSG notes :and the bread"
    echoing.send("CHATHISTORY LATEST notes * 10")
    lines = echoing.lines_until(r".* BATCH -")
    assert [strip_prefix(line) for line in lines if " PRIVMSG " in line] == [
        "PRIVMSG notes :remember the milk", "PRIVMSG notes :and the bread"]


def test_join_creates_a_room_part_leaves_it_and_v1_sees_both(ircd):
    server = ircd()
    alice = v1_user(server, "alice")
    alice.send("JOIN #club")
    alice.expect(r"OK JOIN #club")
    alice.send("RSAY #club earlier words")
    alice.expect(r"RMSG \d+ \S+ #club alice earlier words")
    bob = irc_user(server, "bob", caps=("server-time", "batch", "message-tags"))
    bob.send("JOIN #club,#new-room")
    bob.expect(r"JOIN #club")
    bob.expect(r"353 bob = #club :")
    bob.expect(r"366 bob #club ")
    start = bob.expect(r"BATCH \+(\S+) chathistory #club").group(1)
    line = bob.expect(r".*PRIVMSG #club :earlier words", raw=True).group(0)
    assert tags_of(line)["batch"] == start and "time" in tags_of(line) and "msgid" in tags_of(line)
    bob.expect(r"BATCH -" + start)
    alice.expect(r"JOINED #club bob")
    bob.expect(r"JOIN #new-room")
    bob.expect(r"366 bob #new-room ")
    bob.send("PART #club :bye now")
    bob.expect(r"PART #club :bye now")
    alice.expect(r"PARTED #club bob bye now")


def test_a_labeled_join_of_several_channels_is_one_labeled_batch(ircd):
    """labeled-response: the whole answer to a labeled JOIN, its own JOIN
    line, NAMES and the error for a bad name, is one batch carrying the
    label; the others in the room see a plain JOIN. PART likewise."""
    server = ircd()
    watcher = irc_user(server, "watcher")
    watcher.send("JOIN #valid")
    watcher.expect(r"366 watcher #valid ")
    bob = irc_user(server, "bob", caps=("batch", "labeled-response"))
    bob.send("@label=j1 JOIN #valid,inv@lid")
    start = bob.next()
    ref = re.match(r"@label=j1 :%s BATCH \+(\S+) labeled-response$" % SERVER_NAME, start).group(1)
    lines = bob.lines_until(r".*BATCH -%s$" % ref)
    inside = lines[:-1]
    assert [strip_prefix(line).split(" ")[0] for line in inside] == ["JOIN", "353", "366", "403"]
    assert all(tags_of(line) == {"batch": ref} for line in inside)
    assert strip_prefix(inside[-1]) == "403 bob inv@lid :No such channel"
    watcher.expect(r":bob!bob@%s JOIN #valid$" % SERVER_NAME, raw=True)
    bob.send("@label=p1 PART #valid,#nowhere :bye")
    ref = bob.expect(r"@label=p1 :\S+ BATCH \+(\S+) labeled-response$", raw=True).group(1)
    inside = bob.lines_until(r".*BATCH -%s$" % ref)[:-1]
    assert [strip_prefix(line) for line in inside] == ["PART #valid bye", "403 bob #nowhere :No such channel"]
    watcher.expect(r":bob!bob@%s PART #valid :?bye$" % SERVER_NAME, raw=True)
    # Unlabeled, the answer goes out as it comes, with no batch.
    bob.send("JOIN #valid")
    assert bob.next() == ":bob!bob@%s JOIN #valid" % SERVER_NAME


def test_caps_change_the_bytes_and_a_client_without_caps_sees_plain_lines(ircd):
    server = ircd()
    plain = irc_user(server, "plain")
    rich = irc_user(server, "rich", caps=("server-time", "message-tags", "account-tag", "echo-message",
                                          "extended-join", "away-notify", "batch", "labeled-response"))
    rich.send("PRIVMSG #general :tagged")
    echo = rich.expect(r".*PRIVMSG #general :tagged", raw=True).group(0)
    tags = tags_of(echo)
    assert tags["account"] == "rich" and re.match(r"\d{4}-\d\d-\d\dT", tags["time"]) and tags["msgid"].isdigit()
    seen = plain.expect(r".*PRIVMSG #general :tagged", raw=True).group(0)
    assert seen == ":rich!rich@%s PRIVMSG #general :tagged" % SERVER_NAME
    rich.send("@label=abc PING token1")
    assert re.match(r"@label=abc :%s PONG %s token1" % (SERVER_NAME, SERVER_NAME),
                    rich.expect(r".*PONG.*", raw=True).group(0))
    rich.send("@label=xyz MODE #general")
    start = rich.expect(r"@label=xyz :\S+ BATCH \+(\S+) labeled-response", raw=True).group(1)
    rich.expect(r"324 rich #general \+n")
    rich.expect(r"BATCH -" + start)
    plain.send("JOIN #fresh")
    plain.expect(r"366 plain #fresh")
    rich.send("JOIN #fresh")
    plain.expect(r":rich!rich@%s JOIN #fresh$" % SERVER_NAME, raw=True)
    # extended-join: the account and the real name.
    rich.expect(r":rich!rich@%s JOIN #fresh rich :?rich$" % SERVER_NAME, raw=True)
    plain.send("AWAY :lunch")
    plain.expect(r"306 ")
    rich.expect(r":plain!plain@%s AWAY :lunch" % SERVER_NAME, raw=True)
    rich.send("WHOIS plain")
    rich.expect(r"301 rich plain :?lunch$")
    rich.expect(r"318 ")


def test_userhost_in_names_lists_every_member_as_nick_user_host(ircd):
    """userhost-in-names: NAMES (at JOIN and asked for) gives nick!user@host,
    so a client learns its channel's hosts without a WHO per channel; a
    client without it gets bare nicks."""
    server = ircd()
    v1_user(server, "alice")
    plain = irc_user(server, "plain")
    full = server.irc()
    server.client().register("bob")
    full.send("CAP LS 302")
    assert "userhost-in-names" in full.expect(r"CAP \* LS :(.*)").group(1).split()
    full.register_connection("bob", caps=("userhost-in-names",), sasl=("bob", "password1"))
    names = full.expect(r"353 bob = #general :(.*)").group(1).split()
    assert names == ["alice!alice@%s" % SERVER_NAME, "bob!bob@%s" % SERVER_NAME, "plain!plain@%s" % SERVER_NAME]
    full.send("NAMES #general")
    assert full.expect(r"353 bob = #general :(.*)").group(1).split() == names
    full.expect(r"366 bob #general ")
    plain.send("NAMES #general")
    assert plain.expect(r"353 plain = #general :(.*)").group(1).split() == ["alice", "bob", "plain"]


def test_chathistory_of_a_room_and_of_a_conversation(ircd):
    server = ircd()
    alice = v1_user(server, "alice")
    ids = []
    for n in range(5):
        alice.send("SAY line %d" % n)
        ids.append(int(alice.expect(r"MSG (\d+) ").group(1)))
    server.client().register("bob")
    alice.send("TELL bob private one")
    alice.expect(r"PRIV \d+ \S+ alice bob private one")
    bob = server.irc()
    bob.register_connection("bob", caps=("draft/chathistory", "batch", "server-time", "message-tags"),
                            sasl=("bob", "password1"))
    # The replay on joining comes first, as a batch of its own.
    replay = bob.expect(r"BATCH \+(\S+) chathistory #general").group(1)
    bob.expect(r"BATCH -" + replay)
    bob.send("CHATHISTORY BEFORE #general msgid=%d 2" % ids[3])
    start = bob.expect(r"BATCH \+(\S+) chathistory #general").group(1)
    assert bob.expect(r"PRIVMSG #general :(.*)").group(1) == "line 1"
    assert bob.expect(r"PRIVMSG #general :(.*)").group(1) == "line 2"
    bob.expect(r"BATCH -" + start)
    bob.send("CHATHISTORY AFTER #general msgid=%d 10" % ids[2])
    start = bob.expect(r"BATCH \+(\S+) chathistory #general").group(1)
    assert [bob.expect(r"PRIVMSG #general :(.*)").group(1) for _ in range(2)] == ["line 3", "line 4"]
    bob.expect(r"BATCH -" + start)
    bob.send("CHATHISTORY LATEST alice * 10")
    bob.expect(r"BATCH \+\S+ chathistory alice")
    bob.expect(r"PRIVMSG bob :private one")
    bob.send("CHATHISTORY LATEST #secret * 10")
    bob.expect(r"FAIL CHATHISTORY INVALID_TARGET")


def test_kick_and_ban_from_the_console(ircd, tmp_path):
    admin = str(tmp_path / "admin.sock")
    server = ircd("--admin-socket", admin)
    bob = irc_user(server, "bob")
    bob.send("JOIN #other")
    bob.expect(r"366 bob #other")
    operator = LineClient.__new__(LineClient)
    operator.sock, operator.buffer, operator.seen = socket.socket(socket.AF_UNIX), b"", []
    operator.sock.connect(admin)
    operator.send("kick bob 60 calm down")
    lines = bob.expect_closed()
    assert any(re.match(r":\S+ KICK #general bob :kicked for 60 s: calm down", line) for line in lines)
    assert any(re.match(r":\S+ KICK #other bob", line) for line in lines)
    assert lines[-1] == "ERROR :Closing Link: bob (kicked for 60 s: calm down)"
    again = server.irc()
    again.send("PASS bob:password1")
    again.send("NICK bob")
    again.send("USER b 0 * :b")
    again.expect(r"465 ")
    again.expect_closed()
    operator.send("unkick bob")
    operator.expect(r".*")
    operator.send("ban bob spam")
    server.wait_log(r".*operator banned bob")
    banned = server.irc()
    banned.send("PASS bob:password1")
    banned.send("NICK bob")
    banned.send("USER b 0 * :b")
    banned.expect(r"465 \S+ :You are banned from this server: spam")
    assert banned.expect_closed()[-1].startswith("ERROR :Closing Link")


def test_limits_417_flood_and_login_timeout(ircd):
    server = ircd("--login-timeout", "1", "--exempt", "")
    irc = server.irc()
    irc.send("PING " + "x" * 600)
    irc.expect(r"417 ")
    irc.send("PING still-here")
    irc.expect(r"PONG \S+ still-here")
    assert irc.expect_closed(timeout=5)[-1].startswith("ERROR :Closing Link: ")


def test_flood_is_cut(ircd):
    server = ircd("--exempt", "", "--flood-burst", "2", "--flood-rate", "1", "--flood-held-max", "2000")
    bob = irc_user(server, "bob")
    for n in range(100):
        bob.send("PRIVMSG #general :flood %d" % n)
    assert "Excess Flood" in bob.expect_closed()[-1]


def test_sendq_cap_cuts_a_client_that_does_not_read(ircd):
    server = ircd("--sendq-max", "20000")
    bob = irc_user(server, "bob")
    bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    alice = v1_user(server, "alice")
    said = 0
    while not any("sendq exceeded" in line for line in server.log):
        assert said < 5000, "bob was never cut"
        for _ in range(10):
            alice.send("SAY %d %s" % (said, "y" * 3000))
            said += 1
        alice.expect(r"MSG \S+ \S+ alice %d " % (said - 1))
    server.wait_log(r".*bob\) does not read: sendq exceeded")


def test_ping_timeout(ircd):
    server = ircd("--ping-interval", "1", "--ping-timeout", "1")
    bob = irc_user(server, "bob")
    bob.expect(r"PING ", timeout=5)
    assert bob.expect_closed(timeout=5)[-1].startswith("ERROR :Closing Link: ")
    assert "ping timeout" in bob.seen[-1] or True
    server.wait_log(r".*closing .*bob\): ping timeout")


def test_say_from_the_console_is_a_notice(ircd, tmp_path):
    admin = str(tmp_path / "admin.sock")
    server = ircd("--admin-socket", admin)
    bob = irc_user(server, "bob")
    link = socket.socket(socket.AF_UNIX)
    link.connect(admin)
    link.sendall(b"say maintenance at noon\n")
    bob.expect(r"NOTICE \* :maintenance at noon")
    link.close()


def test_without_guests_a_client_that_does_not_log_in_is_told_how_and_closed(ircd):
    server = ircd("--login-timeout", "2")
    irc = server.irc()
    irc.send("NICK visitor")
    irc.send("USER v 0 * :v")
    irc.expect(r"001 visitor ")
    irc.expect(r"NOTICE visitor :This server needs an account. Log in with SASL: irssi: .*WeeChat: .*NickServ")
    irc.send("JOIN #general")
    irc.expect(r"NOTICE visitor :Log in first")
    irc.send("PRIVMSG #general :hello?")
    irc.expect(r"NOTICE visitor :Log in first")
    assert irc.expect_closed()[-1].startswith("ERROR :Closing Link: ")


def test_guests_chat_under_their_nick_and_may_register_it(ircd):
    server = ircd("--irc-guests")
    alice = v1_user(server, "alice")
    guest = server.irc()
    guest.send("NICK visitor")
    guest.send("USER v 0 * :v")
    guest.expect(r"001 visitor ")
    guest.expect(r"NOTICE visitor :You are a guest here")
    guest.expect(r"366 visitor #general ")
    guest.send("PRIVMSG #general :hi, just visiting")
    alice.expect(r"MSG \d+ \S+ visitor hi, just visiting")
    # A registered account's name is refused to a guest.
    other = server.irc()
    other.send("NICK alice")
    other.send("USER a 0 * :a")
    other.expect(r"433 \* alice ")
    other.send("NICK visitor")  # and a guest's nick while its guest is online
    other.expect(r"433 \* visitor ")
    other.send("NICK someone-else")
    other.expect(r"001 someone-else ")
    # Nobody logs in to a guest's account, on either protocol.
    v1 = server.client()
    v1.send("LOGIN visitor anything-at-all")
    v1.expect(r"ERR 401 ")
    guest.send("PRIVMSG NickServ :REGISTER my-own-password")
    guest.expect(r"NOTICE visitor :Account visitor registered")
    v1.login("visitor", "my-own-password")
    # The guest's earlier message is in the history like any other.
    v1.send("HISTORY 10")
    v1.expect(r"MSG \d+ \S+ visitor hi, just visiting")


def test_an_offline_guest_nick_may_be_registered_by_anyone_but_not_an_online_one(ircd):
    server = ircd("--irc-guests")
    guest = server.irc()
    guest.send("NICK drifter")
    guest.send("USER d 0 * :d")
    guest.expect(r"366 drifter #general ")
    v1 = server.client()
    v1.send("REGISTER drifter password1")
    v1.expect(r"ERR 409 name drifter is taken")
    guest.send("QUIT")
    guest.expect_closed()
    server.wait_log(r".*closing .*drifter\): quit")
    v1.send("REGISTER drifter password1")
    v1.expect(r"OK REGISTER drifter")
    v1.login("drifter")


def test_tagmsg_relays_client_tags_to_message_tags_clients_only_and_is_not_stored(ircd):
    """A typing notification from alice: bob (message-tags) sees it with the
    server's tags, alice her echo with the same msgid; carol (no caps) and
    the v1 client see nothing of it, and no history has it."""
    server = ircd()
    dave = v1_user(server, "dave")
    carol = irc_user(server, "carol")
    bob = irc_user(server, "bob", caps=("message-tags", "server-time", "account-tag"))
    alice = irc_user(server, "alice", caps=("message-tags", "echo-message", "labeled-response", "batch",
                                             "draft/chathistory", "server-time"))
    alice.send("@+typing=active;cat=dog TAGMSG #General")
    relayed = bob.expect(r".* TAGMSG #general$", raw=True).group(0)
    tags = tags_of(relayed)
    assert relayed.endswith(" :alice!alice@%s TAGMSG #general" % SERVER_NAME)
    assert tags["+typing"] == "active" and tags["account"] == "alice" and "time" in tags and "cat" not in tags
    echo = alice.expect(r".* TAGMSG #general$", raw=True).group(0)
    assert tags_of(echo)["msgid"] == tags["msgid"] and not tags["msgid"].isdigit()
    alice.send("PRIVMSG #general :after the typing")
    assert carol.expect(r".*", raw=True).group(0).endswith("PRIVMSG #general :after the typing")
    dave.expect(r"MSG \d+ \S+ alice after the typing$")
    assert [line for line in dave.seen if not line.startswith("JOIN ")][-1].endswith("alice after the typing")
    bob.expect(r"PRIVMSG #general :after the typing")
    alice.expect(r"PRIVMSG #general :after the typing")
    alice.send("CHATHISTORY LATEST #general * 10")
    start = alice.expect(r"BATCH \+(\S+) chathistory #general").group(1)
    history = []
    while True:
        line = alice.next()
        if line.endswith("BATCH -" + start):
            break
        history.append(line)
    assert [strip_prefix(line) for line in history] == ["PRIVMSG #general :after the typing"]
    # Private: to an online nick, to one offline (nobody to tell, no error), to no account.
    alice.send("@+draft/react=+1 TAGMSG bob")
    assert tags_of(bob.expect(r".* TAGMSG bob$", raw=True).group(0))["+draft/react"] == "+1"
    alice.expect(r"TAGMSG bob$")
    dave.send("QUIT")
    dave.expect_closed()
    server.wait_log(r".*closing .*dave\): quit")
    alice.send("@label=l1 TAGMSG dave")
    alice.expect(r"@label=l1;.*TAGMSG dave$", raw=True)  # the echo carries the label
    alice.send("@label=l2 TAGMSG nobody1")
    alice.expect(r"@label=l2 :\S+ 401 alice nobody1 ", raw=True)
    alice.send("TAGMSG #not-joined")
    alice.expect(r"403 alice #not-joined ")
    # A client that did not enable message-tags has no TAGMSG, as before.
    carol.send("@+typing=active TAGMSG #general")
    carol.expect(r"421 carol TAGMSG ")
    # Tags beyond what a client may send: 417, and nothing relayed.
    alice.send("@+baz=%s TAGMSG #general" % ("a" * 4090))
    alice.expect(r"417 alice ")
    alice.send("@+typing=done TAGMSG #general")
    assert tags_of(bob.expect(r".* TAGMSG #general$", raw=True).group(0))["+typing"] == "done"


def test_a_labeled_tagmsg_without_echo_is_acknowledged(ircd):
    server = ircd()
    irc_user(server, "bob", caps=("message-tags",))
    alice = irc_user(server, "alice", caps=("message-tags", "labeled-response"))
    alice.send("@label=t7;+typing=paused TAGMSG bob")
    alice.expect(r"@label=t7 :\S+ ACK$", raw=True)


def test_client_tags_on_a_privmsg_reach_message_tags_clients_live_and_are_not_stored(ircd):
    """A reply (+draft/reply) names the message it answers: bob (message-tags)
    and alice's echo have the tag, carol (no caps) and dave (v1) get the
    text alone, and history has the message without it. A NOTICE in
    private carries its tags too; tags that are not client-only do not."""
    server = ircd()
    dave = v1_user(server, "dave")
    carol = irc_user(server, "carol")
    bob = irc_user(server, "bob", caps=("message-tags", "server-time"))
    alice = irc_user(server, "alice", caps=("message-tags", "echo-message", "batch", "draft/chathistory",
                                             "server-time"))
    alice.send("PRIVMSG #general :the question")
    msgid = tags_of(bob.expect(r".* PRIVMSG #general :the question$", raw=True).group(0))["msgid"]
    alice.expect(r"PRIVMSG #general :the question$")
    alice.send("@+draft/reply=%s;+draft/channel-context=#general;msgid=99;label=x PRIVMSG #general :the answer"
               % msgid)
    line = bob.expect(r".* PRIVMSG #general :the answer$", raw=True).group(0)
    tags = tags_of(line)
    assert tags["+draft/reply"] == msgid and tags["+draft/channel-context"] == "#general"
    assert tags["msgid"] != "99" and tags["msgid"].isdigit() and "time" in tags and "label" not in tags
    echo = tags_of(alice.expect(r".* PRIVMSG #general :the answer$", raw=True).group(0))
    assert echo["+draft/reply"] == msgid and echo["msgid"] == tags["msgid"]
    assert carol.expect(r".*the answer$", raw=True).group(0) == \
        ":alice!alice@%s PRIVMSG #general :the answer" % SERVER_NAME
    dave.expect(r"MSG \d+ \S+ alice the answer$")
    alice.send("@+draft/react=+1 NOTICE bob :noted")
    assert tags_of(bob.expect(r".* NOTICE bob :noted$", raw=True).group(0))["+draft/react"] == "+1"
    alice.send("CHATHISTORY LATEST #general * 10")
    start = alice.expect(r"BATCH \+(\S+) chathistory #general").group(1)
    history = alice.lines_until(r".*BATCH -%s$" % start)[:-1]
    assert [strip_prefix(line) for line in history] == ["PRIVMSG #general :the question",
                                                        "PRIVMSG #general :the answer"]
    assert not any("+draft" in line for line in history)


def test_guests_are_marked_to_others_on_irc_and_to_v1_clients_that_ask(ircd):
    """A guest carries no account tag, its extended JOIN says "*" and the
    real name "guest", WHO, WHOX and WHOIS show no account (WHOIS says it
    is a guest) and the real name its client gave; a v1 client
    with CAP guests sees a "~" after its name in USERS, one without sees
    USERS as ever. Once the guest registers its nick, it is an account like
    any other."""
    server = ircd("--irc-guests")
    marked = server.client()
    marked.register("mia")
    marked.send("CAP guests")
    assert marked.next() == "OK CAP guests"
    plain = v1_user(server, "olly")
    bob = irc_user(server, "bob", caps=("account-tag", "extended-join", "message-tags"))
    bob.send("JOIN #club")
    bob.expect(r"366 bob #club ")
    guest = server.irc()
    guest.send("NICK Visitor")
    guest.send("USER v 0 * :Vera Visitor")
    guest.expect(r"366 Visitor #general ")
    guest.send("JOIN #club")
    bob.expect(r":Visitor!Visitor@%s JOIN #club \* :?guest$" % SERVER_NAME, raw=True)
    guest.send("PRIVMSG #general :hello from a guest")
    said = bob.expect(r".*PRIVMSG #general :hello from a guest", raw=True).group(0)
    assert "account" not in tags_of(said) and "msgid" in tags_of(said)
    bob.send("WHO #club")
    bob.expect(r"352 bob #club Visitor \S+ \S+ Visitor H :0 Vera Visitor$")
    bob.expect(r"352 bob #club bob \S+ \S+ bob H :0 bob$")
    bob.send("WHO #club %tnar,7")
    bob.expect(r"354 bob 7 Visitor 0 :Vera Visitor$")  # no account ("0")
    bob.expect(r"354 bob 7 bob bob :?bob$")
    bob.send("WHOIS visitor")
    bob.expect(r"311 bob Visitor Visitor \S+ \* :Vera Visitor$")
    lines = []
    while not lines or " 318 " not in lines[-1]:
        lines.append(bob.next())
    assert not any(" 330 " in line for line in lines)
    assert any(strip_prefix(line) == "320 bob Visitor :is a guest: logged in to no account" for line in lines)
    marked.login("mia")
    assert marked.seen[-1] == "USERS 4 bob mia olly Visitor~"
    plain.send("WHO")
    assert plain.expect(r"USERS .*").group(0) == "USERS 4 bob mia olly Visitor"
    # Registered, it is an account: tagged, listed plainly, logged in per WHOIS.
    guest.send("PRIVMSG NickServ :REGISTER my-own-password")
    guest.expect(r"900 Visitor ")
    guest.send("PRIVMSG #general :now with an account")
    said = bob.expect(r".*PRIVMSG #general :now with an account", raw=True).group(0)
    assert tags_of(said)["account"] == "Visitor"
    marked.send("WHO")
    assert marked.expect(r"USERS .*").group(0) == "USERS 4 bob mia olly Visitor"
    bob.send("WHOIS visitor")
    bob.expect(r"311 bob Visitor Visitor \S+ \* :Vera Visitor$")
    bob.expect(r"330 bob Visitor Visitor ")


def no_line_until_pong(client, pattern):
    """The lines a client gets until the answer to a PING sent now, none
    of them matching ``pattern``: what it was not sent stays unsent."""
    client.send("PING checkpoint")
    lines = client.lines_until(r".*PONG \S+ :?checkpoint")
    assert not [line for line in lines if re.search(pattern, line)], lines


def test_account_notify_tells_the_channel_mates_of_a_guest_that_registers_its_nick(ircd):
    server = ircd("--irc-guests")
    bob = irc_user(server, "bob", caps=("account-notify",))
    carol = irc_user(server, "carol")  # without account-notify
    dave = irc_user(server, "dave", caps=("account-notify",))
    dave.send("PART #general")
    dave.expect(r"PART #general")
    guest = server.irc()
    guest.register_connection("Visitor", caps=("account-notify",))
    guest.expect(r"366 Visitor #general ")
    guest.send("PRIVMSG NickServ :REGISTER my-own-password")
    guest.expect(r"900 Visitor ")
    # The guest itself and its channel mate with the capability hear of it;
    # one without it, and one who shares no channel with it, do not.
    for client in (guest, bob):
        client.expect(r":Visitor!Visitor@%s ACCOUNT Visitor$" % SERVER_NAME, raw=True)
    no_line_until_pong(carol, r" ACCOUNT ")
    no_line_until_pong(dave, r" ACCOUNT ")


def test_account_notify_when_someone_registers_the_nick_of_a_guest_that_left(ircd):
    server = ircd("--irc-guests")
    bob = irc_user(server, "bob", caps=("account-notify",))
    guest = server.irc()
    guest.register_connection("drifter")
    guest.send("JOIN #club")
    guest.expect(r"366 drifter #club ")
    bob.send("JOIN #club")
    bob.expect(r"366 bob #club ")
    quit_and_wait(server, guest, "drifter")
    # A member of #general and #club while offline: one ACCOUNT for bob.
    server.client().register("drifter")
    bob.expect(r":drifter!drifter@%s ACCOUNT drifter$" % SERVER_NAME, raw=True)
    no_line_until_pong(bob, r" ACCOUNT ")


def test_a_client_that_logs_in_after_registration_is_told_its_account(ircd):
    server = ircd("--irc-guests")
    server.client().register("alice")
    bob = irc_user(server, "bob", caps=("account-notify",))
    guest = server.irc()
    guest.register_connection("someone", caps=("account-notify", "sasl"))
    sasl_plain(guest, "alice", "password1")
    guest.expect(r":someone!someone@%s NICK :?alice$" % SERVER_NAME, raw=True)
    guest.expect(r":alice!alice@%s ACCOUNT alice$" % SERVER_NAME, raw=True)
    # Nobody else's nick changed account: "someone" is still a guest's,
    # and alice's is alice's.
    no_line_until_pong(bob, r" ACCOUNT ")


def test_whois_and_who_show_the_real_name_the_client_gave(ircd):
    """The real name set in the client (USER's last parameter) is what
    others see in WHOIS and WHO, without formatting codes and cut to 64
    bytes; an account online on v1 alone is shown by its name. A user
    name that is not ASCII is no obstacle (it is not used: the user name
    is the account's)."""
    server = ircd()
    v1_user(server, "carol")
    server.client().register("bob")
    bob = server.irc()
    bob.nick = "bob"
    bob.send("CAP LS 302")
    bob.send("CAP REQ :sasl")
    bob.send("NICK bob")
    bob.send("USER \U0001f60a\U0001f60a\U0001f60a 0 * :\x02Bob\x02 \x0304Builder\x03 " + "\u00e9" * 40)
    bob.send("AUTHENTICATE PLAIN")
    bob.expect(r"AUTHENTICATE \+")
    bob.send("AUTHENTICATE " + base64.b64encode(b"bob\0bob\0password1").decode())
    bob.expect(r"903 ")
    bob.send("CAP END")
    bob.expect(r"366 bob #general ")
    shown = "Bob Builder " + "\u00e9" * 26  # 12 bytes and 26 two-byte characters: 64 bytes
    alice = irc_user(server, "alice")
    alice.send("WHOIS bob")
    assert alice.expect(r"311 alice bob bob \S+ \* :(.*)$").group(1) == shown
    alice.expect(r"330 alice bob bob ")
    alice.expect(r"318 alice bob ")
    alice.send("WHO #general")
    who = dict(re.match(r"352 alice #general (\S+) .* :0 (.*)$", strip_prefix(line)).groups()
               for line in alice.lines_until(r".* 315 ")[:-1])
    assert who == {"alice": "alice", "bob": shown, "carol": "carol"}
    alice.send("WHOIS carol")
    alice.expect(r"311 alice carol carol \S+ \* :?carol$")


def private_history(client, nick):
    """The texts of CHATHISTORY LATEST <nick> (a client with batch)."""
    client.send("CHATHISTORY LATEST %s * 50" % nick)
    lines = client.lines_until(r".* BATCH -")
    return [strip_prefix(line).split(" :", 1)[1] for line in lines if " PRIVMSG " in line]


def test_the_next_holder_of_a_guest_nick_cannot_read_the_guests_private_messages(ircd):
    """Anyone may take a guest's nick once it is free, as a guest or by
    registering it: the private messages of the guests before are not
    theirs to read (the other side keeps the whole conversation). A guest
    that registers its own nick keeps its own."""
    server = ircd("--irc-guests")
    caps = ("batch", "server-time", "message-tags", "draft/chathistory")
    alice = irc_user(server, "alice", caps=caps)
    first = server.irc()
    first.register_connection("baz", caps=caps)
    first.send("PRIVMSG alice :a secret from the first baz")
    alice.expect(r"PRIVMSG alice :a secret from the first baz")
    alice.send("PRIVMSG baz :an answer to the first baz")
    first.expect(r"PRIVMSG baz :an answer to the first baz")
    assert private_history(first, "alice") == ["a secret from the first baz", "an answer to the first baz"]
    quit_and_wait(server, first, "baz")
    second = server.irc()
    second.register_connection("baz", caps=caps)
    assert private_history(second, "alice") == []
    second.send("PRIVMSG alice :hello from the second baz")
    alice.expect(r"PRIVMSG alice :hello from the second baz")
    assert private_history(second, "alice") == ["hello from the second baz"]
    assert private_history(alice, "baz") == ["a secret from the first baz", "an answer to the first baz",
                                             "hello from the second baz"]
    # Registered meanwhile by the second guest itself: still its own.
    second.send("PRIVMSG NickServ :REGISTER baz-is-mine")
    second.expect(r"900 baz ")
    assert private_history(second, "alice") == ["hello from the second baz"]
    # A guest nick registered by someone else while its guest is away.
    third = server.irc()
    third.register_connection("qux", caps=caps)
    third.send("PRIVMSG alice :qux was here")
    alice.expect(r"PRIVMSG alice :qux was here")
    quit_and_wait(server, third, "qux")
    claimer = server.client()
    claimer.register("qux")
    claimer.login("qux")
    claimer.send("HISTORY @alice 10")
    assert claimer.lines_until(r"OK HISTORY ") == ["OK HISTORY 0"]
    assert private_history(alice, "qux") == ["qux was here"]


def test_a_guest_stays_marked_in_history_after_it_leaves_and_across_a_restart(ircd):
    """The guests are the accounts with the guest mark, read at start: an
    offline guest's message replayed from history has no account tag."""
    server = ircd("--irc-guests")
    guest = server.irc()
    guest.send("NICK drifter")
    guest.send("USER d 0 * :d")
    guest.expect(r"366 drifter #general ")
    guest.send("PRIVMSG #general :passing through")
    guest.send("QUIT")
    guest.expect_closed()
    server.wait_log(r".*closing .*drifter\): quit")
    server.stop()
    server.start()
    server.irc_port = int(re.findall(r"IRC port [^ ]*:(\d+)", "".join(server.log))[-1])  # this run's
    bob = irc_user(server, "bob", caps=("account-tag", "server-time", "batch", "message-tags"))
    bob.send("CHATHISTORY LATEST #general * 10")
    said = bob.expect(r".*PRIVMSG #general :passing through", raw=True).group(0)
    assert "batch" in tags_of(said) and "account" not in tags_of(said)
