"""One certificate from plan to service, shared by every front end: planning
(:mod:`.plan`), the renewer (:mod:`.renewer`: claim, issue, install, deploy), the backend
seam between one host and a fleet (:mod:`.backend`), accounts (:mod:`.accounts`,
:mod:`.accountops`), deployment and hooks (:mod:`.deployment`, :mod:`.hooks`), what
`status` shows (:mod:`.status`) and the metrics (:mod:`.metrics`)."""
