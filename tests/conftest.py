import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _fresh_plugin_registry():
    """Each test sees the plugins installed at that moment (some tests install their own)."""
    from nlpkit import plugins

    plugins.reset()
    yield
    plugins.reset()
