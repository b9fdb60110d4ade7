"""`python -m bert_jax` is `bert-jax`."""

import sys

from bert_jax import cli

sys.exit(cli.main())
