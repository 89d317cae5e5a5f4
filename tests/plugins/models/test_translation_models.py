"""Translation with the seq2seq models: reversible tokenizers, an end-to-end reverse task (through ``nlpkit run``
and ``nlpkit predict``'s loader) that attention learns in seconds, and the beam width the test split is decoded with.
Decoding is tested in shared/test_decoding.py, the Bahdanau decoder in attention/test_bahdanau.py."""

import json
import random
import textwrap

import pytest
import torch
from click.testing import CliRunner

from nlpkit.cli import main
from nlpkit.data.tokenizers import BOS, EOS, train_reversible_tokenizer
from nlpkit.run.predict import load_run, predict_examples

TEXTS = ["Zwei junge, weiße Männer sind im Freien.", "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
         "Eine Gruppe von Menschen steht vor einem Iglu.", "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_tokenizer_round_trip(kind):
    tok = train_reversible_tokenizer(TEXTS * 5, vocab_size=120, kind=kind)
    for text in TEXTS + ["Männer, Hut."]:
        enc = tok.encode(text)
        assert len(enc.ids) > 3 and tok.decode(enc.ids) == text
    assert tok.token_to_id("[BOS]") == BOS and tok.token_to_id("[EOS]") == EOS


RECIPE = """\
name: reverse
output: {out}/runs
reports: {out}/reports
task:
  name: translation
  dataset: parallel_files
  dataset_options: {{train: {out}/train.tsv, validation: {out}/val.tsv, test: {out}/test.tsv}}
models:
  attention: {{vocab_size: 40, tokenizer: wordpiece, embedding_dim: 32, hidden_size: 64, attention_size: 32,
              dropout: 0.0, label_smoothing: 0.0, beam_size: 2, lr: 1.0e-2}}
train: {{epochs: 8, max_tokens: 400, warmup: 0.05, progress: false}}
"""


def reverse_pairs(n, rng):
    rows = []
    for _ in range(n):
        words = [rng.choice("abcdefgh") for _ in range(rng.randint(3, 7))]
        rows.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    return "\n".join(rows) + "\n"


def test_attention_learns_to_reverse_end_to_end(tmp_path):
    rng = random.Random(0)
    for name, n in (("train", 1500), ("val", 100), ("test", 100)):
        (tmp_path / f"{name}.tsv").write_text(reverse_pairs(n, rng))
    recipe = tmp_path / "reverse.yaml"
    recipe.write_text(textwrap.dedent(RECIPE.format(out=tmp_path)))
    result = CliRunner().invoke(main, ["run", str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "reverse" / "translation-attention-seed1"
    results = json.loads((folder / "results.json").read_text())
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    exact = sum(r["hypothesis"] == r["reference"] for r in rows) / len(rows)
    assert exact >= 0.9 and results["test"]["bleu"] >= 90, (exact, results["test"])
    assert "attention" in rows[0] and "attention" not in rows[25]
    task, model = load_run(folder)  # what `nlpkit predict` does
    preds = predict_examples(model, [task.parse("a b c d"), task.parse("h g f")])
    assert [task.render({}, p) for p in preds] == ["d c b a", "f g h"]


SPY_RECIPE = """\
name: spy
output: {out}/runs
reports: {out}/reports
task:
  name: translation
  dataset: parallel_files
  dataset_options: {{train: {out}/train.tsv, validation: {out}/val.tsv, test: {out}/test.tsv}}
models:
  attention: {{vocab_size: 40, tokenizer: wordpiece, embedding_dim: 16, hidden_size: 16, attention_size: 8,
              dropout: 0.0, beam_size: 3, eval_beam_size: 1}}
train: {{max_steps: 3, batch_size: 16, progress: false, precision: fp32}}
seeds: [1]
"""


def test_test_split_is_decoded_with_the_recipes_beam_when_no_weights_are_reloaded(tmp_path, monkeypatch):
    """Issue #14 point 1: the run's only evaluation is its last, so it is the best and the loop keeps the live
    weights (no load_state_dict). Validation must still decode greedily and the test split with beam_size."""
    from nlpkit_plugins.models.shared import seq2seq

    from nlpkit.config.recipe import parse_recipe
    from nlpkit.run import engine
    from nlpkit.train import loop as training

    rng = random.Random(0)
    for name, n in (("train", 48), ("val", 8), ("test", 8)):
        (tmp_path / f"{name}.tsv").write_text(reverse_pairs(n, rng))
    calls: list[tuple[str, int]] = []
    phase = ["created"]

    def spy(real):
        def wrapped(step, state, max_len, *args, **kwargs):
            calls.append((phase[0], args[0] if args else 1))
            return real(step, state, max_len, *args, **kwargs)
        return wrapped

    def marking(name, real):
        def wrapped(*args, **kwargs):
            phase[0] = name
            return real(*args, **kwargs)
        return wrapped

    reloads = []
    monkeypatch.setattr(seq2seq, "greedy_search", spy(seq2seq.greedy_search))
    monkeypatch.setattr(seq2seq, "beam_search", spy(seq2seq.beam_search))
    monkeypatch.setattr(training, "evaluate", marking("validation", training.evaluate))
    monkeypatch.setattr(engine, "predict", marking("test", engine.predict))
    monkeypatch.setattr(seq2seq.Seq2SeqModel, "load_state_dict",
                        lambda self, *a, **k: reloads.append(1) or torch.nn.Module.load_state_dict(self, *a, **k))
    recipe = parse_recipe(textwrap.dedent(SPY_RECIPE.format(out=tmp_path)), tmp_path / "spy.yaml")
    engine.execute(recipe.runs[0])
    assert not reloads  # the live weights were kept: nothing was loaded
    widths = {p: {w for ph, w in calls if ph == p} for p in ("validation", "test")}
    assert widths == {"validation": {1}, "test": {3}}, calls
