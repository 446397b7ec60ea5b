"""autoscale_jax: scale-aware data mixture optimisation (AutoScale) on JAX."""

__version__ = "0.1.0"
