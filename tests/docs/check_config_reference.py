#!/usr/bin/env python3
"""Checks that colod's configuration keys agree in the three places they live:

  docs/configuration.md      the reference table, one row per key
                             (`table.key`, or `table[i].key` for [[table]]s)
  bridge/colod.example.toml  the example, which shows every key (set, or
                             commented out as `# key = ...`)
  colod itself               the keys its loader accepts (bridge/config.cpp),
                             asked by giving `colod --check-config` a file with
                             an unknown key in each table: the error lists the
                             known ones ("unknown key 'x' in [node] (known: ...)")

A key in one place and not in another fails the check, and so does a default
in the reference that differs from the value the example sets (the example
sets optional keys to their defaults). Only the standard library: python3 is
there wherever Meson is.

usage: check_config_reference.py CONFIGURATION_MD EXAMPLE_TOML COLOD
"""
import os
import re
import subprocess
import sys
import tempfile

PROBE = "zz_probe_key"


def reference_keys(path):
    """{'node.name': default cell text} from the reference's table rows."""
    keys, problems = {}, []
    row = re.compile(r"^\|\s*`([a-z_]+)(\[i\])?\.([a-z_]+)`\s*\|([^|]*)\|")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            m = row.match(line)
            if not m:
                continue
            key = f"{m[1]}.{m[3]}"
            if key in keys:
                problems.append(f"{path}:{number}: {key} is listed twice")
            keys[key] = m[4].strip()
    return keys, problems


def example_keys(path):
    """({'node.name': raw value, or None if commented out}, {'peer': 'array', 'node': 'table'}).

    Of a key set in several [[table]]s, the first table's value."""
    keys, tables, problems = {}, {}, []
    table = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            s = line.strip()
            if m := re.fullmatch(r"\[\[([a-z_]+)\]\]", s):
                table, tables[m[1]] = m[1], "array"
            elif m := re.fullmatch(r"\[([a-z_]+)\]", s):
                table, tables[m[1]] = m[1], "table"
            elif m := re.fullmatch(r"([a-z_]+)\s*=\s*(.+)", s):
                if table is None:
                    problems.append(f"{path}:{number}: {m[1]} is set before any [table]")
                    continue
                value = m[2]
                # A value ends at its closing quote or before a trailing comment.
                if value.startswith('"'):
                    value = value[: value.index('"', 1) + 1]
                else:
                    value = value.split("#", 1)[0].strip()
                keys.setdefault(f"{table}.{m[1]}", value)
            elif m := re.match(r"#\s*([a-z_]+)\s*=\s", s):  # a key shown commented out
                if table is not None:
                    keys.setdefault(f"{table}.{m[1]}", None)
    return keys, tables, problems


def colod_keys(colod, tables):
    """{'node.name', ...}: what colod's loader accepts, table by table."""
    node = '[node]\nname = "alpha"\nlisten = "tcp://127.0.0.1:7100"\n'
    with tempfile.TemporaryDirectory(prefix="colo-config-reference-") as directory:
        path = os.path.join(directory, "probe.toml")

        def known(text):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            run = subprocess.run([colod, "--check-config", path], capture_output=True, text=True, timeout=60)
            out = run.stdout + run.stderr
            m = re.search(rf"unknown key '{PROBE}' in .*?\(known: ([a-z_, ]+)\)", out)
            return m[1].split(", ") if m and run.returncode == 2 else None

        top = known(f"{PROBE} = 1\n")
        if top is None:
            sys.exit(f"colod --check-config did not list the known top-level tables for a stray key ({colod})")
        keys = set()
        for table in top:
            # [node] first, so that its required keys are not what fails;
            # a table the example does not show is tried both ways.
            forms = ["[[{}]]", "[{}]"] if tables.get(table) == "array" else ["[{}]", "[[{}]]"]
            for form in forms:
                header = form.format(table)
                text = f"{header}\n{PROBE} = 1\n" if table == "node" else f"{node}{header}\n{PROBE} = 1\n"
                names = known(text)
                if names is not None:
                    keys.update(f"{table}.{name}" for name in names)
                    break
            else:
                sys.exit(f"colod --check-config did not list the known keys of table {table!r}")
        return keys


def first_literal(cell):
    """`1048576` (1 MiB) -> '1048576'; 'required' -> None."""
    m = re.match(r"`([^`]*)`", cell)
    return m[1] if m else None


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    reference_path, example_path, colod = sys.argv[1:]
    reference, problems = reference_keys(reference_path)
    example, tables, more = example_keys(example_path)
    problems += more
    accepted = colod_keys(colod, tables)

    places = {
        os.path.basename(reference_path): set(reference),
        os.path.basename(example_path): set(example),
        "colod --check-config": accepted,
    }
    everything = set().union(*places.values())
    for key in sorted(everything):
        missing = [name for name, keys in places.items() if key not in keys]
        if missing:
            present = [name for name, keys in places.items() if key in keys]
            problems.append(f"{key}: in {' and '.join(present)}, not in {' nor '.join(missing)}")

    for key, cell in sorted(reference.items()):
        default, shown = first_literal(cell), example.get(key)
        if default is not None and shown is not None and default != shown:
            problems.append(f"{key}: the reference says the default is {default}, the example sets {shown}")

    if problems:
        print("colod's configuration keys disagree:")
        for p in problems:
            print("  " + p)
        print("Every key must be in docs/configuration.md, in bridge/colod.example.toml and in bridge/config.cpp.")
        return 1
    print(f"{len(everything)} keys in {len(tables)} tables: {', '.join(places)} agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
