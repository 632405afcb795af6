"""Experiment configs: the TOML schema and the configs shipped with the package.

Example:
    >>> from sbi_exsitu.config import packaged_config
    >>> packaged_config("quickstart.toml").is_file()
    True
"""

from sbi_exsitu.config.packaged import packaged_config, packaged_configs, resolve_config

__all__ = ["packaged_config", "packaged_configs", "resolve_config"]
