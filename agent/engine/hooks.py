"""The run's pre and post hooks (``[hooks]``): the pre hook once before the first issuance
or deployment of a run, the post hook after it with what changed and what failed."""

from __future__ import annotations

import logging

from ..config.deploy import HooksConfig
from ..deploy import commands
from ..model import CHANGED, Outcome, RunContext

log = logging.getLogger(__name__)


def run_pre_hook(hooks: HooksConfig, run: RunContext) -> None:
    with run.lock:
        if run.pre_hook_ran:
            return
        run.pre_hook_ran = True
    if hooks.pre:
        outcome = commands.run(hooks.pre, hooks.timeout)
        if not outcome.ok:
            log.error("pre hook failed (continuing): %s", outcome.summary)


def run_post_hook(hooks: HooksConfig, outcomes: list[Outcome]) -> None:
    if not hooks.post:
        return
    env = {
        "ACME_AGENT_RENEWED": " ".join(o.name for o in outcomes if o.status in CHANGED),
        "ACME_AGENT_FAILED": " ".join(o.name for o in outcomes if o.failed),
    }
    outcome = commands.run(hooks.post, hooks.timeout, env)
    if not outcome.ok:
        log.error("post hook failed: %s", outcome.summary)
