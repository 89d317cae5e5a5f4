"""The built-in experiment trackers, registered through entry points like any third party's (register_trackers)."""
