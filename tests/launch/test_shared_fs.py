"""Shared file systems: a run folder on one that refuses locks is said plainly, not as "in use by process ?"."""

import errno
import fcntl

import pytest

from nlpkit.run import folders
from nlpkit.run.folders import NoLocks, RunLocked, run_lock


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_file_system_without_locks_is_named_as_such(tmp_path, monkeypatch, code):
    def refuse(fd, operation):
        raise OSError(code, "refused")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(NoLocks, match="does not support file locks") as caught:
        with run_lock(tmp_path / "run"):
            pass
    assert errno.errorcode[code] in str(caught.value) and not isinstance(caught.value, RunLocked)


def test_a_lock_held_elsewhere_is_still_in_use(tmp_path, monkeypatch):
    def busy(fd, operation):
        raise BlockingIOError(errno.EWOULDBLOCK, "busy")

    monkeypatch.setattr(folders.fcntl, "flock", busy)
    with pytest.raises(RunLocked, match="in use by process"):
        with run_lock(tmp_path / "run"):
            pass
