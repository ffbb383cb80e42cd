"""The key-value storage layout shared by the memcached and Django-cache backends.

:class:`KeyValueStorage` keeps one session on any
:class:`~triggers_backends.kv_client.KeyValueClient`; see
:mod:`triggers_backends.kv.storage` for the layout and its safety argument.
"""

from triggers_backends.kv.storage import KeyValueStorage

__all__ = ["KeyValueStorage"]
