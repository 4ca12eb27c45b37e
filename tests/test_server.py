"""End-to-end tests: a real sae-server child process, real loopback sockets.

Each test is a small story told from the users' side of the wire: who
connects, what they type, what they see. Nothing sleeps: a client waits for
the line it expects (with a timeout). To show that something did *not*
happen, a test waits for a later line that the server would have sent after
it (a marker message, a PONG) and checks what came before.

Every story runs twice: on SQLite and on a fresh database of a real MariaDB
(skipped where no server answers, a failure under CI=true). The wire must
not tell the two apart.
"""

import calendar
import re
import socket
import time

import pytest

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "mysql"])

PASSWORD = "password1"
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
MSG_RE = re.compile(r"MSG (\d+) (%s) (\S+) (.*)\Z" % TS, re.S)
PRIV_RE = re.compile(r"PRIV (\d+) (%s) (\S+) (\S+) (.*)\Z" % TS, re.S)


# --- helpers -------------------------------------------------------------

def sign_up(server, *names, password=PASSWORD):
    """Register accounts from a throwaway connection."""
    client = server.client()
    for name in names:
        client.send("REGISTER %s %s" % (name, password))
        assert client.next() == "OK REGISTER %s" % name
    client.send("QUIT")
    client.expect_closed()


def online(server, name, password=PASSWORD):
    """A new session of an existing account, logged in, login burst read."""
    client = server.client()
    client.login(name, password)
    return client


def gather(server, *names):
    """Log in one session per name (a name may repeat: several sessions of
    one account), in order. Every session already online sees exactly one
    ``JOIN`` per account that arrives after it, which is read here."""
    sessions, here = [], set()
    for name in names:
        client = online(server, name)
        if name not in here:
            for earlier in sessions:
                assert earlier.next() == "JOIN %s" % name
            here.add(name)
        sessions.append(client)
    return sessions


def newcomer(server, name, password=PASSWORD):
    """Register a new account and log it in on one connection."""
    client = server.client()
    client.register(name, password)
    client.login(name, password)
    return client


def msg(line):
    """A MSG line as (id, ts, name, text); fails on anything else."""
    match = MSG_RE.match(line)
    assert match, "not a MSG line: %r" % line
    return int(match.group(1)), match.group(2), match.group(3), match.group(4)


def room_messages(lines):
    return [msg(line) for line in lines if line.startswith("MSG ")]


def say_all(client, name, texts):
    """Send several SAY lines at once; return their (id, text) as the sender sees them."""
    client.send("".join("SAY %s\n" % text for text in texts))
    seen = []
    for text in texts:
        match = client.expect(r"MSG (\d+) %s %s %s\Z" % (TS, re.escape(name), re.escape(text)))
        seen.append((int(match.group(1)), text))
    return seen


def marker(speaker, listeners, text):
    """``speaker`` says ``text``; return, per listener, the lines it got up to it."""
    speaker.send("SAY %s" % text)
    pattern = r"MSG \d+ %s \S+ %s\Z" % (TS, re.escape(text))
    return [listener.lines_until(pattern) for listener in listeners]


def login_burst(client):
    """The lines a successful LOGIN answers with, exactly, in order."""
    lines = [client.next()]
    assert lines[0].startswith("OK LOGIN "), lines
    while True:
        line = client.next()
        lines.append(line)
        if not line.startswith("MSG "):
            break
    assert re.match(r"OK HISTORY \d+\Z", lines[-1]), lines
    lines.append(client.next())
    assert lines[-1].startswith("USERS "), lines
    return lines


def epoch_seconds(ts):
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000


# --- accounts ------------------------------------------------------------

def test_a_newcomer_registers_and_logs_in(server, unique_name):
    alice = unique_name("alice")
    client = server.client()
    client.send("REGISTER %s %s" % (alice, PASSWORD))
    assert client.next() == "OK REGISTER %s" % alice
    client.send("LOGIN %s %s" % (alice, PASSWORD))
    assert client.next() == "OK LOGIN %s" % alice
    assert client.next() == "OK HISTORY 0"
    assert client.next() == "USERS 1 %s" % alice


def test_registering_does_not_log_in(server, unique_name):
    client = server.client()
    client.register(unique_name())
    client.send("SAY hello")
    assert re.match(r"ERR 401 \S", client.next())


def test_login_shows_the_room_history_oldest_first_then_who_is_here(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker = online(server, alice)
    said = say_all(speaker, alice, ["first", "second  with  spaces", "third"])

    listener = server.client()
    listener.send("LOGIN %s %s" % (bob, PASSWORD))
    lines = login_burst(listener)
    assert lines[0] == "OK LOGIN %s" % bob
    history = room_messages(lines)
    assert [(m[0], m[3]) for m in history] == said
    assert all(m[2] == alice for m in history)
    assert lines[-2] == "OK HISTORY 3"
    assert lines[-1] == "USERS 2 %s %s" % (alice, bob)


def test_login_answers_with_the_name_as_registered(server, unique_name):
    name = unique_name("MixedCase")
    sign_up(server, name)
    client = server.client()
    client.send("LOGIN %s %s" % (name.lower(), PASSWORD))
    line = client.next()
    # Whether a login in another case is accepted is not in the contract;
    # if it is, the answer shows the name as registered.
    assert line == "OK LOGIN %s" % name or line.startswith("ERR 401 "), line


def test_wrong_password_and_unknown_name_get_the_same_answer(server, unique_name):
    alice = unique_name("alice")
    sign_up(server, alice)
    client = server.client()
    client.send("LOGIN %s wrong-password" % alice)
    wrong_password = client.next()
    client.send("LOGIN %s %s" % (unique_name("nobody"), PASSWORD))
    unknown_name = client.next()
    assert wrong_password.startswith("ERR 401 ")
    assert unknown_name == wrong_password
    # Still not logged in...
    client.send("WHO")
    assert client.next().startswith("ERR 401 ")
    # ...but the connection is still open, and the right password works.
    client.send("LOGIN %s %s" % (alice, PASSWORD))
    assert client.next() == "OK LOGIN %s" % alice


def test_a_name_is_taken_whatever_its_case(server, unique_name):
    name = unique_name("Alice")
    sign_up(server, name)
    client = server.client()
    for attempt in (name, name.lower(), name.upper()):
        client.send("REGISTER %s otherpassword" % attempt)
        assert re.match(r"ERR 409 \S", client.next()), attempt
    # The first owner keeps the name and the password.
    client.send("LOGIN %s %s" % (name, PASSWORD))
    assert client.next() == "OK LOGIN %s" % name


@pytest.mark.parametrize("name", ["x" * 33, "bad!name", "bäd", "a/b", "名前", "semi;colon"])
def test_invalid_names_are_refused(server, name):
    client = server.client()
    client.send("REGISTER %s %s" % (name, PASSWORD))
    assert re.match(r"ERR 400 \S", client.next())
    # The connection stays usable.
    client.send("PING still-here")
    assert client.next() == "PONG still-here"


@pytest.mark.parametrize("name", ["a", "x" * 32, "a.b-c_D9"])
def test_names_at_the_edges_are_accepted(server, name):
    client = server.client()
    client.send("REGISTER %s %s" % (name, PASSWORD))
    assert client.next() == "OK REGISTER %s" % name


@pytest.mark.parametrize("password", ["1234567", "é" * 3 + "a", "x" * 1025])
def test_invalid_passwords_are_refused(server, unique_name, password):
    name = unique_name()
    client = server.client()
    client.send("REGISTER %s %s" % (name, password))
    assert re.match(r"ERR 400 \S", client.next())
    # Nothing was created: the name is still free.
    client.send("REGISTER %s %s" % (name, PASSWORD))
    assert client.next() == "OK REGISTER %s" % name


@pytest.mark.parametrize("password", ["12345678", "é" * 4, "x" * 1024, "correct horse  battery"])
def test_passwords_at_the_edges_work(server, unique_name, password):
    name = unique_name()
    client = server.client()
    client.send("REGISTER %s %s" % (name, password))
    assert client.next() == "OK REGISTER %s" % name
    client.send("LOGIN %s %s" % (name, password))
    assert client.next() == "OK LOGIN %s" % name


def test_a_password_with_spaces_must_be_given_whole(server, unique_name):
    name = unique_name()
    client = server.client()
    client.register(name, "correct horse battery")
    client.send("LOGIN %s correct horse" % name)
    assert client.next().startswith("ERR 401 ")
    client.send("LOGIN %s correct horse battery" % name)
    assert client.next() == "OK LOGIN %s" % name


# --- the room ------------------------------------------------------------

def test_everyone_sees_every_message_in_order_sender_included(server, unique_name):
    names = [unique_name("amy"), unique_name("bob"), unique_name("cyd")]
    sign_up(server, *names)
    amy, bob, cyd = gather(server, *names)
    amy.send("SAY one\nSAY two\nSAY three\n")
    bob.send("SAY four")

    seen = []
    for client in (amy, bob, cyd):
        lines = []
        while len(room_messages(lines)) < 4:
            lines.append(client.next())
        seen.append(room_messages(lines))
    for messages in seen:
        ids = [m[0] for m in messages]
        assert ids == sorted(ids) and len(set(ids)) == 4, messages
        amys = [(m[2], m[3]) for m in messages if m[2] == names[0]]
        assert amys == [(names[0], "one"), (names[0], "two"), (names[0], "three")]
        assert (names[1], "four") in [(m[2], m[3]) for m in messages]
    # Every session saw the same messages, with the same ids, in the same order.
    assert seen[0] == seen[1] == seen[2]


def test_a_room_message_line(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker, listener = gather(server, alice, bob)
    text = "héllo   wörld\t👋 tabs\tand  spaces"
    before = time.time()
    speaker.send("SAY %s" % text)
    line = listener.expect(r"MSG ").string
    after = time.time()
    msg_id, ts, name, said = msg(line)
    assert (name, said) == (alice, text)
    assert msg_id > 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d\dZ\Z", ts)
    # UTC, not local time: the timestamp is now.
    assert before - 2 <= epoch_seconds(ts) <= after + 2
    assert speaker.expect(r"MSG ").string == line


def test_lowercase_verbs_work(server, unique_name):
    alice = unique_name("alice")
    client = server.client()
    client.send("register %s %s" % (alice, PASSWORD))
    assert client.next() == "OK REGISTER %s" % alice
    client.send("Login %s %s" % (alice, PASSWORD))
    login_burst(client)
    client.send("say hi there")
    assert msg(client.next())[2:] == (alice, "hi there")
    client.send("who")
    assert client.next() == "USERS 1 %s" % alice


# --- private messages ----------------------------------------------------

def test_tell_reaches_the_recipient_and_the_sender_only(server, unique_name):
    alice, bob, carol = unique_name("alice"), unique_name("bob"), unique_name("carol")
    sign_up(server, alice, bob, carol)
    a, b, c = gather(server, alice, bob, carol)
    a.send("TELL %s meet me  at noon" % bob)
    to_bob = b.expect(r"PRIV ").string
    to_alice = a.expect(r"PRIV ").string
    match = PRIV_RE.match(to_bob)
    assert match, to_bob
    assert match.group(3, 4, 5) == (alice, bob, "meet me  at noon")
    assert to_alice == to_bob
    # Carol, who was not told, sees the next room message and nothing private before it.
    [carol_lines] = marker(a, [c], "after the secret")
    assert not [line for line in carol_lines if line.startswith("PRIV ") or "noon" in line]
    # The private message took an id in the same sequence.
    assert msg(carol_lines[-1])[0] > int(match.group(1))


def test_tell_reaches_every_session_of_both_accounts(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    alice1, alice2, bob1, bob2 = gather(server, alice, alice, bob, bob)
    bob1.send("TELL %s psst" % alice)
    lines = [client.expect(r"PRIV ").string for client in (alice1, alice2, bob1, bob2)]
    assert len(set(lines)) == 1
    assert PRIV_RE.match(lines[0]).group(3, 4, 5) == (bob, alice, "psst")


def test_tell_to_no_such_account_is_404(server, unique_name):
    alice = unique_name("alice")
    client = newcomer(server, alice)
    client.send("TELL %s hello?" % unique_name("ghost"))
    assert re.match(r"ERR 404 \S", client.next())
    client.send("PING x")
    assert client.next() == "PONG x"


def test_a_look_alike_name_never_reaches_the_account(server, unique_name):
    alice, kate = unique_name("alice"), unique_name("kate")
    sign_up(server, alice, kate)
    a, k = gather(server, alice, kate)
    lookalike = "\u212a" + kate[1:]  # the Kelvin sign, which str.lower() turns into "k"
    a.send("TELL %s hi" % lookalike)
    assert a.next() == "ERR 404 no such account %s" % lookalike
    a.send("TELL %s the real one" % kate)
    assert PRIV_RE.match(k.next()).group(5) == "the real one"


def test_a_look_alike_verb_is_unknown(server, unique_name):
    kate = unique_name("kate")
    sign_up(server, kate)
    client = server.client()
    client.send("log\u0131n %s %s" % (kate, PASSWORD))  # a dotless i, which upper() makes "I"
    assert client.next() == "ERR 421 unknown command log\u0131n"
    client.send("WHO")
    assert client.next() == "ERR 401 log in first"


def test_tell_to_an_offline_account_is_echoed_to_the_sender(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    client = online(server, alice)
    client.send("TELL %s see you tomorrow" % bob)
    match = PRIV_RE.match(client.next())
    assert match
    assert match.group(3, 4, 5) == (alice, bob, "see you tomorrow")
    # Stored like a room message: it used up an id.
    client.send("SAY next")
    assert msg(client.next())[0] > int(match.group(1))


# --- who is here ---------------------------------------------------------

def test_who_lists_online_accounts_once_each_sorted(server, unique_name):
    amy, bob, cyd, dan = (unique_name("amy"), unique_name("bob"), unique_name("cyd"),
                          unique_name("dan"))
    sign_up(server, amy, bob, cyd, dan)
    clients = gather(server, cyd, amy, bob, amy)
    # dan is registered but not online.
    clients[0].send("WHO")
    assert clients[0].expect(r"USERS ").string == "USERS 3 %s %s %s" % (amy, bob, cyd)


def test_join_on_first_session_and_leave_when_the_last_one_ends(server, unique_name):
    alice, carol = unique_name("alice"), unique_name("carol")
    sign_up(server, alice, carol)
    watcher = online(server, carol)

    first = online(server, alice)
    assert watcher.next() == "JOIN %s" % alice
    second = online(server, alice)
    # A second session of the same account is not a new arrival.
    [lines] = marker(first, [watcher], "marker one")
    assert [line for line in lines if line.startswith(("JOIN", "LEAVE"))] == []

    first.send("QUIT")
    assert first.expect_closed()[-1].startswith("BYE ")
    # Alice is still here through her second session.
    [lines] = marker(second, [watcher], "marker two")
    assert [line for line in lines if line.startswith(("JOIN", "LEAVE"))] == []
    watcher.send("WHO")
    assert watcher.expect(r"USERS ").string == "USERS 2 %s %s" % tuple(sorted((alice, carol)))

    second.send("QUIT")
    second.expect_closed()
    assert re.match(r"LEAVE %s \S" % re.escape(alice), watcher.next())
    watcher.send("WHO")
    assert watcher.next() == "USERS 1 %s" % carol


def test_leave_when_a_session_just_drops(server, unique_name):
    alice, carol = unique_name("alice"), unique_name("carol")
    sign_up(server, alice, carol)
    watcher = online(server, carol)
    dropper = online(server, alice)
    assert watcher.next() == "JOIN %s" % alice
    dropper.close()
    assert re.match(r"LEAVE %s \S" % re.escape(alice), watcher.next())


def test_quit_reason_shows_in_leave(server, unique_name):
    alice, carol = unique_name("alice"), unique_name("carol")
    sign_up(server, alice, carol)
    watcher = online(server, carol)
    leaver = online(server, alice)
    watcher.expect("JOIN ")
    leaver.send("QUIT off to lunch")
    assert leaver.expect_closed() == ["BYE off to lunch"]
    assert watcher.next() == "LEAVE %s off to lunch" % alice


# --- history -------------------------------------------------------------

def test_history_pages_back_and_catches_up(make_server, unique_name):
    server = make_server("--history", "3")
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker = online(server, alice)
    said = say_all(speaker, alice, ["m1", "m2", "m3", "m4"])
    speaker.send("TELL %s private in the middle" % bob)
    speaker.expect(r"PRIV ")
    said += say_all(speaker, alice, ["m5", "m6", "m7"])
    ids = [msg_id for msg_id, _ in said]
    assert ids == sorted(ids)

    def history(client, request):
        client.send(request)
        lines = client.lines_until(r"OK HISTORY ")
        assert all(line.startswith("MSG ") for line in lines[:-1]), lines
        texts = [m[3] for m in room_messages(lines)]
        assert lines[-1] == "OK HISTORY %d" % len(texts)
        return texts

    # --history 3: the login shows the last three room messages, oldest first.
    reader = server.client()
    reader.send("LOGIN %s %s" % (bob, PASSWORD))
    burst = login_burst(reader)
    assert [m[3] for m in room_messages(burst)] == ["m5", "m6", "m7"]
    assert burst[-2] == "OK HISTORY 3"

    assert history(reader, "HISTORY 2") == ["m6", "m7"]
    assert history(reader, "HISTORY 2 before=%d" % ids[4]) == ["m3", "m4"]
    assert history(reader, "HISTORY 10 before=%d" % ids[2]) == ["m1", "m2"]
    assert history(reader, "HISTORY 10 before=%d" % ids[0]) == []
    assert history(reader, "HISTORY 2 after=%d" % ids[2]) == ["m4", "m5"]
    assert history(reader, "HISTORY 10 after=%d" % ids[2]) == ["m4", "m5", "m6", "m7"]
    assert history(reader, "HISTORY 10 after=%d" % ids[6]) == []
    assert history(reader, "HISTORY 0") == []
    assert history(reader, "history 100") == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]


def test_login_history_is_the_last_50_by_default(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker = online(server, alice)
    texts = ["n%d" % i for i in range(1, 56)]
    say_all(speaker, alice, texts)
    reader = server.client()
    reader.send("LOGIN %s %s" % (bob, PASSWORD))
    burst = login_burst(reader)
    assert [m[3] for m in room_messages(burst)] == texts[-50:]
    assert burst[-2] == "OK HISTORY 50"


def test_history_count_is_capped_at_1000(server, unique_name):
    alice = unique_name("alice")
    client = newcomer(server, alice)
    texts = ["c%d" % i for i in range(1, 1006)]
    say_all(client, alice, texts)
    client.send("HISTORY 5000")
    lines = client.lines_until(r"OK HISTORY ")
    assert lines[-1] == "OK HISTORY 1000"
    assert [m[3] for m in room_messages(lines)] == texts[-1000:]


def test_a_huge_history_count_is_just_capped(server, unique_name):
    alice = unique_name("alice")
    client = newcomer(server, alice)
    say_all(client, alice, ["only", "two"])
    client.send("HISTORY 9223372036854775807")
    lines = client.lines_until(r"OK HISTORY ")
    assert [m[3] for m in room_messages(lines)] == ["only", "two"]
    assert lines[-1] == "OK HISTORY 2"


def test_history_numbers_beyond_64_bits_are_400_not_a_storage_error(server, unique_name):
    client = newcomer(server, unique_name())
    for line in ["HISTORY 5 before=%d" % 2**63, "HISTORY 5 after=%d" % 2**64, "HISTORY %d" % 2**63]:
        client.send(line)
        assert client.next() == "ERR 400 usage: HISTORY <count> [before=<id>|after=<id>]"
    client.send("HISTORY 5 before=%d" % (2**63 - 1))
    assert client.next() == "OK HISTORY 0"
    # Stopped, so that the whole log has been read.
    server.stop()
    assert "Traceback" not in "".join(server.log)


@pytest.mark.parametrize("request_line", ["HISTORY", "HISTORY ", "HISTORY many", "HISTORY -1",
                                          "HISTORY 5 since=3", "HISTORY 5 before=x",
                                          "HISTORY 5 before=3 after=1"])
def test_bad_history_requests_are_400(server, unique_name, request_line):
    client = newcomer(server, unique_name())
    client.send(request_line)
    assert re.match(r"ERR 400 \S", client.next())


def test_accounts_and_messages_survive_a_restart(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    client = online(server, alice)
    [(kept_id, _)] = say_all(client, alice, ["remember me"])
    kept_line = client.seen[-1]
    client.send("TELL %s private before restart" % bob)
    private_id = int(PRIV_RE.match(client.expect(r"PRIV ").string).group(1))

    server.restart()

    client = server.client()
    client.send("LOGIN %s %s" % (alice, PASSWORD))
    burst = login_burst(client)
    assert kept_line in burst
    assert burst[-2] == "OK HISTORY 1"
    # The name is still taken, and new messages continue the id sequence.
    client.send("REGISTER %s %s" % (bob.upper(), PASSWORD))
    assert client.next().startswith("ERR 409 ")
    client.send("SAY after restart")
    assert msg(client.next())[0] > max(kept_id, private_id)


# --- what is refused -----------------------------------------------------

@pytest.mark.parametrize("line", ["SAY hello", "TELL bob hello", "WHO", "HISTORY 5"])
def test_before_login_only_register_login_ping_and_quit(server, line):
    client = server.client()
    client.send(line)
    assert re.match(r"ERR 401 \S", client.next())
    client.send("PING ok")
    assert client.next() == "PONG ok"
    client.send("QUIT")
    assert client.next().startswith("BYE ")
    assert client.expect_closed() == []


@pytest.mark.parametrize("logged_in", [False, True])
def test_an_unknown_verb_is_421(server, unique_name, logged_in):
    client = newcomer(server, unique_name()) if logged_in else server.client()
    client.send("FROBNICATE the widget")
    assert re.match(r"ERR 421 \S", client.next())
    client.send("SAYHELLO")
    assert client.next().startswith("ERR 421 ")
    client.send("PING alive")
    assert client.next() == "PONG alive"


def test_a_second_login_is_400(server, unique_name):
    alice = unique_name("alice")
    client = newcomer(server, alice)
    client.send("LOGIN %s %s" % (alice, PASSWORD))
    assert re.match(r"ERR 400 \S", client.next())
    client.send("SAY still me")
    assert msg(client.next())[2:] == (alice, "still me")


@pytest.mark.parametrize("line", ["SAY", "SAY ", "SAY    ", "SAY \t", "TELL", "TELL {bob}",
                                  "TELL {bob} ", "TELL {bob}  \t "])
def test_say_or_tell_without_text_is_400(server, unique_name, line):
    bob = unique_name("bob")
    sign_up(server, bob)
    client = newcomer(server, unique_name())
    client.send(line.format(bob=bob))
    assert re.match(r"ERR 400 \S", client.next())


def test_empty_lines_are_ignored(server, unique_name):
    client = server.client()
    client.send_raw(b"\n\r\n\n   \n\t\nPING after-blanks\n")
    assert client.next() == "PONG after-blanks"
    client = newcomer(server, unique_name())
    client.send_raw(b"\n\r\nPING logged-in\n")
    assert client.next() == "PONG logged-in"


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"caf\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_invalid_utf8_is_400_and_the_connection_stays(server, unique_name, bad):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker, listener = gather(server, alice, bob)
    speaker.send_raw(b"SAY bad " + bad + b" bytes\nSAY good bytes\n")
    assert re.match(r"ERR 400 \S", speaker.next())
    assert msg(speaker.next())[2:] == (alice, "good bytes")
    # The refused line never reached anyone.
    lines = listener.lines_until(r"MSG .* good bytes\Z")
    assert [line for line in lines if "bad" in line] == []


def test_invalid_utf8_before_login_is_400_not_401(server):
    client = server.client()
    client.send_raw(b"PING \xff\n")
    assert client.next().startswith("ERR 400 ")
    client.send("PING fine")
    assert client.next() == "PONG fine"


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x0b", "\x0c", "\r", "\x7f",
                                  "\x80", "\x85", "\x9b", "\x9f"])
def test_control_characters_are_400_and_the_connection_stays(server, unique_name, char):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker, listener = gather(server, alice, bob)
    speaker.send(("SAY bad%sline\nSAY clean line\n" % char).encode("utf-8"))
    assert re.match(r"ERR 400 \S", speaker.next())
    assert msg(speaker.next())[2:] == (alice, "clean line")
    lines = listener.lines_until(r"MSG .* clean line\Z")
    assert [line for line in lines if "bad" in line] == []


def test_a_tab_is_not_a_control_character(server, unique_name):
    alice = unique_name("alice")
    client = newcomer(server, alice)
    client.send("SAY col1\tcol2")
    assert msg(client.next())[2:] == (alice, "col1\tcol2")


def test_an_overlong_line_is_413_and_the_connection_stays(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker, listener = gather(server, alice, bob)
    speaker.send("SAY " + "x" * 5000)
    assert re.match(r"ERR 413 \S", speaker.next())
    # An overlong line arriving in pieces is one error, then normal service.
    speaker.send_raw(b"SAY " + b"y" * 3000)
    speaker.send_raw(b"y" * 3000)
    speaker.send_raw(b"y" * 3000 + b"\nPING after-long\n")
    assert re.match(r"ERR 413 \S", speaker.next())
    assert speaker.next() == "PONG after-long"
    lines = marker(speaker, [listener], "short again")[0]
    assert [line for line in lines if "xxxx" in line or "yyyy" in line] == []


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_line_of_exactly_4096_bytes_is_accepted_and_4097_is_not(server, unique_name, ending):
    alice = unique_name("alice")
    client = newcomer(server, alice)
    text = "z" * (4096 - len("SAY "))
    client.send_raw(("SAY %s%s" % (text, ending)).encode())
    assert msg(client.next())[2:] == (alice, text)
    client.send_raw(("SAY %sz%s" % (text, ending)).encode())
    assert client.next().startswith("ERR 413 ")
    # The limit is in bytes, not characters.
    text = "é" * 2046  # 4092 bytes
    client.send_raw(("SAY %s%s" % (text, ending)).encode())
    assert msg(client.next())[3] == text
    client.send_raw(("SAY %sé%s" % (text, ending)).encode())
    assert client.next().startswith("ERR 413 ")


def test_a_flood_without_newlines_is_cut_off(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    flooder, bystander = gather(server, alice, bob)
    try:
        flooder.send_raw(b"SAY " + b"f" * (65 * 1024))
    except OSError:
        pass
    lines = flooder.expect_closed()
    assert lines and lines[-1].startswith("BYE "), lines
    assert lines[0].startswith("ERR 413 "), lines
    bystander.send("PING unaffected")
    assert bystander.expect(r"PONG").string == "PONG unaffected"


def test_a_client_that_disconnects_mid_line_disturbs_nobody(server, unique_name):
    alice, bob, carol = unique_name("alice"), unique_name("bob"), unique_name("carol")
    sign_up(server, alice, bob, carol)
    b, c, quitter = gather(server, bob, carol, alice)
    quitter.send_raw(b"SAY half a li")
    quitter.close()
    # A stranger who never logged in does the same.
    stranger = server.client()
    stranger.send_raw(b"REGISTER someb")
    stranger.close()

    assert re.match(r"LEAVE %s \S" % re.escape(alice), c.expect(r"LEAVE ").string)
    b_lines, c_lines = marker(b, [b, c], "carry on")
    for lines in (b_lines, c_lines):
        assert [line for line in lines if "half" in line] == []
    c.send("SAY me too")
    assert msg(b.expect(r"MSG .* me too\Z").string)[2] == carol


# --- ping, quit ----------------------------------------------------------

def test_ping_pong(server, unique_name):
    client = server.client()
    client.send("PING")
    assert client.next() == "PONG"
    client.send("PING abc123")
    assert client.next() == "PONG abc123"
    client.send("PING token with  spaces")
    assert client.next() == "PONG token with  spaces"
    client.register(unique_name())
    client = newcomer(server, unique_name())
    client.send("PING after-login")
    assert client.next() == "PONG after-login"


def test_quit_says_bye_then_closes(server, unique_name):
    client = server.client()
    client.send("QUIT")
    assert client.expect_closed() == ["BYE goodbye"]
    client = newcomer(server, unique_name())
    client.send("QUIT see you")
    assert client.expect_closed() == ["BYE see you"]


# --- framing on the wire -------------------------------------------------

def test_pipelined_commands_are_answered_in_order(server, unique_name):
    bob = unique_name("bob")
    client = server.client()
    client.send_raw(("REGISTER {0} {1}\nLOGIN {0} {1}\nSAY a\nSAY b\nWHO\nPING x\n"
                     .format(bob, PASSWORD)).encode())
    lines = client.lines_until(r"PONG")
    assert len(lines) == 8, lines
    assert lines[:4] == ["OK REGISTER %s" % bob, "OK LOGIN %s" % bob, "OK HISTORY 0",
                         "USERS 1 %s" % bob]
    assert msg(lines[4])[2:] == (bob, "a")
    assert msg(lines[5])[2:] == (bob, "b")
    assert msg(lines[4])[0] < msg(lines[5])[0]
    assert lines[6:] == ["USERS 1 %s" % bob, "PONG x"]


def test_pipelined_login_then_say_in_one_packet(server, unique_name):
    alice = unique_name("alice")
    sign_up(server, alice)
    client = server.client()
    client.send_raw(("LOGIN %s %s\nSAY a\nSAY b\nPING x\n" % (alice, PASSWORD)).encode())
    lines = client.lines_until(r"PONG")
    assert lines[:3] == ["OK LOGIN %s" % alice, "OK HISTORY 0", "USERS 1 %s" % alice]
    assert [m[2:] for m in room_messages(lines[3:5])] == [(alice, "a"), (alice, "b")]
    assert lines[5:] == ["PONG x"]


def test_a_line_sent_a_byte_at_a_time_arrives_whole(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    sign_up(server, alice, bob)
    speaker, listener = gather(server, alice, bob)
    speaker.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    text = "slow héllo 👋 world"
    for byte in ("SAY %s\r\n" % text).encode("utf-8"):
        speaker.send_raw(bytes([byte]))
    assert msg(listener.expect(r"MSG ").string)[2:] == (alice, text)
    assert msg(speaker.next())[2:] == (alice, text)


# --- the log -------------------------------------------------------------

def test_passwords_never_reach_the_log(server, unique_name):
    alice = unique_name("alice")
    secret, wrong, rejected = "s3cret-Pa55-xyzzy", "wr0ng-Pa55-plugh", "c0ntrol-Pa55-frotz"
    client = server.client()
    client.register(alice, secret)
    client.send("LOGIN %s %s" % (alice, wrong))
    assert client.next().startswith("ERR 401 ")
    client.send("LOGIN %s %s" % (unique_name("nobody"), wrong))
    assert client.next().startswith("ERR 401 ")
    client.send("LOGIN %s %s\x01" % (alice, rejected))
    assert client.next().startswith("ERR 400 ")
    client.send("REGISTER %s sh0rtpw" % unique_name())
    assert client.next().startswith("ERR 400 ")
    client.send("LOGIN %s %s" % (alice, secret))
    login_burst(client)
    client.send("LOGIN %s %s" % (alice, secret))
    assert client.next().startswith("ERR 400 ")
    server.stop()
    log = "".join(server.log)
    assert alice in log, "the log should at least show the login"
    for password in (secret, wrong, rejected, "sh0rtpw"):
        assert password not in log
