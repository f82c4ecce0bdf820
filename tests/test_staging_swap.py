"""The destination's parent swapped for a link while an export runs: no write follows the link.

The export is written through the staging folder's descriptor, held open from the moment it is
made, and published relative to the destination folder's descriptor, so moving the output folder's
parent away and putting a link to another folder in its place redirects nothing: the link's target
stays empty, publish is refused (the path no longer leads to the folder the export was staged in),
and the moved folder keeps nothing but the failed attempt's report, if any.
"""

import subprocess
import time

import pytest

from conftest import EXPORTER, exports_in


@pytest.mark.slow
@pytest.mark.parametrize("sandboxed", [False, True], ids=["limits-only", "bubblewrap"])
def test_a_parent_swapped_for_a_link_during_an_export_redirects_nothing(digits_model, tmp_path, sandboxed):
    parent, moved, target = tmp_path / "team", tmp_path / "team-moved", tmp_path / "attacker"
    output = parent / "exports"
    output.mkdir(parents=True)
    target.mkdir()
    (target / "exports").mkdir()
    command = [str(EXPORTER), "export", "--model", str(digits_model), "--format", "tf_saved_model"]
    command += ["--output", str(output), *(["--sandbox"] if sandboxed else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not exports_in(output):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the export never started staging"
        time.sleep(0.02)
    # Staging has begun; convert runs in a child that is still importing TensorFlow.
    parent.rename(moved)
    parent.symlink_to(target)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("exporter: FAILED_PRECONDITION: "), last
    assert "links are not followed" in last or "was replaced" in last, last
    assert "/proc/" not in stderr  # the descriptor path the export wrote through is never shown
    assert list((target / "exports").iterdir()) == [], "a write followed the link"
    left = [entry.name for entry in exports_in(moved / "exports")]
    assert all(name.endswith(".failed") for name in left), left
