"""The Store contract, on every backend: SQLite in a temporary file and a
fresh database on a real MariaDB (see mysql_fixtures.py; skipped where no
server answers, a failure under CI=true).

Every test below the backend-specific section runs once per backend with
the same expectations: that is what keeps the two from drifting apart.
"""

import socket
import sqlite3
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from mysql_fixtures import mysql_connect
from sae_db import NewMessage, StorageUnavailable, describe_url, open_store
from sae_db.migrate import latest_version

try:
    import MySQLdb
    INTEGRITY_ERRORS = (sqlite3.IntegrityError, MySQLdb.IntegrityError)
except ImportError:  # the MariaDB tests skip themselves
    INTEGRITY_ERRORS = (sqlite3.IntegrityError,)

T0 = "2026-11-24T13:05:01.123Z"


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


def test_a_large_batch_is_stored_whole_and_in_order(store, alice):
    # Several MiB: more than one INSERT statement's worth on MySQL.
    batch = [say(alice, "%04d " % i + "x" * 4000) for i in range(400)]
    stored = store.append_messages(batch)
    ids = [m.id for m in stored]
    assert ids == sorted(ids) and len(set(ids)) == 400
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
    assert set(columns(sqlite_url)) == {"users", "messages", "rooms", "memberships", "schema_version"}


# -- MySQL only: types, outages, secrets ----------------------------------

def test_mysql_tables_are_innodb_utf8mb4(mysql_url):
    open_store(mysql_url).close()
    database = urlsplit(mysql_url).path.strip("/")
    rows = query(mysql_url, "SELECT table_name, engine, table_collation FROM information_schema.tables"
                            " WHERE table_schema = '%s'" % database)
    assert {name for name, _, _ in rows} == {"users", "messages", "rooms", "memberships", "schema_version"}
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
        # The store's one connection, as the database server sees it.
        cursor = mysql_admin.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                       (urlsplit(mysql_url).path.strip("/"),))
        [(connection,)] = cursor.fetchall()
        cursor.execute("KILL %d" % connection)
        [message] = store.append_messages([say(alice, "after the kill")])
        assert store.room_history(10) == [message]
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
        # While the server is away, calls fail at once instead of waiting on it.
        with pytest.raises(StorageUnavailable, match="next attempt"):
            store.room_history(10)
        mysql_proxy.resume()
        after = wait_until(lambda: store.append_messages([say(alice, "after")]))
        assert [m.body for m in store.room_history(10)] == ["before", "after"]
        assert after[0].id > before.id
    finally:
        store.close()


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
