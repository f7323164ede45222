"""Print the requirements that pyproject.toml declares, one per line: its dependencies, then those of
each extra named on the command line. The image's dependency layer installs exactly these, before
the project's code is copied in, so a code change does not reinstall the stack.

    python3 scripts/pyproject_requirements.py pyproject.toml [EXTRA ...]
"""

import sys
import tomllib


def requirements(pyproject_text: str, extras: list[str]) -> list[str]:
    """dependencies + optional-dependencies[extra] for each extra, in order, without repeats."""
    project = tomllib.loads(pyproject_text)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"pyproject.toml has no extra {', '.join(unknown)}; it has: {', '.join(optional)}")
    found: list[str] = []
    for req in [*project["dependencies"], *(r for e in extras for r in optional[e])]:
        if req not in found:
            found.append(req)
    return found


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        print("\n".join(requirements(f.read(), sys.argv[2:])))
