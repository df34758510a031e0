"""Golden outputs of torchvision's own MobileNetV2, for the parity test of tlbench's import (tests/test_torch_parity.py).

Runs torchvision's `mobilenet_v2` with the ImageNet `.pth` file tlbench imports, on foolbox's 20 ImageNet photos
(224 px, torchvision's own Resize/ToTensor/Normalize) and on deterministic probe inputs at the sizes tlbench's
suites use, and writes the logits (and, for the probes, the pooled features the classifier sees) as JSON. Needs torch and
torchvision, which tlbench itself never does: `make golden` makes a separate virtual environment for them.

    python scripts/golden_torchvision.py WEIGHTS.pth PHOTOS_DIR OUT.json

Only numpy is imported at module level: the test imports `probe` from here to rebuild the probe inputs.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

PROBES = [(0, 96), (1, 96), (2, 75)]  # (seed, size): the default suite's size and an odd one
DECIMALS = 4  # the parity tolerance is 1e-3


def probe(seed: int, size: int) -> np.ndarray:
    """A (size, size, 3) float32 input on the normalised scale, the same with any numpy: a 32-bit LCG,
    spelled out, because numpy does not promise its generators' streams across versions."""
    x, values = seed * 2654435761 % 2**32, []
    for _ in range(size * size * 3):
        x = (1664525 * x + 1013904223) % 2**32
        values.append(x)
    return (np.array(values, np.float64) / 2**32 * 4 - 2).astype(np.float32).reshape(size, size, 3)


def _rounded(a) -> list:
    return np.round(np.asarray(a, np.float64), DECIMALS).tolist()


def main(weights: str, photos: str, out: str) -> None:
    import PIL
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()

    def run(batch: torch.Tensor) -> tuple[list, list]:
        with torch.no_grad():
            pooled = torch.nn.functional.adaptive_avg_pool2d(net.features(batch), 1).flatten(1)
            return _rounded(net.classifier(pooled)), _rounded(pooled)

    prepare = transforms.Compose([transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BILINEAR),
                                  transforms.ToTensor(),
                                  transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    files = sorted(Path(photos).glob("imagenet_*"), key=lambda p: p.name)
    batch = torch.stack([prepare(Image.open(p).convert("RGB")) for p in files])
    logits, _ = run(batch)
    result = {
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "weights": Path(weights).name,
        "photos": [{"file": p.name, "label": int(re.search(r"_(\d+)\.\w+$", p.name).group(1)),
                    "top1": int(np.argmax(lg)), "logits": lg}  # pooled features: the probes carry them
                   for p, lg in zip(files, logits)],
        "probes": [],
    }
    for seed, size in PROBES:
        x = torch.from_numpy(probe(seed, size).transpose(2, 0, 1)[None].copy())
        (lg,), (po,) = run(x)
        result["probes"].append({"seed": seed, "size": size, "logits": lg, "pooled": po})
    Path(out).write_text(json.dumps(result, separators=(",", ":")) + "\n")
    hits = sum(p["top1"] == p["label"] for p in result["photos"])
    print(f"wrote {out}: torchvision top-1 {hits}/{len(files)} on the photos, {len(PROBES)} probes")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
