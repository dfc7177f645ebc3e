"""Load an exported model with LiteRT, run it as the apps do and compare it with the float model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from ghostouch.engine.frames import FRAME_SIZE, INPUT_SCALE, INPUT_ZERO_POINT, OUTPUT_SCALE


class ModelCheckFailed(RuntimeError):
    """The exported file is not what the apps need, or disagrees with the trained model."""


@dataclass(frozen=True)
class LiteModel:
    """A loaded .tflite model that takes raw float frames and quantizes them like the apps."""

    interpreter: Interpreter
    input_index: int
    output_index: int
    input_dtype: type
    input_quant: tuple[float, int]
    output_quant: tuple[float, int]
    n_outputs: int

    @classmethod
    def load(cls, content: bytes) -> LiteModel:
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        return cls(
            interpreter=interpreter,
            input_index=int(inp["index"]),
            output_index=int(out["index"]),
            input_dtype=inp["dtype"],
            input_quant=(float(inp["quantization"][0]), int(inp["quantization"][1])),
            output_quant=(float(out["quantization"][0]), int(out["quantization"][1])),
            n_outputs=int(out["shape"][-1]),
        )

    def quantize(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.generic]:
        if self.input_dtype != np.uint8:
            return np.asarray(frames, dtype=np.float32)
        scale, zero = self.input_quant
        q = np.round(np.asarray(frames, dtype=np.float64) / scale) + zero
        return np.clip(q, 0, 255).astype(np.uint8)

    def predict_proba(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Dequantized output probabilities [n, N], one invocation per frame (batch 1)."""
        inputs = self.quantize(frames)
        out = np.empty((len(inputs), self.n_outputs), dtype=np.float32)
        for i, row in enumerate(inputs):
            self.interpreter.set_tensor(self.input_index, row[None, :])
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self.output_index)[0]
            scale, zero = self.output_quant
            out[i] = (raw.astype(np.float32) - zero) * scale if scale else raw
        return out


def _same_quantization(actual: tuple[float, int], expected: tuple[float, int]) -> bool:
    return actual[1] == expected[1] and abs(actual[0] - expected[0]) <= 1e-6 * expected[0]


def check_legacy_contract(model: LiteModel, n_outputs: int) -> None:
    """The tensor layout the shipped apps rely on: uint8 [1, 64] in, uint8 [1, N] out, with the
    quantization the engine was trained for (1 mm steps around zero point 128; probabilities in
    1/256 steps): the apps quantize with whatever the file declares."""
    problems = _layout_problems(model, np.uint8, n_outputs)
    if not _same_quantization(model.input_quant, (INPUT_SCALE, INPUT_ZERO_POINT)):
        expected = (INPUT_SCALE, INPUT_ZERO_POINT)
        problems.append(f"input quantization is {model.input_quant}, the model expects {expected}")
    if not _same_quantization(model.output_quant, (OUTPUT_SCALE, 0)):
        problems.append(f"output quantization is {model.output_quant}, apps need {(OUTPUT_SCALE, 0)}")
    if problems:
        raise ModelCheckFailed("; ".join(problems))


def check_float_contract(model: LiteModel, n_outputs: int) -> None:
    """The float variant for newer apps: float32 [1, 64] in, float32 [1, N] out."""
    problems = _layout_problems(model, np.float32, n_outputs)
    if problems:
        raise ModelCheckFailed("float variant: " + "; ".join(problems))


def _layout_problems(model: LiteModel, dtype: type, n_outputs: int) -> list[str]:
    (inp,) = model.interpreter.get_input_details()
    (out,) = model.interpreter.get_output_details()
    name = np.dtype(dtype).name
    problems = []
    if inp["dtype"] != dtype or list(inp["shape"]) != [1, FRAME_SIZE]:
        problems.append(f"input is {inp['dtype'].__name__}{list(inp['shape'])}, apps need {name}[1, 64]")
    if out["dtype"] != dtype or list(out["shape"]) != [1, n_outputs]:
        problems.append(f"output is {out['dtype'].__name__}{list(out['shape'])}, apps need {name}[1, {n_outputs}]")
    return problems


SHOWN = 0.5  # the apps show a gesture when its probability reaches this


def decisions(proba: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
    """What the apps show per frame: the top gesture's index, or -1 ("no gesture") below 0.5."""
    return np.where(proba.max(axis=1) >= SHOWN, proba.argmax(axis=1), -1)


def agreement(model: LiteModel, frames: npt.NDArray[np.float32], float_proba: npt.NDArray[np.float32]) -> float:
    """Fraction of frames where the exported model shows what the float model shows (the same
    gesture, or no gesture), the float probabilities taken in the output tensor's steps (1/256
    for the legacy model). Not the bare argmax, nor unrounded probabilities: with gestures
    trained twice under two names (allowed on request), many frames sit near 0.5 or tie, and
    the rounding alone failed a 50-gesture model's check (98.9 %)."""
    reference = np.asarray(float_proba, dtype=np.float64)
    scale, zero = model.output_quant
    if scale:
        reference = (np.clip(np.round(reference / scale) + zero, 0, 255) - zero) * scale
    lite = model.predict_proba(frames)
    same = decisions(lite) == decisions(reference)
    # A tie in the rounded probabilities: either choice is the float model's choice.
    top = reference.max(axis=1, keepdims=True)
    tied = (reference == top).sum(axis=1) > 1
    tie_ok = tied & (reference[np.arange(len(lite)), lite.argmax(axis=1)] == top[:, 0])
    return float(np.mean(same | tie_ok))
