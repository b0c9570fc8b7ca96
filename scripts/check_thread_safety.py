#!/usr/bin/env python3
"""clang's thread-safety analysis over every ferry C++ file, without building.

Reads compile_commands.json of a build folder configured with clang and FERRY_THREAD_SAFETY=ON
(`make thread-safety` does that) and re-runs each of ferry's own compile commands with
-fsyntax-only: the analysis is part of semantic checking, so this finds every violation of
ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED & co. at a fraction of a build's cost (no code
generation, no linking). Generated files (protobuf) are skipped; the generated headers that ferry's
files include are produced first (ninja, headers only).

Usage: check_thread_safety.py BUILD_DIR [-j JOBS]
Exit status 0 when every file is clean of thread-safety errors, 1 otherwise.
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time


def syntax_only(command):
    """The compile command with its output dropped and -fsyntax-only added, minus a launcher."""
    args = shlex.split(command)
    while args and os.path.basename(args[0]) in ("ccache", "sccache"):
        args = args[1:]
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD") or a.startswith("-g"):
            continue
        out.append(a)
    return out + ["-fsyntax-only"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    build_dir = pathlib.Path(args.build_dir).resolve()
    source_dir = pathlib.Path(__file__).resolve().parents[1]
    # Re-run CMake if a CMakeLists.txt changed, so compile_commands.json is current; then make the
    # generated headers (protoc output) only, not the libraries they belong to.
    ninja = ["ninja", "-C", str(build_dir)]
    subprocess.run(ninja + ["build.ninja"], check=True, stdout=subprocess.DEVNULL)
    targets = subprocess.run(ninja + ["-t", "targets", "all"], check=True, capture_output=True,
                             text=True).stdout
    names = [t.split(":")[0] for t in targets.splitlines()]
    headers = [n for n in names if n.endswith(".h") and not n.startswith("/")]
    if headers:
        subprocess.run(ninja + headers, check=True, stdout=subprocess.DEVNULL)
    db = json.loads((build_dir / "compile_commands.json").read_text())
    entries = []
    for e in db:
        path = pathlib.Path(e["file"]).resolve()
        if build_dir in path.parents or source_dir not in path.parents:
            continue  # generated or third-party code
        if path.suffix not in (".cc", ".cpp"):
            continue  # CUDA is not compiled by clang here
        entries.append((path, e["directory"], syntax_only(e["command"])))
    if not entries:
        print(f"check_thread_safety: no ferry C++ files in {build_dir}/compile_commands.json",
              file=sys.stderr)
        return 1

    def check(entry):
        path, directory, cmd = entry
        proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
        return path, proc.returncode, proc.stderr

    start = time.monotonic()
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for path, rc, stderr in pool.map(check, entries):
            if rc != 0:
                failed.append(path)
                sys.stderr.write(stderr)
    elapsed = time.monotonic() - start
    rel = [str(p.relative_to(source_dir)) for p in failed]
    print(f"check_thread_safety: {len(entries)} files in {elapsed:.0f} s, "
          f"{len(failed)} failed{': ' + ', '.join(rel) if rel else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
