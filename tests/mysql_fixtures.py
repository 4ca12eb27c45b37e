"""Fixtures for tests against a real MariaDB (or MySQL) server.

The server is the one SAE_TEST_MYSQL_URL names (default: root with no
password on 127.0.0.1:3306); its account must be allowed to create and drop
databases. Each test gets a fresh, empty database named after this test run
(``sae_test_<pid>_<random>_<n>``), dropped afterwards; at the end of the run
every database of the run that is left is dropped too.

Where no server answers (or mysqlclient is not installed) the tests that use
these fixtures are skipped, with the reason, except under CI=true, where a
missing server is a failure.

conftest.py imports the fixtures so that any test can ask for them:
``mysql_url`` (a mysql:// URL of a fresh database), ``mysql_admin`` (a
connection with autocommit, for checks behind the store's back) and
``mysql_proxy`` (a TCP proxy in front of the server that a test can cut, to
simulate an outage). ``accounts_held`` holds messages from some accounts
back inside MariaDB, to keep batches in flight for as long as a test needs.
"""

import itertools
import os
import secrets
import select
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_URL = "mysql://root@127.0.0.1:3306/"


def server_url() -> str:
    return os.environ.get("SAE_TEST_MYSQL_URL", DEFAULT_URL)


def with_database(url: str, database: str) -> str:
    """``url`` with its database name replaced."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def mysql_unavailable(reason: str):
    """Skip the test, or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail("MariaDB tests cannot run (CI=true needs them): %s" % reason, pytrace=False)
    pytest.skip("MariaDB tests skipped: %s" % reason)


def mysql_connect(url: str, **extra):
    """A MySQLdb connection for the database ``url`` names (or none, if the
    path is empty), with the same settings as the store."""
    try:
        import MySQLdb
    except ImportError:
        # Plain tox installs only the test extra: say what installs this one.
        mysql_unavailable("mysqlclient is not installed here: run `tox -e mysql` (or pip install '.[mysql]' "
                          "into the environment that runs pytest)")
    from sae_db.mysql import connect_args
    path = urlsplit(url).path.strip("/")
    args = connect_args(with_database(url, path or "unused"))
    if not path:
        del args["database"]
    args.update(extra)
    return MySQLdb.connect(**args)


@pytest.fixture(scope="session")
def mysql_admin():
    """An autocommit connection to the test server, without a database."""
    import sae_db
    url = server_url()
    try:
        admin = mysql_connect(with_database(url, ""), autocommit=True)
    except Exception as error:  # MySQLdb.OperationalError, bad URL...
        mysql_unavailable("no MariaDB server at %s (set SAE_TEST_MYSQL_URL, or run .ci/run as root to set one up): %s"
                          % (sae_db.describe_url(url), error))
    run_prefix = "sae_test_%d_%s" % (os.getpid(), secrets.token_hex(3))
    admin.sae_run_prefix = run_prefix
    admin.sae_counter = itertools.count(1)
    yield admin
    cursor = admin.cursor()
    cursor.execute("SHOW DATABASES LIKE %s", (run_prefix.replace("_", "\\_") + "\\_%",))
    for (leftover,) in cursor.fetchall():
        cursor.execute("DROP DATABASE IF EXISTS `%s`" % leftover)
    admin.close()


@pytest.fixture
def mysql_url(mysql_admin):
    """The URL of a fresh, empty database on the test server."""
    database = "%s_%d" % (mysql_admin.sae_run_prefix, next(mysql_admin.sae_counter))
    cursor = mysql_admin.cursor()
    cursor.execute("CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" % database)
    yield with_database(server_url(), database)
    cursor.execute("DROP DATABASE IF EXISTS `%s`" % database)


# --- holding batches back inside the database --------------------------------

@contextmanager
def accounts_held(url, names):
    """While inside, a transaction behind the store's back holds the rows of
    the accounts ``names``: an INSERT of a message from one of them waits in
    MariaDB (its foreign key is checked against that row, with a lock) until
    the block ends; any other message is stored as usual. Yields the
    connection, which a test may use to look on meanwhile."""
    from sae_db import name_key
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute("START TRANSACTION")
        # Through the unique index: a locking read of a scan would hold every row.
        cursor.execute("SELECT id FROM users WHERE name_key IN (%s) FOR UPDATE" % ", ".join(["%s"] * len(names)),
                       [name_key(name) for name in names])
        assert len(cursor.fetchall()) == len(names)
        yield db
    finally:
        db.rollback()
        db.close()


def inserting_in(url):
    """The ids of the connections to ``url``'s database that are running an
    INSERT of messages: those accounts_held holds back wait there. (Not read
    from INNODB_TRX, which MariaDB refreshes only when no one read it for a
    tenth of a second: polled, it shows the same old picture for ever.)"""
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
                       " AND INFO LIKE 'INSERT INTO messages %'")
        return sorted(connection for (connection,) in cursor.fetchall())
    finally:
        db.close()


def connections_to(url):
    """How many connections the server has to ``url``'s database, but the
    one asking."""
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
                       " AND ID <> CONNECTION_ID()")
        return cursor.fetchone()[0]
    finally:
        db.close()


def wait_for(condition, what, timeout=10.0):
    """Poll ``condition()`` until it holds: for what happens inside the
    database, which sends no event to wait for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("never " + what)
        time.sleep(0.01)  # polling a condition with a deadline, not synchronisation


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server (the database, or sae-server
    for a client) until cut: ``cut()`` closes every forwarded connection and
    refuses new ones (they are accepted and closed at once), ``resume()``
    forwards again, on the same port. One thread, select() over every socket."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.peers = {}  # socket -> the socket it forwards to
        self.open = True
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="TcpProxy", daemon=True)
        self.thread.start()

    def url(self, database_url: str) -> str:
        """``database_url`` pointed at the proxy instead of the server."""
        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = "127.0.0.1:%d" % self.port
        return urlunsplit(parts._replace(netloc=netloc[0] + "@" + host if len(netloc) == 2 else host))

    def cut(self):
        with self.lock:
            self.open = False
            for sock in list(self.peers):
                sock.close()
            self.peers.clear()

    def resume(self):
        with self.lock:
            self.open = True

    def close(self):
        self.stopping = True
        self.cut()
        self.thread.join(5)
        self.listener.close()

    def _run(self):
        while not self.stopping:
            with self.lock:
                watched = [self.listener] + list(self.peers)
            try:
                readable, _, _ = select.select(watched, [], [], 0.05)
            except (OSError, ValueError):
                continue  # a socket was closed by cut() meanwhile
            for sock in readable:
                with self.lock:
                    if sock is self.listener:
                        self._accept()
                    elif sock in self.peers:
                        self._forward(sock)

    def _accept(self):
        client, _ = self.listener.accept()
        if not self.open:
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.peers[client] = server
        self.peers[server] = client

    def _forward(self, sock):
        other = self.peers[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for end in (sock, other):
            self.peers.pop(end, None)
            end.close()


@pytest.fixture
def mysql_proxy(mysql_admin):
    """A TcpProxy in front of the test server; ``mysql_proxy.url(mysql_url)``
    is the URL that goes through it."""
    parts = urlsplit(server_url())
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    yield proxy
    proxy.close()
