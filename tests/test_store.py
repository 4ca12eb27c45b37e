"""The Store contract, on every backend: SQLite in a temporary file and a
fresh database on a real MariaDB (see mysql_fixtures.py; skipped where no
server answers, a failure under CI=true).

Every test below the backend-specific section runs once per backend with
the same expectations: that is what keeps the two from drifting apart.
"""

import os
import re
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import freezegun
import pytest

from mysql_fixtures import accounts_held, connections_to, mysql_connect, wait_for, inserting_in
from sae_db import NewMessage, StorageUnavailable, describe_url, open_store
from sae_db.migrate import latest_version

try:
    import MySQLdb
    INTEGRITY_ERRORS = (sqlite3.IntegrityError, MySQLdb.IntegrityError)
except ImportError:  # the MariaDB tests skip themselves
    INTEGRITY_ERRORS = (sqlite3.IntegrityError,)

T0 = "2026-11-24T13:05:01.123Z"
TIMEOUT = 10.0


@pytest.fixture(params=["sqlite", "mysql"])
def store_url(request, tmp_path):
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "sae.db")
    return request.getfixturevalue("mysql_url")


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def dialect(url):
    return "sqlite" if url.startswith("sqlite:") else "mysql"


def query(url, sql):
    """Rows of ``sql`` run behind the store's back, to see what is stored."""
    if dialect(url) == "sqlite":
        db = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        db.close()


def say(account, body, at=T0):
    return NewMessage(account.id, account.name, None, body, at)


def tell(account, recipient, body, at=T0):
    return NewMessage(account.id, account.name, recipient, body, at)


@pytest.fixture
def alice(store):
    return store.create_account("Alice", "scrypt$hash-a", T0)


@pytest.fixture
def bob(store):
    return store.create_account("bob", "scrypt$hash-b", T0)


# -- accounts -------------------------------------------------------------

def test_a_new_account_is_found_by_its_name_in_any_case(store):
    created = store.create_account("Alice", "scrypt$hash", T0)
    assert created.name == "Alice" and created.password_hash == "scrypt$hash"
    assert created.created_at == T0 and not created.banned
    for spelling in ("Alice", "alice", "ALICE"):
        assert store.find_account(spelling) == created
    assert store.find_account("nobody") is None


def test_names_fold_in_ascii_only(store):
    # The Kelvin sign (U+212A) lower-cases to an ASCII "k": folded that way,
    # a name that is not kate's would find, ban and message kate.
    kate = store.create_account("kate", "scrypt$hash-k", T0)
    bob = store.create_account("bob", "scrypt$hash-b", T0)
    assert store.find_account("KATE") == kate
    for lookalike in ("\u212aate", "\u212aATE"):
        assert store.find_account(lookalike) is None
        assert store.set_ban(lookalike, "look-alike", T0) is False
        assert store.append_messages([tell(bob, lookalike, "hi")]) == [None]
    assert not store.find_account("kate").banned
    # Non-ASCII names are not the server's to register, but the store keeps
    # them apart too: no backend folds what name_key does not.
    assert store.create_account("\u212aate", "scrypt$hash-x", T0) is not None


def test_a_name_is_taken_whatever_its_case(store):
    first = store.create_account("Alice", "h1", T0)
    assert store.create_account("ALICE", "h2", T0) is None
    assert store.create_account("alice", "h3", T0) is None
    assert store.find_account("alice") == first  # the first keeps its spelling and hash
    other = store.create_account("Alicia", "h4", T0)
    assert other.id != first.id


def test_timestamps_keep_their_text_form(store):
    for i, at in enumerate(["2026-01-01T00:00:00.000Z", "2026-12-31T23:59:59.999Z", T0]):
        account = store.create_account("user%d" % i, "h", at)
        assert account.created_at == at
        assert store.find_account("user%d" % i).created_at == at
        [message] = store.append_messages([say(account, "hello", at)])
        assert message.created_at == at
        assert store.room_history(1)[0].created_at == at


# -- messages -------------------------------------------------------------

def test_a_batch_gets_increasing_ids_in_batch_order(store, alice, bob):
    first = store.append_messages([say(alice, "one"), say(bob, "two"), say(alice, "three")])
    second = store.append_messages([say(bob, "four"), say(alice, "five")])
    ids = [m.id for m in first + second]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [m.body for m in store.room_history(10)] == ["one", "two", "three", "four", "five"]
    assert [m.id for m in store.room_history(10)] == ids


def test_an_empty_batch_stores_nothing(store):
    assert store.append_messages([]) == []
    assert store.room_history(10) == []


def test_append_returns_what_was_stored(store, alice, bob):
    room, private = store.append_messages([say(alice, "hi all"), tell(alice, "BOB", "hi bob")])
    assert (room.sender, room.recipient, room.body, room.created_at) == ("Alice", None, "hi all", T0)
    # The recipient comes back spelled as registered, not as typed.
    assert (private.sender, private.recipient, private.body) == ("Alice", "bob", "hi bob")
    assert store.room_history(10) == [room]


def test_a_private_message_to_an_unknown_account_is_not_stored(store_url, store, alice, bob):
    results = store.append_messages([say(alice, "before"), tell(alice, "nobody", "lost"),
                                     tell(alice, "bob", "kept"), say(alice, "after")])
    assert results[1] is None
    assert [m.body for m in results if m] == ["before", "kept", "after"]
    assert results[0].id < results[2].id < results[3].id
    assert sorted(body for (body,) in query(store_url, "SELECT body FROM messages")) == [
        "after", "before", "kept"]


def test_a_failed_batch_stores_none_of_it(store, alice):
    ghost = NewMessage(999999, "ghost", None, "no such sender", T0)  # breaks the foreign key
    with pytest.raises(INTEGRITY_ERRORS):
        store.append_messages([say(alice, "first"), ghost, say(alice, "third")])
    assert store.room_history(10) == []
    [message] = store.append_messages([say(alice, "later")])  # the store is still usable
    assert store.room_history(10) == [message]


def test_emoji_and_other_scripts_round_trip(store, bob):
    wide = store.create_account("Zoe", "h", T0)
    body = "fête 🎉 中文 𝄞 \U0001F469\u200D\U0001F4BB tab\there"
    room, private = store.append_messages([say(wide, body), tell(wide, "bob", body)])
    assert room.body == private.body == body
    assert store.room_history(1)[0].body == body
    assert store.set_ban("Zoe", "spam 🥫", T0)
    assert store.find_account("zoe").ban_reason == "spam 🥫"


# Texts that mean something to SQL, or to the formatting that builds it.
SQL_TEXTS = ["O'Brien's \"quote\"", "back\\slash \\' \\\\", "'); DROP TABLE messages; --", "100% %s %d %(x)s %%",
             "ends with a backslash\\", "`backticks` and ; semicolons"]


def test_texts_that_mean_something_to_sql_round_trip(store, alice, bob):
    batch = [say(alice, text) for text in SQL_TEXTS] + [tell(alice, "bob", text) for text in SQL_TEXTS]
    stored = store.append_messages(batch)
    assert [m.body for m in stored] == SQL_TEXTS * 2
    assert [m.body for m in store.room_history(10)] == SQL_TEXTS
    assert [m.body for m in store.conversation_history(bob.id, alice.id, 10)] == SQL_TEXTS


def test_mysql_texts_round_trip_with_ids_reserved(mysql_url):
    # The batches of two at once carry their ids: another INSERT of the same rows.
    store = open_store(mysql_url)
    try:
        alice = store.create_account("alice", "h", T0)
        batch = [say(alice, text) for text in SQL_TEXTS]
        stored = store.append_messages(batch, store.reserve_ids(len(batch)))
        assert [m.body for m in stored] == SQL_TEXTS
        assert store.room_history(10) == stored
    finally:
        store.close()


def test_a_large_batch_is_stored_whole_and_in_order(store, alice):
    # Several MiB: more than one INSERT statement's worth on MySQL.
    batch = [say(alice, "%04d " % i + "x" * 4000) for i in range(400)]
    stored = store.append_messages(batch)
    ids = [m.id for m in stored]
    assert ids == sorted(ids) and len(set(ids)) == 400
    assert store.room_history(1000) == stored


@pytest.mark.parametrize("size", [1, 3, 127, 128, 129, 255, 300])
def test_a_batch_of_any_size_gets_consecutive_ids_in_order(store, alice, size):
    # SQLite inserts a batch in statements of 128, 64 ... 1 rows.
    stored = store.append_messages([say(alice, "m%d" % i) for i in range(size)])
    assert [m.body for m in stored] == ["m%d" % i for i in range(size)]
    assert [m.id for m in stored] == list(range(stored[0].id, stored[0].id + size))
    assert store.room_history(1000) == stored


# -- history --------------------------------------------------------------

@pytest.fixture
def ten_messages(store, alice, bob):
    """Ten room messages m0..m9 with private messages between them."""
    room = []
    for i in range(10):
        stored = store.append_messages([say(alice, "m%d" % i), tell(alice, "bob", "p%d" % i)])
        room.append(stored[0])
    return room


def test_history_is_the_last_n_oldest_first(store, ten_messages):
    assert store.room_history(3) == ten_messages[-3:]
    assert store.room_history(100) == ten_messages
    assert store.room_history(0) == []


def test_history_before_an_id_pages_back(store, ten_messages):
    assert store.room_history(3, before=ten_messages[5].id) == ten_messages[2:5]
    assert store.room_history(3, before=ten_messages[1].id) == ten_messages[:1]
    assert store.room_history(3, before=ten_messages[0].id) == []


def test_history_after_an_id_resumes_without_a_gap(store, ten_messages):
    assert store.room_history(3, after=ten_messages[5].id) == ten_messages[6:9]
    assert store.room_history(100, after=ten_messages[7].id) == ten_messages[8:]
    assert store.room_history(3, after=ten_messages[9].id) == []
    assert store.room_history(3, after=0) == ten_messages[:3]


def test_history_leaves_out_private_messages(store, ten_messages):
    assert [m.body for m in store.room_history(100)] == ["m%d" % i for i in range(10)]
    assert all(m.recipient is None for m in store.room_history(100))


def test_history_of_an_empty_room(store):
    assert store.room_history(50) == []
    assert store.room_history(50, after=0) == []
    assert store.room_history(50, before=10) == []


# -- rooms ----------------------------------------------------------------

T1 = "2026-11-24T13:06:00.000Z"
T2 = "2026-11-24T13:07:00.000Z"


def in_room(account, room, body, at=T0):
    return NewMessage(account.id, account.name, None, body, at, room.id)


@pytest.fixture
def homework(store):
    return store.ensure_room("#Homework", T1)


def test_general_is_there_from_the_start(store):
    general = store.find_room("#general")
    assert general.name == "#general" and general.topic == ""
    assert (general.topic_set_by, general.topic_set_at) == (None, None)
    assert store.list_rooms() == [(general, 0)]
    assert store.count_rooms() == 1


def test_a_room_is_created_once_whatever_the_case(store):
    created = store.ensure_room("#Homework", T1)
    assert (created.name, created.topic, created.created_at) == ("#Homework", "", T1)
    # Asked again in another case, later: the same room, as first spelled.
    assert store.ensure_room("#HOMEWORK", T2) == created
    for spelling in ("#homework", "#HomeWork", "#Homework"):
        assert store.find_room(spelling) == created
    assert store.find_room("#homework2") is None
    assert store.count_rooms() == 2


def test_what_is_not_a_room_name_is_never_stored(store):
    longest = "#" + "x" * 32
    assert store.ensure_room(longest, T0).name == longest
    for name in ("homework", "#", "#" + "x" * 33, "#two words", "#caf\u00e9", "#\u212aelvin", "##", "#a,b", ""):
        with pytest.raises(ValueError):
            store.ensure_room(name, T0)
        assert store.find_room(name) is None
    assert store.ensure_room("#a_b.c-D9", T0).name == "#a_b.c-D9"
    assert store.count_rooms() == 3  # #general, the longest name, #a_b.c-D9


def test_joining_and_leaving(store, alice, bob, homework):
    assert store.join_room(alice.id, homework.id, T1) is True
    assert store.join_room(alice.id, homework.id, T2) is False  # already in
    assert store.rooms_of(alice.id) == [homework]
    assert store.count_memberships(alice.id) == 1
    assert store.room_members(homework.id) == ["Alice"]
    assert store.leave_room(alice.id, homework.id) is True
    assert store.leave_room(alice.id, homework.id) is False  # no longer in
    assert store.leave_room(bob.id, homework.id) is False  # never was
    assert store.rooms_of(alice.id) == [] and store.count_memberships(alice.id) == 0
    assert store.room_members(homework.id) == []


def test_members_are_sorted_whatever_their_case(store, homework):
    for name in ("carol", "Bob", "alice", "Dave"):
        account = store.create_account(name, "h", T0)
        store.join_room(account.id, homework.id, T0)
    assert store.room_members(homework.id) == ["alice", "Bob", "carol", "Dave"]


def test_rooms_of_an_account_come_in_the_order_it_joined_them(store, alice):
    rooms = [store.ensure_room(name, T0) for name in ("#zebra", "#apple", "#mango")]
    for room, at in zip(rooms, ("2026-11-24T10:00:00.000Z", "2026-11-24T11:00:00.000Z", "2026-11-24T12:00:00.000Z")):
        assert store.join_room(alice.id, room.id, at)
    assert [room.name for room in store.rooms_of(alice.id)] == ["#zebra", "#apple", "#mango"]
    assert store.count_memberships(alice.id) == 3


def test_the_room_list_says_how_many_members_each_has(store, alice, bob, homework):
    general = store.find_room("#general")
    store.join_room(alice.id, general.id, T0)
    store.join_room(bob.id, general.id, T0)
    store.join_room(bob.id, homework.id, T0)
    art = store.ensure_room("#art", T0)
    assert store.list_rooms() == [(art, 0), (general, 2), (homework, 1)]  # by name, whatever the case


def test_a_new_account_can_start_in_a_room(store_url, store):
    general = store.find_room("#general")
    alice = store.create_account("Alice", "h", T0, room_id=general.id)
    assert store.rooms_of(alice.id) == [general]
    assert store.room_members(general.id) == ["Alice"]
    # A name that is taken makes neither an account nor a membership.
    assert store.create_account("ALICE", "h", T0, room_id=general.id) is None
    assert query(store_url, "SELECT COUNT(*) FROM memberships") == [(1,)]
    # Without a room, an account is in none.
    bob = store.create_account("bob", "h", T0)
    assert store.rooms_of(bob.id) == []


def test_membership_and_topics_survive_a_reopen(store_url, store, alice, homework):
    store.join_room(alice.id, homework.id, T1)
    store.set_topic(homework.id, "exercise 4 is due friday", "Alice", T2)
    store.close()
    reopened = open_store(store_url)
    try:
        [room] = reopened.rooms_of(alice.id)
        assert (room.name, room.topic, room.topic_set_by, room.topic_set_at) == (
            "#Homework", "exercise 4 is due friday", "Alice", T2)
        assert reopened.room_members(homework.id) == ["Alice"]
    finally:
        reopened.close()


def test_setting_and_clearing_a_topic(store, homework):
    topical = store.set_topic(homework.id, "fête 🎉: exercise 4", "Alice", T1)
    assert topical == homework._replace(topic="fête 🎉: exercise 4", topic_set_by="Alice", topic_set_at=T1)
    assert store.find_room("#homework") == topical
    cleared = store.set_topic(homework.id, "", "bob", T2)
    assert (cleared.topic, cleared.topic_set_by, cleared.topic_set_at) == ("", "bob", T2)
    assert store.set_topic(999999, "no such room", "bob", T2) is None


# -- room messages ---------------------------------------------------------

def test_each_room_has_its_own_history(store, alice, bob, homework):
    general = store.find_room("#general")
    stored = store.append_messages([in_room(alice, general, "hello all"), in_room(bob, homework, "exercise 4?"),
                                    tell(alice, "bob", "psst"), in_room(alice, homework, "page 12")])
    assert [m.room for m in stored] == ["#general", "#Homework", None, "#Homework"]
    assert [m.recipient for m in stored] == [None, None, "bob", None]
    assert store.room_history(10, room_id=homework.id) == [stored[1], stored[3]]
    assert store.room_history(10, room_id=general.id) == [stored[0]]
    # Without a room id: #general, as before rooms.
    assert store.room_history(10) == [stored[0]]
    assert store.room_history(1, before=stored[3].id, room_id=homework.id) == [stored[1]]
    assert store.room_history(5, after=stored[1].id, room_id=homework.id) == [stored[3]]


def test_a_room_message_without_a_room_goes_to_general(store_url, store, alice):
    [message] = store.append_messages([say(alice, "as in v0.1.0")])
    assert message.room == "#general"
    general = store.find_room("#general")
    assert query(store_url, "SELECT room_id, recipient_id FROM messages") == [(general.id, None)]


def test_a_message_to_a_room_that_is_gone_is_not_stored(store, alice, homework):
    store.delete_room(homework.id, keep_history=False)
    results = store.append_messages([say(alice, "before"), in_room(alice, homework, "lost"),
                                     NewMessage(alice.id, alice.name, None, "never a room", T0, 999999),
                                     say(alice, "after")])
    assert results[1] is None and results[2] is None
    assert [m.body for m in store.room_history(10)] == ["before", "after"]


def test_a_room_deleted_after_messages_takes_no_more(store, alice, homework):
    # The store keeps the live rooms it has stored messages in from batch to
    # batch: deleting one must forget it.
    [first] = store.append_messages([in_room(alice, homework, "while it lasted")])
    assert first.room == "#Homework"
    store.delete_room(homework.id, keep_history=True)
    assert store.append_messages([in_room(alice, homework, "too late"), say(alice, "in general")])[0] is None
    assert [m.body for m in store.room_history(10, room_id=homework.id)] == ["while it lasted"]


def test_room_names_come_back_as_created(store, alice):
    shouting = store.ensure_room("#LOUD", T0)
    [message] = store.append_messages([in_room(alice, store.ensure_room("#loud", T0), "hi")])
    assert message.room == "#LOUD"
    assert store.room_history(1, room_id=shouting.id)[0].room == "#LOUD"


# -- conversations ---------------------------------------------------------

@pytest.fixture
def talk(store, alice, bob):
    """alice and bob talk (a0, b1, a2, ... a8, b9) while carol writes to
    both and the room goes on; the conversation's messages, in order."""
    carol = store.create_account("carol", "h", T0)
    said = []
    for i in range(10):
        speaker, listener = (alice, "bob") if i % 2 == 0 else (bob, "ALICE")
        stored = store.append_messages([say(carol, "room %d" % i), tell(speaker, listener, "%s%d" % (
            speaker.name[0].lower(), i)), tell(carol, "alice", "c%d" % i), tell(carol, "bob", "d%d" % i)])
        said.append(stored[1])
    return said


def test_a_conversation_is_both_directions_and_nothing_else(store, alice, bob, talk):
    both = store.conversation_history(alice.id, bob.id, 100)
    assert [m.body for m in both] == ["a0", "b1", "a2", "b3", "a4", "b5", "a6", "b7", "a8", "b9"]
    assert both == talk
    assert store.conversation_history(bob.id, alice.id, 100) == both  # the same seen from the other side
    assert all(m.room is None for m in both)
    assert {(m.sender, m.recipient) for m in both} == {("Alice", "bob"), ("bob", "Alice")}


def test_a_conversation_pages_like_a_room(store, alice, bob, talk):
    assert store.conversation_history(alice.id, bob.id, 3) == talk[-3:]
    assert store.conversation_history(alice.id, bob.id, 3, before=talk[5].id) == talk[2:5]
    assert store.conversation_history(alice.id, bob.id, 3, before=talk[1].id) == talk[:1]
    assert store.conversation_history(alice.id, bob.id, 3, after=talk[5].id) == talk[6:9]
    assert store.conversation_history(alice.id, bob.id, 100, after=talk[7].id) == talk[8:]
    assert store.conversation_history(alice.id, bob.id, 3, after=talk[9].id) == []
    assert store.conversation_history(alice.id, bob.id, 0) == []


def test_a_conversation_with_oneself_shows_each_message_once(store, alice, bob):
    stored = store.append_messages([tell(alice, "alice", "note to self"), tell(alice, "bob", "hi")])
    assert store.conversation_history(alice.id, alice.id, 10) == [stored[0]]
    assert store.missed(alice.id, 0, 10) == stored


def test_no_conversation_yet(store, alice, bob):
    assert store.conversation_history(alice.id, bob.id, 50) == []


# -- what an account missed --------------------------------------------------

def test_missed_is_every_room_of_the_account_and_its_private_messages(store, alice, bob, homework):
    general = store.find_room("#general")
    art = store.ensure_room("#art", T0)
    store.join_room(alice.id, general.id, T0)
    store.join_room(alice.id, homework.id, T0)
    carol = store.create_account("carol", "h", T0)
    stored = store.append_messages([
        in_room(bob, general, "g1"), in_room(bob, art, "not alice's room"), tell(bob, "alice", "to alice"),
        in_room(carol, homework, "h1"), tell(alice, "carol", "from alice"), tell(bob, "carol", "not hers"),
        in_room(alice, general, "g2")])
    mine = [stored[i] for i in (0, 2, 3, 4, 6)]
    assert store.missed(alice.id, 0, 100) == mine
    assert store.missed(alice.id, stored[2].id, 100) == mine[2:]
    # At most count, the first ones: the next request resumes after the last.
    first = store.missed(alice.id, 0, 2)
    assert first == mine[:2]
    assert store.missed(alice.id, first[-1].id, 2) == mine[2:4]
    assert store.missed(alice.id, stored[-1].id, 100) == []


def test_private_messages_missed_while_offline_are_read_once(store, alice, bob):
    carol = store.create_account("carol", "h", T0)
    before = store.append_messages([tell(bob, "alice", "seen live")])
    # Never offline yet: nothing is known to be missed.
    assert store.missed_private(alice.id, 10) == ([], False)
    store.went_offline(alice.id)
    missed = store.append_messages([tell(bob, "alice", "m1"), tell(alice, "bob", "not to her"),
                                    tell(carol, "alice", "m2"), say(bob, "in the room"), tell(bob, "carol", "no")])
    assert before and store.missed_private(alice.id, 10) == ([missed[0], missed[2]], False)
    # Read: she is online from then on, and the next read finds nothing.
    assert store.missed_private(alice.id, 10) == ([], False)
    store.went_offline(alice.id)
    many = store.append_messages([tell(bob, "alice", "n%d" % i) for i in range(5)])
    # The last ones when there are more than asked for, and a word that there were.
    assert store.missed_private(alice.id, 3) == (many[2:], True)
    store.went_offline(alice.id)
    exactly = store.append_messages([tell(bob, "alice", "x%d" % i) for i in range(3)])
    assert store.missed_private(alice.id, 3) == (exactly, False)
    assert store.missed_private(bob.id, 3) == ([], False)


def test_a_new_holder_of_an_account_reads_no_private_message_from_before(store, alice, bob):
    """start_private_history: an IRC guest's nick taken by someone else.
    Its private messages from before are not the new holder's to read (the
    other side keeps them); room messages are everyone's in the room."""
    general = store.find_room("#general")
    store.join_room(alice.id, general.id, T0)
    old = store.append_messages([tell(bob, "alice", "to the old alice"), tell(alice, "bob", "from the old alice"),
                                 tell(alice, "alice", "old note"), in_room(bob, general, "in the room")])
    store.went_offline(alice.id)
    store.start_private_history(alice.id)
    new = store.append_messages([tell(bob, "alice", "to the new alice"), tell(alice, "bob", "from the new alice")])
    assert store.conversation_history(alice.id, bob.id, 10) == new
    assert store.conversation_history(alice.id, bob.id, 10, before=new[1].id) == new[:1]
    assert store.conversation_history(alice.id, bob.id, 10, after=0) == new
    assert store.conversation_history(alice.id, alice.id, 10) == []
    assert store.conversation_history(bob.id, alice.id, 10) == old[:2] + new
    assert store.missed(alice.id, 0, 10) == [old[3]] + new
    assert [m.body for m in store.missed(bob.id, 0, 10)] == [m.body for m in old[:2] + new]
    assert store.missed_private(alice.id, 10) == ([new[0]], False)


def test_missed_follows_the_rooms_the_account_is_in_now(store, alice, bob, homework):
    general = store.find_room("#general")
    store.join_room(alice.id, general.id, T0)
    stored = store.append_messages([in_room(bob, general, "g"), in_room(bob, homework, "h")])
    assert store.missed(alice.id, 0, 10) == [stored[0]]
    store.leave_room(alice.id, general.id)
    store.join_room(alice.id, homework.id, T0)
    assert store.missed(alice.id, 0, 10) == [stored[1]]


def test_an_account_in_no_room_still_gets_its_private_messages(store, alice, bob):
    stored = store.append_messages([say(bob, "in #general"), tell(bob, "alice", "psst")])
    assert store.rooms_of(alice.id) == []
    assert store.missed(alice.id, 0, 10) == [stored[1]]


# -- conversations: IRC's CHATHISTORY TARGETS ------------------------------------

def at(second):
    """A moment of the conversations below, one second apart."""
    return "2026-12-01T10:00:%02d.000Z" % second


def test_targets_are_the_rooms_and_conversations_by_their_latest_message(store, alice, bob, homework):
    general = store.find_room("#general")
    carol = store.create_account("carol", "h", T0)
    art = store.ensure_room("#art", T0)
    stored = store.append_messages([
        in_room(bob, general, "g1", at(1)), tell(alice, "bob", "to bob", at(2)),
        in_room(carol, homework, "h1", at(3)), tell(carol, "alice", "to alice", at(4)),
        in_room(bob, art, "not among hers", at(5)), tell(bob, "carol", "not hers", at(6)),
        tell(alice, "alice", "note to self", at(7))])
    store.append_messages([in_room(bob, general, "g2", at(8)), tell(bob, "Alice", "bob again", at(9))])
    mine = [general.id, homework.id]
    # Each once, at its latest message, oldest first; itself for a
    # conversation with itself; names as they were made.
    assert store.targets(alice.id, mine, None, None, 10) == [
        ("#Homework", at(3)), ("carol", at(4)), ("Alice", at(7)), ("#general", at(8)), ("bob", at(9))]
    # The first of them, or the last.
    assert store.targets(alice.id, mine, None, None, 2) == [("#Homework", at(3)), ("carol", at(4))]
    assert store.targets(alice.id, mine, None, None, 2, newest=True) == [("#general", at(8)), ("bob", at(9))]
    # The other side of each conversation sees it too.
    assert store.targets(carol.id, [], None, None, 10) == [("Alice", at(4)), ("bob", at(6))]
    assert store.targets(bob.id, [general.id, art.id], None, None, 10) == [
        ("#art", at(5)), ("carol", at(6)), ("#general", at(8)), ("Alice", at(9))]
    assert all(message is not None for message in stored)


def test_targets_in_a_window_match_the_latest_message_only(store, alice, bob, homework):
    carol = store.create_account("carol", "h", T0)
    store.append_messages([tell(bob, "alice", "b1", at(1)), in_room(bob, homework, "h1", at(2)),
                           tell(carol, "alice", "c1", at(3))])
    store.append_messages([tell(alice, "bob", "b2", at(4)), in_room(carol, homework, "h2", at(5))])
    rooms = [homework.id]
    assert store.targets(alice.id, rooms, None, None, 10) == [("carol", at(3)), ("bob", at(4)), ("#Homework", at(5))]
    # Strictly between the two moments: a latest message at either is out.
    assert store.targets(alice.id, rooms, at(3), at(5), 10) == [("bob", at(4))]
    assert store.targets(alice.id, rooms, at(2), None, 10) == [("carol", at(3)), ("bob", at(4)), ("#Homework", at(5))]
    assert store.targets(alice.id, rooms, None, at(4), 10) == [("carol", at(3))]
    # bob and #homework had messages before at(3), but their latest is later.
    assert store.targets(alice.id, rooms, None, "2026-12-01T10:00:03.500Z", 10) == [("carol", at(3))]
    assert store.targets(alice.id, rooms, at(0), "2026-12-01T10:00:02.500Z", 10) == []
    # Moments before every message and after every one.
    assert store.targets(alice.id, rooms, "2020-01-01T00:00:00.000Z", "2262-01-01T00:00:00.000Z", 2) == [
        ("carol", at(3)), ("bob", at(4))]
    assert store.targets(alice.id, rooms, "2262-01-01T00:00:00.000Z", None, 10) == []
    assert store.targets(alice.id, [], None, None, 0) == []


def test_targets_of_a_new_holder_leave_out_the_conversations_from_before(store, alice, bob):
    carol = store.create_account("carol", "h", T0)
    store.append_messages([tell(bob, "alice", "to the old alice", at(1)), tell(alice, "carol", "old", at(2))])
    store.start_private_history(alice.id)
    assert store.targets(alice.id, [], None, None, 10) == []
    store.append_messages([tell(carol, "alice", "to the new alice", at(3))])
    assert store.targets(alice.id, [], None, None, 10) == [("carol", at(3))]
    # The other sides keep theirs.
    assert store.targets(bob.id, [], None, None, 10) == [("Alice", at(1))]
    assert store.targets(carol.id, [], None, None, 10) == [("Alice", at(3))]


def test_targets_leave_out_a_room_deleted_and_one_with_no_message(store, alice, bob, homework):
    art = store.ensure_room("#art", T0)
    quiet = store.ensure_room("#quiet", T0)
    store.append_messages([in_room(bob, homework, "h", at(1)), in_room(bob, art, "a", at(2))])
    store.delete_room(art.id, keep_history=True)
    assert store.targets(alice.id, [homework.id, art.id, quiet.id], None, None, 10) == [("#Homework", at(1))]


def test_a_failed_batch_leaves_the_conversations_as_they_were(store, alice, bob):
    [kept] = store.append_messages([tell(alice, "bob", "kept", at(1))])
    ghost = NewMessage(999999, "ghost", None, "no such sender", at(3))  # breaks the foreign key
    with pytest.raises(INTEGRITY_ERRORS):
        store.append_messages([tell(bob, "alice", "lost", at(2)), ghost])
    assert store.targets(alice.id, [], None, None, 10) == [("bob", at(1))]
    assert store.targets(bob.id, [], None, None, 10) == [("Alice", at(1))]


# -- deleting a room ---------------------------------------------------------

def test_a_room_deleted_with_its_history_kept(store_url, store, alice, bob, homework):
    store.join_room(alice.id, homework.id, T0)
    store.join_room(bob.id, homework.id, T0)
    old = store.append_messages([in_room(alice, homework, "old one"), in_room(bob, homework, "old two")])
    assert store.delete_room(homework.id, keep_history=True) is True
    # Gone for everyone: no name, no members, no joining, nothing missed.
    assert store.find_room("#homework") is None
    assert store.rooms_of(alice.id) == [] and store.room_members(homework.id) == []
    assert store.join_room(alice.id, homework.id, T1) is False
    assert store.set_topic(homework.id, "too late", "Alice", T1) is None
    assert store.missed(alice.id, 0, 10) == []
    assert [room.name for room, _ in store.list_rooms()] == ["#general"] and store.count_rooms() == 1
    # Still stored, by the old room's id.
    assert store.room_history(10, room_id=homework.id) == old
    # The name is free: a new room of that name, with nothing of the old.
    again = store.ensure_room("#homework", T2)
    assert again.id != homework.id and again.name == "#homework" and again.topic == ""
    assert store.room_history(10, room_id=again.id) == []
    [new] = store.append_messages([in_room(alice, again, "new")])
    assert new.id > old[-1].id and new.room == "#homework"
    assert store.room_history(10, room_id=homework.id) == old
    assert store.delete_room(homework.id, keep_history=True) is False  # already deleted
    assert query(store_url, "SELECT COUNT(*) FROM messages") == [(3,)]


def test_a_room_deleted_with_its_history(store_url, store, alice, homework):
    store.join_room(alice.id, homework.id, T0)
    old = store.append_messages([in_room(alice, homework, "old"), say(alice, "in general"),
                                 tell(alice, "alice", "private")])
    assert store.delete_room(homework.id, keep_history=False) is True
    assert store.find_room("#Homework") is None and store.rooms_of(alice.id) == []
    assert store.room_history(10, room_id=homework.id) == []
    assert sorted(body for (body,) in query(store_url, "SELECT body FROM messages")) == ["in general", "private"]
    assert query(store_url, "SELECT COUNT(*) FROM rooms WHERE id = %d" % homework.id) == [(0,)]
    assert store.delete_room(homework.id, keep_history=False) is False
    # Ids are never given again, not even those of deleted messages.
    again = store.ensure_room("#Homework", T1)
    [new] = store.append_messages([in_room(alice, again, "new")])
    assert new.id > old[-1].id and again.id > homework.id


def test_a_room_kept_can_later_lose_its_history(store_url, store, alice, homework):
    store.append_messages([in_room(alice, homework, "kept for now")])
    store.delete_room(homework.id, keep_history=True)
    store.ensure_room("#homework", T1)  # the name has moved on meanwhile
    assert store.delete_room(homework.id, keep_history=False) is True
    assert store.room_history(10, room_id=homework.id) == []
    assert query(store_url, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert store.find_room("#homework") is not None  # the new room is untouched


def test_general_can_be_deleted_and_made_again(store, alice):
    general = store.find_room("#general")
    store.append_messages([say(alice, "old general")])
    store.delete_room(general.id, keep_history=True)
    assert store.room_history(10) == []  # no #general, no default room
    assert store.append_messages([say(alice, "nowhere")]) == [None]
    again = store.ensure_room("#general", T1)
    [message] = store.append_messages([say(alice, "new general")])
    assert message.room == "#general" and store.room_history(10) == [message]
    assert store.room_history(10, room_id=again.id) == [message]


# -- query plans: no full scan of messages -----------------------------------

@pytest.fixture
def busy(store_url, store):
    """A store with some history: 40 accounts, 12 rooms each with 10 members,
    3000 messages of which one in ten is private, and the statistics a
    server that has been running would have. Returns (store, accounts, rooms)."""
    rooms = [store.ensure_room("#room%d" % i, T0) for i in range(12)]
    accounts = [store.create_account("user%d" % i, "h", T0) for i in range(40)]
    for i, account in enumerate(accounts):
        for room in rooms[i % 4::4]:
            store.join_room(account.id, room.id, T0)
    batch = []
    for i in range(3000):
        sender = accounts[i * 7 % 40]
        if i % 10 == 9:
            batch.append(tell(sender, accounts[i * 11 % 40].name, "private %d" % i))
        else:
            batch.append(in_room(sender, rooms[i % 12], "message %d" % i))
    for first in range(0, len(batch), 500):
        store.append_messages(batch[first:first + 500])
    # InnoDB refreshes its statistics by itself some time after a tenth of
    # a table changed; ANALYZE does it now. SQLite plans without any (the
    # store never runs ANALYZE), so it gets none.
    if dialect(store_url) == "mysql":
        for table in ("messages", "memberships", "rooms", "users"):
            query(store_url, "ANALYZE TABLE %s" % table)
    return store, accounts, rooms


def history_queries(accounts, rooms, store):
    """Every shape of history read, as (what, statement, parameters)."""
    from sae_db import sql
    alice, bob = accounts[0], accounts[1]
    middle = 1500
    found = []
    for bound in ({}, {"before": middle}, {"after": middle}):
        found.append(("room %s" % bound,) + sql.room_history_query(rooms[0].id, 50, **bound)[:2])
        found.append(("conversation %s" % bound,) + sql.conversation_query(alice.id, bob.id, 50, **bound)[:2])
    room_ids = [room.id for room in store.rooms_of(alice.id)]
    assert room_ids
    found.append(("missed",) + sql.missed_query(alice.id, room_ids, middle, 100)[:2])
    for bound in ({}, {"after": middle}, {"after": 100, "before": middle}):
        found.append(("targets %s" % bound,) + sql.targets_query(
            alice.id, room_ids, bound.get("after"), bound.get("before"), 100)[:2])
    found.append(("targets, newest",) + sql.targets_query(alice.id, room_ids, 0, middle, 5, newest=True)[:2])
    return found


def test_a_moment_becomes_ids_by_seeks_of_the_primary_key(store_url, busy):
    # Each probe of ids_at's bisection is one seek, whatever the moment.
    from sae_db import sql
    for statement in (sql.MESSAGE_AT_OR_BELOW, sql.MESSAGE_ABOVE):
        if dialect(store_url) == "sqlite":
            plan = [row[-1] for row in query_with(store_url, "EXPLAIN QUERY PLAN " + statement, [1500])]
            assert plan in (["SEARCH messages USING INTEGER PRIMARY KEY (rowid<?)"],
                            ["SEARCH messages USING INTEGER PRIMARY KEY (rowid>?)"]), plan
        else:
            [row] = query_with(store_url, "EXPLAIN " + sql.for_mysql(statement), [1500])
            assert (row[3], row[5]) == ("range", "PRIMARY"), row


def test_history_reads_never_scan_the_messages(store_url, busy):
    store, accounts, rooms = busy
    for what, statement, parameters in history_queries(accounts, rooms, store):
        if dialect(store_url) == "sqlite":
            plan = [row[-1] for row in query_with(store_url, "EXPLAIN QUERY PLAN " + statement, parameters)]
            # "SCAN branch0" reads what one branch picked (at most its LIMIT).
            scans = [step for step in plan if re.match(r"SCAN (messages|m|conversations)\b", step)]
            assert scans == [], (what, plan)
            searches = [step for step in plan if step.startswith("SEARCH messages")]
            assert searches and all("USING COVERING INDEX messages_by_" in step for step in searches), (what, plan)
            if what.startswith("targets"):
                assert any(step.startswith("SEARCH conversations USING COVERING INDEX conversations_by_activity"
                                           " (account_id=? AND last_id>? AND last_id<?)") for step in plan), plan
        else:
            from sae_db.sql import for_mysql
            plan = query_with(store_url, "EXPLAIN " + for_mysql(statement), parameters)
            # (id, select_type, table, type, possible_keys, key, ...): ALL is a
            # full table scan, index a full index scan.
            on_messages = [row for row in plan if row[2] in ("messages", "m", "conversations")]
            assert on_messages, (what, plan)
            for row in on_messages:
                assert row[3] not in ("ALL", "index") and row[5] is not None, (what, plan)
            if what.startswith("targets"):
                assert ("conversations", "conversations_by_activity") in [(row[2], row[5]) for row in plan], plan


def test_targets_give_the_same_answers_as_a_plain_filter(store):
    # Kept batch by batch, the conversations must say what reading every
    # message would, in any window: 8 accounts in 4 rooms, 400 messages of
    # which half private, in batches of 1 to 40, a second apart.
    import random
    chance = random.Random(5)
    accounts = [store.create_account("user%d" % i, "h", T0) for i in range(8)]
    rooms = [store.ensure_room("#room%d" % i, T0) for i in range(4)]
    for i, account in enumerate(accounts):
        for room in rooms[i % 2::2]:
            store.join_room(account.id, room.id, T0)
    moments = ["2026-12-01T%02d:%02d:%02d.000Z" % (10 + i // 3600, i // 60 % 60, i % 60) for i in range(400)]
    messages = []
    for moment in moments:
        sender = chance.choice(accounts)
        if chance.random() < 0.5:
            messages.append(tell(sender, chance.choice(accounts).name, "p", moment))
        else:
            messages.append(in_room(sender, chance.choice(rooms), "r", moment))
    stored = []
    while len(stored) < len(messages):
        stored += store.append_messages(messages[len(stored):len(stored) + chance.randint(1, 40)])
    for account in accounts:
        room_ids = [room.id for room in store.rooms_of(account.id)]
        names = {room.name for room in store.rooms_of(account.id)}
        latest = {}
        for message in stored:
            if message.room in names:
                latest[message.room] = message
            elif account.name in (message.sender, message.recipient) and message.room is None:
                latest[message.recipient if message.sender == account.name else message.sender] = message
        every = [(name, m.created_at) for name, m in sorted(latest.items(), key=lambda item: item[1].id)]
        assert len(every) > 6
        assert store.targets(account.id, room_ids, None, None, 1000) == every
        assert store.targets(account.id, room_ids, None, None, 5) == every[:5]
        assert store.targets(account.id, room_ids, None, None, 5, newest=True) == every[-5:]
        for _ in range(5):
            after, before = sorted(chance.sample(moments, 2))
            between = [target for target in every if after < target[1] < before]
            assert store.targets(account.id, room_ids, after, before, 1000) == between
            assert store.targets(account.id, room_ids, after, before, 3, newest=True) == between[-3:]


def query_with(url, statement, parameters):
    """Rows of a statement with parameters, behind the store's back."""
    if dialect(url) == "sqlite":
        db = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return db.execute(statement, parameters).fetchall()
        finally:
            db.close()
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute(statement, parameters)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        db.close()


def test_history_reads_give_the_same_answers_as_a_plain_filter(busy):
    # The bounded branches must not lose a message a full filter would find.
    store, accounts, rooms = busy
    alice, bob = accounts[0], accounts[1]
    everything = store.missed(alice.id, 0, 100000) + store.missed(bob.id, 0, 100000)
    assert len(everything) > 100
    room0 = [m for m in store.room_history(100000, room_id=rooms[0].id)]
    assert len(room0) == 250 and all(m.room == "#room0" for m in room0)
    assert store.room_history(20, before=room0[100].id, room_id=rooms[0].id) == room0[80:100]
    conversation = store.conversation_history(alice.id, bob.id, 100000)
    assert all({m.sender, m.recipient} == {"user0", "user1"} for m in conversation)
    assert store.conversation_history(alice.id, bob.id, 2, after=0) == conversation[:2]
    alices_rooms = {room.name for room in store.rooms_of(alice.id)}
    missed = store.missed(alice.id, 0, 100000)
    expected = [m for m in sorted({m.id: m for m in everything}.values())
                if m.room in alices_rooms or "user0" in (m.sender, m.recipient) and m.room is None]
    assert missed == expected
    assert store.missed(alice.id, missed[10].id, 25) == missed[11:36]


# -- bans -----------------------------------------------------------------

def test_ban_and_unban(store, alice, bob):
    assert store.banned_accounts() == []
    assert store.set_ban("ALICE", "flooding", T0) is True
    assert store.find_account("alice").ban_reason == "flooding"
    assert store.find_account("alice").banned
    assert store.set_ban("alice", "flooding", T0) is True  # again: the account still exists
    assert [a.name for a in store.banned_accounts()] == ["Alice"]
    assert store.set_ban("bob", "rude", T0)
    assert [(a.name, a.ban_reason) for a in store.banned_accounts()] == [("Alice", "flooding"), ("bob", "rude")]
    assert store.set_ban("alice", None, T0) is True
    assert not store.find_account("alice").banned
    assert store.set_ban("alice", None, T0) is True  # not banned, but it exists
    assert [a.name for a in store.banned_accounts()] == ["bob"]


def test_banning_an_unknown_account_is_refused(store):
    assert store.set_ban("nobody", "reason", T0) is False
    assert store.set_ban("nobody", None, T0) is False
    assert store.banned_accounts() == []


def test_bans_survive_a_reopen(store_url, store, alice, bob):
    store.set_ban("bob", "spam", T0)
    store.close()
    reopened = open_store(store_url)
    try:
        assert reopened.find_account("bob").ban_reason == "spam"
        assert [a.name for a in reopened.banned_accounts()] == ["bob"]
    finally:
        reopened.close()


# -- schema and migrations ------------------------------------------------

def test_reopening_keeps_everything_and_migrates_once(store_url, store, alice, bob):
    stored = store.append_messages([say(alice, "kept 🎉"), tell(bob, "alice", "kept too")])
    store.close()
    for later_body in ("later", "later still"):
        reopened = open_store(store_url)
        try:
            assert reopened.find_account("alice") == alice
            assert reopened.room_history(10)[0] == stored[0]
            [later] = reopened.append_messages([say(bob, later_body)])
            assert later.id > stored[1].id
        finally:
            reopened.close()
    assert [m.body for m in open_and(store_url, lambda s: s.room_history(10))] == [
        "kept 🎉", "later", "later still"]
    latest = latest_version(dialect(store_url))
    assert query(store_url, "SELECT version FROM schema_version") == [(v,) for v in range(1, latest + 1)]


def test_a_database_with_someone_elses_tables_is_left_alone(store_url):
    # The original project kept its users in a table of that name.
    if dialect(store_url) == "sqlite":
        db = sqlite3.connect(store_url[len("sqlite:///"):])
        db.execute("CREATE TABLE users (login TEXT)")
        db.execute("INSERT INTO users VALUES ('legacy')")
        db.commit()
        db.close()
    else:
        db = mysql_connect(store_url, autocommit=True)
        db.cursor().execute("CREATE TABLE users (login VARCHAR(50))")
        db.cursor().execute("INSERT INTO users VALUES ('legacy')")
        db.close()
    with pytest.raises(StorageUnavailable):
        open_store(store_url)
    assert query(store_url, "SELECT login FROM users") == [("legacy",)]


def open_and(url, use):
    """``use(store)`` on a store opened for the occasion."""
    store = open_store(url)
    try:
        return use(store)
    finally:
        store.close()


def columns(url):
    """{table: [column names in order]} of the store's schema."""
    if dialect(url) == "sqlite":
        tables = [name for (name,) in query(url, "SELECT name FROM sqlite_master WHERE type = 'table'"
                                                 " AND name NOT LIKE 'sqlite_%'")]
        return {t: [row[1] for row in query(url, "PRAGMA table_info(%s)" % t)] for t in tables}
    database = urlsplit(url).path.strip("/")
    rows = query(url, "SELECT table_name, column_name FROM information_schema.columns"
                      " WHERE table_schema = '%s' ORDER BY table_name, ordinal_position" % database)
    found = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def test_both_backends_have_the_same_schema(tmp_path, mysql_url):
    sqlite_url = "sqlite:///%s" % (tmp_path / "sae.db")
    for url in (sqlite_url, mysql_url):
        open_store(url).close()
    assert columns(sqlite_url) == columns(mysql_url)
    assert latest_version("sqlite") == latest_version("mysql")
    assert set(columns(sqlite_url)) == {"users", "messages", "rooms", "memberships", "message_chain", "conversations",
                                       "schema_version"}


# -- MySQL only: types, outages, secrets ----------------------------------

def test_mysql_tables_are_innodb_utf8mb4(mysql_url):
    open_store(mysql_url).close()
    database = urlsplit(mysql_url).path.strip("/")
    rows = query(mysql_url, "SELECT table_name, engine, table_collation FROM information_schema.tables"
                            " WHERE table_schema = '%s'" % database)
    assert {name for name, _, _ in rows} == {"users", "messages", "rooms", "memberships", "message_chain",
                                             "conversations", "schema_version"}
    for name, engine, collation in rows:
        assert engine == "InnoDB" and collation.startswith("utf8mb4_"), (name, engine, collation)


def test_mysql_timestamps_are_utc_datetimes(mysql_url):
    store = open_store(mysql_url)
    try:
        store.create_account("Alice", "h", T0)
    finally:
        store.close()
    [(created,)] = query(mysql_url, "SELECT created_at FROM users")
    assert created.isoformat(timespec="milliseconds") == "2026-11-24T13:05:01.123"


def test_mysql_row_by_row_inserts_give_the_same_result(mysql_url):
    # The path taken when the server may interleave multi-row INSERT ids.
    store = open_store(mysql_url)
    try:
        alice = store.create_account("Alice", "h", T0)
        store.allow_multirow = False
        stored = store.append_messages([say(alice, "a"), tell(alice, "x", "lost"), say(alice, "b")])
        assert stored[1] is None and stored[0].id < stored[2].id
        assert store.room_history(10) == [stored[0], stored[2]]
    finally:
        store.close()


def test_mysql_an_unreachable_server_is_storage_unavailable_without_the_password():
    pytest.importorskip("MySQLdb")
    with socket_closed_port() as port:
        url = "mysql://sae:pa%%40ss-s3cret@127.0.0.1:%d/sae" % port
        with pytest.raises(StorageUnavailable) as raised:
            open_store(url)
    assert "s3cret" not in str(raised.value) and "pa@ss" not in str(raised.value)
    assert describe_url(url) in str(raised.value)


def test_mysql_a_wrong_password_is_storage_unavailable_without_the_password(mysql_url):
    parts = urlsplit(mysql_url)
    url = parts._replace(netloc="%s:wrong-s3cret@%s:%d" % (
        parts.username or "root", parts.hostname, parts.port or 3306)).geturl()
    with pytest.raises(StorageUnavailable) as raised:
        open_store(url)
    assert "s3cret" not in str(raised.value)


def test_mysql_a_killed_connection_is_replaced_unnoticed(mysql_url, mysql_admin):
    store = open_store(mysql_url)
    try:
        alice = store.create_account("Alice", "h", T0)
        kill_store_connection(mysql_url, mysql_admin)
        [message] = store.append_messages([say(alice, "after the kill")])
        assert store.room_history(10) == [message]
    finally:
        store.close()


def kill_store_connection(mysql_url, mysql_admin):
    """Kill the store's one connection, as the database server sees it."""
    cursor = mysql_admin.cursor()
    cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                   (urlsplit(mysql_url).path.strip("/"),))
    [(connection,)] = cursor.fetchall()
    cursor.execute("KILL %d" % connection)


def test_mysql_a_batch_alone_is_replayed_only_after_an_idle_moment(mysql_url, mysql_admin):
    # A batch of room messages is one INSERT in autocommit. Cut while in
    # use, the connection may have committed it: the batch is refused, not
    # stored twice. Idle for a while, it goes in a transaction instead,
    # which a killed connection replays unnoticed.
    with freezegun.freeze_time("2026-12-02 05:00:00") as clock:
        store = open_store(mysql_url)
        try:
            alice = store.create_account("Alice", "h", T0)
            [first] = store.append_messages([say(alice, "first")])
            kill_store_connection(mysql_url, mysql_admin)
            with pytest.raises(StorageUnavailable):
                store.append_messages([say(alice, "cut")])
            [second] = store.append_messages([say(alice, "second")])
            kill_store_connection(mysql_url, mysql_admin)
            clock.tick(2)
            [after_idle] = store.append_messages([say(alice, "after an idle moment")])
            assert store.room_history(10) == [first, second, after_idle]
        finally:
            store.close()


def test_mysql_an_outage_is_survived(mysql_url, mysql_proxy):
    store = open_store(mysql_proxy.url(mysql_url))
    try:
        alice = store.create_account("Alice", "h", T0)
        [before] = store.append_messages([say(alice, "before")])
        mysql_proxy.cut()
        with pytest.raises(StorageUnavailable):
            store.append_messages([say(alice, "during")])
        # The next call tries a new connection; while the server is away,
        # the calls after it fail at once instead of waiting on it.
        with pytest.raises(StorageUnavailable, match="cannot connect"):
            store.room_history(10)
        with pytest.raises(StorageUnavailable, match="next attempt"):
            store.room_history(10)
        mysql_proxy.resume()
        after = wait_until(lambda: store.append_messages([say(alice, "after")]))
        assert [m.body for m in store.room_history(10)] == ["before", "after"]
        assert after[0].id > before.id
    finally:
        store.close()


# -- two batches at once: ids the store reserves (MariaDB, a server alone) ----

@pytest.fixture
def mysql_store(mysql_url):
    opened = open_store(mysql_url)
    yield opened
    opened.close()


def in_thread(call, *args):
    """Run call(*args) on a thread of its own; the thread, whose ``result``
    (or ``error``) is there once it has ended."""
    def run():
        try:
            thread.result = call(*args)
        except Exception as error:
            thread.error = error
    thread = threading.Thread(target=run, daemon=True)
    thread.result = thread.error = None
    thread.start()
    return thread


def test_mysql_two_batches_at_once_get_the_ids_reserved_for_them(mysql_url):
    # The server hands a second batch over while the first is still being
    # written, on another connection: whichever INSERT ends first, each
    # batch gets the ids reserved for it, in the order they were made.
    store = open_store(mysql_url)
    try:
        alice = store.create_account("Alice", "h", T0)
        bob = store.create_account("bob", "h", T0)
        first = [say(alice, "first %d" % n) for n in range(3)]
        second = [say(bob, "second %d" % n) for n in range(2)]
        first_id = store.reserve_ids(len(first))
        second_id = store.reserve_ids(len(second))
        assert second_id == first_id + len(first)
        with accounts_held(mysql_url, ["Alice"]):
            held = in_thread(store.append_messages, first, first_id)
            wait_for(lambda: len(inserting_in(mysql_url)) == 1, "the first batch waiting in MariaDB")
            beside = in_thread(store.append_messages, second, second_id)
            beside.join(TIMEOUT)
            assert beside.error is None and beside.result is not None, "the second is stored beside the first"
            assert held.is_alive(), "the first still waits"
            assert connections_to(mysql_url) == 3  # the store's two, and the one holding alice
        held.join(TIMEOUT)
        assert held.error is None
        assert [m.id for m in held.result] == [first_id, first_id + 1, first_id + 2]
        assert [m.id for m in beside.result] == [second_id, second_id + 1]
        assert [m.body for m in store.room_history(10)] == [m.body for m in first + second]
    finally:
        store.close()
    wait_for(lambda: connections_to(mysql_url) == 0, "both connections closed")


def test_mysql_an_id_taken_behind_the_store_s_back_fails_that_batch_alone(mysql_url, mysql_store):
    store = mysql_store
    alice = store.create_account("Alice", "h", T0)
    clashing = store.reserve_ids(2)
    reserved_before = store.reserve_ids(1)
    # Someone else (a second server without --cluster) writes messages
    # with ids of its own: one this store reserved, one far ahead.
    far = reserved_before + 100
    db = mysql_connect(mysql_url)
    try:
        for message_id in (clashing, far):
            db.cursor().execute("INSERT INTO messages (id, sender_id, body, created_at)"
                                " VALUES (%s, %s, 'not ours', '2026-11-24 13:05:01')", (message_id, alice.id))
    finally:
        db.close()
    with pytest.raises(StorageUnavailable, match="taken by another writer"):
        store.append_messages([say(alice, "refused"), say(alice, "refused too")], clashing)
    # Nothing after it is lost: a batch reserved before the clash was
    # found keeps its ids, one reserved after gets ids past the table's.
    [kept] = store.append_messages([say(alice, "kept")], reserved_before)
    [after] = store.append_messages([say(alice, "after")], store.reserve_ids(1))
    assert kept.id == reserved_before and after.id > far
    assert query(mysql_url, "SELECT id, body FROM messages ORDER BY id") == [
        (clashing, "not ours"), (kept.id, "kept"), (far, "not ours"), (after.id, "after")]


def test_mysql_a_batch_undone_to_break_a_deadlock_is_stored_once(mysql_url, mysql_store):
    # Two transactions wait for each other: InnoDB undoes the lighter one,
    # here the batch, which is replayed as a whole, once, with its ids.
    store = mysql_store
    alice = store.create_account("alice", "h", T0)
    bob = store.create_account("bob", "h", T0)
    [first] = store.append_messages([tell(alice, "bob", "first")], store.reserve_ids(1))
    db = mysql_connect(mysql_url)
    try:
        cursor = db.cursor()
        cursor.execute("CREATE TABLE ballast (n INT NOT NULL) ENGINE=InnoDB")
        cursor.execute("START TRANSACTION")
        cursor.execute("SELECT last_id FROM conversations WHERE account_id = %s FOR UPDATE", (alice.id,))
        second_id = store.reserve_ids(1)
        batch = in_thread(store.append_messages, [tell(alice, "bob", "second")], second_id)
        # The batch has inserted its message and waits for the conversation.
        wait_for(lambda: query(mysql_url, "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                                          " WHERE DB = DATABASE() AND INFO LIKE 'INSERT INTO conversations %'")
                 == [(1,)], "the batch waiting for its conversation")
        cursor.execute("INSERT INTO ballast (n) VALUES %s" % ", ".join(["(%d)" % n for n in range(500)]))
        # Now this one waits for the batch's message: a deadlock.
        cursor.execute("SELECT id FROM messages WHERE id = %s FOR UPDATE", (second_id,))
        db.rollback()
    finally:
        db.close()
    batch.join(TIMEOUT)
    assert batch.error is None
    [second] = batch.result
    assert second.id == second_id
    assert store.conversation_history(alice.id, bob.id, 10) == [first, second]
    assert query(mysql_url, "SELECT last_id FROM conversations ORDER BY account_id") == [(second_id,)] * 2


def test_mysql_ids_of_a_deleted_history_are_not_given_again(mysql_url):
    # The newest messages go with their room: the next id is still above
    # theirs after a restart (AUTO_INCREMENT, not only MAX(id)), so that a
    # client that saw them never takes a new message for one it has.
    store = open_store(mysql_url)
    try:
        alice = store.create_account("Alice", "h", T0)
        [kept] = store.append_messages([say(alice, "kept")], store.reserve_ids(1))
        gone = store.ensure_room("#gone", T0)
        batch = [in_room(alice, gone, "gone %d" % n) for n in range(3)]
        deleted = store.append_messages(batch, store.reserve_ids(len(batch)))
        assert store.delete_room(gone.id, keep_history=False)
    finally:
        store.close()
    reopened = open_store(mysql_url)
    try:
        assert reopened.last_message_id() == kept.id
        [new] = reopened.append_messages([say(alice, "new")], reopened.reserve_ids(1))
        assert new.id > deleted[-1].id
    finally:
        reopened.close()


def wait_until(call, timeout=10.0):
    """The result of the first ``call()`` that does not raise
    StorageUnavailable (the store paces its reconnection attempts itself)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a condition with a deadline, not synchronisation


@contextmanager
def socket_closed_port():
    """A loopback port where nothing listens, for as long as it is held."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_sqlite_checkpoints_off_the_loop(tmp_path, monkeypatch):
    """The server's loop commits to SQLite itself, so the WAL is copied back
    into the database file (the fsync) by the store's own thread: the loop's
    connection never checkpoints, and the file still gets every message."""
    import sae_db.sqlite
    monkeypatch.setattr(sae_db.sqlite, "CHECKPOINT_SECONDS", 0.05)
    path = tmp_path / "sae.db"
    store = open_store("sqlite:///%s" % path)
    try:
        assert store.on_loop
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        alice = store.create_account("alice", "hash", T0)
        store.append_messages([say(alice, "message %d" % n) for n in range(500)])
        # The database file alone (immutable: its WAL ignored) holds them
        # once a checkpoint has run.
        deadline = time.monotonic() + 10
        count = 0
        while count < 500 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the file: there is no event to wait for
            on_file = sqlite3.connect("file:%s?immutable=1" % path, uri=True)
            try:
                count = on_file.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            except sqlite3.DatabaseError:
                # Not even the schema is in the file yet, or a checkpoint is
                # writing the pages this read (which takes no lock) met.
                count = 0
            finally:
                on_file.close()
        assert count == 500
    finally:
        store.close()


def wal_restarts(path):
    """How many times SQLite has started the WAL over: the checkpoint
    sequence number of its header."""
    with open("%s-wal" % path, "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_sqlite_starts_its_wal_over_under_a_steady_load(tmp_path, monkeypatch):
    """Commit after commit, no checkpoint ever catches up, and SQLite starts
    the WAL over only once one has: the file would grow by all that is
    written. The store asks the writer (here the test, as the server's loop)
    to hold its batches back while it copies the rest; the WAL starts over,
    and every message is stored."""
    import sae_db.sqlite
    monkeypatch.setattr(sae_db.sqlite, "CHECKPOINT_SECONDS", 0.01)
    monkeypatch.setattr(sae_db.sqlite, "WAL_RESTART_FRAMES", 16)
    path = tmp_path / "sae.db"
    store = open_store("sqlite:///%s" % path)
    free = threading.Event()
    store.on_batches_free = free.set
    try:
        alice = store.create_account("alice", "hash", T0)
        restarts = wal_restarts(path)
        deadline = time.monotonic() + 15
        stored = held = 0
        while wal_restarts(path) == restarts and time.monotonic() < deadline:
            if store.batches_held():
                held += 1
                assert free.wait(10), "the store never let the batches go"
                free.clear()
                continue
            store.append_messages([say(alice, "message %d" % stored)])
            stored += 1
        assert wal_restarts(path) > restarts
        assert held
        store.append_messages([say(alice, "after")])
        assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == stored + 1
    finally:
        store.close()


def test_sqlite_cuts_its_wal_back_once_it_starts_over(tmp_path, monkeypatch):
    """A burst makes the WAL file long; when the WAL starts over, the file is
    cut back to WAL_KEPT_BYTES instead of keeping its length for good."""
    import sae_db.sqlite
    # The test runs the checkpoint itself, on the store's checkpoint
    # connection, instead of waiting for its thread's timer.
    monkeypatch.setattr(sae_db.sqlite, "CHECKPOINT_SECONDS", 3600)
    monkeypatch.setattr(sae_db.sqlite, "WAL_KEPT_BYTES", 64 * 1024)
    path = tmp_path / "sae.db"
    store = open_store("sqlite:///%s" % path)
    try:
        alice = store.create_account("alice", "hash", T0)
        store.append_messages([say(alice, "burst %d %s" % (n, "x" * 200)) for n in range(5000)])
        wal = "%s-wal" % path
        assert os.path.getsize(wal) > 1024 * 1024
        restarts = wal_restarts(path)
        # Nothing is written meanwhile: the checkpoint copies it all, and
        # the next commit starts the WAL over.
        store.checkpoints.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        store.append_messages([say(alice, "after the burst")])
        assert wal_restarts(path) > restarts
        assert os.path.getsize(wal) <= 64 * 1024
        assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 5001
    finally:
        store.close()


def test_replace_password_only_from_the_hash_it_still_has(store):
    # An IRC guest's account is taken over by its guest registering it:
    # only while its hash is still the guest mark, so never a real account.
    store.create_account("guest1", "!guest", T0)
    assert store.replace_password("GUEST1", "!guest", "scrypt$new") is True
    assert store.find_account("guest1").password_hash == "scrypt$new"
    assert store.replace_password("guest1", "!guest", "scrypt$other") is False
    assert store.find_account("guest1").password_hash == "scrypt$new"
    assert store.replace_password("nobody", "!guest", "scrypt$x") is False


def test_the_names_of_the_accounts_with_one_hash_are_the_guests(store):
    assert store.names_with_hash("!guest") == []
    store.create_account("Visitor", "!guest", T0)
    store.create_account("alice", "scrypt$alice", T0)
    store.create_account("drifter", "!guest", T0)
    assert store.names_with_hash("!guest") == ["drifter", "Visitor"]
    store.replace_password("drifter", "!guest", "scrypt$drifter")
    assert store.names_with_hash("!guest") == ["Visitor"]


def test_ids_at_a_moment_for_chathistory_timestamps(store, alice):
    assert store.ids_at("2026-01-01T00:00:00.000Z") == (None, None)
    stored = store.append_messages([NewMessage(alice.id, alice.name, None, "m%d" % n,
                                               "2026-01-01T00:00:0%d.000Z" % n) for n in range(3)])
    ids = [message.id for message in stored]
    assert store.ids_at("2026-01-01T00:00:01.000Z") == (ids[1], ids[1])
    assert store.ids_at("2026-01-01T00:00:01.500Z") == (ids[1], ids[2])
    assert store.ids_at("2025-12-31T23:59:59.000Z") == (None, ids[0])
    assert store.ids_at("2026-01-01T00:00:09.000Z") == (ids[2], None)
    # Several messages in one millisecond: the last of them, and the first.
    same = store.append_messages([NewMessage(alice.id, alice.name, None, "s%d" % n, "2026-01-01T00:00:05.000Z")
                                  for n in range(3)])
    assert store.ids_at("2026-01-01T00:00:05.000Z") == (same[2].id, same[0].id)
    assert store.ids_at("2026-01-01T00:00:04.000Z") == (ids[2], same[0].id)


def test_ids_at_gives_what_a_plain_filter_gives(store, alice, homework):
    # A bisection of the ids, so it must hold with gaps in them (a room's
    # history removed) and many messages in one millisecond.
    import random
    chance = random.Random(3)
    general = store.find_room("#general")
    moments, ms = [], 0
    for _ in range(300):
        ms += chance.choice((0, 0, 1, 7, 250))
        moments.append("2026-01-01T00:%02d:%02d.%03dZ" % (ms // 60000, ms // 1000 % 60, ms % 1000))
    rooms = [chance.choice((general, homework)) for _ in moments]
    stored = []
    while len(stored) < len(moments):
        first = len(stored)
        stored += store.append_messages([in_room(alice, room, "m", moment) for room, moment in
                                         zip(rooms[first:first + 17], moments[first:first + 17])])
    store.delete_room(homework.id, keep_history=False)
    kept = [message for message in stored if message.room == "#general"]
    assert 100 < len(kept) < 250
    for moment in sorted(set(moments)) + ["2025-12-31T23:59:59.999Z", "2026-01-01T01:00:00.000Z",
                                          "2026-01-01T00:00:00.500Z", moments[150][:-2] + "9Z"]:
        until = [m.id for m in kept if m.created_at <= moment]
        since = [m.id for m in kept if m.created_at >= moment]
        assert store.ids_at(moment) == (until[-1] if until else None, since[0] if since else None), moment


def test_two_servers_making_one_room_at_once_both_get_it(mysql_url):
    # Two servers of a cluster JOIN #new at the same moment: the second's
    # INSERT waits for the first's, fails on the name, and must then read
    # the room the first made, which its transaction's snapshot (taken by
    # its first read, before the other commit) does not show.
    import threading

    from mysql_fixtures import mysql_connect
    store = open_store(mysql_url)
    other = mysql_connect(mysql_url)
    try:
        other.cursor().execute("INSERT INTO rooms (name, name_key, topic, created_at)"
                               " VALUES ('#new', '#new', '', '2026-12-02 00:00:00')")
        made = []
        joining = threading.Thread(target=lambda: made.append(store.ensure_room("#New", T0)))
        joining.start()
        watcher = mysql_connect(mysql_url)
        try:
            deadline = time.monotonic() + 10
            while True:  # until the store's INSERT waits on the other's row lock
                cursor = watcher.cursor()
                cursor.execute("SELECT COUNT(*) FROM information_schema.innodb_lock_waits")
                waiting = cursor.fetchone()[0]
                cursor.close()
                watcher.commit()
                if waiting or time.monotonic() > deadline:
                    break
                time.sleep(0.01)  # polling the server's lock table: there is no event to wait on
        finally:
            watcher.close()
        other.commit()
        joining.join(10)
        assert made and made[0].name == "#new"
    finally:
        other.close()
        store.close()
