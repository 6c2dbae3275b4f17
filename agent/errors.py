"""One base error; each subclass says who must act and maps to an exit code.

Every message is one line a human can act on: what failed, for which file, field,
certificate or domain, and what to do next. Nothing here ever holds a secret.
"""

from __future__ import annotations

# Exit codes of the command line (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # some certificate could not be obtained, renewed or deployed
EXIT_USAGE = 2  # bad flags or bad configuration: a human must fix the input


class AgentError(Exception):
    """Base of every expected failure. ``str(err)`` is the user-facing message."""

    exit_code = EXIT_FAILED


class ConfigError(AgentError):
    """The configuration (file, field or value) is wrong; the operator must edit it."""

    exit_code = EXIT_USAGE


class UsageError(AgentError):
    """A command-line flag or argument is wrong."""

    exit_code = EXIT_USAGE


class CAError(AgentError):
    """The ACME server refused or failed a request.

    ``retryable`` says whether trying again later may succeed without a human changing
    anything (a network fault, a server error) or not (the CA refused a domain).
    """

    def __init__(self, message: str, *, retryable: bool = False, problem_type: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.problem_type = problem_type
        self.retry_after: float | None = None  # seconds the CA asked us to wait, if it did
        self.http_status = 0  # of the CA's answer, when there was one
        self.order_issued = False  # the CA had issued the certificate (not downloaded)


class AccountError(CAError):
    """The ACME account cannot be created or used (EAB, contact, deactivated account)."""

    exit_code = EXIT_USAGE


class IssuanceError(AgentError):
    """An order failed or produced a certificate we refuse to put in service."""


class StoreError(AgentError):
    """State on disk could not be read or written (permissions, full disk)."""
