"""acme-agent: an ACME (RFC 8555) certificate agent for Linux hosts."""

__version__ = "0.2.0"
