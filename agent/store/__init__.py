"""Everything under ``state_dir``: atomic files (:mod:`.files`), accounts and certificates
with their archive, live links and locks (:mod:`.certs`), the last attempt and
revocations (:mod:`.attempts`), and the CA's renewal information (:mod:`.ari`). Imports
only the model, the errors and (for parsing what is on disk) :mod:`agent.keys`."""
