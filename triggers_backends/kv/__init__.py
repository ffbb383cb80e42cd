"""The key-value storage layout shared by the memcached and Django-cache backends.

See :mod:`triggers_backends.kv.storage` for the layout and its safety argument.
"""
