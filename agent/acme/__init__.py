"""The RFC 8555 conversation, one method per protocol step (:mod:`.client`), over a
transport that bounds and times every request (:mod:`.transport`); CA problems as one
clear line (:mod:`.problems`); obtaining one certificate (:mod:`.issuer`); renewal
information requests (:mod:`.ari`). No disk, no subprocess, no configuration objects:
imports only the model, policy, the errors and :mod:`agent.keys`."""
