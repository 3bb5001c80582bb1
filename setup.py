"""Build hook only (all metadata lives in pyproject.toml).

The repository keeps `recipes/` and `slurm/` as top-level folders. A wheel must carry them, since a
non-editable install has no checkout: this build_py copies both into the wheel as
`rl/_shipped/recipes/...` and `rl/_shipped/slurm/...`, where `rl.launch.shipped.shipped_path` finds them.
Editable installs skip the copy: there `rl/` sits next to the folders themselves.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_DIRS = ("recipes", "slurm")  # = rl.launch.shipped.SHIPPED_DIRS


class BuildPyWithShippedFiles(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        for name in SHIPPED_DIRS:
            for src in sorted((ROOT / name).rglob("*")):
                if src.is_file() and "__pycache__" not in src.parts and src.suffix != ".pyc":
                    dst = Path(self.build_lib) / "rl" / "_shipped" / src.relative_to(ROOT)
                    self.mkpath(str(dst.parent))
                    self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
