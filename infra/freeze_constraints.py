"""Write infra/constraints.txt from the environment the tests run in.

    python infra/freeze_constraints.py > infra/constraints.txt

Pins the installed version of every package a node image needs: the package's dependencies
(pyproject.toml), boto3 (the cluster launcher's autoscaler), and everything they require in
turn, with environment markers evaluated here and no extras. ray is pinned, but what ray itself
requires is left to the Ray base image unless one of the others requires it too. torch is pinned
without its local label (2.13.0, not 2.13.0+cpu), so that the CPU and the CUDA build both match.
pip, setuptools and wheel are left out, as `pip freeze` leaves them out.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
#: installed in the image beside the package's own dependencies
IMAGE_EXTRAS = ["boto3"]
#: pinned, but not followed: their own dependencies come with the base image
NOT_FOLLOWED = {"ray"}
LEFT_OUT = {"pip", "setuptools", "wheel"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_dependencies() -> list[str]:
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as f:
        return [Requirement(r).name for r in tomllib.load(f)["project"]["dependencies"]]


def closure(roots: list[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the roots need, by normalized name."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = normalize(todo.pop())
        if name in found or name in LEFT_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is not installed: run this in the environment the tests ran in")
        found[name] = dist
        if name in NOT_FOLLOWED:
            continue
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def pin(dist: metadata.Distribution) -> str:
    return f"{dist.metadata['Name']}=={dist.version.split('+', 1)[0]}"


def main() -> None:
    direct = direct_dependencies()
    found = closure(direct + IMAGE_EXTRAS)
    first = [normalize(n) for n in direct + IMAGE_EXTRAS]
    rest = sorted(set(found) - set(first))
    python = ".".join(map(str, sys.version_info[:2]))
    print(f"""\
# Exact versions of the runtime dependencies, for images and cluster nodes. Generated, do not
# edit: in the environment the test suite passed in (Python {python} here), run
#
#   python infra/freeze_constraints.py > infra/constraints.txt
#
# It pins the installed version of the package's dependencies (pyproject.toml), of boto3 (the
# cluster launcher's autoscaler, in the image) and of everything they require in turn; what ray
# alone requires is left to the Ray base image. torch is pinned without its local label, so that
# the CPU and the CUDA build both match. pyproject.toml keeps lower bounds only, so that
# `pip install hybrid` still resolves next to other packages; this file is what a deployment
# uses so that every node runs the tested set:
#
#   pip install -c infra/constraints.txt ...
#
# tests/test_cluster_config.py checks the direct dependencies against the installed versions.
""")
    print("# the package's dependencies (pyproject.toml) and boto3")
    for name in first:
        print(pin(found[name]))
    print("\n# what they require in turn")
    for name in rest:
        print(pin(found[name]))


if __name__ == "__main__":
    main()
