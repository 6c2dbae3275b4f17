"""`python -m agent`: the same entry as the console script (agent.cli.quick)."""

from .cli.quick import main

raise SystemExit(main())
