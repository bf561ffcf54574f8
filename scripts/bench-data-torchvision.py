#!/usr/bin/env python3
"""The peer of `ofa bench data`: torchvision's ImageFolder + the reference's training transform
(RandomResizedCrop, RandomHorizontalFlip, ColorJitter(32/255, 0.5), ToTensor, Normalize) in a
DataLoader with the same batch, worker count and number of batches. Python is only for this
comparison; ofa never needs it. Prints one JSON object.

  python3 scripts/bench-data-torchvision.py --data DIR [--resolution 224] [--workers 2]
      [--batch 64] [--batches 20] [--warmup 2] [--no-jitter]
"""
import argparse
import json
import os
import resource
import time

import PIL
import torch
import torchvision
from PIL import Image
from torchvision import datasets, transforms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-jitter", action="store_true",
                   help="leave ColorJitter out (the transform the issue names)")
    p.add_argument("--profile-images", type=int, default=200)
    a = p.parse_args()
    root = os.path.join(a.data, "train") if os.path.isdir(os.path.join(a.data, "train")) else a.data
    t = [transforms.RandomResizedCrop(a.resolution), transforms.RandomHorizontalFlip()]
    if not a.no_jitter:
        t.append(transforms.ColorJitter(brightness=32.0 / 255.0, saturation=0.5))
    t += [transforms.ToTensor(),
          transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
    ds = datasets.ImageFolder(root, transforms.Compose(t))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=True,
                                         num_workers=a.workers, prefetch_factor=4 if a.workers else None)
    it = iter(loader)
    start = time.perf_counter()
    for i in range(a.warmup + a.batches):
        if i == a.warmup:
            start = time.perf_counter()
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        assert x.shape[0] == a.batch
    secs = time.perf_counter() - start
    # One image's decode alone, on this thread: PIL (libjpeg-turbo), at full size and with
    # `draft` (reduced DCT scale, to the output resolution).
    files = [f for f, _ in ds.samples[: a.profile_images]]
    def decode(draft):
        t0 = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                if draft:
                    im.draft("RGB", (a.resolution, a.resolution))
                im.convert("RGB").load()
        return (time.perf_counter() - t0) * 1e3 / max(len(files), 1)
    out = {
        "benchmark": "data-torchvision",
        "torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__,
        "dataset_images": len(ds), "resolution": a.resolution, "batch": a.batch,
        "batches": a.batches, "workers": a.workers, "color_jitter": not a.no_jitter,
        "images_per_s": a.batches * a.batch / secs,
        "batch_ms": secs * 1e3 / a.batches,
        "pil_decode_ms": decode(False), "pil_draft_decode_ms": decode(True),
        "peak_rss_mib_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
