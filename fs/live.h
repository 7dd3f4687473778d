/* SPDX-License-Identifier: MIT */
/*
 * live.h - the live chain jobs of the control socket (live.c): external snapshot, commit and
 * pull run on the open chain of a view.
 */
#ifndef QCOWFS_LIVE_H
#define QCOWFS_LIVE_H

/* Register live snapshot-external, live commit and live pull (before qfs_ctl_start()). */
void qfs_live_register(void);

#endif
