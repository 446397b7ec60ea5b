"""TensorFlow (pulled in by seqio, tfds and TensorBoard) must stay off accelerators."""


def hide_accelerators_from_tf() -> None:
  """Keeps TensorFlow off GPUs/TPUs (JAX owns them); safe to call twice."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass  # already initialised, or no such device type
