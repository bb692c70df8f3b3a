"""How fast the code starts: every run the daemon launches and every UI reload pays this.

Prints (best and median of N, wall seconds):
  - `python -c "import feedback_pipeline.definitions"`;
  - `dagster asset materialize` of one empty week (raw_traces + its checks) on a fresh home;
  - which heavy libraries the definitions import pulls in (should be none).

    .venv/bin/python benchmarks/startup.py [--repeat 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "scipy", "statsmodels", "matplotlib", "openai", "datasketch", "krippendorff", "sklearn", "httpx")


def timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    imports = [timed([sys.executable, "-c", "import feedback_pipeline.definitions"], env) for _ in range(args.repeat)]
    print(f"import feedback_pipeline.definitions: best {min(imports):.2f} s, median {statistics.median(imports):.2f} s")

    loaded = subprocess.run([sys.executable, "-c", "import sys, feedback_pipeline.definitions; "
                             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"],
                            cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
    print(f"heavy libraries loaded by the definitions: {loaded or 'none'}")

    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            (home / "dagster").mkdir(parents=True)
            (home / "dagster" / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
            run_env = {**env, "FEEDBACK_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
            runs.append(timed([str(bin_dir / "dagster"), "asset", "materialize", "-m", "feedback_pipeline.definitions",
                               "--select", "raw_traces", "--partition", "2026-11-16"], run_env))
    print(f"dagster asset materialize of an empty week: best {min(runs):.2f} s, median {statistics.median(runs):.2f} s")


if __name__ == "__main__":
    main()
