"""Train from a script checkout without the console entry point; the same code as ``detect-ft train``.

python tools/train.py configs/demo.yaml train.epochs=5
torchrun --nproc_per_node 2 tools/train.py configs/demo.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

# Running from a checkout that is not pip-installed: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detect_ft.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
