"""Run a function in a forked child as another user, for tests of permissions that root ignores."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

NOBODY = 65534


def run_as(uid: int | None, body: Callable[[], object], skip_reason: str) -> object:
    """``body()`` in a forked child running as ``uid`` (None: as this user); its JSON-able result.
    Skips with ``skip_reason`` when the child can't switch user."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so no interpreter the other user must be able to reach
        code = 3
        try:
            os.close(read)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            code = 1
            result = body()
            with os.fdopen(write, "w") as out:
                json.dump(result, out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as stream:
        text = stream.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 3:
        pytest.skip(skip_reason)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(text)
