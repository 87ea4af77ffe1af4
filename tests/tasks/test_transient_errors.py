"""The one definition of a transient error (``tasks.common.is_transient``), that every retry condition uses."""

from __future__ import annotations

import errno

from prefect.states import Completed, Failed

from lift_core.config import ConfigError
from tasks.common import is_transient, retry_on_transient_errors


def test_storage_and_network_hiccups_are_transient():
    assert is_transient(ConnectionResetError("connection reset by peer"))
    assert is_transient(TimeoutError("read timed out"))
    assert is_transient(OSError(errno.EIO, "Input/output error"))


def test_what_a_retry_cannot_fix_is_not_transient():
    for err in (FileNotFoundError("gone"), NotADirectoryError("a file"), IsADirectoryError("a folder"),
                PermissionError("denied"), ConfigError("bad config"), ValueError("bad data"), RuntimeError("bug")):
        assert not is_transient(err), err


def test_the_retry_condition_asks_is_transient():
    assert retry_on_transient_errors(None, None, Failed(data=ConnectionResetError("reset")))
    assert not retry_on_transient_errors(None, None, Failed(data=FileNotFoundError("gone")))
    assert not retry_on_transient_errors(None, None, Completed(data=1))
