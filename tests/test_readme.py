"""The README's commands, pasted as a newcomer pastes them: its SQL, its
URLs, its shell lines, run as written (with names made unique for the run).
"""

import configparser
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TIMEOUT, ServerProcess
from mysql_fixtures import mysql_connect, server_url

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language):
    """The README's fenced blocks in ``language``, in order."""
    return re.findall(r"^```%s\n(.*?)^```" % language, README, flags=re.M | re.S)


def statements(sql):
    lines = [line for line in sql.splitlines() if not line.startswith("--")]
    return [statement.strip() for statement in " ".join(lines).split(";") if statement.strip()]


@pytest.fixture
def readme_mysql_user(mysql_admin):
    """The README's database and user, created by its SQL as written, with a
    unique user, database and password: (rename, where rename(text) puts
    those into a README line)."""
    user, database, password = "sae%s" % secrets.token_hex(4), "sae_readme_%s" % secrets.token_hex(4), \
        "pw-%s" % secrets.token_hex(4)

    def rename(text):
        text = text.replace("'sae'@", "'%s'@" % user).replace("mysql://sae:", "mysql://%s:" % user)
        return text.replace("serveurchat", database).replace("change-me", password)
    (sql,) = [block for block in blocks("sql") if "CREATE USER" in block]
    cursor = mysql_admin.cursor()
    try:
        for statement in statements(sql):
            cursor.execute(rename(statement))
        yield rename
    finally:
        for host in ("localhost", "127.0.0.1", "%"):
            cursor.execute("DROP USER IF EXISTS '%s'@'%s'" % (user, host))
        cursor.execute("DROP DATABASE IF EXISTS `%s`" % database)


README_MYSQL_URLS = re.findall(r"--db '(mysql://[^']*)'", README)


@pytest.mark.parametrize("url", README_MYSQL_URLS)
def test_the_readme_mariadb_setup_starts_the_server(tmp_path, readme_mysql_user, url):
    socket_path = re.search(r"unix_socket=([^&']*)", url)
    if socket_path and not os.path.exists(socket_path.group(1)):
        pytest.skip("no MariaDB socket at %s on this machine" % socket_path.group(1))
    server = ServerProcess(tmp_path, db_url=readme_mysql_user(url)).start()
    try:
        client = server.client()
        client.register("alice")
        client.login("alice")
    finally:
        server.stop()


def test_the_readme_gives_both_mariadb_urls():
    assert len(README_MYSQL_URLS) == 2


def test_a_skipped_mariadb_test_names_the_readme_command_that_runs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # as in plain tox's environments
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        mysql_connect(server_url())
    command = re.search(r"`(tox -e (\w+))`", str(skipped.value))
    assert command, skipped.value
    assert any(line == ".venv/bin/" + command.group(1) for block in blocks("sh") for line in block.splitlines())
    # ... and that command's environment installs the mysql extra: a tox
    # factor named like the environment.
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    extras = [line.strip() for line in tox["testenv"]["extras"].splitlines() if line.strip()]
    assert "test" in extras and "%s: mysql" % command.group(2) in extras


def commands(block):
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_every_readme_command_runs_from_where_the_quick_start_puts_it():
    # The quick start installs into .venv: sae-server and sae-client are not on PATH.
    for block in blocks("sh"):
        for line in commands(block):
            for program in ("sae-server", "sae-client"):
                for word in re.findall(r"(?:^|\s)(\S*%s)(?=\s|$)" % program, line):
                    assert word.endswith("/" + program) or word.startswith("'"), line
    assert ".venv/bin/sae-client --user alice" in [line for block in blocks("sh") for line in commands(block)]


def test_the_readme_names_a_raw_client_that_a_minimal_debian_has():
    assert "sudo apt install netcat-openbsd" in README
    assert "exec 3<>/dev/tcp/localhost/12345" in README


def test_the_readme_bash_client_talks_to_the_server(server):
    line = re.search(r"`(exec 3<>/dev/tcp/localhost/12345; [^`]*)`", README).group(1)
    script = line.replace("12345", str(server.port)) + "; wait"
    done = subprocess.run(["bash", "-c", script], input="HELP\nQUIT\n", capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.stdout.splitlines()[-2:] == ["OK HELP", "BYE goodbye"], done
