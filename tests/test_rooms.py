"""Rooms and private conversations (protocol v1.1, docs/PROTOCOL.md) end
to end: real servers on loopback, real clients, SQLite and, where the store
matters, MariaDB.

A user's story each: alice and bob join rooms, say things in them, leave,
come back after a reconnect or a restart; a v1 client on the same server
sees what it always saw.
"""

import re



TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def v1_client(server, name, register=True):
    """A protocol v1 client, registered and logged in."""
    client = server.client()
    if register:
        client.register(name)
    client.login(name)
    return client


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
    assert answer(client, "CAP what") == ["ERR 400 unknown capability what (this server knows: rooms)"]
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
