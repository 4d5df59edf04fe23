"""``python -m omniq`` runs the CLI."""

from __future__ import annotations

from omniq.cli import main

raise SystemExit(main())
