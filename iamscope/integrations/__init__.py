"""Row plans on every data path of a host framework: SQLAlchemy, Django, Datasette.

Each integration is an optional extra and imports its framework only in its own module;
integrations sit above the engine and the web layer and nothing below imports them.
"""
