"""A pytest plugin for self-tests (`-p tests.lab.slow_guest_agent`): the local cloud publishes a VM's
host keys (guest attributes) only after a minute, as a slow guest agent would, so stage vm runs past
a short deadline."""

from __future__ import annotations

from typing import Any

from meshvm.lab.gcloud.backing import LabBacking

HOSTKEY_DELAY_S = 60.0
_up = LabBacking.up.__func__  # type: ignore[attr-defined]


def _slow_up(cls: type[LabBacking], run_id: str, state_dir: str, **kwargs: Any) -> LabBacking:
    return _up(cls, run_id, state_dir, **{**kwargs, "hostkey_delay": HOSTKEY_DELAY_S})


LabBacking.up = classmethod(_slow_up)  # type: ignore[method-assign, assignment]
