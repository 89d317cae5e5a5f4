"""Fixtures of the model plugins' tests: a tiny random BERT folder, and tiny seq2seq models with one batch."""

import pytest
import torch
from nlpkit_plugins.models.attention import AttentionModel
from nlpkit_plugins.tasks.translation import Translation

TEXTS = ["Zwei junge, weiße Männer sind im Freien.", "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
         "Eine Gruppe von Menschen steht vor einem Iglu.", "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."]


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory):
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer: the real code path, in seconds."""
    from nlpkit_plugins.models.bert.pretrained import resolve_pretrained
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_pretrained("minilm")).save_pretrained(folder)
    return str(folder)


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


@pytest.fixture
def small_seq2seq():
    """``small_seq2seq(plugin=AttentionModel, **options)``: a tiny seq2seq model fitted on four sentences (untrained)
    and one padded batch of them."""
    return small_model
