"""The output-folder guard (trainers/run_folder.py) and the scripts' own explanations (RecipeParser)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unime_v2.trainers.run_folder import (
    RUN_FILE,
    OutputFolderError,
    check_artifact,
    claim_output_dir,
    read_run,
    run_settings,
    whole_run_metrics,
)


REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "configs" / "embedder" / "tiny.yaml"


def test_a_new_folder_is_claimed_and_the_same_run_continues(tmp_path):
    settings = {"beta": 0.1, "seed": 0}
    assert claim_output_dir(tmp_path / "run", "mined_dataset", "examples/mine.py", settings) is False
    record = read_run(tmp_path / "run")
    assert record["kind"] == "mined_dataset" and record["settings"] == settings
    assert claim_output_dir(tmp_path / "run", "mined_dataset", "examples/mine.py", settings) is True


def test_another_config_is_refused_with_the_differing_keys(tmp_path):
    claim_output_dir(tmp_path, "mined_dataset", "examples/mine.py", {"beta": 0.1, "seed": 0})
    with pytest.raises(OutputFolderError, match=r"other settings \(beta: 0\.1 -> 0\.2\).*--overwrite") as error:
        claim_output_dir(tmp_path, "mined_dataset", "examples/mine.py", {"beta": 0.2, "seed": 0})
    assert str(tmp_path) in str(error.value)


def test_another_kind_is_refused_and_push_checks_the_kind(tmp_path):
    claim_output_dir(tmp_path, "embedder", "examples/train.py", {"lr": 1})
    with pytest.raises(OutputFolderError, match="holds an embedder run .*this run writes a reranker"):
        claim_output_dir(tmp_path, "reranker", "examples/train_reranker.py", {"lr": 1})
    with pytest.raises(OutputFolderError, match="holds an embedder .*not a reranker"):
        check_artifact(tmp_path, "reranker")
    check_artifact(tmp_path, "embedder")


def test_outputs_of_an_unrecorded_run_are_refused_and_overwrite_clears_only_them(tmp_path):
    (tmp_path / "checkpoint-100").mkdir()
    (tmp_path / "model.safetensors").write_text("w")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=f"no {RUN_FILE} \\(checkpoint-100, model.safetensors\\)"):
        claim_output_dir(tmp_path, "embedder", "examples/train.py", {"lr": 1})
    assert claim_output_dir(tmp_path, "embedder", "examples/train.py", {"lr": 1}, overwrite=True) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", RUN_FILE]


def test_settings_leave_out_harmless_fields():
    assert run_settings({"logging_steps": 5, "output_dir": "x", "lr": 1}, {"report_to": ["none"]}) == {"lr": 1}


def test_train_metrics_of_a_resumed_run_cover_the_whole_run():
    history = [{"loss": 4.0, "step": 10}, {"loss": 2.0, "step": 20}, {"loss": 1.0, "step": 30}, {"step": 30}]
    metrics = whole_run_metrics({"train_loss": 1.0}, history, start_step=20)
    assert metrics["train_loss"] == pytest.approx((4 * 10 + 2 * 10 + 1 * 10) / 30)
    assert metrics["train_loss_since_resume"] == 1.0 and metrics["train_resumed_from_step"] == 20
    assert whole_run_metrics({"train_loss": 1.0}, history, start_step=0) == {"train_loss": 1.0}


def _train_parse(argv: list[str]):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train

        return train.parse(argv)
    finally:
        sys.path.remove(str(REPO / "examples"))


def test_recipe_typos_name_the_file_and_close_matches(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("backbone: tiny:qwen2_vl\ntrain_data: oracle:mini_mmeb\nloss_tpye: js\n")
    with pytest.raises(ValueError, match=f"{recipe}: unknown key.*'loss_tpye' \\(did you mean 'loss_type'"):
        _train_parse(["--config", str(recipe), "--output_dir", "o"])
    recipe.write_text("backbone: b\ntrain_data: d\nmini_mmeb_config: {taks: [x]}\n")
    with pytest.raises(
        ValueError, match="mini_mmeb_config: unknown key.*'taks' \\(did you mean 'tasks'.*Valid keys: "
    ):
        _train_parse(["--config", str(recipe), "--output_dir", "o"])
    with pytest.raises(ValueError, match="command line --mini_mmeb_config: .*'sed' \\(did you mean 'seed'"):
        _train_parse(["--backbone", "b", "--train_data", "d", "--mini_mmeb_config", '{"sed": 1}', "--output_dir", "o"])


def _mine_parse(argv: list[str]) -> tuple:
    from unime_v2.data_builders.mining import MiningConfig
    from unime_v2.trainers.arguments import RecipeParser

    return RecipeParser(MiningConfig).parse(argv)


@pytest.mark.parametrize(
    ("key", "typo", "close"),
    [("columns", "pos_img", "pos_image"), ("judge_health_thresholds", "min_auc", "min_auc_mean")],
)
def test_nested_typos_of_fixed_key_mappings_are_named_in_the_recipe_and_on_the_command_line(
    key, typo, close, tmp_path
):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"data: mini_mmeb\n{key}:\n  {typo}: 1\n")
    with pytest.raises(
        ValueError, match=f"{recipe}: {key}: unknown key.*'{typo}' \\(did you mean '{close}'.*Valid keys: "
    ):
        _mine_parse(["--config", str(recipe)])
    with pytest.raises(ValueError, match=f"command line --{key}: unknown key.*'{typo}' \\(did you mean '{close}'"):
        _mine_parse(["--data", "mini_mmeb", f"--{key}", f'{{"{typo}": 1}}'])
    with pytest.raises(ValueError, match=f"command line --{key}: unknown key.*'{typo}'"):
        _mine_parse(["--data", "mini_mmeb", f'--{key}={{"{typo}": 1}}'])


def test_valid_nested_mappings_pass():
    (config,) = _mine_parse(["--data", "mini_mmeb", "--columns", '{"pos_image": "img"}', "--judge_health_thresholds",
                             '{"min_auc_mean": 0.5}'])  # fmt: skip
    assert config.columns.pos_image == "img" and config.judge_health_thresholds["min_auc_mean"] == 0.5


def test_a_bad_value_on_the_command_line_blames_the_command_line():
    with pytest.raises(ValueError, match=r"^command line \(--loss_type\): loss_type='symmetric_kll'"):
        _train_parse(["--config", str(TINY), "--output_dir", "o", "--loss_type", "symmetric_kll"])


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train", "train_reranker", "mine", "evaluate"])
def test_help_has_a_description_and_our_options_first(script):
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / f"{script}.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    head = out.split("\n\n")
    assert len(head[1].strip()) > 20 and not head[1].startswith("options"), head[1]  # the description
    assert out.index("--config RECIPE.yaml") < out.index("--output_dir")
    if script.startswith("train"):
        assert out.index("--lora_r") < out.index("TrainingArguments (stock options)") < out.index("--adam_beta1")


def test_an_unknown_command_line_option_is_named_with_close_matches():
    with pytest.raises(ValueError, match=r"^command line: unknown key.*'--lora_rr' \(did you mean 'lora_r'"):
        _train_parse(["--backbone", "b", "--train_data", "d", "--output_dir", "o", "--lora_rr", "3"])
    model_args, _, _ = _train_parse(["--backbone", "b", "--train_data", "d", "--output_dir=o", "--no_use_lora"])
    assert model_args.use_lora is False
