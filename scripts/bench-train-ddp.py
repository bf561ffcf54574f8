"""The peer of `ofa bench train [--nproc-per-node N]`: the reference's progressive-shrinking step
(MIT's `ofa` package, OFAMobileNetV3) on PyTorch, data-parallel through DDP (Gloo, 25 MB buckets)
when torchrun launches it, on one process otherwise.

One step: the teacher's soft labels (its full network, train-mode BN, no grad), one sampled
subnet's forward, label-smoothed cross-entropy plus distillation (kd_ratio 1), backward (DDP
averages the gradients across ranks in buckets, overlapped with backward), SGD (Nesterov, momentum
0.9, weight decay 3e-5). `--batch` is the global batch; each rank steps on its shard. Prints one
JSON object (rank 0): images_per_s and step_ms, as ofa's benchmark.
"""

import argparse
import copy
import json
import os
import random
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3


def soft_ce(logits, target):
    return torch.mean(torch.sum(-target * F.log_softmax(logits, dim=1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    random.seed(0)
    net = OFAMobileNetV3(
        n_classes=1000, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4],
        width_mult=1.0,
    )
    teacher = copy.deepcopy(net)
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, find_unused_parameters=True, bucket_cap_mb=25
        )
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=3e-5, nesterov=True)
    local = a.batch // world
    x = torch.randn(local, 3, a.resolution, a.resolution)
    y = torch.randint(0, 1000, (local,))
    ms = []
    warmup = 5
    for i in range(a.steps + warmup):
        t0 = time.perf_counter()
        net.sample_active_subnet()
        opt.zero_grad()
        teacher.train()
        with torch.no_grad():
            soft = F.softmax(teacher(x).detach(), dim=1)
        out = model(x)
        smooth = F.one_hot(y, 1000).float() * 0.9 + 0.1 / 1000
        loss = soft_ce(out, smooth) + soft_ce(out, soft)
        loss.backward()
        opt.step()
        if i >= warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
    if rank == 0:
        median = statistics.median(ms)
        print(json.dumps({
            "benchmark": "train-peer", "peer": "MIT ofa OFAMobileNetV3 + PyTorch "
            + ("DDP (gloo)" if world > 1 else "one process"),
            "torch": torch.__version__, "world_size": world, "threads": torch.get_num_threads(),
            "batch": a.batch, "resolution": a.resolution,
            "images_per_s": a.batch / (median / 1e3), "step_ms": {"median_ms": median},
        }))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
