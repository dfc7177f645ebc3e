"""Settings that processes sharing a data directory must agree on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def test_processes_starting_together_share_one_signing_key(tmp_path: Path) -> None:
    """An API and workers started at once on a new data directory each need the key of the local
    download links; they must all end up with the same one, or links signed by one would be
    refused by another."""
    start_at = time.time() + 3.0  # every process imports first, then all ask at this moment
    script = (
        "import sys, time\n"
        "from ghostouch.config import Settings\n"
        "settings = Settings(data_dir=sys.argv[1], signing_secret=None)\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(settings.signing_key().hex())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "data"), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outputs]
    keys = {out.strip() for out, _ in outputs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["signing.key"]  # no temporary files left
