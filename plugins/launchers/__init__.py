"""Built-in launchers (``nlpkit run --launcher NAME``): local processes, Slurm (submitit), Ray."""
