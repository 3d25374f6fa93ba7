"""jaxseg/huge_pages.py: when the command line re-executes itself with glibc's huge-page
tunable, and that the re-execution keeps the interpreter, options and arguments."""
import os
import subprocess
import sys

from jaxseg import huge_pages

GLIBC = ("glibc", "2.36")
MADVISE = "always [madvise] never\n"


def test_wanted_only_where_it_helps_and_the_user_has_not_decided():
  assert huge_pages.wanted({}, GLIBC, MADVISE) == (sys.platform == "linux")
  assert not huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, MADVISE)
  assert not huge_pages.wanted({"JAXSEG_HUGE_PAGES": "0"}, GLIBC, MADVISE)
  assert not huge_pages.wanted({}, ("glibc", "2.31"), MADVISE)  # no hugetlb tunable before 2.35
  assert not huge_pages.wanted({}, ("musl", ""), MADVISE)
  assert not huge_pages.wanted({}, GLIBC, "[always] madvise never\n")
  assert not huge_pages.wanted({}, GLIBC, "always madvise [never]\n")


def test_command_is_the_one_that_started_the_program():
  exe = sys.executable
  argv = ["/src/jaxseg/main.py", "--workdir", "w"]
  assert huge_pages.command("jaxseg.main", argv, ["python", "-u", "-m", "jaxseg.main", "--workdir", "w"]) == \
      [exe, "-u", "-m", "jaxseg.main", "--workdir", "w"]
  assert huge_pages.command("jaxseg.main", argv, ["pytest", "-q", "tests"]) is None  # imported, not run
  assert huge_pages.command("jaxseg.main", argv, ["python", "-m", "other", "--workdir", "w"]) is None
  assert huge_pages.command(None, ["/b/suite.py", "--tiny"], ["python", "/b/suite.py", "--tiny"]) == \
      [exe, "/b/suite.py", "--tiny"]
  assert huge_pages.command(None, ["/b/suite.py", "--tiny"], ["python", "-c", "x", "--tiny"]) is None


def test_reexec_sets_the_tunable_once_and_keeps_the_arguments(tmp_path):
  script = tmp_path / "prog.py"
  script.write_text("import os, sys\nfrom jaxseg import huge_pages\nprint('start', flush=True)\n"
                    "huge_pages.reexec()\nprint(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXSEG_HUGE_PAGES")}
  env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(huge_pages.__file__)))
  out = subprocess.run([sys.executable, str(script), "a b", "--c"], env=env, capture_output=True, text=True,
                       check=True).stdout.splitlines()
  if huge_pages.wanted(env):
    assert out == ["start", "start", f"{huge_pages.TUNABLE} ['a b', '--c']"]
  else:
    assert out == ["start", "None ['a b', '--c']"]
  out = subprocess.run([sys.executable, str(script), "x"], env={**env, "JAXSEG_HUGE_PAGES": "0"},
                       capture_output=True, text=True, check=True).stdout.splitlines()
  assert out == ["start", "None ['x']"]
