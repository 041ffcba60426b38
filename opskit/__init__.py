"""opskit: production-hardened deployment artifacts for Python web services."""

__version__ = "0.1.0"
