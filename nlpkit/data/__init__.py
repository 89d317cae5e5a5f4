"""Data helpers that dataset and model plugins use: finding and reading data files (encodings, line numbers in
errors), splitting and subsetting records, and tokenizers/vocabularies trained on a run's training split."""
