"""Storage for sae-chat: accounts, bans and the message history.

Installed as the package ``sae_db`` (the folder is ``db/`` in the source
tree). The server talks to storage only through ``Store``; ``open_store``
picks the backend from a URL:

    sqlite:///sae.db           (the default: sae.db in the working directory)
    sqlite:////var/lib/sae/sae.db   (an absolute path: four slashes)
    mysql://user:password@host:3306/name

A Store is used by one thread at a time: the server's storage thread, or,
for a store whose calls never wait for long (``Store.on_loop``: SQLite), the
event loop itself. Each backend keeps its
schema, one SQL file per migration, in a folder named after its dialect;
``schema_version`` records which have been applied.

Timestamps cross this interface as the protocol's text form,
``2026-11-24T13:05:01.123Z`` (UTC, milliseconds).
"""

import sys
from typing import List, NamedTuple, Optional, Sequence
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
    """A message accepted by the server, not yet stored."""
    sender_id: int
    sender: str
    recipient: Optional[str]  # an account name, or None for the room
    body: str
    created_at: str


class Message(NamedTuple):
    """A stored message."""
    id: int
    created_at: str
    sender: str
    recipient: Optional[str]  # the account's name as registered, None for the room
    body: str


# A-Z to a-z and nothing else.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(name: str) -> str:
    """The form in which account names are compared: A-Z folded to a-z,
    nothing else. str.lower() would fold look-alikes into ASCII (the Kelvin
    sign U+212A becomes "k"), and a name that is no account's would reach
    kate's. Both backends then compare name_key byte for byte (SQLite's
    default collation, MariaDB's utf8mb4_bin), so they fold nothing more."""
    return name.translate(_ASCII_LOWER)


class Store:
    """What the server needs from a database. Every method may raise
    StorageUnavailable."""

    # True when every call is as short as a send(): the server's loop then
    # makes the calls itself instead of handing them to its storage thread.
    # SQLite's are (a local file, commits that go to the page cache and are
    # written back later); a database across a network is not.
    on_loop = False

    def create_account(self, name: str, password_hash: str, created_at: str) -> Optional[Account]:
        """The new account, or None if the name is taken (case-insensitively)."""
        raise NotImplementedError

    def find_account(self, name: str) -> Optional[Account]:
        raise NotImplementedError

    def append_messages(self, batch: Sequence[NewMessage]) -> List[Optional[Message]]:
        """Store the batch in one transaction, in order. Returns, for each
        message, its stored form (ids increasing in batch order), or None for
        a private message to an account that does not exist (not stored)."""
        raise NotImplementedError

    def room_history(self, count: int, before: Optional[int] = None,
                     after: Optional[int] = None) -> List[Message]:
        """Room messages, oldest first: the last ``count`` (before ``before``
        if given), or the first ``count`` after ``after``."""
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
