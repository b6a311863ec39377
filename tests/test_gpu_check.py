"""bench/gpu_check.sh and what it carries and measures: the FERPlus pack (bench/ferplus_pack.py),
the loader rate's recipe transforms (bench/loader_rate.py), and the script's CPU rehearsal on
generated faces (never ../shared). The whole rehearsal at its smallest takes minutes on 2 cores:
RUN_SLOW=1 runs it; the default suite runs two of its checks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import ferplus_pack  # noqa: E402
import loader_rate  # noqa: E402

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def make_ferplus(root: Path) -> Path:
    """A FERPlus release in Microsoft's layout: 6 training faces, 2 PublicTest, one label.csv too."""
    lines = [HEADER]
    for index, (usage, folder) in enumerate([("Training", "FER2013Train")] * 6 + [("PublicTest", "FER2013Valid")] * 2):
        name = f"fer{index:07d}.png"
        lines.append(f"{usage},{name}," + ",".join("10" if j == index % 8 else "0" for j in range(10)))
        write_image(root / folder / name, size=48, seed=index, mode="L")
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    (root / "FER2013Valid" / "label.csv").write_text("fer0000006.png,0,0,0,0,0,0,10,0,0,0\n")
    return root


def test_row_deltas_round_trip_and_wrap_mod_256():
    faces = np.array([[[0, 255, 3], [200, 10, 10]]], dtype=np.uint8)
    deltas = ferplus_pack.row_deltas(faces)
    assert deltas.tolist() == [[[0, 255, 4], [200, 66, 0]]]  # 255 - 0, 3 - 255 + 256; 10 - 200 + 256, 0
    assert np.array_equal(ferplus_pack.undo_row_deltas(deltas), faces)


def test_a_release_packs_and_unpacks_to_the_same_files(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    pack = tmp_path / "gpu_pack" / "ferplus.pack"
    assert ferplus_pack.main(["build", str(root), str(pack)]) == 0
    digest = (tmp_path / "gpu_pack" / "ferplus.pack.sha256").read_text().split()
    assert digest[1] == "ferplus.pack" and len(digest[0]) == 64
    out = tmp_path / "unpacked"
    assert ferplus_pack.main(["unpack", str(pack), str(out)]) == 0
    originals = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == originals
    for rel in originals:
        if rel.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(out / rel)), np.asarray(Image.open(root / rel))), rel
        else:
            assert (out / rel).read_bytes() == (root / rel).read_bytes(), rel
    from data import build_dataset

    assert len(build_dataset("ferplus", out, "train")) == 6  # data/ferplus.py reads it


def test_an_altered_pack_is_refused_with_the_file_named(tmp_path, capsys):
    pack = tmp_path / "ferplus.pack"
    ferplus_pack.build(make_ferplus(tmp_path / "ferplus"), pack)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 1
    pack.write_bytes(bytes(data))
    assert ferplus_pack.main(["unpack", str(pack), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{pack} does not match {pack}.sha256" in err and not (tmp_path / "out").exists()


def test_a_folder_without_a_release_is_one_error(tmp_path, capsys):
    assert ferplus_pack.main(["build", str(tmp_path), str(tmp_path / "p.pack")]) == 2
    assert "no FER2013Train/FER2013Valid/FER2013Test folder" in capsys.readouterr().err


def test_the_loader_rate_reads_each_recipes_flags_from_train_exp_sh(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\n")
    flags = loader_rate.recipe_flags("mek-r18", tmp_path)  # EAC's training settings: Gaussian noise on half
    assert flags[flags.index("--noise-prob") + 1] == "0.5" and flags[flags.index("--img-size") + 1] == "224"
    swin = loader_rate.recipe_flags("swin", tmp_path)
    assert swin[swin.index("--auto-augment") + 1] == "rand-m9-mstd0.5-inc1"


def rehearsal(tmp_path: Path, **env_extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHECKS", "RUNS", "SIZE", "BUDGET_S")}
    env.update({"PYTHON": sys.executable, "DEVICE": "cpu", "SIZE": "smallest", "OUT": str(tmp_path / "out"),
                "WORK": str(tmp_path / "work"), "PACK": str(tmp_path / "no_pack"), **env_extra})
    result = subprocess.run(["sh", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1500)
    rows = [line.split("\t") for line in (tmp_path / "out" / "summary.tsv").read_text().splitlines()[1:]]
    return result, rows


def test_the_rehearsal_runs_its_checks_and_prints_the_summary_last(tmp_path):
    result, rows = rehearsal(tmp_path, CHECKS="env runs", RUNS="ce")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [r[:2] for r in rows] == [["env", "ok"], ["run-ce", "ok"]]
    assert "--amp auto:" in rows[0][3] and rows[1][3].startswith("step 4: loss ")
    last = result.stdout.strip().splitlines()
    assert last[-3].startswith("check ") and last[-1].startswith("run-ce ")  # the table comes last


def test_an_unknown_check_is_refused(tmp_path):
    result = subprocess.run(["sh", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CHECKS": "env gpu", "OUT": str(tmp_path)})
    assert result.returncode == 2 and "unknown check 'gpu'" in result.stderr


@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="the whole rehearsal takes minutes; RUN_SLOW=1 runs it")
def test_the_whole_rehearsal_at_its_smallest(tmp_path):
    # 621 s on a 2-vCPU EPYC shared with two training jobs (4 min of CPU time), and 22 s for ferplus.
    from test_recipes import make_ferplus_release

    pack = tmp_path / "pack" / "ferplus.pack"
    assert ferplus_pack.main(["build", str(make_ferplus_release(tmp_path / "ferplus", False)), str(pack)]) == 0
    result, rows = rehearsal(tmp_path, BUDGET_S="1500", PACK=str(pack))
    status = {r[0]: r[1] for r in rows}
    assert result.returncode == 0, "\n".join("\t".join(r) for r in rows) + result.stderr[-2000:]
    assert [r[0] for r in rows if r[0].startswith("run-")] == [f"run-{m}" for m in
                                                              ("mek", "ce", "rul", "dan", "ldam", "face2exp")]
    resume = next(r for r in rows if r[0] == "resume")[3]
    assert "max |weight difference| to the unstopped run: 0" in resume  # bit-exact on the CPU
    assert status["test-predict"] == "ok" and status["loader"] == "ok" and status["ferplus"] == "ok"
    assert [r[0] for r in rows if r[0].startswith("train-step")] == [
        "train-step-resnet18-32", "train-step-resnet18-48", "train-step-swin_t-56"]
