"""No host sync inside a training step, outside log steps, for every built-in model and task kind.

On a GPU every ``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()`` or ``.cpu()`` on a device tensor makes the
CPU wait until the GPU has finished everything queued so far, so the CPU can no longer prepare the next step
while the GPU runs this one. There is no GPU here, so the test counts those calls (patched on ``torch.Tensor``)
while the real loop trains on the CPU: a run of 6 steps must make exactly as many as a run of 2 (the only log
line and evaluation being at the last step), i.e. none per step. ``bert`` runs its stock ``transformers``
encoder, the one the speed rule takes on a GPU (its CPU-only fast encoder may sync: there it costs nothing).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from nlpkit.plugins import registry
from nlpkit.testing import build
from nlpkit.train import loop as training
from nlpkit.train.hardware import speed_paths
from nlpkit.train.log import MetricsLog
from nlpkit.train.options import TrainOptions

# Not counted: pytorch-crf validates its mask with `assert mask[0].all()` in every forward (3 syncs per step of the
# CRF tagger that nlpkit cannot remove without replacing the library: known, left as it is), and torch's RNN modules
# read a PackedSequence's batch_sizes, which torch keeps on the CPU by design (no GPU involved); transformers'
# attention-mask builder asks `padding_mask.all()` once per forward to decide whether flash attention may skip it.
THIRD_PARTY = ("torchcrf/__init__.py", "torch/nn/modules/rnn.py", "transformers/masking_utils.py")
SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
RECURRENT = {"vocab_size": 200, "embedding_dim": 16, "hidden_size": 16, "dropout": 0.1, "max_length": 24,
             "char_dim": 8, "char_filters": 8, "target_vocab_size": 100, "beam_size": 2}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128), add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_pretrained("minilm")).save_pretrained(folder)
    return str(folder)


def count_syncs(monkeypatch: pytest.MonkeyPatch, run) -> Counter:
    """Calls of each host-sync method (by caller, for the failure message) while ``run()`` runs."""
    seen: Counter = Counter()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = sys._getframe(1)
            if not caller.f_code.co_filename.endswith(THIRD_PARTY):
                seen[f"{_name} at {caller.f_code.co_filename.rsplit('/', 1)[-1]}:{caller.f_lineno}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        run()
    finally:
        monkeypatch.undo()
    return seen


def syncs_in_training(monkeypatch, tmp_path, plugin: str, kind: str, options: dict, steps: int) -> Counter:
    model_cls = registry().model(plugin)
    model, examples = build(model_cls, kind, options, n=48)
    features = [model.encode(ex) for ex in examples]
    task = SimpleNamespace(main_metric="score", greater_is_better=True)
    train_options = TrainOptions(max_steps=steps, batch_size=4, lr=1e-3, log_every=1000, eval_every=1000,
                                 precision="fp32", grad_clip=1.0, progress=False)
    accelerator, precision = training.make_accelerator(train_options, type(model))

    def run() -> None:
        with monkeypatch.context() as patch:  # validation is not part of the step (it runs at the last one only)
            patch.setattr(training, "evaluate", lambda *args, **kwargs: {"score": 0.5})
            # the optimizer the rule picks on CUDA (torch's fused AdamW; the for-each one reads its CPU step count)
            patch.setattr(training, "speed_paths", lambda *a: replace(speed_paths(*a), fused_adamw=True))
            training.train(model, task, features, [], [], train_options, 1, MetricsLog(tmp_path / f"{steps}.jsonl"),
                           accelerator, precision)

    return count_syncs(monkeypatch, run)


CASES = [(plugin, kind) for plugin in ("lstm", "attention", "bert") for kind in ("classification", "tagging", "seq2seq")]


@pytest.mark.parametrize("plugin, kind", CASES)
def test_no_host_sync_inside_a_training_step(monkeypatch, tmp_path, tiny_bert, plugin, kind):
    options = {"pretrained": tiny_bert, "fast": False, "max_length": 24, "stride": 8, "target_vocab_size": 100,
               "embedding_dim": 16, "hidden_size": 16, "attention_size": 8} if plugin == "bert" else \
        {**RECURRENT, **({"attention_size": 8} if plugin == "attention" else {})}
    few = syncs_in_training(monkeypatch, tmp_path, plugin, kind, options, steps=2)
    more = syncs_in_training(monkeypatch, tmp_path, plugin, kind, options, steps=6)
    extra = {site: more[site] - few.get(site, 0) for site in more if more[site] != few.get(site, 0)}
    assert not extra, f"host syncs that grow with the number of steps (4 more steps): {extra}"
