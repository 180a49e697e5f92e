"""`python -m exporter.demo`: the same as the `sidekiq-exporter-demo` console script."""

from exporter.demo.run import main

raise SystemExit(main())
