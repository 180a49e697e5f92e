"""`python -m exporter`: the same as the `sidekiq-exporter` console script."""

from exporter.cli import main

raise SystemExit(main())
