#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""docs-check.py - the man pages and the bash completion list every option --help lists.

  docs-check.py QCOWFS QCOWCTL QCOWFS_MAN QCOWCTL_MAN COMPLETION

The options a --help lists are read here on their own terms (not with the generator's
parser): every option token in its usage lines, and in the head of each indented line that
starts with "-" (the text before the first run of two spaces). Then:
  - qcowfs.8 names each option of 'qcowfs --help';
  - qcowctl.1 names each option of 'qcowctl --help', and each command of it has a section
    (.SS qcowctl COMMAND) that names each option of 'qcowctl COMMAND --help';
  - the completion, sourced in bash (with the bash-completion framework when it is installed,
    and without it), offers every command for 'qcowctl <TAB>', every option of each command for
    'qcowctl COMMAND -<TAB>', exactly the long options of info for 'qcowctl info --<TAB>',
    image files and directories (not other files) for 'qcowctl info <TAB>' and after
    'rebase -b', directories only for 'qcowctl tree <TAB>', and qcow2/raw after 'rebase -F',
    'copy -O' and 'rebase --backing-format=', the usage's literal qcow2 after 'create -f';
  - both man pages format without a warning (man --warnings, as lintian runs it).
Prints "ok N - ..." / "not ok N - ..." and exits 1 if anything failed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

TOKEN = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][A-Za-z0-9_-]*)")
FRAMEWORK = "/usr/share/bash-completion/bash_completion"

n = 0
bad = 0


def ok(cond, what, detail=""):
    global n, bad
    n += 1
    if cond:
        print("ok %d - %s" % (n, what))
    else:
        bad += 1
        print("not ok %d - %s" % (n, what))
        if detail:
            print("#   " + str(detail).replace("\n", "\n#   "))
    return cond


def help_of(*cmd):
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, LC_ALL="C"))
    if r.returncode != 0:
        sys.exit("%s --help: exit status %d" % (" ".join(cmd), r.returncode))
    return r.stdout


def listed_options(text):
    """The options a --help text lists: in its usage lines and at the head of its items."""
    opts = set()
    in_usage = False
    for line in text.split("\n"):
        if line.startswith("usage:"):
            in_usage = True
        elif not line.strip():
            in_usage = False
        if in_usage:
            opts.update(TOKEN.findall(line))
        elif re.match(r"\s+-", line):
            head = re.split(r"(?<=\S) {2,}", line.strip(), maxsplit=1)[0]
            opts.update(TOKEN.findall(head))
    return opts


def listed_commands(text):
    """The commands 'qcowctl --help' lists: the first word of each line after "commands:"."""
    lines = text.split("\n")
    start = lines.index("commands:") + 1
    cmds = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        cmds.append(line.split()[0])
    return cmds


def man_text(path):
    """The roff source with its escapes undone, as words to search."""
    with open(path, encoding="utf-8") as f:
        s = f.read()
    s = re.sub(r"\\f[BIRP]", "", s)
    return s.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def names(text, opt):
    return re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), text) is not None


def complete(completion, words, cwd, framework):
    """COMPREPLY of bash for the command line @words (the last one being completed)."""
    script = ""
    if framework:
        script += "source %s\n" % FRAMEWORK
    # the line as typed: bash splits "--opt=VALUE" into "--opt", "=", "VALUE"
    line = ""
    for i, w in enumerate(words):
        line += w if i == 0 or w == "=" or words[i - 1] == "=" else " " + w
    script += 'source "$1"\nCOMP_LINE=$2\nshift 2\nCOMP_WORDS=("$@")\nCOMP_CWORD=$(($# - 1))\n'
    script += 'COMP_POINT=${#COMP_LINE}\n_qcowctl qcowctl "${COMP_WORDS[-1]}" ' \
              '"${COMP_WORDS[-2]}"\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", completion,
                        line, *words], capture_output=True, text=True, cwd=cwd, timeout=30)
    if r.returncode != 0:
        return {"<bash failed: %s>" % r.stderr.strip()}
    return {w for w in r.stdout.split("\n") if w}


def main(qcowfs, qcowctl, qcowfs_man, qcowctl_man, completion):
    # ---- qcowfs.8
    fs_opts = listed_options(help_of(qcowfs))
    ok(len(fs_opts) >= 5, "qcowfs --help lists options (%d)" % len(fs_opts))
    text = man_text(qcowfs_man)
    missing = sorted(o for o in fs_opts if not names(text, o))
    ok(not missing, "qcowfs.8 names every option of qcowfs --help", "missing: %s" % missing)

    # ---- qcowctl.1
    top = help_of(qcowctl)
    cmds = listed_commands(top)
    ok(len(cmds) >= 5, "qcowctl --help lists commands (%s)" % " ".join(cmds))
    text = man_text(qcowctl_man)
    missing = sorted(o for o in listed_options(top) if not names(text, o))
    ok(not missing, "qcowctl.1 names every option of qcowctl --help", "missing: %s" % missing)
    sections = {}
    for m in re.finditer(r"^\.SS qcowctl (\S+)\n(.*?)(?=^\.S[SH] |\Z)", text, re.M | re.S):
        sections[m.group(1)] = m.group(2)
    cmd_opts = {}
    for cmd in cmds:
        cmd_opts[cmd] = listed_options(help_of(qcowctl, cmd))
        sec = sections.get(cmd)
        if not ok(sec is not None, "qcowctl.1 has a section for qcowctl %s" % cmd):
            continue
        missing = sorted(o for o in cmd_opts[cmd] if not names(sec, o))
        ok(not missing, "qcowctl.1 names every option of qcowctl %s --help in its section" % cmd,
           "missing: %s" % missing)

    # ---- the completion
    work = tempfile.mkdtemp(prefix="docs-check.")
    try:
        for f in ("a.qcow2", "b.img", "c.txt", "e.raw"):
            open(os.path.join(work, f), "w").close()
        os.mkdir(os.path.join(work, "d"))
        modes = [False] + ([True] if os.path.exists(FRAMEWORK) else [])
        for framework in modes:
            how = "with bash-completion" if framework else "standalone"
            got = complete(completion, ["qcowctl", ""], work, framework)
            want = set(cmds)
            ok(want <= got and all(g in want or g.startswith("-") for g in got),
               "%s: qcowctl <TAB> offers every command" % how,
               "got %s, want %s" % (sorted(got), sorted(want)))
            for cmd in cmds:
                got = complete(completion, ["qcowctl", cmd, "-"], work, framework)
                missing = sorted(cmd_opts[cmd] - got)
                ok(not missing, "%s: qcowctl %s -<TAB> offers every option of its --help" %
                   (how, cmd), "missing: %s (got %s)" % (missing, sorted(got)))
            got = complete(completion, ["qcowctl", "info", "--"], work, framework)
            want = {o for o in cmd_opts.get("info", ()) if o.startswith("--")}
            ok(got == want, "%s: qcowctl info --<TAB> offers its long options" % how,
               "got %s, want %s" % (sorted(got), sorted(want)))
            got = complete(completion, ["qcowctl", "info", ""], work, framework)
            got = {g.rstrip("/") for g in got}
            ok(got == {"a.qcow2", "b.img", "d"},
               "%s: qcowctl info <TAB> offers images and directories" % how, sorted(got))
            got = {g.rstrip("/") for g in complete(completion, ["qcowctl", "tree", ""], work,
                                                   framework)}
            ok(got == {"d"}, "%s: qcowctl tree <TAB> offers directories" % how, sorted(got))
            for line in (["rebase", "-F", ""], ["copy", "-O", "r"],
                         ["rebase", "--backing-format", "=", ""]):
                got = complete(completion, ["qcowctl"] + line, work, framework)
                want = {"raw"} if line[-1] == "r" else {"qcow2", "raw"}
                ok(got == want, "%s: qcowctl %s<TAB> offers formats" %
                   (how, " ".join(line).replace(" = ", "=")), sorted(got))
            got = complete(completion, ["qcowctl", "create", "-f", ""], work, framework)
            ok(got == {"qcow2"}, "%s: qcowctl create -f <TAB> offers the usage's qcow2" % how,
               sorted(got))
            got = {g.rstrip("/") for g in complete(completion, ["qcowctl", "rebase", "-b", ""],
                                                   work, framework)}
            ok(got == {"a.qcow2", "b.img", "d"},
               "%s: qcowctl rebase -b <TAB> offers images" % how, sorted(got))
    finally:
        shutil.rmtree(work)

    # ---- the pages format cleanly
    if shutil.which("man"):
        for page in (qcowfs_man, qcowctl_man):
            r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, LC_ALL="C.UTF-8", MANROFFSEQ="",
                                        MANWIDTH="80"))
            ok(r.returncode == 0 and not r.stderr.strip(),
               "%s formats without warnings" % os.path.basename(page), r.stderr.strip())
    print("%d passed, %d failed" % (n - bad, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    sys.exit(main(*(os.path.abspath(a) for a in sys.argv[1:])))
