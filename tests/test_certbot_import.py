"""import-certbot against lineages certbot itself made (real certbot, real pebble through the
fault proxy, a real nginx): hooks, a profile, certbot's account, nginx lines that read
certbot's live/ files, --link, idempotence and refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509

from agent.cli.certbot_account import account_folder, import_account
from agent.cli.certbot_lineage import Lineage, map_lineage, shell_hook
from agent.cli.main import main
from agent.config import load
from agent.errors import ConfigError
from agent.localca import LocalCA, free_port
from agent.store.certs import Store
from tests.certbot_run import certbot_certonly
from tests.conftest import Setup, cert_table, require_binary, through, write_config
from tests.faultproxy import FaultProxy
from tests.nginx import Nginx

NEW_ACCOUNT = "/sign-me-up"  # pebble's newAccount


def cli(setup: Setup, *args: str) -> int:
    return main(["--config", str(setup.config), *args])


def certbot(tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, name: str, *args: str) -> Path:
    domains = [a for a in args if not a.startswith("-") and "." in a and "/" not in a][:1]
    extra = [a for a in args if a not in domains]
    return certbot_certonly(tmp_path, proxy.directory_url, proxy.ca_bundle, pebble.http_port,
                            (pebble.eab_kid, pebble.eab_hmac_key), name, *domains,
                            extra=extra)  # fmt: skip


def pebble_lineage(tmp_path: Path, pebble: LocalCA, name: str, domain: str) -> Path:
    """A certbot lineage made by certbot itself at the session's pebble (its config dir)."""
    return certbot_certonly(tmp_path, pebble.directory_url, pebble.ca_bundle, pebble.http_port,
                            (pebble.eab_kid, pebble.eab_hmac_key), name, domain)  # fmt: skip


def with_certs_dir(setup: Setup, extra: str = "") -> Path:
    certs_dir = setup.dir / "certs.d"
    certs_dir.mkdir(exist_ok=True)
    setup.config.write_text(f'certs_dir = "{certs_dir}"\n' + setup.config.read_text() + extra)
    return certs_dir


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def state_of(setup: Setup, certs_dir: Path, letsencrypt: Path) -> dict[str, object]:
    """Every file of certs_dir, the state's archive and accounts, certbot's tree: names and
    contents (what a second import must leave as it is)."""
    found: dict[str, object] = {}
    for root in (certs_dir, setup.state / "archive", setup.state / "accounts", letsencrypt):
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                found[str(path)] = os.readlink(path)
            elif path.is_file():
                found[str(path)] = path.read_bytes()
    return found


def test_import_of_certbot_lineages_with_hooks_a_profile_and_nginx_configs(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = tmp_path / "hook-saw"
    hook = f'printf "%s|%s" "$RENEWED_LINEAGE" "$RENEWED_DOMAINS" > {seen}'
    letsencrypt = certbot(tmp_path, pebble, proxy, "hooked", "hooked.example.com",
                          "--deploy-hook", hook, "--pre-hook", "echo pre", "--post-hook",
                          "echo post", "--reuse-key", "--preferred-chain", "Pebble Root",
                          "--key-type", "rsa")  # fmt: skip
    assert seen.read_text().startswith(str(letsencrypt / "live" / "hooked"))  # certbot ran it
    certbot(tmp_path, pebble, proxy, "prof", "prof.example.com", "--required-profile", "classic")
    account_dirs = list((letsencrypt / "accounts").glob("*/dir/*"))
    assert len(account_dirs) == 1  # one certbot account for both lineages
    certbot_account = json.loads((account_dirs[0] / "regr.json").read_text())["uri"]
    sites = tmp_path / "nginx-sites"
    sites.mkdir()
    live = letsencrypt / "live"
    (sites / "hooked.conf").write_text(
        "server {\n    listen 443 ssl;\n"
        f"    ssl_certificate {live}/hooked/fullchain.pem;\n"
        f'    ssl_certificate_key "{live}/hooked/privkey.pem";\n}}\n'
    )
    (sites / "enabled.conf").symlink_to(sites / "hooked.conf")  # sites-enabled: listed once
    (sites / "other.conf").write_text(f"ssl_certificate {live}/unknown/fullchain.pem;\n")
    setup = through(tmp_path, pebble, proxy, certs="")
    certs_dir = with_certs_dir(setup)
    capsys.readouterr()

    assert cli(setup, "import-certbot", str(letsencrypt), "--scan", str(sites)) == 0
    out = capsys.readouterr().out
    ours = setup.state / "live"
    assert f"hooked: imported (hooked.example.com; rsa-2048) into {certs_dir}/hooked.toml" in out
    assert "prof: imported (prof.example.com; ec-p256)" in out
    assert (f"{sites}/enabled.conf:3: {live}/hooked/fullchain.pem -> "
            f"{ours}/hooked/fullchain.pem") in out  # fmt: skip
    assert f"{sites}/enabled.conf:4: {live}/hooked/privkey.pem -> {ours}/hooked/privkey.pem" in out
    assert "hooked.conf:" not in out and "unknown" not in out
    pre = '["/bin/sh", "-c", "echo pre"]'
    assert f"hooked: note: certbot's pre hook runs once per run here: add pre = {pre} to " \
           f"[hooks] of {setup.config}" in out  # fmt: skip
    assert "hooked: note: certbot's post hook runs once per run here: add post = " in out
    assert f"account {certbot_account}: imported for [acme]" in out
    assert f"hooked: certbot still renews it ({letsencrypt}/renewal/hooked.conf)" in out
    assert "2 of 2 certbot lineages imported" in out
    hooked = tomllib.loads((certs_dir / "hooked.toml").read_text())
    assert hooked == {
        "name": "hooked", "domains": ["hooked.example.com"], "key_type": "rsa-2048",
        "reuse_key": True, "preferred_chain": "Pebble Root",
        "deploy": {"hook": ["/bin/sh", "-c", hook]},
    }  # fmt: skip
    assert tomllib.loads((certs_dir / "prof.toml").read_text())["profile"] == "classic"
    assert serial_of(setup.live("hooked") / "cert.pem") == serial_of(live / "hooked" / "cert.pem")
    assert Store(setup.state).load_account(proxy.directory_url).uri == certbot_account  # type: ignore[union-attr]

    before = state_of(setup, certs_dir, letsencrypt)
    assert cli(setup, "import-certbot", str(letsencrypt), "--scan", str(sites)) == 0
    again = capsys.readouterr().out
    assert "hooked: already imported" in again and "prof: already imported" in again
    assert f"account {certbot_account}: already imported for [acme]" in again
    assert state_of(setup, certs_dir, letsencrypt) == before

    # The EAB credentials removed: the renewal uses certbot's account, registers nothing.
    setup = through(tmp_path, pebble, proxy, certs="")
    setup.config.write_text(setup.config.read_text().replace('eab_kid = "', '# eab_kid = "')
                            .replace("eab_hmac_key_file", "# eab_hmac_key_file"))  # fmt: skip
    with_certs_dir(setup)
    assert "eab_kid" not in load(setup.config).acme.__repr__().replace("eab_kid=None", "")
    registrations = len(proxy.posted(NEW_ACCOUNT))
    seen.unlink()
    assert setup.renew("--force", "--cert", "hooked") == 0
    assert len(proxy.posted(NEW_ACCOUNT)) == registrations == 1  # certbot's own, once
    assert setup.versions("hooked") == ["0001", "0002"]
    assert seen.read_text() == f"{setup.live('hooked')}|hooked.example.com"


def test_link_keeps_nginx_serving_through_certbot_paths(
    tmp_path: Path, pebble: LocalCA, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """--link: nginx's unedited lines read acme-agent's files through the link; certbot no
    longer renews the lineage; a second run changes nothing."""
    require_binary("nginx", "nginx")
    letsencrypt = certbot(tmp_path, pebble, proxy, "web", "web.example.com")
    live = letsencrypt / "live" / "web"
    ngx = Nginx(tmp_path / "nginx", free_port(), "")
    ngx.start()
    try:
        text = ngx.conf.read_text().replace(str(ngx.fullchain), f"{live}/fullchain.pem")
        ngx.conf.write_text(text.replace(str(ngx.key), f"{live}/privkey.pem"))
        subprocess.run(ngx.reload_command(), check=True, capture_output=True, timeout=30)
        certbot_serial = serial_of(live / "cert.pem")
        _wait_served(ngx, certbot_serial)
        setup = through(tmp_path, pebble, proxy, certs="")
        certs_dir = with_certs_dir(setup)
        capsys.readouterr()
        args = ("import-certbot", str(letsencrypt), "--scan", str(ngx.dir), "--link")
        assert cli(setup, *args) == 0
        out = capsys.readouterr().out
        assert f"{ngx.conf}:" in out and f"{live}/fullchain.pem -> " in out
        assert f"web: {live} is a link to {setup.live('web')} now" in out
        assert "renamed to web.conf.acme-agent (certbot no longer renews it)" in out
        assert os.readlink(live) == str(setup.live("web"))
        assert (live.parent / "web.certbot" / "cert.pem").exists()  # certbot's folder kept
        assert not (letsencrypt / "renewal" / "web.conf").exists()
        before = state_of(setup, certs_dir, letsencrypt)
        assert cli(setup, *args) == 0
        again = capsys.readouterr().out
        assert "web: already imported" in again and "web: already linked" in again
        assert state_of(setup, certs_dir, letsencrypt) == before
        assert setup.renew("--force") == 0
        subprocess.run(ngx.reload_command(), check=True, capture_output=True, timeout=30)
        renewed = serial_of(setup.live("web") / "cert.pem")
        assert renewed != certbot_serial
        _wait_served(ngx, renewed)  # through certbot's path, unedited
    finally:
        ngx.stop()
    # Deleted later: the link certbot's path is would lead nowhere, and delete says so.
    (certs_dir / "web.toml").unlink()
    capsys.readouterr()
    assert cli(setup, "delete", "--cert", "web") == 0
    assert f"{live} (import-certbot --link) now leads nowhere" in capsys.readouterr().err


def _wait_served(ngx: Nginx, serial: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while ngx.serial("web.example.com") != serial:
        assert time.monotonic() < deadline, "nginx does not serve the expected certificate"
        time.sleep(0.05)


def test_a_name_in_use_is_refused_and_nothing_written(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    letsencrypt = pebble_lineage(tmp_path, pebble, "www", "legacy.example.com")
    setup = write_config(tmp_path, pebble, cert_table("www", "www.example.com"))
    certs_dir = with_certs_dir(setup)
    (certs_dir / "other.toml").write_text('name = "other"\ndomains = ["other.example.com"]\n')
    shutil.copy(letsencrypt / "renewal" / "www.conf", letsencrypt / "renewal" / "other.conf")
    capsys.readouterr()
    assert cli(setup, "import-certbot", str(letsencrypt)) == 1
    out = capsys.readouterr().out
    assert (f"not imported: www: the name is used by a certificate not imported from "
            f"{letsencrypt}/renewal/www.conf ({setup.config}: certificate[0]); nothing "
            "written") in out  # fmt: skip
    assert "not imported: other: the name is used by a certificate not imported from " in out
    assert "0 of 2 certbot lineages imported" in out
    assert sorted(p.name for p in certs_dir.iterdir()) == ["other.toml"]
    assert not (setup.state / "archive").exists() and not (setup.state / "accounts").exists()


def test_our_own_account_is_kept(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    letsencrypt = pebble_lineage(tmp_path, pebble, "cb", "cb.example.com")
    setup = write_config(tmp_path, pebble, "")
    with_certs_dir(setup)
    assert cli(setup, "register") == 0
    ours = Store(setup.state).load_account(pebble.directory_url)
    assert ours is not None
    capsys.readouterr()
    assert cli(setup, "import-certbot", str(letsencrypt)) == 0
    out = capsys.readouterr().out
    assert f"not imported, acme-agent keeps its own account {ours.uri} for [acme]" in out
    assert Store(setup.state).load_account(pebble.directory_url) == ours


ACCOUNT_ID = "0123456789abcdef0123456789abcdef"  # certbot's: an MD5 in hex


def test_fleet_mode_and_unknown_or_broken_accounts(tmp_path: Path) -> None:
    for bad in ("../../../../etc", "abc"):  # never read from outside accounts/
        with pytest.raises(ConfigError, match="not a certbot account id"):
            account_folder(tmp_path, "https://127.0.0.1:1/dir", bad)
    config = _config(tmp_path)
    folder = account_folder(tmp_path, "https://127.0.0.1:1/dir", ACCOUNT_ID)
    folder.mkdir(parents=True)
    (folder / "regr.json").write_text('{"uri": "https://127.0.0.1:1/acct/1"}')
    (folder / "private_key.json").write_text('{"kty": "RSA", "n": "secret-looking"}')
    fleet = dataclasses.replace(config, cluster=SimpleNamespace())  # type: ignore[type-var]
    said = import_account(tmp_path, "https://127.0.0.1:1/dir", ACCOUNT_ID, fleet)  # type: ignore[arg-type]
    assert said.endswith("not imported, fleet mode ([cluster]) uses the fleet's shared account "
                         "for [acme]")  # fmt: skip
    said = import_account(tmp_path, "https://127.0.0.1:9/dir", ACCOUNT_ID, config)  # type: ignore[arg-type]
    assert said.endswith("not imported, https://127.0.0.1:9/dir is no configured CA")
    with pytest.raises(ConfigError) as err:
        import_account(tmp_path, "https://127.0.0.1:1/dir", ACCOUNT_ID, config)  # type: ignore[arg-type]
    assert "not a usable certbot account" in str(err.value) and "secret" not in str(err.value)
    assert not (tmp_path / "state" / "accounts").exists()


def _config(tmp_path: Path, extra: str = "", http01: str | None = None) -> object:
    ca = SimpleNamespace(eab_kid="kid", eab_hmac_key="secret", http_port=80,
                         directory_url="https://127.0.0.1:1/dir",
                         ca_bundle=tmp_path / "ca.pem")  # fmt: skip
    setup = write_config(tmp_path, ca, "", http01=http01)  # type: ignore[arg-type]
    setup.config.write_text(setup.config.read_text().replace("[http01]", f"{extra}\n[http01]"))
    return load(setup.config)


def test_renewal_params_that_cannot_be_kept_are_said(tmp_path: Path) -> None:
    config = _config(tmp_path, '[ca.corp]\ndirectory = "https://127.0.0.1:2/dir"\n')
    values = {"installer": "nginx", "authenticator": "dns-cloudflare", "must_staple": "True",
              "preferred_profile": "shortlived", "server": "https://127.0.0.1:2/dir",
              "key_type": "rsa", "rsa_key_size": "4096"}  # fmt: skip
    mapped = map_lineage(Lineage("x", tmp_path / "x.conf", tmp_path, values), config, "ec-p256")  # type: ignore[arg-type]
    assert mapped.keys == {"ca": "corp"}
    assert mapped.deploy == {"reload": "nginx"}
    notes = "\n".join(mapped.notes)
    assert "preferred_profile 'shortlived' is not kept" in notes
    assert "certbot validated with dns-cloudflare; acme-agent answers HTTP-01 only" in notes
    assert "must_staple is not kept" in notes
    assert "certbot's settings say rsa-4096, the key in service is ec-p256" in notes
    apache = {"installer": "apache", "server": "https://other.example/dir"}
    mapped = map_lineage(Lineage("y", tmp_path / "y.conf", tmp_path, apache), config, "ec-p256")  # type: ignore[arg-type]
    assert mapped.deploy["reload_command"] == ["apachectl", "graceful"]
    assert mapped.notes[0].startswith(
        "certbot used https://other.example/dir, which is no configured CA"
    )


def test_directory_hooks_run_with_the_lineage_hook(tmp_path: Path) -> None:
    """certbot runs renewal-hooks/deploy/* for every lineage, then its own deploy hook, each
    even when one failed; the imported hook does the same and fails when one failed."""
    hooks = tmp_path / "renewal-hooks" / "deploy"
    hooks.mkdir(parents=True)
    log = tmp_path / "log"
    for name, code in (("01-first", 1), ("02-second", 0)):
        script = hooks / name
        script.write_text(f"#!/bin/sh\necho {name} >> {log}\nexit {code}\n")
        script.chmod(0o755)
    (hooks / "README").write_text("not executable")
    config = _config(tmp_path)
    lineage = Lineage("z", tmp_path / "z.conf", tmp_path, {"renew_hook": f"echo own >> {log}"})
    hook = map_lineage(lineage, config, "ec-p256").deploy["hook"]  # type: ignore[arg-type]
    assert subprocess.run(hook, check=False).returncode == 1  # type: ignore[arg-type]
    assert log.read_text().split() == ["01-first", "02-second", "own"]
    assert shell_hook(["true"]) == ["/bin/sh", "-c", "true"]


def test_untrusted_odd_or_hostile_lineages_are_refused_one_by_one(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent runs as root and an imported hook runs as root at every renewal: only
    lineages root could have written are taken, each fault stays with its lineage, and
    certbot's quoting and any text come out as exactly the intended TOML values."""
    letsencrypt = pebble_lineage(tmp_path, pebble, "good", "good.example.com")
    renewal = letsencrypt / "renewal"
    good = (renewal / "good.conf").read_text()

    def lineage(name: str, extra: str = "", text: str | None = None) -> Path:
        path = renewal / f"{name}.conf"
        path.write_text(text if text is not None else good.replace(
            "[renewalparams]", f"[renewalparams]\n{extra}"))  # fmt: skip
        path.chmod(0o600)
        return path

    lineage("quoted", "renew_hook = \"echo 'hi, there' # not a comment\"")
    lineage("emoji", "renew_hook = echo \U0001f600")
    latin1 = good.replace("[renewalparams]", "[renewalparams]\nrenew_hook = echo caf\xe9")
    (renewal / "latin1.conf").write_bytes(latin1.encode("latin-1"))
    lineage("shadow", text=good.replace(str(letsencrypt / "live" / "good" / "privkey.pem"),
                                        "/etc/shadow"))  # fmt: skip
    os.chown(lineage("foreign", "renew_hook = id > /tmp/pwned"), 65534, 65534)
    lineage("orphan")
    setup = write_config(tmp_path, pebble, "")
    certs_dir = with_certs_dir(setup)
    (setup.state / "attempts").mkdir(parents=True)
    (setup.state / "attempts" / "orphan.json").write_text("{}")  # a deleted certificate's
    capsys.readouterr()
    assert cli(setup, "import-certbot", str(letsencrypt), "--scan", str(tmp_path)) == 1
    out = capsys.readouterr().out
    hooks = {p.stem: tomllib.loads(p.read_text()).get("deploy", {}).get("hook")
             for p in certs_dir.glob("*.toml")}  # fmt: skip
    assert hooks["quoted"] == ["/bin/sh", "-c", "echo 'hi, there' # not a comment"]
    assert hooks["emoji"] == ["/bin/sh", "-c", "echo \U0001f600"]
    assert "good" in hooks
    assert set(hooks) == {"good", "quoted", "emoji"}
    assert "not imported: " in out and "latin1.conf: is not UTF-8 text" in out
    assert "shadow: /etc/shadow is not in" in out
    assert re.search(r"not imported: certbot renewal configuration: \S+/foreign\.conf is "
                     r"owned by another user \(owner nobody", out)  # fmt: skip
    assert "orphan: " in out and "still holds a certificate of that name" in out
    assert "3 of 7 certbot lineages imported" in out
    assert not Path("/tmp/pwned").exists()
    assert cli(setup, "validate") == 0


def test_link_refused_leaves_certbot_renewing(
    tmp_path: Path, pebble: LocalCA, capsys: pytest.CaptureFixture[str]
) -> None:
    """--link when certbot's live/<name> is not certbot's folder: nothing is taken from
    certbot (its renewal file stays), so nginx never reads frozen files."""
    letsencrypt = pebble_lineage(tmp_path, pebble, "l", "l.example.com")
    setup = write_config(tmp_path, pebble, "")
    with_certs_dir(setup)
    live = letsencrypt / "live" / "l"
    moved = letsencrypt / "live" / "l-real"
    live.rename(moved)
    live.symlink_to(moved)  # not certbot's folder any more
    capsys.readouterr()
    assert cli(setup, "import-certbot", str(letsencrypt), "--scan", str(tmp_path), "--link") == 1
    assert "is not certbot's folder; not linked" in capsys.readouterr().out
    assert (letsencrypt / "renewal" / "l.conf").exists()


def test_configobj_values_are_read_as_certbot_wrote_them(tmp_path: Path) -> None:
    from agent.cli.certbot_lineage import unquote

    where = tmp_path / "x.conf"
    both = "sh -c 'cp \"$RENEWED_LINEAGE/fullchain.pem\" /etc/x'"  # both quote kinds
    assert unquote("'''" + both + "'''", where) == both
    assert unquote('"echo a, b"  # a comment', where) == "echo a, b"
    assert unquote("'a # b'", where) == "a # b"
    assert unquote("systemctl reload nginx", where) == "systemctl reload nginx"
    assert unquote("http-01,", where) == "http-01"
    with pytest.raises(ConfigError, match="does not end with it on the same line"):
        unquote("'''first line of several", where)
