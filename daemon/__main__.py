"""`python -m daemon` is the same as the `exportd` console script."""

from daemon.cli.main import main

raise SystemExit(main())
