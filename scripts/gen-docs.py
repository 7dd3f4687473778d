#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gen-docs.py - the man pages and the bash completion, generated from the programs' --help.

The options and commands are never written twice: the prose of a man page (fs/qcowfs.8.in,
tools/qcowctl.1.in) holds markers that this script replaces with what the built program's
--help (and 'qcowctl COMMAND --help') says, and the completion lists exactly the options
those texts list. The build runs it after the programs are linked (dist/meson.build).

  gen-docs.py man VERSION PROGRAM SOURCE OUTPUT
  gen-docs.py completion PROGRAM OUTPUT      (PROGRAM: qcowctl)

Markers, each alone on a line of SOURCE (text of @VERSION@ and @DATE@ may appear anywhere):
  @SYNOPSIS@   the usage lines of PROGRAM --help
  @OPTIONS@    every option list of PROGRAM --help
  @COMMANDS@   per command of 'PROGRAM --help': its usage, text and options
  @VERSION@    VERSION;  @DATE@  the date of SOURCE_DATE_EPOCH, or today

How a --help text is read (the house style of both programs): paragraphs are separated by
blank lines; a paragraph starting "usage:" holds the usage lines (a line that starts with the
program's name starts a new one, any other continues the previous); within a paragraph,
unindented lines are prose and indented lines are a list of items, each item a line at the
list's indentation: its head (options, a command or an argument), two or more spaces, its
text. Lines indented further continue the item: at the text's column they are more text,
deeper they are kept as they are (a table of values).
"""
import datetime
import os
import re
import subprocess
import sys

OPTION_RE = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][A-Za-z0-9_-]*)")
# "-F FMT", "[-f qcow2]", "--top=T" in a usage line: an option and its value
USAGE_VALUE_RE = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][A-Za-z0-9_-]*)[ =]([A-Za-z0-9][^\s\[\]]*)")


def run_help(program, *args):
    """The --help text of @program (with @args before --help); the build fails without it."""
    env = dict(os.environ, LC_ALL="C", ASAN_OPTIONS="detect_leaks=0")
    cmd = [program, *args, "--help"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.exit("gen-docs: %s: %s" % (" ".join(cmd), e))
    if r.returncode != 0 or not r.stdout.strip():
        sys.exit("gen-docs: %s: exit status %d, %s" % (" ".join(cmd), r.returncode,
                                                          r.stderr.strip() or "no output"))
    return r.stdout


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def split_head(text):
    """'-b, --backing NEWBASE  the new...' -> ('-b, --backing NEWBASE', 'the new...', column of
    the text within @text or None)."""
    m = re.search(r"\S( {2,})(?=\S)", text)
    if not m:
        return text.strip(), "", None
    return text[:m.start(1)].strip(), text[m.end(1):], m.end(1)


class Item:
    def __init__(self, head, text, col):
        self.head = head
        self.lines = [("text", text)] if text else []
        self.col = col  # column of the text, None until known


def parse_help(text, prog, usage_lines=None):
    """Parse a --help text into (usage lines, [parts]); a part is ("prose", [lines]) or
    ("items", [Item]). A usage line that continues on the next is joined to it; the lines as
    printed are appended to @usage_lines."""
    usage, parts = [], []
    if usage_lines is None:
        usage_lines = []
    paragraphs, cur = [], []
    for line in text.rstrip("\n").split("\n"):
        line = line.rstrip()
        if line:
            cur.append(line)
        elif cur:
            paragraphs.append(cur)
            cur = []
    if cur:
        paragraphs.append(cur)
    for para in paragraphs:
        if para[0].startswith("usage:"):
            for line in para:
                body = line[len("usage:"):].strip() if line.startswith("usage:") else line.strip()
                if body.startswith(prog) or not usage:
                    usage.append(body)
                else:
                    usage[-1] += " " + body
                # as printed, without "usage: " (the man page keeps the line breaks)
                usage_lines.append(line[len("usage: "):])
            continue
        for line in para:
            ind = indent_of(line)
            if ind == 0:
                if parts and parts[-1][0] == "prose":
                    parts[-1][1].append(line)
                else:
                    parts.append(("prose", [line]))
                continue
            if not parts or parts[-1][0] != "items":
                parts.append(("items", []))
                list_indent = ind
            items = parts[-1][1]
            if ind <= list_indent or not items:
                list_indent = min(list_indent, ind)
                head, rest, col = split_head(line[ind:])
                items.append(Item(head, rest, None if col is None else ind + col))
                continue
            item = items[-1]
            if item.col is None:
                item.col = ind
            if ind <= item.col:
                item.lines.append(("text", line.strip()))
            else:
                item.lines.append(("verbatim", line[item.col:]))
    return usage, parts


def options_of(usage, parts):
    """Every option the help lists: in its usage lines, at the head of its items, and at the
    start of a line of an item's text.
    {option: [the metavariables it is given a value with], empty when it takes none}. The
    options of one item head ("-b, --backing NEWBASE") share the value of the last one."""
    opts = {}
    for line in usage:
        for o in OPTION_RE.findall(line):
            opts.setdefault(o, [])
        for o, metavar in USAGE_VALUE_RE.findall(line):
            opts[o].append(metavar)
    for kind, body in parts:
        if kind != "items":
            continue
        for item in body:
            if not item.head.startswith("-"):
                continue
            found = USAGE_VALUE_RE.findall(item.head)
            last = found[-1][1] if found else None
            for o in OPTION_RE.findall(item.head):
                opts.setdefault(o, [])
                if last:
                    opts[o].append(last)
            # an option that starts a line of the item's text ("--bitmaps  keep...\n
            # --skip-broken-bitmaps leaves out...") is listed too
            for _, text in item.lines:
                text = text.strip()
                if text.startswith("-"):
                    head = re.split(r"(?<=\S) {2,}", text, maxsplit=1)[0]
                    for o in OPTION_RE.findall(head):
                        opts.setdefault(o, [])
    return opts


def subcommand_words(usage, prog):
    """The words that may follow PROG in its usage lines ('qcowctl snapshot list ...'):
    lowercase names only."""
    words = []
    n = len(prog.split())
    for line in usage:
        w = line.split()
        if len(w) > n and re.fullmatch(r"[a-z][a-z0-9-]*", w[n]) and w[n] not in words:
            words.append(w[n])
    return words


# --- roff ---


def esc(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return s


def roff_line(s):
    s = esc(s)
    if s.startswith((".", "'")):
        s = "\\&" + s
    return s


def roff_head(head):
    """Options in bold, metavariables (capitals) in italics."""
    out = []
    for tok in re.split(r"(--?[A-Za-z0-9][A-Za-z0-9_-]*|\b[A-Z][A-Z0-9_]*\b)", head):
        if not tok:
            continue
        if tok.startswith("-") and OPTION_RE.fullmatch(tok):
            out.append("\\fB" + esc(tok) + "\\fR")
        elif re.fullmatch(r"[A-Z][A-Z0-9_]*", tok):
            out.append("\\fI" + esc(tok) + "\\fR")
        else:
            out.append(esc(tok))
    s = "".join(out)
    return "\\&" + s if s.startswith((".", "'")) else s


def roff_usage(usage):
    out = [".nf"]
    out += [roff_line(u) for u in usage]
    out.append(".fi")
    return out


def roff_items(items):
    out = []
    for item in items:
        out += [".TP", roff_head(item.head)]
        verbatim = False
        for kind, text in item.lines:
            if kind == "verbatim" and not verbatim:
                out.append(".nf")
                verbatim = True
            elif kind == "text" and verbatim:
                out.append(".fi")
                verbatim = False
            out.append(roff_line(text) if text.strip() else ".sp")
        if verbatim:
            out.append(".fi")
    return out


def roff_parts(parts, only_items=False):
    out = []
    for kind, body in parts:
        if kind == "items":
            out += roff_items([i for i in body if not only_items or i.head.startswith("-")])
        elif not only_items:
            if len(body) == 1 and re.fullmatch(r"[a-z ]+:", body[0]):
                continue  # "options:": the section says it
            out.append(".PP")
            out += [roff_line(line) for line in body]
    return out


def qcowctl_commands(program):
    """The commands 'PROGRAM --help' lists under "commands:", in order."""
    usage, parts = parse_help(run_help(program), os.path.basename(program))
    for i, (kind, body) in enumerate(parts):
        if kind == "prose" and body[-1].strip() == "commands:" and i + 1 < len(parts):
            return [item.head for item in parts[i + 1][1]]
    sys.exit("gen-docs: %s --help lists no commands" % program)


def gen_man(version, program, source, output):
    prog = os.path.basename(program)
    usage_lines = []
    usage, parts = parse_help(run_help(program), prog, usage_lines)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
            if epoch else datetime.datetime.now(datetime.timezone.utc))
    out = []
    with open(source, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for line in lines:
        marker = line.strip()
        if marker == "@SYNOPSIS@":
            out += roff_usage(usage_lines)
        elif marker == "@OPTIONS@":
            out += roff_parts(parts, only_items=True)
        elif marker == "@COMMANDS@":
            for cmd in qcowctl_commands(program):
                cusage = []
                _, cparts = parse_help(run_help(program, cmd), prog, cusage)
                out += [".SS " + esc(prog + " " + cmd)]
                out += roff_usage(cusage)
                out += roff_parts(cparts)
        else:
            line = line.replace("@VERSION@", version)
            line = line.replace("@DATE@", when.strftime("%Y-%m-%d"))
            left = re.search(r"@[A-Z]+@", line)
            if left and not line.startswith('.\\"'):
                sys.exit("gen-docs: %s: unknown marker %s" % (source, left.group(0)))
            out.append(line)
    text = "\n".join(out).rstrip("\n") + "\n"
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


# --- bash completion ---

COMPLETION_HEAD = r"""# bash completion for qcowctl                                       -*- shell-script -*-
# Generated at build time from 'qcowctl --help' and 'qcowctl COMMAND --help'
# (scripts/gen-docs.py): edit the programs' help, not this file.

# Image files (*.qcow2, *.qcow, *.img) and directories; directories only with "-d".
_qcowctl_files()
{
    if declare -F _filedir >/dev/null; then
        if [[ $1 == -d ]]; then _filedir -d; else _filedir '@(qcow2|qcow|img)'; fi
        return
    fi
    local IFS=$'\n' f
    compopt -o filenames 2>/dev/null
    COMPREPLY=()
    for f in $(compgen -d -- "$cur"); do COMPREPLY+=("$f"); done
    [[ $1 == -d ]] && return
    for f in $(compgen -f -- "$cur"); do
        [[ -d $f ]] && continue
        case $f in *.qcow2 | *.qcow | *.img) COMPREPLY+=("$f") ;; esac
    done
}

_qcowctl()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion -s || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        # "--opt=VALUE": bash splits the words at "="
        if [[ $cur == = ]]; then
            cur=
        elif [[ $prev == = ]]; then
            prev=${COMP_WORDS[COMP_CWORD - 2]}
        fi
    fi
    COMPREPLY=()

    if ((cword == 1)); then
        COMPREPLY=($(compgen -W '%(commands)s -h --help -V --version' -- "$cur"))
        return
    fi

    local cmd=${words[1]} opts='' actions='' value='' v
    case $cmd in
%(cases)s
        *) return ;;
    esac

    # the value of an option: "OPTION:files", ":dir", ":other" (nothing to offer) or
    # ":w=WORD,WORD..."
    for v in $value; do
        [[ ${v%%%%:*} == "$prev" ]] || continue
        case ${v#*:} in
        files) _qcowctl_files ;;
        dir) _qcowctl_files -d ;;
        w=*)
            v=${v#*:w=}
            COMPREPLY=($(compgen -W "${v//,/ }" -- "$cur"))
            ;;
        esac
        return
    done

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    if ((cword == 2)) && [[ -n $actions ]]; then
        COMPREPLY=($(compgen -W "$actions" -- "$cur"))
        return
    fi
    if [[ $cmd == tree ]]; then
        _qcowctl_files -d
    else
        _qcowctl_files
    fi
} &&
    complete -F _qcowctl qcowctl

# ex: filetype=sh
"""


def value_kind(metavars):
    """How to complete the value of an option, from its metavariables: "files", "dir",
    "other", or "w=" and the words to offer (literal words: "qcow2|raw", "on|off"; a FMT)."""
    words = []
    kinds = set()
    for metavar in metavars:
        m = metavar.strip("[]<>(),;.")
        if re.fullmatch(r"[a-z0-9_.][a-z0-9_.-]*(\|-*[a-z0-9_.-]+)*", m):
            words += [w for w in m.split("|") if not w.startswith("-") and w not in words]
        elif m == "FMT":
            words += [w for w in ("qcow2", "raw") if w not in words]
        elif m == "DIR":
            kinds.add("dir")
        elif m in ("IMAGE", "BACKING", "NEWBASE", "BASE", "B", "T", "FILE", "PATH", "SRC",
                   "DEST", "TOP", "KEYFILE"):
            kinds.add("files")
    if words:
        return "w=" + ",".join(words)
    for kind in ("files", "dir"):
        if kind in kinds:
            return kind
    return "other"


def gen_completion(program, output):
    prog = os.path.basename(program)
    commands = qcowctl_commands(program)
    cases = []
    for cmd in commands:
        usage, parts = parse_help(run_help(program, cmd), prog)
        opts = options_of(usage, parts)
        actions = subcommand_words(usage, prog + " " + cmd)
        values = sorted("%s:%s" % (o, value_kind(m)) for o, m in opts.items() if m)
        for name, what in (("cmd", cmd), ("opts", " ".join(sorted(opts))),
                           ("actions", " ".join(actions)), ("values", " ".join(values))):
            if "'" in what:
                sys.exit("gen-docs: %s %s --help: a quote in %s" % (prog, cmd, name))
        cases.append("        %s)\n            opts='%s'\n            actions='%s'\n"
                     "            value='%s'\n            ;;" %
                     (cmd, " ".join(sorted(opts)), " ".join(actions), " ".join(values)))
    text = COMPLETION_HEAD % {"commands": " ".join(commands), "cases": "\n".join(cases)}
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv):
    if len(argv) == 5 and argv[0] == "man":
        gen_man(*argv[1:])
    elif len(argv) == 3 and argv[0] == "completion":
        gen_completion(argv[1], argv[2])
    else:
        sys.exit(__doc__.split("\n\n")[2])


if __name__ == "__main__":
    main(sys.argv[1:])
