"""Every path of a study's workdir, in one place.

  corpus/                     embedded corpus (built by ``data.corpus``)
  cache/                      tokenizer and per-domain token store
  store/                      one JSON record per finished run
  leases/<name>/              the lease fan-out's claims on runs (--worker)
  runs/<name>-<fp[:10]>/      one training directory per run (checkpoints,
                              TensorBoard, result.json)
  plan/                       the DDO runs as files for any trainer
                              (``--stage=plan``: runs.csv, runs.json, exports)
  ddo/budget_<k>/             runs.json (RUNS.json format) and mixture.json
  project/                    mixture.json, estimates.json (every
                              estimator's recommendation) and export/
                              (exported weights)
  final/                      comparison.json and comparison.md
  report/                     index.html, README.md and figures

Every file a user may rely on is written atomically; every finished run is a
record in the store, never retrained.
"""

from __future__ import annotations

import dataclasses

from etils import epath


@dataclasses.dataclass(frozen=True)
class Layout:
  """The paths of the study in ``root`` (a local path or ``gs://...``)."""
  root: epath.Path

  @classmethod
  def of(cls, workdir: epath.PathLike) -> Layout:
    return cls(epath.Path(workdir))

  @property
  def corpus(self) -> epath.Path:
    return self.root / "corpus"

  @property
  def cache(self) -> epath.Path:
    return self.root / "cache"

  @property
  def store(self) -> epath.Path:
    return self.root / "store"

  @property
  def leases(self) -> epath.Path:
    """The lease fan-out's run leases (``experiments/leases.py``)."""
    return self.root / "leases"

  def run_dir(self, name: str, fingerprint: str) -> epath.Path:
    """A run's training directory: ``runs/<name>-<fingerprint[:10]>``."""
    return self.root / "runs" / f"{name}-{fingerprint[:10]}"

  @property
  def plan_dir(self) -> epath.Path:
    return self.root / "plan"

  def budget_dir(self, k: int) -> epath.Path:
    """DDO budget ``k``'s directory (0-based): ``ddo/budget_<k>``."""
    return self.root / "ddo" / f"budget_{k}"

  def budget_runs(self, k: int) -> epath.Path:
    return self.budget_dir(k) / "runs.json"

  def budget_mixture(self, k: int) -> epath.Path:
    return self.budget_dir(k) / "mixture.json"

  @property
  def project_dir(self) -> epath.Path:
    return self.root / "project"

  @property
  def projected_mixture(self) -> epath.Path:
    return self.project_dir / "mixture.json"

  @property
  def estimates(self) -> epath.Path:
    return self.project_dir / "estimates.json"

  @property
  def export_dir(self) -> epath.Path:
    return self.project_dir / "export"

  @property
  def final_dir(self) -> epath.Path:
    return self.root / "final"

  @property
  def comparison_json(self) -> epath.Path:
    return self.final_dir / "comparison.json"

  @property
  def comparison_md(self) -> epath.Path:
    return self.final_dir / "comparison.md"

  @property
  def report_dir(self) -> epath.Path:
    return self.root / "report"

  @property
  def report_markdown(self) -> epath.Path:
    return self.report_dir / "README.md"

  @property
  def report_html(self) -> epath.Path:
    return self.report_dir / "index.html"
