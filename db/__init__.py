"""Storage for sae-chat: accounts, bans, rooms and the message history.

Installed as the package ``sae_db`` (the folder is ``db/`` in the source
tree). The server talks to storage only through ``Store``; ``open_store``
picks the backend from a URL:

    sqlite:///sae.db           (the default: sae.db in the working directory)
    sqlite:////var/lib/sae/sae.db   (an absolute path: four slashes)
    mysql://user:password@host:3306/name

A Store is used by one thread at a time: the server's storage thread, or,
for a store whose calls never wait for long (``Store.on_loop``: SQLite), the
event loop itself. The one exception: a store with ``concurrent_batches``
above 1 (MariaDB) takes that many ``append_messages`` calls at once, on as
many threads, each on a connection of its own. Each backend keeps its
schema, one SQL file per migration, in a folder named after its dialect;
``schema_version`` records which have been applied.

Timestamps cross this interface as the protocol's text form,
``2026-11-24T13:05:01.123Z`` (UTC, milliseconds).
"""

import re
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit


class StorageUnavailable(Exception):
    """The database cannot be reached or refused the operation for a reason
    that may pass (connection lost, server restarting, disk full). Callers
    answer ERR 503 and try again later; nothing was written."""


class Account(NamedTuple):
    id: int
    name: str
    password_hash: str
    created_at: str
    ban_reason: Optional[str] = None  # None when not banned

    @property
    def banned(self) -> bool:
        return self.ban_reason is not None


class NewMessage(NamedTuple):
    """A message accepted by the server, not yet stored: a private message
    when ``recipient`` is set, else a message in the room ``room_id``. A room
    message without a room_id (what callers from before rooms build) goes to
    the default room, DEFAULT_ROOM."""
    sender_id: int
    sender: str
    recipient: Optional[str]  # an account name, or None for a room
    body: str
    created_at: str
    room_id: Optional[int] = None
    # Sent as an IRC NOTICE: delivered live as one, stored as any message.
    notice: bool = False
    # The IRC sender's client-only tags (+draft/reply=...): relayed live
    # with the message, not stored.
    client_tags: Optional[Dict[str, str]] = None


class Message(NamedTuple):
    """A stored message."""
    id: int
    created_at: str
    sender: str
    recipient: Optional[str]  # the account's name as registered, None for a room message
    body: str
    room: Optional[str] = None  # the room's name as created, None for a private message


class LiveMessage(Message):
    """A stored message on its way to the clients online, with what the
    store does not keep of it: ``notice`` (an IRC client sent it as a
    NOTICE) and ``client_tags`` (its IRC sender's client-only tags). Only
    messages with either are of this class, so that the server tells them
    apart from every other by their class alone; history, and a range read
    back from the database, give them as plain Messages."""

    notice = False
    client_tags: Optional[Dict[str, str]] = None

    def __new__(cls, message: Message, notice: bool = False, client_tags: Optional[Dict[str, str]] = None):
        live = Message.__new__(cls, *message)
        live.notice = notice
        live.client_tags = client_tags or None
        return live


class RoomInfo(NamedTuple):
    """A room as stored. ``topic`` is "" until someone sets one; then
    ``topic_set_by`` (an account name) and ``topic_set_at`` say who and when."""
    id: int
    name: str
    topic: str
    topic_set_by: Optional[str]
    topic_set_at: Optional[str]
    created_at: str


# The room every account starts in, and the one protocol v1's SAY, MSG and
# HISTORY mean. Migration 0002 creates it; the server makes sure it exists.
DEFAULT_ROOM = "#general"

# "#" and 1 to 32 of A-Z a-z 0-9 _ . - (the same letters as account names,
# so that a room name is safe in a protocol line and in a log).
ROOM_NAME_RE = re.compile(r"#[A-Za-z0-9_.-]{1,32}\Z")


def is_room_name(name: str) -> bool:
    return ROOM_NAME_RE.match(name) is not None


# A-Z to a-z and nothing else.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(name: str) -> str:
    """The form in which account names are compared: A-Z folded to a-z,
    nothing else. str.lower() would fold look-alikes into ASCII (the Kelvin
    sign U+212A becomes "k"), and a name that is no account's would reach
    kate's. Both backends then compare name_key byte for byte (SQLite's
    default collation, MariaDB's utf8mb4_bin), so they fold nothing more."""
    return name.translate(_ASCII_LOWER)


def room_key(name: str) -> str:
    """The form in which room names are compared, as name_key for accounts.
    Raises ValueError for what is not a room name: the store keeps nothing
    that no client could name."""
    if not is_room_name(name):
        raise ValueError("not a room name: %r" % (name,))
    return name.translate(_ASCII_LOWER)


class Store:
    """What the server needs from a database. Every method may raise
    StorageUnavailable.

    Rooms. A room is a row with a name unique case-insensitively among live
    rooms, a topic and members (accounts: membership is stored, it does not
    depend on a connection). Every message belongs either to one room
    (``room_id``) or to one private conversation (sender and recipient).
    Message ids are one sequence across all rooms and conversations, never
    reused, so ``missed(account, after)`` can catch up on everything with
    one id.

    Deleting a room (``delete_room``) takes it off every account and frees
    its name (a new room of that name can be created), and either removes
    its history or keeps it: kept, the messages stay stored under the old
    room id, readable with ``room_history(..., room_id=old_id)`` by whoever
    holds that id (an operator), but no member or name leads to them any
    more. See the comments of migration 0002."""

    # True when every call is as short as a send(): the server's loop then
    # makes the calls itself instead of handing them to its storage thread.
    # SQLite's are (a local file, commits that go to the page cache and are
    # written back later); a database across a network is not.
    on_loop = False

    # Called (from any thread) when batches_held() has turned False; the
    # server sets it to what wakes its loop.
    on_batches_free = None

    def batches_held(self) -> bool:
        """Whether the next batch of messages should wait: the SQLite store
        asks for a moment now and then to start its WAL over (db/sqlite.py).
        Asked by the loop before each batch; on_batches_free() says when."""
        return False

    # -- accounts --

    def create_account(self, name: str, password_hash: str, created_at: str,
                       room_id: Optional[int] = None) -> Optional[Account]:
        """The new account, or None if the name is taken (case-insensitively).
        With ``room_id``, the account is a member of that room from the same
        transaction on (unless the room has been deleted meanwhile)."""
        raise NotImplementedError

    def find_account(self, name: str) -> Optional[Account]:
        raise NotImplementedError

    # -- rooms --

    def ensure_room(self, name: str, created_at: str) -> RoomInfo:
        """The live room of that name (case-insensitively), created with
        this spelling if there is none. Raises ValueError for a name that is
        not a room name."""
        raise NotImplementedError

    def find_room(self, name: str) -> Optional[RoomInfo]:
        """The live room of that name, case-insensitively (None for a name
        that is no room's or is not a room name at all)."""
        raise NotImplementedError

    def list_rooms(self) -> List[Tuple[RoomInfo, int]]:
        """Every live room with its number of members, by name (case-insensitively)."""
        raise NotImplementedError

    def count_rooms(self) -> int:
        """How many live rooms there are."""
        raise NotImplementedError

    def join_room(self, account_id: int, room_id: int, at: str) -> bool:
        """Make the account a member of the room; False if it already was,
        or if the room has been deleted."""
        raise NotImplementedError

    def leave_room(self, account_id: int, room_id: int) -> bool:
        """False if the account was not a member."""
        raise NotImplementedError

    def rooms_of(self, account_id: int) -> List[RoomInfo]:
        """The rooms the account is in, in the order it joined them."""
        raise NotImplementedError

    def count_memberships(self, account_id: int) -> int:
        """How many rooms the account is in."""
        raise NotImplementedError

    def room_members(self, room_id: int) -> List[str]:
        """The members' account names as registered, sorted case-insensitively."""
        raise NotImplementedError

    def set_topic(self, room_id: int, text: str, by: str, at: str) -> Optional[RoomInfo]:
        """Set the topic ("" clears it, and who cleared it is kept); the room
        as it is now, or None if it is not a live room."""
        raise NotImplementedError

    def delete_room(self, room_id: int, keep_history: bool) -> bool:
        """Delete the room: no account is in it any more and its name is
        free. With ``keep_history`` its messages stay stored (by room id
        only); without, they are removed with it. A room deleted with its
        history kept can be deleted again to remove that history. False if
        there was nothing to delete."""
        raise NotImplementedError

    # -- messages --

    def append_messages(self, batch: Sequence[NewMessage]) -> List[Optional[Message]]:
        """Store the batch in one transaction, in order. Returns, for each
        message, its stored form (ids increasing in batch order, ``room``
        filled in for room messages), or None when it is not stored: a
        private message to an account that does not exist, or a message to
        a room that does not exist any more.

        A store with ``concurrent_batches`` above 1 also takes
        ``first_id``, the first of ``len(batch)`` ids from reserve_ids:
        its messages get ids from there on, in order (those of the messages
        not stored are left unused)."""
        raise NotImplementedError

    # How many append_messages calls may run at once (on as many threads),
    # each with ids reserved beforehand, in the order the batches are made,
    # so that ids still follow that order whichever INSERT ends first. Only
    # for a server alone on its database: the ids are this store's to give.
    concurrent_batches = 1

    def reserve_ids(self, count: int) -> int:
        """The first of ``count`` message ids no one else is given (by this
        store): above every id stored or handed out before. Never blocks;
        any thread may call it."""
        raise NotImplementedError

    def last_message_id(self) -> int:
        """The highest id stored, 0 if none."""
        raise NotImplementedError

    # A cluster of servers on one database (sae_cluster) stores and reads
    # messages as a chain of batches; only a database several servers can
    # reach has these (see mysql/0003_message_chain.sql).
    chained = False

    def append_chained(self, batch: Sequence[NewMessage]) -> Tuple[int, int, List[Optional[Message]]]:
        """append_messages, as a link of the chain: (previous, last,
        stored), where the batch's ids are all those in (previous, last],
        committed after every id up to ``previous`` and before any after
        ``last``. ``previous == last`` when nothing was stored."""
        raise NotImplementedError

    def chain_last(self) -> int:
        """The highest id of the chain: every id up to it is committed."""
        raise NotImplementedError

    def chain_since(self, after: int, count: int) -> Tuple[int, List[Tuple[Message, Optional[int]]]]:
        """(upto, [(message, room id or None)]): every stored message with
        an id in (after, upto], oldest first; ``upto`` is the chain's last
        id, or the last message's when ``count`` of them came back."""
        raise NotImplementedError

    def room_history(self, count: int, before: Optional[int] = None,
                     after: Optional[int] = None, room_id: Optional[int] = None) -> List[Message]:
        """A room's messages, oldest first: the last ``count`` (before
        ``before`` if given), or the first ``count`` after ``after``.
        ``room_id`` None is the live DEFAULT_ROOM."""
        raise NotImplementedError

    def conversation_history(self, account_id: int, peer_id: int, count: int, before: Optional[int] = None,
                             after: Optional[int] = None) -> List[Message]:
        """The private messages between two accounts, both ways, oldest
        first, chosen as room_history chooses them, as ``account_id`` may
        read them: none from before its start_private_history."""
        raise NotImplementedError

    def missed(self, account_id: int, after: int, count: int) -> List[Message]:
        """What the account may have missed since the id ``after``: the
        messages in the rooms it is in now and the private messages from or
        to it (none from before its start_private_history), oldest first,
        the first ``count`` of them."""
        raise NotImplementedError

    def start_private_history(self, account_id: int) -> None:
        """The account has a new holder (an IRC guest's nick, taken by the
        next guest or registered by someone else): its private messages so
        far are not theirs to read, nor to be replayed to them."""
        raise NotImplementedError

    def went_offline(self, account_id: int) -> None:
        """The account has no session left: the private messages stored
        from now on are the ones it misses (missed_private)."""
        raise NotImplementedError

    def missed_private(self, account_id: int, count: int) -> Tuple[List[Message], bool]:
        """The private messages to the account stored since it last went
        offline, the last ``count`` of them oldest first, and whether there
        were more; from then on it counts as online (a second read finds
        nothing new until it goes offline again), so that a server that
        stops without saying who went offline replays nothing twice."""
        raise NotImplementedError

    def targets(self, account_id: int, room_ids: Sequence[int], after_time: Optional[str],
                before_time: Optional[str], limit: int, newest: bool = False) -> List[Tuple[str, str]]:
        """IRC's CHATHISTORY TARGETS: the account's conversations whose
        latest message was stored strictly after ``after_time`` and strictly
        before ``before_time`` (None: no bound), as (name, that message's
        time), oldest first: the live rooms among ``room_ids`` (the rooms
        it is in) by their name as created, and the accounts it exchanged
        private messages with by their name as registered (itself, for a
        conversation with itself), none whose latest message is from before
        its start_private_history. The first ``limit`` of them, or with
        ``newest`` the last ``limit``. A conversation whose latest message
        is outside the window is left out, even with others inside it."""
        raise NotImplementedError

    # -- bans, the connection --

    def ids_at(self, at: str) -> Tuple[Optional[int], Optional[int]]:
        """The id of the last message stored at or before the moment ``at``
        and of the first at or after it (None where there is none)."""
        raise NotImplementedError

    def replace_password(self, name: str, old_hash: str, new_hash: str) -> bool:
        """Give the account ``new_hash`` if its hash is still ``old_hash``
        (an IRC guest's account registered by its guest); False otherwise."""
        raise NotImplementedError

    def names_with_hash(self, password_hash: str) -> List[str]:
        """The names of the accounts whose hash is exactly ``password_hash``:
        a mark no password matches (an IRC guest's), since a real hash is
        salted and shared by no two accounts. Reads every account: for
        start-up, not for each request."""
        raise NotImplementedError

    def set_ban(self, name: str, reason: Optional[str], at: str) -> bool:
        """Ban (reason given) or unban (None) an account; False if no such account."""
        raise NotImplementedError

    def banned_accounts(self) -> List[Account]:
        raise NotImplementedError

    def ping(self) -> None:
        """Check that the database answers (reconnecting if need be)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def describe_url(url: str) -> str:
    """The URL with its password masked, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_store(url: str) -> Store:
    """Open (creating or migrating its schema) the store that ``url`` names.
    Raises ValueError for a URL it does not understand, StorageUnavailable
    when the database cannot be reached."""
    if "://" not in url:
        url = "sqlite:///" + url  # a bare file name is an SQLite file
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from .sqlite import SQLiteStore
        # As elsewhere: sqlite:///sae.db is relative to the working
        # directory, sqlite:////var/lib/sae/sae.db is absolute.
        path = unquote(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError("an SQLite URL is sqlite:///FILE: %s" % url)
        return SQLiteStore(path)
    if parts.scheme in ("mysql", "mariadb"):
        try:
            from .mysql import MySQLStore
        except ImportError as error:
            if error.name != "MySQLdb":
                raise
            # mysqlclient is an extra: it needs a C compiler and MariaDB's
            # headers, which a SQLite user should not have to install.
            raise ValueError("%s needs the mysql extra (mysqlclient), which is not installed: install it with "
                             "`%s -m pip install '.[mysql]'` from the sae-chat folder, after "
                             "`sudo apt install pkg-config libmariadb-dev gcc python3-dev` "
                             "(README, \"MariaDB or MySQL\")" % (describe_url(url), sys.executable)) from None
        return MySQLStore(url)
    raise ValueError("unknown database URL (use sqlite:///FILE or mysql://USER:PASSWORD@HOST:PORT/NAME): %s"
                     % describe_url(url))
