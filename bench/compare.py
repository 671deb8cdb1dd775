#!/usr/bin/env python3
"""Compare two NDJSON files line by line as parsed JSON (object key order ignored).

Usage: compare.py A B [--show N]
Prints the first N differences (default 5) and the count; exit 0 when every line is equal,
1 on any difference (including a different number of lines), 2 on usage errors.
Lines are compared as parsed values, so {"a":1,"b":2} equals {"b":2,"a":1}, while array order,
types (1 vs "1") and null vs a missing field all count as differences.
Memory stays flat: the files are streamed, never loaded whole.
"""
import itertools
import json
import sys
from decimal import Decimal


class Number(tuple):
    """A JSON number by value (1 == 1.0), but never equal to true/false (Python's True == 1)."""

    def __repr__(self):
        return str(self[0])


def number(text):
    return Number((Decimal(text),))


MISSING = object()  # a field one side does not have


def printable(v):
    if isinstance(v, Number):
        d = v[0]
        return int(d) if d == d.to_integral_value() else float(d)
    if isinstance(v, dict):
        return {k: printable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [printable(x) for x in v]
    return v


def show(v):
    if v is MISSING:
        return "(missing)"
    return json.dumps(printable(v), ensure_ascii=False, default=str)[:300]


def first_difference(a, b, path="$"):
    """Path and the two values where a and b first differ, or None when they are equal."""
    if type(a) is not type(b):
        return path, a, b
    if isinstance(a, Number):
        return None if a == b else (path, a, b)
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}", a.get(k, MISSING), b.get(k, MISSING)
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path}.length", len(a), len(b)
        return None
    return None if a == b else (path, a, b)


def parse(line):
    try:
        return json.loads(line, parse_int=number, parse_float=number)
    except ValueError as e:
        return f"<not JSON: {e}: {line[:200]!r}>"


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    limit = 5
    if "--show" in argv:
        i = argv.index("--show")
        if i + 1 >= len(argv) or not argv[i + 1].isdigit():
            print(__doc__, file=sys.stderr)
            return 2
        limit = int(argv[i + 1])
        args.remove(argv[i + 1])
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path_a, path_b = args
    lines = differences = 0
    try:
        fa, fb = open(path_a, encoding="utf-8"), open(path_b, encoding="utf-8")
    except OSError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 1
    with fa, fb:
        for n, (la, lb) in enumerate(itertools.zip_longest(fa, fb), start=1):
            lines = n
            if la is None or lb is None:
                differences += 1
                if differences <= limit:
                    missing = path_a if la is None else path_b
                    print(f"line {n}: {missing} has no line {n} (the files differ in length)")
                continue
            if la == lb:
                continue
            a, b = parse(la), parse(lb)
            if a == b:
                continue
            differences += 1
            if differences <= limit:
                where, va, vb = first_difference(a, b) or ("$", a, b)
                print(f"line {n}: {where}")
                print(f"  {path_a}: {show(va)}")
                print(f"  {path_b}: {show(vb)}")
    if differences:
        print(f"{differences} of {lines} lines differ")
        return 1
    print(f"all {lines} lines equal")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
