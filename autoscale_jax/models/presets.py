"""Named model sizes (GPT-2 and BERT), applied onto ``config.model``."""

from __future__ import annotations

from typing import Any

import ml_collections

PRESETS: dict[str, dict[str, Any]] = {
    "gpt2_tiny": dict(kind="gpt2", num_layers=2, d_model=64, num_heads=4,
                      mlp_dim=256, max_len=128, dropout=0.0),
    "gpt2_small": dict(kind="gpt2", num_layers=12, d_model=768, num_heads=12,
                       mlp_dim=3072, max_len=1024, dropout=0.1),
    "gpt2_medium": dict(kind="gpt2", num_layers=24, d_model=1024, num_heads=16,
                        mlp_dim=4096, max_len=1024, dropout=0.1),
    "gpt2_large": dict(kind="gpt2", num_layers=36, d_model=1280, num_heads=20,
                       mlp_dim=5120, max_len=1024, dropout=0.1),
    "bert_tiny": dict(kind="bert", num_layers=2, d_model=64, num_heads=4,
                      mlp_dim=256, max_len=128, dropout=0.0, type_vocab_size=2),
    "bert_base": dict(kind="bert", num_layers=12, d_model=768, num_heads=12,
                      mlp_dim=3072, max_len=512, dropout=0.1, type_vocab_size=2),
}

# Reference vocabularies and the published parameter counts they give.
REFERENCE_VOCAB = {"gpt2": 50257, "bert": 30522}
REFERENCE_PARAMS = {"gpt2_small": 124e6, "gpt2_medium": 355e6,
                    "gpt2_large": 774e6, "bert_base": 110e6}


def preset(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """A ``config.model``-shaped ConfigDict for the named size (plus overrides)."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: "
                     + ", ".join(PRESETS))
  c = ml_collections.ConfigDict(dict(dtype="float32", remat=False,
                                     type_vocab_size=2))
  c.update(PRESETS[name])
  c.update(overrides)
  return c
