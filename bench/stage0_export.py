"""The stage-0 SASRec item table written in the stage-2 export format (e.g. for RecBole's .itememb reader).

    python -m bench.stage0_export --train-dir runs/beauty/stage0 --out runs/beauty/stage0-export

The no-LLM control of the fusion ablation no longer needs it: `tslrec ablate` (and bench/ablation.py) read a
`tslrec train --export-item-embeddings` folder directly as an item-table source, beside the LLM export:

    python -m bench.ablation ... --item-embeddings tuned=runs/beauty/stage2,stage0=runs/beauty/stage0 \\
        --fusions base,ci,gate

`gate:stage0` fuses the very embeddings stage 1 started from, with no LLM in between. If `gate:tuned` beats it,
stage 1 and 2 added something; if not, the gain is the stage-0 model's knowledge. A fusion reads the same table
either way (the padding row is zeroed by both), so grids made over this script's output, such as
runs/beauty/bench-stage0, keep their meaning.
"""

from __future__ import annotations

import argparse

from tslrec.formats.item_table import save_item_embeddings
from tslrec.pipelines.run_folders import load_train_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-dir", required=True, help="a `tslrec train --export-item-embeddings` folder (stage 0)")
    p.add_argument("--out", required=True, help="export folder to write")
    args = p.parse_args()
    run = load_train_folder(args.train_dir)
    source = {
        "llm": None,
        "model": f"{run.metrics.get('model')} (stage 0 item table, no LLM)",
        "train_dir": args.train_dir,
    }
    folder = save_item_embeddings(
        args.out, run.item_table, run.dataset.item_ids, run.dataset.name, run.dataset.hash, source=source
    )
    print(f"wrote {folder}: {tuple(run.item_table.shape)} from {args.train_dir}")


if __name__ == "__main__":
    main()
