"""Transparent huge pages for XLA:CPU's buffers: jaxseg's command line re-executes itself
once with glibc's `glibc.malloc.hugetlb=1` where that helps.

XLA:CPU allocates every call's buffers with malloc. glibc serves blocks that large
with fresh mappings from the kernel and unmaps them when they are freed, so each call
touches new 4 KiB pages, one page fault each: the PANet `:tiny` training step took
111k faults and 0.39 s of system time per step (of 1.68 s CPU). With the tunable, malloc
asks the kernel for transparent huge pages (madvise), 2 MiB each: 6.5k faults, 0.10 s,
and the step 951 -> 815 ms (benchmarks/huge_pages.py). glibc reads tunables once, when a process starts, hence the
re-execution, before JAX is imported (and inherited by the processes it starts).

Nothing changes where the tunable cannot help or the user has decided: a GLIBC_TUNABLES
already set (any value), JAXSEG_HUGE_PAGES=0, not Linux, glibc older than 2.35, or
transparent huge pages not in "madvise" mode ("always" has them already, "never" has none).
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def wanted(environ=os.environ, libc=None, thp_mode=None):
  """True where re-executing with the tunable would give malloc huge pages."""
  if "GLIBC_TUNABLES" in environ or environ.get("JAXSEG_HUGE_PAGES", "1") == "0" or sys.platform != "linux":
    return False
  name, version = libc or platform.libc_ver()
  try:
    if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
      return False
  except ValueError:
    return False
  if thp_mode is None:
    try:
      with open(THP_MODE) as f:
        thp_mode = f.read()
    except OSError:
      return False
  return "[madvise]" in thp_mode


def command(module=None, argv=None, orig_argv=None):
  """The interpreter's command line that started this program (`python [options] -m
  module args` or `python [options] script args`), or None where it was started some
  other way (an embedding, runpy, a test runner): only then is re-executing it safe."""
  argv, orig_argv = argv or sys.argv, orig_argv or sys.orig_argv
  head = orig_argv[:len(orig_argv) - (len(argv) - 1)]
  if orig_argv[len(head):] != argv[1:] or len(head) < 2:
    return None
  if (head[-2:] == ["-m", module]) if module else os.path.abspath(head[-1]) == os.path.abspath(argv[0]):
    return [sys.executable, *orig_argv[1:]]
  return None


def reexec(module=None):
  """Replaces this process by itself (same interpreter, options and arguments) with the
  tunable set, where `wanted`; returns otherwise. `module`: the program's name after
  `python -m`; None for a script."""
  cmd = command(module)
  if cmd and wanted():
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, {**os.environ, "GLIBC_TUNABLES": TUNABLE})
