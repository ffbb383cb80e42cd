"""The shell around the pure engine: everything that does I/O, keeps time or runs threads.

:mod:`.manager` (load -> transition -> compare-and-swap -> hooks -> dispatch,
through :mod:`.commit` and :mod:`.outcomes`), :mod:`.storage` (the storage
port) with :mod:`.sessions` (listing values) and :mod:`.memory` (the
in-process storage), :mod:`.ports` (the runner port and the manager as
runners and tasks see it), :mod:`.runners` (the in-process runner),
:mod:`.registry` (storages and runners by name), :mod:`.tasks` (the task API),
:mod:`.lifecycle` (one log record per event) and :mod:`.redaction` (secrets
out of URLs).
"""
