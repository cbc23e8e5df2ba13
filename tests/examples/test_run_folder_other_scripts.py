"""The output-folder guard of the scripts beyond training, mining and evaluation (docs/training.md, "One run per output
folder"): a folder holding another kind of artifact or another config is refused naming it; the same config
continues."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from unime_v2.trainers.run_folder import RUN_FILE, OutputFolderError, claim_output_dir, read_run


TINY_MINI_MMEB = ["--train_pairs", "20", "--eval_queries", "2", "--num_candidates", "4", "--no_export", "true"]
TINY_VLM = ["--hidden_size", "32", "--num_layers", "1", "--vision_embed_dim", "32", "--vision_depth", "1",
            "--image_side", "28", "--max_steps", "0", "--records", "20", "--heldout_examples", "4", "--eval_rows", "0"]  # fmt: skip


def _embedder_folder(folder: Path) -> Path:
    claim_output_dir(folder, "embedder", "examples/train.py", {"max_steps": 2})
    return folder


def test_make_mini_mmeb_refuses_another_kind_and_continues_the_same_config(example_script, tmp_path, capsys):
    make = example_script("make_mini_mmeb")
    other = _embedder_folder(tmp_path / "embedder")
    assert make.main(["--output_dir", str(other), *TINY_MINI_MMEB]) == 2
    assert (
        f"{other}: holds an embedder run (from examples/train.py); this run writes a mini_mmeb"
        in capsys.readouterr().err
    )
    out = tmp_path / "data"
    assert make.main(["--output_dir", str(out), *TINY_MINI_MMEB]) == 0
    assert make.main(["--output_dir", str(out), *TINY_MINI_MMEB]) == 0  # same config: regenerated in place
    assert read_run(out)["kind"] == "mini_mmeb" and (out / "hf" / "mmeb").is_dir()
    assert make.main(["--output_dir", str(out), *TINY_MINI_MMEB, "--seed", "1"]) == 2
    assert "other settings (seed: 0 -> 1)" in capsys.readouterr().err
    assert make.main(["--output_dir", str(out), *TINY_MINI_MMEB, "--seed", "1", "--overwrite", "true"]) == 0
    assert read_run(out)["settings"]["seed"] == 1


def test_pretrain_tiny_vlm_refuses_another_kind_and_continues_the_same_config(example_script, tmp_path):
    pretrain = example_script("pretrain_tiny_vlm")
    other = _embedder_folder(tmp_path / "embedder")
    with pytest.raises(OutputFolderError, match=f"{other}: holds an embedder run .*writes a tiny_vlm"):
        pretrain.main(["--output_dir", str(other), *TINY_VLM])
    out = tmp_path / "vlm"
    pretrain.main(["--output_dir", str(out), *TINY_VLM])
    pretrain.main(["--output_dir", str(out), *TINY_VLM, "--threads", "2"])  # speed only: the same run
    assert read_run(out)["kind"] == "tiny_vlm" and (out / "TINY_PRETRAIN.json").is_file()
    with pytest.raises(OutputFolderError, match=r"other settings \(batch_size: 32 -> 8\)"):
        pretrain.main(["--output_dir", str(out), *TINY_VLM, "--batch_size", "8"])


@pytest.fixture
def quickstart(example_script, monkeypatch) -> ModuleType:
    """``examples/quickstart.py`` with no stages and an empty summary: only its folder handling runs."""
    module = example_script("quickstart")
    monkeypatch.setattr(module, "STAGES", ())
    monkeypatch.setattr(module, "build_summary", lambda *args, **kwargs: {})
    monkeypatch.setattr(module, "summary_markdown", lambda summary: "")
    return module


def test_quickstart_refuses_another_kind_or_config_and_resumes_its_own(quickstart, tmp_path, capsys):
    examples = Path(quickstart.__file__).parent
    with pytest.raises(OutputFolderError, match="holds an embedder run .*writes a quickstart"):
        quickstart.run_quickstart(
            quickstart.QuickstartArguments(output_dir=str(_embedder_folder(tmp_path / "e"))), examples
        )
    out = tmp_path / "qs"
    args = quickstart.QuickstartArguments(output_dir=str(out), size="small")
    quickstart.run_quickstart(args, examples)
    (out / "seed").mkdir()
    (out / "seed" / ".done").write_text("1\n")  # a finished stage stays
    quickstart.run_quickstart(args, examples)
    assert "resuming quickstart in" in capsys.readouterr().out and (out / "seed" / ".done").is_file()
    with pytest.raises(OutputFolderError, match=r"other settings \(seed: 0 -> 1\)"):
        quickstart.run_quickstart(quickstart.QuickstartArguments(output_dir=str(out), size="small", seed=1), examples)
    quickstart.run_quickstart(
        quickstart.QuickstartArguments(output_dir=str(out), size="small", seed=1, overwrite=True), examples
    )
    assert not (out / "seed").exists() and read_run(out)["settings"]["seed"] == 1  # --overwrite starts over


def test_a_quickstart_folder_without_a_record_is_refused(quickstart, tmp_path):
    out = tmp_path / "qs"
    (out / "mine").mkdir(parents=True)
    with pytest.raises(OutputFolderError, match=f"{out}: holds outputs of a run with no {RUN_FILE} \\(mine\\)"):
        quickstart.run_quickstart(
            quickstart.QuickstartArguments(output_dir=str(out)), Path(quickstart.__file__).parent
        )


@pytest.fixture
def ablation(example_script, monkeypatch) -> ModuleType:
    """``examples/ablation.py`` with no runs and an empty table: only its folder handling runs."""
    module = example_script("ablation")
    monkeypatch.setattr(module, "variant_commands", lambda *args: {})
    monkeypatch.setattr(module, "collect", lambda *args: {})
    monkeypatch.setattr(module, "results_markdown", lambda results: "")
    monkeypatch.setattr(module, "plot", lambda *args: None)
    return module


def test_ablation_refuses_another_kind_or_config_and_resumes_its_own(ablation, tmp_path, capsys):
    examples, quick = Path(ablation.__file__).parent, str(tmp_path / "quickstart")
    with pytest.raises(OutputFolderError, match="holds an embedder run .*writes an ablation"):
        ablation.run_ablation(ablation.AblationArguments(quick, str(_embedder_folder(tmp_path / "e"))), examples)
    out = tmp_path / "ablation"
    ablation.run_ablation(ablation.AblationArguments(quick, str(out), seeds=[0]), examples)
    ablation.run_ablation(ablation.AblationArguments(quick, str(out), seeds=[0]), examples)
    assert "resuming the ablation in" in capsys.readouterr().out
    with pytest.raises(OutputFolderError, match=r"other settings \(seeds: \[0\] -> \[0, 1\]\)"):
        ablation.run_ablation(ablation.AblationArguments(quick, str(out), seeds=[0, 1]), examples)
    ablation.run_ablation(ablation.AblationArguments(quick, str(out), seeds=[0, 1]), examples, overwrite=True)
    assert json.loads((out / RUN_FILE).read_text())["settings"]["seeds"] == [0, 1]


def test_export_backbone_claims_its_folder_and_writes_a_plain_checkpoint(
    example_script, tiny_qwen2_vl_dir, tmp_path, capsys
):
    export = example_script("export_backbone")
    args = ["--model", str(tiny_qwen2_vl_dir), "--from_backbone", "true", "--prompt_format", "chat"]
    other = _embedder_folder(tmp_path / "embedder")
    assert export.main([*args, "--output_dir", str(other)]) == 2
    assert "this run writes a backbone_export" in capsys.readouterr().err
    out = tmp_path / "export"
    assert export.main([*args, "--output_dir", str(out)]) == 0
    assert export.main([*args, "--output_dir", str(out)]) == 0  # same config: written again in place
    assert read_run(out)["kind"] == "backbone_export"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"] and "auto_map" not in config
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert export.main([*args, "--output_dir", str(out), "--prompt_format", "official"]) == 2
    assert "other settings (prompt_format: 'chat' -> 'official')" in capsys.readouterr().err
