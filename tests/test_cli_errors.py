"""Every command answers a file-system or database failure with one sentence naming the path and a non-zero exit,
never a traceback: an export whose --out runs through a file or under a folder that cannot be made, a read-only data
dir (every command, and the page), a database file that is not one, a data dir that is a file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


def _one_sentence(proc: subprocess.CompletedProcess, starts: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {starts}"), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("cli-errors") / "data"
    run_cli("demo", data_dir=data)
    return data


@pytest.mark.parametrize("out", ["sub", "sub.zip", "sub/deeper"])
def test_an_export_through_a_file_is_one_sentence(demo_data, tmp_path, out):
    (tmp_path / "FILE").write_text("a file, not a folder")
    proc = run_cli("datasets", "export", "demo-shapes", "--format", "coco", "--out", str(tmp_path / "FILE" / out),
                   data_dir=demo_data, check=False)
    assert _one_sentence(proc, "cannot write the export to ") == \
        f"error: cannot write the export to {tmp_path / 'FILE' / out}: {tmp_path / 'FILE'} is a file, not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["FILE"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder nothing can be created in")
def test_an_export_under_a_folder_that_cannot_be_made_is_one_sentence(demo_data):
    proc = run_cli("datasets", "export", "demo-shapes", "--format", "yolo", "--out", "/proc/no-such/out.zip",
                   data_dir=demo_data, check=False)
    assert _one_sentence(proc, "cannot write the export to /proc/no-such/out.zip: the folder /proc/no-such cannot "
                               "be created (")


def _run_read_only(data: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "app.py"), "--data-dir", str(data), *args]
    if os.geteuid() == 0:  # root writes through chmod: bind the data dir read-only in a mount namespace of its own
        if not shutil.which("unshare"):
            pytest.skip("running as root without unshare: no way to make the data dir read-only")
        script = f'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, "sh", str(data), *command]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    if os.geteuid() == 0 and "mount:" in proc.stderr:
        pytest.skip(f"cannot bind-mount here: {proc.stderr.strip()}")
    return proc


def test_a_read_only_data_dir_is_one_sentence_for_every_command_and_the_page(tmp_path):
    data = tmp_path / "data"
    run_cli("datasets", "list", data_dir=data)  # made, with its database
    if os.geteuid() != 0:
        for p in (data, *data.rglob("*")):
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        for args in (("datasets", "list"), ("runs", "list", "--json"), ("datasets", "show", "x"), ("demo",),
                     ("runs", "show", "1"), ("worker", "--once"), ("--port", "0")):  # the last: the page
            proc = _run_read_only(data, *args)
            sentence = _one_sentence(proc, f"the database {data.resolve() / 'studio.db'} cannot be used: ")
            assert sentence.endswith("(is the data dir read-only? give a writable --data-dir)"), (args, sentence)
    finally:
        for p in (data, *data.rglob("*")):
            p.chmod(p.stat().st_mode | 0o200)


def test_a_database_file_that_is_not_one_is_one_sentence(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "studio.db").write_bytes(b"this is not an SQLite database, whatever its name says" * 100)
    proc = run_cli("datasets", "list", data_dir=data, check=False)
    _one_sentence(proc, f"the database {data.resolve() / 'studio.db'} cannot be used: file is not a database")


def test_a_data_dir_that_is_a_file_is_one_sentence(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    proc = run_cli("runs", "list", data_dir=tmp_path / "data", check=False)
    _one_sentence(proc, f"could not use {tmp_path / 'data'}: ")
