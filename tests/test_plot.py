"""utils/plot.py: curves from metrics.jsonl, tolerant of empty and half-written files."""
import json

import numpy as np
import pytest
from PIL import Image

from utils import plot


def write_metrics(run_dir, steps, extra_line=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "loss": 2.0 / s, "loss_rsl": 1.5 / s, "loss_rac": 0.5 / s,
                         "overall_acc": 0.5 + s / 1000, "mean_acc": 0.2 + s / 1000}) for s in steps]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + ("\n" + extra_line if extra_line else "\n"))
    return run_dir


def test_plot_curves_writes_png_and_skips_a_half_written_line(tmp_path):
    run = write_metrics(tmp_path / "run", [10, 20, 30], extra_line='{"step": 40, "loss": 0.')
    assert len(plot.read_records(run / "metrics.jsonl")) == 3
    out = plot.plot_curves(run)
    assert out == run / "curves.png"
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[0] > 100 and image.std() > 5  # a drawn figure, not a blank canvas
    assert not list(run.glob(".*tmp*"))  # the temporary file was renamed away


@pytest.mark.parametrize("content", [None, "", "\n", '{"step": 1, "lo', '{"note": "no step"}\n'])
def test_plot_curves_returns_none_when_nothing_to_plot(tmp_path, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    assert plot.plot_curves(tmp_path) is None
    assert not (tmp_path / "curves.png").exists()


def test_records_without_accuracy_still_plot(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 5, "loss": 1.0}) + "\n")
    assert plot.plot_curves(tmp_path) == tmp_path / "curves.png"


def test_cli_overlays_runs_and_refuses_a_folder_without_metrics(tmp_path, capsys):
    a = write_metrics(tmp_path / "mek", [1, 2, 3])
    b = write_metrics(tmp_path / "ce", [1, 2])
    out = tmp_path / "both.png"
    assert plot.main([str(a), str(b), "--out", str(out)]) == out and out.is_file()
    assert plot.main([str(a)]) == a / "curves.png"
    with pytest.raises(SystemExit) as exc:
        plot.main([str(a), str(tmp_path / "missing")])
    assert exc.value.code == 2
    assert "missing: no metrics.jsonl" in capsys.readouterr().err
