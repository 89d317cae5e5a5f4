import platform

import pytest

from nlpkit.hardware import keep_freed_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc_only
def test_malloc_keeps_freed_memory_on_glibc(monkeypatch):
    for name in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert keep_freed_memory.__wrapped__() is True  # both mallopt calls accepted their values


@glibc_only
@pytest.mark.parametrize("name, value", [("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
                                         ("MALLOC_ARENA_MAX", "2")])
def test_a_users_own_malloc_settings_are_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert keep_freed_memory.__wrapped__() is False
