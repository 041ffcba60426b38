"""Importing this module applies the logging config named by OPSKIT_LOG_CONFIG (opskit)."""

import opskit_logging

opskit_logging.configure()
