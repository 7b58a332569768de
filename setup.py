"""Declares the native extensions; all metadata lives in pyproject.toml.

The engine binding is optional: without libcowsql (pkg-config `cowsql`) the build
says so and skips it, and the client side installs and works on its own;
`cowsqlpy.node.Node` then raises `EngineUnavailableError` naming the packages.
"""

import shutil
import subprocess
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

codec = Extension("cowsqlpy._ccodec", ["native/_ccodec.pyx"])


def _engine_available() -> bool:
    if shutil.which("pkg-config") is None:
        return False
    return subprocess.run(["pkg-config", "--exists", "cowsql"], check=False).returncode == 0


cffi_modules = []
if _engine_available():
    cffi_modules.append("native/engine_build.py:ffibuilder")
else:
    print(
        "cowsqlpy: libcowsql not found (pkg-config cowsql): building the client only; for the "
        "embedded engine install libcowsql-dev from Debian bookworm-backports and reinstall",
        file=sys.stderr,
    )

setup(
    cffi_modules=cffi_modules,
    ext_modules=cythonize([codec], language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
)
