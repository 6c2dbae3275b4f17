"""``acme-agent run``: the schedule (:mod:`.schedule`), the main loop, signals and reloads
(:mod:`.service`), the configuration watch (:mod:`.watch`), the worker protocol over a
pipe (:mod:`.worker`), fleet notifications (:mod:`.fleet`) and systemd's notify protocol
(:mod:`.sdnotify`). Never imports the protocol stack: renewals run in the worker."""
