/* SPDX-License-Identifier: MIT */
/*
 * cmd-map.c - qcowctl map [--json] [-U] IMAGE: the extents of the flat view and the layer that
 * provides each, printed exactly as `qemu-img map` (QEMU 7.2) prints them.
 *
 * What qemu-img reports for a byte (its get_block_status()): walking down from the top, the
 * first layer that has data or zeros there answers (depth = its index, "present": true); a
 * layer that has nothing answers "zero" without being present when it is the last one or its
 * backing file ends before the byte. "offset" appears where the answer has a host offset: data
 * clusters, preallocated zero clusters and unallocated subclusters of an allocated cluster
 * (qcow2), every byte of a raw file; never for compressed clusters. Adjacent ranges merge when
 * all of that is equal and the offsets are contiguous. Raw layers answer data or zeros by the
 * host file's holes (qcow2_io_next_extent()), as QEMU's file driver does.
 *
 * Cost: one qcow2_chain_map() call per extent the library returns (plus one image map for a
 * zero or a hole in a qcow2 layer, which may have host clusters), never one per cluster.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2.h"
#include "qcowctl.h"

/* One line of qemu-img map: QEMU's MapEntry without the file name. */
struct map_entry {
	uint64_t start, length, offset;
	unsigned depth;
	bool present, zero, data, has_offset;
};

struct mapper {
	struct qcow2_chain *c;
	bool json;
	char **names;	/* per layer: the file as qemu-img names it (text output) */
	bool *prealloc; /* per layer: QEMU would judge it metadata-preallocated */
	unsigned n;
	bool started;
};

static void map_usage(FILE *f)
{
	fprintf(f,
		"usage: qcowctl map [--json] [-U] [-f qcow2] IMAGE\n\n"
		"Print which layer of IMAGE's backing chain provides each range of its flat\n"
		"view, and whether it is data, zeros or unallocated, as `qemu-img map` does.\n\n"
		"  --json             as `qemu-img map --output=json`, one object per range:\n"
		"                     start, length, depth (0 = IMAGE), present, zero, data,\n"
		"                     offset (host offset in the providing file, when it has one)\n"
		"  --output=json|human  as --json, or the text (the default)\n"
		"  -U, --force-share  do not take (or respect) image locks\n"
		"  --bitmap NAME      instead, the ranges persistent bitmap NAME marks dirty:\n"
		"                     with --json as `qemu-img map` prints them for an export\n"
		"                     through qemu-nbd -B NAME (x-dirty-bitmap: dirty ranges are\n"
		"                     \"data\": false); as text, the dirty ranges only\n"
		"  -f qcow2           IMAGE's format (only qcow2; a raw IMAGE is recognised)\n"
		"  -h, --help         this text\n\n"
		"Without --json: the data ranges with their host offset and file, as qemu-img's\n"
		"human format (which cannot show compressed clusters: use --json for those).\n");
}

/* qemu-img's answer for a range no layer allocates, from @off (at most @len bytes): the layer
 * that ends the walk is the last one, or the first whose backing file ends before @off. */
static int hole_entry(struct mapper *m, uint64_t off, uint64_t len, struct map_entry *me)
{
	struct qcow2_layer_info li, below;
	struct qcow2_extent e;
	unsigned d;
	int r;

	for (d = 0; d + 1 < m->n; d++) {
		qcow2_chain_layer(m->c, d + 1, &below);
		if (off >= below.size)
			break;
		if (below.size - off < len)
			len = below.size - off; /* past it, a higher layer ends the walk */
	}
	*me = (struct map_entry){.start = off, .length = len, .depth = d, .zero = true};
	qcow2_chain_layer(m->c, d, &li);
	if (!li.image || !(qcow2_image_header(li.image)->incompat & QCOW2_INCOMPAT_EXTL2))
		return 0;
	/* Unallocated subclusters of an allocated cluster: QEMU reports the host offset. */
	r = qcow2_image_map(li.image, NULL, off, len, &e);
	if (r < 0)
		return r;
	me->length = e.len;
	me->has_offset = e.host_off != 0;
	me->offset = e.host_off;
	return 0;
}

/* The zeros a qcow2 layer reports: with a host offset if they are preallocated. */
static int zero_entry(struct qcow2_image *img, struct map_entry *me)
{
	struct qcow2_extent e;
	int r;

	r = qcow2_image_map(img, NULL, me->start, me->length, &e);
	if (r < 0)
		return r;
	me->length = e.len;
	me->has_offset = e.host_off != 0;
	me->offset = e.host_off;
	return 0;
}

/* A layer QEMU judges metadata-preallocated (qcow2_detect_metadata_preallocation(): at least
 * max(real * 10 / 9, real + 2) clusters in use, where real is the host file's allocation in
 * clusters) has the host file's holes inside its data clusters reported as zeros. */
static int detect_prealloc(struct qcow2_image *img, bool *out)
{
	uint64_t used, alloc, real, threshold;
	int r;

	r = qcow2_image_used_clusters(img, &used);
	if (r == 0)
		r = qcow2_io_allocated(qcow2_image_io(img), &alloc);
	if (r < 0)
		return r;
	real = alloc / qcow2_image_cluster_bytes(img);
	threshold = real * 10 / 9 > real + 2 ? real * 10 / 9 : real + 2;
	*out = used >= threshold;
	return 0;
}

/* Data of a metadata-preallocated layer: zeros where the host file (@io) has a hole (up to the
 * end of the hole, or to the end of @me at the end of the file), else data up to the next hole,
 * as QEMU's file driver reports them (qcow2_io_next_extent()). */
static void host_holes(struct qcow2_io *io, struct map_entry *me)
{
	bool data;

	qcow2_io_next_extent(io, me->offset, me->length, &me->length, &data);
	me->zero = !data;
}

/* qemu-img's answer for the bytes from @off (at most @max). */
static int entry_at(struct mapper *m, uint64_t off, uint64_t max, struct map_entry *me)
{
	struct qcow2_layer_info li;
	struct qcow2_extent e;
	int r;

	r = qcow2_chain_map(m->c, off, max, &e);
	if (r < 0)
		return r;
	if (e.layer < 0)
		return hole_entry(m, off, e.len, me);
	qcow2_chain_layer(m->c, (unsigned)e.layer, &li);
	*me = (struct map_entry){
	    .start = off, .length = e.len, .depth = (unsigned)e.layer, .present = true};
	me->zero = e.kind == QCOW2_EXTENT_ZERO;
	me->data = !me->zero;
	if (!li.image) { /* raw: host offset = guest offset */
		me->has_offset = true;
		me->offset = off;
		return 0;
	}
	if (e.kind == QCOW2_EXTENT_ZERO)
		return zero_entry(li.image, me);
	me->has_offset = e.kind == QCOW2_EXTENT_DATA;
	me->offset = e.host_off;
	if (me->has_offset && m->prealloc[e.layer])
		host_holes(e.io, me);
	return 0;
}

static bool mergeable(const struct map_entry *a, const struct map_entry *b)
{
	if (!a->length)
		return false;
	if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
	    a->present != b->present || a->has_offset != b->has_offset)
		return false;
	return !a->has_offset || a->offset + a->length == b->offset;
}

static const char *tf(bool v)
{
	return v ? "true" : "false";
}

/* Print @me as qemu-img's dump_map_entry() does; @last: no entry follows. */
static int emit(struct mapper *m, const struct map_entry *me, bool last)
{
	if (m->json) {
		printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u"
		       ", \"present\": %s, \"zero\": %s, \"data\": %s",
		       m->started ? "" : "[", me->start, me->length, me->depth, tf(me->present),
		       tf(me->zero), tf(me->data));
		if (me->has_offset)
			printf(", \"offset\": %" PRIu64, me->offset);
		printf(last ? "}]\n" : "},\n");
		m->started = true;
		return 0;
	}
	if (me->data && !me->has_offset)
		return qcow2_set_error(-ENOTSUP,
				       "'%s': compressed clusters at %#" PRIx64
				       " have no host offset to show (see --json)",
				       m->names[0], me->start);
	if (me->data && !me->zero)
		printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", me->start, me->length,
		       me->offset, m->names[me->depth]);
	return 0;
}

/* qemu-img's img_map() loop: gather, merge while mergeable, print. */
static int map_all(struct mapper *m)
{
	uint64_t size = qcow2_chain_size(m->c);
	struct map_entry cur = {0}, next;
	int r;

	if (!m->json)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	while (cur.start + cur.length < size) {
		uint64_t off = cur.start + cur.length;

		r = entry_at(m, off, size - off, &next);
		if (r < 0)
			return r;
		if (mergeable(&cur, &next)) {
			cur.length += next.length;
			continue;
		}
		if (cur.length > 0 && (r = emit(m, &cur, false)) < 0)
			return r;
		cur = next;
	}
	return emit(m, &cur, true);
}

/* QEMU's path_combine(): @name relative to the directory of @base, as given (not resolved). */
static char *path_combine(const char *base, const char *name)
{
	const char *slash = strrchr(base, '/');
	int dir_len = slash ? (int)(slash - base + 1) : 0;
	char *out;

	if (name[0] == '/')
		return strdup(name);
	if (asprintf(&out, "%.*s%s", dir_len, base, name) < 0)
		return NULL;
	return out;
}

/* The name qemu-img gives the file holding each layer's data: IMAGE as typed, then each
 * backing (or external data) file's stored name relative to the layer above. */
static int layer_names(struct mapper *m, const char *image)
{
	struct qcow2_layer_info li;
	char *cur = strdup(image), *next;
	unsigned i;

	m->names = calloc(m->n, sizeof(*m->names));
	for (i = 0; cur && m->names && i < m->n; i++) {
		const struct qcow2_header *h = NULL;

		qcow2_chain_layer(m->c, i, &li);
		if (li.image)
			h = qcow2_image_header(li.image);
		m->names[i] = h && h->data_file[0] ? path_combine(cur, h->data_file) : strdup(cur);
		if (!m->names[i])
			break;
		if (h && h->backing_file[0]) {
			next = path_combine(cur, h->backing_file);
			free(cur);
			cur = next;
		}
	}
	free(cur);
	if (!m->names || i < m->n)
		return qcow2_oom();
	return 0;
}

static int detect_all(struct mapper *m)
{
	struct qcow2_layer_info li;
	unsigned i;
	int r = 0;

	m->prealloc = calloc(m->n, sizeof(*m->prealloc));
	if (!m->prealloc)
		return qcow2_oom();
	for (i = 0; i < m->n && r == 0; i++)
		if (qcow2_chain_layer(m->c, i, &li) == 0 && li.image)
			r = detect_prealloc(li.image, &m->prealloc[i]);
	return r;
}

static int run_map(const char *path, bool json, bool force_share)
{
	struct qcow2_chain_opts co = {.lock = !force_share, .top_blockdev = true};
	struct mapper m = {.json = json};
	unsigned i;
	int r;

	r = qcow2_chain_open(path, &co, &m.c);
	if (r < 0)
		return r;
	m.n = qcow2_chain_depth(m.c);
	r = layer_names(&m, path);
	if (r == 0)
		r = detect_all(&m);
	if (r == 0)
		r = map_all(&m);
	for (i = 0; m.names && i < m.n; i++)
		free(m.names[i]);
	free(m.names);
	free(m.prealloc);
	qcow2_chain_close(m.c);
	return r;
}

int cmd_map(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"force-share", no_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    {"bitmap", required_argument, NULL, 'B'}, /* the dirty extents (cmd-bitmap.c) */
	    {NULL, 0, NULL, 0},
	};
	bool json = false, force_share = false;
	const char *bitmap = NULL;
	int c;

	while ((c = next_option(argc, argv, "hU", longopts, "map")) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'U':
			force_share = true;
			break;
		case 'B':
			bitmap = optarg;
			break;
		case 'h':
			map_usage(stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		return usage_error("map", "takes one IMAGE");
	}
	fflush(stdout);
	if ((bitmap ? bitmap_map(argv[optind], bitmap, json, force_share)
		    : run_map(argv[optind], json, force_share)) < 0) {
		fflush(stdout);
		error("%s", qcow2_last_error());
		return EXIT_FAIL;
	}
	return EXIT_OK;
}
