"""A Redis server of the test's own, for the cluster tests (issue 16).

Each test that asks for ``redis_server`` gets a redis-server started on a
free loopback port in its temporary directory, with nothing persisted, that
it can stop and start again on the same port (an outage). Where
redis-server is not installed the tests skip, with how to install it,
except under CI=true, where that is a failure (.ci/run installs it).
"""

import os
import shutil
import socket
import subprocess
import time

import pytest

TIMEOUT = 10.0


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, on a free port, in a temporary
    directory, that the test can stop and start again on the same port."""

    def __init__(self, tmp_path):
        program = shutil.which("redis-server")
        if program is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed (.ci/run installs it)", pytrace=False)
            pytest.skip("redis-server is not installed (apt install redis-server)")
        self.program = program
        self.port = free_port()
        self.dir = tmp_path / ("redis-%d" % self.port)
        self.dir.mkdir()
        self.proc = None
        self.url = "redis://127.0.0.1:%d/0" % self.port

    def start(self, *extra):
        self.proc = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)] + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                pass
            time.sleep(0.02)  # polling a process that is starting: there is nothing to wait on
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
