"""Putting certificates where servers read them: target files, config test, reload,
verify and rollback (:mod:`.deployer`); external commands run without a shell, with a
timeout and a minimal environment (:mod:`.commands`). Imports the model, the
configuration types and the store's atomic files."""
