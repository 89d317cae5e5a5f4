"""Runs: one run end to end (the engine), a recipe's runs each in a process of its own (the ``--jobs`` pool),
run folders (locks, status, failure.json, runs set aside), provenance, diagnostics and ``nlpkit predict``.
Fires the lifecycle hooks; writes no report (the CLI does, through ``nlpkit.report``)."""
