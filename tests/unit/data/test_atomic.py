import os

import pytest

from tdrm_rl.data.atomic import atomic_dir


def test_the_folder_appears_whole_and_replaces_an_old_one(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(str(final)) as tmp:
        assert not (final / "new.txt").exists()
        (open(os.path.join(tmp, "new.txt"), "w")).write("new")
    assert sorted(os.listdir(final)) == ["new.txt"]
    assert os.listdir(tmp_path) == ["out"]  # no temp folder left


def test_a_crash_leaves_the_old_folder_and_no_temp(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(str(final)) as tmp:
            (open(os.path.join(tmp, "half.txt"), "w")).write("half")
            raise RuntimeError("killed")
    assert os.listdir(final) == ["old.txt"] and os.listdir(tmp_path) == ["out"]


def test_a_finished_folder_of_a_concurrent_writer_is_kept(tmp_path):
    final = tmp_path / "out"
    done = lambda p: os.path.isfile(os.path.join(p, "DONE"))  # noqa: E731
    with atomic_dir(str(final), complete=done) as tmp:
        (open(os.path.join(tmp, "mine.txt"), "w")).write("mine")
        final.mkdir()  # another process finished first
        (final / "DONE").write_text("")
    assert os.listdir(final) == ["DONE"] and os.listdir(tmp_path) == ["out"]
