"""Significance tests between models for comparison reports, and their verdicts in words.

Each pair of models is compared on its first common seed (the lowest seed both ran), not on a majority
vote pooled over seeds: a pooled vote is an ensemble, a different system from the ones whose means the
tables report, and it tends to look better than any single run. Classification uses the exact McNemar
test on per-example correctness; tagging and translation a paired bootstrap over test sentences.
No correction for multiple comparisons is applied.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nlpkit.report.runs import Run, predictions, seed_key

ALPHA = 0.05


def mcnemar_p(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> float:
    """Exact McNemar test (two-sided binomial test on the discordant pairs): only examples the two models
    disagree on carry evidence, and the exact form stays valid when there are few of them."""
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return float(binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0


def paired_bootstrap_p(stats_a: np.ndarray, stats_b: np.ndarray, score: Callable[[np.ndarray], float],
                       n_resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value (Koehn 2004) for corpus-level metrics like F1 and BLEU.

    ``stats_*`` hold per-example sufficient statistics (rows) that ``score`` turns, once summed, into the
    corpus metric, so resampling examples is a matrix product instead of re-running the metric. The
    resampled differences are centred on zero to get the null distribution (as sacrebleu does); the p-value
    is the smoothed share of centred differences at least as large as the observed one.
    """
    stats_a, stats_b = np.asarray(stats_a), np.asarray(stats_b)
    n = len(stats_a)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    deltas = np.array([score(a) - score(b) for a, b in zip(weights @ stats_a, weights @ stats_b, strict=True)])
    observed = score(stats_a.sum(0)) - score(stats_b.sum(0))
    extreme = np.abs(deltas - deltas.mean()) >= abs(observed) - 1e-9
    return float((1 + np.count_nonzero(extreme)) / (1 + n_resamples))


def format_p(p: float) -> str:
    """'p < 0.001', 'p < 0.01' or 'p = 0.4'."""
    return "p < 0.001" if p < 0.001 else "p < 0.01" if p < 0.01 else f"p = {p:.2g}"


def verdict(model_a: str, model_b: str, difference: float, p: float, greater_is_better: bool = True,
            alpha: float = ALPHA) -> str:
    """Say a test result in words: 'bert > attention, p < 0.01' or 'no significant difference (p = 0.4)'."""
    if p < alpha and difference != 0:
        a_wins = (difference > 0) == greater_is_better
        winner, loser = (model_a, model_b) if a_wins else (model_b, model_a)
        return f"{winner} > {loser}, {format_p(p)}"
    return f"no significant difference ({format_p(p)})"


# ---------------------------------------------------------------- sufficient statistics per sentence

def entity_stats(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence (true positives, predicted entities, gold entities) from seqeval's chunker: summed over
    any resample they give exactly seqeval's micro F1 on those sentences."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for g, p in zip(gold, predicted, strict=True):
        true, pred = set(get_entities(list(g))), set(get_entities(list(p)))
        rows.append((len(true & pred), len(pred), len(true)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def f1_from_stats(stats: np.ndarray) -> float:
    """Micro F1 from summed :func:`entity_stats`."""
    return float(2 * stats[0] / (stats[1] + stats[2])) if stats[1] + stats[2] else 0.0


def _token_stats(preds: list[dict]) -> np.ndarray:
    """Per sentence (correct tags, tags)."""
    rows = [(sum(g == p for g, p in zip(x.get("gold", []), x.get("prediction", []), strict=False)),
             len(x.get("gold", []))) for x in preds]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _ratio(stats: np.ndarray) -> float:
    return float(stats[0] / stats[1]) if stats[1] else 0.0


def _sacrebleu_stats(main: str, a: list[dict], b: list[dict]) -> tuple[str, np.ndarray, np.ndarray,
                                                                       Callable[[np.ndarray], float]]:
    """BLEU (or chrF) sufficient statistics per sentence, the ones sacrebleu's own paired tests use:
    summed, they give corpus BLEU/chrF."""
    import sacrebleu

    chrf = "chrf" in main.lower()
    metric = sacrebleu.metrics.CHRF() if chrf else sacrebleu.metrics.BLEU()
    refs = [[str(p.get("reference", "")) for p in a]]
    sa = np.array(metric._extract_corpus_statistics([str(p.get("hypothesis", "")) for p in a], refs))
    sb = np.array(metric._extract_corpus_statistics([str(p.get("hypothesis", "")) for p in b], refs))

    def score(stats: np.ndarray) -> float:
        return float(metric._compute_score_from_stats(stats.tolist()).score)

    return ("chrF (sacrebleu)" if chrf else "BLEU (sacrebleu)"), sa, sb, score


# ---------------------------------------------------------------- pairs of models

def _pair_test(kind: str, main: str, a: list[dict], b: list[dict], n_resamples: int,
               seed: int) -> tuple[str, str, float, float, float]:
    """(test name, metric, score a, score b, p) for one pair of prediction lists on the same test set."""
    if kind == "classification":
        ca = [p.get("prediction") == p.get("label") for p in a]
        cb = [p.get("prediction") == p.get("label") for p in b]
        return "exact McNemar", "accuracy", float(np.mean(ca)), float(np.mean(cb)), mcnemar_p(ca, cb)
    score: Callable[[np.ndarray], float]
    if kind == "tagging" and "f1" in main:
        gold = [p.get("gold", []) for p in a]
        sa = entity_stats(gold, [p.get("prediction", []) for p in a])
        sb = entity_stats(gold, [p.get("prediction", []) for p in b])
        name, score = "entity F1 (seqeval)", f1_from_stats
    elif kind == "tagging":
        sa, sb, name, score = _token_stats(a), _token_stats(b), "token accuracy", _ratio
    else:
        name, sa, sb, score = _sacrebleu_stats(main, a, b)
    p = paired_bootstrap_p(sa, sb, score, n_resamples, seed)
    return f"paired bootstrap, {n_resamples} resamples", name, score(sa.sum(0)), score(sb.sum(0)), p


def significance(runs_by_model: Mapping[str, list[Run]], n_resamples: int = 1000, seed: int = 0,
                 alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Paired tests between each pair of models (same test set), on their first common seed.

    Classification: exact McNemar on per-example correctness; tagging: paired bootstrap of entity F1
    (or token accuracy when that is the main metric); seq2seq: paired bootstrap of BLEU (or chrF).
    Returns one dict per pair: model_a, model_b, seeds, verdict and, when tested, test, metric,
    score_a, score_b, p.
    """
    results = []
    for (name_a, runs_a), (name_b, runs_b) in itertools.combinations(runs_by_model.items(), 2):
        seeds_a, seeds_b = [r.get("seed") for r in runs_a], [r.get("seed") for r in runs_b]
        common = sorted(set(seeds_a) & set(seeds_b), key=seed_key)
        run_a = runs_a[seeds_a.index(common[0])] if common else runs_a[0]
        run_b = runs_b[seeds_b.index(common[0])] if common else runs_b[0]
        row = {"model_a": name_a, "model_b": name_b, "seeds": f"{run_a.get('seed')} / {run_b.get('seed')}"}
        kind, main = run_a["task_kind"], str(run_a["main_metric"])
        pa, pb = predictions(run_a), predictions(run_b)
        gold_key = {"classification": "label", "tagging": "gold"}.get(kind, "reference")
        if not pa or not pb or [p.get(gold_key) for p in pa] != [p.get(gold_key) for p in pb]:
            why = "no predictions.jsonl" if not pa or not pb else "the test sets differ"
            results.append(row | {"verdict": f"not tested ({why})"})
            continue
        test, metric, score_a, score_b, p = _pair_test(kind, main, pa, pb, n_resamples, seed)
        # Every tested score (accuracy, F1, BLEU, chrF) is higher-is-better, whatever the task's main metric.
        results.append(row | {"test": test, "metric": metric, "score_a": score_a, "score_b": score_b, "p": p,
                              "verdict": verdict(name_a, name_b, score_a - score_b, p, True, alpha)})
    return results
