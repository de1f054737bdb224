import sys

from jax_mace.train.cli import main

sys.exit(main())
