"""The embedded demo: a simulated Sidekiq cluster in a private redis-server (run.py), and the
writer of Sidekiq's Redis layout (layout.py) that the simulation, the tests and the benchmarks
share. The daemon never imports this package; it writes only to a Redis it started itself.
"""
