/* SPDX-License-Identifier: MIT */
/*
 * external.c - the lifecycle of external snapshots, offline: revert (IMAGE becomes a fresh
 * overlay on a point of its chain, the state left kept as a branch) and delete (a point of
 * the chain merged into its children or its parent, then removed). Both are built on the
 * pieces the other jobs use: the directory scan (scan.c) finds the images that use a file,
 * pull and commit (commit.c) move data and pointers with their crash-safety story, and the
 * journal (journal.c) lets a rerun finish what a killed run started.
 *
 * Locks: no library lock; QEMU's file locks as the jobs they call take them. A chain opened
 * here to plan is closed before pull or commit opens the same files again: a second lock of
 * this process on another description of the same file would conflict with the first.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobs.h"

/* The directory of @path, into @out. */
static void dir_of(const char *path, char *out, size_t cap)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	snprintf(out, cap, "%s", dirname(tmp));
}

/* Images in @path's directory tree (the directory of @top) whose backing file is @path, other
 * than @except (may be NULL): their names, quoted and comma-separated, into @names (empty:
 * none), and their count. */
static int users_of(const char *top, const char *path, const char *except, char *names, size_t cap,
		    size_t *count)
{
	struct qcow2_dir_image *v = NULL;
	size_t n = 0, i, k, idx[64], len;
	char dir[PATH_MAX];
	int r;

	dir_of(top, dir, sizeof(dir));
	names[0] = 0;
	*count = 0;
	r = qcow2_dir_scan(dir, &v, &n);
	if (r < 0)
		return r;
	k = qcow2_dir_users_of(v, n, path, idx, 64);
	for (i = 0; i < k && i < 64; i++) {
		if (except && strcmp(v[idx[i]].path, except) == 0)
			continue;
		len = strlen(names);
		snprintf(names + len, cap - len, "%s'%s'", len ? ", " : "", v[idx[i]].path);
		(*count)++;
	}
	qcow2_dir_images_free(v, n);
	return 0;
}

/* The same, as a list of paths (one per line, malloc'ed into *@list) of every user. SNAP is
 * deleted after its users are pulled, so a user missed would lose its backing file: refused
 * when there are more than 64 of them, or when a file of the tree could not be read (it may be
 * one). */
static int users_list(const char *top, const char *path, char **list, size_t *count)
{
	struct qcow2_dir_image *v = NULL;
	size_t n = 0, i, k, idx[64], len = 0, cap = 1;
	char dir[PATH_MAX];
	int r;

	dir_of(top, dir, sizeof(dir));
	*list = NULL;
	*count = 0;
	r = qcow2_dir_scan(dir, &v, &n);
	if (r < 0)
		return r;
	k = qcow2_dir_users_of(v, n, path, idx, 64);
	for (i = 0; i < n && r == 0; i++)
		if (v[i].err)
			r = qcow2_set_error(-EBUSY,
					    "'%s' cannot be read (%s): it may use '%s' as its "
					    "backing file",
					    v[i].path, strerror(-v[i].err), path);
	if (r == 0 && k > 64)
		r = qcow2_set_error(-E2BIG, "'%s' is the backing file of %zu images: too many",
				    path, k);
	if (r < 0) {
		qcow2_dir_images_free(v, n);
		return r;
	}
	for (i = 0; i < k; i++)
		cap += strlen(v[idx[i]].path) + 1;
	*list = malloc(cap);
	if (!*list) {
		qcow2_dir_images_free(v, n);
		return qcow2_oom();
	}
	(*list)[0] = 0;
	for (i = 0; i < k; i++)
		len += (size_t)sprintf(*list + len, "%s\n", v[idx[i]].path);
	*count = k;
	qcow2_dir_images_free(v, n);
	return 0;
}

/* ---- revert ----
 * Write order, and what a kill at each step leaves:
 *   1. the new overlay is created under the hidden name .IMAGE.qcowctl-revert and fsynced.
 *      Killed here: IMAGE unchanged; the hidden file is stale and a rerun replaces it.
 *   2. the old IMAGE gets its branch name as a second hard link (link(2): IMAGE never
 *      disappears), the directory fsynced. Killed here: IMAGE unchanged, also reachable as
 *      the branch; a rerun finds that branch (same inode) and reuses its name.
 *   3. the overlay is renamed over IMAGE (atomic), the directory fsynced. From here the revert
 *      is complete: IMAGE is the overlay, the branch the state left.
 * With --discard, step 2 is skipped: the rename drops the old file's last name. */

/* IMAGE.branch-N: the branch an earlier stopped run linked already (same inode as @top), else
 * the first free N. */
static int branch_name(const char *top, char *out, size_t cap)
{
	struct stat cur, st;
	unsigned n;

	if (stat(top, &cur) < 0)
		return qcow2_set_error(-errno, "cannot open '%s': %s", top, strerror(errno));
	for (n = 1; n < 100000; n++) {
		int w = snprintf(out, cap, "%s.branch-%u", top, n);

		if (w < 0 || (size_t)w >= cap)
			return qcow2_set_error(-ENAMETOOLONG, "'%s': name too long", top);
		if (lstat(out, &st) < 0 && errno == ENOENT)
			return 0;
		if (S_ISREG(st.st_mode) && st.st_dev == cur.st_dev && st.st_ino == cur.st_ino)
			return 0;
	}
	return qcow2_set_error(-EEXIST, "'%s': no free branch name", top);
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), r = 0;

	if (fd < 0 || fsync(fd) < 0)
		r = qcow2_set_error(-errno, "cannot sync '%s': %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return r;
}

int qcow2_snapshot_revert_external(const char *image, const char *snap, bool discard, bool dry_run,
				   const struct qcow2_job *job, struct qcow2_plan *plan,
				   char *branch, size_t cap)
{
	struct qcow2_chain_opts ro = {.lock = true, .keys = qcow2_job_keys(job)};
	struct qcow2_layer_info top, to;
	struct qcow2_create_opts co;
	struct qcow2_chain *c;
	char tmp[PATH_MAX], name[PATH_MAX], d1[PATH_MAX], d2[PATH_MAX], names[4096];
	size_t count = 0;
	unsigned k = 0;
	int r;

	memset(plan, 0, sizeof(*plan));
	branch[0] = 0;
	r = qcow2_chain_open(image, &ro, &c);
	if (r < 0)
		return r;
	r = qcow2_commit_find_layer(c, snap, &k);
	if (r == 0 && k == 0)
		r = qcow2_set_error(-EINVAL, "'%s' is the image itself, not a point below it",
				    snap);
	if (r == 0) {
		qcow2_chain_layer(c, 0, &top);
		qcow2_chain_layer(c, k, &to);
		r = users_of(top.path, top.path, NULL, names, sizeof(names), &count);
	}
	/* An image backing onto IMAGE would read through the new overlay: its view would change. */
	if (r == 0 && count)
		r = qcow2_set_error(-EBUSY,
				    "'%s' is the backing file of %s: reverting it would change "
				    "their content",
				    top.path, names);
	if (r == 0 && !discard)
		r = branch_name(top.path, branch, cap);
	if (r == 0)
		r = qcow2_journal_path(top.path, "revert", tmp, sizeof(tmp));
	if (r == 0) {
		dir_of(top.path, d1, sizeof(d1));
		dir_of(to.path, d2, sizeof(d2));
		r = qcow2_commit_name_for(top.path, to.path, strcmp(d1, d2) == 0, name,
					  sizeof(name));
	}
	if (r == 0 && !discard)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_UNUSED, branch, NULL, 0);
	if (r == 0 && discard)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_DELETE, top.path, NULL, 0);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_CREATE, top.path, "qcow2", 0);
	if (r == 0)
		r = qcow2_commit_plan_add(plan, QCOW2_STEP_REPOINT, top.path, name, 0);
	/* QEMU's writer locks on IMAGE: refused, naming it, while a VM or a mount writes it. */
	if (r == 0 && !dry_run)
		r = qcow2_io_lock_writer(top.io);
	if (r == 0 && !dry_run) {
		if (unlink(tmp) < 0 && errno != ENOENT)
			r = qcow2_set_error(-errno, "cannot remove '%s': %s", tmp, strerror(errno));
	}
	if (r == 0 && !dry_run) {
		qcow2_create_opts_default(&co);
		co.size = to.size;
		co.backing_file = name;
		co.backing_fmt = to.format;
		r = qcow2_image_create(tmp, &co);
		if (r == 0)
			r = fsync_path(tmp);
	}
	if (r == 0 && !dry_run && !discard) {
		struct stat a, b;

		if (lstat(branch, &b) == 0 && stat(top.path, &a) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev)
			; /* linked by an earlier, stopped run */
		else if (link(top.path, branch) < 0)
			r = qcow2_set_error(-errno, "cannot link '%s' to '%s': %s", top.path,
					    branch, strerror(errno));
		if (r == 0)
			r = qcow2_sync_dir(branch);
	}
	if (r == 0 && !dry_run && rename(tmp, top.path) < 0)
		r = qcow2_set_error(-errno, "cannot rename '%s' to '%s': %s", tmp, top.path,
				    strerror(errno));
	if (r == 0 && !dry_run)
		r = qcow2_sync_dir(top.path);
	if (r < 0 && !dry_run)
		unlink(tmp);
	qcow2_chain_close(c);
	return r;
}

/* ---- delete ----
 * SNAP leaves the chain one of two ways, whichever copies fewer bytes (as the dry runs of the
 * jobs count them):
 *   pull:   every image backing onto SNAP (its children: the layer above it in IMAGE's chain
 *           and any branch) gets SNAP's data copied in and is re-pointed to SNAP's backing
 *           file (pull.c's order: data durable before the pointer moves); then SNAP is
 *           deleted;
 *   commit: SNAP's data is committed into its parent and the layer above re-pointed to it,
 *           SNAP deleted (commit --drop, with its own journal); only when SNAP has one child
 *           and its parent no other user (commit's sibling check refuses otherwise).
 * Before anything changes, the journal .IMAGE.qcowctl-external-delete (not the internal
 * delete's) holds the way and SNAP's path. Killed anywhere, every view above SNAP is what it was (each job's guarantee),
 * and a rerun finds the journal: pull: the children still backing onto SNAP are pulled, SNAP
 * deleted; commit: commit's own rerun finishes. Then the journal is removed. */

static int journal_of(const char *top, char *out, size_t cap)
{
	return qcow2_journal_path(top, "external-delete", out, cap);
}

/* Pull SNAP's data into each of @children (one path per line), re-pointing them to @base. */
static int pull_children(const char *children, const char *base, bool dry_run,
			 const struct qcow2_job *job, struct qcow2_plan *plan, uint64_t *bytes)
{
	char *copy = strdup(children), *line, *save = NULL;
	int r = 0;

	*bytes = 0;
	if (!copy)
		return qcow2_oom();
	for (line = strtok_r(copy, "\n", &save); line && r == 0;
	     line = strtok_r(NULL, "\n", &save)) {
		struct qcow2_plan p;
		size_t i;

		r = qcow2_pull(line, base, dry_run, job, &p);
		for (i = 0; r == 0 && i < p.n; i++) {
			if (p.v[i].kind == QCOW2_STEP_COPY)
				*bytes += p.v[i].bytes;
			if (p.v[i].kind != QCOW2_STEP_UNUSED)
				r = qcow2_commit_plan_add(plan, p.v[i].kind, p.v[i].image,
							  p.v[i].detail, p.v[i].bytes);
		}
		qcow2_plan_release(&p);
	}
	free(copy);
	return r;
}

static int delete_file(const char *path, bool dry_run, struct qcow2_plan *plan)
{
	int r = qcow2_commit_plan_add(plan, QCOW2_STEP_DELETE, path, NULL, 0);

	if (r == 0 && !dry_run) {
		if (unlink(path) < 0 && errno != ENOENT)
			return qcow2_set_error(-errno, "cannot delete '%s': %s", path,
					       strerror(errno));
		r = qcow2_sync_dir(path);
	}
	return r;
}

/* The pull way, from the start or again: SNAP's current children pulled, SNAP deleted. */
static int delete_by_pull(const char *top, const char *snap, const char *base, bool dry_run,
			  const struct qcow2_job *job, struct qcow2_plan *plan, uint64_t *bytes)
{
	char *children = NULL;
	size_t n = 0;
	int r = users_list(top, snap, &children, &n);

	if (r == 0)
		r = pull_children(children, base, dry_run, job, plan, bytes);
	if (r == 0)
		r = delete_file(snap, dry_run, plan);
	free(children);
	return r;
}

static int delete_by_commit(const char *top, const char *snap, bool dry_run,
			    const struct qcow2_job *job, struct qcow2_plan *plan, uint64_t *bytes)
{
	struct qcow2_commit_opts o = {.top = snap, .drop = true, .dry_run = dry_run};
	struct qcow2_plan p;
	size_t i;
	int r = qcow2_commit(top, &o, job, &p);

	*bytes = 0;
	for (i = 0; r == 0 && i < p.n; i++) {
		if (p.v[i].kind == QCOW2_STEP_COPY)
			*bytes += p.v[i].bytes;
		r = qcow2_commit_plan_add(plan, p.v[i].kind, p.v[i].image, p.v[i].detail,
					  p.v[i].bytes);
	}
	qcow2_plan_release(&p);
	return r;
}

/* Does @given (as typed: from the working directory, or from @top's directory) name the file
 * @path (absolute, resolved), which may be gone already? */
static bool names_file(const char *top, const char *given, const char *path)
{
	char joined[2 * PATH_MAX + 2], d[2 * PATH_MAX + 2], b[2 * PATH_MAX + 2], real[PATH_MAX],
	    dir[PATH_MAX];
	int pass;

	dir_of(top, dir, sizeof(dir));
	for (pass = 0; pass < 2; pass++) {
		if (pass == 0 || given[0] == '/')
			snprintf(joined, sizeof(joined), "%s", given);
		else
			snprintf(joined, sizeof(joined), "%s/%s", dir, given);
		snprintf(d, sizeof(d), "%s", joined);
		snprintf(b, sizeof(b), "%s", joined);
		if (!realpath(dirname(d), real))
			continue;
		snprintf(joined, sizeof(joined), "%s/%s", strcmp(real, "/") ? real : "",
			 basename(b));
		if (strcmp(joined, path) == 0)
			return true;
	}
	return false;
}

/* A rerun after a stopped delete: the journal says which way and which file. 1 when the
 * journal is about another file that is gone already (the journal removed): go on with
 * @given. */
static int delete_resume(const char *top, const char *journal, const char *text, const char *given,
			 bool dry_run, const struct qcow2_job *job, struct qcow2_plan *plan,
			 struct qcow2_external_delete *res)
{
	char way[16] = "", snap[PATH_MAX] = "", base[PATH_MAX] = "";
	int r;

	if (sscanf(text, "%15[^\n]\n%4095[^\n]\n%4095[^\n]", way, snap, base) < 2)
		return qcow2_set_error(-EINVAL, "'%s': unreadable journal", journal);
	if (!names_file(top, given, snap)) {
		if (access(snap, F_OK) == 0 || errno != ENOENT)
			return qcow2_set_error(-EBUSY,
					       "an interrupted delete of '%s' is pending: run "
					       "the delete of that file again first",
					       snap);
		return dry_run ? 1 : qcow2_journal_remove(journal) ?: 1;
	}
	res->resumed = true;
	res->into_parent = strcmp(way, "commit") == 0;
	if (access(snap, F_OK) < 0 && errno == ENOENT)
		r = 0; /* deleted already: only the journal is left */
	else if (res->into_parent)
		r = delete_by_commit(top, snap, dry_run, job, plan, &res->bytes);
	else
		r = delete_by_pull(top, snap, strcmp(base, "-") ? base : NULL, dry_run, job, plan,
				   &res->bytes);
	if (r == 0 && !dry_run)
		r = qcow2_journal_remove(journal);
	return r;
}

/* Does an internal snapshot of @child (a file backing onto @snap) read something @snap itself
 * holds? A pull fills only the child's active state: once @snap left its chain, such a
 * snapshot's view would show what lies below @snap instead. 1 (and the snapshot named in the
 * error), 0, or -errno. */
static int snapshot_reads_through(const char *child, const char *snap)
{
	struct qcow2_chain_opts ro = {.lock = false};
	struct qcow2_layer_info cl, sl;
	struct qcow2_chain *c;
	uint32_t i, n;
	int r = qcow2_chain_open(child, &ro, &c);

	if (r < 0)
		return r;
	r = qcow2_chain_layer(c, 0, &cl);
	if (r == 0 && qcow2_chain_depth(c) > 1)
		r = qcow2_chain_layer(c, 1, &sl);
	else
		sl.image = NULL;
	n = r == 0 && cl.image && sl.image ? qcow2_image_snapshot_count(cl.image) : 0;
	for (i = 0; i < n && r == 0; i++) {
		const struct qcow2_snapshot *s = qcow2_image_snapshot(cl.image, i);
		uint64_t end = s->disk_bytes < sl.size ? s->disk_bytes : sl.size, off = 0;
		const struct qcow2_l1 *l1;

		if (s->invalid)
			continue;
		r = qcow2_image_snapshot_l1(cl.image, i, &l1);
		while (r == 0 && off < end) {
			struct qcow2_extent e, b;
			uint64_t at;

			r = qcow2_image_map(cl.image, l1, off, end - off, &e);
			for (at = off;
			     r == 0 && e.kind == QCOW2_EXTENT_UNALLOCATED && at < off + e.len;
			     at += b.len) {
				r = qcow2_image_map(sl.image, NULL, at, off + e.len - at, &b);
				if (r == 0 && b.kind != QCOW2_EXTENT_UNALLOCATED)
					r = (qcow2_set_error(-EBUSY,
							     "'%s': its internal snapshot '%s' "
							     "reads data of '%s', which "
							     "a pull into it cannot keep (delete "
							     "that snapshot first)",
							     cl.path, s->name, sl.path),
					     1);
			}
			if (r == 0)
				off += e.len;
		}
	}
	qcow2_chain_close(c);
	return r;
}

int qcow2_snapshot_delete_external(const char *image, const char *snap, bool dry_run,
				   const struct qcow2_job *job, struct qcow2_plan *plan,
				   struct qcow2_external_delete *res)
{
	struct qcow2_chain_opts ro = {.lock = true, .keys = qcow2_job_keys(job)};
	struct qcow2_plan scratch = {0};
	struct qcow2_layer_info li;
	struct qcow2_chain *c;
	char top[PATH_MAX], path[PATH_MAX], base[PATH_MAX] = "-", parent_users[4096];
	char journal[PATH_MAX], *text = NULL, *children = NULL;
	size_t n_children = 0, n_parent = 0;
	uint64_t pull_bytes = 0, commit_bytes = 0;
	bool can_commit = false, pull_breaks = false;
	char why[1024] = "";
	unsigned k = 0;
	int r;

	memset(plan, 0, sizeof(*plan));
	memset(res, 0, sizeof(*res));
	r = qcow2_chain_open(image, &ro, &c);
	if (r < 0)
		return r;
	snprintf(top, sizeof(top), "%s", qcow2_commit_layer_path(c, 0));
	r = journal_of(top, journal, sizeof(journal));
	if (r == 0)
		r = qcow2_journal_read(journal, &text);
	if (r > 0) { /* an earlier run stopped: finish it (the jobs lock these files) */
		qcow2_chain_close(c);
		r = delete_resume(top, journal, text, snap, dry_run, job, plan, res);
		free(text);
		if (r <= 0)
			return r;
		r = qcow2_chain_open(image, &ro, &c);
		if (r < 0)
			return r;
	}
	if (r == 0)
		r = qcow2_commit_find_layer(c, snap, &k);
	if (r == 0 && k == 0)
		r = qcow2_set_error(
		    -EINVAL, "'%s' is the image itself: revert to a point below it first", snap);
	/* its internal snapshots are points in time too: deleting the file would lose them */
	if (r == 0 && qcow2_chain_layer(c, k, &li) == 0 && li.image &&
	    qcow2_image_snapshot_count(li.image))
		r = qcow2_set_error(
		    -EBUSY,
		    "'%s' has %u internal snapshot(s): deleting the file would lose "
		    "them (qcowctl snapshot delete IMAGE NAME first)",
		    li.path, qcow2_image_snapshot_count(li.image));
	if (r == 0) {
		snprintf(path, sizeof(path), "%s", qcow2_commit_layer_path(c, k));
		if (k + 1 < qcow2_chain_depth(c))
			snprintf(base, sizeof(base), "%s", qcow2_commit_layer_path(c, k + 1));
		r = users_list(top, path, &children, &n_children);
	}
	if (r == 0 && k + 1 < qcow2_chain_depth(c) && n_children == 1)
		r = users_of(top, base, path, parent_users, sizeof(parent_users), &n_parent);
	can_commit = r == 0 && k + 1 < qcow2_chain_depth(c) && n_children == 1 && n_parent == 0 &&
		     strcmp(qcow2_commit_layer_format(c, k + 1), "qcow2") == 0;
	qcow2_chain_close(c); /* the jobs open these files again, with their own locks */
	if (r < 0) {
		free(children);
		return r;
	}
	/* a pull keeps every child's active view, not its internal snapshots' (a commit into
	 * the parent keeps both: the parent then shows what SNAP showed) */
	for (char *line = children, *nl; r == 0 && line && *line; line = nl ? nl + 1 : NULL) {
		char child[PATH_MAX];

		nl = strchr(line, '\n');
		snprintf(child, sizeof(child), "%.*s", nl ? (int)(nl - line) : (int)strlen(line),
			 line);
		r = snapshot_reads_through(child, path);
	}
	if (r > 0) {
		pull_breaks = true;
		snprintf(why, sizeof(why), "%s", qcow2_last_error());
		r = 0;
	}
	/* the two ways' costs, from their dry runs */
	if (r == 0)
		r = pull_children(children, strcmp(base, "-") ? base : NULL, true, job, &scratch,
				  &pull_bytes);
	qcow2_plan_release(&scratch);
	if (r == 0 && can_commit) {
		if (delete_by_commit(top, path, true, job, &scratch, &commit_bytes) < 0) {
			qcow2_clear_error(); /* refused (a sibling): pull it is */
			can_commit = false;
		}
		qcow2_plan_release(&scratch);
	}
	free(children);
	if (r < 0)
		return r;
	if (pull_breaks && !can_commit)
		return qcow2_set_error(-EBUSY,
				       "%s; a commit into the parent is not possible either", why);
	res->into_parent = can_commit && (pull_breaks || commit_bytes < pull_bytes);
	res->pull_bytes = pull_bytes;
	res->commit_bytes = can_commit ? commit_bytes : 0;
	res->can_commit = can_commit;
	if (!dry_run) {
		size_t len = strlen(path) + strlen(base) + 16;

		text = malloc(len);
		if (!text)
			return qcow2_oom();
		snprintf(text, len, "%s\n%s\n%s\n", res->into_parent ? "commit" : "pull", path,
			 base);
		r = qcow2_journal_write(journal, text);
		free(text);
		if (r < 0)
			return r;
	}
	if (res->into_parent)
		r = delete_by_commit(top, path, dry_run, job, plan, &res->bytes);
	else
		r = delete_by_pull(top, path, strcmp(base, "-") ? base : NULL, dry_run, job, plan,
				   &res->bytes);
	if (r == 0 && !dry_run)
		r = qcow2_journal_remove(journal);
	return r;
}
