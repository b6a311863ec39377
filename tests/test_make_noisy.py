"""EAC's noisy-label protocol: python -m data.make_noisy."""
import subprocess
import sys
from pathlib import Path

from data.make_noisy import make_noisy

ROOT = Path(__file__).resolve().parent.parent


def test_flips_only_training_labels_to_other_classes_at_the_rate():
    entries = [(f"train_{i:05d}.jpg", i % 7) for i in range(7000)] + [(f"test_{i:04d}.jpg", i % 7) for i in range(70)]
    noisy = make_noisy(entries, 0.2, seed=0, num_classes=7)
    train = [(a, b) for (n, a), (_, b) in zip(entries, noisy) if n.startswith("train")]
    flipped = [(a, b) for a, b in train if a != b]
    assert abs(len(flipped) / len(train) - 0.2) < 0.02  # binomial sd 0.005
    assert noisy[7000:] == entries[7000:]  # test lines untouched
    # Uniform over the 6 other classes: each new label about 1/6 of the flips of class 0.
    from_zero = [b for a, b in flipped if a == 0]
    assert set(from_zero) == {1, 2, 3, 4, 5, 6}
    assert make_noisy(entries, 0.2, seed=0, num_classes=7) == noisy  # deterministic
    assert make_noisy(entries, 0.2, seed=1, num_classes=7) != noisy
    assert make_noisy(entries, 0.0, seed=0, num_classes=7) == entries


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data.make_noisy", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_writes_a_raf_db_list_and_refuses_bad_input(tmp_path):
    src = tmp_path / "list.txt"
    src.write_text("".join(f"train_{i:05d}.jpg {i % 7 + 1}\n" for i in range(700)) + "test_0001.jpg 3\n")
    out = tmp_path / "noisy.txt"
    result = run(str(src), "--rate", "0.3", "--seed", "0", "--output", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 701 and lines[-1] == "test_0001.jpg 3"
    assert all(1 <= int(line.split()[1]) <= 7 for line in lines)
    assert "flipped" in result.stdout and result.stdout.count("%") == 8  # 7 classes and the total
    for bad_rate in ("1", "-0.1"):
        bad = run(str(src), "--rate", bad_rate, "--output", str(tmp_path / "x.txt"))
        assert bad.returncode == 2 and f"error: --rate must be in [0, 1), got {float(bad_rate)}" in bad.stderr
    broken = tmp_path / "broken.txt"
    broken.write_text("train_00001.jpg 5\ntrain_00002.jpg happy\n")
    bad = run(str(broken), "--rate", "0.1", "--output", str(tmp_path / "y.txt"))
    assert bad.returncode == 2 and f"{broken}:2: label 'happy' is not an integer" in bad.stderr
    assert "Traceback" not in bad.stderr
