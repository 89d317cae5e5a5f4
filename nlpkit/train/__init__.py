"""Training one model: the shared loop, its options (the recipe's ``train:`` schema), batching, checkpoints,
devices and precision, and the metrics log. Knows nothing of recipes or run folders beyond the paths it is
given."""
