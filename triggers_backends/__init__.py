"""Storage backends for Triggers, each behind an optional extra.

Nothing is imported here: backends are reached through the storage registry
(``triggers_core.runtime.registry.storages`` / entry point group ``triggers.storages``)
or imported directly, e.g. ``from triggers_backends.sqlalchemy import SQLAlchemyStorage``.
Importing this package never requires SQLAlchemy, pymemcache or Django.
"""
