"""``python -m edge_actors`` is the ``edge-actors`` command."""

from edge_actors.cli import main

raise SystemExit(main())
