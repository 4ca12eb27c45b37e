"""Schema migrations shared by the backends.

Each dialect keeps its migrations as ``db/<dialect>/NNNN_what.sql``, applied
in order of NNNN; the table ``schema_version`` holds the number of the last
one applied. A migration file is split into statements at lines that end
with ";", so the files stay plain SQL that a person can read and run by hand.
"""

import os
import re
from typing import List, Tuple

_MIGRATION_RE = re.compile(r"(\d{4})_[A-Za-z0-9_]+\.sql\Z")


def migrations(dialect: str) -> List[Tuple[int, List[str]]]:
    """(version, statements) for each migration of ``dialect``, in order."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), dialect)
    found = []
    for filename in sorted(os.listdir(folder)):
        match = _MIGRATION_RE.match(filename)
        if match:
            with open(os.path.join(folder, filename), encoding="utf-8") as sql:
                found.append((int(match.group(1)), split_statements(sql.read())))
    return found


def split_statements(script: str) -> List[str]:
    statements, current = [], []
    for line in script.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def latest_version(dialect: str) -> int:
    return max(version for version, _ in migrations(dialect))
