"""A Django app for the row-plan inventory (run in a process of its own: Django's
settings are configured once per process)."""
