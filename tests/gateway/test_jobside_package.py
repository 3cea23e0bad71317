"""The job-side helper needs nothing but the standard library: proven in a virtualenv with no packages at all,
where only this repository's ``gateway`` directory is on the path (what a training image copies in)."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import gateway.jobside as jobside
import gateway.jobside.link, gateway.jobside.helper, gateway.jobside.ray
heavy = sorted(m for m in ("aiohttp", "pydantic", "openleadr", "lxml", "matplotlib", "numpy", "ray", "cryptography")
               if m in sys.modules)
assert not heavy, heavy
assert jobside.should_checkpoint() is False and jobside.resume_from() is None
print("ok", sys.prefix)
"""


def test_the_helper_imports_and_answers_in_a_bare_virtualenv(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(bare)
    python = bare / "bin" / "python"
    out = subprocess.run([str(python), "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{PROBE}"],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "DCFLEX_GATEWAY_URL": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok " + str(bare))
