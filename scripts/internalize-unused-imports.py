#!/usr/bin/env python3
"""Reads swift build output on standard input and turns each `public import` the compiler says
is not used publicly into an internal one (used by scripts/regenerate-openapi.sh)."""
import re
import sys

pattern = re.compile(r"^(/[^:]+\.swift):(\d+):\d+: warning: public import of '[^']+' was not used")
changes = {}
for line in sys.stdin:
    match = pattern.match(line.strip())
    if match:
        changes.setdefault(match.group(1), set()).add(int(match.group(2)))
for path, numbers in changes.items():
    with open(path) as handle:
        lines = handle.readlines()
    for number in numbers:
        lines[number - 1] = lines[number - 1].replace("public import ", "internal import ", 1)
    with open(path, "w") as handle:
        handle.writelines(lines)
    print(f"{path}: {len(numbers)} imports made internal")
