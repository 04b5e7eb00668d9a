"""The TFLite emotion classifier: an interpreter held by the instance, batches of windows in, probabilities out."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from streamer.config import ModelMeta, load_meta
from streamer.errors import ModelError

__all__ = ["Classifier", "calibrated", "load_interpreter_class", "runtime_name"]


def load_interpreter_class() -> tuple[type, str]:
    """The first TFLite runtime installed: LiteRT, then tflite_runtime, then tensorflow.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf  # type: ignore[import-not-found]

        return tf.lite.Interpreter, "tensorflow.lite"
    except ImportError:
        raise ModelError(
            "no TensorFlow Lite runtime installed: pip install ai-edge-litert"
        ) from None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the runtime's C++ INFO line ("Created TensorFlow Lite XNNPACK delegate") on fd 2."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def runtime_name() -> str:
    """Name of the TFLite runtime that :class:`Classifier` will use."""
    return load_interpreter_class()[1]


class Classifier:
    """Scores windows of normalised features with a TFLite model.

    Args:
        model_path: the ``.tflite`` file (its ``.json`` metadata beside it); default: the shipped model.
        meta: metadata already loaded (else read from beside ``model_path``).
        max_batch: windows per interpreter call.

    Calling the instance with ``[w, steps, C]`` features returns ``[w, n_labels]`` probabilities.
    One instance is safe to share between threads (calls are serialised by a lock).
    """

    def __init__(self, model_path: str | Path | None = None, meta: ModelMeta | None = None,
                 max_batch: int = 256):
        self.meta = meta or load_meta(model_path)
        path = self.meta.model_path
        if path is None:
            raise ModelError("model metadata does not say where the model file is")
        Interpreter, self.runtime = load_interpreter_class()
        try:
            self._interp = Interpreter(model_path=str(path), num_threads=1)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from None
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"model {path} must have one input and one output")
        self._in, self._out = inp[0]["index"], out[0]["index"]
        self._in_shape = tuple(int(x) for x in inp[0]["shape"])
        self._dynamic = tuple(int(x) for x in inp[0].get("shape_signature", inp[0]["shape"]))
        n_out = int(out[0]["shape"][-1])
        if n_out != len(self.meta.labels):
            raise ModelError(
                f"model {path} has {n_out} outputs but its metadata names {len(self.meta.labels)} labels"
            )
        self.max_batch = max_batch
        self._shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()
        f = self.meta.features
        want_c = f.n_channels
        got_c = self._in_shape[-1] if self.meta.input_layout == "steps" else None
        if got_c is not None and got_c != want_c:
            raise ModelError(f"model {path} takes {got_c} features per step, metadata says {want_c}")

    @property
    def labels(self) -> list[str]:
        """Label names in output order."""
        return self.meta.labels

    def _fixed_steps(self) -> int | None:
        if self.meta.input_layout != "steps":
            return None
        return None if self._dynamic[1] == -1 else self._in_shape[1]

    def _fit_steps(self, x: np.ndarray) -> np.ndarray:
        """Make a window's step count match a fixed-length model (pad by edge, or centre-crop)."""
        want = self._fixed_steps()
        if want is None or x.shape[1] == want:
            return x
        if x.shape[1] > want:
            a = (x.shape[1] - want) // 2
            return x[:, a : a + want]
        pad = want - x.shape[1]
        return np.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)), mode="edge")

    def _run(self, x: np.ndarray) -> np.ndarray:
        shape = x.shape
        if shape != self._shape:
            try:
                self._interp.resize_tensor_input(self._in, list(shape), strict=False)
                if self._shape is None:
                    with _quiet_stderr():
                        self._interp.allocate_tensors()
                else:
                    self._interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"model cannot take input of shape {shape}: {exc}") from None
            self._shape = shape
        self._interp.set_tensor(self._in, x)
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._out), dtype=np.float32)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of windows.

        Args:
            windows: np.ndarray [shape=(w, steps, C)], normalised window features.

        Returns:
            np.ndarray [shape=(w, n_labels), dtype=float32]
        """
        w = len(windows)
        if w == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if self.meta.input_layout == "coefficients":
            x = x.reshape(w, -1, 1)
        else:
            x = self._fit_steps(x)
        out = []
        with self._lock:
            for a in range(0, w, self.max_batch):
                out.append(self._run(x[a : a + self.max_batch]))
        return calibrated(np.concatenate(out), self.meta.temperature)


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with temperature scaling: softmax(log(p) / T); ``T == 1`` returns them unchanged.

    A temperature above 1 softens an over-confident network's probabilities without changing any
    window's most likely label.
    """
    if temperature == 1.0 or len(probs) == 0:
        return probs
    logp = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
