"""Settings that processes sharing a data directory must agree on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    assert (tmp_path / "data" / "signing.key").stat().st_mode & 0o777 == 0o600


def test_a_data_directory_the_service_makes_is_its_owners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It holds the registry, the signing key and users' hand recordings."""
    import argparse

    from ghostouch.cli import _apply_overrides
    from ghostouch.config import get_settings

    for key in [k for k in os.environ if k.startswith("GHOSTOUCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GHOSTOUCH_DATA_DIR", str(tmp_path / "unused"))  # _apply_overrides sets it: restored after
    try:
        _apply_overrides(argparse.Namespace(data_dir=str(tmp_path / "new" / "data")))
    finally:
        get_settings.cache_clear()
    assert (tmp_path / "new" / "data").stat().st_mode & 0o777 == 0o700


def test_download_links_never_point_at_the_wildcard_address(tmp_path: Path) -> None:
    """`--host 0.0.0.0` is where the API listens, not an address a phone can download from."""
    import socket

    from ghostouch.config import Settings

    assert Settings(data_dir=tmp_path, host="0.0.0.0", port=8111).resolved_public_url == (
        f"http://{socket.gethostname()}:8111"
    )
    assert Settings(data_dir=tmp_path, host="127.0.0.1", port=8111).resolved_public_url == "http://127.0.0.1:8111"
    assert Settings(data_dir=tmp_path, host="::1", port=8111).resolved_public_url == "http://[::1]:8111"
    chosen = Settings(data_dir=tmp_path, host="0.0.0.0", public_url="https://models.example.org/")
    assert chosen.resolved_public_url == "https://models.example.org"
    # ... and `api` warns when it had to guess: for every link the API itself answers.
    from ghostouch.cli import guessed_link_host

    everywhere = {"data_dir": tmp_path, "host": "0.0.0.0"}
    assert guessed_link_host(Settings(**everywhere))  # type: ignore[arg-type]
    assert guessed_link_host(Settings(**everywhere, storage="firebase"))  # type: ignore[arg-type]
    assert not guessed_link_host(Settings(**everywhere, storage="firebase", public_links=True))  # type: ignore[arg-type]
    assert not guessed_link_host(Settings(**everywhere, public_url="https://models.example.org"))  # type: ignore[arg-type]
    assert not guessed_link_host(Settings(data_dir=tmp_path, host="127.0.0.1"))


def test_the_data_directory_is_needed_only_for_what_lives_there(tmp_path: Path) -> None:
    """Local storage, the SQLite registry and the API's generated signing key live there; with
    Firebase storage and an external database, a worker (or an API given the secret) needs none,
    and building its store neither reads nor makes a key."""
    from ghostouch.config import Settings

    missing = tmp_path / "none"
    remote = Settings(
        data_dir=missing, storage="firebase", database_url="postgresql://db-host/ghostouch", signing_secret=None
    )
    assert remote.data_dir_holds() == [] and remote.storage_settings().signing_secret is None
    assert remote.data_dir_holds(links=True) == ["the signing key (GHOSTOUCH_SIGNING_SECRET is unset)"]
    assert remote.model_copy(update={"signing_secret": "k" * 32}).data_dir_holds(links=True) == []
    assert remote.model_copy(update={"public_links": True}).data_dir_holds(links=True) == []  # links name the bucket
    assert not missing.exists()
    assert Settings(data_dir=missing, storage="firebase").data_dir_holds() == ["the SQLite registry"]
    assert Settings(data_dir=missing, database_url="postgresql://db-host/x").data_dir_holds() == ["local storage"]
    assert remote.storage_settings(links=True).signing_secret is not None and (missing / "signing.key").is_file()
