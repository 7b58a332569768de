"""Both error tables refuse a duplicate registration with the same exception class."""

from __future__ import annotations

import pytest

import cowsqlpy.errors
import kvstore.errors


def test_duplicate_codes_are_refused_alike() -> None:
    with pytest.raises(ValueError, match="already maps to"):
        cowsqlpy.errors.register(5, cowsqlpy.errors.OperationalError, exact=False)  # BusyError has it
    with pytest.raises(ValueError, match="already maps to"):
        kvstore.errors._register("compacted", kvstore.errors.KVError)


def test_outcome_unknown_has_one_name_in_each_package() -> None:
    import kvstore

    assert kvstore.OutcomeUnknownError is kvstore.errors.OutcomeUnknownError
    assert kvstore.OutcomeUnknownError("x").code == "outcome_unknown"
    assert issubclass(kvstore.OutcomeUnknownError, kvstore.KVError)
    assert issubclass(cowsqlpy.errors.OutcomeUnknownError, cowsqlpy.errors.OperationalError)
