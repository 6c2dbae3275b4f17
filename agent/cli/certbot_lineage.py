"""What a certbot lineage means for acme-agent: its ``renewal/<name>.conf`` read, and the
certificate definition (and ``[deploy]`` table) that keeps what it did, with one note per
setting that cannot be kept exactly (and what to do about it)."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..config.trust import check_trusted
from ..config.types import DEFAULT_CA, Config
from ..errors import ConfigError

# certbot reads only renewal/*.conf: a lineage taken over is renamed to this suffix.
TAKEN_OVER = ".acme-agent"
# How certbot's installers reloaded the server, as [deploy] keys.
INSTALLER_RELOAD: dict[str, dict[str, object]] = {
    "nginx": {"reload": "nginx"},
    "apache": {
        "reload": "command",
        "test_command": ["apachectl", "configtest"],
        "reload_command": ["apachectl", "graceful"],
    },
}
SHELL = "/bin/sh"


@dataclass(frozen=True)
class Lineage:
    name: str
    conf: Path  # the file read (renewal/<name>.conf, or <name>.conf.acme-agent once taken over)
    certbot_dir: Path  # absolute
    values: dict[str, str]  # top-level keys and [renewalparams]

    def path(self, key: str) -> Path | None:
        value = self.values.get(key)
        return Path(value) if value else None

    @property
    def original_conf(self) -> Path:
        """Where certbot keeps (or kept) this lineage's renewal configuration."""
        return self.certbot_dir / "renewal" / f"{self.name}.conf"

    @property
    def live(self) -> Path:
        return self.certbot_dir / "live" / self.name

    @property
    def taken_over(self) -> bool:
        return self.conf.name.endswith(TAKEN_OVER)

    @property
    def header(self) -> str:
        """The first line of the file written for it: how a later run knows it."""
        return f"# Imported by acme-agent import-certbot from {self.original_conf}"


def parse_renewal_conf(path: Path, certbot_dir: Path) -> Lineage:
    """certbot's configobj files: ``key = value`` lines, ``[section]``/``[[sub]]`` headers.
    Top-level keys and those of [renewalparams] are kept; nested sections are skipped."""
    values: dict[str, str] = {}
    section = ""
    # Its hooks run as root here: only a file root (or this user) could have written.
    checked = check_trusted(path, "certbot renewal configuration")
    try:
        text = checked.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text; not imported") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip() if not line.startswith("[[") else "nested"
            continue
        key, sep, value = line.partition("=")
        if sep and section in ("", "renewalparams"):
            values[key.strip()] = unquote(value.strip(), path)
    name = path.name.removesuffix(TAKEN_OVER).removesuffix(".conf")
    return Lineage(name, path, certbot_dir, values)


def unquote(value: str, path: Path) -> str:
    """A configobj value as certbot wrote it: quoted ('...', "...", or triple quotes when
    it holds both) when it holds a comma, '#', a quote or edge spaces; otherwise bare, up
    to a comment. The closing quote is the one followed by the end or a comment."""
    for quote in ("'''", '"""', "'", '"'):
        if value.startswith(quote):
            found = re.match(rf"\A{quote}(.*?){quote}\s*(?:#.*)?\Z", value, re.S)
            if found is None:
                raise ConfigError(f"{path}: a value starts with {quote} and does not end with "
                                  "it on the same line; not imported")  # fmt: skip
            return found.group(1)
    return value.split(" #", 1)[0].rstrip(",").strip()


def lineage_confs(certbot_dir: Path) -> list[Path]:
    """renewal/*.conf, and the ones an earlier ``--link`` took over (one per name)."""
    renewal = certbot_dir / "renewal"
    if not renewal.is_dir():
        return []
    found = {p.name: p for p in renewal.glob(f"*.conf{TAKEN_OVER}")}
    found.update({f"{p.name}{TAKEN_OVER}": p for p in renewal.glob("*.conf")})
    return sorted(found.values(), key=lambda p: p.name)


@dataclass
class Mapping:
    """The keys to write besides name/domains/key_type, and what could not be kept."""

    keys: dict[str, object] = field(default_factory=dict)
    deploy: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def map_lineage(lineage: Lineage, config: Config, key_type: str) -> Mapping:
    values, out = lineage.values, Mapping()
    _map_ca(values.get("server"), config, out)
    if _true(values.get("reuse_key")):
        out.keys["reuse_key"] = True
    if values.get("required_profile"):
        out.keys["profile"] = values["required_profile"]
    if values.get("preferred_profile"):
        out.notes.append(
            f"certbot's preferred_profile {values['preferred_profile']!r} is not kept: "
            "acme-agent's profile is required (a CA that does not offer it fails the renewal); "
            f'add profile = "{values["preferred_profile"]}" to the file if the CA offers it'
        )
    if values.get("preferred_chain"):
        out.keys["preferred_chain"] = values["preferred_chain"]
    _map_deploy(lineage, out)
    _map_run_hooks(lineage, config, out)
    _map_validation(values, config, out)
    _map_key(values, key_type, out)
    return out


def _true(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _map_ca(server: str | None, config: Config, out: Mapping) -> None:
    if not server:
        return
    ca = config.ca_for_directory(server)
    if ca is None:
        out.notes.append(
            f"certbot used {server}, which is no configured CA; renewals go to "
            f"{config.acme.directory} ([acme]): add a [ca.NAME] table with that directory "
            'and ca = "NAME" to the file to keep certbot\'s CA'
        )
    elif ca.name != DEFAULT_CA:
        out.keys["ca"] = ca.name


def directory_hooks(certbot_dir: Path, kind: str) -> list[str]:
    """The executables of renewal-hooks/<kind>/ (certbot runs them for every lineage)."""
    folder = certbot_dir / "renewal-hooks" / kind
    if not folder.is_dir():
        return []
    hooks = sorted(
        p for p in folder.iterdir()
        if p.is_file() and os.access(p, os.X_OK) and not p.name.endswith("~")
    )  # fmt: skip
    # Run as root at every renewal from now on: only files root (or this user) could
    # have written, in folders only they could have written (checked now; the house's
    # [deploy] hooks are the operator's like any other command).
    return [str(check_trusted(p, f"certbot {kind} hook")) for p in hooks]


def shell_hook(commands: list[str]) -> list[str]:
    """certbot runs hooks through a shell, each of them even when one failed; so does this
    argv (its status: failed when any failed)."""
    if len(commands) == 1:
        return [SHELL, "-c", commands[0]]
    body = "; ".join(f"{{ {c}\n}} || rc=1" for c in commands)
    return [SHELL, "-c", f"rc=0; {body}; exit $rc"]


def _map_deploy(lineage: Lineage, out: Mapping) -> None:
    commands = [shlex.quote(p) for p in directory_hooks(lineage.certbot_dir, "deploy")]
    if lineage.values.get("renew_hook"):
        commands.append(lineage.values["renew_hook"])
    installer = lineage.values.get("installer", "")
    if installer in INSTALLER_RELOAD:
        out.deploy.update(INSTALLER_RELOAD[installer])
    elif installer not in ("", "None", "none", "null"):
        out.notes.append(
            f"certbot's installer {installer!r} has no equivalent here; reload the server "
            "from a deploy hook ([deploy] hook, or reload_command)"
        )
    if commands:
        out.deploy["hook"] = shell_hook(commands)


def _map_run_hooks(lineage: Lineage, config: Config, out: Mapping) -> None:
    """pre/post hooks run once per run in acme-agent, from [hooks] of the main file."""
    for kind, configured in (("pre", config.hooks.pre), ("post", config.hooks.post)):
        commands = [shlex.quote(p) for p in directory_hooks(lineage.certbot_dir, kind)]
        if lineage.values.get(f"{kind}_hook"):
            commands.append(lineage.values[f"{kind}_hook"])
        if not commands:
            continue
        wanted = shell_hook(commands)
        if configured is not None and list(configured) == wanted:
            continue
        toml = toml_value(wanted)
        where = f"[hooks] of {config.path}"
        if configured is None:
            out.notes.append(f"certbot's {kind} hook runs once per run here: add {kind} = "
                             f"{toml} to {where}")  # fmt: skip
        else:
            out.notes.append(f"certbot's {kind} hook is not run: {where} already has {kind} = "
                             f"{list(configured)}; make that command also run {toml}")  # fmt: skip


def toml_value(value: object) -> str:
    """A TOML value: JSON's strings, lists and booleans are TOML's, once characters
    outside the BMP are written as themselves (JSON's surrogate pairs are no TOML) and
    DEL escaped (TOML allows no control character in a basic string)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _map_validation(values: dict[str, str], config: Config, out: Mapping) -> None:
    auth = values.get("authenticator", "")
    http01 = config.http01
    if auth.startswith("dns") or auth == "manual":
        out.notes.append(
            f"certbot validated with {auth}; acme-agent answers HTTP-01 only ([http01] "
            f"mode = {http01.mode!r}): make port 80 of every name reach it, or the renewal fails"
        )
    elif auth == "webroot":
        path = values.get("webroot_path", "").split(",")[0].strip()
        if http01.mode != "webroot" or (path and http01.webroot != Path(path)):
            out.notes.append(
                f"certbot answered HTTP-01 from the webroot {path or '(webroot_map)'}; "
                f"acme-agent uses [http01] mode = {http01.mode!r}"
                + (f" with webroot {http01.webroot}" if http01.webroot else "")
                + ": make sure the server on port 80 serves what it writes"
            )
    elif auth in ("nginx", "apache"):
        out.notes.append(
            f"certbot answered HTTP-01 through its {auth} plugin; acme-agent uses [http01] "
            f"mode = {http01.mode!r}: see README 'HTTP-01 through nginx'"
        )
    if _true(values.get("must_staple")):
        out.notes.append("must_staple is not kept: acme-agent requests no OCSP must-staple")
    challenges = values.get("pref_challs", "")
    if challenges and "http-01" not in challenges:
        out.notes.append(f"certbot preferred {challenges}; acme-agent answers HTTP-01 only")


def _map_key(values: dict[str, str], key_type: str, out: Mapping) -> None:
    """certbot would renew with the key type of its settings; acme-agent keeps the one in
    service (key_type), and says so when they differ."""
    wanted = values.get("key_type", "")
    if wanted == "rsa":
        size = values.get("rsa_key_size", "2048")
        certbot = f"rsa-{size}"
    elif wanted == "ecdsa":
        curve = values.get("elliptic_curve", "secp256r1")
        certbot = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(curve, curve)
    else:
        return
    if certbot != key_type:
        out.notes.append(
            f"certbot's settings say {certbot}, the key in service is {key_type}: renewals use "
            f"{key_type} (set key_type in the file to change it)"
        )
