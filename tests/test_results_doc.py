"""docs/results.md's nano table is what bench/eval.py makes of its own per-scene scores (docs/results_nano.json), and
the numbers quoted from it elsewhere are that table's: a hand edit, a stale table after a re-run, or a model card
left at an older adapter fails here. The paired rows and Tab. 5 (the FMD table) are recomputed from the
per-scene scores independently."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS, SCORES = ROOT / "docs" / "results.md", ROOT / "docs" / "results_nano.json"
CARD = ROOT / "models" / "nano" / "README.md"


def _section(name: str = "nano-eval") -> str:
    """The text between docs/results.md's ``<!-- name:start -->`` and ``<!-- name:end -->`` markers."""
    text = RESULTS.read_text()
    return text[text.index(f"<!-- {name}:start -->"):text.index(f"<!-- {name}:end -->")]


def _table_rows(text: str) -> list[str]:
    """The markdown table rows that hold scores (a ``±`` in them)."""
    return [line.strip() for line in text.splitlines() if line.startswith("| ") and "±" in line]


def test_the_results_table_is_what_the_eval_makes_of_its_scores():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "eval.py"), "--table-only", "--no-write"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout.strip()
    assert len(_table_rows(printed)) >= 10 and printed in _section()


def test_the_model_card_quotes_the_results_table():
    card = _table_rows(CARD.read_text())
    assert card, "the model card has no results table"
    missing = [row for row in card if row not in _table_rows(_section())]
    assert not missing, "models/nano/README.md rows not in docs/results.md:\n" + "\n".join(missing)


def test_the_paired_checks_are_the_mean_of_per_scene_differences():
    per_scene = json.loads(SCORES.read_text())["per_scene"]
    rows = {line.split("|")[1].strip(): line for line in _table_rows(_section())}  # the paired table's, listed last
    for check in ("full (projections swapped)", "full (cameras negated)"):
        diff = torch.tensor([a["psnr_all"] - b["psnr_all"] for a, b in zip(per_scene[check], per_scene["full"])],
                            dtype=torch.float64)
        cells = [c.strip() for c in rows[check].split("|")[2:-1]]
        mean, sd, worse = re.fullmatch(r"([+-]\d+\.\d+) ± (\d+\.\d+) \((\d+)/(\d+)\)", cells[0]).groups()[:3]
        assert abs(float(mean) - float(diff.mean())) <= 5.01e-4
        assert abs(float(sd) - float(diff.std())) <= 5.01e-4  # the sample standard deviation
        assert int(worse) == int((diff < 0).sum())


def test_the_fmd_table_is_the_mean_of_its_per_scene_scores_at_the_validated_setting():
    """Tab. 5 (bench/fmd_eval.py): each cell is the mean ± sample sd of docs/results_fmd.json's per-scene scores,
    recomputed here, and the FMD row runs the setting that the validation run chose (docs/results_fmd_validation.json),
    on report seeds the validation never used."""
    section = _section("fmd-eval")
    scores = json.loads((ROOT / "docs" / "results_fmd.json").read_text())
    chosen = json.loads((ROOT / "docs" / "results_fmd_validation.json").read_text())
    assert not set(scores["seeds"]) & set(chosen["seeds"])
    header = next(line for line in section.splitlines() if line.startswith("| fit |"))
    cols = [c.strip() for c in header.split("|")[2:-1]]
    rows = {line.split("|")[1].strip(): line for line in _table_rows(section)}
    fmd = f"4DGS + FMD (lambda {chosen['chosen']['lambda_fmd']}, every {chosen['chosen']['every']})"
    assert set(rows) == set(scores["results"]) == {"4DGS", fmd}
    for name, items in scores["results"].items():
        assert len(items) == len(scores["seeds"])
        cells = [c.strip() for c in rows[name].split("|")[2:-1]]
        for col, cell in zip(cols, cells, strict=True):
            vals = torch.tensor([x[col] for x in items], dtype=torch.float64)
            mean, sd = (float(v) for v in re.fullmatch(r"(\d+\.\d+) ± (\d+\.\d+)", cell).groups())
            assert abs(mean - float(vals.mean())) <= 5.01e-4 and abs(sd - float(vals.std())) <= 5.01e-4, (name, col)
