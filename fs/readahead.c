/* SPDX-License-Identifier: MIT */
/*
 * readahead.c - the mount's read-ahead window. After the mount is set up and the kernel's INIT
 * has been answered, the window is raised (read_ahead_kb of the mount's bdi, default 4 MiB):
 * with the kernel's default of 128 KiB a FUSE file reads sequentially at a fraction of the
 * disk's speed. INIT's reply caps the window, so it is set only after that reply; ops.c says
 * when (qfs_readahead_init_done()).
 *
 * Locking: the settings are written once by main.c before the session's threads start and
 * only read after; init_done is under init_lock.
 */
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "readahead.h"

static unsigned readahead_kb = QFS_DEFAULT_READAHEAD_KB;
static unsigned max_read; /* -o max_read=N, 0 when not given */
static char mount_path[PATH_MAX];
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t init_cond = PTHREAD_COND_INITIALIZER;
static bool init_done; /* under init_lock */

void qfs_readahead_set(unsigned kb, unsigned max_read_bytes)
{
	readahead_kb = kb;
	max_read = max_read_bytes;
}

unsigned qfs_readahead_max_read(void)
{
	return max_read;
}

void qfs_readahead_init_done(void)
{
	pthread_mutex_lock(&init_lock);
	init_done = true;
	pthread_cond_broadcast(&init_cond);
	pthread_mutex_unlock(&init_lock);
}

/* Raise the mount's read-ahead once the kernel has processed INIT (whose reply caps it). */
static void *tune_readahead(void *arg)
{
	char line[8192], path[128];
	int tries;

	(void)arg;
	pthread_mutex_lock(&init_lock);
	while (!init_done)
		pthread_cond_wait(&init_cond, &init_lock);
	pthread_mutex_unlock(&init_lock);
	for (tries = 0; tries < 100; tries++) {
		FILE *f = fopen("/proc/self/mountinfo", "r");
		unsigned maj, min;
		bool done = false;

		usleep(50000);
		if (!f)
			return NULL;
		while (!done && fgets(line, sizeof(line), f)) {
			char mnt[PATH_MAX];
			if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) == 3 &&
			    strcmp(mnt, mount_path) == 0 && strstr(line, "fuse")) {
				FILE *ra;
				snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb",
					 maj, min);
				/* INIT's reply, which caps the window, goes first */
				usleep(100000);
				ra = fopen(path, "w");
				if (ra) {
					fprintf(ra, "%u\n", readahead_kb);
					fclose(ra);
				}
				done = true;
			}
		}
		fclose(f);
		if (done)
			return NULL;
	}
	return NULL;
}

void qfs_readahead_start(const char *mnt)
{
	pthread_t th;

	if (!readahead_kb)
		return;
	snprintf(mount_path, sizeof(mount_path), "%s", mnt);
	if (pthread_create(&th, NULL, tune_readahead, NULL) == 0)
		pthread_detach(th);
}
