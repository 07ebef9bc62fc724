"""`python -m roll ...`: the same command line as the `roll` console script (see roll/cli.py)."""

from roll.cli import main

raise SystemExit(main())
