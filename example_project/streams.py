"""The demo task's streams, defined once and used by the templates and the views."""

from __future__ import annotations

from trigger_django import streams
from trigger_django.forms import ApprovalForm

#: The answer, written token by token: every chunk is a string.
ai_output = streams.define("ai-output", type=str)
#: The reviewer's decision, ``{"approved": bool, "reviewer": str}``.
approval = streams.input("approval", form=ApprovalForm)
