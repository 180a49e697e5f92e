"""The HTTP side: the aiohttp app and its routes (app.py), the web config file (config.py), TLS
(tls.py) and the middleware that enforces it (auth.py). Knows nothing of Sidekiq or Redis.
"""
