"""Sweeps: a ``sweep:`` block in a recipe searches its settings with Optuna; every trial is an ordinary run.

    sweep:
      metric: validation.accuracy        # never a test metric
      direction: maximize
      trials: 20                         # per study: one study per task x swept model entry
      sampler: tpe                       # tpe | random | grid
      pruner: median                     # median | none
      parameters:
        models.lstm.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        models.lstm.hidden_size: {type: categorical, choices: [128, 256, 512]}
      best_seeds: [1, 2, 3]              # the best settings re-run over these seeds, scored on test

The parts, one job each: ``schema`` (the block, checked against the recipe with file:line and did-you-mean),
``space`` (a trial's settings applied to the recipe's run: a trial folder named by their hash), ``study`` (the
Optuna study in a journal file beside the runs, its sampler and pruner, resuming killed trials), ``driver`` (ask a
trial, run it through the process pool, tell its value; then the best settings over ``best_seeds``),
``pruning`` (the ``on_evaluate`` hook in each trial's process) and ``section`` (the report's sweep section).
Optuna is an extra: ``pip install -e '.[sweep]'``.
"""
