"""Pure decisions, each a function of facts and ``now`` (never the clock, the disk, the
network or a random source): when a certificate is due (:mod:`.renewal`), how long to
wait before trying again (:mod:`.backoff`, one formula for every retry), what a
Retry-After header allows (:mod:`.retry_after`), durations in the configuration
(:mod:`.durations`) and the thresholds of `check` (:mod:`.check`)."""
