#!/usr/bin/env python3
"""mdBook preprocessor: fix the links of chapters that include a file from elsewhere in the repo.

The lab tutorials live beside their code (lab01-iterative/README.md) and are included into the
book unchanged (one source, no copies). Their relative links are right on a repository browser
but not in the book, so this rewrites them:
  - a link to another included file (a lab README, docs/protocol.md, GRADING.md...) becomes a
    link to that file's chapter;
  - a link to a source file (src/main.rs, ../common/src/fork.rs) becomes its repository path in
    code font, since the book does not carry the sources;
  - an image from the book's own folder (../book/src/img/x.svg from a lab README) becomes a path
    relative to the chapter (../img/x.svg), so the Korean book, whose chapters are translations
    with the same relative links, shows its own img/x.svg (with Korean labels);
  - other images, web links and anchors are left alone.
Used from book.toml and book/ko/book.toml as `[preprocessor.repolinks] command = "python3 links.py"` (not `links`: that name is mdBook's own include preprocessor).
"""
import json
import os
import posixpath
import re
import sys

# chapter source (relative to the book's src/) -> the repository file it includes
CHAPTER_ORIGIN = {
    "protocol.md": "docs/protocol.md",
    "benchmarks.md": "docs/benchmarks.md",
    "instructors.md": "GRADING.md",
    "labs/lab01-iterative.md": "lab01-iterative/README.md",
    "labs/lab02-fork.md": "lab02-fork/README.md",
    "labs/lab03-thread.md": "lab03-thread/README.md",
    "labs/lab04-multiplex.md": "lab04-multiplex/README.md",
    "labs/lab05-ipc.md": "lab05-ipc/README.md",
}
REPO_FILE_TO_CHAPTER = {origin: chapter for chapter, origin in CHAPTER_ORIGIN.items()}
REPO_FILE_TO_CHAPTER["README.md"] = "introduction.md"
# where the book's own files (its images) live, seen from the repository root
BOOK_SRC = "book/src/"
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def rewrite(content, chapter_path):
    origin = CHAPTER_ORIGIN.get(chapter_path)
    if origin is None:
        return content
    origin_dir = posixpath.dirname(origin)
    chapter_dir = posixpath.dirname(chapter_path)

    def fix(match):
        bang, text, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(origin_dir, path))
        if bang:
            if repo_path.startswith(BOOK_SRC):
                rel = posixpath.relpath(repo_path[len(BOOK_SRC) :], chapter_dir or ".")
                return f"![{text}]({rel})"
            return match.group(0)
        chapter = REPO_FILE_TO_CHAPTER.get(repo_path)
        if chapter is not None:
            rel = posixpath.relpath(chapter, chapter_dir or ".")
            return f"[{text}]({rel}{'#' + anchor if anchor else ''})"
        if text.strip("`") == repo_path:
            return f"`{repo_path}`"
        return f"{text} (`{repo_path}`)"

    return LINK.sub(fix, content)


def walk(items):
    for item in items:
        if isinstance(item, dict) and "Chapter" in item:
            chapter = item["Chapter"]
            if chapter.get("path"):
                chapter["content"] = rewrite(chapter["content"], chapter["path"])
            walk(chapter.get("sub_items", []))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "supports":
        sys.exit(0)
    context, book = json.load(sys.stdin)
    walk(book.get("items", book.get("sections", [])))
    json.dump(book, sys.stdout)


if __name__ == "__main__":
    main()
