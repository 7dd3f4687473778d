/* SPDX-License-Identifier: MIT */
/*
 * layercheck.c - an empty program that every object of one layer of the library is linked into
 * along with the layers below it and nothing else (format/meson.build): it links only if no
 * layer calls one above it (docs/design.md, "Layers and the include rule").
 *
 * Locks: none.
 */
int main(void)
{
	return 0;
}
