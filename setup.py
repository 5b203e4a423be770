"""batchd's two C extensions, built at install when a C compiler is there: the column lane
(batchd/intake/_lane.c) and the dedup hash set (batchd/intake/_keyset.c). Without them
batchd does the same in Python (intake.column_lane, intake.seen.SeenSet), only slower."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "batchd.intake._lane",
            ["batchd/intake/_lane.c"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=True,
        ),
        Extension(
            "batchd.intake._keyset",
            ["batchd/intake/_keyset.c"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=True,
        ),
    ]
)
