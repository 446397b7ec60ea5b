"""Every user-facing error derives from errors.UserError (main.py catches it)."""

import importlib
import inspect
import pkgutil

import autoscale_jax
from autoscale_jax import errors

# Errors that mean a bug in this code, not a wrong input: they keep their
# traceback. {class name: why it is not a UserError}
BUG_CLASSES = {
    "KKTError": "the solver's own optimality certificate failed: a solver "
                "bug, not something the user can fix",
}
# User errors not yet derived from UserError (each with the reason); empty.
PENDING: dict[str, str] = {}


def _error_classes():
  found = {}
  for info in pkgutil.walk_packages(autoscale_jax.__path__, "autoscale_jax."):
    module = importlib.import_module(info.name)
    for name, cls in inspect.getmembers(module, inspect.isclass):
      if (cls.__module__ == module.__name__ and issubclass(cls, Exception)
          and name.endswith("Error")):
        found[f"{module.__name__}.{name}"] = cls
  return found


def test_every_error_is_a_user_error_or_a_listed_bug():
  classes = _error_classes()
  assert len(classes) >= 15, sorted(classes)  # the walk found the package
  wrong = [path for path, cls in classes.items()
           if not issubclass(cls, errors.UserError)
           and cls.__name__ not in BUG_CLASSES
           and cls.__name__ not in PENDING]
  assert not wrong, (
      f"{wrong}: derive them from autoscale_jax.errors.UserError (one-line "
      "message naming the input and the fix), or list them in BUG_CLASSES "
      "with the reason")
  for path, cls in classes.items():
    if cls.__name__ in BUG_CLASSES:
      assert not issubclass(cls, errors.UserError), path
    if cls.__name__ in PENDING:
      assert not issubclass(cls, errors.UserError), (
          f"{path} is a UserError now: remove it from PENDING")
  names = {cls.__name__ for cls in classes.values()}
  assert set(BUG_CLASSES) <= names and set(PENDING) <= names


def test_training_diverged_is_a_user_error_and_a_runtime_error():
  trainer = importlib.import_module("autoscale_jax.train.trainer")
  assert issubclass(trainer.TrainingDiverged, errors.UserError)
  assert issubclass(trainer.TrainingDiverged, RuntimeError)
