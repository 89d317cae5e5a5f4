"""Experiment tracking: runs followed by tracker plugins (TensorBoard, MLflow, ...) when they ask for it.

``require.py`` checks before any run that the trackers asked for can be imported; ``session.py`` drives one run's
trackers so that none can fail it; ``hooks.py`` is the lifecycle-hook plugin that feeds the session; ``state.py``
keeps what a tracker needs to resume (``tracking.json`` in the run folder). The trackers themselves are plugins
(``register_trackers``; the built-ins in plugins/trackers/).
"""
