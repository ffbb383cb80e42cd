"""The old home of this module, kept so that imports keep working.

Moved to :mod:`triggers_core.engine.serialization` (see docs/architecture.md).
"""

from triggers_core.engine.serialization import (
    SCHEMA_VERSION,
    HeaderCodec,
    check_joined,
    config_from_json,
    config_to_json,
    dumps,
    header_from_json,
    header_to_json,
    instance_from_json,
    instance_to_json,
    loads,
    state_from_json,
    state_to_json,
)

__all__ = [
    "SCHEMA_VERSION",
    "HeaderCodec",
    "check_joined",
    "config_from_json",
    "config_to_json",
    "dumps",
    "header_from_json",
    "header_to_json",
    "instance_from_json",
    "instance_to_json",
    "loads",
    "state_from_json",
    "state_to_json",
]
