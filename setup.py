"""Copies the top-level targets/ and device_profiles/ into the wheel as edgeq/_data/, where
edgeq.resources finds them in an installed (non-editable) package."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithData(build_py):
    def run(self):
        super().run()
        root = Path(__file__).parent
        for name in ("targets", "device_profiles"):
            src = root / name
            if src.is_dir():
                dst = Path(self.build_lib) / "edgeq" / "_data" / name
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst)
        # The board-side benchmark script is pushed to ssh devices from the installed package.
        bench = root / "scripts" / "edgeq_bench.py"
        if bench.is_file():
            dst = Path(self.build_lib) / "edgeq" / "_data" / "scripts"
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bench, dst)


setup(cmdclass={"build_py": BuildWithData})
