"""Wheels for the lent GPU machine (issue 34): what resablate needs there that its image lacks,
built for its Python 3.12, in two folders that each fit one device call.

The device machine reaches no package registry, and one call carries at most 64 MiB (the working
tree included). Ray's wheel alone is 79 MB, 31 MB of it `ray/jars` (Java, which Python never
loads): this script downloads the closure of resablate's dependencies with pip, keeps the wheels
the image does not already hold (IMAGE, read from the device tool's package list), rewrites Ray's
without its jars and splits the rest in two folders of at most --limit MiB each:

    python benchmarks/device_wheels.py                 # writes .device/wheels1 and .device/wheels2

then two device calls back to back (the machine stays warm 30 s between them), each carrying one
folder and installing it into /tmp/site there; the second runs the device check:

    carry [".device/wheels1"]: python3 -m pip install -q --no-index --no-deps --no-compile
        --target /tmp/site .device/wheels1/*.whl
    carry [".device/wheels2"]: (the same for wheels2) && PYTHONPATH=/tmp/site:. python3
        benchmarks/device_check.py $OUT

Only `pip download` needs the network (PyPI); nothing is installed here.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = [  # pip matches each manylinux tag exactly
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
# what resablate needs there beside the image's torch and the packages in IMAGE (pyproject's
# dependencies), each at the version installed here: the one the tests ran with
NEEDS = ["ray[tune]", "mlflow", "optuna", "cmaes", "pydantic"]
# the device image's Python packages (the device tool's list): a wheel of one of these stays here
IMAGE = {
    line.strip()
    for line in (ROOT / "benchmarks" / "device_image.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}
JARS = "ray/jars/"


def project(wheel: Path) -> str:
    """A wheel file's project name, normalized as PEP 503 does (so it matches IMAGE's)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def without_jars(wheel: Path, out: Path) -> Path:
    """Ray's wheel less ``ray/jars``: every other member copied as it is, RECORD without the
    jars' lines (pip checks each installed file against RECORD)."""
    target = out / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.infolist():
            if item.filename.startswith(JARS):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(JARS)).encode()
            copy.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED)
    return target


def split(wheels: list[Path], limit: int) -> list[list[Path]]:
    """Two folders' worth: the largest wheel first into the emptier folder."""
    folders: list[list[Path]] = [[], []]
    sizes = [0, 0]
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
        i = sizes.index(min(sizes))
        folders[i].append(wheel)
        sizes[i] += wheel.stat().st_size
    if max(sizes) > limit:
        raise SystemExit(
            f"the wheels ({sum(sizes) / 2**20:.1f} MiB) do not fit two folders of"
            f" {limit / 2**20:.0f} MiB: carry them over three calls or trim the list"
        )
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".device", help="(default .device)")
    parser.add_argument("--python", default="3.12", help="the device's Python (3.12)")
    parser.add_argument(
        "--limit", type=float, default=58, help="MiB a folder (64 less the working tree)"
    )
    args = parser.parse_args()
    downloads = args.out / "download"
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    command += ["--python-version", args.python, "--implementation", "cp", "-d", str(downloads)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    pinned = [f"{need}=={version(need.split('[')[0])}" for need in NEEDS]
    subprocess.run([*command, *pinned], check=True)
    found = sorted(downloads.glob("*.whl"))
    names = [project(w) for w in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # one pip install --no-deps of two versions of one project fails as a whole
        raise SystemExit(f"{downloads}: two versions of {', '.join(twice)}: empty it and rerun")
    carried = [w for w in found if project(w) not in IMAGE]
    staging = args.out / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    ready = []
    for wheel in carried:
        if project(wheel) == "ray":
            ready.append(without_jars(wheel, staging))
        else:
            ready.append(Path(shutil.copy2(wheel, staging)))
    for i, folder in enumerate(split(ready, int(args.limit * 2**20)), start=1):
        target = args.out / f"wheels{i}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for wheel in folder:
            shutil.move(str(wheel), target / wheel.name)
        size = sum(w.stat().st_size for w in target.iterdir()) / 2**20
        listed = ", ".join(sorted(project(w) for w in target.iterdir()))
        print(
            f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}:"
            f" {len(folder)} wheels, {size:.1f} MiB ({listed})"
        )
    shutil.rmtree(staging)
    skipped = sorted({project(w) for w in found} & IMAGE)
    print(f"left to the image ({len(skipped)}): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
