#!/usr/bin/env python3
"""Conformance fixtures for the supernet families beyond MobileNetV3, made by the reference.

Writes `tests/fixtures/ofa-proxyless-tiny/` and `tests/fixtures/ofa-resnet-tiny/` (small, committed) from the reference package (PyPI
`ofa`) and `torch`; not part of `make test` (the project does not depend on Python at run time).

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch==2.11.0 torchvision pillow ofa safetensors
    /tmp/ref/bin/python scripts/family_fixtures.py [OUT_ROOT]

ProxylessNAS: `OFAProxylessNASNets(n_classes=10, width_mult=0.25, ks_list=[3,5,7],
expand_ratio_list=[3,4,6], depth_list=[2,3,4], bn_param=(0.1, 1e-3), dropout_rate=0)`, whose
weights are seeded random rather than the reference's init (every parameter and BN statistic, the
kernel transforms identity + N(0, 0.1²)), so that a slicing or ordering mistake shows in the
outputs. Files:

- `supernet.safetensors`: the state_dict (reference naming);
- `cases.json`: per case its kind (largest, smallest, random, clipped: `d[5]` = 4), arch (`ks`, `e`, `d`, `r`), batch, the reference's MACs
  (`count_net_flops`) and params (`count_parameters`) of the extracted subnet;
- `io.safetensors`: per case `input_{i}`, the eval-mode `logits_supernet_{i}` (the supernet with the
  arch active) and `logits_subnet_{i}` (the extracted subnet), and `logits_reorg_{i}` (the supernet
  after `re_organize_middle_weights(0)`, the arch active);
- `subnet.safetensors`: the extracted subnet of the first random case, metadata `net_config`;
- `published_shapes.json`: name → shape of the published `ofa_proxyless_d234_e346_k357_w1.3`
  construction's state_dict (width 1.3, 1000 classes), for the import test.

ResNet: `OFAResNets(n_classes=10, depth_list=[0,1,2], expand_ratio_list=[0.2,0.25,0.35],
width_mult_list=[0.05,0.1,0.125], bn_param=(0.1, 1e-5), dropout_rate=0)` (stage widths 16–256,
each width choice distinct except the stem's middle one), weights seeded random as above. The same
files, with:

- `cases.json`: `{"encoder_n_dim", "cases"}`, per case the arch as `sample_active_subnet` gives it
  (`d[5]`, `e[18]`, `w[6]`), `r`, batch, MACs, params, `feature_ones` (the indices of the ones in
  `ResNetArchEncoder.arch2feature` for resolutions 32, 36, …, 48) and `net_config` (the extracted
  `ResNets.config`: `get_active_net_config` cannot be serialised, it holds an `IdentityLayer`);
  kinds largest, smallest, random and `stem_skip_1` (`d[0]` = 1, which skips the stem's middle conv
  as 0 does);
- `io.safetensors`: `logits_reorg0_{i}` and `logits_reorg1_{i}`, after
  `re_organize_middle_weights(expand_ratio_stage)` 0 and 1;
- `published_shapes.json`: the published `ofa_resnet50` construction (widths 0.65/0.8/1.0).
"""
import json
import os
import random
import sys

import torch
from safetensors.torch import save_file
from ofa.imagenet_classification.elastic_nn.networks import OFAProxylessNASNets, OFAResNets
from ofa.nas.accuracy_predictor.arch_encoder import ResNetArchEncoder
from ofa.utils import count_net_flops, count_parameters

SEED = 20261205


def randomise(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Every tensor of the state_dict random, scaled so that activations stay O(1)."""
    sd = net.state_dict()
    for name, t in sd.items():
        if t.dtype != torch.float32:
            continue
        if name.endswith("_matrix"):
            n = t.shape[0]
            t.copy_(torch.eye(n) + 0.1 * torch.randn(t.shape, generator=gen))
        elif name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        elif name.endswith("running_mean"):
            t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        elif t.dim() == 1 and ".bn." in name and name.endswith("weight"):
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        elif t.dim() == 1:
            t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        else:
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=gen) / fan_in**0.5)
    net.load_state_dict(sd)


def proxyless(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    random.seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    net = OFAProxylessNASNets(
        n_classes=10,
        width_mult=0.25,
        ks_list=[3, 5, 7],
        expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4],
        bn_param=(0.1, 1e-3),
        dropout_rate=0,
    )
    randomise(net, gen)
    net.eval()
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(sd, os.path.join(out, "supernet.safetensors"), metadata={"naming": "reference"})

    n_blocks = len(net.blocks) - 1
    resolutions = list(range(32, 49, 4))
    cases = [
        ("largest", dict(ks=[7] * n_blocks, e=[6] * n_blocks, d=[4] * 5 + [1]), 48, 1),
        ("largest", dict(ks=[7] * n_blocks, e=[6] * n_blocks, d=[4] * 5 + [1]), 36, 3),
        ("smallest", dict(ks=[3] * n_blocks, e=[3] * n_blocks, d=[2] * 5 + [1]), 32, 3),
        ("smallest", dict(ks=[3] * n_blocks, e=[3] * n_blocks, d=[2] * 5 + [1]), 44, 1),
    ]
    for i in range(4):
        arch = net.sample_active_subnet()
        cases.append(("random", arch, resolutions[(i * 3 + 1) % len(resolutions)], 1 + 2 * (i % 2)))
    # a depth above 1 on the last stage, which set_active_subnet clips to its one block
    arch = net.sample_active_subnet()
    arch["d"] = [4] * 6
    cases.append(("clipped", arch, 40, 1))

    # The supernet after channel sorting at stage 0, for the same archs.
    reorg = OFAProxylessNASNets(
        n_classes=10, width_mult=0.25, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4], bn_param=(0.1, 1e-3), dropout_rate=0,
    )
    reorg.load_state_dict(net.state_dict())
    reorg.re_organize_middle_weights(expand_ratio_stage=0)
    reorg.eval()

    io, rows = {}, []
    subnet_written = False
    for i, (kind, arch, r, batch) in enumerate(cases):
        x = torch.randn((batch, 3, r, r), generator=gen)
        net.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
        reorg.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
        sub = net.get_active_subnet(preserve_weight=True)
        sub.eval()
        with torch.no_grad():
            io[f"input_{i}"] = x
            io[f"logits_supernet_{i}"] = net(x)
            io[f"logits_subnet_{i}"] = sub(x)
            io[f"logits_reorg_{i}"] = reorg(x)
        row = {
            "index": i,
            "kind": kind,
            "ks": list(arch["ks"]),
            "e": list(arch["e"]),
            "d": list(arch["d"]),
            "r": r,
            "batch": batch,
            "macs": int(count_net_flops(sub, (1, 3, r, r))),
            "params": int(count_parameters(sub)),
        }
        if kind == "random" and not subnet_written:
            config = net.get_active_net_config()
            ssd = {k: v.contiguous() for k, v in sub.state_dict().items()}
            save_file(
                ssd,
                os.path.join(out, "subnet.safetensors"),
                metadata={"net_config": json.dumps(config, sort_keys=True)},
            )
            row["subnet_file"] = "subnet.safetensors"
            subnet_written = True
        rows.append(row)
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "io.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")

    published = OFAProxylessNASNets(
        n_classes=1000, width_mult=1.3, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4], dropout_rate=0,
    )
    shapes = {k: list(v.shape) for k, v in published.state_dict().items()}
    with open(os.path.join(out, "published_shapes.json"), "w") as f:
        json.dump(shapes, f, indent=0, sort_keys=True)
        f.write("\n")


RESNET_TINY = dict(
    n_classes=10,
    depth_list=[0, 1, 2],
    expand_ratio_list=[0.2, 0.25, 0.35],
    width_mult_list=[0.05, 0.1, 0.125],
    bn_param=(0.1, 1e-5),
    dropout_rate=0,
)


def resnet(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    random.seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    net = OFAResNets(**RESNET_TINY)
    randomise(net, gen)
    net.eval()
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(sd, os.path.join(out, "supernet.safetensors"), metadata={"naming": "reference"})

    n_blocks = len(net.blocks)
    resolutions = list(range(32, 49, 4))
    encoder = ResNetArchEncoder(
        image_size_list=resolutions,
        depth_list=RESNET_TINY["depth_list"],
        expand_list=RESNET_TINY["expand_ratio_list"],
        width_mult_list=RESNET_TINY["width_mult_list"],
    )
    cases = [
        ("largest", dict(d=[2] * 5, e=[0.35] * n_blocks, w=[2] * 6), 48, 1),
        ("largest", dict(d=[2] * 5, e=[0.35] * n_blocks, w=[2] * 6), 36, 3),
        ("smallest", dict(d=[0] * 5, e=[0.2] * n_blocks, w=[0] * 6), 32, 3),
        ("smallest", dict(d=[0] * 5, e=[0.2] * n_blocks, w=[0] * 6), 44, 1),
    ]
    for i in range(4):
        arch = net.sample_active_subnet()
        cases.append(("random", arch, resolutions[(i * 3 + 1) % len(resolutions)], 1 + 2 * (i % 2)))
    # d[0] = 1: any value below the largest depth skips the stem's middle conv
    arch = net.sample_active_subnet()
    arch["d"][0] = 1
    cases.append(("stem_skip_1", arch, 40, 1))

    # The supernet after the middle channels' re-organisation at expand stages 0 and 1.
    reorgs = []
    for stage in (0, 1):
        reorg = OFAResNets(**RESNET_TINY)
        reorg.load_state_dict(net.state_dict())
        reorg.re_organize_middle_weights(expand_ratio_stage=stage)
        reorg.eval()
        reorgs.append(reorg)

    io, rows = {}, []
    subnet_written = False
    for i, (kind, arch, r, batch) in enumerate(cases):
        x = torch.randn((batch, 3, r, r), generator=gen)
        net.set_active_subnet(**arch)
        for reorg in reorgs:
            reorg.set_active_subnet(**arch)
        sub = net.get_active_subnet(preserve_weight=True)
        sub.eval()
        with torch.no_grad():
            io[f"input_{i}"] = x
            io[f"logits_supernet_{i}"] = net(x)
            io[f"logits_subnet_{i}"] = sub(x)
            for stage, reorg in enumerate(reorgs):
                io[f"logits_reorg{stage}_{i}"] = reorg(x)
        feature = encoder.arch2feature(dict(arch, image_size=r))
        row = {
            "index": i,
            "kind": kind,
            "d": list(arch["d"]),
            "e": list(arch["e"]),
            "w": list(arch["w"]),
            "r": r,
            "batch": batch,
            "macs": int(count_net_flops(sub, (1, 3, r, r))),
            "params": int(count_parameters(sub)),
            "feature_ones": [int(j) for j in feature.nonzero()[0]],
            "net_config": sub.config,
        }
        if kind == "random" and not subnet_written:
            ssd = {k: v.contiguous() for k, v in sub.state_dict().items()}
            save_file(
                ssd,
                os.path.join(out, "subnet.safetensors"),
                metadata={"net_config": json.dumps(sub.config, sort_keys=True)},
            )
            row["subnet_file"] = "subnet.safetensors"
            subnet_written = True
        rows.append(row)
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "io.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"encoder_n_dim": encoder.n_dim, "cases": rows}, f, indent=1)
        f.write("\n")

    published = OFAResNets(
        n_classes=1000, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
        width_mult_list=[0.65, 0.8, 1.0], dropout_rate=0,
    )
    shapes = {k: list(v.shape) for k, v in published.state_dict().items()}
    with open(os.path.join(out, "published_shapes.json"), "w") as f:
        json.dump(shapes, f, indent=0, sort_keys=True)
        f.write("\n")


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    proxyless(os.path.join(root, "ofa-proxyless-tiny"))
    resnet(os.path.join(root, "ofa-resnet-tiny"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
