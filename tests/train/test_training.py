"""The training loop hands back the weights of its best validation evaluation, whether that was the last one
(kept live, no copy) or an earlier one (restored from the copy), and no gradients."""

import pytest
import torch

from nlpkit.config.recipe import TaskEntry
from nlpkit.plugins import registry
from nlpkit.run.engine import load_splits
from nlpkit.train import loop as training
from nlpkit.train.log import MetricsLog
from nlpkit.train.options import TrainOptions


@pytest.mark.parametrize("scores, best", [([0.2, 0.9, 0.4, 0.1], 1), ([0.2, 0.3, 0.5, 0.8], 3)])
def test_train_returns_the_best_evaluations_weights(tmp_path, monkeypatch, scores, best):
    reg = registry()
    task, examples = load_splits(TaskEntry(name="classification", dataset="toy_topics",
                                           dataset_options={"train_size": 32, "eval_size": 8}), reg)
    model_cls = reg.model("lstm")
    torch.manual_seed(0)
    model = model_cls.create(task.spec, model_cls.Options(vocab_size=100, embedding_dim=8, hidden_size=8),
                             examples["train"])
    seen = []

    def scripted_evaluate(model, *args):  # validation scores chosen by the test; the weights each one saw
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {task.main_metric: scores[len(seen) - 1]}

    monkeypatch.setattr(training, "evaluate", scripted_evaluate)
    options = TrainOptions(epochs=1, batch_size=8, lr=0.05, eval_every=1, progress=False)
    features = [model.encode(e) for e in examples["train"]]
    accelerator, precision = training.make_accelerator(options, model_cls)
    result = training.train(model, task, features, [], [], options, 1, MetricsLog(tmp_path / "m.jsonl"),
                            accelerator, precision)
    assert result.steps == len(scores) == len(seen) and result.best_step == best + 1
    moved = any(not torch.equal(seen[best][k], seen[-1][k]) for k in seen[best])
    assert moved == (best != len(scores) - 1)  # training went on after an earlier best: restoring matters
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, seen[best][name], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
