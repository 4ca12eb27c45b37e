"""Rooms and private conversations (protocol v1.1, docs/PROTOCOL.md) end
to end: real servers on loopback, real clients, SQLite and, where the store
matters, MariaDB.

A user's story each: alice and bob join rooms, say things in them, leave,
come back after a reconnect or a restart; a v1 client on the same server
sees what it always saw.
"""

import contextlib
import re
import threading

import pytest

from conftest import ServerProcess, account_client, turn_until

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


v1_client = account_client  # a protocol v1 client, registered and logged in


def rooms_client(server, name, register=True):
    """A client that speaks v1.1 (CAP rooms first), logged in as ``name``."""
    client = server.client()
    if register:
        client.register(name)
    client.send("CAP rooms")
    assert client.next() == "OK CAP rooms #general"
    client.login(name)
    return client


def answer(client, line, end=r"OK |ERR "):
    """Send ``line``; every line up to and including its answer's last."""
    client.send(line)
    return client.lines_until(end)


def said(client, text):
    """The id of the client's own message with this text, once it is back."""
    return int(client.expect(r"(?:MSG|RMSG) (\d+) .* %s$" % re.escape(text)).group(1))


# --- opting in, joining, saying, leaving ----------------------------------

def test_cap_rooms_is_answered_with_the_default_room_before_and_after_login(server, unique_name):
    alice = unique_name("alice")
    client = server.client()
    client.register(alice)
    assert answer(client, "CAP rooms") == ["OK CAP rooms #general"]
    assert answer(client, "CAP what") == ["ERR 400 unknown capability what (this server knows: rooms guests)"]
    assert answer(client, "JOIN #homework") == ["ERR 401 log in first"]
    client.login(alice)
    assert answer(client, "cap ROOMS") == ["OK CAP rooms #general"]


def test_join_rsay_part_and_rooms(server, unique_name):
    alice, bob, carol = unique_name("alice"), unique_name("bob"), unique_name("carol")
    a = rooms_client(server, alice)
    b = rooms_client(server, bob)
    c = rooms_client(server, carol)  # in #general only
    a.expect(r"JOIN %s$" % carol)
    b.expect(r"JOIN %s$" % carol)

    assert answer(a, "JOIN #Homework") == [
        "JOINED #Homework %s" % alice, "TOPIC #Homework", "MEMBERS #Homework 1 %s" % alice, "OK JOIN #Homework"]
    assert answer(b, "JOIN #homework") == [
        "JOINED #Homework %s" % bob, "TOPIC #Homework",
        "MEMBERS #Homework 2 %s" % " ".join(sorted([alice, bob], key=str.lower)), "OK JOIN #Homework"]
    assert a.next() == "JOINED #Homework %s" % bob
    # Joining again is no error, and nobody hears of it.
    assert answer(b, "JOIN #HOMEWORK")[-1] == "OK JOIN #Homework"

    b.send("RSAY #homework page 12, exercise 3")
    line = "RMSG (\\d+) %s #Homework %s page 12, exercise 3$" % (TS, bob)
    assert re.match(line, b.next())
    assert re.match(line, a.next())
    # carol is not in the room: she hears nothing of it, and may not speak in it.
    assert answer(c, "RSAY #homework hello?") == ["ERR 404 no such room #homework, or you are not in it"]
    assert answer(c, "RSAY #nowhere hello?") == ["ERR 404 no such room #nowhere, or you are not in it"]
    c.send("SAY in general")
    for client in (a, b, c):
        assert re.match("MSG \\d+ %s %s in general$" % (TS, carol), client.next())
    # RSAY in the default room is SAY.
    c.send("RSAY #GENERAL hi all")
    for client in (a, b, c):
        assert re.match("MSG \\d+ %s %s hi all$" % (TS, carol), client.next())

    assert answer(a, "ROOMS") == ["ROOM #general 3 3", "ROOM #Homework 2 2", "OK ROOMS 2"]
    assert answer(c, "ROOMS") == ["ROOM #general 3 3", "OK ROOMS 1"]
    assert answer(c, "LIST") == ["ROOM #general 3 3", "ROOM #Homework 2 2", "OK LIST 2"]

    assert answer(b, "PART #homework done for today") == [
        "PARTED #Homework %s done for today" % bob, "OK PART #Homework"]
    assert a.next() == "PARTED #Homework %s done for today" % bob
    assert answer(b, "PART #homework") == ["ERR 404 no such room #homework, or you are not in it"]
    a.send("RSAY #homework anyone?")
    said(a, "anyone?")
    b.send("PING after")
    assert b.next() == "PONG after"  # bob got no RMSG in between
    assert answer(a, "PART #Homework") == ["PARTED #Homework %s" % alice, "OK PART #Homework"]
    # The room stays, with no one in it.
    assert answer(c, "LIST") == ["ROOM #general 3 3", "ROOM #Homework 0 0", "OK LIST 2"]


def test_a_v1_client_sees_exactly_what_it_always_saw(server, unique_name):
    """alice is on twice: a v1 client and an opted-in one. Everything the
    rooms do reaches the second; the first sees v1's lines, byte for byte."""
    alice, bob = unique_name("alice"), unique_name("bob")
    old = v1_client(server, alice)
    new = rooms_client(server, alice, register=False)
    b = rooms_client(server, bob)
    assert old.next() == "JOIN %s" % bob

    new.expect(r"JOIN %s$" % bob)
    for line in ("JOIN #homework", "TOPIC #homework Maths", "PART #homework bye", "JOIN #homework"):
        assert answer(new, line)[-1].startswith("OK ")
    new.send("RSAY #homework page 12")
    said(new, "page 12")
    assert answer(b, "JOIN #homework")[-1] == "OK JOIN #homework"
    b.send("RSAY #homework only for the room")
    said(b, "only for the room")
    b.send("TELL %s psst" % alice)
    tell = b.expect(r"PRIV ").string
    b.send("SAY for everyone")
    everyone = b.expect(r"MSG ").string
    # The v1 session's very next lines: nothing of the room, its topic, its
    # members, nor of the other session's JOIN and PART.
    assert [old.next(), old.next()] == [tell, everyone]
    help_lines = answer(old, "HELP")
    assert not any("JOIN" in line or "CAP" in line for line in help_lines)
    assert new.expect(r"PRIV ").string == tell
    assert new.expect(r"MSG ").string == everyone
    new.send("HELP")
    assert any(line.startswith("INFO JOIN <#room>") for line in new.lines_until(r"OK HELP"))


def test_any_v1_1_line_opts_in_even_an_error(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    a = v1_client(server, alice)
    b = rooms_client(server, bob)
    a.expect(r"JOIN %s$" % bob)
    assert answer(b, "JOIN #club")[-1] == "OK JOIN #club"
    assert answer(a, "NAMES #club") == ["ERR 404 no such room #club, or you are not in it"]
    assert answer(a, "JOIN #club")[-2:] == [
        "MEMBERS #club 2 %s" % " ".join(sorted([alice, bob], key=str.lower)), "OK JOIN #club"]
    b.expect(r"JOINED #club %s$" % alice)
    b.send("RSAY #club welcome")
    assert re.match(r"RMSG \d+ %s #club %s welcome$" % (TS, bob), a.next())


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_membership_is_the_accounts_and_survives_reconnect_and_restart(make_server, unique_name):
    server = make_server()
    alice = unique_name("alice")
    first = rooms_client(server, alice)
    second = rooms_client(server, alice, register=False)
    assert answer(first, "JOIN #club") == [
        "JOINED #club %s" % alice, "TOPIC #club", "MEMBERS #club 1 %s" % alice, "OK JOIN #club"]
    # The account's other session is in the room too.
    assert second.next() == "JOINED #club %s" % alice
    first.send("RSAY #club note to self")
    said(second, "note to self")
    second.close()
    first.close()

    again = rooms_client(server, alice, register=False)
    assert answer(again, "ROOMS") == ["ROOM #club 1 1", "ROOM #general 1 1", "OK ROOMS 2"]
    server.restart()
    again = rooms_client(server, alice, register=False)
    assert answer(again, "ROOMS") == ["ROOM #club 1 1", "ROOM #general 1 1", "OK ROOMS 2"]
    again.send("RSAY #club still here")
    said(again, "still here")


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_leaving_the_default_room_sticks(make_server, unique_name):
    server = make_server()
    alice, bob = unique_name("alice"), unique_name("bob")
    a = rooms_client(server, alice)
    old = v1_client(server, alice, register=False)
    b = v1_client(server, bob)
    a.expect(r"JOIN %s$" % bob)
    b.send("SAY before")
    said(b, "before")
    said(a, "before")
    old.expect(r"JOIN %s$" % bob)
    said(old, "before")
    assert answer(a, "PART #general") == ["PARTED #general %s" % alice, "OK PART #general"]
    b.send("SAY after")
    said(b, "after")
    for client in (a, old):
        assert answer(client, "SAY anyone?") == ["ERR 404 no such room #general, or you are not in it"]
        assert answer(client, "HISTORY 10") == ["ERR 404 no such room #general, or you are not in it"]
    # Presence is server-wide still.
    b.close()
    old.expect(r"LEAVE %s connection closed$" % bob)
    old.close()
    a.close()
    server.restart()
    again = server.client()
    again.send("LOGIN %s password1" % alice)
    assert again.lines_until(r"USERS ") == ["OK LOGIN %s" % alice, "OK HISTORY 0", "USERS 1 %s" % alice]
    assert answer(again, "JOIN #general")[-1] == "OK JOIN #general"
    again.send("SAY back")
    said(again, "back")


def test_a_refused_message_is_answered_after_the_messages_sent_before_it(server, unique_name):
    alice = unique_name("alice")
    a = rooms_client(server, alice)
    # Pipelined: the refusals wait for the messages ahead of them to be
    # stored and echoed, so that answers stay in order.
    a.send("SAY one\nTELL %s two\nRSAY #club three\nPART #general\nTELL %s four\nSAY five\nPING end"
           % (alice, alice))
    lines = a.lines_until(r"PONG end")
    assert [re.sub(r"^(\w+) \d+ %s " % TS, r"\1 ", line) for line in lines] == [
        "MSG %s one" % alice, "PRIV %s %s two" % (alice, alice),
        "ERR 404 no such room #club, or you are not in it",
        "PARTED #general %s" % alice, "OK PART #general", "PRIV %s %s four" % (alice, alice),
        "ERR 404 no such room #general, or you are not in it", "PONG end"]


# --- topics, names, history ------------------------------------------------

def test_topic_set_cleared_and_asked(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    a = rooms_client(server, alice)
    b = rooms_client(server, bob)
    a.expect(r"JOIN %s$" % bob)
    assert answer(a, "JOIN #club")[-1] == "OK JOIN #club"
    assert answer(b, "JOIN #club")[-1] == "OK JOIN #club"
    a.expect(r"JOINED #club %s" % bob)
    lines = answer(a, "TOPIC #CLUB Maths until Friday  ")
    assert len(lines) == 2 and lines[1] == "OK TOPIC #club"
    assert re.match(r"TOPIC #club %s %s Maths until Friday$" % (alice, TS), lines[0])
    assert b.next() == lines[0]
    assert answer(b, "TOPIC #club") == [lines[0], "OK TOPIC #club"]
    assert answer(b, "JOIN #club") == [lines[0], "MEMBERS #club 2 %s" % " ".join(sorted([alice, bob], key=str.lower)),
                                       "OK JOIN #club"]
    assert answer(b, "LIST") == ["ROOM #club 2 2 Maths until Friday", "ROOM #general 2 2", "OK LIST 2"]
    cleared = answer(b, "TOPIC #club -")
    assert re.match(r"TOPIC #club %s %s$" % (bob, TS), cleared[0]) and cleared[1] == "OK TOPIC #club"
    assert a.next() == cleared[0]
    assert answer(b, "TOPIC #other x") == ["ERR 404 no such room #other, or you are not in it"]


def test_names_lists_members_online_or_not(server, unique_name):
    alice, bob = unique_name("alice"), unique_name("bob")
    b = rooms_client(server, bob)
    assert answer(b, "JOIN #club")[-1] == "OK JOIN #club"
    b.close()
    a = rooms_client(server, alice)
    assert answer(a, "NAMES #club") == ["ERR 404 no such room #club, or you are not in it"]
    assert answer(a, "JOIN #club")[-1] == "OK JOIN #club"
    assert answer(a, "NAMES #Club") == ["MEMBERS #club 2 %s" % " ".join(sorted([alice, bob], key=str.lower)),
                                        "OK NAMES #club"]
    assert answer(a, "LIST") == ["ROOM #club 1 2", "ROOM #general 1 2", "OK LIST 2"]


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_history_of_a_room_a_conversation_and_everything_missed(make_server, unique_name):
    server = make_server()
    alice, bob, carol = unique_name("alice"), unique_name("bob"), unique_name("carol")
    a = rooms_client(server, alice)
    b = rooms_client(server, bob)
    c = rooms_client(server, carol)
    for client in (a, b):
        assert answer(client, "JOIN #club")[-1] == "OK JOIN #club"
    assert answer(c, "JOIN #other")[-1] == "OK JOIN #other"
    b.send("RSAY #club r1")
    r1 = said(b, "r1")
    b.send("TELL %s p1" % alice)
    b.expect(r"PRIV .* p1$")
    c.send("TELL %s c1" % bob)
    c.expect(r"PRIV .* c1$")
    said(a, "r1")
    seen = int(a.expect(r"PRIV (\d+) .* p1$").group(1))  # the highest id alice has seen

    club = answer(a, "HISTORY #CLUB 10")
    assert len(club) == 2 and re.match(r"RMSG %d %s #club %s r1$" % (r1, TS, bob), club[0])
    assert club[1] == "OK HISTORY 1"
    # A room the account is not in gives its history to nobody.
    assert answer(c, "HISTORY #club 10") == ["ERR 404 no such room #club, or you are not in it"]
    assert answer(c, "HISTORY #nowhere 10") == ["ERR 404 no such room #nowhere, or you are not in it"]
    # A conversation, to its two accounts only: carol's with bob is hers.
    with_bob = answer(a, "HISTORY @%s 10" % bob)
    assert [line.split(" ", 3)[3] for line in with_bob[:-1]] == ["%s %s p1" % (bob, alice)]
    assert with_bob[-1] == "OK HISTORY 1"
    assert [line.split(" ", 3)[3] for line in answer(c, "HISTORY @%s 10" % bob)[:-1]] == ["%s %s c1" % (carol, bob)]
    assert answer(c, "HISTORY @%s 10" % alice) == ["OK HISTORY 0"]
    assert answer(c, "HISTORY @nobody 10") == ["ERR 404 no such account nobody"]

    # alice goes away; while she is away...
    a.close()
    b.send("TELL %s p2" % alice)
    b.expect(r"PRIV .* p2$")
    b.send("RSAY #club r2")
    said(b, "r2")
    b.send("SAY g1")
    said(b, "g1")
    c.send("RSAY #other not for alice")
    said(c, "not for alice")
    c.send("TELL %s not for alice either" % bob)
    c.expect(r"PRIV .* either$")
    b.send("RSAY #club r3")
    said(b, "r3")

    # ... and catches up, as PROTOCOL.md says a client does after a reconnect.
    back = server.client()
    back.send("CAP rooms\nLOGIN %s password1\nROOMS\nHISTORY * 1000 after=%d" % (alice, seen))
    lines = back.lines_until(r"OK ROOMS")
    assert lines[-3:] == ["ROOM #club 2 2", "ROOM #general 3 3", "OK ROOMS 2"], lines
    lines = back.lines_until(r"OK HISTORY \d+$")
    assert [re.sub(r" %s " % TS, " ", re.sub(r"^(\w+) \d+", r"\1", line)) for line in lines] == [
        "PRIV %s %s p2" % (bob, alice), "RMSG #club %s r2" % bob, "MSG %s g1" % bob, "RMSG #club %s r3" % bob,
        "OK HISTORY 4"]
    everything = [line for line in lines if not line.startswith("OK")]
    # Two at a time, repeated from the newest id until fewer come back:
    # the same messages, without a gap or a repeat.
    paged, after = [], seen
    while True:
        page = answer(back, "HISTORY * 2 after=%d" % after)
        paged += page[:-1]
        if len(page) - 1 < 2:
            break
        after = int(page[-2].split()[1])
    assert paged == everything
    assert answer(back, "HISTORY * 10") == [
        "ERR 400 usage: HISTORY <#room|@name|*> <count> [before=<id>|after=<id>] (* needs after=<id>)"]


def test_room_history_pages_back_and_shows_the_default_room_as_msg(server, unique_name):
    alice = unique_name("alice")
    a = rooms_client(server, alice)
    assert answer(a, "JOIN #club")[-1] == "OK JOIN #club"
    ids = []
    for number in range(5):
        a.send("RSAY #club n%d" % number)
        ids.append(said(a, "n%d" % number))
    a.send("SAY in general")
    general = said(a, "in general")
    page = answer(a, "HISTORY #club 2 before=%d" % ids[3])
    assert [line.split()[-1] for line in page] == ["n1", "n2", "2"]
    page = answer(a, "HISTORY #club 10 after=%d" % ids[3])
    assert [line.split()[-1] for line in page] == ["n4", "1"]
    assert re.match(r"MSG %d %s %s in general$" % (general, TS, alice), answer(a, "HISTORY #general 1")[0])


# --- limits ------------------------------------------------------------------

def test_rooms_per_account_rooms_on_the_server_and_topic_length(make_server, unique_name):
    server = make_server("--rooms-per-account", "3", "--rooms-max", "3", "--topic-max", "10")
    alice, bob = unique_name("alice"), unique_name("bob")
    a = rooms_client(server, alice)
    b = rooms_client(server, bob)
    a.expect(r"JOIN %s$" % bob)
    assert answer(a, "JOIN #a")[-1] == "OK JOIN #a"
    assert answer(a, "JOIN #b")[-1] == "OK JOIN #b"  # #general, #a, #b: 3
    assert answer(a, "JOIN #c") == ["ERR 405 too many rooms: an account may be in at most 3"]
    assert answer(a, "JOIN #A")[-1] == "OK JOIN #a"  # one it is in is no more
    # The server has #general, #a and #b: a fourth room is one too many...
    assert answer(b, "JOIN #c") == ["ERR 405 too many rooms: the server keeps at most 3"]
    # ... but a room that exists may be joined.
    assert answer(b, "JOIN #b")[-1] == "OK JOIN #b"
    assert answer(b, "LIST")[-1] == "OK LIST 3"

    a.expect(r"JOINED #b %s$" % bob)
    assert answer(a, "TOPIC #a 0123456789a") == ["ERR 413 topic too long (max 10 bytes)"]
    assert answer(a, "TOPIC #a 012345678\u00e9") == ["ERR 413 topic too long (max 10 bytes)"]
    assert answer(a, "TOPIC #a 0123456789")[-1] == "OK TOPIC #a"
    assert answer(a, "TOPIC #a")[0].endswith(" 0123456789")


def test_bad_room_options_are_refused_at_start(tmp_path):
    for args, said in ((["--default-room", "general"], "--default-room: 'general' is not a room name"),
                       (["--rooms-max", "0"], "--rooms-max must be above 0"),
                       (["--rooms-per-account", "0"], "--rooms-per-account must be above 0")):
        with pytest.raises(AssertionError) as failed:
            ServerProcess(tmp_path, *args).start()
        assert said in str(failed.value)


def test_a_server_with_another_default_room(make_server, unique_name):
    server = make_server("--default-room", "#Lobby")
    alice = unique_name("alice")
    a = rooms_client_for(server, alice, "#Lobby")
    a.send("SAY hello")
    said(a, "hello")
    assert answer(a, "ROOMS") == ["ROOM #Lobby 1 1", "OK ROOMS 1"]
    assert answer(a, "JOIN #general")[-1] == "OK JOIN #general"
    a.send("RSAY #general not the default here")
    assert re.match(r"RMSG \d+ %s #general %s not the default here$" % (TS, alice), a.next())


def rooms_client_for(server, name, default_room):
    client = server.client()
    client.register(name)
    assert answer(client, "CAP rooms") == ["OK CAP rooms %s" % default_room]
    client.login(name)
    return client


def test_room_lines_cost_flood_tokens_and_cap_rooms_names_do_not(harness):
    make, clock = harness
    h = make(exempt="", flood_burst=6, flood_rate=1.0)
    alice = h.logged_in("alice")
    clock.tick(10)  # the bucket is full again after REGISTER and LOGIN
    free = "CAP rooms\nROOMS\nNAMES #general\n" * 5
    alice.sendall((free + "JOIN #a\nTOPIC #a\nRSAY #a hi\nLIST\nHISTORY #a 5\nPART #a\n" + free
                   + "JOIN #b\nPING held\n").encode())
    lines = []
    for _ in range(50):
        h.turn()
        lines += h.lines(alice)
    # Six tokens: the six lines that cost one, and every free line after
    # them, were answered; JOIN #b waits for a token.
    assert lines[-1] == "OK NAMES #general" and "OK PART #a" in lines and "OK JOIN #b" not in lines
    assert len([line for line in lines if line == "OK ROOMS 1"]) == 10
    clock.tick(1)
    assert collect(h, alice, r"PONG")[-2:] == ["OK JOIN #b", "PONG held"]


def collect(h, sock, pattern):
    """Turn the Harness's loop until ``sock`` gets a line matching
    ``pattern``; every line it got, up to that one."""
    lines = []
    for _ in range(500):
        h.turn()
        for line in h.lines(sock):
            assert line is not None, "closed; saw %r" % lines
            lines.append(line)
            if re.match(pattern, line):
                return lines
    raise AssertionError("no %r; saw %r" % (pattern, lines))


def rooms_session(h, name):
    """A Harness client logged in as ``name`` that speaks v1.1."""
    sock = h.connect()
    sock.sendall(("REGISTER %s password1\nCAP rooms\nLOGIN %s password1\n" % (name, name)).encode())
    h.expect(sock, r"USERS ")
    return sock


def request(h, sock, line, end=r"OK |ERR "):
    sock.sendall(line.encode() + b"\n")
    return collect(h, sock, end)


# --- the operator --------------------------------------------------------------

@pytest.mark.parametrize("keep", [True, False])
def test_the_operator_lists_and_deletes_rooms_with_members_online(harness, keep):
    make, clock = harness
    h = make()
    alice, bob = rooms_session(h, "alice"), rooms_session(h, "bob")
    old = h.logged_in("carol")  # v1 only
    assert request(h, alice, "JOIN #club")[-1] == "OK JOIN #club"
    assert request(h, bob, "JOIN #club")[-1] == "OK JOIN #club"
    assert request(h, bob, "TOPIC #club maths")[-1] == "OK TOPIC #club"
    alice.sendall(b"RSAY #club kept?\n")
    collect(h, alice, r"RMSG ")
    club = h.server.store.find_room("#club")
    assert h.operator("rooms") == "#club 2/2 online: maths\n#general 3/3 online\n2 rooms"
    who = h.operator("who")
    assert re.search(r"^alice .* in #club #general$", who, re.M), who
    assert re.search(r"^carol .* in #general$", who, re.M), who

    assert h.operator("delete-room #club").startswith("usage: delete-room #ROOM keep-history|delete-history")
    assert h.operator("delete-room #General keep-history") == "cannot delete the default room #general"
    assert h.operator("delete-room #nowhere keep-history") == "no such room: #nowhere"
    choice = "keep-history" if keep else "delete-history"
    assert h.operator("delete-room #CLUB %s" % choice) == "deleted #club, %s (2 members online)" % (
        "history kept" if keep else "history deleted")
    for sock in (alice, bob):
        assert collect(h, sock, r"DELETED")[-1] == "DELETED #club deleted by the operator"
    assert request(h, alice, "RSAY #club still?") == ["ERR 404 no such room #club, or you are not in it"]
    assert request(h, bob, "ROOMS") == ["ROOM #general 3 3", "OK ROOMS 1"]
    assert h.operator("rooms") == "#general 3/3 online\n1 room"
    # The name is free: a JOIN makes a new room, with none of the old history.
    assert request(h, alice, "JOIN #club")[-3:] == ["TOPIC #club", "MEMBERS #club 1 alice", "OK JOIN #club"]
    assert request(h, alice, "HISTORY #club 10") == ["OK HISTORY 0"]
    kept = h.server.store.room_history(10, room_id=club.id)
    assert [message.body for message in kept] == (["kept?"] if keep else [])
    # carol, on v1, heard nothing of it.
    old.sendall(b"PING carol\n")
    assert collect(h, old, r"PONG") == ["PONG carol"]


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_an_rsay_in_flight_while_its_room_is_deleted_is_refused(harness, db_url):
    make, clock = harness
    h = make(db_url=db_url, storage_on_loop=False)
    alice, bob = rooms_session(h, "alice"), rooms_session(h, "bob")
    for sock in (alice, bob):
        assert request(h, sock, "JOIN #club")[-1] == "OK JOIN #club"
    collect(h, alice, r"JOINED #club bob")
    with held_storage(h):
        link = h.operator_link("delete-room #club delete-history")
        turn_until(h, lambda: h.server.workers.storage_jobs == 1, "the deletion handed to storage")
        alice.sendall(b"RSAY #club too late\n")
        # Checked when it is run: alice is in the room (the deletion is not stored yet).
        turn_until(h, lambda: h.server.workers.storage_jobs == 2, "the message handed to storage")
    assert collect(h, alice, r"ERR ") == [
        "DELETED #club deleted by the operator", "ERR 404 no such room #club, or you are not in it"]
    assert collect(h, bob, r"DELETED ") == ["DELETED #club deleted by the operator"]
    assert request(h, bob, "HISTORY * 10 after=0") == ["OK HISTORY 0"]
    assert h.operator_answer(link) == "deleted #club, history deleted (2 members online)"


def test_a_member_who_parts_while_their_rsay_is_in_flight(harness):
    """alice says something in #club from one session while another of
    hers leaves the room: the PART is stored first, then the message. It is
    stored, so the room's members (bob) get it, and the session that said
    it gets its echo as its answer; alice's other session, out of the room
    by then, does not."""
    make, clock = harness
    h = make(storage_on_loop=False)
    alice, bob = rooms_session(h, "alice"), rooms_session(h, "bob")
    other = h.connect()
    other.sendall(b"CAP rooms\nLOGIN alice password1\n")
    h.expect(other, r"USERS ")
    assert request(h, bob, "JOIN #club")[-1] == "OK JOIN #club"
    assert request(h, alice, "JOIN #club")[-1] == "OK JOIN #club"
    collect(h, other, r"JOINED #club alice")
    collect(h, bob, r"JOINED #club alice")
    with held_storage(h):
        other.sendall(b"PART #club gone\n")
        turn_until(h, lambda: h.server.workers.storage_jobs == 1, "the PART handed to storage")
        alice.sendall(b"RSAY #club last words\n")
        turn_until(h, lambda: h.server.workers.storage_jobs == 2, "the message handed to storage")
    echo = collect(h, alice, r"RMSG ")
    assert echo[0] == "PARTED #club alice gone"
    assert re.match(r"RMSG \d+ %s #club alice last words$" % TS, echo[1]) and len(echo) == 2
    assert collect(h, bob, r"RMSG ") == ["PARTED #club alice gone", echo[1]]
    assert collect(h, other, r"OK PART") == ["PARTED #club alice gone", "OK PART #club"]
    other.sendall(b"PING other\n")
    assert collect(h, other, r"PONG") == ["PONG other"]
    # It is in the room's history, for its members.
    assert request(h, bob, "HISTORY #club 1")[0] == echo[1]


@contextlib.contextmanager
def held_storage(h):
    """While inside, the storage thread waits: what is handed to it queues
    up, in order, until the block ends."""
    entered, release = threading.Event(), threading.Event()

    def hold():
        entered.set()
        release.wait(30)
    h.server.workers.pools["storage"].submit(hold)
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()


