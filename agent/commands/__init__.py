"""CLI command groups; each module exposes ``register(app)`` and is listed in ``agent.cli``."""
