"""Atomic file operations on real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from updater import ApplyError, HashMismatchError
from updater._fs import (
    TEMP_PREFIX,
    atomic_write,
    clean_temp,
    copy_verified,
    read_link,
    swap_symlink,
    tree_digest,
)


def test_atomic_write_replaces(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two", mode=0o600)
    assert path.read_bytes() == b"two"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_copy_verified_refuses_wrong_content(tmp_path: Path) -> None:
    source, dest = tmp_path / "src", tmp_path / "dest"
    source.write_bytes(b"new")
    dest.write_bytes(b"old")
    with pytest.raises(HashMismatchError):
        copy_verified(source, dest, hashlib.sha256(b"other").hexdigest(), mode=0o755)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]
    copy_verified(source, dest, hashlib.sha256(b"new").hexdigest(), mode=0o755)
    assert dest.read_bytes() == b"new"
    assert os.access(dest, os.X_OK)


def test_copy_verified_enospc_leaves_target(tmp_path: Path) -> None:
    source, dest = tmp_path / "src", tmp_path / "dest"
    source.write_bytes(b"new" * 1000)
    dest.write_bytes(b"old")

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    with pytest.raises(ApplyError) as info:
        copy_verified(
            source, dest, hashlib.sha256(b"new" * 1000).hexdigest(), mode=0o755, write=full
        )
    assert info.value.reason.value == "disk_full"
    assert dest.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_swap_symlink_and_clean_temp(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = tmp_path / "current"
    swap_symlink(link, tmp_path / "v1")
    swap_symlink(link, tmp_path / "v2")
    assert read_link(link) == str(tmp_path / "v2")
    assert os.readlink(link) == "v2", "links are relative, so the tree can move"
    (tmp_path / f"{TEMP_PREFIX}x").write_bytes(b"junk")
    assert [p.name for p in clean_temp(tmp_path)] == [f"{TEMP_PREFIX}x"]


def test_tree_digest_sees_content_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_bytes(b"x")
    first = tree_digest(tmp_path)
    tool.chmod(0o755)
    second = tree_digest(tmp_path)
    (tmp_path / "lnk").symlink_to("bin/tool")
    third = tree_digest(tmp_path)
    tool.write_bytes(b"y")
    assert len({first, second, third, tree_digest(tmp_path)}) == 4
