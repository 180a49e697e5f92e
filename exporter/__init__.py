"""sidekiq-exporter: Prometheus metrics for Sidekiq, sampled from Redis."""

__version__ = "0.1.0"
