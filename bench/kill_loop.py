#!/usr/bin/env python3
"""kill -9 `acme-agent renew --force` at random moments, many times, against a local pebble
on loopback; after every kill check that live/ and the deploy targets hold a matching,
parseable key and certificate and that no temporary file is left where readers look.

    .venv/bin/python bench/kill_loop.py --kills 500

Prints how many kills landed, how many left a consistent state (all of them, or it says
which broke), and the wall time. A long-run companion of tests/test_crash.py.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import keys  # noqa: E402
from agent.cli.demo import write_config  # noqa: E402
from agent.localca import LocalCA  # noqa: E402


def consistent(state: Path, out: Path) -> str | None:
    """None when consistent, else what is wrong."""
    pairs = [(state / "live" / "demo" / "fullchain.pem", state / "live" / "demo" / "privkey.pem")]
    pairs.append((out / "fullchain.pem", out / "key.pem"))
    for chain_path, key_path in pairs:
        if not chain_path.exists():
            continue
        try:
            chain = keys.split_chain(chain_path.read_bytes(), str(chain_path))
            key = keys.load_key_pem(key_path.read_bytes())
        except Exception as err:
            return f"{chain_path}: unreadable: {err}"
        if not keys.public_key_matches(chain.cert, key):
            return f"{chain_path}: key and certificate do not match"
    for folder in (state / "live", out):
        if folder.exists() and any(
            p.name.startswith(".tmp-") and p.name.endswith(".pem") for p in folder.iterdir()
        ):
            return f"{folder}: a temporary file named like a PEM file"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="acme-kill-") as tmp:
        work = Path(tmp)
        with LocalCA(work / "pebble") as ca:
            config = write_config(ca, work / "agent", ("demo.example.com",))
            out = work / "targets"
            config.write_text(
                config.read_text()
                + f'\n[certificate.deploy]\nfullchain = "{out}/fullchain.pem"\n'
                + f'key = "{out}/key.pem"\n'
            )
            agent = [str(ROOT / ".venv" / "bin" / "acme-agent"), "-q", "--config", str(config)]
            subprocess.run([*agent, "renew"], check=True)
            state = work / "agent" / "state"
            broken: list[str] = []
            started = time.monotonic()
            for i in range(args.kills):
                proc = subprocess.Popen([*agent, "renew", "--force"], env=os.environ)
                time.sleep(rng.uniform(0.2, 0.8))
                proc.kill()
                proc.wait()
                problem = consistent(state, out)
                if problem:
                    broken.append(f"kill {i}: {problem}")
            final = subprocess.run([*agent, "renew", "--force"]).returncode
            for folder in (state / "live", out):
                leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
                if leftovers:
                    broken.append(f"after the final run: {folder}: {leftovers}")
            versions = len(list((state / "archive" / "demo").iterdir()))
    print(f"{args.kills} kills in {time.monotonic() - started:.0f} s; "
          f"{args.kills - len(broken)} left a consistent state; {versions} issuances archived; "
          f"next run exit {final}")  # fmt: skip
    for line in broken:
        print("BROKEN", line)
    sys.exit(1 if broken or final else 0)


if __name__ == "__main__":
    main()
