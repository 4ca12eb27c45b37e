"""Several sae-server instances, one chat: what they tell each other.

With ``--cluster redis://...`` and a MariaDB database that they share,
several servers serve the same accounts, rooms and history. MariaDB is the
source of truth; Redis only carries news between the servers (pub/sub, one
channel per database), and nothing is lost when it carries nothing: every
message can be read back from the database.

One order. A server in a cluster stores each batch of messages as a link of
a chain (``Store.append_chained``, see db/mysql/0003_message_chain.sql): a
batch is the whole range of ids (previous, last], committed after every id
up to ``previous``. Every server delivers links strictly in chain order
(``Sequencer``), whichever way each came: its own batches from its storage
thread, the others' from Redis, and the ranges nobody told it about (Redis
was down, or a publication is still on its way) read back from the database
(``Store.chain_since``). So every client on every server sees a room's
messages in the order of their ids, each once, and ``HISTORY ... after=<id>``
on any server gives exactly what came after.

Everything else a server says (who came online, a kick, a ban, a room that
changed) is an event on the same channel; a server that missed some (Redis
was down) asks the others for their rosters again, and what is stored (bans,
rooms, memberships) is read from the database, not from the event.

This module holds the parts with no sockets of their own (the Sequencer, the
events' wire form) and ``RedisLink``, the two threads that talk to Redis and
hand what they hear to the loop, as the storage thread does. redis-py is
imported only here, and only with ``--cluster``.
"""

import json
import logging
import queue
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from sae_db import LiveMessage, Message
from sae_irc import relayed_tags

log = logging.getLogger("sae_server")

CONNECT_TIMEOUT = 2.0  # seconds: a dead Redis must not hold a thread long
BACKOFF_FIRST = 0.2    # seconds before reconnecting, doubled after each failure
BACKOFF_MAX = 5.0
# How long a link may wait for the one before it to come over Redis before
# that range is read from the database instead (while Redis is up; while it
# is down, at once). Publications take well under a millisecond on a LAN.
GAP_GRACE = 0.05
# How many messages one read of a missed range brings back, at most; a longer
# gap is read in several.
GAP_READ_MAX = 1000
# How often a server says it is alive; one not heard of for the ping timeout
# is gone, and its users with it.
BEAT_INTERVAL = 5.0


class Link(NamedTuple):
    """One link of the chain: every stored message with an id in
    (previous, last], in id order, as (Message, room id or None). ``batch``
    is the server's own batch that stored them (its senders wait for their
    echo), or None for messages some other server stored."""
    previous: int
    last: int
    messages: List[Tuple[Message, Optional[int]]]
    batch: object = None


class Sequencer:
    """Links in, links out in chain order, each id once.

    ``last`` is the highest id delivered; a link whose ``previous`` is
    ``last`` goes out, and then the ones it unblocks. A link that starts
    further on waits, and ``gap()`` names the range missing before it. A
    link that overlaps what was delivered (a range read from the database
    also came over Redis) keeps only its new messages."""

    def __init__(self, last: int):
        self.last = last
        self.waiting: Dict[int, Link] = {}  # previous -> Link

    def add(self, link: Link) -> None:
        if link.last <= self.last:
            return  # already delivered
        if link.previous < self.last:
            link = link._replace(previous=self.last,
                                 messages=[entry for entry in link.messages if entry[0].id > self.last])
        known = self.waiting.get(link.previous)
        if known is None or (known.batch is None and link.last >= known.last):
            self.waiting[link.previous] = link

    def ready(self):
        """The links that can go out now, in order."""
        while True:
            link = self.waiting.pop(self.last, None)
            if link is not None:
                self.last = link.last
                yield link
                continue
            # Links that began before what went out (a read from the
            # database overtook them): their news, if any, goes on from here.
            overtaken = [previous for previous in self.waiting if previous < self.last]
            if not overtaken:
                return
            for previous in overtaken:
                self.add(self.waiting.pop(previous))

    def gap(self) -> Optional[Tuple[int, int]]:
        """(after, upto): the ids that must be read before anything waiting
        can go out, or None when nothing waits."""
        if not self.waiting:
            return None
        return self.last, min(self.waiting)


class Peer:
    """Another server of the cluster, as this one knows it: when it was
    last heard of, and the accounts online on it."""

    def __init__(self, heard_at: float):
        self.heard_at = heard_at
        self.accounts: Dict[str, str] = {}  # name_key -> name


class Someone(NamedTuple):
    """An account known by its name only: one online on another server."""
    name: str


# -- the events on the wire ----------------------------------------------------
# One JSON object per publication: "i" the instance that sent it, "t" what it
# is. Messages travel as lists, the fields of Message then the room id (and,
# for a LiveMessage, an object: see message_fields).

def encode(instance: str, kind: str, **fields) -> str:
    # "i" first: a server knows its own publications by their first bytes
    # (own_prefix), without decoding them.
    return json.dumps(dict(i=instance, t=kind, **fields), separators=(",", ":"), ensure_ascii=False)


def own_prefix(instance: str) -> bytes:
    """How every publication of ``instance`` begins."""
    return ('{"i":%s,' % json.dumps(instance, ensure_ascii=False)).encode("utf-8")


def link_event(instance: str, link: Link) -> str:
    return encode(instance, "said", p=link.previous, l=link.last,
                  m=[message_fields(message, room_id) for message, room_id in link.messages])


def message_fields(message: Message, room_id: Optional[int]) -> list:
    """A message on the wire: its fields, its room id, and for a
    LiveMessage what only its live delivery has (sent as a NOTICE, its
    sender's client tags), so that the other servers' IRC clients get it
    as this server's do."""
    fields = list(message) + [room_id]
    if message.__class__ is LiveMessage:
        fields.append({"notice": message.notice, "tags": message.client_tags or {}})
    return fields


def decode(payload) -> Optional[dict]:
    """The event in a publication, or None for what no server sent."""
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("i"), str) or not isinstance(event.get("t"), str):
        return None
    return event


def event_link(event: dict) -> Link:
    """The Link a "said" event carries (ValueError/TypeError/KeyError if malformed)."""
    messages = []
    for fields in event["m"]:
        live = fields.pop() if fields and isinstance(fields[-1], dict) else None
        *message, room_id = fields
        message = Message(*message)
        if live is not None:
            message = LiveMessage(message, bool(live.get("notice")), relayed_tags(live.get("tags")))
        messages.append((message, room_id))
    return Link(int(event["p"]), int(event["l"]), messages)


def channel_name(database_url: str) -> str:
    """The Redis channel of the cluster that shares this database: Redis's
    pub/sub ignores its database numbers, so the channel is named after
    the MariaDB server and database instead."""
    parts = urlsplit(database_url)
    return "sae-chat:%s:%s/%s" % (parts.hostname or "localhost", parts.port or 3306, parts.path.strip("/"))


def cluster_problem(url: str) -> Optional[str]:
    """Why ``--cluster url`` cannot work, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "--cluster takes a redis:// (or rediss://, or unix://) URL, not %r" % describe(url)
    try:
        import redis  # noqa: F401
    except ImportError:
        return "--cluster needs the redis package: pip install 'sae-chat[cluster]'"
    return None


def describe(url: str) -> str:
    """The URL without its password, for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = "%s:***@%s" % (parts.username or "", parts.hostname or "")
    if parts.port:
        netloc += ":%d" % parts.port
    return parts._replace(netloc=netloc).geturl()


class RedisLink:
    """The server's two threads to Redis. ``publish`` queues an event (a
    str) and returns at once; a publisher thread sends them in order. A
    subscriber thread listens on the channel and calls ``hand_over(kind,
    payload)`` for each thing heard: ("event", dict) from another server,
    ("up", None) each time the subscription is (re)made, ("down", reason)
    each time Redis is lost. ``hand_over`` must be safe from any thread
    (the server's queues the item and wakes its loop).

    While Redis is down, publications are dropped, not kept: whatever they
    said, the other servers read from the database when they hear of the
    next link, or when their own subscription comes back."""

    def __init__(self, url: str, channel: str, instance: str, hand_over):
        import redis
        self._redis = redis
        self.url = url
        self.channel = channel
        self.instance = instance
        self.hand_over = hand_over
        self.outgoing: "queue.SimpleQueue[Optional[str]]" = queue.SimpleQueue()
        self.stopping = threading.Event()
        # Set by the listener when its subscription is made again: Redis is
        # back, and the publisher stops waiting out its back-off.
        self.back = threading.Event()
        self.threads = [threading.Thread(target=self._publish, name="sae-cluster-publish", daemon=True),
                        threading.Thread(target=self._listen, name="sae-cluster-listen", daemon=True)]

    def _connect(self):
        return self._redis.Redis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT,
                                          socket_timeout=CONNECT_TIMEOUT * 2, socket_keepalive=True,
                                          health_check_interval=BEAT_INTERVAL)

    def start(self):
        for thread in self.threads:
            thread.start()

    def publish(self, payload) -> None:
        """Queue a publication: a str, or a function that makes it, called
        on the publisher thread (encoding a link is not the loop's work)."""
        self.outgoing.put(payload)

    def close(self):
        self.stopping.set()
        self.outgoing.put(None)
        for thread in self.threads:
            thread.join(CONNECT_TIMEOUT * 3)

    def _publish(self):
        client = self._connect()
        retry_at = 0.0
        backoff = 0.0
        while True:
            payload = self.outgoing.get()
            if payload is None:
                break
            if self.back.is_set():
                self.back.clear()
                retry_at = backoff = 0.0
            if time.monotonic() < retry_at:
                continue  # Redis is down: dropped, the database has it
            try:
                client.publish(self.channel, payload() if callable(payload) else payload)
                backoff = 0.0
            except self._redis.RedisError:
                backoff = min(max(backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                retry_at = time.monotonic() + backoff
        client.close()

    def _listen(self):
        mine = own_prefix(self.instance)
        backoff = 0.0
        while not self.stopping.is_set():
            client = self._connect()
            subscription = client.pubsub()
            try:
                subscription.subscribe(self.channel)
                while not self.stopping.is_set():
                    heard = subscription.get_message(timeout=1.0)
                    if heard is None:
                        continue
                    if heard["type"] == "subscribe":
                        backoff = 0.0
                        self.back.set()
                        self.hand_over("up", None)
                    elif heard["type"] == "message" and not heard["data"].startswith(mine):
                        event = decode(heard["data"])
                        if event is not None and event["i"] != self.instance:
                            if event["t"] == "said":
                                # Parsed here, off the loop; None if malformed.
                                try:
                                    event["link"] = event_link(event)
                                except (KeyError, TypeError, ValueError):
                                    event["link"] = None
                            self.hand_over("event", event)
            except self._redis.RedisError as error:
                self.hand_over("down", str(error) or error.__class__.__name__)
                backoff = min(max(backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                self.stopping.wait(backoff)
            finally:
                try:
                    subscription.close()
                    client.close()
                except Exception:
                    pass
