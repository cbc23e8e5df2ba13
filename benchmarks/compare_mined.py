"""Are two mining outputs the same dataset? Compares the ``dataset/`` tables, its Arrow files byte for byte, the
authors' JSON byte for byte and the report's counts (it checks that streamed assembly writes what the in-memory
assembly wrote; the command is in BENCHMARKS.md, "Mining at scale").

    python benchmarks/compare_mined.py /tmp/scale-check/main /tmp/scale-check/scale

Exits 1 and names what differs otherwise. ``state.json`` is not compared: it holds a random fingerprint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datasets import load_from_disk


def differences(a: Path, b: Path) -> list[str]:
    """What differs between the mining outputs ``a`` and ``b`` (empty when they are the same)."""
    found = []
    table_a, table_b = load_from_disk(str(a / "dataset")).data.table, load_from_disk(str(b / "dataset")).data.table
    if not table_a.equals(table_b):
        found.append("dataset tables")
    files_a = sorted(p.name for p in (a / "dataset").glob("*.arrow"))
    files_b = sorted(p.name for p in (b / "dataset").glob("*.arrow"))
    if files_a != files_b:
        found.append(f"dataset files {files_a} vs {files_b}")
    found += [
        f"dataset/{n} bytes" for n in files_a if (a / "dataset" / n).read_bytes() != (b / "dataset" / n).read_bytes()
    ]
    if (a / "mined.json").read_bytes() != (b / "mined.json").read_bytes():
        found.append("mined.json bytes")
    counts_a, counts_b = (json.loads((d / "report.json").read_text())["counts"] for d in (a, b))
    if counts_a != counts_b:
        found.append(f"report counts {counts_a} vs {counts_b}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="one output_dir of examples/mine.py")
    parser.add_argument("b", type=Path, help="the other")
    args = parser.parse_args()
    found = differences(args.a, args.b)
    rows = len(load_from_disk(str(args.a / "dataset")))
    print(json.dumps({"rows": rows, "identical": not found, "differences": found}))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
