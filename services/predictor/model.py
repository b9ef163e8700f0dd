"""The persistence model at run time: loaded once, checked hard, then trusted.

Why so many checks before the first prediction: a predictor that starts on a
corrupted file, on a card that describes another model, or with its inputs
in a different order gives plausible-looking wrong probabilities in the
operating room. So loading verifies the file's SHA-256 against the card,
runs the ONNX checker, compares input/output names, shapes and types and the
feature order with the card and with this build, and re-computes the card's
golden vectors; any mismatch raises `ModelInvalid` with what was wrong and
what to do, and the predictor refuses to start.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .features import FEATURE_NAMES, FEATURES, FactorError, to_vector, validate

DEFAULT_DIR = Path(__file__).resolve().parent / "model"
DEFAULT_MODEL = DEFAULT_DIR / "model.onnx"
DEFAULT_CARD = DEFAULT_DIR / "model_card.json"
SYNTHETIC_NOTICE = "synthetic — not for clinical use"
#: sklearn and onnxruntime must agree this closely (float32 arithmetic).
GOLDEN_TOLERANCE = 1e-5
Band = Literal["low", "intermediate", "high"]

_ONNX_DTYPES = {1: "float32", 7: "int64", 11: "float64"}


def band_for(probability: float, low: float, high: float) -> Band:
    """`low` below the low cut-off, `high` at or above the high one, else `intermediate`."""
    if probability < low:
        return "low"
    if probability >= high:
        return "high"
    return "intermediate"


class ModelInvalid(RuntimeError):
    """The model or its card cannot be used; the message says why and what to do."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class CardFeature(_Open):
    name: str
    type: Literal["float", "int", "bool"]
    unit: str
    min: float
    max: float


class CardTensor(_Open):
    name: str
    dtype: Literal["float32", "int64", "float64"]
    shape: list[int | None]


class CardOnnx(_Open):
    input: CardTensor
    outputs: list[CardTensor] = Field(min_length=1)
    probability_output: str
    positive_class_index: int = Field(ge=0)


class CardCutoffs(_Open):
    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    rule: str


class GoldenVector(_Open):
    inputs: dict[str, Any]
    probability: float = Field(ge=0.0, le=1.0)
    band: Band


class ModelCard(_Open):
    """The part of `model_card.json` the runtime relies on (the rest is for people)."""

    card_version: Literal[1, 2]
    model_file: str
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    synthetic: bool
    notice: str | None = None
    features: list[CardFeature]
    onnx: CardOnnx
    cutoffs: CardCutoffs
    training_range: dict[str, list[float]] | None = None
    golden_vectors: list[GoldenVector] = Field(min_length=1)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelInvalid(
            f"{what} {path} does not exist; train one with `amrwatch train --synthetic 157 --out DIR` "
            "or point the predictor at an existing model directory"
        ) from None
    except OSError as err:
        raise ModelInvalid(f"cannot read {what} {path}: {err.strerror or err}") from None


def tensor_spec(value_info: Any) -> tuple[str, str, list[int | None]]:
    t = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return value_info.name, _ONNX_DTYPES.get(t.elem_type, f"onnx type {t.elem_type}"), dims


def _parse_card(raw: bytes, path: Path) -> ModelCard:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelInvalid(f"model card {path} is not valid JSON ({err}); restore it or retrain") from None
    try:
        return ModelCard.model_validate(data)
    except ValidationError as err:
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()[:10]]
        raise ModelInvalid(f"model card {path} is incomplete or malformed: " + "; ".join(lines)) from None


def _check_card_features(card: ModelCard, path: Path) -> None:
    names = [f.name for f in card.features]
    if names != list(FEATURE_NAMES):
        raise ModelInvalid(
            f"model card {path} lists features {names}; this predictor feeds {list(FEATURE_NAMES)} in that order. "
            "Retrain the model with this version (`amrwatch train`)"
        )
    for got, want in zip(card.features, FEATURES):
        if (got.type, got.unit, got.min, got.max) != (want.kind, want.unit, float(want.low), float(want.high)):
            raise ModelInvalid(
                f"model card {path}: feature {want.name} is {got.type} in [{got.min:g}, {got.max:g}] {got.unit}, "
                f"but this predictor validates {want.kind} in [{want.low:g}, {want.high:g}] {want.unit}; retrain the model"
            )
    if card.cutoffs.low > card.cutoffs.high:
        raise ModelInvalid(
            f"model card {path}: low cut-off {card.cutoffs.low:g} is above the high cut-off {card.cutoffs.high:g}"
        )
    if card.training_range is not None:
        if sorted(card.training_range) != sorted(FEATURE_NAMES):
            raise ModelInvalid(
                f"model card {path}: training_range names {sorted(card.training_range)}; it must name every feature "
                f"({', '.join(FEATURE_NAMES)})"
            )
        for f in FEATURES:
            r = card.training_range[f.name]
            if len(r) != 2 or not f.low <= r[0] <= r[1] <= f.high:
                raise ModelInvalid(
                    f"model card {path}: training_range.{f.name} must be [lowest, highest] within "
                    f"[{f.low:g}, {f.high:g}] {f.unit}; got {r}"
                )
    if card.synthetic and card.notice != SYNTHETIC_NOTICE:
        raise ModelInvalid(f"model card {path} marks a synthetic model but its notice is {card.notice!r}, not {SYNTHETIC_NOTICE!r}")


@dataclass
class LoadedModel:
    """A verified model: `predict` is the only thing the service needs."""

    card: ModelCard
    sha256: str
    model_path: Path
    card_path: Path
    _session: Any
    _input_name: str
    _output_name: str
    _positive: int

    @property
    def synthetic(self) -> bool:
        return self.card.synthetic

    @property
    def notice(self) -> str | None:
        return self.card.notice

    @property
    def training_range(self) -> dict[str, tuple[float, float]] | None:
        """Each factor's [lowest, highest] value in the training rows (card `training_range`); None for a
        card written before the range was recorded (retrain to get extrapolation warnings)."""
        raw = self.card.training_range
        if raw is None:
            return None
        return {n: (float(raw[n][0]), float(raw[n][1])) for n in FEATURE_NAMES}

    def extrapolated(self, factors: dict) -> dict[str, str]:
        """The factors outside the training range, name → "retraction_mm 35 (trained on 3–16)"."""
        rng = self.training_range or {}
        out: dict[str, str] = {}
        for n in FEATURE_NAMES:
            if n not in rng or n not in factors:
                continue
            lo, hi = rng[n]
            x = float(factors[n])
            if not lo <= x <= hi:
                out[n] = f"{n} {x:g} (trained on {lo:g}–{hi:g})"
        return out

    @property
    def cutoffs(self) -> tuple[float, float]:
        return self.card.cutoffs.low, self.card.cutoffs.high

    @classmethod
    def load(cls, model_path: str | Path = DEFAULT_MODEL, card_path: str | Path = DEFAULT_CARD) -> LoadedModel:
        import onnx
        import onnxruntime as ort

        model_path, card_path = Path(model_path), Path(card_path)
        card = _parse_card(_read(card_path, "model card"), card_path)
        _check_card_features(card, card_path)
        blob = _read(model_path, "model file")
        sha = hashlib.sha256(blob).hexdigest()
        if sha != card.model_sha256:
            raise ModelInvalid(
                f"model file {model_path} has SHA-256 {sha}, but the card {card_path} expects {card.model_sha256}: "
                "the file is corrupted or the card belongs to another model; restore both from the same training run"
            )
        try:
            proto = onnx.load_model_from_string(blob)
            onnx.checker.check_model(proto, full_check=True)
        except Exception as err:  # onnx raises several unrelated types for a bad file
            raise ModelInvalid(f"model file {model_path} is not a valid ONNX model: {err}") from None

        inputs = [tensor_spec(v) for v in proto.graph.input]
        want_in = (card.onnx.input.name, card.onnx.input.dtype, card.onnx.input.shape)
        if inputs != [want_in]:
            raise ModelInvalid(f"model {model_path} takes inputs {inputs}; its card says {[want_in]}")
        if card.onnx.input.dtype != "float32" or card.onnx.input.shape[1:] != [len(FEATURES)]:
            raise ModelInvalid(
                f"model {model_path} takes {card.onnx.input.dtype} {card.onnx.input.shape}; "
                f"this predictor feeds float32 [batch, {len(FEATURES)}]"
            )
        outputs = [tensor_spec(v) for v in proto.graph.output]
        want_out = [(o.name, o.dtype, o.shape) for o in card.onnx.outputs]
        if outputs != want_out:
            raise ModelInvalid(f"model {model_path} has outputs {outputs}; its card says {want_out}")
        prob = next((o for o in card.onnx.outputs if o.name == card.onnx.probability_output), None)
        if prob is None or prob.dtype != "float32" or len(prob.shape) != 2 or prob.shape[1] is None \
                or card.onnx.positive_class_index >= prob.shape[1]:
            raise ModelInvalid(
                f"model card {card_path}: probability output {card.onnx.probability_output!r} must be a float32 "
                f"[batch, classes] tensor holding class {card.onnx.positive_class_index}"
            )
        meta = {p.key: p.value for p in proto.metadata_props}
        if "amrwatch.features" in meta and meta["amrwatch.features"] != ",".join(FEATURE_NAMES):
            raise ModelInvalid(f"model {model_path} was exported for features {meta['amrwatch.features']}; the card lists {list(FEATURE_NAMES)}")
        if "amrwatch.synthetic" in meta and meta["amrwatch.synthetic"] != str(card.synthetic).lower():
            raise ModelInvalid(f"model {model_path} says synthetic={meta['amrwatch.synthetic']} but its card says {card.synthetic}")

        try:
            session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's errors are not a public hierarchy
            raise ModelInvalid(f"onnxruntime cannot load {model_path}: {err}") from None
        loaded = cls(card, sha, model_path, card_path, session, card.onnx.input.name,
                     card.onnx.probability_output, card.onnx.positive_class_index)
        loaded._check_golden()
        return loaded

    def _check_golden(self) -> None:
        low, high = self.cutoffs
        for i, g in enumerate(self.card.golden_vectors):
            try:
                x = to_vector(g.inputs)
            except FactorError as err:
                raise ModelInvalid(f"model card {self.card_path}: golden vector {i} is invalid: {err}") from None
            p = float(self.probabilities(x)[0])
            if abs(p - g.probability) > GOLDEN_TOLERANCE:
                raise ModelInvalid(
                    f"golden vector {i} gives p = {p:.7f} with {self.model_path}, but the card recorded "
                    f"{g.probability:.7f} (tolerance {GOLDEN_TOLERANCE:g}): the card and the model do not belong together"
                )
            if band_for(p, low, high) != g.band:
                raise ModelInvalid(
                    f"golden vector {i} falls in band {band_for(p, low, high)!r} but the card recorded {g.band!r}"
                )

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(persist) for rows already in model order, shape (n, 7)."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        out = self._session.run([self._output_name], {self._input_name: x})[0]
        return np.asarray(out[:, self._positive], dtype=np.float64)

    def predict(self, factors: dict) -> tuple[float, Band]:
        """(probability, band) for one patient; FactorError names any bad or missing factor."""
        p = float(self.probabilities(to_vector(factors))[0])
        return p, band_for(p, *self.cutoffs)

    def prediction_body(self, factors: dict) -> dict[str, Any]:
        """The body of a `prediction` message for these factors (FactorError if any is bad or missing)."""
        inputs = validate(factors, complete=True)
        p, band = self.predict(inputs)
        low, high = self.cutoffs
        return {
            "probability": p,
            "band": band,
            "cutoff_low": low,
            "cutoff_high": high,
            "model_sha256": self.sha256,
            "synthetic": self.synthetic,
            "notice": self.notice,
            "inputs": {n: inputs[n] for n in FEATURE_NAMES},
            "extrapolated": list(self.extrapolated(inputs)),
        }

    def describe(self) -> str:
        """One line for the start-up log."""
        low, high = self.cutoffs
        tag = f" — {self.notice}" if self.notice else ""
        return (
            f"persistence model {self.model_path.name} sha256 {self.sha256[:12]}… "
            f"(n={self.card.model_extra.get('n', '?')}, cut-offs low<{low:.3f}, high≥{high:.3f}){tag}"
        )
