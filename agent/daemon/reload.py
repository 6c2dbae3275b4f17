"""What stays in force when the configuration is reloaded with a file of certs_dir in
error: that file's previous definition, so a typo never stops a renewal."""

from __future__ import annotations

import logging
from dataclasses import replace

from ..config.types import Config

log = logging.getLogger(__name__)


def keep_previous_definitions(old: Config, new: Config) -> Config:
    """A file of certs_dir that is in error after an edit keeps its certificate's previous
    definition in force (and the text the worker is handed): a typo never stops the
    renewal of a certificate that was fine."""
    kept = []
    sources = dict(new.sources)
    for problem in new.problems:
        path = str(problem.path)
        # The certificate that file defined (its name may differ from the file's stem),
        # and only one the worker can be handed again: the file's previous text.
        before = next((c for c in old.certificates if c.source == path), None)
        if before is None or new.certificate(before.name) is not None or path not in old.sources:
            continue
        kept.append(before)
        sources[path] = old.sources[path]
        log.error("configuration not reloaded for %s: %s; its previous definition stays "
                  "in force", before.name, problem.message)  # fmt: skip
    if not kept:
        return new
    return replace(new, certificates=new.certificates + tuple(kept), sources=sources)
