"""A small multi-rank script (gloo) for tests/test_launcher.py: one rank deliberately breaks the collective protocol,
as a code path that skips a forward pass under ZeRO-3 would.

Modes:
* ``ok``:    every rank enters the same all_reduce and exits 0;
* ``hang``:  rank 0 waits in an all_reduce that rank 1 skipped (rank 1 went on and is busy elsewhere, with a child
  process of its own, as a verifier pool or a data loader worker would be); nothing ever returns;
* ``crash``: rank 1 raises before the all_reduce that rank 0 waits in.

Each rank writes its pid (and rank 1 its child's pid) to ``--pid-dir`` so the test can check that all died.
"""

import argparse
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["ok", "hang", "crash"], required=True)
    parser.add_argument("--pid-dir", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(hours=1))  # gloo would not give up before the test's limit
    rank = dist.get_rank()
    pid_dir = Path(args.pid_dir)
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    value = torch.ones(1)
    if rank == 1 and args.mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        (pid_dir / "child.pid").write_text(str(child.pid))
        print("rank 1: skipped the all_reduce, busy elsewhere", flush=True)
        while True:
            time.sleep(1)
    if rank == 1 and args.mode == "crash":
        raise RuntimeError("rank 1: deliberate crash before the all_reduce")
    print(f"rank {rank}: entering the all_reduce", flush=True)
    dist.all_reduce(value)
    print(f"rank {rank}: all_reduce gave {value.item()}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
