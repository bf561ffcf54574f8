#!/usr/bin/env bash
# Idempotent set-up for ofa: libtorch (from the PyPI wheel torch==2.11.0, project-local) and the
# Fashion-MNIST Debian package. Safe to run again: every step checks before it acts.
#
# Layout after set-up (git-ignored):
#   .libtorch/site/torch/{lib,include}   the wheel's libtorch (what tch links against)
#   .libtorch/site/nvidia/...            CUDA runtime libraries libtorch_cpu.so needs (cudart, cupti)
#   .libtorch/torch -> site/torch        the path LIBTORCH points at (see .cargo/config.toml)
#   .onnxruntime/site/onnxruntime        ONNX Runtime's wheel (and numpy): the timing of probes
#
# CPU machines get the wheel without its CUDA dependencies (about 0.5 GB instead of 4.7 GB) and
# the CUDA parts of the wheel are removed; machines with an NVIDIA GPU get the full install. A
# machine that already has torch 2.11.0 in its Python (e.g. the GPU machines) reuses it.
set -euo pipefail

TORCH_VERSION=2.11.0
CUDART_PKG="nvidia-cuda-runtime==13.0.96.*"
CUPTI_PKG="nvidia-cuda-cupti==13.0.85.*"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.libtorch"
stamp="$dest/.installed-$TORCH_VERSION"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

have_gpu() { [ -e /dev/nvidiactl ] || command -v nvidia-smi >/dev/null 2>&1; }

install_libtorch() {
  if [ -f "$stamp" ] && [ -f "$dest/torch/lib/libtorch_cpu.so" ]; then
    log "libtorch $TORCH_VERSION already installed in .libtorch"
    return
  fi
  mkdir -p "$dest"
  # Reuse a system-wide torch of exactly this version when there is one.
  local sys_torch
  sys_torch="$("$PYTHON" - <<PY 2>/dev/null || true
import torch, os
if torch.__version__.split('+')[0] == "$TORCH_VERSION":
    print(os.path.dirname(torch.__file__))
PY
)"
  if [ -n "$sys_torch" ] && [ -f "$sys_torch/lib/libtorch_cpu.so" ] && [ -d "$sys_torch/include" ]; then
    log "reusing the installed torch $TORCH_VERSION at $sys_torch"
    ln -sfn "$sys_torch" "$dest/torch"
  else
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
      log "pip is missing: installing python3-pip"
      apt_install python3-pip
    fi
    rm -rf "$dest/site"
    if have_gpu; then
      log "NVIDIA GPU found: installing torch==$TORCH_VERSION with its CUDA dependencies (about 4.7 GB)"
      "$PYTHON" -m pip install --quiet --no-input --target "$dest/site" "torch==$TORCH_VERSION"
    else
      log "no GPU: installing torch==$TORCH_VERSION without its CUDA stack (about 0.5 GB)"
      "$PYTHON" -m pip install --quiet --no-input --no-deps --target "$dest/site" \
        "torch==$TORCH_VERSION" "$CUDART_PKG" "$CUPTI_PKG"
      # libtorch_cpu.so needs only cudart and cupti; the CUDA back end would need the rest of the
      # stack, so it is dropped (the ofa binary loads libtorch_cuda.so at start-up only if present).
      rm -f "$dest"/site/torch/lib/libtorch_cuda*.so "$dest"/site/torch/lib/libc10_cuda.so \
        "$dest"/site/torch/lib/libtorch_nvshmem.so "$dest"/site/torch/lib/libcaffe2_nvrtc.so \
        "$dest"/site/torch/lib/libtorch_python.so
    fi
    # Python-only parts are not needed by a Rust program.
    rm -rf "$dest"/site/torch/_inductor "$dest"/site/torch/testing "$dest"/site/functorch \
      "$dest"/site/torchgen "$dest"/site/bin
    ln -sfn site/torch "$dest/torch"
  fi
  touch "$stamp"
  log "libtorch ready: $(readlink -f "$dest/torch")"
}

apt_install() {
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    log "cannot install $* (not root and no sudo)"; return 1
  fi
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

install_fmnist() {
  if ls /usr/share/datasets/fashion-mnist/*.gz >/dev/null 2>&1; then
    log "Fashion-MNIST present in /usr/share/datasets/fashion-mnist"
    return
  fi
  if command -v apt-get >/dev/null 2>&1; then
    log "installing the Debian package dataset-fashion-mnist"
    apt_install dataset-fashion-mnist || log "WARNING: could not install dataset-fashion-mnist; training on Fashion-MNIST will need --data"
  else
    log "WARNING: no apt-get; Fashion-MNIST must be given with --data"
  fi
}

install_font() {
  # Text in PNG plots (Pareto fronts) is drawn with DejaVu Sans.
  if [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    return
  fi
  if command -v apt-get >/dev/null 2>&1; then
    log "installing the Debian package fonts-dejavu-core (plot labels)"
    apt_install fonts-dejavu-core || log "WARNING: could not install fonts-dejavu-core; PNG plots will be skipped (SVG still written)"
  fi
}

install_curl() {
  # `make demo` talks to `ofa serve` with curl.
  command -v curl >/dev/null 2>&1 && return
  if command -v apt-get >/dev/null 2>&1; then
    log "installing curl (the demo's HTTP client)"
    apt_install curl || log "WARNING: could not install curl; make demo needs it"
  fi
}

install_gloo_headers() {
  # dist/ compiles a C++ shim over c10d's ProcessGroupGloo. The torch wheel ships c10d's headers but
  # not Gloo's; Debian's libgloo-dev has them (only headers are used: the Gloo code is inside
  # libtorch_cpu.so, so nothing more is linked).
  [ -f /usr/include/gloo/config.h ] && return
  if command -v apt-get >/dev/null 2>&1; then
    log "installing the Debian package libgloo-dev (Gloo's headers, for the c10d shim)"
    apt_install libgloo-dev || { log "ERROR: could not install libgloo-dev; the build needs /usr/include/gloo"; return 1; }
  else
    log "ERROR: no apt-get; install Gloo's headers (/usr/include/gloo) by hand"; return 1
  fi
}

ORT_VERSION=1.32.0
install_onnxruntime() {
  # ONNX Runtime, the runtime deployments run our ONNX files in, from its PyPI wheel (with numpy),
  # project-local: `ofa hardware` probes are timed in it, and the tests run the timing script
  # with PYTHONPATH=.onnxruntime/site. The wheel ships libonnxruntime.so too.
  local ort="$root/.onnxruntime"
  local ort_stamp="$ort/.installed-$ORT_VERSION"
  if [ -f "$ort_stamp" ] && [ -d "$ort/site/onnxruntime" ]; then
    log "onnxruntime $ORT_VERSION already installed in .onnxruntime"
    return
  fi
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "pip is missing: installing python3-pip"
    apt_install python3-pip
  fi
  log "installing onnxruntime==$ORT_VERSION into .onnxruntime (about 150 MB with numpy)"
  rm -rf "$ort/site"
  mkdir -p "$ort"
  "$PYTHON" -m pip install --quiet --no-input --target "$ort/site" "onnxruntime==$ORT_VERSION"
  touch "$ort_stamp"
}

case "${1:-all}" in
  libtorch) install_libtorch; install_gloo_headers ;;
  data) install_fmnist; install_font ;;
  onnxruntime) install_onnxruntime ;;
  all) install_libtorch; install_gloo_headers; install_onnxruntime; install_fmnist; install_font; install_curl ;;
  *) log "usage: setup.sh [all|libtorch|data|onnxruntime]"; exit 2 ;;
esac
