"""Playbooks: the collector turns events into blocks and alerts by itself.

A playbook file (TOML, :mod:`._config`) lists detections: which events, grouped how, how
many in what window, and what to do (block the IP, block the user, or alert). The collector
evaluates them on every ingested batch (:mod:`._engine`, state in the database so that every
process agrees), and ``sqreen playbooks test`` replays them over stored history.
"""

from __future__ import annotations

from ._config import After, Playbook, PlaybookError, PlaybookSet, load_playbooks, parse_playbooks
from ._engine import Engine, is_exempt
from ._fields import EventView, FieldPath, parse_field, user_key
from ._hits import Firing, Hit, HitRow, Probe, StreamKey, evaluate
from ._notify import Notifier, sign, verify_signature, webhook_secret
from ._reach import name_warnings, never_firing, shadowed, unread_settings
from ._runner import PlaybookRunner, PlaybookSource, event_view
from ._source import NONE_IN_FORCE
from ._templates import TEMPLATES

__all__ = [
    "NONE_IN_FORCE",
    "TEMPLATES",
    "After",
    "Engine",
    "EventView",
    "FieldPath",
    "Firing",
    "Hit",
    "HitRow",
    "Notifier",
    "Playbook",
    "PlaybookError",
    "PlaybookRunner",
    "PlaybookSet",
    "PlaybookSource",
    "Probe",
    "StreamKey",
    "evaluate",
    "event_view",
    "is_exempt",
    "load_playbooks",
    "name_warnings",
    "never_firing",
    "parse_field",
    "parse_playbooks",
    "shadowed",
    "sign",
    "unread_settings",
    "user_key",
    "verify_signature",
    "webhook_secret",
]
