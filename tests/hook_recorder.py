"""Test helper: append {"argv", "env"} as one JSON line to argv[1]; then, if more
arguments follow the label-less form, exec them (used to count reloads)."""

import json
import os
import subprocess
import sys

record, rest = sys.argv[1], sys.argv[2:]
env = {k: v for k, v in os.environ.items() if k.startswith("ACME_AGENT_") or k == "PATH"}
with open(record, "a") as handle:
    handle.write(json.dumps({"argv": sys.argv, "env": env, "all_env": dict(os.environ)}) + "\n")
if len(rest) > 1:
    sys.exit(subprocess.run(rest).returncode)
