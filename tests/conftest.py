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


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set; a test that trains
    in bf16 (e.g. precision auto on a CPU with native bf16) must not decide the precision of the next test."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.fixture(params=["cpu without native bf16", "cpu with native bf16"])
def cpu_kind(request, monkeypatch):
    """Both CPU kinds these machines have, whatever this one is: ``nlpkit.train.hardware.cpu_has_native_bf16`` says
    what the test asks for (precision auto picks bf16 on the second kind). Yields whether bf16 is native."""
    from nlpkit.train import hardware

    native = request.param == "cpu with native bf16"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    yield native


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 32-wide randomly initialised BERT with MiniLM's tokenizer, saved to a folder: the bert plugin
    accepts a folder as ``pretrained``, so tests run the real code path in seconds."""
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_pretrained("minilm")).save_pretrained(folder)
    return str(folder)
