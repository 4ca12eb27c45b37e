"""A database outage, end to end: a real sae-server on a real MariaDB,
reached through a TCP proxy that the test cuts (see mysql_fixtures.py).

The story: people are chatting; the database goes away. What needs it is
refused with ERR 503 and nothing refused reaches anyone, but every
connection stays open. The database comes back; the server finds it again
by itself and chat goes on. Afterwards the database holds every message
someone saw and none that was refused. A server that cannot reach its
database at start-up says so in one line and exits.

The server's database account has a password here (the test server's root
usually has none), so that the log can be searched for it.

Nothing sleeps to synchronise: clients wait for the lines they expect, and
the test waits for the server to log that it found its database again (it
probes the database while it is down, so no client has to retry).
"""

import os
import re
import secrets
import socket
import subprocess
import sys
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from conftest import TEST_ENV, TIMEOUT, ServerProcess
from mysql_fixtures import mysql_connect

PASSWORD = "password1"
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
# The store waits up to 5 s (db/mysql.py, BACKOFF_MAX) before it tries a
# dead database again, and the server probes it once a second.
RECOVERY_TIMEOUT = 20.0


# --- fixtures and helpers -------------------------------------------------

@pytest.fixture
def db_password():
    return "s3cret-" + secrets.token_hex(8)


@pytest.fixture
def account_url(mysql_admin, mysql_url, db_password):
    """``mysql_url`` for an account of its own, with ``db_password``."""
    database = urlsplit(mysql_url).path.strip("/")
    user = "sae_%s" % secrets.token_hex(4)
    hosts = ("127.0.0.1", "localhost")  # TCP from 127.0.0.1, with or without name resolution
    cursor = mysql_admin.cursor()
    for host in hosts:
        cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, db_password))
        cursor.execute("GRANT ALL PRIVILEGES ON `%s`.* TO %%s@%%s" % database, (user, host))
    parts = urlsplit(mysql_url)
    yield urlunsplit(parts._replace(netloc="%s:%s@%s:%d" % (
        user, quote(db_password, safe=""), parts.hostname, parts.port or 3306)))
    for host in hosts:
        cursor.execute("DROP USER IF EXISTS %s@%s", (user, host))


def stored_bodies(url):
    """Every message body in the database, behind the server's back."""
    db = mysql_connect(url)
    try:
        cursor = db.cursor()
        cursor.execute("SELECT body FROM messages ORDER BY id")
        return [body for (body,) in cursor.fetchall()]
    finally:
        db.close()


def say_line(name, text):
    return r"MSG \d+ %s %s %s\Z" % (TS, re.escape(name), re.escape(text))


def room_texts(lines):
    return [re.match(r"MSG \d+ \S+ \S+ (.*)\Z", line).group(1)
            for line in lines if line.startswith("MSG ")]


# --- the outage -----------------------------------------------------------

def test_chat_survives_a_database_outage(tmp_path, mysql_url, account_url, mysql_proxy,
                                         db_password, unique_name):
    server = ServerProcess(tmp_path, db_url=mysql_proxy.url(account_url)).start()
    try:
        alice, bob, carol = unique_name("alice"), unique_name("bob"), unique_name("carol")
        signup = server.client()
        for name in (alice, bob, carol):
            signup.register(name)
        speaker, listener = server.client(), server.client()
        speaker.login(alice)
        listener.login(bob)
        speaker.expect(r"JOIN %s\Z" % bob)
        late = server.client()  # connected, not logged in yet
        seen, refused = [], []

        speaker.send("SAY before the outage")
        for client in (speaker, listener):
            client.expect(say_line(alice, "before the outage"))
        seen.append("before the outage")

        mysql_proxy.cut()

        # What needs the database is refused, and the connection stays.
        speaker.send("SAY lost in the outage")
        assert re.match(r"ERR 503 \S", speaker.next())
        refused.append("lost in the outage")
        speaker.send("TELL %s also lost" % bob)
        assert speaker.next().startswith("ERR 503 ")
        refused.append("also lost")
        speaker.send("PING still-here")
        assert speaker.next() == "PONG still-here"
        listener.send("HISTORY 10")
        assert listener.next().startswith("ERR 503 ")
        late.send("LOGIN %s %s" % (carol, PASSWORD))
        assert late.next().startswith("ERR 503 ")
        newcomer = unique_name("dave")
        late.send("REGISTER %s %s" % (newcomer, PASSWORD))
        assert late.next().startswith("ERR 503 ")
        for client in (listener, late):
            client.send("PING still-here")
            assert client.next() == "PONG still-here"

        mysql_proxy.resume()

        # The server finds the database again by itself; chat resumes for everyone.
        server.wait_log(r".*storage available again", timeout=RECOVERY_TIMEOUT)
        back = "back again"
        speaker.send("SAY %s" % back)
        speaker.expect(say_line(alice, back))
        seen.append(back)
        heard = listener.lines_until(say_line(alice, back))
        assert not set(room_texts(heard)) & set(refused), heard
        assert not [line for line in heard if line.startswith("PRIV ")], heard
        listener.send("SAY chat goes on")
        for client in (speaker, listener):
            client.expect(say_line(bob, "chat goes on"))
        seen.append("chat goes on")

        # What was refused was not done: carol can log in now, and the
        # newcomer's name is still free.
        late.send("LOGIN %s %s" % (carol, PASSWORD))
        late.expect(r"OK LOGIN %s\Z" % carol)
        history = late.lines_until(r"OK HISTORY ")
        assert room_texts(history) == seen
        late.expect(r"USERS ")
        late.send("REGISTER %s %s" % (newcomer, PASSWORD))
        assert late.next() == "OK REGISTER %s" % newcomer

        # The database holds every message someone saw, none that was refused.
        stored = stored_bodies(mysql_url)
        assert stored == seen
    finally:
        server.stop()

    log = "".join(server.log)
    assert db_password not in log
    assert ":***@" in log, "the log names the database, password masked"
    # Logged once when it went away, once when it came back: not per request.
    assert len(re.findall(r"ERROR storage unavailable", log)) == 1, log
    assert len(re.findall(r"storage available again", log)) == 1, log


# --- starting without a database ------------------------------------------

def closed_port():
    """A loopback port nothing listens on (free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("unreachable", ["connection refused", "connection cut"])
def test_a_server_without_its_database_exits_with_one_clear_line(
        tmp_path, account_url, mysql_proxy, db_password, unreachable):
    if unreachable == "connection cut":
        mysql_proxy.cut()  # accepts, then closes at once
        url = mysql_proxy.url(account_url)
    else:
        parts = urlsplit(account_url)
        url = urlunsplit(parts._replace(netloc=parts.netloc.replace(
            "%s:%d" % (parts.hostname, parts.port or 3306), "127.0.0.1:%d" % closed_port())))
    result = subprocess.run(
        [sys.executable, "-m", "sae_server", "--host", "127.0.0.1", "--port", "0", "--db", url],
        stdin=subprocess.DEVNULL, capture_output=True, cwd=str(tmp_path),
        env=dict(os.environ, **TEST_ENV), timeout=4 * TIMEOUT)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode != 0
    lines = result.stderr.decode("utf-8", "replace").splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert re.search(r"ERROR .*database", lines[0]), lines[0]
    assert ":***@" in lines[0], "the error names the database, password masked"
    assert db_password not in output
