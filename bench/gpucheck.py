"""The GPU check's one-screen summary (scripts/gpu-check.sh, `tlbench gpu-summary RESULTS`), from stored records only.

Per configuration (a run of suites/gpu-check.yaml): seconds of the first epoch (tracing and XLA compilation
included) and of the steady epochs (2 onwards: median [min–max] n), the first epoch's excess over a steady one,
training images per second, and the achieved training TFLOP/s against the device's dense peak:

  achieved TFLOP/s = train FLOPs per image × images/s
  train FLOPs per image: the record's `flops.train` (bench/flops.py): 2 FLOPs per multiply-add of the convolutions
      and Dense layers; ×3 for a layer whose weights train (forward, gradient w.r.t. inputs and w.r.t. weights),
      ×1 for a frozen layer that no trainable layer precedes (forward only). BatchNorm, activations, pooling and
      the optimizer's update are not counted, so this is a lower bound of the work done.
  images/s: training images per second of training time (validation excluded), the steady epochs' median.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from . import store, tables
from .errors import UserError


def _tensor_cores(tf32: float, half: float) -> dict[str, tuple[float, str]]:
    """An Ampere or later GPU: float32 convolutions and matmuls run as TF32 on its tensor cores, since JAX's and
    TensorFlow's default precision allows it; the mixed policies compute in bfloat16 / float16."""
    return {"float32": (tf32, "TF32"), "mixed_bfloat16": (half, "BF16"), "mixed_float16": (half, "FP16")}


# Dense peak TFLOP/s (without structured sparsity, which the data sheets' headline figures assume: those are
# halved here) per precision policy, from the vendors' data sheets; the first pattern found in the device name
# wins. H100 SXM5 and PCIe: NVIDIA H100 Tensor Core GPU Architecture whitepaper (v1.04), table 3 (dense
# figures). H200 SXM: NVIDIA H200 data sheet (TF32 989, BF16 / FP16 1,979 with sparsity: the H100 SXM's
# silicon and clocks); H200 NVL: the same sheet (835 / 1,671 with sparsity). A100 (SXM and PCIe, 40 and 80 GB):
# A100 data sheet (TF32 156, BF16 / FP16 312). L40S: L40S data sheet (TF32 183, BF16 / FP16 362.05). L4: L4
# data sheet (TF32 120, BF16 / FP16 242 with sparsity). T4: T4 data sheet (FP32 8.1, mixed FP16 65; no TF32,
# no bfloat16 in hardware).
PEAKS: tuple[tuple[str, dict[str, tuple[float, str]]], ...] = (
    (r"H200 NVL", _tensor_cores(417.5, 835.5)),
    (r"H200", _tensor_cores(494.7, 989.4)),
    (r"H100 PCIe", _tensor_cores(378.0, 756.0)),
    (r"H100", _tensor_cores(494.7, 989.4)),
    (r"A100", _tensor_cores(156.0, 312.0)),
    (r"L40S", _tensor_cores(183.0, 362.05)),
    (r"\bL4\b", _tensor_cores(60.0, 121.0)),
    (r"\bT4\b", {"float32": (8.1, "FP32"), "mixed_float16": (65.0, "FP16")}),
)


def peak(device: str, precision: str) -> tuple[float, str] | None:
    """(dense peak TFLOP/s, the figure's number format) of this device at this precision policy; None for a
    device not in PEAKS (a CPU: its peak depends on clocks and vector units a VM does not report reliably) or a
    precision its hardware lacks."""
    for pattern, peaks in PEAKS:
        if re.search(pattern, device):
            return peaks.get(precision)
    return None


def _num(v: float) -> str:
    """Three significant digits, whole numbers from 1,000 up: 0.0412, 1.21, 31.2, 4132."""
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _steady(row) -> str:
    name = "steady_epoch_seconds"
    if not row[f"{name}_n"]:
        return "—"
    spread = f" [{_num(row[f'{name}_min'])}–{_num(row[f'{name}_max'])}]" if row[f"{name}_n"] > 1 else ""
    return f"{_num(row[f'{name}_median'])}{spread} n={int(row[f'{name}_n'])}"


def _utilisation(row) -> tuple[float | None, str]:
    """(achieved TFLOP/s, that against the device's peak)."""
    if row["train_gflops_per_image"] is None or math.isnan(row["train_gflops_per_image"]):
        return None, "no FLOP count in the record"
    achieved = row["train_gflops_per_image"] * row["steady_images_per_second_median"] / 1000
    known = peak(row["hardware"], row["precision"])
    if not math.isfinite(achieved):  # no steady epoch
        return achieved, "—"
    if known is None:
        return achieved, "peak unknown"
    tflops, unit = known
    return achieved, f"{100 * achieved / tflops:.2f}% of {tflops:g} ({unit} dense)"


COLUMNS = ("run", "precision", "first s", "steady s/epoch [min–max] n", "first−steady s", "images/s", "TFLOP/s",
           "of peak")
WIDTHS = (14, 14, 7, 28, 14, 8, 8, 0)


def _line(cells) -> str:
    """Cells at least two spaces apart, so that a reader (or a test) can split a line on them."""
    return "  ".join(c.ljust(w) for c, w in zip(cells, WIDTHS)).rstrip()


def _cells(row) -> list[str]:
    if not row["ok"]:
        return [row["kind"], row["precision"], row["status"]]
    achieved, of_peak = _utilisation(row)
    first, steady = row["first_epoch_seconds_median"], row["steady_epoch_seconds_median"]
    return [row["kind"], row["precision"], _num(first), _steady(row), _num(first - steady),
            _num(row["steady_images_per_second_median"]), _num(achieved), of_peak]


def _header(records: list[dict], table) -> list[str]:
    env = records[0].get("environment") or {}
    versions = env.get("versions") or {}
    software = " · ".join(f"{p} {versions[p]}" for p in ("jax", "jaxlib", "keras") if versions.get(p))
    commit = ((env.get("git") or {}).get("commit") or "no commit")[:12]
    first = table.iloc[0]
    cut = records[0]["config"].get("cut")
    network = first["backbone"] + (f" cut at {cut}" if cut else "")
    return [f"GPU check · {' + '.join(dict.fromkeys(table['hardware']))} · {software} · {commit}",
            f"{network} · {first['dataset']} · {first['input_size']} px · batch {first['batch_size']} · "
            f"{first['train_size']} train / {first['val_size']} val images · weights {first['weights']}"]


NOTES = ("first: epoch 1, tracing and XLA compilation included; first−steady: its excess over a steady epoch,",
         "  about the compile time. steady: epochs 2 onwards, median [min–max] n.",
         "images/s: training images per second of training time (validation excluded), median of the steady epochs.",
         "TFLOP/s: images/s × the record's training FLOPs per image: 2 per multiply-add of the convolutions and",
         "  Dense layers, ×3 where the weights train, ×1 for frozen layers; BatchNorm, activations and the",
         "  optimizer's update uncounted.",
         "of peak: the vendor's dense peak at that precision (float32 as TF32 on tensor cores): bench/gpucheck.py.")


def _extractions(records: list[dict]) -> list[str]:
    """The cached-feature runs' one-off extraction, which their epochs do not include."""
    lines = []
    for r in records:
        f = r.get("features")
        if f:
            how = "read from the cache" if f.get("cache_hit") else "computed"
            lines.append(f"{tables.kind(r['config'])}: features {how}; extraction took {_num(f['extract_seconds'])} s "
                         "once, outside its epochs")
    return lines


def summary(records: list[dict]) -> str:
    """The one-screen text: what ran where, one line per configuration, what each number is."""
    table, _ = tables.summarise(records)
    lines = [*_header(records, table), "", _line(COLUMNS)]
    lines += [_line(_cells(row)) for _, row in table.iterrows()]
    return "\n".join([*lines, "", *_extractions(records), *NOTES]) + "\n"


def write(folder: Path) -> tuple[str, store.Results]:
    """The summary of a results folder, also written to FOLDER/summary.txt; and what the folder held."""
    found = store.scan(folder)
    found.warn()
    if not found.records:
        raise UserError(f"'{folder}' holds no readable records: nothing to summarise")
    text = summary(found.records)
    store.atomic_write(Path(folder) / "summary.txt", text)
    return text, found
