"""Settings that processes sharing a data directory must agree on."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_together


def test_processes_starting_together_share_one_signing_key(tmp_path: Path) -> None:
    """An API and workers started at once on a new data directory each need the key of the local
    download links; they must all end up with the same one, or links signed by one would be
    refused by another."""
    outputs = run_together(
        "from ghostouch.config import Settings\nsettings = Settings(data_dir=sys.argv[1], signing_secret=None)",
        "print(settings.signing_key().hex())",
        [str(tmp_path / "data")],
    )
    keys = {out.strip() for out in outputs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["signing.key"]  # no temporary files left
