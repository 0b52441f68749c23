#!/usr/bin/env python
"""Build an AMPO multi-guidance pool: n solutions per question from each teacher, verified, shortest correct kept.

GPU (vLLM), the paper's four teachers::

    python scripts/build_pool.py --questions Elliott/Openr1-Math-46k-8192 --output-dir pools/openr1 \\
        --teacher name=AceReason-Nemotron-1.1-7B,model=nvidia/AceReason-Nemotron-1.1-7B \\
        --teacher name=Qwen3-8B,model=Qwen/Qwen3-8B,enable_thinking=true

CPU (transformers, the offline tiny model)::

    python scripts/build_pool.py --questions questions.jsonl --backend transformers --max-new-tokens 16 --n 2 \\
        --teacher name=tiny-a,model=/path/to/tiny --output-dir /tmp/pool

All options: ``python scripts/build_pool.py --help``; the pipeline is documented in ``ampo_trl/pool/builder.py`` and
``docs/data.md``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from ampo_trl.cli.build_pool import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(prog="build_pool.py"))
