"""Several sae-server instances sharing one MariaDB database and one Redis
(issue 16): real server processes on loopback, a real MariaDB, a Redis
server of the test's own (started on a free port, so that a test can stop
and restart it), clients spread across the instances.

What every test checks is what a user sees: every client, on any instance,
gets the messages of a room in the same order, with strictly increasing
ids, each once, whatever failed meanwhile."""

import re
import signal
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TIMEOUT, LineClient, ServerProcess, account_client
from redis_fixtures import RedisServer, free_port
from sae_cluster import Link, Sequencer
from sae_db import LiveMessage, Message

MSG = re.compile(r"MSG (\d+) \S+ (\S+) (.*)")


# -- the Sequencer, without sockets -------------------------------------------

def said(first, last, sender="alice"):
    return Link(first - 1, last, [(Message(i, "t", sender, None, "m%d" % i, "#general"), 1)
                                  for i in range(first, last + 1)])


def ids(links):
    return [message.id for link in links for message, _ in link.messages]


def test_links_go_out_in_chain_order_whatever_order_they_come_in():
    sequencer = Sequencer(10)
    sequencer.add(said(16, 20))
    assert ids(sequencer.ready()) == [] and sequencer.gap() == (10, 15)
    sequencer.add(said(11, 15))
    assert ids(sequencer.ready()) == list(range(11, 21))
    assert sequencer.gap() is None and sequencer.last == 20


def test_a_range_read_from_the_database_and_heard_later_goes_out_once():
    sequencer = Sequencer(0)
    sequencer.add(said(6, 8))
    sequencer.add(said(1, 5))  # read from the database: 1 to 5
    assert ids(sequencer.ready()) == [1, 2, 3, 4, 5, 6, 7, 8]
    sequencer.add(said(1, 3))  # the publications arrive after all
    sequencer.add(said(4, 5))
    sequencer.add(said(3, 9))  # overlaps: only 9 is news
    assert ids(sequencer.ready()) == [9]


def test_a_link_overtaken_by_a_read_from_the_database_goes_on_from_there():
    sequencer = Sequencer(0)
    sequencer.add(said(5, 8))  # waits for 1 to 4
    sequencer.add(said(1, 6))  # a read that went past where the waiting link began
    assert ids(sequencer.ready()) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert sequencer.gap() is None and sequencer.last == 8


def test_a_link_with_holes_in_its_ids_covers_its_whole_range():
    # Ids burnt by a transaction that rolled back never come: the chain says
    # the range is whole.
    sequencer = Sequencer(0)
    link = Link(0, 10, [(Message(3, "t", "a", None, "x", "#general"), 1)])
    sequencer.add(link)
    assert ids(sequencer.ready()) == [3] and sequencer.last == 10


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_whatever_comes_in_whatever_order_each_id_goes_out_once_in_order(data):
    # A chain of links (the servers' batches) over ids 1..n with holes
    # (rolled back ids); they arrive in any order, some twice, and now and
    # then the server reads a range from the database, from its last id to
    # anywhere further: every stored id goes out once, in order.
    n = data.draw(st.integers(1, 60))
    stored = sorted(data.draw(st.sets(st.integers(1, n))))
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1))) if n > 1 else set()) + [n]
    links, previous = [], 0
    for last in cuts:
        links.append(Link(previous, last, [(Message(i, "t", "a", None, "m", "#general"), 1)
                                           for i in stored if previous < i <= last]))
        previous = last
    arrivals = data.draw(st.permutations(links + data.draw(st.lists(st.sampled_from(links), max_size=5))))
    sequencer, out = Sequencer(0), []
    for link in arrivals:
        if data.draw(st.booleans()):  # a read from the database first
            upto = data.draw(st.integers(sequencer.last, n))
            sequencer.add(Link(sequencer.last, upto, [(Message(i, "t", "a", None, "m", "#general"), 1)
                                                      for i in stored if sequencer.last < i <= upto]))
        sequencer.add(link)
        out += ids(sequencer.ready())
    assert out == stored and sequencer.last == n and sequencer.gap() is None


# -- real instances -----------------------------------------------------------

@pytest.fixture
def cluster(tmp_path, mysql_url, redis_server):
    """make(count, *args, redis_url=None): ``count`` more instances, s1, s2
    ..., on one database and one Redis (the test's, or ``redis_url``), each
    started with ``args`` and an admin socket (its ``admin_socket``), and
    listening to the others; returns every instance made so far."""
    started = []

    def make(count, *args, redis_url=None):
        for _ in range(count):
            name = "s%d" % (len(started) + 1)
            folder = tmp_path / name
            folder.mkdir()
            instance = ServerProcess(folder, "--cluster", redis_url or redis_server.url, "--instance-name", name,
                                     "--admin-socket", str(folder / "admin.sock"), *args, db_url=mysql_url)
            instance.admin_socket = str(folder / "admin.sock")
            instance.start()
            instance.wait_log(r".*cluster: listening to the other servers")
            started.append(instance)
        return started

    yield make
    for instance in started:
        instance.stop()


def messages(client, count, timeout=TIMEOUT):
    """The next ``count`` MSG lines as (id, sender, text)."""
    found = []
    while len(found) < count:
        match = MSG.match(client.next(timeout))
        if match:
            found.append((int(match.group(1)), match.group(2), match.group(3)))
    return found


def test_every_client_on_every_instance_sees_one_order(cluster):
    instances = cluster(3)
    names = ["alice", "bob", "carol"]
    senders = [account_client(instance, name) for instance, name in zip(instances, names)]
    readers = [account_client(instance, "reader%d" % n) for n, instance in enumerate(instances)]
    each = 60

    def say_all(client, name):
        client.send_raw(b"".join(b"SAY %s %d\n" % (name.encode(), n) for n in range(each)))

    threads = [threading.Thread(target=say_all, args=(client, name)) for client, name in zip(senders, names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = [messages(reader, each * 3) for reader in readers]
    assert seen[0] == seen[1] == seen[2]
    order = [message_id for message_id, _, _ in seen[0]]
    assert order == sorted(set(order)), "ids strictly increasing, each once"
    for name in names:  # each sender's own messages in the order it said them
        assert [text for _, sender, text in seen[0] if sender == name] == ["%s %d" % (name, n) for n in range(each)]
    # The senders see the same stream as everyone.
    for sender in senders:
        assert messages(sender, each * 3) == seen[0]


def test_a_client_that_moves_to_another_instance_gets_exactly_what_it_missed(cluster):
    first, second = cluster(2)
    alice = account_client(first, "alice")
    bob = account_client(second, "bob")
    alice.send("SAY before")
    [(last_seen, _, _)] = messages(bob, 1)
    bob.close()
    for n in range(5):
        alice.send("SAY missed %d" % n)
    missed = messages(alice, 6)[1:]
    bob = LineClient(first.port)
    bob.login("bob")
    bob.send("HISTORY 100 after=%d" % last_seen)
    found = [line for line in bob.lines_until(r"OK HISTORY") if line.startswith("MSG ")]
    assert [MSG.match(line).group(3) for line in found] == ["missed %d" % n for n in range(5)]
    assert [int(MSG.match(line).group(1)) for line in found] == [message_id for message_id, _, _ in missed]


def test_a_redis_outage_keeps_each_instance_chatting_and_heals_itself(cluster, redis_server):
    first, second = cluster(2)
    alice = account_client(first, "alice")
    carol = account_client(first, "carol")
    bob = account_client(second, "bob")
    alice.send("SAY before")
    assert [text for _, _, text in messages(bob, 1)] == ["before"]

    redis_server.stop()
    for instance in (first, second):
        instance.wait_log(r".*ERROR \[s[12]\] cluster: Redis unreachable")
    for n in range(5):
        alice.send("SAY during %d" % n)
    # Stored and delivered on the instance it was said on.
    assert [text for _, _, text in messages(carol, 6)][1:] == ["during %d" % n for n in range(5)]
    bob.send("SAY bob, alone")  # stored on the second, whose chain now has a gap
    assert [text for _, _, text in messages(bob, 6)] == ["during %d" % n for n in range(5)] + ["bob, alone"]

    redis_server.start()
    for instance in (first, second):
        instance.wait_log(r".*WARNING \[s[12]\] cluster: Redis is back")
    alice.send("SAY after")
    assert [text for _, _, text in messages(bob, 1)] == ["after"]
    assert [text for _, _, text in messages(carol, 2)] == ["bob, alone", "after"]
    for instance in (first, second):
        assert sum("Redis unreachable" in line for line in instance.log) == 1, "logged once"
    second.stop()  # its last words count what it heard and what it read back
    assert re.search(r"stopped; .*, [1-9]\d* links heard from the other servers, [1-9]\d* ranges read back",
                     "".join(second.log)), second.log[-3:]


def test_kill_9_of_an_instance_loses_nothing_it_acknowledged(cluster):
    first, second, third = cluster(3)
    alice = account_client(second, "alice")
    readers = [account_client(first, "bob"), account_client(third, "carol")]
    acknowledged = []
    for n in range(20):
        alice.send("SAY %d" % n)
        acknowledged.append(messages(alice, 1)[0])
    alice.send_raw(b"".join(b"SAY unacknowledged %d\n" % n for n in range(50)))
    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait()
    # alice's client moves to another instance; whatever of her burst was
    # stored before the kill is in everyone's history, and what a reader
    # saw live is that history's order.
    alice = LineClient(first.port)
    alice.login("alice")
    alice.send("SAY back on the first")
    for reader in readers:
        seen = []
        while not seen or seen[-1][2] != "back on the first":
            seen += messages(reader, 1)
        assert seen[:20] == acknowledged
        order = [message_id for message_id, _, _ in seen]
        assert order == sorted(set(order))
        reader.send("HISTORY 100")
        history = [MSG.match(line) for line in reader.lines_until(r"OK HISTORY") if line.startswith("MSG ")]
        assert [(int(m.group(1)), m.group(2), m.group(3)) for m in history] == seen


# -- presence and moderation, cluster-wide --------------------------------------

def in_step(speaker, *listeners):
    """Wait until everything the speaker's instance published so far has
    been taken in by the listeners' instances: Redis hands a subscriber
    what it publishes in the order it received it, so once a message said
    now reaches a listener, so has everything before it."""
    marker = "in step %f" % time.monotonic()
    speaker.send("SAY " + marker)
    for listener in listeners:
        listener.expect(r"MSG \d+ \S+ \S+ %s$" % re.escape(marker))

def test_who_shows_everyone_online_on_any_instance(cluster):
    first, second, third = cluster(3)
    alice = account_client(first, "alice")
    bob = account_client(second, "bob")
    alice.expect(r"JOIN bob$")  # bob's login, heard of on the first instance
    carol = account_client(third, "carol")
    in_step(alice, carol)
    carol.send("WHO")
    assert sorted(carol.expect(r"USERS \d+ ?(.*)").group(1).split()) == ["alice", "bob", "carol"]
    bob.send("QUIT")
    bob.expect_closed()
    alice.expect(r"LEAVE bob")
    carol.expect(r"LEAVE bob")
    carol.send("WHO")
    assert sorted(carol.expect(r"USERS \d+ ?(.*)").group(1).split()) == ["alice", "carol"]


def test_an_instance_killed_has_its_users_dropped_within_the_ping_timeout(cluster):
    instances = cluster(2, "--ping-timeout", "3")
    alice = account_client(instances[0], "alice")
    account_client(instances[1], "bob")
    alice.expect(r"JOIN bob$")
    instances[1].proc.send_signal(signal.SIGKILL)
    instances[1].proc.wait()
    assert alice.expect(r"LEAVE bob (.*)").group(1) == "server gone"
    instances[0].wait_log(r".*WARNING \[s1\] cluster: s2 silent for \ds; its 1 account online are offline")
    alice.send("WHO")
    assert alice.expect(r"USERS \d+ ?(.*)").group(1).split() == ["alice"]


def admin(instance, *command):
    import sys
    return subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", instance.admin_socket]
                          + list(command), capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def operated(cluster):
    """Two instances with tight login and registration limits, loopback not exempt."""
    return cluster(2, "--login-failures", "2", "--registrations", "3", "--exempt", "")


def test_a_kick_on_one_instance_holds_on_every_instance(operated):
    first, second = operated
    bob = account_client(second, "bob")
    answer = admin(first, "kick", "bob", "60", "calm down")
    assert answer.returncode == 0, answer.stderr
    assert bob.expect(r"KICKED (\d+) (.*)").groups() == ("60", "calm down")
    bob.expect_closed()
    for instance in (first, second):
        again = instance.client()
        again.send("LOGIN bob password1")
        assert again.expect(r"ERR 423 \d+ (.*)").group(1).startswith("kicked, try again")
    assert admin(first, "unkick", "bob").returncode == 0
    alice = account_client(first, "alice")
    in_step(alice, account_client(second, "carol"))
    second.client().login("bob")  # the unkick holds there too


def test_a_ban_and_the_operators_say_reach_every_instance(operated):
    first, second = operated
    alice = account_client(second, "alice")
    bob = account_client(second, "bob")
    in_step(alice, account_client(first, "carol"))
    stats = admin(first, "stats").stdout
    assert "instance s1, Redis up, 1 other server: s2" in stats, stats
    who = admin(first, "who").stdout
    assert "alice on s2" in who and "bob on s2" in who and "1 online here (s1), 3 in the cluster" in who, who
    assert admin(first, "say", "maintenance at noon").returncode == 0
    assert alice.expect(r"INFO (.*)").group(1) == "maintenance at noon"
    assert admin(first, "ban", "bob", "spam").returncode == 0
    assert bob.expect(r"BANNED (.*)").group(1) == "spam"
    bob.expect_closed()
    alice.expect(r"LEAVE bob")


def test_failed_logins_are_counted_across_instances(operated):
    first, second = operated
    account_client(first, "alice").close()
    bob, carol = account_client(first, "bob"), account_client(second, "carol")
    guesser = first.client()
    for _ in range(2):
        guesser.send("LOGIN alice wrong-guess")
        guesser.expect(r"ERR 401")
    in_step(bob, carol)
    # The other instance heard of both failures: the third guess waits,
    # and so does the right password for a while.
    elsewhere = second.client()
    elsewhere.send("LOGIN alice wrong-guess")
    assert elsewhere.expect(r"ERR (\d+)").group(1) == "429", "".join(second.log + first.log)


def test_registrations_are_counted_across_instances(operated):
    first, second = operated
    alice, bob = account_client(first, "alice"), account_client(second, "bob")
    account_client(first, "carol")
    in_step(alice, bob)
    newcomer = second.client()
    newcomer.send("REGISTER dave password1")
    assert newcomer.expect(r"ERR (\d+)").group(1) == "429"


def test_rooms_joined_and_changed_on_one_instance_work_on_another(cluster):
    first, second = cluster(2)
    alice = account_client(first, "alice")
    bob = account_client(second, "bob")
    for client in (alice, bob):
        client.send("CAP rooms")
        client.expect(r"OK CAP")
    alice.send("JOIN #club")
    alice.expect(r"OK JOIN #club")
    bob.send("JOIN #club")
    bob.expect(r"OK JOIN #club")
    alice.expect(r"JOINED #club bob")
    alice.send("RSAY #club hello club")
    assert bob.expect(r"RMSG \d+ \S+ #club (\S+) (.*)").groups() == ("alice", "hello club")
    bob.send("TOPIC #club board games")
    assert alice.expect(r"TOPIC #club (.*)").group(1).endswith("board games")
    alice.send("PART #club bye")
    assert bob.expect(r"PARTED #club alice (.*)").group(1) == "bye"


def test_instances_join_and_leave_without_restarting_the_others(cluster):
    first, second = cluster(2)
    alice = account_client(first, "alice")
    alice.send("SAY before the third")
    messages(alice, 1)
    [third] = cluster(1)[2:]
    third.wait_log(r".*cluster: s[12] joined")
    carol = account_client(third, "carol")
    alice.expect(r"JOIN carol$")
    carol.send("WHO")
    assert sorted(carol.expect(r"USERS \d+ ?(.*)").group(1).split()) == ["alice", "carol"]
    alice.send("SAY hello third")
    assert [text for _, _, text in messages(carol, 1)] == ["hello third"]
    third.clients.remove(carol)  # so that the server, not the test, ends her connection
    third.stop()  # an orderly stop: the others hear of it at once
    assert alice.expect(r"LEAVE carol (.*)").group(1) == "server shutting down"
    carol.close()
    first.wait_log(r".*WARNING \[s[12]\] cluster: s3 left the cluster")
    second.wait_log(r".*WARNING \[s[12]\] cluster: s3 left the cluster")


def test_irc_and_v1_users_on_different_instances_talk_in_one_room(cluster):
    from test_ircd import IrcClient
    instances = cluster(2, "--irc-port", "0")
    irc_port = int(re.search(r"IRC port [^ ]*:(\d+)", "".join(instances[0].log)).group(1))
    account_client(instances[0], "dave").close()
    alice = account_client(instances[1], "alice")
    dave = IrcClient(irc_port)
    instances[0].clients.append(dave)
    dave.register_connection("dave", password="dave:password1")
    alice.expect(r"JOIN dave$")
    dave.send("PRIVMSG #general :hello from irc")
    assert alice.expect(r"MSG \d+ \S+ (\S+) (.*)").groups() == ("dave", "hello from irc")
    alice.send("SAY hello from v1")
    assert dave.expect(r"PRIVMSG #general :(.*)").group(1) == "hello from v1"
    dave.send("WHOIS alice")
    assert dave.expect(r"312 dave alice (\S+)").group(1) == "s2"
    dave.send("ISON alice nobody")
    assert dave.expect(r"303 dave :?(.*)").group(1) == "alice"


def test_a_cluster_on_sqlite_or_without_a_redis_url_is_refused_at_start(tmp_path):
    from test_admin import failed_start
    status, log = failed_start(tmp_path, "--cluster", "redis://127.0.0.1:6379/0")
    assert status == 1 and "--cluster needs a database every server of the cluster can reach" in log
    status, log = failed_start(tmp_path, "--cluster", "http://user:secret@example.org/")
    assert status == 1 and "--cluster takes a redis://" in log and "secret" not in log


def test_without_cluster_redis_is_never_imported(tmp_path):
    import sys
    script = "import sys, sae_server; sae_server.parse_args([]); print('redis' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.stdout.strip() == "False", done.stderr


def test_a_cluster_over_redis_with_tls_and_a_password(tmp_path, cluster):
    import trustme
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "redis.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    redis_server = RedisServer(tmp_path)
    tls_port = free_port()
    redis_server.start("--tls-port", str(tls_port), "--tls-cert-file", str(tmp_path / "redis.pem"),
                       "--tls-key-file", str(tmp_path / "redis.pem"), "--tls-auth-clients", "no",
                       "--requirepass", "redis-secret")
    url = "rediss://:redis-secret@127.0.0.1:%d/0?ssl_ca_certs=%s" % (tls_port, tmp_path / "ca.pem")
    instances = []
    try:
        instances = cluster(2, redis_url=url)
        alice = account_client(instances[0], "alice")
        bob = account_client(instances[1], "bob")
        alice.send("SAY over TLS")
        assert [text for _, _, text in messages(bob, 1)] == ["over TLS"]
        for instance in instances:
            assert "redis-secret" not in "".join(instance.log)
    finally:
        for instance in instances:
            instance.stop()  # before their Redis
        redis_server.stop()


def test_a_server_knows_its_own_publications_by_their_first_bytes():
    from sae_cluster import encode, link_event, own_prefix
    for instance in ("s1", 'pi "a"', "élève:12345"):
        mine = own_prefix(instance)
        assert encode(instance, "beat", c=3).encode().startswith(mine)
        assert link_event(instance, said(1, 3)).encode().startswith(mine)
        assert not encode(instance + "x", "beat", c=3).encode().startswith(mine)


def test_a_link_carries_what_only_the_live_delivery_of_a_message_has():
    from sae_cluster import decode, event_link, link_event
    plain = Message(1, "t", "alice", None, "hi", "#general")
    live = LiveMessage(Message(2, "t", "alice", "bob", "psst"), notice=True, client_tags={"+draft/reply": "1"})
    link = event_link(decode(link_event("s1", Link(0, 2, [(plain, 1), (live, None)]))))
    [(first, room_id), (second, no_room)] = link.messages
    assert first.__class__ is Message and first == plain and room_id == 1
    assert second.__class__ is LiveMessage and second == live and no_room is None
    assert second.notice and second.client_tags == {"+draft/reply": "1"}


def test_a_link_keeps_only_client_tags_a_server_could_have_relayed():
    # Whatever a publication says, what reaches the formatter is client
    # tags (the "+" keys a client may send) with string values: a key with
    # a space or a CR LF would otherwise break the IRC line, or inject one.
    import json

    from sae_cluster import decode, event_link, link_event
    live = LiveMessage(Message(2, "t", "alice", "bob", "psst"), notice=False, client_tags={})
    event = json.loads(link_event("s1", Link(0, 2, [(live, None)])))
    event["m"][0][-1]["tags"] = {"+draft/reply": "1", "+bad key": "x", "+x\r\nQUIT": "", "time": "server's",
                                 "+n": 5, "+ok-too": ""}
    [(message, _)] = event_link(decode(json.dumps(event))).messages
    assert message.client_tags == {"+draft/reply": "1", "+ok-too": ""}
    event["m"][0][-1]["tags"] = ["+draft/reply", "1"]
    [(message, _)] = event_link(decode(json.dumps(event))).messages
    assert message.client_tags is None


def test_a_private_message_reaches_its_recipient_on_another_instance(cluster):
    first, second = cluster(2)
    alice = account_client(first, "alice")
    bob = account_client(second, "bob")
    alice.send("TELL bob just between us")
    assert bob.expect(r"PRIV \d+ \S+ (\S+) (\S+) (.*)").groups() == ("alice", "bob", "just between us")
    assert alice.expect(r"PRIV \d+ \S+ (\S+) (\S+) (.*)").groups() == ("alice", "bob", "just between us")
    carol = account_client(second, "carol")
    carol.send("SAY anyone?")
    carol.expect(r"MSG \d+ \S+ carol anyone\?")
    assert not any(line.startswith("PRIV") for line in carol.seen)


def irc_on_two_instances(cluster, caps):
    """Two instances with IRC listeners, dave an IRC client of the first
    and erin of the second, with ``caps``: (instances, dave, erin)."""
    from test_ircd import IrcClient
    instances, clients = cluster(2, "--irc-port", "0"), []
    for instance, nick in zip(instances, ("dave", "erin")):
        account_client(instance, nick).close()
    for instance, nick in zip(instances, ("dave", "erin")):
        irc_port = int(re.search(r"IRC port [^ ]*:(\d+)", "".join(instance.log)).group(1))
        client = IrcClient(irc_port)
        instance.clients.append(client)
        client.register_connection(nick, caps=caps, password="%s:password1" % nick)
        clients.append(client)
    return instances, clients[0], clients[1]


def test_a_typing_notification_crosses_instances(cluster):
    _, dave, erin = irc_on_two_instances(cluster, ["message-tags"])
    dave.send("@+typing=active TAGMSG #general")
    erin.expect(r"@\S*\+typing=active\S* :dave!\S+ TAGMSG #general", raw=True)
    dave.send("@+typing=paused TAGMSG erin")
    erin.expect(r"@\S*\+typing=paused\S* :dave!\S+ TAGMSG erin", raw=True)


def test_a_guest_that_registers_on_one_instance_is_an_account_on_another(cluster):
    # s2 starts after the guest's account was made, so it knows it as a
    # guest's; it hears the registration from s1, and says it with ACCOUNT.
    from test_ircd import IrcClient, tags_of

    def irc_port(instance):
        return int(re.search(r"IRC port [^ ]*:(\d+)", "".join(instance.log)).group(1))

    [s1] = cluster(1, "--irc-port", "0", "--irc-guests")
    guest = IrcClient(irc_port(s1))
    s1.clients.append(guest)
    guest.register_connection("Visitor")
    guest.expect(r"366 Visitor #general ")
    s2 = cluster(1, "--irc-port", "0", "--irc-guests")[1]
    account_client(s2, "erin").close()
    erin = IrcClient(irc_port(s2))
    s2.clients.append(erin)
    erin.register_connection("erin", caps=["account-notify", "account-tag", "message-tags"],
                             password="erin:password1")
    erin.expect(r"366 erin #general ")
    guest.send("PRIVMSG #general :still a guest")
    said = erin.expect(r".*PRIVMSG #general :still a guest", raw=True).group(0)
    assert "account" not in tags_of(said)
    guest.send("PRIVMSG NickServ :REGISTER my-own-password")
    guest.expect(r"900 Visitor ")
    erin.expect(r":Visitor!Visitor@\S+ ACCOUNT Visitor$", raw=True)
    guest.send("PRIVMSG #general :an account now")
    said = erin.expect(r".*PRIVMSG #general :an account now", raw=True).group(0)
    assert tags_of(said)["account"] == "Visitor"


def test_a_notice_and_client_tags_cross_instances_as_said(cluster):
    """A NOTICE said on one instance is a NOTICE to the IRC clients of the
    others too (a bot there must not answer it), in a channel and in
    private, with its client-only tags for the clients with message-tags;
    a v1 client there gets it as any message. A multiline message keeps
    its lines."""
    from test_ircd import strip_prefix, tags_of
    instances, dave, erin = irc_on_two_instances(cluster, ["message-tags", "batch", "draft/multiline"])
    frank = account_client(instances[1], "frank")
    dave.send("@+draft/reply=1 NOTICE #general :build passed")
    line = erin.expect(r".* :dave!\S+ (PRIVMSG|NOTICE) #general :build passed$", raw=True).group(0)
    assert " NOTICE #general " in line and tags_of(line)["+draft/reply"] == "1"
    frank.expect(r"MSG \d+ \S+ dave build passed$")
    dave.send("NOTICE erin :just you")
    assert erin.expect(r".* :dave!\S+ (PRIVMSG|NOTICE) erin :just you$", raw=True).group(1) == "NOTICE"
    dave.send("PRIVMSG #general :a plain one")
    line = erin.expect(r".* :dave!\S+ (PRIVMSG|NOTICE) #general :a plain one$", raw=True).group(0)
    assert " PRIVMSG #general " in line and "+draft" not in line
    dave.send("BATCH +m draft/multiline #general")
    dave.send("@batch=m PRIVMSG #general :first")
    dave.send("@batch=m PRIVMSG #general :second")
    dave.send("BATCH -m")
    erin.expect(r".* :dave!\S+ BATCH \+\S+ draft/multiline #general$", raw=True)
    assert [strip_prefix(erin.next()) for _ in range(2)] == ["PRIVMSG #general :first", "PRIVMSG #general :second"]
    frank.expect(r"MSG \d+ \S+ dave first \u21b5 second$")


def test_a_ban_and_its_lifting_on_one_instance_hold_for_logins_on_another(cluster):
    # Each server remembers the bans it heard of for a while (a LOGIN may
    # have read its account just before the ban was committed elsewhere):
    # an unban must be heard of too, or the account stays locked out there.
    first, second = cluster(2)
    account_client(first, "alice")
    bob = account_client(second, "bob")
    bob.close()
    answer = admin(first, "ban", "bob", "spam")
    assert answer.returncode == 0, answer.stderr
    late = second.client()
    late.send("LOGIN bob password1")
    assert late.expect(r"ERR (\d+) (.*)").groups() == ("403", "spam")
    answer = admin(first, "unban", "bob")
    assert answer.returncode == 0, answer.stderr
    in_step(account_client(first, "carol"), account_client(second, "dave"))
    second.client().login("bob")  # the unban holds there too
