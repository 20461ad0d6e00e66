#!/usr/bin/env python3
"""Checks the links between the repository's Markdown files.

Every relative link `[text](path)` or `[text](path#anchor)` in a *.md file of
the source tree must name a file or folder that exists, and an anchor must
name a heading of that Markdown file (GitHub's slugs: lower case, spaces to
hyphens, punctuation dropped). Links to the web (`http:`, `https:`,
`mailto:`) are not followed. Build directories (those holding meson-info/)
and .git are skipped.

usage: check_links.py SOURCE_ROOT
"""
import os
import re
import sys

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files(root):
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs
                            if d != ".git" and not os.path.isdir(os.path.join(directory, d, "meson-info")))
        for name in sorted(files):
            if name.endswith(".md"):
                yield os.path.join(directory, name)


def lines_outside_code(path):
    """(number, line) of the file, without fenced code blocks."""
    fenced = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if FENCE.match(line):
                fenced = not fenced
                continue
            if not fenced:
                yield number, line


def slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(path, cache={}):
    if path not in cache:
        seen, anchors = {}, set()
        for _, line in lines_outside_code(path):
            m = HEADING.match(line)
            if m:
                base = slug(m[1])
                n = seen.get(base, 0)
                anchors.add(base if n == 0 else f"{base}-{n}")  # repeated headings get -1, -2, ...
                seen[base] = n + 1
        cache[path] = anchors
    return cache[path]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = os.path.abspath(sys.argv[1])
    problems, checked = [], 0
    for path in markdown_files(root):
        where = os.path.relpath(path, root)
        for number, line in lines_outside_code(path):
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):  # not inside `code`
                if re.match(r"[a-z]+:", target):
                    continue
                checked += 1
                file_part, _, anchor = target.partition("#")
                linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
                if not os.path.exists(linked):
                    problems.append(f"{where}:{number}: {target}: no such file")
                elif not os.path.commonpath([root, linked]) == root:
                    problems.append(f"{where}:{number}: {target}: outside the repository")
                elif anchor and linked.endswith(".md") and anchor not in anchors_of(linked):
                    linked_name = os.path.relpath(linked, root)
                    problems.append(f"{where}:{number}: {target}: no heading '{anchor}' in {linked_name}")
    if problems:
        print("broken links:")
        for p in problems:
            print("  " + p)
        return 1
    print(f"{checked} relative links checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
