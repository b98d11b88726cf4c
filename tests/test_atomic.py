"""Files written whole or not at all, even across a power loss: the new file's data and the folder's new name are
both flushed to the disk (fsync) before the write counts as done."""

import os

import pytest

from lenet_client.atomic import atomic_path, write_text_atomically


def test_the_file_and_its_folder_are_flushed(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync

    def fsync(descriptor):
        flushed.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    write_text_atomically(tmp_path / "report.json", "{}\n")
    assert (tmp_path / "report.json").read_text() == "{}\n"
    # The file is flushed under its temporary name, then renamed: the same inode. Then the folder, for the rename.
    assert flushed == [(tmp_path / "report.json").stat().st_ino, tmp_path.stat().st_ino]


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "latest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["latest.json"]
