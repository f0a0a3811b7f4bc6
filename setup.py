from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ticktape._avrovm",
            ["ticktape/_avrovm.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "producers.betfair._ladders",
            ["producers/betfair/_ladders.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
