"""Packaging for sae-chat. The server needs only the standard library with
SQLite; the ``mysql`` extra adds mysqlclient for a MariaDB/MySQL server."""

from setuptools import setup

setup(
    name="sae-chat",
    version="0.1.0",
    description="A small self-hosted chat server and curses terminal client",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    py_modules=["sae_protocol", "sae_irc", "sae_ircd", "sae_cluster", "sae_server", "sae_admin", "sae_client_curses"],
    # The storage code lives in db/ in the tree; it is installed as sae_db so
    # that it never clashes with another project's top-level "db".
    packages=["sae_db"],
    package_dir={"sae_db": "db"},
    package_data={"sae_db": ["sqlite/*.sql", "mysql/*.sql"]},
    entry_points={
        "console_scripts": [
            "sae-server = sae_server:main",
            "sae-client = sae_client_curses:main",
        ],
    },
    extras_require={
        "mysql": ["mysqlclient>=2.1"],
        # Several servers sharing MariaDB (--cluster): redis-py, pure Python.
        "cluster": ["mysqlclient>=2.1", "redis>=4.2"],
        # trustme makes the TLS tests' CAs and certificates (expired ones,
        # ones for another host) in a line each, on every OpenSSL version;
        # redis-py runs the cluster tests' servers.
        "test": ["pytest>=7", "pytest-xdist>=3", "freezegun>=1.2", "hypothesis>=6", "pyte>=0.8",
                 "trustme>=1.1", "redis>=4.2"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Console :: Curses",
        "Topic :: Communications :: Chat",
    ],
)
