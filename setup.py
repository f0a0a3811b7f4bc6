"""C extensions (optional: pure-Python twins run without them) and the schemas shipped in the wheel."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPyWithSchemas(build_py):  # type: ignore[misc]
    """Copy `schemas/*.avsc` into the built package as `ticktape/_schemas/`.

    `schemas/` at the top of the repository is the source of truth; an installed ticktape
    (a wheel, not an editable checkout) has no repository beside it, so it reads this copy.
    """

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "ticktape" / "_schemas"
        target.mkdir(parents=True, exist_ok=True)
        for schema in sorted(Path(__file__).resolve().parent.joinpath("schemas").glob("*.avsc")):
            shutil.copyfile(schema, target / schema.name)


setup(
    cmdclass={"build_py": BuildPyWithSchemas},
    ext_modules=[
        Extension(
            "ticktape._avrovm",
            ["ticktape/_avrovm.c"],
            depends=["ticktape/avro_bytes.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "ticktape._rows",
            ["ticktape/_rows.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "producers.betfair._ladders",
            ["producers/betfair/_ladders.c"],
            include_dirs=["ticktape"],  # avro_bytes.h, shared with _avrovm.c
            depends=["ticktape/avro_bytes.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ],
)
