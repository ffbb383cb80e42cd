"""The questionnaire workflow (examples/questionnaire.py) for the workflow-tool tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from triggers_core.testing.simulate import Failure

QUESTIONNAIRE: dict[str, Any] = {
    "t_createApplicant": {"after": ["startSession", "observationsReceived"], "run": "app.Create"},
    "t_processPage": {
        "after": ["startSession"],
        "andEvery": "pageReceived",
        "unless": ["sessionAbandoned"],
        "run": "app.Page",
    },
    "t_computeScore": {"after": ["t_createApplicant", "sessionFinalized"], "run": "app.Score"},
    "t_sendReport": {"after": ["t_computeScore"], "run": "app.Report"},
    "t_sendReminder": {
        "after": ["startSession", "reminderDue"],
        "unless": ["sessionFinalized"],
        "run": "app.Remind",
    },
}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NO_EMAIL = {"t_sendReport": Failure("builtins.LookupError", "no e-mail address")}
