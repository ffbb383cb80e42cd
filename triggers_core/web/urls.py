"""The Django URLconf of the console: ``path("triggers/", include("triggers_core.web.urls"))``.

See :mod:`triggers_core.web._django` for the settings and who may look or act.
"""

from __future__ import annotations

from django.urls import re_path

from triggers_core.web._django import console_view

app_name = "triggers_web"

urlpatterns = [re_path(r"^(?P<path>.*)$", console_view, name="console")]
