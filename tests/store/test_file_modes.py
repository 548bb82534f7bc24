"""Artifacts get the modes of the user's umask, so a results folder can be shared with a group."""

import os
import stat

import pytest

import bench.store.artifacts as artifacts
from bench.store.artifacts import stage_dir, write_json_atomic


@pytest.fixture
def group_umask(monkeypatch):
    """umask 002 (a shared cluster project folder), as the module would have read it at import."""
    old = os.umask(0o002)
    monkeypatch.setattr(artifacts, "FILE_MODE", 0o664)
    monkeypatch.setattr(artifacts, "FOLDER_MODE", 0o775)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_and_stage_folders_follow_the_umask(tmp_path, group_umask):
    write_json_atomic(tmp_path / "record.json", {"a": 1})
    with stage_dir(tmp_path / "stage", "h") as tmp:
        (tmp / "x.txt").write_text("x")
    assert mode(tmp_path / "record.json") == 0o664
    assert mode(tmp_path / "stage") == 0o775
    assert mode(tmp_path / "stage" / "manifest.json") == 0o664


def test_the_modes_read_at_import_match_the_process_umask():
    current = os.umask(0o022)
    os.umask(current)
    assert artifacts.FILE_MODE == 0o666 & ~current and artifacts.FOLDER_MODE == 0o777 & ~current
