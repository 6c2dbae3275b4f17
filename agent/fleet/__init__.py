"""Fleet mode (``[cluster]``): Redis as the store and lock backend of several hosts behind
one load balancer. :mod:`.cluster` (connection, fenced leases, sealed records, tokens),
:mod:`.backend` (the renewer's backend seam), :mod:`.solver` (HTTP-01 tokens for every
host), :mod:`.events` (pub/sub), :mod:`.sealing` (AES-GCM under the hosts' shared key).
Imports the model, the configuration types, policy, the store and :mod:`agent.keys`."""
