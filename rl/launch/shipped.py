"""Files entropy-rl ships besides its Python code: the recipes and the sbatch template.

The repository keeps them in top-level folders (`recipes/`, `slurm/`). A wheel carries copies of
both under `rl/_shipped/` (setup.py's build step copies them there), because a non-editable
install has no checkout to read them from. `shipped_path("slurm/train.sbatch")` is the one lookup
for them: from the wheel's copy when it exists, else from the source checkout (a checkout on
PYTHONPATH, or an editable install, whose `rl/` sits next to `recipes/` and `slurm/`).
"""

from __future__ import annotations

from pathlib import Path

from rl.errors import UserError

SHIPPED_DIRS = ("recipes", "slurm")
_PACKAGE = Path(__file__).resolve().parents[1]  # rl/
_WHEEL_ROOT = _PACKAGE / "_shipped"
_CHECKOUT_ROOT = _PACKAGE.parent


def shipped_root() -> Path:
    """The folder that holds `recipes/` and `slurm/`: the wheel's `rl/_shipped`, else the checkout root.

    UserError when neither has them (an install built without setup.py's build step).
    """
    for root in (_WHEEL_ROOT, _CHECKOUT_ROOT):
        if all((root / name).is_dir() for name in SHIPPED_DIRS) and (root / "slurm" / "train.sbatch").is_file():
            return root
    raise UserError(f"{_PACKAGE}: entropy-rl's shipped files (recipes/, slurm/) are missing from this install; "
                    "reinstall it (pip install --force-reinstall entropy-rl) or use a source checkout")


def shipped_path(relative: str) -> Path:
    """A shipped file or folder by its repository path, e.g. `slurm/train.sbatch` or `recipes/accelerate`.

    UserError if the path is outside `recipes/` and `slurm/` or does not exist.
    """
    rel = Path(relative)
    if rel.is_absolute() or not rel.parts or rel.parts[0] not in SHIPPED_DIRS or ".." in rel.parts:
        raise UserError(f"{relative}: not a shipped path; shipped files live under {' and '.join(SHIPPED_DIRS)}/")
    path = shipped_root() / rel
    if not path.exists():
        raise UserError(f"{relative}: no such shipped file (list the recipes with `rl recipes`)")
    return path
