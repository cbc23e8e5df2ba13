"""Export a trained UniME-V2 embedder as a plain backbone checkpoint that other runtimes (vLLM, transformers) load.

    python examples/export_backbone.py --model runs/tiny --output_dir runs/tiny-backbone
    python examples/export_backbone.py --model AUTHORS_CHECKPOINT --from_backbone true --prompt_format chat \
        --output_dir exported/

Writes the backbone's own ``*ForConditionalGeneration`` weights (LoRA already merged: a training run's folder holds
the merged model), its processor and chat template, and the pooling settings (last token, L2 normalisation) as
``modules.json``, ``1_Pooling/config.json`` and ``2_Normalize/`` (docs/architecture.md, "Export for other
runtimes"). A folder holding another run is refused unless ``--overwrite true`` (docs/training.md, "One run per
output folder").
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from unime_v2.modeling_unime_v2 import UniMEV2Model
from unime_v2.trainers.arguments import RecipeParser
from unime_v2.trainers.run_folder import OutputFolderArguments, OutputFolderError, claim_output_dir, run_settings


@dataclass
class ExportBackboneArguments:
    """What to export and where."""

    model: str = field(metadata={"help": "A saved UniME-V2 embedder (folder or Hub id)."})
    output_dir: str = field(metadata={"help": "Output folder for the plain backbone checkpoint."})
    from_backbone: bool = field(
        default=False,
        metadata={"help": "--model is a plain VLM checkpoint (e.g. the authors' release): wrap it first."},
    )
    prompt_format: str | None = field(
        default=None,
        metadata={"help": "With --from_backbone: 'official' or 'chat' (only the chat template survives export)."},
    )
    dtype: str = field(default="float32", metadata={"help": "Weights dtype: float32, bfloat16 or float16."})


def main(argv: list[str] | None = None) -> int:
    """Load, claim the output folder, export; prints the folder."""
    parser = RecipeParser((ExportBackboneArguments, OutputFolderArguments), description=__doc__.split("\n\n")[0])
    args, folder = parser.parse(argv)
    try:
        claim_output_dir(args.output_dir, "backbone_export", "examples/export_backbone.py", run_settings(args),
                         folder.overwrite)  # fmt: skip
    except OutputFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.from_backbone:
        extra = {"prompt_format": args.prompt_format} if args.prompt_format else {}
        model = UniMEV2Model.from_backbone(args.model, dtype=args.dtype, **extra)
    else:
        model = UniMEV2Model.from_pretrained(args.model, dtype=args.dtype)
    model.export_backbone(args.output_dir)
    print(f"exported {args.model} as {type(model.backbone).__name__} weights to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
