"""HTTP-01: the responder (:mod:`.responder`) and the solvers that present tokens through
it, a webroot, or not at all (:mod:`.solvers`). Imports the model and the store's atomic
files only."""
