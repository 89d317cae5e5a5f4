"""nlpkit's ``attention`` seq2seq against the plain PyTorch tutorial way, same data, same layer sizes, same wall time.

The tutorial way (bentrevett/pytorch-seq2seq, notebook 3, Bahdanau attention): word vocabularies (min
frequency 2), batches of 128 in random order padded to the longest, a bidirectional ``nn.GRU`` encoder, and a
decoder whose output layer runs at every step (teacher forcing 0.5), Adam 1e-3, fp32. nlpkit: BPE
vocabularies, token-budget batches of similar lengths, the shared training loop (AdamW), one output matmul per
batch. Each side trains for ``--minutes`` in its own process (so peak RSS is its own), then decodes the test
set greedily; BLEU is sacreBLEU (13a) on detokenized text for both.

    NLPKIT_DATA=../shared/data python benchmarks/seq2seq_vs_tutorial.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import sacrebleu
import torch
from torch import nn

SIZES = {"embedding_dim": 256, "hidden_size": 256, "decoder_hidden_size": 512, "attention_size": 256}


def load_pairs() -> dict[str, list[dict]]:
    from nlpkit.config.recipe import TaskEntry
    from nlpkit.plugins import registry
    from nlpkit.run.engine import load_splits

    _, splits = load_splits(TaskEntry(name="translation", dataset="multi30k"), registry())
    return splits


def peak_rss_mb() -> float:
    from nlpkit.train.hardware import peak_rss_mb as peak

    return peak()


# --- the tutorial way ----------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


class Vocab:
    def __init__(self, texts: list[str], min_freq: int = 2):
        counts = Counter(w for t in texts for w in words(t))
        self.itos = ["<pad>", "<unk>", "<sos>", "<eos>"] + [w for w, c in counts.items() if c >= min_freq]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def ids(self, text: str) -> list[int]:
        return [2] + [self.stoi.get(w, 1) for w in words(text)] + [3]


class Encoder(nn.Module):
    def __init__(self, vocab, emb, enc_hid, dec_hid):
        super().__init__()
        self.embedding, self.rnn = nn.Embedding(vocab, emb), nn.GRU(emb, enc_hid, bidirectional=True)
        self.fc, self.dropout = nn.Linear(enc_hid * 2, dec_hid), nn.Dropout(0.5)

    def forward(self, src):
        outputs, hidden = self.rnn(self.dropout(self.embedding(src)))
        return outputs, torch.tanh(self.fc(torch.cat((hidden[-2], hidden[-1]), dim=1)))


class Attention(nn.Module):
    def __init__(self, enc_hid, dec_hid):
        super().__init__()
        self.attn, self.v = nn.Linear(enc_hid * 2 + dec_hid, dec_hid), nn.Linear(dec_hid, 1, bias=False)

    def forward(self, hidden, enc):
        hidden = hidden.unsqueeze(1).repeat(1, enc.shape[0], 1)
        energy = torch.tanh(self.attn(torch.cat((hidden, enc.permute(1, 0, 2)), dim=2)))
        return torch.softmax(self.v(energy).squeeze(2), dim=1)


class Decoder(nn.Module):
    def __init__(self, vocab, emb, enc_hid, dec_hid):
        super().__init__()
        self.attention, self.embedding = Attention(enc_hid, dec_hid), nn.Embedding(vocab, emb)
        self.rnn = nn.GRU(enc_hid * 2 + emb, dec_hid)
        self.fc_out, self.dropout = nn.Linear(enc_hid * 2 + dec_hid + emb, vocab), nn.Dropout(0.5)

    def forward(self, tok, hidden, enc):
        embedded = self.dropout(self.embedding(tok.unsqueeze(0)))
        a = self.attention(hidden, enc).unsqueeze(1)
        weighted = torch.bmm(a, enc.permute(1, 0, 2)).permute(1, 0, 2)
        output, hidden = self.rnn(torch.cat((embedded, weighted), dim=2), hidden.unsqueeze(0))
        pred = self.fc_out(torch.cat((output.squeeze(0), weighted.squeeze(0), embedded.squeeze(0)), dim=1))
        return pred, hidden.squeeze(0)


class Seq2Seq(nn.Module):
    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, src, trg, teacher_forcing=0.5):
        outputs = torch.zeros(trg.shape[0], trg.shape[1], self.decoder.fc_out.out_features)
        enc, hidden = self.encoder(src)
        tok = trg[0]
        for t in range(1, trg.shape[0]):
            out, hidden = self.decoder(tok, hidden, enc)
            outputs[t] = out
            tok = trg[t] if random.random() < teacher_forcing else out.argmax(1)
        return outputs

    @torch.no_grad()
    def greedy(self, src, max_len=60):
        enc, hidden = self.encoder(src)
        tok, out = torch.full((src.shape[1],), 2, dtype=torch.long), []
        for _ in range(max_len):
            pred, hidden = self.decoder(tok, hidden, enc)
            tok = pred.argmax(1)
            out.append(tok)
        return torch.stack(out, 1).tolist()


def pad(rows):
    out = torch.zeros(max(map(len, rows)), len(rows), dtype=torch.long)
    for i, r in enumerate(rows):
        out[: len(r), i] = torch.tensor(r)
    return out


def run_tutorial(minutes: float) -> dict:
    splits = load_pairs()
    src_v, trg_v = Vocab([e["source"] for e in splits["train"]]), Vocab([e["target"] for e in splits["train"]])
    data = [(src_v.ids(e["source"]), trg_v.ids(e["target"])) for e in splits["train"]]
    h = SIZES
    model = Seq2Seq(Encoder(len(src_v.itos), h["embedding_dim"], h["hidden_size"], h["decoder_hidden_size"]),
                    Decoder(len(trg_v.itos), h["embedding_dim"], h["hidden_size"], h["decoder_hidden_size"]))
    for name, p in model.named_parameters():  # as the tutorial does
        nn.init.normal_(p.data, 0, 0.01) if "weight" in name else nn.init.constant_(p.data, 0)
    opt = torch.optim.Adam(model.parameters())
    loss_fn = nn.CrossEntropyLoss(ignore_index=0)
    tokens = real = total = 0
    start, epochs = time.perf_counter(), 0.0
    model.train()
    while time.perf_counter() - start < minutes * 60:
        random.shuffle(data)
        for b in range(0, len(data), 128):
            chunk = data[b : b + 128]
            src, trg = pad([s for s, _ in chunk]), pad([t for _, t in chunk])
            out = model(src, trg)
            loss = loss_fn(out[1:].reshape(-1, out.shape[-1]), trg[1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1)
            opt.step()
            tokens += int((trg[1:] != 0).sum())
            real += int((trg[1:] != 0).sum()) + int((src != 0).sum())
            total += trg[1:].numel() + src.numel()
            epochs += len(chunk) / len(data)
            if time.perf_counter() - start > minutes * 60:
                break
    seconds = time.perf_counter() - start
    model.eval()
    hyps = []
    for b in range(0, len(splits["test"]), 128):
        rows = model.greedy(pad([src_v.ids(e["source"]) for e in splits["test"][b : b + 128]]))
        for r in rows:
            r = r[: r.index(3)] if 3 in r else r
            hyps.append(" ".join(trg_v.itos[i] for i in r))
    return {"way": "tutorial", "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": seconds,
            "epochs": round(epochs, 2), "target_tokens_per_s": tokens / seconds, "padding_share": 1 - real / total,
            "bleu": sacrebleu.corpus_bleu(hyps, [[e["target"] for e in splits["test"]]]).score,
            "peak_rss_mb": peak_rss_mb()}


# --- nlpkit ------------------------------------------------------------------------------------------------


class TimeUp(Exception):
    pass


def run_nlpkit(minutes: float) -> dict:
    from nlpkit_plugins.tasks.translation import Translation

    from nlpkit.plugins import registry
    from nlpkit.train.batching import length_batches
    from nlpkit.train.log import MetricsLog
    from nlpkit.train.loop import make_accelerator, predict, train
    from nlpkit.train.options import TrainOptions

    splits = load_pairs()
    task = Translation()
    task.prepare({"train": splits["train"][:1]})
    plugin = registry().model("attention")
    options = plugin.Options(vocab_size=6000, tokenizer="bpe", dropout=0.3, **SIZES)
    model = plugin.create(task.spec, options, splits["train"])
    train_opts = TrainOptions(epochs=1000, max_tokens=3000, lr=3e-3, warmup=0.0, eval_every=10**9, log_every=5,
                              progress=False)
    features = [model.encode(e) for e in splits["train"]]
    accelerator, precision = make_accelerator(train_opts, type(model))
    start, seen = time.perf_counter(), {}

    class TimedLog(MetricsLog):
        """The loop's metrics log, which also ends training once the wall-time budget is spent."""

        def __call__(self, **row):
            super().__call__(**row)
            seen.update(row)
            if time.perf_counter() - start > minutes * 60:
                raise TimeUp

    log = TimedLog(Path(tempfile.mkdtemp()) / "metrics.jsonl")
    try:
        train(model, task, features, [], [], train_opts, 1, log, accelerator, precision)
    except TimeUp:
        pass
    batches = length_batches([f["length"] for f in features], 10**9, 3000, seed=1)
    real = sum(f["length"] for f in features)
    padded_total = sum(max(features[i]["length"] for i in b) * len(b) for b in batches)
    mean_target = sum(f["n_tokens"] for f in features) / len(features)
    test = [model.encode(e) for e in splits["test"]]
    model.options.eval_beam_size = 1  # greedy, as on the tutorial side
    hyps = [p["prediction"] for p in predict(model, test, train_opts, final=False)]
    return {"way": "nlpkit", "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": time.perf_counter() - start, "epochs": seen.get("epoch"),
            "target_tokens_per_s": seen.get("examples_per_s", 0) * mean_target,
            "padding_share": 1 - real / padded_total, "precision": precision,
            "bleu": sacrebleu.corpus_bleu(hyps, [[e["target"] for e in splits["test"]]]).score,
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time per side")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="where the results go")
    parser.add_argument("--only", choices=["tutorial", "nlpkit"], help="run one side in this process (internal)")
    args = parser.parse_args()
    if args.only:
        result = run_tutorial(args.minutes) if args.only == "tutorial" else run_nlpkit(args.minutes)
        print("RESULT " + json.dumps(result))
        return
    results = []
    for side in ("tutorial", "nlpkit"):  # one after the other: they never share the CPU
        out = subprocess.run([sys.executable, __file__, "--only", side, "--minutes", str(args.minutes)],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
        print(json.dumps(results[-1]), flush=True)
    from nlpkit.train.hardware import cpu_name

    speedup = results[1]["target_tokens_per_s"] / max(results[0]["target_tokens_per_s"], 1e-9)
    lines = [f"CPU: {cpu_name()}; {args.minutes} min of training per side, one after the other; greedy test2016 BLEU",
             "", "| way | parameters | target tokens/s | padding | epochs | BLEU | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['way']} | {r['parameters']:,} | {r['target_tokens_per_s']:.0f} | {r['padding_share']:.1%} | "
              f"{r['epochs'] or 0:.2f} | {r['bleu']:.1f} | {r['peak_rss_mb']:.0f} |" for r in results]
    lines.append(f"\nnlpkit / tutorial target tokens/s: {speedup:.1f}x; BLEU after {args.minutes} min: "
                 f"{results[1]['bleu']:.1f} vs {results[0]['bleu']:.1f}")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seq2seq_vs_tutorial.md").write_text("\n".join(lines) + "\n")
    (out / "seq2seq_vs_tutorial.json").write_text(json.dumps(
        {"cpu": cpu_name(), "minutes": args.minutes, "results": results, "speedup": speedup,
         "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))

if __name__ == "__main__":
    main()
