"""`python -m autoscale_jax.data.corpus --out DIR ...`: builds the corpus."""

import sys

from autoscale_jax.data.corpus.build import main

if __name__ == "__main__":
  sys.exit(main())
