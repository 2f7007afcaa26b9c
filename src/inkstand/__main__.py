"""`python -m inkstand` runs the command line."""

from inkstand.cli import main

raise SystemExit(main())
