"""Starting sae-server: what a mistake on its command line or in its
environment is answered with. Every mistake is answered in words (the
option, the variable, what was expected, what to do), never a traceback.
"""

import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from conftest import TEST_ENV, TIMEOUT, ServerProcess
from mysql_fixtures import server_url


def start(tmp_path, *args, env=None, program=("-m", "sae_server")):
    """Run sae-server where it must refuse to start: (status, stderr). Its
    port is 0 (SAE_PORT, so that a test may give another) in case it starts."""
    environment = dict(os.environ, SAE_PORT="0", **TEST_ENV)
    environment.update(env or {})
    done = subprocess.run([sys.executable, *program, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=environment, cwd=str(tmp_path), timeout=TIMEOUT)
    return done.returncode, done.stderr


@pytest.mark.parametrize("variable, value, option, expected", [
    ("SAE_PORT", "abc", "--port", "a port number (0 to 65535)"),
    ("SAE_PORT", "70000", "--port", "a port number (0 to 65535)"),
    ("SAE_HISTORY", "1.5", "--history", "a whole number of 0 or more"),
    ("SAE_MAX_CONNECTIONS", "-1", "--max-connections", "a whole number of 0 or more"),
    ("SAE_PING_INTERVAL", "soon", "--ping-interval", "a number of 0 or more"),
    ("SAE_LOGIN_FAILURE_DELAY", "nan", "--login-failure-delay", "a number of 0 or more"),
    ("SAE_EXEMPT", "localhost", "--exempt", "a comma-separated list of addresses or networks (CIDR)"),
    ("SAE_LOG_LEVEL", "verbose", "--log-level", "one of DEBUG, INFO, WARNING, ERROR"),
    ("SAE_INSTANCE_NAME", "pi a", "--instance-name", "one word of printable ASCII, at most 64 characters"),
])
def test_a_bad_environment_variable_is_answered_like_a_bad_option(tmp_path, variable, value, option, expected):
    status, said = start(tmp_path, env={variable: value})
    assert status == 2 and "Traceback" not in said
    assert said.splitlines()[-1] == "sae-server: error: argument %s: %r is not %s (from %s)" % (
        option, value, expected, variable)
    # The same value as a flag: the same words, without the variable.
    status, said = start(tmp_path, option, value)
    assert status == 2 and said.splitlines()[-1] == "sae-server: error: argument %s: %r is not %s" % (
        option, value, expected)


def test_a_flag_wins_over_a_bad_variable_and_good_variables_are_used(tmp_path):
    # The variable is not even looked at when the flag is given, as before.
    status, said = start(tmp_path, "--port", "-1", env={"SAE_PORT": "abc"})
    assert said.splitlines()[-1].endswith("argument --port: '-1' is not a port number (0 to 65535)")
    status, said = start(tmp_path, "--kick-seconds", "0", env={"SAE_LOG_LEVEL": "error"})
    assert status == 1 and said.strip().endswith("--kick-seconds must be 1 to 31536000")


def test_a_mysql_url_without_the_mysql_extra_says_how_to_install_it(tmp_path):
    # sys.modules[name] = None makes `import MySQLdb` fail as if it were not installed.
    hide_mysqlclient = ("import sys; sys.modules['MySQLdb'] = None; import sae_server; "
                        "sys.exit(sae_server.main(sys.argv[1:]))")
    status, said = start(tmp_path, "--db", "mysql://sae:secret@127.0.0.1:3306/serveurchat",
                         program=("-c", hide_mysqlclient))
    assert status == 1 and "Traceback" not in said
    assert "needs the mysql extra (mysqlclient), which is not installed" in said
    assert "-m pip install '.[mysql]'" in said and "secret" not in said


def test_access_denied_names_the_user_and_host_and_the_two_usual_fixes(tmp_path, mysql_admin):
    url = urlsplit(server_url())
    host = url.hostname or "127.0.0.1"
    wrong = "mysql://%s:not-the-password@%s:%d/sae_nowhere" % (url.username or "root", host, url.port or 3306)
    status, said = start(tmp_path, "--db", wrong)
    assert status == 1 and "Traceback" not in said and "not-the-password" not in said
    assert "Access denied" in said
    # The refused user and host, in words, and what to do about it.
    assert re.search(r"refused user '[^']+' connecting from '[^']+': either the password is wrong, "
                     r"or no user '[^']+'@'[^']+' exists", said)
    assert "The two usual fixes: create '" in said
    assert "?unix_socket=/run/mysqld/mysqld.sock" in said


def under_open_file_limit(soft, hard):
    """A ServerProcess program: sae-server started under these open-file
    limits, as by a shell whose ulimit -n is ``soft``."""
    return ("-c", "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
            "import sae_server; sys.exit(sae_server.main(sys.argv[1:]))" % (soft, hard))


def open_file_limits(pid):
    with open("/proc/%d/limits" % pid) as limits:
        (line,) = [line for line in limits if line.startswith("Max open files")]
    return tuple(int(field) for field in line.split()[3:5])


def test_a_low_soft_open_file_limit_is_raised_without_a_warning(tmp_path):
    server = ServerProcess(tmp_path, program=under_open_file_limit(256, 8192)).start()
    try:
        assert open_file_limits(server.proc.pid) == (8192, 8192)
        client = server.client()
        client.send("PING raised")
        assert client.next() == "PONG raised"
    finally:
        server.stop()
    assert not [line for line in server.log if "WARNING" in line], server.log


def test_a_hard_limit_too_low_for_max_connections_is_warned_once(tmp_path):
    server = ServerProcess(tmp_path, program=under_open_file_limit(256, 256)).start()
    server.stop()
    warnings = [line for line in server.log if "WARNING" in line]
    assert len(warnings) == 1 and "open-file limit is 256" in warnings[0]
    assert "at most 224 connections instead of 4096" in warnings[0]


@pytest.mark.parametrize("option, value, said", [
    ("--flood-rate", "0", "--flood-rate must be above 0"),
    ("--ping-interval", "0", "--ping-interval must be above 0"),
    ("--max-connections", "0", "--max-connections must be above 0"),
    ("--scrypt-n", "1000", "--scrypt-n must be a power of two from 2 to 262144"),
    ("--scrypt-n", "1048576", "--scrypt-n must be a power of two from 2 to 262144"),
])
def test_a_limit_the_server_cannot_run_with_is_refused_at_start(tmp_path, option, value, said):
    # A flood rate of 0 divided by zero on the first held line; a scrypt cost
    # that is not a power of two failed every REGISTER.
    status, log = start(tmp_path, option, value)
    assert status == 1 and log.strip().endswith(said) and "Traceback" not in log
