"""Addressable runs and launchers: what ``nlpkit plan``, ``nlpkit run --only/--shard`` and ``--launcher`` build on.

A run's id is its name, ``<task>-<model entry>-seed<k>``: stable across invocations (it names the run folder), so
a cluster job needs only "run this id" and a launcher only "what happened", which the run folder says
(:func:`nlpkit.run.folders.run_status`). Launchers are plugins (``register_launchers``); the built-in ones live
in plugins/launchers/.
"""
