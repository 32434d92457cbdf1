"""A throwaway PostgreSQL server for the multi-worker storage path (Debian's postgresql package)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.browser import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def installed() -> bool:
    return bool(_bin("initdb") and _bin("pg_ctl"))


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL of a server started for this test session (skipped without PostgreSQL, failed in CI)."""
    if not installed():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with throwaway_server() as url:
        yield url


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder (trust auth, loopback, a free port) while the block runs; its
    base URL (add "/DBNAME"). Also used by benchmarks/soak.py."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = tempfile.mkdtemp(prefix="vrft-pg-")
    os.chmod(root, 0o777)
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run(_as_postgres(initdb, "-D", data, "--auth=trust", "-U", "postgres"), check=True,
                   capture_output=True)
    subprocess.run(_as_postgres(pg_ctl, "-D", data, "-l", os.path.join(root, "log"), "-w", "-o",
                                f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres(pg_ctl, "-D", data, "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database on the session's server."""
    return new_database(postgres_server)


def new_database(postgres_server: str) -> str:
    """CREATE DATABASE with a fresh name on the server; its URL."""
    import sqlalchemy
    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    for _ in range(20):
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            break
        except sqlalchemy.exc.OperationalError:
            time.sleep(0.5)
    engine.dispose()
    return f"{postgres_server}/{name}"
