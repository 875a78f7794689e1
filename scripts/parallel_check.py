"""Context-parallel numerics check (tiny Wan transformer, ranks against one process): run with torchrun.

    torchrun --nproc-per-node 2 scripts/parallel_check.py --out /tmp/cp
    torchrun --nproc-per-node 8 scripts/parallel_check.py --out /tmp/cp --device cuda --dtype bf16

What it checks and prints: ``pipelines/parallel_check.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.scale.parallel_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
