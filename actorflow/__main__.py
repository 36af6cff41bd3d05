"""``python -m actorflow`` runs the command line."""

from __future__ import annotations

from actorflow.cli._main import main

raise SystemExit(main())
