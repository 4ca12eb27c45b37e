"""Upgrading a database written by v0.1.0 (one room, schema version 1) to
rooms (migration 0002) and on to the latest schema (the conversations of
0005 among them), on SQLite and on MariaDB.

Each test builds the old database the way v0.1.0 left it: migration 0001
alone, run from its SQL file, then accounts, a ban, room messages and a
private message written with the old columns. Then the new code opens it,
as a store or as a real server, and everything must still be there: every
account, ban and message, the room messages in #general, every account a
member of #general, and a v1 client that logs in sees the old history.
"""

import sqlite3
from datetime import datetime

import pytest

from mysql_fixtures import mysql_connect
from sae_db import open_store
from sae_db.migrate import latest_version, migrations
from sae_server import hash_password

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "mysql"])

PASSWORD = "password1"
ACCOUNTS = [  # name, created_at, ban reason
    ("Alice", "2025-09-01T08:00:00.000Z", None),
    ("bob", "2025-09-02T09:30:00.250Z", None),
    ("Mallory", "2025-10-10T10:10:10.010Z", "spam 🥫"),
]
MESSAGES = [  # sender, recipient (None: the room), body, created_at
    ("Alice", None, "hello from v0.1.0", "2025-09-03T12:00:00.001Z"),
    ("bob", None, "fête 🎉 中文", "2025-09-03T12:00:05.000Z"),
    ("Alice", "bob", "psst, only for bob", "2025-09-03T12:01:00.000Z"),
    ("Mallory", None, "buy cheap things", "2025-10-10T10:11:00.000Z"),
    ("bob", "Alice", "and back to alice", "2025-10-11T07:00:00.999Z"),
]


def dialect(url):
    return "sqlite" if url.startswith("sqlite:") else "mysql"


class OldDatabase:
    """A connection to the database behind the store's back, with the
    parameter style of its driver."""

    def __init__(self, url):
        self.url = url
        if dialect(url) == "sqlite":
            self.db = sqlite3.connect(url[len("sqlite:///"):])
        else:
            self.db = mysql_connect(url)

    def run(self, statement, parameters=()):
        if dialect(self.url) == "mysql":
            statement = statement.replace("?", "%s")
        cursor = self.db.cursor()
        cursor.execute(statement, parameters)
        rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        cursor.close()
        return rows

    def moment(self, text):
        """A timestamp as the old schema stores it: text in SQLite, a UTC
        DATETIME(3) in MariaDB."""
        if dialect(self.url) == "sqlite":
            return text
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")

    def close(self):
        self.db.commit()
        self.db.close()


def make_v010_database(url, accounts=ACCOUNTS, messages=MESSAGES):
    """The database v0.1.0 would have left at ``url``; returns the message
    ids in MESSAGES order."""
    [(version, statements)] = [m for m in migrations(dialect(url)) if m[0] == 1]
    old = OldDatabase(url)
    try:
        if dialect(url) == "sqlite":
            old.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        else:
            old.run("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)"
                    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        for statement in statements:
            old.run(statement)
        old.run("INSERT INTO schema_version (version) VALUES (?)", (version,))
        ids = {}
        for name, created_at, ban_reason in accounts:
            old.run("INSERT INTO users (name, name_key, password_hash, created_at, banned_at, ban_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, name.lower(), hash_password(PASSWORD, 1024), old.moment(created_at),
                     old.moment(created_at) if ban_reason else None, ban_reason))
            ids[name] = old.run("SELECT id FROM users WHERE name_key = ?", (name.lower(),))[0][0]
        message_ids = []
        for sender, recipient, body, created_at in messages:
            old.run("INSERT INTO messages (sender_id, recipient_id, body, created_at) VALUES (?, ?, ?, ?)",
                    (ids[sender], ids[recipient] if recipient else None, body, old.moment(created_at)))
            message_ids.append(old.run("SELECT MAX(id) FROM messages")[0][0])
        return message_ids
    finally:
        old.close()


def test_an_upgraded_store_keeps_every_account_ban_and_message(db_url):
    ids = make_v010_database(db_url)
    store = open_store(db_url)
    try:
        for name, created_at, ban_reason in ACCOUNTS:
            account = store.find_account(name)
            assert (account.name, account.created_at, account.ban_reason) == (name, created_at, ban_reason)
        assert [a.name for a in store.banned_accounts()] == ["Mallory"]

        general = store.find_room("#general")
        assert general is not None and general.topic == ""
        # #general has been there since the first account.
        assert general.created_at == ACCOUNTS[0][1]
        assert store.count_rooms() == 1

        room = [(i, m) for i, m in zip(ids, MESSAGES) if m[1] is None]
        history = store.room_history(100, room_id=general.id)
        assert [(m.id, m.sender, m.body, m.created_at, m.room, m.recipient) for m in history] == [
            (i, sender, body, at, "#general", None) for i, (sender, _, body, at) in room]
        assert store.room_history(100) == history

        alice, bob = store.find_account("alice"), store.find_account("bob")
        private = [(i, m) for i, m in zip(ids, MESSAGES) if m[1] is not None]
        conversation = store.conversation_history(alice.id, bob.id, 100)
        assert [(m.id, m.sender, m.recipient, m.body, m.created_at, m.room) for m in conversation] == [
            (i, sender, recipient, body, at, None) for i, (sender, recipient, body, at) in private]

        # Every account is in #general, since it registered.
        for name, _, _ in ACCOUNTS:
            assert store.rooms_of(store.find_account(name).id) == [general]
        assert store.room_members(general.id) == ["Alice", "bob", "Mallory"]
        joined = OldDatabase(db_url)
        try:
            rows = joined.run("SELECT users.created_at, memberships.joined_at FROM memberships"
                              " JOIN users ON users.id = memberships.account_id")
        finally:
            joined.close()
        assert len(rows) == 3 and all(created == joined_at for created, joined_at in rows)

        # The conversations so far, each at its latest message (migration
        # 0005), and the moments of the old messages as ids.
        assert store.targets(alice.id, [general.id], None, None, 10) == [
            ("#general", MESSAGES[3][3]), ("bob", MESSAGES[4][3])]
        assert store.targets(bob.id, [], None, None, 10) == [("Alice", MESSAGES[4][3])]
        assert store.targets(store.find_account("mallory").id, [], None, None, 10) == []
        assert store.ids_at(MESSAGES[2][3]) == (ids[2], ids[2])

        # Everything alice could have missed, and ids that go on from the old ones.
        assert [m.id for m in store.missed(alice.id, 0, 100)] == ids
        [later] = store.append_messages([store_message(alice, "after the upgrade")])
        assert later.id > max(ids) and later.room == "#general"
    finally:
        store.close()
    versions = OldDatabase(db_url)
    try:
        assert versions.run("SELECT version FROM schema_version ORDER BY version") == [
            (version,) for version in range(1, latest_version(dialect(db_url)) + 1)]
    finally:
        versions.close()


def store_message(account, body):
    from sae_db import NewMessage
    return NewMessage(account.id, account.name, None, body, "2026-11-24T13:05:01.123Z")


def test_the_conversations_of_an_upgraded_database_count_each_once(db_url):
    # Migration 0005 makes one row per side of each conversation: one for
    # a conversation with oneself, however many messages either way.
    make_v010_database(db_url, messages=[
        ("Alice", "Alice", "note to self", "2025-09-03T12:00:00.000Z"),
        ("bob", "Alice", "one", "2025-09-03T12:00:01.000Z"),
        ("Alice", "bob", "two", "2025-09-03T12:00:02.000Z"),
        ("bob", "Alice", "three", "2025-09-03T12:00:03.000Z"),
        ("Alice", "Alice", "another note", "2025-09-03T12:00:04.000Z")])
    store = open_store(db_url)
    try:
        alice, bob = store.find_account("alice"), store.find_account("bob")
        assert store.targets(alice.id, [], None, None, 10) == [
            ("bob", "2025-09-03T12:00:03.000Z"), ("Alice", "2025-09-03T12:00:04.000Z")]
        assert store.targets(bob.id, [], None, None, 10) == [("Alice", "2025-09-03T12:00:03.000Z")]
        # And from then on, kept by each batch.
        from sae_db import NewMessage
        store.append_messages([NewMessage(bob.id, "bob", "alice", "four", "2025-09-03T12:00:05.000Z")])
        assert store.targets(alice.id, [], None, None, 10) == [
            ("Alice", "2025-09-03T12:00:04.000Z"), ("bob", "2025-09-03T12:00:05.000Z")]
    finally:
        store.close()


def test_an_upgraded_empty_database_gets_a_general_room(db_url):
    make_v010_database(db_url, accounts=[], messages=[])
    store = open_store(db_url)
    try:
        [(general, members)] = store.list_rooms()
        assert (general.name, members) == ("#general", 0)
        assert general.created_at.endswith("Z") and len(general.created_at) == len("2026-11-24T13:05:01.123Z")
    finally:
        store.close()


def test_the_new_server_on_an_old_database_shows_the_old_history(db_url, make_server):
    ids = make_v010_database(db_url)
    server = make_server(db_url=db_url)
    bob = server.client()
    bob.send("LOGIN bob %s" % PASSWORD)
    lines = bob.lines_until(r"USERS ")
    room = [(i, m) for i, m in zip(ids, MESSAGES) if m[1] is None]
    # Exactly what v0.1.0 answered: the room's messages, not the private ones.
    assert lines == (["OK LOGIN bob"]
                     + ["MSG %d %s %s %s" % (i, at, sender, body) for i, (sender, _, body, at) in room]
                     + ["OK HISTORY %d" % len(room), "USERS 1 bob"])
    # The banned account stays banned.
    mallory = server.client()
    mallory.send("LOGIN Mallory %s" % PASSWORD)
    assert mallory.next() == "ERR 403 spam 🥫"
    # Chat goes on, with ids after the old ones, and HISTORY has old and new.
    bob.send("SAY still here")
    said = bob.expect(r"MSG (\d+) \S+ bob still here$")
    assert int(said.group(1)) > max(ids)
    bob.send("HISTORY 2")
    assert bob.lines_until(r"OK HISTORY") == [
        "MSG %d %s Mallory buy cheap things" % (ids[3], MESSAGES[3][3]),
        said.group(0), "OK HISTORY 2"]
    # A new account starts in #general, as the old ones now are.
    carol = server.client()
    carol.register("carol")
    server.stop()
    store = open_store(db_url)
    try:
        assert store.room_members(store.find_room("#general").id) == ["Alice", "bob", "carol", "Mallory"]
    finally:
        store.close()
