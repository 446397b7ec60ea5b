"""Stage ``final``: the target budget trained with each mixture, compared.

One run per mixture of ``config.final.mixtures`` (or ``--mixture``), each
evaluated along the way; ``final/comparison.{json,md}`` holds the speed-up
table. (``--stage=train`` is an alias of this stage.)
"""

from __future__ import annotations

from typing import Any

from etils import epath

from autoscale_jax import distributed
from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.mixing import baselines
from autoscale_jax.mixing import speedup
from autoscale_jax.study import console
from autoscale_jax.study import core
from autoscale_jax.study import options as options_lib


def mixture_of(study: core.Study, name: str) -> records.Mixture:
  """The final-run mixture called ``name`` (a baseline, "projected" or a file)."""
  c = study.config
  layout = study.layout
  if name == "projected":
    if not layout.projected_mixture.exists():
      raise options_lib.StageError(
          f"{layout.projected_mixture} is missing: run --stage=project first")
    name_or_path = str(layout.projected_mixture)
  else:
    name_or_path = name
  small = layout.budget_mixture(0)
  return records.Mixture.from_json(baselines.resolve_mixture(
      name_or_path, list(c.data.domains), float(c.project.target_tokens),
      available_tokens=dict(study.bundle.available_tokens),
      ddo_small=str(small) if small.exists() else None))


def run_final(study: core.Study) -> bool:
  """Trains (or reuses) one run per mixture and writes the comparison."""
  c = study.config
  names = list(study.options.mixtures or c.final.mixtures)
  mixtures = {n: mixture_of(study, n) for n in names}  # fail early
  curves: dict[str, Any] = {}
  finals: dict[str, Any] = {}
  for i, (n, mix) in enumerate(mixtures.items(), 1):
    tokens = {d: int(v) for d, v in mix.tokens.items()}
    rec = study.train_or_load(
        f"final_{slug(n)}", tokens, int(c.seed),
        label=f"[final {i}/{len(mixtures)}]",
        eval_every=int(c.final.eval_every_steps), kind="final", mixture=mix)
    curves[n] = rec.curve
    finals[n] = rec.final_eval
  reference = "projected" if "projected" in curves else names[0]
  table = speedup.comparison_table(curves, c.ddo.metric, reference=reference,
                                   smoothing=int(c.final.smoothing))
  table["final_eval"] = finals
  table["mixtures"] = {n: m.weights for n, m in mixtures.items()}
  md = speedup.to_markdown(table)
  layout = study.layout

  def write():
    layout.final_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(layout.comparison_json, table)
    fileio.atomic_write_text(layout.comparison_md, md)
  distributed.write_once("comparison", write)
  console.say("\n" + md)
  return True


def slug(name: str) -> str:
  """A store-safe run-name part from a mixture name or file path."""
  stem = epath.Path(name).stem if ("/" in name or name.endswith(".json")) \
      else name
  return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
