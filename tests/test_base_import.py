"""`ghostouch base import`: a CSV's frames and labels meet the rules of a training request, the
base trains on an even spread of a capped number of frames per label (storing them all), and
every failure ends in one `error:` line with exit status 2, never a traceback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from ghostouch.bases import TRAINING_FRAMES_PER_GESTURE, even_spread, read_csv
from ghostouch.config import MIN_FRAMES, Settings, get_settings
from ghostouch.engine import hands
from ghostouch.engine.frames import FrameError
from ghostouch.registry import repo

HEADER = "label," + ",".join(str(i) for i in range(64))
Rows = Sequence[tuple[str, np.ndarray]]


def write_csv(path: Path, rows: Rows) -> Path:
    """The apps' CSV: the header, then one `label,v0,...,v63` line per frame (file line i + 2)."""
    lines = [HEADER]
    for label, frames in rows:
        lines += [label + "," + ",".join(repr(float(v)) for v in frame) for frame in frames]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def recording(name: str, n: int, seed: int = 0) -> np.ndarray:
    return hands.generate_recording(name, n, np.random.default_rng(seed), handedness=1.0)


def zeros(n: int) -> np.ndarray:
    """What an app buffers while tracking is lost: every landmark at the origin."""
    frames = np.zeros((n, 64), np.float32)
    frames[:, 63] = 1.0
    return frames


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh registry and local store for `ghostouch.cli.main`; its environment is undone after."""
    for key in [k for k in os.environ if k.startswith("GHOSTOUCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GHOSTOUCH_DATA_DIR", str(tmp_path / "data"))  # main() overwrites it: restored
    yield tmp_path / "data"
    get_settings.cache_clear()


def run_import(capsys: pytest.CaptureFixture[str], data_dir: Path, csv: Path, code: str, *options: str) -> int:
    from ghostouch.cli import main

    capsys.readouterr()
    return main(["base", "import", str(csv), "--code", code, "--data-dir", str(data_dir), *options])


def registry_model(data_dir: Path, code: str) -> repo.ModelInfo | None:
    return repo.get_model(Settings(data_dir=data_dir).resolved_database_url, code)


def test_frames_that_show_no_hand_are_left_out_and_a_label_of_none_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(tmp_path / "zeros.csv", [("paper", recording("paper", 30)), ("rock", zeros(100))])
    with pytest.raises(FrameError) as refused:
        read_csv(path)
    message = str(refused.value)
    assert "label 'rock' (first on line 32): only 0 of 100 frames show a hand, need 20" in message
    assert "lines 32, 33, 34, 35, 36 and 95 more have all 21 landmarks within 20 mm" in message
    # As the API does: frames without a hand among enough with one are left out, not refused.
    mixed = [("paper", recording("paper", 30)), ("rock", zeros(3)), ("rock", recording("rock", 25, seed=1))]
    with caplog.at_level(logging.WARNING, logger="ghostouch.bases"):
        data = read_csv(write_csv(tmp_path / "mixed.csv", mixed))
    assert {name: len(frames) for name, frames in data.items()} == {"paper": 30, "rock": 25}
    assert "label 'rock' (first on line 32): left out lines 32, 33, 34, which show no hand" in caplog.text


@pytest.mark.parametrize(("per_label", "shown"), [((2, 1), 2), ((MIN_FRAMES, MIN_FRAMES - 1), MIN_FRAMES - 1)])
def test_labels_with_too_few_frames_are_refused(tmp_path: Path, per_label: tuple[int, int], shown: int) -> None:
    rows = [("paper", recording("paper", per_label[0])), ("rock", recording("rock", per_label[1], seed=1))]
    with pytest.raises(FrameError, match=rf"label '(paper|rock)' .*: only {shown} of {shown} frames show a hand"):
        read_csv(write_csv(tmp_path / "few.csv", rows))
    rows = [("paper", recording("paper", MIN_FRAMES)), ("rock", recording("rock", MIN_FRAMES, seed=1))]
    assert len(read_csv(write_csv(tmp_path / "enough.csv", rows))["rock"]) == MIN_FRAMES


def test_a_label_sent_coordinate_major_is_refused(tmp_path: Path) -> None:
    """A header in the apps' names over values grouped x0..x20, y0..y20, z0..z20 (an exporter's
    mistake the header check cannot see)."""
    rock = recording("rock", 30, seed=1)
    rock[:, :63] = rock[:, :63].reshape(-1, 21, 3).transpose(0, 2, 1).reshape(-1, 63)
    path = write_csv(tmp_path / "grouped.csv", [("paper", recording("paper", 30)), ("rock", rock)])
    with pytest.raises(
        FrameError, match=r"label 'rock' \(first on line 32\): the values of each frame look coordinate-major"
    ):
        read_csv(path)


def with_value(frames: np.ndarray, row: int, position: int, value: float) -> np.ndarray:
    changed = frames.copy()
    changed[row, position] = value
    return changed


@pytest.mark.parametrize(
    ("row", "position", "value", "expected"),
    [
        (5, 63, 3.0, "line 7, value 63 (handedness): must be 0.0 (left) or 1.0 (right), got 3.0"),
        (2, 5, 0.5, "line 4, value 5: 0.5 m is outside ±0.3 m; send MediaPipe *world* landmarks"),
        (0, 12, -0.75, "line 2, value 12: -0.75 m is outside ±0.3 m"),
        (3, 40, float("nan"), "line 5, value 40: not a finite number (nan)"),
    ],
)
def test_bad_values_name_the_line_and_value(
    tmp_path: Path, row: int, position: int, value: float, expected: str
) -> None:
    paper = with_value(recording("paper", 30), row, position, value)
    path = write_csv(tmp_path / "bad.csv", [("paper", paper), ("rock", recording("rock", 30, seed=1))])
    with pytest.raises(FrameError) as refused:
        read_csv(path)
    assert str(refused.value).startswith(f"{path}, {expected}")


def test_unreadable_rows_name_the_line_and_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ok.csv", [("paper", recording("paper", 30)), ("rock", recording("rock", 30))])
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    broken = {
        "abc": (",".join([*cells[:11], "abc", *cells[12:]]), "line 4, value 10: not a number ('abc')"),
        "short": (",".join(cells[:-1]), "line 4: expected 64 numbers (21 landmarks x 3 + handedness), got 63"),
        "huge": ("x" * 200_000 + lines[3], "line 4: field larger than field limit (131072)"),
    }
    for name, (line, expected) in broken.items():
        bad = tmp_path / f"{name}.csv"
        bad.write_text("\n".join([*lines[:3], line, *lines[4:]]) + "\n")
        with pytest.raises(FrameError) as refused:
            read_csv(bad)
        assert str(refused.value) == f"{bad}, {expected}", name


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "expected a header 'label,0,...,63' (65 columns), found an empty first line"),
        (HEADER + ",64", "expected a header 'label,0,...,63' (65 columns), found 66 columns"),
        (
            "label," + ",".join(f"{axis}{i}" for i in range(21) for axis in "xyz") + ",handedness",
            "header column 2 is 'x0', expected '0'",
        ),
        (HEADER.replace(",3,4,", ",4,3,"), "header column 5 is '4', expected '3'"),
        (HEADER.replace("label,", "name,"), "header column 1 is 'name', expected 'label'"),
        (" label , 0 ," + HEADER.split(",0,", 1)[1], None),  # spaces around names are fine
    ],
)
def test_the_header_must_name_the_apps_columns_in_order(tmp_path: Path, header: str, expected: str | None) -> None:
    """Columns named otherwise may hold a frame's values in another order: refused, saying which."""
    path = write_csv(tmp_path / "ok.csv", [("paper", recording("paper", 30)), ("rock", recording("rock", 30))])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")
    if expected is None:
        assert sorted(read_csv(path)) == ["paper", "rock"]
        return
    with pytest.raises(FrameError) as refused:
        read_csv(path)
    assert str(refused.value).startswith(f"{path}: {expected}"), refused.value


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("..", "'..' cannot be used in the model's URLs"),
        ("rock\x07", "control character U+0007 is not allowed in a name"),
        ("x" * 200, "200 characters, at most 64 allowed"),
        ("  ", "the name is empty"),
        ("\u200b", "the name has no visible character"),
        ("a\u200bb", "invisible format character U+200B is not allowed"),
    ],
)
def test_labels_the_api_refuses_are_refused(tmp_path: Path, label: str, reason: str) -> None:
    rows = [("paper", recording("paper", 25)), (label, recording("rock", 25, seed=1))]
    path = write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(ValueError) as refused:
        read_csv(path)
    shown = repr(label) if len(repr(label)) <= 40 else repr(label)[:40]
    assert str(refused.value).startswith(f"{path}, line 27: label {shown}")
    assert reason in str(refused.value)


def test_labels_are_stored_as_the_api_stores_names(tmp_path: Path) -> None:
    """Trimmed, NFC, direction marks removed: spellings of one name are one label."""
    rows = [
        ("caf\u00e9", recording("paper", 10)),
        (" cafe\u0301\u200f ", recording("paper", 10, seed=1)),
        ("\u200fשלום", recording("rock", 20, seed=2)),
    ]
    data = read_csv(write_csv(tmp_path / "forms.csv", rows))
    assert {name: len(frames) for name, frames in data.items()} == {"caf\u00e9": 20, "שלום": 20}


def test_labels_that_look_the_same_are_refused(tmp_path: Path) -> None:
    rows = [("rock", recording("rock", 20)), ("paper", recording("paper", 20)), ("rock\ufe0f", recording("one", 20))]
    path = write_csv(tmp_path / "twins.csv", rows)
    with pytest.raises(ValueError) as refused:
        read_csv(path)
    assert str(refused.value) == (
        f"{path}, line 42: label 'rock\ufe0f' looks the same as the label 'rock' of earlier lines; a model's "
        "gestures need names a user can tell apart"
    )


def test_a_storage_error_is_one_line(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghostouch import bases
    from ghostouch.storage import StorageError

    def failing(*_args: object, **_kwargs: object) -> repo.ModelInfo:
        raise StorageError("put samples/ab.npy: the bucket refused it\n(403 Forbidden)")

    monkeypatch.setattr(bases, "create_base", failing)
    rows = [("paper", recording("paper", 25)), ("rock", recording("rock", 25, seed=1))]
    assert run_import(capsys, data_dir, write_csv(tmp_path / "ok.csv", rows), "stored") == 2
    err = capsys.readouterr().err
    assert err == "error: put samples/ab.npy: the bucket refused it (403 Forbidden)\n"


def test_a_replacement_base_keeps_every_label_at_its_index(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-importing a base of other labels would renumber what its apps and children show."""
    rows = [("paper", recording("paper", 30)), ("rock", recording("rock", 30, seed=1))]
    assert run_import(capsys, data_dir, write_csv(tmp_path / "first.csv", rows), "mine") == 0
    first = registry_model(data_dir, "mine")
    assert first is not None and first.labels == ["paper", "rock"]
    other = [("one", recording("one", 30, seed=2)), ("rock", recording("rock", 30, seed=3))]
    assert run_import(capsys, data_dir, write_csv(tmp_path / "other.csv", other), "mine") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mine already exists and its labels are paper, rock; the file has one, rock;"), err
    again = registry_model(data_dir, "mine")
    assert again is not None and again.artifacts == first.artifacts  # left as it was
    assert run_import(capsys, data_dir, write_csv(tmp_path / "first.csv", rows[::-1]), "mine") == 0  # same labels


def test_labels_holding_the_same_frames_end_in_one_line_and_no_model(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = recording("paper", 60)
    # The very same frame under two labels is named before any training ...
    rows = [("paper", frames), ("rock", recording("rock", 60)), ("p2", frames[:1])]
    copied = write_csv(tmp_path / "copied.csv", rows)
    assert run_import(capsys, data_dir, copied, "copied") == 2
    assert capsys.readouterr().err == (
        f"error: {copied}: line 122 (label 'p2') holds the same frame as line 2 (label 'paper'); "
        "each label's frames must show a pose of its own\n"
    )
    # ... and copies a hair apart fail the trained model's checks: one line too.
    nudged = frames.copy()
    nudged[:, :63] += np.float32(1e-5)  # the landmarks, not the handedness
    path = write_csv(tmp_path / "same.csv", [("paper", frames), ("also_paper", nudged)])
    assert run_import(capsys, data_dir, path, "same_pose") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("error: the model could not be trained to the service's checks (")
    assert "the labels may hold the same pose" in err
    assert registry_model(data_dir, "same_pose") is None
    # A CSV with a refused row also ends in one line, before any training.
    bad = write_csv(tmp_path / "bad.csv", [("paper", with_value(frames, 0, 63, 3.0)), ("rock", frames)])
    assert run_import(capsys, data_dir, bad, "bad_row") == 2
    assert capsys.readouterr().err == (
        f"error: {bad}, line 2, value 63 (handedness): must be 0.0 (left) or 1.0 (right), got 3.0\n"
    )


def test_even_spread_keeps_order_and_both_ends() -> None:
    frames = np.arange(10_000, dtype=np.float32)[:, None]
    picked = even_spread(frames, 2000)[:, 0]
    assert len(picked) == 2000 and picked[0] == 0 and picked[-1] == 9_999
    assert np.all(np.diff(picked) >= 4) and np.all(np.diff(picked) <= 6)
    assert len(even_spread(frames[:50], 2000)) == 50


def test_a_large_import_trains_on_a_capped_spread_and_stores_every_frame(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = TRAINING_FRAMES_PER_GESTURE + 1000  # more than the cap even after the trainer's holdout
    rows = [("paper", recording("paper", n)), ("rock", recording("rock", n, seed=1))]
    path = write_csv(tmp_path / "large.csv", rows)
    assert run_import(capsys, data_dir, path, "large") == 0
    out = capsys.readouterr().out
    assert f"paper=0 ({n} frames), rock=1 ({n} frames)" in out
    assert f"even spread of at most {TRAINING_FRAMES_PER_GESTURE} per label" in out
    model = registry_model(data_dir, "large")
    assert model is not None
    assert {g.name: g.n_frames for g in model.gestures} == {"paper": n, "rock": n}
    trained = model.metrics["training_frames"]
    assert all(0 < trained[name] <= TRAINING_FRAMES_PER_GESTURE for name in ("paper", "rock")), trained
