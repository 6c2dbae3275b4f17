"""The configuration: TOML files loaded and validated once (:mod:`.loader`) into frozen
objects (:mod:`.types`); the tables of fleet mode (:mod:`.cluster`) and deployment
(:mod:`.deploy`); secrets read from files (:mod:`.secretfile`). Imports only the model,
the errors and policy (durations)."""

from .loader import load, resolve_config_path
from .types import AcmeConfig, CertificateConfig, Config, Http01Config, MetricsConfig

__all__ = [
    "AcmeConfig",
    "CertificateConfig",
    "Config",
    "Http01Config",
    "MetricsConfig",
    "load",
    "resolve_config_path",
]
