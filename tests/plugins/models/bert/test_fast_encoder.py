"""The fast BERT encoder and FastAdamW are exact: same logits as transformers' BertModel on the same weights,
one optimizer step (with clipping) equal to torch.optim.AdamW, a save/load round trip that predicts the same."""

import io
import shutil
from functools import partial

import pytest
import torch
from nlpkit_plugins.models.bert import BertModel
from nlpkit_plugins.models.bert.fast_encoder import FastBertEncoder, fast_dropout
from nlpkit_plugins.models.bert.options import BertOptions
from nlpkit_plugins.models.bert.pretrained import pretrained_encoder
from nlpkit_plugins.models.bert.sparse_rows import FastAdamW, SparseRowEmbedding
from torch.nn.utils import clip_grad_norm_, get_total_norm
from transformers import BertConfig
from transformers import BertModel as HFBertModel

from nlpkit.contract import TaskSpec
from nlpkit.errors import NlpkitError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer, 32-wide random BERT (vocab 100) with a pooler, and a tokenizer whose ids fit that vocab."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    HFBertModel(config).save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(96)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(folder)
    return str(folder)


def batch(padded: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 100, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 5:] = 0
        mask[2, 3:] = 0
        ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}


@pytest.mark.parametrize("padded", [False, True])
def test_same_outputs_as_transformers(tiny, padded):
    hf = HFBertModel.from_pretrained(tiny, attn_implementation="eager").eval()
    fast = FastBertEncoder.from_hf(hf, pooler=True).eval()
    b = batch(padded)
    with torch.no_grad():
        want = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        got = fast(b["input_ids"], b["attention_mask"])
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(got.last_hidden_state[keep], want.last_hidden_state[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=1e-5)


def make(tiny, fast: bool) -> BertModel:
    torch.manual_seed(3)
    spec = TaskSpec("classification", ["a", "b", "c"])
    options = BertOptions(pretrained=tiny, pooling="pooler", dropout=0.0, fast=fast)
    model = BertModel.create(spec, options, [])
    for module in model.modules():  # dropout off in the encoder too: the two paths draw different masks
        for name in ("p_hidden", "p_attn"):
            if hasattr(module, name):
                setattr(module, name, 0.0)
    if isinstance(model.encoder, FastBertEncoder):
        model.encoder.config.hidden_dropout_prob = 0.0
    return model


def test_fast_optimizer_step_equals_adamw_with_clipping(tiny):
    fast, plain = make(tiny, True), make(tiny, False)
    assert isinstance(fast.encoder, FastBertEncoder) and not isinstance(plain.encoder, FastBertEncoder)
    plain.encoder.config.hidden_dropout_prob = plain.encoder.config.attention_probs_dropout_prob = 0.0
    for m in plain.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt_fast = fast.make_optimizer(1e-3, 0.0)
    assert isinstance(opt_fast, FastAdamW) and plain.make_optimizer(1e-3, 0.0) is None
    opt_plain = torch.optim.AdamW(plain.param_groups(1e-3, 0.0), lr=1e-3)
    fast.train(), plain.train()
    for step in range(3):  # new rows appear in later steps: the permutation and prefix grow
        b = batch(padded=step == 1)
        b["input_ids"] = (b["input_ids"] + 17 * step) % 96 + 4 * (b["attention_mask"] == 1)
        norms = []
        for model, opt in ((fast, opt_fast), (plain, opt_plain)):
            model(**b).loss.backward()
            clip = opt.clip_grad_norm_ if opt is opt_fast else partial(clip_grad_norm_, list(model.parameters()))
            norms.append(clip(0.05))  # clipping active (the fast one skips the table's zero rows)
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.testing.assert_close(norms[0], norms[1], atol=1e-6, rtol=1e-5)
        assert norms[0] > 0.05
    word = fast.encoder.word
    assert 0 < word.n_active < 100 and word.table.grad is not None and not word.table.grad.any()
    torch.testing.assert_close(word.row_weight(), plain.encoder.embeddings.word_embeddings.weight.detach(),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.head.weight, plain.head.weight, atol=1e-6, rtol=0)
    q = fast.encoder.layers[1].qkv.weight[:32]
    torch.testing.assert_close(q, plain.encoder.encoder.layer[1].attention.self.query.weight, atol=1e-6, rtol=0)
    # the optimizer's state goes through a checkpoint (weights_only) and back
    buffer = io.BytesIO()
    torch.save(opt_fast.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    again = fast.make_optimizer(1e-3, 0.0)
    again.load_state_dict(state)
    assert float(again.state_dict()["state"][0]["step"]) == 3


def test_clip_within_the_norm_leaves_gradients_alone(tiny):
    model = make(tiny, True)
    optimizer = model.make_optimizer(1e-3, 0.0)
    model.train()
    model(**batch(padded=True)).loss.backward()
    before = [p.grad.clone() for p in model.parameters()]
    norm = optimizer.clip_grad_norm_(1e9)
    torch.testing.assert_close(norm, get_total_norm([p.grad for p in model.parameters()]))
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters(), strict=True))


def test_weight_decay_falls_back_to_adamw(tiny):
    assert make(tiny, True).make_optimizer(1e-2, 0.01) is None


def test_sparse_embedding_permutation_is_consistent():
    weight = torch.randn(10, 4)
    emb = SparseRowEmbedding(weight)
    for ids in ([[7, 2, 7]], [[2, 9, 0]], [[5, 6, 7, 8]]):
        out = emb(torch.tensor(ids))
        torch.testing.assert_close(out, weight[torch.tensor(ids)])
        assert sorted(emb.row_of_slot.tolist()) == list(range(10))
        assert (emb.slot_of_row[emb.row_of_slot] == torch.arange(10)).all()
    assert emb.n_active == 7
    torch.testing.assert_close(emb.row_weight(), weight)


def test_save_load_round_trip(tiny, tmp_path):
    model = make(tiny, True)
    opt = model.make_optimizer(1e-3, 0.0)
    model.train()
    model(**batch(True)).loss.backward()
    opt.step()
    model.eval()
    model.save(tmp_path / "m")
    loaded = BertModel.load(tmp_path / "m").eval()
    assert isinstance(loaded.encoder, FastBertEncoder)
    b = batch(True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**b).logits, model(**b).logits)
    assert loaded.predict(b) == model.predict(b)


def seq2seq_options(tiny, fast: bool) -> BertOptions:
    return BertOptions(pretrained=tiny, fast=fast, dropout=0.0, target_vocab_size=60, embedding_dim=16,
                       hidden_size=32, attention_size=16, beam_size=2, max_length=16)


@pytest.mark.parametrize("fast", [True, False])
def test_translation_encoder_is_fast_and_both_layouts_load(tiny, tmp_path, fast):
    """``bert`` for seq2seq trains the fast encoder (with FastAdamW where the word table is not decayed), and a
    saved model loads in the layout it was saved in: fast, or transformers' (runs saved before the fast path)."""
    from nlpkit.testing import build, make_batch, predictions

    model, examples = build(BertModel, "seq2seq", seq2seq_options(tiny, fast).model_dump())
    assert isinstance(model.encoder, FastBertEncoder) is fast
    assert isinstance(model.make_optimizer(1e-3, 0.0), FastAdamW) is fast
    assert model.make_optimizer(1e-3, 0.01) is None  # decay touches every row: the plain AdamW
    model.eval()
    model.save(tmp_path)
    loaded = BertModel.load(tmp_path).eval()
    assert type(loaded.encoder) is type(model.encoder)
    with torch.no_grad():
        batch = make_batch(model, examples[:4])
        torch.testing.assert_close(loaded.encode_source(batch), model.encode_source(batch))
    for m in (model, loaded):
        m.prepare_inference(True)
    assert predictions(loaded, examples[:4]) == predictions(model, examples[:4])


# ----------------------------------------------------------------------------------- one rule, both layouts

def same_logits(a: BertModel, b: BertModel) -> None:
    x = batch(True)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(**x).logits, b.eval()(**x).logits, atol=1e-5, rtol=1e-5)


def test_a_fast_model_loads_as_transformers_under_ddp_or_on_a_gpu(tiny, tmp_path, monkeypatch):
    """Saved by the fast path (one CPU process), loaded where the rule takes the stock one (WORLD_SIZE=2 as
    torchrun sets it): converted on load, same weights, same outputs; and back."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = make(tiny, True)
    optimizer = model.make_optimizer(1e-3, 0.0)
    model.train()
    model(**batch(True)).loss.backward()  # a step, so the word table is permuted
    optimizer.step()
    assert 0 < model.encoder.word.n_active < 100
    model.save(tmp_path / "fast")
    monkeypatch.setenv("WORLD_SIZE", "2")
    stock = BertModel.load(tmp_path / "fast")
    assert isinstance(stock.encoder, HFBertModel) and stock.make_optimizer(1e-3, 0.0) is None
    assert stock.encoder.config._attn_implementation == "sdpa"
    same_logits(stock, model)
    stock.save(tmp_path / "stock")
    monkeypatch.delenv("WORLD_SIZE")
    again = BertModel.load(tmp_path / "stock")
    assert isinstance(again.encoder, FastBertEncoder)
    same_logits(again, model)


def test_a_new_model_under_ddp_is_built_in_the_stock_layout(tiny, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    model = make(tiny, True)
    assert isinstance(model.encoder, HFBertModel) and model.make_optimizer(1e-3, 0.0) is None


# ----------------------------------------------------------------------------------- loading is checked

def test_a_renamed_pretrained_weight_is_an_error_naming_it(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "renamed"
    shutil.copytree(tiny, folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["encoder.layer.1.attention.self.qry.weight"] = weights.pop("encoder.layer.1.attention.self.query.weight")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for fast in (True, False):
        with pytest.raises(NlpkitError, match=r"missing.*encoder\.layer\.1\.attention\.self\.query\.weight"):
            pretrained_encoder(BertOptions(pretrained=str(folder), fast=fast), pooler=True)


def test_the_fast_layout_uses_every_weight_and_checks_every_shape(tiny):
    hf = HFBertModel.from_pretrained(tiny)
    state = dict(hf.state_dict())
    FastBertEncoder.from_hf_state(hf.config, state, pooler=True)  # as it is: fits
    missing = {k: v for k, v in state.items() if k != "encoder.layer.0.output.dense.bias"}
    with pytest.raises(NlpkitError, match=r"missing: encoder\.layer\.0\.output\.dense\.bias"):
        FastBertEncoder.from_hf_state(hf.config, missing, pooler=True)
    extra = {**state, "encoder.layer.2.output.dense.bias": torch.zeros(32)}
    with pytest.raises(NlpkitError, match=r"not used: encoder\.layer\.2\.output\.dense\.bias"):
        FastBertEncoder.from_hf_state(hf.config, extra, pooler=True)
    with pytest.raises(NlpkitError, match=r"not used: pooler\.dense\.bias, pooler\.dense\.weight"):  # no pooler asked for
        FastBertEncoder.from_hf_state(hf.config, state, pooler=False)
    # [1, 32] would broadcast into a [32] bias without a word
    squeezed = {**state, "encoder.layer.0.attention.self.key.bias": state["encoder.layer.0.attention.self.key.bias"][None]}
    with pytest.raises(NlpkitError, match=r"key\.bias \(1, 32\) does not have the shape .*\(32,\)"):
        FastBertEncoder.from_hf_state(hf.config, squeezed, pooler=True)


# ----------------------------------------------------------------------------------- dropout and devices

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3, 1 / 3])
def test_fast_dropout_scales_by_its_masks_real_keep_probability(p, dtype):
    dropped = round(p * 32768) / 32768
    assert dropped != p  # the case that matters: the mask's probability is not p
    torch.manual_seed(0)
    y = fast_dropout(torch.ones(200_000, dtype=dtype), p, True)
    kept = y[y != 0]
    want = torch.full_like(kept, 1.0).mul(1.0 / (1.0 - dropped))
    assert torch.equal(kept, want), f"kept elements scaled by {kept[0].item()!r}, want 1 / (1 - {dropped})"
    assert abs((y == 0).float().mean().item() - dropped) < 0.004  # the mask drops what it says (4 sigma: 0.0042)
    assert fast_dropout(torch.ones(8, dtype=dtype), 1.0, True).eq(0).all()


def test_fast_adamw_keeps_its_tensors_on_the_parameters_device(monkeypatch):
    """On the meta device (no data, real device checks): every tensor the fused kernel gets is on the parameters'
    device, and clipping reads no number back to the host (a meta tensor cannot be read)."""
    params = [torch.nn.Parameter(torch.empty(6, 4, device="meta")), torch.nn.Parameter(torch.empty(4, device="meta"))]
    for p in params:
        p.grad = torch.empty_like(p)
    kernel = torch._fused_adamw_
    calls = []

    def device_asserting(ps, gs, ms, vs, maxes, steps, **kwargs):
        tensors = [*ps, *gs, *ms, *vs, *steps] + [kwargs["grad_scale"]] * (kwargs["grad_scale"] is not None)
        calls.append(sorted({str(t.device) for t in tensors}))
        return kernel(ps, gs, ms, vs, maxes, steps, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", device_asserting)
    optimizer = FastAdamW(params, sparse=[], lr=1e-3)
    optimizer.clip_grad_norm_(1.0)
    optimizer.step()
    assert calls == [["meta"]]
    assert all(t.device.type == "meta" for s in optimizer.state.values() for t in s.values())


@pytest.mark.parametrize("train", [False, True])
def test_bf16_pads_lengths_to_a_multiple_of_8_and_answers_for_the_real_ones(tiny, monkeypatch, train):
    """Under CPU bf16 autocast the encoder pads a length-7 batch to 8 (few oneDNN kernel shapes), masks the
    padding, and returns states for the 7 real positions: the same as computing on 7 (bf16 tolerance), with
    gradients for the real positions only."""
    import nlpkit_plugins.models.bert.fast_encoder as fast_bert

    from nlpkit.train.hardware import sequence_multiple

    assert sequence_multiple("cpu") == 1  # fp32: exact lengths (MKL has no per-shape cost)
    hf = HFBertModel.from_pretrained(tiny, attn_implementation="eager")
    fast = FastBertEncoder.from_hf(hf, pooler=True).train(train)
    fast.config.hidden_dropout_prob = fast.config.attention_probs_dropout_prob = 0.0
    for layer in fast.layers:
        layer.p_hidden = layer.p_attn = 0.0
    b = batch(padded=True)
    seen = []
    states = FastBertEncoder.states

    def spy(self, input_ids, attention_mask=None, *args, **kwargs):
        seen.append(tuple(input_ids.shape))
        return states(self, input_ids, attention_mask, *args, **kwargs)

    monkeypatch.setattr(FastBertEncoder, "states", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sequence_multiple("cpu") == 8
        padded = fast(b["input_ids"], b["attention_mask"])
        monkeypatch.setattr(fast_bert, "sequence_multiple", lambda *_: 1)
        exact = fast(b["input_ids"], b["attention_mask"])
    assert seen == [(3, 7), (3, 8), (3, 7)]
    assert padded.last_hidden_state.shape == exact.last_hidden_state.shape == (3, 7, 32)
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(padded.last_hidden_state[keep].float(), exact.last_hidden_state[keep].float(),
                               atol=0.05, rtol=0.05)
    torch.testing.assert_close(padded.pooler_output.float(), exact.pooler_output.float(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("frozen", [1, 2])
def test_a_frozen_bottom_is_cached_exact_and_never_updated(tiny, frozen):
    """``frozen_layers``: the cached bottom gives the states the whole encoder computes (the bottom without
    dropout, as pretrained), the sentence is computed once, a step changes only the layers above and the decoder,
    and the transformers layout (GPU, DDP) freezes the same parameters."""
    from nlpkit.testing import build, make_batch

    options = seq2seq_options(tiny, True).model_dump() | {"frozen_layers": frozen}
    model, examples = build(BertModel, "seq2seq", options)
    encoder = model.encoder
    b = make_batch(model, examples[:4])
    model.train()
    for layer in encoder.layers:
        layer.p_hidden = layer.p_attn = 0.0  # compare the math, not dropout draws
    encoder.config.hidden_dropout_prob = 0.0
    with torch.no_grad():
        want = encoder(b["source"], (b["source"] != 0).long()).last_hidden_state
        got_state = model.encode_source(b)
    sentences = {tuple(r[:n]) for r, n in zip(b["source"].tolist(), b["source_lengths"].tolist())}
    assert len(model.bottom.rows) == len(sentences)  # one entry per distinct source sentence
    with torch.no_grad():  # the same states as the full encoder (mean summary included)
        mask = (torch.arange(b["source"].shape[1])[None] < b["source_lengths"][:, None]).unsqueeze(-1)
        want_summary = (want * mask).sum(1) / mask.sum(1)
        full = model.decoder.start(want, mask.squeeze(-1), want_summary)
    real = mask.squeeze(-1)
    for key in full:  # at real source positions (padding is masked out of the attention)
        got, ref = got_state[key], full[key]
        if got.dim() >= 2 and got.shape[:2] == real.shape:
            got, ref = got[real], ref[real]
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    frozen_names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.word") for n in frozen_names)
    assert {f"encoder.layers.{i}.qkv.weight" for i in range(frozen)} <= frozen_names
    assert not any(n.startswith(f"encoder.layers.{frozen}.") for n in frozen_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert model.make_optimizer(1e-2, 0.0) is None  # no sparse word rows to update: the default AdamW
    opt = torch.optim.AdamW([p for g in model.param_groups(1e-2, 0.0) for p in g["params"]], lr=1e-2)
    model(**b).loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not changed & frozen_names
    assert any(n.startswith("decoder.") for n in changed)
    assert frozen == 2 or any(n.startswith("encoder.layers.1.") for n in changed)
    cached = dict(model.bottom.rows)
    model(**make_batch(model, examples[:4])).loss.backward()  # seen sentences: read from the cache
    assert all(model.bottom.rows[k] is v for k, v in cached.items()) and len(model.bottom.rows) == len(cached)
    slow, _ = build(BertModel, "seq2seq", seq2seq_options(tiny, False).model_dump() | {"frozen_layers": frozen})
    slow_frozen = {n for n, p in slow.named_parameters() if not p.requires_grad}
    assert {f"encoder.encoder.layer.{i}.attention.self.query.weight" for i in range(frozen)} <= slow_frozen
    assert slow.bottom is None and all(not m.training for m in slow.train().frozen)
