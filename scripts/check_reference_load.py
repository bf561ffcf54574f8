#!/usr/bin/env python3
"""Load a subnet written by `ofa extract` into the reference PyTorch network of its family
(`MobileNetV3`, `ProxylessNASNets` or `ResNets`, as its `net_config` names it) and compare logits.

Needs `torch`, `safetensors` and the reference package `ofa` (PyPI); not part of `make test`
(the project does not depend on Python at run time). Usage:

    ofa extract --supernet S --arch A.json --out sub.safetensors
    ofa infer --model sub.safetensors --input in.safetensors --out logits.safetensors
    python3 scripts/check_reference_load.py sub.safetensors in.safetensors logits.safetensors
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from ofa.imagenet_classification.networks import MobileNetV3, ProxylessNASNets, ResNets

NETWORKS = {"MobileNetV3": MobileNetV3, "ProxylessNASNets": ProxylessNASNets, "ResNets": ResNets}


def main(subnet: str, inputs: str, logits: str) -> int:
    with safe_open(subnet, "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["net_config"])
    net = NETWORKS[config["name"]].build_from_config(config)
    net.load_state_dict(load_file(subnet), strict=True)
    net.eval()
    x = load_file(inputs)["input"]
    with torch.no_grad():
        y = net(x)
    ours = load_file(logits)["logits"]
    diff = (y - ours).abs().max().item()
    tol = 1e-4 * (1 + ours.abs().max().item())
    print(f"reference {config['name']} loaded {subnet} (strict); max |logit diff| = {diff:.3e} (tolerance {tol:.1e})")
    return 0 if diff <= tol else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
