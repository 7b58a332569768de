"""Declares the native extensions; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

codec = Extension("cowsqlpy._ccodec", ["native/_ccodec.pyx"])

setup(
    cffi_modules=["native/engine_build.py:ffibuilder"],
    ext_modules=cythonize([codec], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
)
