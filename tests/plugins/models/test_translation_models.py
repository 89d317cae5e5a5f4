"""Seq2seq models: tokenizers, decoding, attention, the decoder's deferred weight gradients, and an end-to-end
reverse task (through ``nlpkit run`` and ``nlpkit predict``'s loader) that attention learns in seconds."""

import json
import random
import textwrap

import pytest
import torch
from click.testing import CliRunner
from nlpkit_plugins.models.attention import AttentionModel
from nlpkit_plugins.models.lstm import LSTMModel
from nlpkit_plugins.models.shared.decoding import beam_search, greedy_search
from nlpkit_plugins.tasks.translation import Translation

from nlpkit.cli import main
from nlpkit.predict import load_run, predict_examples
from nlpkit.text import BOS, EOS, train_reversible_tokenizer

TEXTS = ["Zwei junge, weiße Männer sind im Freien.", "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
         "Eine Gruppe von Menschen steht vor einem Iglu.", "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_tokenizer_round_trip(kind):
    tok = train_reversible_tokenizer(TEXTS * 5, vocab_size=120, kind=kind)
    for text in TEXTS + ["Männer, Hut."]:
        enc = tok.encode(text)
        assert len(enc.ids) > 3 and tok.decode(enc.ids) == text
    assert tok.token_to_id("[BOS]") == BOS and tok.token_to_id("[EOS]") == EOS


def small_model(plugin=AttentionModel, **options):
    task = Translation()
    pairs = [{"source": s.lower(), "target": s} for s in TEXTS]
    task.prepare({"train": pairs})
    defaults = dict(vocab_size=150, embedding_dim=16, hidden_size=16, dropout=0.0)
    if plugin is AttentionModel:
        defaults["attention_size"] = 8
    opts = plugin.Options(**(defaults | options))
    torch.manual_seed(0)
    model = plugin.create(task.spec, opts, pairs)
    return model, model.collate([model.encode(p) for p in pairs])


@pytest.mark.parametrize("plugin", [AttentionModel, LSTMModel])
def test_beam_of_one_is_greedy(plugin):
    model, batch = small_model(plugin)
    model.eval()
    with torch.no_grad():
        greedy, _ = model.generate(batch, beam=1)
        state = model.encode_source(batch)
        max_len = (batch["source_lengths"] * 1.5 + 10).long()
        beam, _ = beam_search(model.decoder.step, state, max_len, beam=1)
    assert beam == greedy and max(map(len, greedy)) > 0


def test_beam_finds_the_better_sequence_greedy_misses():
    """Toy decoder over tokens {EOS, A=4, B=5}: after BOS, A (0.6) beats B (0.4), but after A every token is
    equally likely, while B is followed by EOS with p=1: p(B EOS) = 0.4 > p(A EOS) = 0.6 / 3 = 0.2."""
    A, B, V = 4, 5, 6

    def step(prev, state):
        p = torch.full((prev.shape[0], V), 1e-9)
        for i, tok in enumerate(prev.tolist()):
            if tok == BOS:
                p[i, A], p[i, B] = 0.6, 0.4
            elif tok == A:
                p[i, A] = p[i, B] = p[i, EOS] = 1 / 3
            else:
                p[i, EOS] = 1.0
        return p.log(), {"h": state["h"]}, None

    state, max_len = {"h": torch.zeros(2, 1)}, torch.tensor([6, 6])
    greedy, _ = greedy_search(step, state, max_len)
    beam, _ = beam_search(step, state, max_len, beam=3, length_penalty=0.0)
    assert greedy[0][0] == A and beam == [[B], [B]]


def test_attention_sums_to_one_over_real_positions():
    model, batch = small_model()
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    lengths = batch["source_lengths"]
    weights = out.attentions  # (batch, steps, source)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(weights[i, :, :n].sum(-1), torch.ones(weights.shape[1]), atol=1e-5)
        assert (weights[i, :, n:] == 0).all()
    assert lengths.min() < weights.shape[-1]  # the batch really has padding
    preds = model.predict(batch)
    for p, n in zip(preds, lengths.tolist()):
        assert len(p["attention"]) == len(p["target_tokens"]) and len(p["attention"][0]) == len(p["source_tokens"]) == n


def test_deferred_decoder_weight_gradients_equal_autograd():
    model, batch = small_model()
    model.train()
    grads = {}
    for defer in (False, True):
        model.decoder.defer = defer
        model.zero_grad()
        model(**batch).loss.backward()
        grads[defer] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    for name, g in grads[False].items():
        assert torch.allclose(grads[True][name], g, atol=1e-6, rtol=1e-4), name


def test_teacher_forcing_below_one_trains():
    model, batch = small_model(teacher_forcing=0.5)
    model.train()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.decoder.cell.weight_hh.grad.abs().sum() > 0


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

    from nlpkit import engine, training
    from nlpkit.recipe import parse_recipe

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
