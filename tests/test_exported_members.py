"""``protocol.__all__`` is exactly the public API: nothing leaks, nothing is missing."""

import types

import protocol


def test_all_matches_public_names() -> None:
    # Sub-packages (protocol.schedule) are attributes once imported; they are not API names.
    public = {name for name in dir(protocol) if not name.startswith("_")
              and not isinstance(getattr(protocol, name), types.ModuleType)}
    assert set(protocol.__all__) == public


def test_all_is_sorted_and_resolvable() -> None:
    assert list(protocol.__all__) == sorted(protocol.__all__)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None


def test_import_is_lazy() -> None:
    # `import protocol` must not import the heavy modules: `protocol --help` stays fast.
    import subprocess
    import sys

    code = ("import sys, protocol; heavy = [m for m in ('protocol.schedule', 'protocol._simulate', 'numpy', "
            "'icalendar', 'weasyprint') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert protocol.plan is protocol.schedule.plan  # resolved on first use
