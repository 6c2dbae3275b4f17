"""Turn ACME problem documents and network failures into one clear line each.

``explain(err, during=..., subject=...)`` returns a :class:`CAError` whose message names what
we were doing, for which certificate or domain, what the CA said, and what to do next.
"""

from __future__ import annotations

import ssl
from typing import Any

import josepy as jose
import requests
from acme import errors as acme_errors
from acme import messages

from ..errors import AccountError, CAError

# What the operator should do, by ACME problem code (RFC 8555 section 6.7 and RFC 8739).
_ADVICE: dict[str, str] = {
    "externalAccountRequired": "the CA requires External Account Binding: set [acme] eab_kid and "
    "eab_hmac_key_file to the credentials your CA issued",
    "invalidContact": "set [acme] email to an address the CA accepts",
    "unsupportedContact": "set [acme] email to an address the CA accepts",
    "rejectedIdentifier": "the CA will not issue for this name: check the domain is allowed for "
    "your account on the CA (pre-approved or in scope), or remove it from the certificate",
    "caa": "a CAA DNS record forbids this CA from issuing for the domain: fix the record",
    "badCSR": "the CA refused the request; check key_type is one the CA allows "
    "(e.g. ec-p256, ec-p384 or rsa-2048)",
    "badSignatureAlgorithm": 'the CA refused the signature algorithm; try key_type = "rsa-2048"',
    "malformed": "the CA rejected the request as malformed; this may be a bug, please report it",
    "rateLimited": "the CA's rate limit was hit; the agent will try again later",
    "serverInternal": "the CA had an internal error; the agent will try again later",
    "userActionRequired": "the CA requires an action from you: open the URL it gives",
    "accountDoesNotExist": "the CA no longer knows this account: remove its folder under "
    "state_dir/accounts and run 'acme-agent register' with fresh EAB credentials",
    "connection": "the CA could not reach this host to validate the domain: check DNS points here "
    "and port 80 is open to the internet",
    "dns": "the CA could not resolve the domain: check its DNS records",
    "incorrectResponse": "the CA got a wrong answer to its HTTP-01 check: check that "
    "/.well-known/acme-challenge/ reaches this agent (proxy or webroot)",
    "tls": "the CA's TLS connection to this host failed during validation",
}
_RETRYABLE = {"rateLimited", "serverInternal", "badNonce", "connection", "dns", "tls"}


def _code(problem: messages.Error) -> str:
    return str(problem.code or (problem.typ or "").rsplit(":", 1)[-1])


def describe_problem(problem: messages.Error) -> str:
    """The CA's own words: detail plus subproblems naming identifiers."""
    detail = str(problem.detail or problem.title or _code(problem) or "no detail")
    subs: Any = getattr(problem, "subproblems", None) or []
    parts = []
    for sub in subs:
        ident = getattr(getattr(sub, "identifier", None), "value", None)
        parts.append(f"{ident}: {sub.detail}" if ident else str(sub.detail))
    return f"{detail} ({'; '.join(parts)})" if parts else detail


def explain(err: BaseException, *, during: str, subject: str = "") -> CAError:
    """A :class:`CAError` for ``err`` raised while ``during`` (e.g. "creating the order")."""
    where = f"{subject}: " if subject else ""
    if isinstance(err, CAError):
        return err
    if isinstance(err, messages.Error):
        return _from_problem(err, during, where)
    if isinstance(err, requests.exceptions.SSLError | ssl.SSLError):
        return CAError(
            f"{where}{during}: the CA's TLS certificate is not trusted ({_short(err)}); "
            "for a private CA set [acme] ca_bundle to its root certificate",
            retryable=False,
            problem_type="tls",
        )
    if isinstance(err, requests.exceptions.ConnectionError):
        return CAError(
            f"{where}{during}: cannot connect to the CA ({_short(err)}); check [acme] directory "
            "and that the CA is reachable from this host",
            retryable=True,
            problem_type="network",
        )
    if isinstance(err, requests.exceptions.Timeout):
        return CAError(
            f"{where}{during}: the CA did not answer in time",
            retryable=True,
            problem_type="network",
        )
    if isinstance(err, jose.Error):
        return CAError(
            f"{where}{during}: the CA sent a malformed response ({_short(err)}); refusing it",
            retryable=True,
            problem_type="malformed-response",
        )
    if isinstance(err, acme_errors.ClientError | ValueError | requests.RequestException):
        return CAError(
            f"{where}{during}: unexpected answer from the CA: {_short(err)}",
            retryable=True,
            problem_type="protocol",
        )
    raise err


def _from_problem(problem: messages.Error, during: str, where: str) -> CAError:
    code = _code(problem)
    said = describe_problem(problem)
    advice = _ADVICE.get(code, "")
    if code == "userActionRequired":
        instance = getattr(problem, "instance", None) or "(no URL given)"
        advice = f"the CA requires an action from you: open {instance}, then run again"
    if (
        code == "unauthorized"
        and "account" in said.lower()
        and (
            "deactivated" in said.lower()
            or "revoked" in said.lower()
            or "not valid" in said.lower()
        )
    ):
        code = "accountDoesNotExist"
        advice = _ADVICE[code]
    if "contact" in said.lower() and code in ("malformed", "invalidContact", "unsupportedContact"):
        code = "invalidContact"  # e.g. acme2certifier: "malformed: Contact information is missing"
        advice = _ADVICE[code]
    message = f"{where}{during}: the CA said {code}: {said}"
    if advice:
        message += f" -> {advice}"
    account_codes = ("externalAccountRequired", "accountDoesNotExist", "invalidContact")
    cls = AccountError if code in account_codes else CAError
    return cls(message, retryable=code in _RETRYABLE, problem_type=code)


def with_wait(error: CAError) -> CAError:
    """Say when the CA allows the next try, if it said (``error.retry_after``)."""
    if error.retry_after is not None and "Retry-After" not in str(error):
        error.args = (f"{error} (the CA asks to wait {error.retry_after:.0f} s: Retry-After)",)
    return error


def _short(err: BaseException) -> str:
    # An error status without a problem document (transport.UnexpectedResponse) says
    # "HTTP 502 with a non-problem body (text/html)" itself.
    if isinstance(err, ValueError) and "Expecting" in str(err):
        return f"a body that is not valid JSON ({err})"
    text = str(err)
    if "Connection refused" in text:
        return "connection refused"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verify failed"
    return text if len(text) < 200 else text[:200] + "..."
