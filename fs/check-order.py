#!/usr/bin/env python3
# check-order.py OBJDIR FILE.c... - the files of fs/ call one another in one order: FILE.c are
# given lowest first, and no object in OBJDIR may take a symbol from an object given after it
# (a file calls only the files below it, qcowfs.h draws the order). Every global symbol they
# define starts with qfs_ (or is main). Exits 1 naming each symbol that breaks a rule.
import os
import subprocess
import sys


def symbols(obj):
    defined, undefined = set(), set()
    out = subprocess.run(['nm', obj], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in 'TDBRCVW':
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == 'U':
            undefined.add(parts[1])
    return defined, undefined


def main():
    objdir, files = sys.argv[1], sys.argv[2:]
    rank, owner, needs, bad = {}, {}, {}, []
    for i, f in enumerate(files):
        name = os.path.basename(f)
        rank[name] = i
        defined, needs[name] = symbols(os.path.join(objdir, name + '.o'))
        for sym in defined:
            owner[sym] = name
            # names starting with __ are the compiler's (sanitizers: __odr_asan.qfs_ops)
            if not sym.startswith(('qfs_', '__')) and sym != 'main':
                bad.append(f'{name} defines {sym}: not a qfs_ name')
    for user, syms in needs.items():
        for sym in sorted(syms):
            dep = owner.get(sym)
            if dep and rank[dep] > rank[user]:
                bad.append(f'{user} takes {sym} from {dep}, a file above it')
    for line in bad:
        print(line)
    print(f'{len(files)} files, {len(bad)} breaks of the order')
    return 1 if bad else 0


sys.exit(main())
