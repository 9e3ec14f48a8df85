"""``protocol.__all__`` is exactly the public API: nothing leaks, nothing is missing."""

import protocol


def test_all_matches_public_names() -> None:
    public = {name for name in dir(protocol) if not name.startswith("_")}
    assert set(protocol.__all__) == public


def test_all_is_sorted_and_resolvable() -> None:
    assert list(protocol.__all__) == sorted(protocol.__all__)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
