"""Recipes: the YAML a researcher writes, read safely, overridden (``--set``), validated against typed schemas
and expanded into one RunSpec per task x model entry x seed. Knows plugins only through the registry and the
training options only through ``nlpkit.train.options``; nothing here trains or writes files."""
