"""`python -m bench ...` = the `bench` command; the form launchers such as `torchrun -m bench` need."""

import sys

from bench.cli import main

sys.exit(main())
