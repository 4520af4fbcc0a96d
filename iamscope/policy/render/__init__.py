"""Row plans rendered where the data lives, one module per target: ``sql`` (DB-API WHERE
fragments, and the operand checks every renderer shares), ``sqlalchemy`` (Core
expressions; the optional extra), ``python`` (predicates over rows in memory) and
``rls`` (PostgreSQL row-level security). Each accepts the same plans and means the same
rows. :mod:`iamscope.policy` re-exports the renderers that need no extra.
"""
