"""Configuration: every error names the file and the field, and exits 2."""

import re
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config import load
from agent.errors import ConfigError

GOOD = """
state_dir = "state"
[acme]
directory = "https://ca.example/directory"
eab_kid = "kid-1"
eab_hmac_key_file = "eab"
[http01]
mode = "standalone"
listen = "127.0.0.1:8080"
[[certificate]]
name = "www"
domains = ["example.com", "www.example.com"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.state_dir == tmp_path / "state"
    assert config.acme.eab_hmac_key_file == tmp_path / "eab"
    assert config.acme.issuance_timeout == 600
    assert config.http01.listen_port == 8080
    assert config.certificates[0].key_type == "ec-p256"
    assert config.certificates[0].domains == ("example.com", "www.example.com")


def test_named_cas_ip_addresses_and_certificate_options(tmp_path: Path) -> None:
    text = (
        GOOD.replace(
            "[http01]",
            '[ca.le]\ndirectory = "https://acme-v02.api.letsencrypt.org/directory"\n'
            'key_types = ["ec-p256", "rsa-2048"]\n[http01]',
        ).replace(
            'name = "www"',
            'name = "www"\nca = ["le", "default"]\nreuse_key = true\nkeep_versions = 3\n'
            'preferred_chain = "ISRG Root X1"',
        )
        + '[[certificate]]\nname = "ip"\ndomains = ["192.0.2.1", "2001:DB8:0::1"]\nca = "le"\n'
    )
    config = load(write(tmp_path, text))
    assert list(config.cas) == ["default", "le"]
    assert config.acme is config.cas["default"]
    le = config.cas["le"]
    assert le.key_types == ("ec-p256", "rsa-2048") and le.label == "[ca.le]"
    assert le.dry_run_directory == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert config.acme.dry_run_directory is None
    www, ip = config.certificates
    assert (www.ca, www.reuse_key, www.keep_versions) == (("le", "default"), True, 3)
    assert www.preferred_chain == "ISRG Root X1"
    assert ip.domains == ("192.0.2.1", "2001:db8::1") and ip.ca == ("le",)
    assert config.certificates[0].ca == ("le", "default")


def test_a_staging_directory_that_is_the_ca_itself_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Older examples said "Default: directory": setting it to the same URL (as URLs) is no
    error, and no staging directory either (a dry run there would not be free)."""
    text = GOOD.replace(
        'eab_kid = "kid-1"',
        'eab_kid = "kid-1"\nstaging_directory = "https://CA.example/directory/"',
    )
    config = load(write(tmp_path, text))
    assert config.acme.staging_directory is None and config.acme.dry_run_directory is None
    assert "acme.staging_directory: is the CA's own directory" in caplog.text
    # Let's Encrypt's staging directory is its own dry-run target.
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    config = load(write(tmp_path, GOOD.replace("https://ca.example/directory", staging)))
    assert config.acme.dry_run_directory == staging


def test_secret_is_not_in_repr(tmp_path: Path) -> None:
    text = GOOD.replace('eab_hmac_key_file = "eab"', 'eab_hmac_key = "s3cr3t-hmac-value"')
    config = load(write(tmp_path, text))
    assert "s3cr3t" not in repr(config)


BAD = [
    ('name = "www"', 'name = "../etc"', "certificate[0].name"),
    ('name = "www"', 'name = "www"\nkey_type = "dsa"', "certificate[0].key_type"),
    ('name = "www"', 'name = "www"\nkeytype = "rsa-2048"', "certificate[0].keytype: unknown key"),
    ('"example.com", ', '"exa mple.com", ', "certificate[0].domains[0]"),
    ('"example.com", ', '"a..b.com", ', "certificate[0].domains[0]"),
    ('"example.com", ', '"www.example.com", ', "listed twice"),
    ('"example.com", ', '"*.example.com", ', "wildcard"),
    ('"example.com", ', '"192.0.2.1:80", ', "certificate[0].domains[0]"),
    ('"example.com", ', '"::ffff:127.0.0.1", ', "an IPv4 address written as IPv6: write '127."),
    ('"example.com", ', '"1.2.3", ', "'1.2.3' is neither a domain name nor an IP address"),
    ('"example.com", ', '"0x7f.0x1", ', "is neither a domain name nor an IP address"),
    ('"example.com", ', '"*.192.0.2.1", ', "is neither a domain name nor an IP address"),
    ('"example.com", ', '"0.0.0.0", ', "'0.0.0.0' is no address a certificate can be for"),
    ('"example.com", ', '"ff02::1", ', "is no address a certificate can be for"),
    ('name = "www"', 'name = "www"\nca = "le"', "certificate[0].ca: no CA named 'le'"),
    ('name = "www"', 'name = "www"\nca = []', "certificate[0].ca: must name"),
    ('name = "www"', 'name = "www"\nca = ["default", "default"]', "ca[1]: 'default' is listed"),
    ('name = "www"', 'name = "www"\nreuse_key = "yes"', "reuse_key: expected true or false"),
    ('name = "www"', 'name = "www"\nkeep_versions = 0', "keep_versions: 0 must be at least 1"),
    ('name = "www"', 'name = "www"\npreferred_chain = ""', "preferred_chain: must not be empty"),
    ('eab_kid = "kid-1"', 'eab_kid = "kid-1"\nkey_types = ["dsa"]', "acme.key_types[0]"),
    ('eab_kid = "kid-1"', 'eab_kid = "kid-1"\nkey_types = []', "acme.key_types: must list"),
    (
        'eab_kid = "kid-1"',
        'eab_kid = "kid-1"\nkey_types = ["rsa-2048"]',
        "certificate[0].key_type: 'ec-p256' is accepted by none of its CAs (default accepts "
        "rsa-2048)",
    ),
    ("[http01]", '[ca.default]\ndirectory = "https://x.example/d"\n[http01]', "ca.default:"),
    ("[http01]", '[ca.Big]\ndirectory = "https://x.example/d"\n[http01]', "ca.Big: a CA's"),
    ("[http01]", '[ca.le]\ndirectory = "http://x.example/d"\n[http01]', "ca.le.directory"),
    ("[http01]", '[ca.le]\ndirectory = "https://x.example/d"\nfoo = 1\n[http01]', "ca.le.foo"),
    (
        "[http01]",
        '[ca.le]\ndirectory = "https://CA.example/directory/"\n[http01]',
        "ca.le.directory: is also the directory of [acme]",
    ),
    (
        "[http01]",
        '[ca.le]\ndirectory = "https://x.example/d"\nstaging_eab_kid = "k"\n[http01]',
        "ca.le.staging_eab_kid: set both",
    ),
    ('domains = ["example.com", "www.example.com"]', "domains = []", "at least one"),
    ('domains = ["example.com", "www.example.com"]', 'domains = "example.com"', "a list"),
    ('directory = "https://ca.example/directory"', "", "acme.directory: is required"),
    ("https://ca.example", "http://ca.example", "acme.directory"),
    ('mode = "standalone"', 'mode = "dns"', "http01.mode"),
    ('mode = "standalone"', 'mode = "webroot"', "http01.webroot: is required"),
    ('listen = "127.0.0.1:8080"', 'listen = "localhost"', "http01.listen"),
    ('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:99999"', "http01.listen"),
    ('eab_kid = "kid-1"', "", "acme.eab_kid: is required"),
    ('eab_kid = "kid-1"', 'eab_kid = "kid-1"\neab_hmac_key = "x"', "not both"),
    ('eab_kid = "kid-1"', 'eab_kid = "kid-1"\nissuance_timeout = 0', "issuance_timeout"),
    ('eab_kid = "kid-1"', 'eab_kid = "kid-1"\nissuance_timeout = true', "issuance_timeout"),
    ('state_dir = "state"', 'state_dir = "state"\nstate_dirr = "x"', "state_dirr: unknown"),
    ('state_dir = "state"', "state_dir = 5", "state_dir: expected a string"),
    ("[http01]", "[http01\n", "invalid TOML"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD)
def test_bad_config_names_file_and_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_duplicate_name(tmp_path: Path) -> None:
    text = GOOD + '[[certificate]]\nname = "www"\ndomains = ["other.example.com"]\n'
    with pytest.raises(ConfigError, match=r"certificate\[1\].name: 'www' is used twice"):
        load(write(tmp_path, text))


def test_wildcard_allowed_with_mode_none(tmp_path: Path) -> None:
    text = GOOD.replace('mode = "standalone"', 'mode = "none"').replace(
        '"example.com", ', '"*.example.com", '
    )
    assert load(write(tmp_path, text)).certificates[0].domains[0] == "*.example.com"


def test_uppercase_domain_is_normalised(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD.replace('"example.com", ', '"Example.COM.", ')))
    assert config.certificates[0].domains[0] == "example.com"


def test_world_writable_config_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="chmod go-w"):
        load(path)


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "renew"]) == 2
    assert "no such configuration file" in capsys.readouterr().err


def test_env_var_names_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace("mode = ", "mode = 5 #"))
    monkeypatch.setenv("ACME_AGENT_CONFIG", str(path))
    assert main(["renew"]) == 2
    assert f"{path}: http01.mode: expected a string" in capsys.readouterr().err


def test_unknown_certificate_name_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    assert main(["--config", str(path), "renew", "--cert", "nope"]) == 2
    assert "no certificate named 'nope'" in capsys.readouterr().err


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["renew", "--no-such-flag"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


DEPLOY_BAD = [
    ('fullchain = "relative.pem"', "deploy.fullchain: 'relative.pem' must be an absolute path"),
    ('mode = "0644"', "deploy.mode: '0644': key files must not be readable by others"),
    ('mode = "rw"', "deploy.mode: 'rw' must be an octal string"),
    ('owner = "no-such-user-xyz"', "deploy.owner: no user 'no-such-user-xyz'"),
    ('group = "no-such-group-xyz"', "deploy.group: no group 'no-such-group-xyz'"),
    ('reload = "apache"', "deploy.reload: 'apache' must be"),
    ('reload = "command"', "deploy.reload_command: is required"),
    ('reload = "nginx"\nverify = "443"', "deploy.verify: '443' must be HOST:PORT"),
    ('verify = "127.0.0.1:443"', "deploy.verify: needs a reload"),
    ('reload = "nginx"\ntest_command = "nginx -t"', "deploy.test_command: expected a list"),
    ("hook = []", "deploy.hook: must be a non-empty list"),
    ('keyfile = "/x"', "deploy.keyfile: unknown key"),
]


@pytest.mark.parametrize(("line", "expected"), DEPLOY_BAD)
def test_bad_deploy_config(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, GOOD + f"[certificate.deploy]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert f"{path}: certificate[0].{expected}" in str(info.value)


def test_deploy_defaults_for_nginx(tmp_path: Path) -> None:
    text = GOOD + '[certificate.deploy]\nkey = "/etc/nginx/k.pem"\nreload = "nginx"\n'
    deploy = load(write(tmp_path, text)).certificates[0].deploy
    assert deploy is not None
    assert deploy.test_command == ("nginx", "-t")
    assert deploy.reload_command == ("systemctl", "reload", "nginx")
    assert deploy.key_mode == 0o600


def test_bad_hooks(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("[acme]", '[hooks]\npre = "echo hi"\n[acme]'))
    with pytest.raises(ConfigError, match="hooks.pre: expected a list"):
        load(path)


def test_certs_dir_files_and_errors(tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "api.toml").write_text('domains = ["api.example.com"]\nrenew_before = "10d"\n')
    (certs / "short.toml").write_text('domains = ["s.example.com"]\nrenew_before = 0.5\n')
    (certs / "README.md").write_text("ignored")
    path = write(
        tmp_path, GOOD.replace('state_dir = "state"', 'state_dir = "state"\ncerts_dir = "certs.d"')
    )
    config = load(path)
    names = [c.name for c in config.certificates]
    assert names == ["www", "api", "short"]
    api = config.certificate("api")
    assert api is not None and api.renew_before is not None
    # A file in error is that file's problem only: the others are loaded as before.
    for text, message in (
        ('domains = ["other.example.com"]\n', r"www.toml: name: 'www' is used twice"),
        ('domains = ["o.example.com"]\nrenew_before = "soon"\n',
         r"www.toml: renew_before: 'soon' must be a duration"),
        ('domains = ["o.example.com"]\nrenew_before = 2\n',
         r"www.toml: renew_before: 2 must be a fraction"),
        ("domains = [\n", r"www.toml: invalid TOML"),
    ):  # fmt: skip
        (certs / "www.toml").write_text(text)
        config = load(path)
        assert [c.name for c in config.certificates] == ["www", "api", "short"]
        assert [p.name for p in config.problems] == ["www"]
        assert re.search(message, config.problems[0].message), config.problems[0].message


def test_missing_certs_dir(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD.replace('state_dir = "state"', 'state_dir = "state"\ncerts_dir = "nope"')
    )
    with pytest.raises(ConfigError, match="certs_dir: .*nope does not exist"):
        load(path)
