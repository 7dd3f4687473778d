/* SPDX-License-Identifier: MIT */
/*
 * readahead.c - the mount's read-ahead window: read_ahead_kb of the mount's bdi, default 4 MiB
 * (with the kernel's default of 128 KiB a FUSE file reads sequentially at a fraction of the
 * disk's speed).
 *
 * When: in op_init, before INIT is answered (qfs_readahead_init_done()). The bdi exists from
 * the mount on; INIT's reply then caps the window at its max_readahead (op_init asks for the
 * most), so a window set before the reply stays. Set any later, a file opened in between (the
 * first reader, right after the mount) would keep the old 128 KiB for as long as it stays open:
 * a file's read-ahead state takes the window at open. The bdi is found in /proc/self/mountinfo,
 * never by a stat of the mount point, which would wait for the INIT being answered.
 *
 * Locking: the settings and the mount path are written once by main.c before the session's
 * threads start and only read after; INIT is answered once.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "readahead.h"

static unsigned readahead_kb = QFS_DEFAULT_READAHEAD_KB;
static unsigned max_read; /* -o max_read=N, 0 when not given */
static char mount_path[PATH_MAX];

void qfs_readahead_set(unsigned kb, unsigned max_read_bytes)
{
	readahead_kb = kb;
	max_read = max_read_bytes;
}

unsigned qfs_readahead_max_read(void)
{
	return max_read;
}

/* Set the window of the mount at mount_path (found in mountinfo by its device number). */
void qfs_readahead_init_done(void)
{
	char line[8192], path[128] = "";
	FILE *f, *ra;

	if (!readahead_kb || !mount_path[0])
		return;
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char mnt[PATH_MAX];
		unsigned maj, min;

		/* the last match: a mount over an older one at the same path comes after it */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) == 3 &&
		    strcmp(mnt, mount_path) == 0 && strstr(line, "fuse"))
			snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj,
				 min);
	}
	fclose(f);
	ra = path[0] ? fopen(path, "w") : NULL; /* only root may: others keep the kernel's */
	if (ra) {
		fprintf(ra, "%u\n", readahead_kb);
		fclose(ra);
	}
}

void qfs_readahead_start(const char *mnt)
{
	snprintf(mount_path, sizeof(mount_path), "%s", mnt);
}
