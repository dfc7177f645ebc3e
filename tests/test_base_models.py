"""Base models: the synthetic base_v1 transfers to real hands; CSV import validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ghostouch.bases import BASE_V1_LABELS, order_labels, read_csv, synthetic_base_data
from ghostouch.engine.frames import FrameError
from ghostouch.engine.trainer import GestureFrames, train_gesture_model
from ghostouch.engine.verify import LiteModel
from tests.conftest import read_frames_csv


def test_synthetic_base_classifies_real_recordings(shared_data: Path) -> None:
    data = synthetic_base_data()
    model = LiteModel.load(train_gesture_model([GestureFrames(k, data[k]) for k in BASE_V1_LABELS]).tflite_uint8)
    real = read_frames_csv(shared_data / "ghostouch" / "base_v1.csv")
    correct = [np.argmax(model.predict_proba(real[k]), axis=1) == i for i, k in enumerate(BASE_V1_LABELS)]
    accuracy = float(np.mean(np.concatenate(correct)))
    print(f"synthetic base_v1 on real base_v1.csv: {accuracy:.1%}")
    assert accuracy >= 0.90


def test_csv_import_validation(tmp_path: Path) -> None:
    """The CSV format and label order; the rules a CSV's frames and labels meet: test_base_import.py."""
    from ghostouch.engine.hands import generate_recording

    header = "label," + ",".join(str(i) for i in range(64))
    rng = np.random.default_rng(0)
    frames = {name: generate_recording(name, 20, rng, handedness=1.0) for name in BASE_V1_LABELS}
    rows = [name + "," + ",".join(repr(float(v)) for v in frame) for name in BASE_V1_LABELS for frame in frames[name]]
    good = tmp_path / "good.csv"
    good.write_text("\n".join([header, *rows]) + "\n")
    assert set(read_csv(good)) == {"paper", "rock", "scissors"}
    assert order_labels(["scissors", "rock", "paper"], "base_v1", None) == ["paper", "rock", "scissors"]
    assert order_labels(["b", "a"], "mine", None) == ["a", "b"]
    with pytest.raises(ValueError, match="exactly the labels"):
        order_labels(["a", "b"], "base_v1", None)
    assert order_labels(["scissors", "rock", "paper"], "base_v1", BASE_V1_LABELS) == list(BASE_V1_LABELS)
    with pytest.raises(ValueError, match="in this order"):
        order_labels(["paper", "rock", "scissors"], "base_v1", ["rock", "paper", "scissors"])
    assert order_labels(["a", "b"], "mine", ["b", "a"]) == ["b", "a"]
    with pytest.raises(ValueError, match="repeated: ok"):
        order_labels(["ok", "call"], "mine", ["ok", "call", "ok"])
    # Replacing a base keeps each of its labels at its index: apps run it, children extend it.
    assert order_labels(["b", "a"], "mine", None, existing=["a", "b"]) == ["a", "b"]
    assert order_labels(["b", "a"], "mine", ["b", "a"], existing=["b", "a"]) == ["b", "a"]
    with pytest.raises(ValueError, match=r"mine already exists and its labels are a, b; the file has a, c; a repl"):
        order_labels(["a", "c"], "mine", None, existing=["a", "b"])
    with pytest.raises(ValueError, match=r"its labels are b, a, in this order \(pass --labels b,a\)"):
        order_labels(["a", "b"], "mine", None, existing=["b", "a"])
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, rows[0], "rock," + ",".join(["0.9"] * 63 + ["1"])]) + "\n")
    with pytest.raises(FrameError, match=r"line 3, value 0: 0\.9 m is outside"):
        read_csv(bad)
    (tmp_path / "noheader.csv").write_text(rows[0] + "\n")
    with pytest.raises(FrameError, match="header"):
        read_csv(tmp_path / "noheader.csv")


def test_api_process_never_imports_tensorflow_and_starts_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); "
        "from ghostouch.api.app import create_app; create_app(); "
        "print(time.perf_counter() - t); "
        "sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras', 'ai_edge_litert') for m in sys.modules) else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, "the API imported TensorFlow/LiteRT: " + done.stderr
    assert float(done.stdout.strip()) < 5.0  # ~0.5 s; importing TensorFlow alone takes ~2 s quiet


def test_the_world_landmark_gate_follows_the_lineage() -> None:
    """On only where the parent had it on: a base of many hands (the synthetic base_v1, or one
    imported with --many-hands), and registries from before the gate, keep it off below them."""
    from ghostouch.bases import MANY_HANDS_CONFIG
    from ghostouch.engine.trainer import EngineConfig
    from ghostouch.jobs.training import lineage_config
    from ghostouch.registry.repo import ModelInfo

    def parent(training_config: dict[str, object]) -> ModelInfo:
        return ModelInfo("p", None, "system", "base", "", [], {}, {}, training_config, "")

    assert lineage_config(EngineConfig(), parent(EngineConfig().describe())).gate_3d is True
    assert lineage_config(EngineConfig(), parent(MANY_HANDS_CONFIG.describe())).gate_3d is False
    assert lineage_config(EngineConfig(), parent({})).gate_3d is False
    assert lineage_config(MANY_HANDS_CONFIG, parent(EngineConfig().describe())).gate_3d is False
