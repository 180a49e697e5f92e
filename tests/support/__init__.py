"""Test support: real redis-server and real Sidekiq processes (stdlib only)."""
