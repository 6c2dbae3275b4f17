"""The front ends: the console script's entry (:mod:`.quick`), argument parsing and output
(:mod:`.main`, :mod:`.ops`), the renew cache (:mod:`.renew_cache`), the daemon's worker
(:mod:`.worker`), `import-certbot`, `demo` and logging. Parsing and output only: the work
is done by the engine and the daemon."""
